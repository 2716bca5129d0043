//! The hand-off unit: one request/response pair as it happened on the wire.
//!
//! A [`PendingExchange`] is created when a request arrives. Its two sides finish independently
//! (the request body when the upstream has read it, the response body when the client has read
//! it, or either one on error or drop). Each side reports exactly once; the side that reports
//! last turns the pending state into an [`Exchange`] and hands it to an [`Auditor`] with a
//! non-blocking call. Nothing here parses a body or waits on anything but an uncontended lock.
//!
//! The request path (listener, proxy, tee, write-ahead) knows the audit side only through the
//! [`Auditor`] trait defined here, as linkerd2-proxy's bodies know their end-of-stream
//! callbacks: nothing on that side imports the pipeline, events, formats or sinks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};
use tokio::sync::{oneshot, Notify};

use crate::clock::Timestamp;

/// The audit side as the request path sees it. Implemented by the audit pipeline; tests and
/// benchmarks plug in their own.
pub trait Auditor: Send + Sync + 'static {
    /// Takes a finished exchange. Must never wait: what cannot be queued is counted and
    /// dropped by the implementation.
    fn submit(&self, exchange: Exchange);

    /// Whether an exchange's events would be queued now (asked before a SCIM write is
    /// forwarded when `audit.on_audit_failure = "reject"`).
    fn can_accept(&self) -> bool;

    /// Write-ahead mode: queues the intent record of a SCIM write about to be forwarded.
    /// Returns a receiver that completes once the record is on stable storage (an error when
    /// no sink could make it so), or `None` when it cannot even be queued: the write must then
    /// be refused, never forwarded unrecorded.
    fn submit_intent(&self, snapshot: Exchange) -> Option<oneshot::Receiver<()>>;
}

/// The request path's end of the audit hand-off: the [`Auditor`], plus what the request path
/// itself tracks about exchanges in flight (for the shutdown drain). Cheap to clone.
#[derive(Clone)]
pub struct Handoff {
    auditor: Arc<dyn Auditor>,
    flight: Arc<InFlight>,
}

#[derive(Default)]
struct InFlight {
    /// Exchanges started and not yet handed off.
    live: AtomicUsize,
    idle: Notify,
    /// Set when the drain deadline passed and scimtap closes the remaining connections.
    aborting: AtomicBool,
}

impl Handoff {
    pub fn new(auditor: Arc<dyn Auditor>) -> Handoff {
        Handoff {
            auditor,
            flight: Arc::default(),
        }
    }

    pub fn auditor(&self) -> &dyn Auditor {
        &*self.auditor
    }

    /// Marks that scimtap itself is now closing connections (drain deadline at shutdown), so
    /// exchanges cut from here on blame the proxy, not the client.
    pub fn mark_aborting(&self) {
        self.flight.aborting.store(true, Ordering::Release);
    }

    fn is_aborting(&self) -> bool {
        self.flight.aborting.load(Ordering::Acquire)
    }

    fn exchange_started(&self) {
        self.flight.live.fetch_add(1, Ordering::AcqRel);
    }

    fn exchange_ended(&self) {
        if self.flight.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.flight.idle.notify_waiters();
        }
    }

    /// Waits until no exchange is in flight: every one has been handed off. A client that
    /// went away can finish its exchange after its connection closed (the upstream side ends
    /// in the upstream client's own task), so connection drain alone is not enough.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.flight.idle.notified();
                if self.flight.live.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

/// Who caused an exchange to fail before a full response (pingora's ErrorSource).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureSide {
    /// The upstream SCIM service: unreachable, too slow, reset mid-body.
    Upstream,
    /// The client (identity provider): went away, sent a broken or refused request.
    Downstream,
    /// scimtap itself.
    Proxy,
}

/// Why an exchange failed, stable and machine-readable (`failure.kind` in events; the table
/// in docs/events.md says what each means and what the client got).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    ConnectRefused,
    ConnectTimeout,
    TlsError,
    ConnectError,
    UpstreamClosed,
    ResponseTimeout,
    ResponseBodyError,
    ResponseBodyTimeout,
    RequestBodyError,
    ClientDisconnected,
    RequestBodyTimeout,
    RequestBodyTooLarge,
    ClientReadTimeout,
    ClientNotAllowed,
    NoRoute,
    AbsoluteFormRefused,
    ConnectRefusedByProxy,
    InvalidRequestTarget,
    Shutdown,
    AuditUnavailable,
}

impl FailureKind {
    /// Every kind, in the order docs/events.md lists them.
    pub const ALL: [FailureKind; 20] = [
        FailureKind::ConnectRefused,
        FailureKind::ConnectTimeout,
        FailureKind::TlsError,
        FailureKind::ConnectError,
        FailureKind::UpstreamClosed,
        FailureKind::ResponseTimeout,
        FailureKind::ResponseBodyError,
        FailureKind::ResponseBodyTimeout,
        FailureKind::RequestBodyError,
        FailureKind::ClientDisconnected,
        FailureKind::RequestBodyTimeout,
        FailureKind::RequestBodyTooLarge,
        FailureKind::ClientReadTimeout,
        FailureKind::ClientNotAllowed,
        FailureKind::NoRoute,
        FailureKind::AbsoluteFormRefused,
        FailureKind::ConnectRefusedByProxy,
        FailureKind::InvalidRequestTarget,
        FailureKind::Shutdown,
        FailureKind::AuditUnavailable,
    ];

    /// The name events carry.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::ConnectRefused => "connect_refused",
            FailureKind::ConnectTimeout => "connect_timeout",
            FailureKind::TlsError => "tls_error",
            FailureKind::ConnectError => "connect_error",
            FailureKind::UpstreamClosed => "upstream_closed",
            FailureKind::ResponseTimeout => "response_timeout",
            FailureKind::ResponseBodyError => "response_body_error",
            FailureKind::ResponseBodyTimeout => "response_body_timeout",
            FailureKind::RequestBodyError => "request_body_error",
            FailureKind::ClientDisconnected => "client_disconnected",
            FailureKind::RequestBodyTimeout => "request_body_timeout",
            FailureKind::RequestBodyTooLarge => "request_body_too_large",
            FailureKind::ClientReadTimeout => "client_read_timeout",
            FailureKind::ClientNotAllowed => "client_not_allowed",
            FailureKind::NoRoute => "no_route",
            FailureKind::AbsoluteFormRefused => "absolute_form_refused",
            FailureKind::ConnectRefusedByProxy => "connect_refused_by_proxy",
            FailureKind::InvalidRequestTarget => "invalid_request_target",
            FailureKind::Shutdown => "shutdown",
            FailureKind::AuditUnavailable => "audit_unavailable",
        }
    }

    /// Who each kind of failure is blamed on.
    pub fn side(self) -> FailureSide {
        match self {
            FailureKind::ConnectRefused
            | FailureKind::ConnectTimeout
            | FailureKind::TlsError
            | FailureKind::ConnectError
            | FailureKind::UpstreamClosed
            | FailureKind::ResponseTimeout
            | FailureKind::ResponseBodyError
            | FailureKind::ResponseBodyTimeout => FailureSide::Upstream,
            FailureKind::RequestBodyError
            | FailureKind::ClientDisconnected
            | FailureKind::RequestBodyTimeout
            | FailureKind::RequestBodyTooLarge
            | FailureKind::ClientReadTimeout
            | FailureKind::ClientNotAllowed
            | FailureKind::NoRoute
            | FailureKind::AbsoluteFormRefused
            | FailureKind::ConnectRefusedByProxy
            | FailureKind::InvalidRequestTarget => FailureSide::Downstream,
            FailureKind::Shutdown | FailureKind::AuditUnavailable => FailureSide::Proxy,
        }
    }
}

impl std::str::FromStr for FailureKind {
    type Err = String;

    /// The kind an event's `failure.kind` names.
    fn from_str(name: &str) -> Result<FailureKind, String> {
        FailureKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .ok_or_else(|| format!("unknown failure kind `{name}`"))
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an exchange failed, as recorded in the event's `failure` object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub side: FailureSide,
    pub kind: FailureKind,
    pub detail: String,
}

impl Failure {
    /// A failure of `kind`, blamed on the kind's side.
    pub fn new(kind: FailureKind, detail: impl Into<String>) -> Failure {
        Failure {
            side: kind.side(),
            kind,
            detail: detail.into(),
        }
    }
}

/// How a body stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyEnd {
    /// Every byte passed through (possibly zero bytes).
    Complete,
    /// The stream failed; the message says how.
    Error(String),
    /// The body was dropped before its end: the reader went away.
    Cancelled,
    /// scimtap did not forward this body (a refused request).
    NotForwarded,
    /// No request body bytes arrived for `listen.body_idle_timeout_secs`: scimtap cut it.
    IdleTimeout,
    /// The request body grew past `listen.max_request_body_bytes`: scimtap cut it.
    TooLarge,
}

/// A process-wide cap on captured body bytes held in memory: exchanges waiting in the audit
/// queues keep their captures, and without a cap 8192 queued exchanges of 1 MiB bodies would
/// hold 16 GiB. Past the cap, captures are truncated (and counted), never forwarding.
#[derive(Debug, Clone)]
pub struct CaptureBudget(Arc<BudgetState>);

#[derive(Debug)]
struct BudgetState {
    used: AtomicUsize,
    max: usize,
    exhausted: prometheus_client::metrics::counter::Counter,
}

impl CaptureBudget {
    pub fn new(
        max: usize,
        exhausted: prometheus_client::metrics::counter::Counter,
    ) -> CaptureBudget {
        CaptureBudget(Arc::new(BudgetState {
            used: AtomicUsize::new(0),
            max,
            exhausted,
        }))
    }

    /// Takes `n` bytes from the budget, or nothing (and counts it) when they do not fit.
    fn try_reserve(&self, n: usize) -> bool {
        let state = &self.0;
        let reserved = state
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= state.max)
            })
            .is_ok();
        if !reserved {
            state.exhausted.inc();
        }
        reserved
    }

    fn release(&self, n: usize) {
        self.0.used.fetch_sub(n, Ordering::Relaxed);
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.0.used.load(Ordering::Relaxed)
    }
}

/// What was seen of one body: every byte counted, at most the capture limit kept.
#[derive(Debug)]
pub struct BodyCapture {
    /// Kept frames, in order, copied out of the connection's buffers.
    pub chunks: Vec<Bytes>,
    /// Bytes kept in `chunks`.
    pub captured_bytes: usize,
    /// Bytes that passed through, kept or not.
    pub total_bytes: u64,
    /// True when `total_bytes` exceeded the capture limit.
    pub truncated: bool,
    pub end: BodyEnd,
    /// Where `captured_bytes` were reserved; given back when the capture is dropped.
    pub budget: Option<CaptureBudget>,
}

impl BodyCapture {
    pub fn empty(end: BodyEnd) -> BodyCapture {
        BodyCapture {
            chunks: Vec::new(),
            captured_bytes: 0,
            total_bytes: 0,
            truncated: false,
            end,
            budget: None,
        }
    }

    /// Keeps up to `limit` bytes in total, as far as the budget allows.
    pub fn record(&mut self, data: &Bytes, limit: usize) {
        self.total_bytes += data.len() as u64;
        if self.truncated || data.is_empty() {
            return;
        }
        let room = limit.saturating_sub(self.captured_bytes);
        let take = data.len().min(room);
        let reserved = take > 0 && self.budget.as_ref().is_none_or(|b| b.try_reserve(take));
        if reserved {
            // A copy, not a reference into hyper's read buffer: a reference would keep the
            // whole buffer alive and the budget would undercount what is held.
            self.chunks.push(Bytes::copy_from_slice(&data[..take]));
            self.captured_bytes += take;
        }
        if !reserved || take < data.len() {
            self.truncated = true;
        }
    }

    /// The kept bytes as one contiguous buffer (a copy only when there are several frames).
    pub fn to_bytes(&self) -> Bytes {
        match self.chunks.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut buf = BytesMut::with_capacity(self.captured_bytes);
                for chunk in many {
                    buf.extend_from_slice(chunk);
                }
                buf.freeze()
            }
        }
    }
}

impl Drop for PendingExchange {
    fn drop(&mut self) {
        self.handoff.exchange_ended();
    }
}

impl Drop for BodyCapture {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.release(self.captured_bytes);
        }
    }
}

/// Per-connection facts every exchange on it shares.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// Which listener accepted it: its index in `listen.address`, then
    /// `listen.extra_addresses` (a route's `listen` matches on it).
    pub listener: usize,
    pub tls: bool,
    /// Subject of the client certificate (mTLS), RFC 4514 form (`CN=okta,O=Example`).
    pub client_cert_subject: Option<Arc<str>>,
    /// Set by the listener when it cut the connection because the client stopped reading
    /// (nothing could be written for `listen.body_idle_timeout_secs`). Exchanges cut with it
    /// report `client_read_timeout` instead of `client_disconnected`.
    pub write_stalled: Arc<AtomicBool>,
    /// The same for one HTTP/2 stream (`None` elsewhere): set when the listener reset it
    /// because the client let its flow-control window stay shut for
    /// `listen.body_idle_timeout_secs`.
    pub stream_stalled: Option<Arc<AtomicBool>>,
}

impl ConnInfo {
    /// A plain connection without a client certificate.
    pub fn new(peer: SocketAddr, tls: bool) -> ConnInfo {
        ConnInfo {
            peer,
            listener: 0,
            tls,
            client_cert_subject: None,
            write_stalled: Arc::default(),
            stream_stalled: None,
        }
    }
}

/// The headers an event is built from (src/event.rs): who sent it, what it carries, where
/// a created resource lives. Nothing else is kept for the audit side.
const AUDITED_HEADERS: [http::header::HeaderName; 6] = [
    http::header::AUTHORIZATION,
    http::header::USER_AGENT,
    http::header::CONTENT_TYPE,
    http::header::CONTENT_LENGTH,
    http::header::TRANSFER_ENCODING,
    http::header::LOCATION,
];

/// An owned copy of the headers the event needs. Header values hyper parsed point into the
/// connection's read buffer: an exchange waiting in the audit queue must keep neither that
/// buffer (tens of KiB) nor headers it never reads, neither of which
/// `capture.max_pending_bytes` counts.
pub fn detached(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(AUDITED_HEADERS.len());
    for name in &AUDITED_HEADERS {
        for value in headers.get_all(name) {
            let mut copy =
                HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
            copy.set_sensitive(value.is_sensitive());
            out.append(name.clone(), copy);
        }
    }
    out
}

/// The request as received from the client (before scimtap's header rewrites).
#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    /// Path and query exactly as received.
    pub path_and_query: String,
    pub version: Version,
    pub headers: HeaderMap,
}

/// The response as sent to the client.
#[derive(Debug)]
pub struct ResponseRecord {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: BodyCapture,
    /// True when scimtap produced this response itself (502, 504, refusals).
    pub generated: bool,
}

/// The route an exchange took: its name, and its request counters (resolved once per route,
/// so counting an exchange touches atomics only).
#[derive(Debug, Default)]
pub struct RouteTag {
    pub name: Arc<str>,
    pub requests: crate::telemetry::StatusCounters,
}

impl RouteTag {
    /// A route by name alone, its counters in no registry (tests, benches).
    pub fn named(name: &str) -> Arc<RouteTag> {
        Arc::new(RouteTag {
            name: Arc::from(name),
            requests: Default::default(),
        })
    }
}

/// A finished exchange, ready for classification and the event.
#[derive(Debug)]
pub struct Exchange {
    pub request_id: String,
    pub started_at: Timestamp,
    pub duration: Duration,
    pub conn: ConnInfo,
    /// The `[[routes]]` entry that took the request; `None` when none did.
    pub route: Option<Arc<RouteTag>>,
    pub request: RequestHead,
    pub request_body: BodyCapture,
    /// None when no response reached the client (it went away first).
    pub response: Option<ResponseRecord>,
    /// Set by the request path when it knows why the exchange failed (upstream errors,
    /// refusals); otherwise derived from how the bodies ended, see [`Exchange::failure`].
    pub recorded_failure: Option<Failure>,
}

impl Exchange {
    /// The name of the route that took the request.
    pub fn route_name(&self) -> Option<&str> {
        self.route.as_ref().map(|r| &*r.name)
    }

    /// Why the exchange failed before a full response, if it did. Precedence: a client that
    /// broke its own request body, then what the request path recorded, then how the response
    /// body ended.
    pub fn failure(&self) -> Option<Failure> {
        match &self.request_body.end {
            BodyEnd::Error(detail) => {
                return Some(Failure::new(FailureKind::RequestBodyError, detail.clone()))
            }
            BodyEnd::IdleTimeout => {
                return Some(Failure::new(FailureKind::RequestBodyTimeout, format!(
                        "the client stopped sending its request body after {} bytes",
                        self.request_body.total_bytes
                    )))
            }
            BodyEnd::TooLarge => {
                return Some(Failure::new(FailureKind::RequestBodyTooLarge, format!(
                        "the request body grew past max_request_body_bytes; it was cut after {} bytes were forwarded",
                        self.request_body.total_bytes
                    )))
            }
            BodyEnd::Complete | BodyEnd::Cancelled | BodyEnd::NotForwarded => {}
        }
        if let Some(f) = &self.recorded_failure {
            return Some(f.clone());
        }
        let Some(response) = &self.response else {
            return Some(Failure::new(
                FailureKind::ClientDisconnected,
                "the client went away before the response head was sent".to_owned(),
            ));
        };
        match &response.body.end {
            BodyEnd::Complete | BodyEnd::NotForwarded => None,
            BodyEnd::IdleTimeout => Some(Failure::new(
                FailureKind::ResponseBodyTimeout,
                format!(
                    "the upstream stopped sending its response body for upstream.body_idle_timeout_secs; scimtap cut it after {} bytes",
                    response.body.total_bytes
                ),
            )),
            // Only request bodies have a size limit.
            BodyEnd::TooLarge => None,
            BodyEnd::Error(detail) => {
                Some(Failure::new(FailureKind::ResponseBodyError, detail.clone()))
            }
            BodyEnd::Cancelled => Some(Failure::new(
                FailureKind::ClientDisconnected,
                format!(
                    "the client went away after {} response body bytes",
                    response.body.total_bytes
                ),
            )),
        }
    }
}

/// Which half of the exchange a body belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
}

/// What the response side reports when it finishes.
pub enum ResponseOutcome {
    /// The upstream's response, whose body has now ended.
    Forwarded {
        status: StatusCode,
        headers: HeaderMap,
        body: BodyCapture,
    },
    /// scimtap answered itself, with this (small) body.
    Generated {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        failure: Option<Failure>,
    },
    /// The client went away before any response head was sent.
    Abandoned,
}

struct PendingState {
    request: Option<RequestHead>,
    request_body: Option<BodyCapture>,
    response: Option<ResponseRecord>,
    failure: Option<Failure>,
    remaining: u8,
}

/// An exchange in flight. Shared (`Arc`) by the request body tee, the response body tee and
/// the request handler; whichever finishes last hands the [`Exchange`] off.
pub struct PendingExchange {
    request_id: String,
    started_at: Timestamp,
    started: Instant,
    conn: ConnInfo,
    route: Option<Arc<RouteTag>>,
    state: Mutex<PendingState>,
    handoff: Handoff,
}

impl PendingExchange {
    pub fn new(
        request_id: String,
        conn: ConnInfo,
        request: RequestHead,
        handoff: Handoff,
        route: Option<Arc<RouteTag>>,
    ) -> Arc<Self> {
        handoff.exchange_started();
        Arc::new(PendingExchange {
            request_id,
            started_at: Timestamp::now(),
            started: Instant::now(),
            conn,
            route,
            state: Mutex::new(PendingState {
                request: Some(request),
                request_body: None,
                response: None,
                failure: None,
                remaining: 2,
            }),
            handoff,
        })
    }

    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The route that took the request (`None`: no route did).
    pub fn route(&self) -> Option<&Arc<RouteTag>> {
        self.route.as_ref()
    }

    /// The connection this exchange arrived on.
    pub fn conn(&self) -> &ConnInfo {
        &self.conn
    }

    /// How the request body ended, once it has reported.
    pub fn request_body_end(&self) -> Option<BodyEnd> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.request_body.as_ref().map(|b| b.end.clone())
    }

    /// The request's method and path (for a log line on the failure path: it takes the lock
    /// and copies).
    pub fn method_and_path(&self) -> (Method, String) {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.request.as_ref().map_or_else(
            || (Method::GET, String::new()),
            |r| {
                let path = r.path_and_query.split('?').next().unwrap_or_default();
                (r.method.clone(), path.to_owned())
            },
        )
    }

    /// Adds request body bytes read after the upstream failed (never forwarded) to the
    /// capture, up to `limit` in all, so the event can classify the request; `ended` says
    /// whether they reach the body's end (if not, the capture is marked truncated). Only
    /// before the response side reports, when the request side already has.
    pub fn amend_request_body(&self, chunks: &[Bytes], ended: bool, limit: usize) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(capture) = state.request_body.as_mut() else {
            return;
        };
        for chunk in chunks {
            capture.record(chunk, limit);
        }
        if !ended {
            capture.truncated = true;
        }
    }

    /// Reports how the request body ended. Called once.
    pub fn finish_request(&self, body: BodyCapture) {
        let done = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.request_body = Some(body);
            state.remaining = state.remaining.saturating_sub(1);
            state.remaining == 0
        };
        if done {
            self.hand_off();
        }
    }

    /// Reports how the response side ended. Called once.
    pub fn finish_response(&self, outcome: ResponseOutcome) {
        let done = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            match outcome {
                ResponseOutcome::Forwarded {
                    status,
                    headers,
                    body,
                } => {
                    state.response = Some(ResponseRecord {
                        status,
                        headers,
                        body,
                        generated: false,
                    });
                }
                ResponseOutcome::Generated {
                    status,
                    headers,
                    body,
                    failure,
                } => {
                    let mut capture = BodyCapture::empty(BodyEnd::Complete);
                    capture.total_bytes = body.len() as u64;
                    capture.captured_bytes = body.len();
                    capture.chunks.push(body);
                    state.response = Some(ResponseRecord {
                        status,
                        headers,
                        body: capture,
                        generated: true,
                    });
                    state.failure = failure;
                }
                ResponseOutcome::Abandoned => {}
            }
            state.remaining = state.remaining.saturating_sub(1);
            state.remaining == 0
        };
        if done {
            self.hand_off();
        }
    }

    fn hand_off(&self) {
        let duration = self.started.elapsed();
        let exchange = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(request) = state.request.take() else {
                // Both sides already reported and the exchange left: cannot happen, as
                // `remaining` reaches zero once. Nothing to hand off twice.
                return;
            };
            let mut recorded_failure = state.failure.take();
            let cut = state
                .response
                .as_ref()
                .is_none_or(|r| r.body.end == BodyEnd::Cancelled);
            let stalled = self.conn.write_stalled.load(Ordering::Relaxed)
                || self
                    .conn
                    .stream_stalled
                    .as_ref()
                    .is_some_and(|s| s.load(Ordering::Relaxed));
            if recorded_failure.is_none() && cut && stalled {
                recorded_failure = Some(Failure::new(FailureKind::ClientReadTimeout, "the client stopped reading; scimtap closed the connection after body_idle_timeout_secs"
                        .to_owned()));
            }
            if recorded_failure.is_none() && cut && self.handoff.is_aborting() {
                recorded_failure = Some(Failure::new(
                    FailureKind::Shutdown,
                    "scimtap closed the connection at the shutdown drain deadline".to_owned(),
                ));
            }
            Exchange {
                request_id: self.request_id.clone(),
                started_at: self.started_at,
                duration,
                conn: self.conn.clone(),
                route: self.route.clone(),
                request,
                request_body: state
                    .request_body
                    .take()
                    .unwrap_or_else(|| BodyCapture::empty(BodyEnd::Cancelled)),
                response: state.response.take(),
                recorded_failure,
            }
        };
        self.handoff.auditor.submit(exchange);
    }
}

/// An [`Auditor`] that keeps what it is given, for unit tests of the request path.
#[cfg(test)]
pub(crate) mod testing {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use super::{Auditor, Exchange, Handoff};

    #[derive(Default)]
    pub(crate) struct Collected(Mutex<VecDeque<Exchange>>);

    impl Collected {
        /// The next exchange handed off, oldest first.
        pub(crate) fn try_recv(&self) -> Result<Exchange, &'static str> {
            self.0
                .lock()
                .unwrap()
                .pop_front()
                .ok_or("no exchange handed off")
        }
    }

    impl Auditor for Collected {
        fn submit(&self, exchange: Exchange) {
            self.0.lock().unwrap().push_back(exchange);
        }
        fn can_accept(&self) -> bool {
            true
        }
        fn submit_intent(&self, _: Exchange) -> Option<tokio::sync::oneshot::Receiver<()>> {
            None
        }
    }

    /// A hand-off whose exchanges the caller reads back.
    pub(crate) fn handoff() -> (Handoff, Arc<Collected>) {
        let collected = Arc::new(Collected::default());
        (Handoff::new(collected.clone()), collected)
    }
}

#[cfg(test)]
mod tests {
    use super::FailureKind;

    #[test]
    fn every_failure_kind_round_trips_and_is_documented() {
        let events_md = include_str!("../docs/events.md");
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../docs/event.schema.json")).unwrap();
        let schema_kinds = &schema["$defs"]["failure"]["properties"]["kind"]["enum"];
        let listed = |kind: &str| {
            schema_kinds
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == kind))
        };
        for kind in FailureKind::ALL {
            assert!(
                listed(kind.as_str()),
                "docs/event.schema.json does not allow failure.kind `{kind}`"
            );
            assert_eq!(kind.as_str().parse::<FailureKind>(), Ok(kind));
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::json!(kind.as_str())
            );
            let row = format!(
                "| `{kind}` | {} |",
                serde_json::to_value(kind.side()).unwrap().as_str().unwrap()
            );
            assert!(
                events_md.contains(&row),
                "docs/events.md has no row `{row}`"
            );
        }
        assert!("no_such_kind".parse::<FailureKind>().is_err());
    }
}
