//! Forwarding one request to the configured upstream and streaming the answer back.
//!
//! Request phases, in order: settle the request id → record the request head → refuse what
//! must never be forwarded (CONNECT, absolute-form or non-origin targets; clients outside the
//! `[[clients]]` allow-list; a declared body over `max_request_body_bytes`) → rewrite the target
//! and the hop-by-hop, Host and X-Forwarded-* headers → stream the request body upstream
//! through a guarded [`TeeBody`] (idle timeout, size limit) → wait (bounded) for the response
//! head → stream the response body back through a [`TeeBody`]. Upstream failures become
//! 502/504 with a SCIM error body and a recorded [`Failure`]. Nothing here parses a body,
//! touches disk or waits on the audit side.
//!
//! The target is never taken from the request: the upstream URI is always the configured
//! scheme and authority, so no request line, Host, `:authority` or X-Forwarded-Host can make
//! scimtap connect anywhere else.

use std::error::Error as StdError;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use tracing::Instrument;

use crate::clients;
use crate::clock::Timestamp;
use crate::config::{Config, RouteConfig, ScimConfig, UpstreamConfig};
use crate::exchange::{
    BodyCapture, BodyEnd, ConnInfo, Failure, FailureKind, Handoff, PendingExchange, RequestHead,
    ResponseOutcome,
};
use crate::tee::{BodyGuards, CaptureLimits, TeeBody, TeeError};
use crate::telemetry::Metrics;
use crate::write_ahead::{read_unread, ForwardBody, Unread};

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Longest client-supplied X-Request-Id kept; longer or non-printable ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 200;

mod route;

use self::route::{ambiguous_path, request_host, Route, RouteTable};

/// Why scimtap could not build its upstream client.
#[derive(Debug, thiserror::Error)]
pub enum ProxyBuildError {
    #[error("invalid TLS client configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("upstream authority is not a valid Host header value")]
    Host,
}

type UpstreamClient = Client<HttpsConnector<HttpConnector>, TeeBody<ForwardBody>>;

/// What every request must satisfy before and while it is forwarded, whatever its route: the
/// `[listen]` body limits and the audit mode's demands.
#[derive(Debug, Clone, Default)]
pub struct RequestPolicy {
    /// `listen.max_request_body_bytes`; `None` is no limit.
    pub max_request_body_bytes: Option<u64>,
    /// `listen.body_idle_timeout_secs`, applied to request bodies (response bodies a client
    /// stops reading are cut by the listener).
    pub body_idle_timeout: Option<Duration>,
    /// `Some(audit.write_ahead_timeout_ms)` in `audit.mode = "write_ahead"`.
    pub write_ahead_timeout: Option<Duration>,
    /// `audit.on_audit_failure = "reject"`: a SCIM write the audit trail cannot take now is
    /// refused with 503 instead of forwarded unrecorded.
    pub reject_unaudited_writes: bool,
}

impl RequestPolicy {
    pub fn from_config(config: &Config) -> RequestPolicy {
        RequestPolicy {
            max_request_body_bytes: config.listen.max_request_body_bytes,
            body_idle_timeout: Some(config.listen.body_idle_timeout),
            write_ahead_timeout: (config.audit.mode == crate::config::AuditMode::WriteAhead)
                .then_some(config.audit.write_ahead_timeout),
            reject_unaudited_writes: config.audit.on_audit_failure
                == crate::config::OnAuditFailure::Reject,
        }
    }
}

/// How long the rest of a request body the upstream never read may take to arrive once the
/// upstream has failed (it is read for the event, not forwarded; the client waits this much
/// longer for its 502/504 at most).
const UNREAD_BODY_WAIT: Duration = Duration::from_millis(500);

/// Most header fields accepted in an upstream's response head.
const UPSTREAM_MAX_RESPONSE_HEADERS: usize = 1000;

/// Routes built by [`Proxy::prepare_routes`], not yet in force.
pub struct PreparedRoutes {
    table: RouteTable,
    changed: Vec<String>,
}

/// The forwarding half of scimtap: one per process, shared by every connection.
pub struct Proxy {
    /// Replaced whole by a reload; a request holds the route it matched until it ends.
    routes: RwLock<Arc<RouteTable>>,
    capture: CaptureLimits,
    handoff: Handoff,
    policy: RequestPolicy,
    /// `scimtap_audit_refused_requests_total` (SCIM writes refused for the audit trail), and
    /// the counters of the routes a reload adds.
    metrics: Arc<Metrics>,
}

impl Proxy {
    /// Builds the routes, each with its pooled upstream client.
    ///
    /// # Errors
    /// [`ProxyBuildError`] when a route's TLS client configuration cannot be built.
    pub fn new(
        routes: &[RouteConfig],
        scim: &ScimConfig,
        capture: CaptureLimits,
        handoff: Handoff,
        policy: RequestPolicy,
        metrics: Arc<Metrics>,
    ) -> Result<Proxy, ProxyBuildError> {
        let table = RouteTable::new(
            routes
                .iter()
                .map(|r| Route::new(r, scim, &metrics).map(Arc::new))
                .collect::<Result<_, _>>()?,
        );
        Ok(Proxy {
            routes: RwLock::new(Arc::new(table)),
            capture,
            handoff,
            policy,
            metrics,
        })
    }

    /// Builds a reloaded configuration's routes, reusing each route whose settings did not
    /// change (with its pooled connections); nothing is in force until
    /// [`Proxy::install_routes`].
    ///
    /// # Errors
    /// [`ProxyBuildError`] when a route's client cannot be built.
    pub fn prepare_routes(
        &self,
        routes: &[RouteConfig],
        scim: &ScimConfig,
    ) -> Result<PreparedRoutes, ProxyBuildError> {
        let old = self.table();
        let mut changed = Vec::new();
        let mut table = Vec::with_capacity(routes.len());
        for config in routes {
            let fresh = Route::new(config, scim, &self.metrics)?;
            let kept = old
                .routes
                .iter()
                .find(|r| r.config.name == config.name && r.settings() == fresh.settings());
            match kept {
                Some(route) => table.push(route.clone()),
                None => {
                    changed.push(config.name.clone());
                    table.push(Arc::new(fresh));
                }
            }
        }
        for route in &old.routes {
            if !routes.iter().any(|r| r.name == route.config.name) {
                changed.push(route.config.name.clone());
            }
        }
        Ok(PreparedRoutes {
            table: RouteTable::new(table),
            changed,
        })
    }

    /// Puts prepared routes in force for the requests that start from now on; requests in
    /// flight finish on the route they started on. Returns the names of the routes added,
    /// changed or removed.
    pub fn install_routes(&self, prepared: PreparedRoutes) -> Vec<String> {
        *self.routes.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(prepared.table);
        prepared.changed
    }

    /// `/readyz/<route>`: `None` for a route that is not configured; the reason when its
    /// upstream could not be reached, or did not answer in time, on the last request.
    pub fn route_readiness(&self, name: &str) -> Option<Result<(), String>> {
        let table = self.table();
        let route = table.routes.iter().find(|r| r.config.name == name)?;
        Some(
            route
                .health
                .check()
                .map_err(|reason| format!("route {name}: {reason}")),
        )
    }

    fn table(&self) -> Arc<RouteTable> {
        self.routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Handles one request end to end. Never fails: every error becomes a response (or, if the
    /// client went away, an abandoned exchange) and an event.
    ///
    /// The phases, in order (pingora's names): `request_filter` refuses what must not
    /// be forwarded; write-ahead mode records the intent (`write_ahead`);
    /// `upstream_request` rewrites the target and headers and tees the body;
    /// `response` (or `upstream_failed`) streams the answer back. The last
    /// phase, logging, always runs and needs no code here: the exchange hands itself to the
    /// audit side when both of its bodies have ended ([`PendingExchange`]).
    pub async fn forward(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<ProxyBody> {
        let (mut parts, body) = req.into_parts();

        // Hop-by-hop headers go first, so a `Connection: x-request-id` cannot remove the id
        // after it was settled (the upstream and the event must agree on it).
        strip_framing_conflict(&mut parts.headers);
        strip_hop_by_hop(&mut parts.headers);
        let request_id = settle_request_id(&mut parts.headers);
        let head = request_head(&parts);
        let table = self.table();
        if table.by_path {
            if let Some(why) = ambiguous_path(parts.uri.path()) {
                let pending =
                    PendingExchange::new(request_id, conn, head, self.handoff.clone(), None);
                let refusal = Refusal::new(
                    StatusCode::BAD_REQUEST,
                    FailureKind::InvalidRequestTarget,
                    format!("the path is ambiguous for routing by path prefix: {why}"),
                );
                return refuse(&pending, body, refusal);
            }
        }
        let host = table.by_host.then(|| request_host(&parts)).flatten();
        let found = table.find(conn.listener, host.as_deref(), parts.uri.path());
        let route = found.map(|(route, _)| route.tag.clone());
        let pending = PendingExchange::new(request_id, conn, head, self.handoff.clone(), route);
        let span = tracing::debug_span!(
            "request",
            request_id = %pending.request_id(),
            method = %parts.method,
            path = %parts.uri.path(),
            route = found.map(|(route, _)| &*route.tag.name),
            status = tracing::field::Empty,
        );
        let Some((route, prefix_len)) = found else {
            // CONNECT and absolute-form targets are refused as such, route or not.
            let refusal =
                refuse_target(&parts.method, &parts.uri, parts.version).unwrap_or_else(|| {
                    Refusal::new(
                        StatusCode::NOT_FOUND,
                        FailureKind::NoRoute,
                        "no configured route takes this host and path",
                    )
                });
            let _enter = span.enter();
            tracing::debug!(peer = %pending.conn().peer, "Request matching no route refused.");
            return refuse(&pending, body, refusal);
        };
        let route = route.clone();
        drop(table);
        self.forward_exchange(&route, prefix_len, parts, body, pending)
            .instrument(span)
            .await
    }

    async fn forward_exchange(
        &self,
        route: &Route,
        prefix_len: usize,
        parts: http::request::Parts,
        body: Incoming,
        pending: Arc<PendingExchange>,
    ) -> Response<ProxyBody> {
        let is_write = is_scim_write(&parts.method, parts.uri.path());
        let uri = match self.request_filter(route, prefix_len, &parts, &body, &pending, is_write) {
            Ok(uri) => uri,
            Err(refusal) => return refuse(&pending, body, refusal),
        };
        let body = match self.policy.write_ahead_timeout {
            Some(timeout) if is_write => {
                match self.write_ahead(&parts, body, &pending, timeout).await {
                    Ok(body) => body,
                    Err(refusal) => return refuse(&pending, (), refusal),
                }
            }
            _ => ForwardBody::streaming(body),
        };
        // What the upstream did not read of a SCIM write, should it fail first: the event
        // still classifies it. Reads need no slot (one allocation saved per request).
        let unread = is_write.then(Unread::default);
        let body = match &unread {
            Some(unread) => body.keep_unread(unread.clone()),
            None => body,
        };
        // The HTTP version is per connection: the upstream always gets HTTP/1.1, and the
        // client gets its own version back whatever the upstream spoke (wsgiref answers 1.0).
        let client_version = parts.version;
        let upstream_req = self.upstream_request(route, parts, uri, body, &pending);

        let upstream = route.upstream();
        let guard = AbandonGuard(Some(pending.clone()));
        let result = tokio::time::timeout(
            upstream.response_timeout,
            route.client.request(upstream_req),
        )
        .await;
        guard.disarm();
        let failure = match result {
            Ok(Ok(response)) => {
                route.health.answered();
                return self.response(route, response, client_version, pending);
            }
            Ok(Err(error)) => upstream_failure(&error),
            Err(_elapsed) => Failure::new(
                FailureKind::ResponseTimeout,
                format!(
                    "no response head from the upstream within {}",
                    humantime::format_duration(upstream.response_timeout)
                ),
            ),
        };
        if matches!(
            failure.kind,
            FailureKind::ConnectRefused
                | FailureKind::ConnectTimeout
                | FailureKind::TlsError
                | FailureKind::ConnectError
                | FailureKind::ResponseTimeout
        ) {
            route.health.failed(failure.kind);
        }
        self.upstream_failed(&pending, failure, unread.as_ref())
            .await
    }

    /// Phase 1, request filter: what must never be forwarded (CONNECT, absolute-form and
    /// non-origin targets), clients outside the allow-list, a declared body over the limit,
    /// and (`on_audit_failure = "reject"`) a SCIM write the audit trail cannot take now.
    /// Returns the upstream URI of an admitted request.
    fn request_filter(
        &self,
        route: &Route,
        prefix_len: usize,
        parts: &http::request::Parts,
        body: &Incoming,
        pending: &PendingExchange,
        is_write: bool,
    ) -> Result<Uri, Refusal> {
        if let Some(refusal) = refuse_target(&parts.method, &parts.uri, parts.version) {
            return Err(refusal);
        }
        if let Some(allowed) = &route.allowed_clients {
            let credentials = clients::credentials(&parts.headers);
            let cert_subject = pending.conn().client_cert_subject.as_deref();
            if clients::matching(allowed, credentials.digest.as_ref(), cert_subject).is_none() {
                tracing::debug!(peer = %pending.conn().peer, route = %route.tag.name, "Request from a client outside the allow-list refused.");
                return Err(Refusal::new(
                    StatusCode::UNAUTHORIZED,
                    FailureKind::ClientNotAllowed,
                    "no configured client matches this request's credentials or certificate",
                )
                .with_header(header::WWW_AUTHENTICATE, "Bearer"));
            }
        }
        if let Some(max) = self.policy.max_request_body_bytes {
            // A declared length (HTTP/1 Content-Length, HTTP/2 content-length) is checked
            // before anything is forwarded; a chunked body is cut by its tee when it grows past.
            let declared = body.size_hint().lower();
            if declared > max {
                return Err(Refusal::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    FailureKind::RequestBodyTooLarge,
                    format!(
                        "the request declares a {declared}-byte body; the limit is {max} bytes"
                    ),
                ));
            }
        }
        if self.policy.reject_unaudited_writes && is_write && !self.handoff.auditor().can_accept() {
            self.metrics.audit_refused.inc();
            tracing::warn!("Audit trail full: SCIM write refused (on_audit_failure = reject).");
            return Err(Refusal::audit_unavailable(
                "the audit trail cannot record this change now; retry later".to_owned(),
            ));
        }
        upstream_uri(route.upstream(), prefix_len, &parts.uri).map_err(|detail| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                FailureKind::InvalidRequestTarget,
                detail,
            )
        })
    }

    /// Phase 2 (write-ahead mode only): records the intent durably before the write is
    /// forwarded; the refusal otherwise (503 + `Retry-After`, or 400 for a broken body).
    async fn write_ahead(
        &self,
        parts: &http::request::Parts,
        body: Incoming,
        pending: &Arc<PendingExchange>,
        timeout: Duration,
    ) -> Result<ForwardBody, Refusal> {
        let intent = crate::write_ahead::Intent {
            request_id: pending.request_id(),
            conn: pending.conn(),
            route: pending.route().cloned(),
            head: request_head(parts),
            started_at: Timestamp::now(),
            max_body_bytes: self.capture.max_body_bytes,
            timeout,
            handoff: &self.handoff,
        };
        match crate::write_ahead::record(intent, body).await {
            Ok(body) => Ok(body),
            Err(crate::write_ahead::Refusal::Body(detail)) => Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                FailureKind::RequestBodyError,
                detail,
            )),
            Err(crate::write_ahead::Refusal::NotDurable(detail)) => {
                self.metrics.audit_refused.inc();
                tracing::warn!(%detail, "Write-ahead intent not durable: SCIM write refused.");
                Err(Refusal::audit_unavailable(format!(
                    "write-ahead audit: {detail}; retry later"
                )))
            }
        }
    }

    /// Phase 3, upstream request: the configured target, rewritten headers, HTTP/1.1, and the
    /// body through a guarded tee (idle timeout, size limit).
    fn upstream_request(
        &self,
        route: &Route,
        mut parts: http::request::Parts,
        uri: Uri,
        body: ForwardBody,
        pending: &Arc<PendingExchange>,
    ) -> Request<TeeBody<ForwardBody>> {
        let conn = pending.conn();
        rewrite_request_headers(route, &mut parts.headers, &parts.uri, conn.peer, conn.tls);
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        let guards = BodyGuards {
            idle_timeout: self.policy.body_idle_timeout,
            max_bytes: self.policy.max_request_body_bytes,
        };
        Request::from_parts(
            parts,
            TeeBody::request(body, pending.clone(), &self.capture).guard(guards),
        )
    }

    /// Phase 4, response: the upstream's head with hop-by-hop headers stripped, in the
    /// client's HTTP version, and its body through a tee.
    fn response(
        &self,
        route: &Route,
        response: Response<Incoming>,
        client_version: Version,
        pending: Arc<PendingExchange>,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = response.into_parts();
        parts.version = client_version;
        strip_framing_conflict(&mut parts.headers);
        strip_hop_by_hop(&mut parts.headers);
        tracing::Span::current().record("status", parts.status.as_u16());
        let body = TeeBody::response(
            body,
            pending,
            parts.status,
            crate::exchange::detached(&parts.headers),
            &self.capture,
        )
        .guard(BodyGuards {
            // The clock runs only while the client waits for more (hyper polls the body), so
            // a slow reader is never blamed on the upstream.
            idle_timeout: Some(route.upstream().body_idle_timeout),
            max_bytes: None,
        });
        Response::from_parts(parts, ProxyBody::Forwarded(body))
    }

    /// Phase 4 when no response head came: 502/504 for the upstream's failure, or 408/413
    /// when the request body was cut by its guard (that failed the upstream request too; the
    /// client is answered for the cut, as the event says).
    ///
    /// Whatever of the request body the upstream did not read is read now, bounded by
    /// `capture.max_body_bytes` and [`UNREAD_BODY_WAIT`], for the event only: a write the
    /// upstream never saw is still classified from its body (a deactivation refused with 502
    /// stays a deactivation), and nothing more reaches the upstream.
    async fn upstream_failed(
        &self,
        pending: &Arc<PendingExchange>,
        failure: Failure,
        unread: Option<&Unread>,
    ) -> Response<ProxyBody> {
        match pending.request_body_end() {
            Some(BodyEnd::IdleTimeout) => {
                tracing::debug!(peer = %pending.conn().peer, "Request body stalled; exchange cut.");
                let failure = Failure::new(
                    FailureKind::RequestBodyTimeout,
                    "the client stopped sending its request body",
                );
                return generated(pending, StatusCode::REQUEST_TIMEOUT, Some(failure));
            }
            Some(BodyEnd::TooLarge) => {
                let failure = Failure::new(
                    FailureKind::RequestBodyTooLarge,
                    "the request body grew past max_request_body_bytes",
                );
                return generated(pending, StatusCode::PAYLOAD_TOO_LARGE, Some(failure));
            }
            _ => {}
        }
        if let Some(left) = unread.and_then(Unread::take) {
            let (chunks, ended) =
                read_unread(left, self.capture.max_body_bytes, UNREAD_BODY_WAIT).await;
            pending.amend_request_body(&chunks, ended, self.capture.max_body_bytes);
        }
        let status = match failure.kind {
            FailureKind::ConnectTimeout | FailureKind::ResponseTimeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
            _ => StatusCode::BAD_GATEWAY,
        };
        let (method, path) = pending.method_and_path();
        tracing::warn!(
            request_id = %pending.request_id(),
            %method,
            %path,
            kind = %failure.kind,
            error = %failure.detail,
            "Upstream request failed."
        );
        generated(pending, status, Some(failure))
    }

    /// The audit hand-off this proxy reports to.
    pub fn handoff(&self) -> &Handoff {
        &self.handoff
    }
}

/// The upstream URI: the route's scheme and authority, its base path, then the request's own
/// path (after the route's prefix, `prefix_len` bytes) and query byte for byte.
fn upstream_uri(upstream: &UpstreamConfig, prefix_len: usize, uri: &Uri) -> Result<Uri, String> {
    let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let rest = pq.get(prefix_len..).unwrap_or(pq);
    let mut path = String::with_capacity(upstream.base_path.len() + rest.len() + 1);
    path.push_str(&upstream.base_path);
    // `/crm` or `/crm?x` with the prefix `/crm`: the upstream's root.
    if path.is_empty() && !rest.starts_with('/') {
        path.push('/');
    }
    path.push_str(rest);
    Uri::builder()
        .scheme(upstream.scheme.clone())
        .authority(upstream.authority.clone())
        .path_and_query(path)
        .build()
        .map_err(|e| format!("cannot build the upstream URI: {e}"))
}

fn rewrite_request_headers(
    route: &Route,
    headers: &mut HeaderMap,
    uri: &Uri,
    peer: std::net::SocketAddr,
    tls: bool,
) {
    if route.upstream().preserve_host {
        // HTTP/2 clients send the host as :authority, not as a Host header.
        if !headers.contains_key(header::HOST) {
            if let Some(value) = uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                headers.insert(header::HOST, value);
            }
        }
    } else {
        headers.insert(header::HOST, route.upstream_host.clone());
    }
    append_list(headers, &X_FORWARDED_FOR, &peer.ip().to_string());
    append_list(
        headers,
        &X_FORWARDED_PROTO,
        if tls { "https" } else { "http" },
    );
}

/// Keeps the client's X-Request-Id when it is sane, else generates a UUIDv7 and sets it, so the
/// upstream and the event always carry the same id.
fn settle_request_id(headers: &mut HeaderMap) -> String {
    if let Some(value) = headers.get(&X_REQUEST_ID) {
        let bytes = value.as_bytes();
        if !bytes.is_empty()
            && bytes.len() <= MAX_REQUEST_ID_LEN
            && bytes.iter().all(|b| b.is_ascii_graphic())
        {
            // All bytes are printable ASCII, so this is valid UTF-8.
            return String::from_utf8_lossy(bytes).into_owned();
        }
    }
    let id = crate::clock::new_uuid_v7().to_string();
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(X_REQUEST_ID.clone(), value);
    }
    id
}

/// Why a request is answered by scimtap instead of the upstream: the status, the event's
/// failure, and a header the answer must carry (`WWW-Authenticate`, `Retry-After`).
struct Refusal {
    status: StatusCode,
    failure: Failure,
    header: Option<(HeaderName, HeaderValue)>,
}

impl Refusal {
    fn new(status: StatusCode, kind: FailureKind, detail: impl Into<String>) -> Refusal {
        Refusal {
            status,
            failure: Failure::new(kind, detail),
            header: None,
        }
    }

    /// 503 with `Retry-After`: the audit trail cannot record a SCIM write now.
    fn audit_unavailable(detail: String) -> Refusal {
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            FailureKind::AuditUnavailable,
            detail,
        )
        .with_header(header::RETRY_AFTER, "5")
    }

    fn with_header(mut self, name: HeaderName, value: &'static str) -> Refusal {
        self.header = Some((name, HeaderValue::from_static(value)));
        self
    }
}

/// Answers a refused request: its body (whatever is left of it) is dropped unread, the
/// exchange records that nothing was forwarded, and the client gets a SCIM error.
fn refuse<B>(pending: &Arc<PendingExchange>, body: B, refusal: Refusal) -> Response<ProxyBody> {
    drop(body);
    pending.finish_request(BodyCapture::empty(BodyEnd::NotForwarded));
    let mut response = generated(pending, refusal.status, Some(refusal.failure));
    if let Some((name, value)) = refusal.header {
        response.headers_mut().insert(name, value);
    }
    response
}

/// Targets scimtap never forwards: it only ever talks to its configured upstream.
fn refuse_target(method: &Method, uri: &Uri, version: Version) -> Option<Refusal> {
    if method == Method::CONNECT {
        return Some(Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            FailureKind::ConnectRefusedByProxy,
            "CONNECT is not supported: scimtap forwards only to its configured upstream",
        ));
    }
    // HTTP/2 always carries scheme and authority; in HTTP/1 they mean absolute-form.
    if version < Version::HTTP_2 && (uri.scheme().is_some() || uri.authority().is_some()) {
        return Some(Refusal::new(
            StatusCode::BAD_REQUEST,
            FailureKind::AbsoluteFormRefused,
            "absolute-form request targets are not supported: scimtap forwards only to its configured upstream",
        ));
    }
    if !uri.path().starts_with('/') {
        return Some(Refusal::new(
            StatusCode::BAD_REQUEST,
            FailureKind::InvalidRequestTarget,
            "the request target must be an absolute path",
        ));
    }
    None
}

/// A message with both Transfer-Encoding and Content-Length is framed by Transfer-Encoding
/// (RFC 9112 §6.3): drop the Content-Length before the hop-by-hop strip removes the
/// Transfer-Encoding, or the next hop would frame the body by a length that does not hold.
fn strip_framing_conflict(headers: &mut HeaderMap) {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
}

/// Removes the connection-specific headers of RFC 9110 §7.6.1, plus those the Connection
/// header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        &header::CONNECTION,
        &PROXY_CONNECTION,
        &KEEP_ALIVE,
        &header::TE,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// Appends `value` to a comma-separated list header, folding existing lines into one.
fn append_list(headers: &mut HeaderMap, name: &HeaderName, value: &str) {
    let mut joined = String::new();
    for existing in headers.get_all(name) {
        if let Ok(s) = existing.to_str() {
            joined.push_str(s);
            joined.push_str(", ");
        }
    }
    joined.push_str(value);
    if let Ok(v) = HeaderValue::from_str(&joined) {
        headers.insert(name.clone(), v);
    }
}

/// Maps a client error to where and why it failed.
fn upstream_failure(error: &hyper_util::client::legacy::Error) -> Failure {
    let detail = crate::tls::error_chain(error);
    let kind = if error.is_connect() {
        let mut kind = FailureKind::ConnectError;
        let mut source: Option<&(dyn StdError + 'static)> = error.source();
        while let Some(e) = source {
            kind = match connect_error_kind(e) {
                Some(found) => found,
                None => kind,
            };
            source = e.source();
        }
        kind
    } else {
        FailureKind::UpstreamClosed
    };
    Failure::new(kind, detail)
}

/// The kind of one error in a connect failure's chain. `io::Error` hides the error it wraps
/// from `source()` (it returns the wrapped error's source), and the TLS connector wraps an
/// `io::Error` around tokio-rustls's `io::Error` around `rustls::Error`, so look inside.
fn connect_error_kind(e: &(dyn StdError + 'static)) -> Option<FailureKind> {
    if e.is::<rustls::Error>() {
        return Some(FailureKind::TlsError);
    }
    let io = e.downcast_ref::<std::io::Error>()?;
    if let Some(inner) = io.get_ref() {
        if let Some(kind) = connect_error_kind(inner) {
            return Some(kind);
        }
    }
    match io.kind() {
        std::io::ErrorKind::TimedOut => Some(FailureKind::ConnectTimeout),
        std::io::ErrorKind::ConnectionRefused => Some(FailureKind::ConnectRefused),
        _ => None,
    }
}

/// The request as the audit side keeps it: target as received, and the headers events use.
fn request_head(parts: &http::request::Parts) -> RequestHead {
    RequestHead {
        method: parts.method.clone(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
        version: parts.version,
        headers: crate::exchange::detached(&parts.headers),
    }
}

/// Whether a request may change identities at the SCIM server: POST, PUT, PATCH and DELETE,
/// except a POST to `.search` (a query, RFC 7644 §3.4.3).
fn is_scim_write(method: &Method, path: &str) -> bool {
    match *method {
        Method::PUT | Method::PATCH | Method::DELETE => true,
        Method::POST => !path.trim_end_matches('/').ends_with("/.search"),
        _ => false,
    }
}

/// A response scimtap produces itself: a SCIM error body (RFC 7644 §3.12).
fn generated(
    pending: &Arc<PendingExchange>,
    status: StatusCode,
    failure: Option<Failure>,
) -> Response<ProxyBody> {
    let detail = failure
        .as_ref()
        .map_or("request refused", |f| f.detail.as_str());
    let body = serde_json::json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": status.as_str(),
        "detail": format!("scimtap: {detail}"),
    })
    .to_string();
    let body = Bytes::from(body);
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/scim+json"),
    );
    if let Ok(len) = HeaderValue::from_str(&body.len().to_string()) {
        headers.insert(header::CONTENT_LENGTH, len);
    }
    if let Ok(id) = HeaderValue::from_str(pending.request_id()) {
        headers.insert(X_REQUEST_ID.clone(), id);
    }
    pending.finish_response(ResponseOutcome::Generated {
        status,
        headers: headers.clone(),
        body: body.clone(),
        failure,
    });
    let mut response = Response::new(ProxyBody::Generated(Some(body)));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Reports the response side as abandoned if the handler future is dropped (the client went
/// away) before a response head exists.
struct AbandonGuard(Option<Arc<PendingExchange>>);

impl AbandonGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if let Some(pending) = self.0.take() {
            pending.finish_response(ResponseOutcome::Abandoned);
        }
    }
}

/// The body scimtap answers with: the upstream's, teed, or its own small error body.
// The large variant is the one nearly every response uses; boxing it would add an allocation
// per request to spare the rare generated error response a few bytes.
#[allow(clippy::large_enum_variant)]
pub enum ProxyBody {
    Forwarded(TeeBody<Incoming>),
    Generated(Option<Bytes>),
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = TeeError<hyper::Error>;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ProxyBody::Forwarded(body) => std::pin::Pin::new(body).poll_frame(cx),
            ProxyBody::Generated(bytes) => {
                std::task::Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Forwarded(body) => body.is_end_stream(),
            ProxyBody::Generated(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Forwarded(body) => body.size_hint(),
            ProxyBody::Generated(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests;
