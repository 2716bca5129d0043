//! The audit event: one JSON object per exchange (per operation for a Bulk request), built
//! from a finished [`Exchange`] and its SCIM classification.
//!
//! Field names are a public contract (docs/events.md, docs/event.schema.json); bump
//! [`SCHEMA_VERSION`] when one changes meaning. Credentials never enter an event: the bearer
//! token is reduced to a short SHA-256 fingerprint, no header value other than User-Agent,
//! Content-Type and X-Request-Id is copied, sensitive query parameters are replaced, and bodies
//! appear only when `capture.include_bodies = "redacted"`, with every sensitive value replaced.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use http::header::{CONTENT_TYPE, LOCATION, USER_AGENT};
use http::HeaderMap;
use serde::Serialize;
use serde_json::Value;

use crate::clients;
use crate::clock::{new_uuid_v7, Timestamp};
use crate::config::{ClientConfig, Config, IncludeBodies};
use crate::exchange::{
    BodyCapture, BodyEnd, Exchange, Failure, FailureKind, FailureSide, ResponseRecord,
};
use crate::scim::{
    self, Body, DeprovisionInfo, OutcomeReason, Parts, Pseudonymizer, ScimContext, ScimInfo,
};

/// Version of the event layout. Readers should branch on the major part.
pub const SCHEMA_VERSION: &str = "1.6";

/// Query parameters whose values never appear in `http.query`.
const SECRET_QUERY_PARAMS: &[&str] = &[
    "access_token",
    "id_token",
    "refresh_token",
    "token",
    "api_key",
    "apikey",
    "password",
    "client_secret",
    "secret",
];

/// Everything event building needs besides the exchange. Owned by the audit worker, which
/// also teaches it custom resource types seen in `/ResourceTypes` responses.
#[derive(Debug, Clone, Default)]
pub struct EventContext {
    pub scim: ScimContext,
    pub clients: Vec<ClientConfig>,
    pub include_bodies: IncludeBodies,
    /// Configured (`redact.query_params`), on top of [`SECRET_QUERY_PARAMS`].
    secret_query_params: HashSet<String>,
    /// The service requests are forwarded to, named on every event.
    pub upstream: Option<Arc<UpstreamInfo>>,
}

impl EventContext {
    /// The context of the configuration's first route (the only one without `[[routes]]`).
    pub fn from_config(config: &Config) -> EventContext {
        EventContext::for_route(config, config.routes.first())
    }

    /// How events of `route` are described: `[scim]` with the route's prefix before its base
    /// path, `[redact]` plus the route's own, and the route's upstream. `None`: requests no
    /// route took (nothing was forwarded).
    pub fn for_route(config: &Config, route: Option<&crate::config::RouteConfig>) -> EventContext {
        let s = &config.scim;
        let custom = s.resource_types.iter().cloned().collect();
        let pseudonymizer = s.hash_key.as_ref().map(|k| Pseudonymizer::new(k.0.clone()));
        let (route_attributes, route_params) = route.map_or((&[][..], &[][..]), |r| {
            (&r.redact_attributes[..], &r.redact_query_params[..])
        });
        let secret_query_params: HashSet<String> = s
            .redact_query_params
            .iter()
            .chain(route_params)
            .map(|p| p.to_ascii_lowercase())
            .collect();
        let redact_attributes: Vec<String> = s
            .redact_attributes
            .iter()
            .chain(route_attributes)
            .cloned()
            .collect();
        let prefix = route.and_then(|r| r.path_prefix.as_deref()).unwrap_or("");
        let base_path = s.base_path.as_ref().map(|base| format!("{prefix}{base}"));
        EventContext {
            scim: ScimContext::new(base_path, custom, &redact_attributes, pseudonymizer),
            clients: s.clients.clone(),
            include_bodies: config.capture.include_bodies,
            secret_query_params,
            upstream: route.map(|r| Arc::new(UpstreamInfo::from_config(&r.upstream))),
        }
    }

    /// Learns custom resource types from a successful `/ResourceTypes` response.
    pub fn learn(&mut self, ex: &Exchange) {
        let Some(response) = &ex.response else { return };
        if response.status.as_u16() != 200
            || !ex.request.method.as_str().eq_ignore_ascii_case("GET")
        {
            return;
        }
        let (path, _) = split_target(&ex.request.path_and_query);
        let endpoint = scim::endpoint::locate(
            path,
            self.scim.base_path.as_deref(),
            &self.scim.custom_types,
        );
        if endpoint != scim::Endpoint::Discovery(scim::Discovery::ResourceTypes) {
            return;
        }
        let bytes = response.body.to_bytes();
        if let Body::Json(v) = parse_body(&bytes, &response.body, "response") {
            self.scim.learn_resource_types(&v);
        }
    }
}

/// One event. Serialized by hand (below) only to write `outcome_reason`, which classification
/// keeps per operation in [`ScimInfo::outcome_reason`], at the top level right after the
/// `outcome` it qualifies; every other field is written as declared, in order.
#[derive(Debug)]
pub struct AuditEvent<'a> {
    pub schema_version: &'static str,
    /// UUIDv7: unique, and sorts by creation time.
    pub event_id: String,
    /// When the request arrived, RFC 3339 UTC with milliseconds.
    pub timestamp: Timestamp,
    /// From request arrival until both bodies finished.
    pub duration_ms: f64,
    pub request_id: &'a str,
    pub outcome: Outcome,
    pub client: ClientInfo,
    pub http: HttpInfo<'a>,
    pub scim: ScimInfo,
    pub failure: Option<FailureInfo>,
    /// With `[state]`: the earlier failed attempt at the same change this event retries.
    pub retry_of: Option<String>,
    /// On `deprovision.gap` / `deprovision.closed` events only.
    pub deprovision: Option<DeprovisionInfo>,
    /// On `alert.firing` / `alert.resolved` events only (`[[alerts]]`).
    pub alert: Option<crate::alerts::AlertInfo>,
    /// The `[[routes]]` entry that took the request (`default` without routes); `None` when
    /// none did.
    pub route: Option<Arc<str>>,
    /// The provisioned app: where the request was (or would have been) forwarded.
    pub upstream: Option<Arc<UpstreamInfo>>,
}

/// `upstream`: the service behind scimtap, from `[upstream] url` (host and port only: never
/// the URL's user-info).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct UpstreamInfo {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl UpstreamInfo {
    /// The host is an IP address rather than a DNS name (formats name the field after it).
    pub fn host_is_ip(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }

    pub fn from_config(upstream: &crate::config::UpstreamConfig) -> UpstreamInfo {
        let tls = upstream.is_https();
        UpstreamInfo {
            // `Authority::host` keeps an IPv6 address's brackets.
            host: upstream
                .authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: upstream
                .authority
                .port_u16()
                .unwrap_or(if tls { 443 } else { 80 }),
            tls,
        }
    }
}

impl Serialize for AuditEvent<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut event = serializer.serialize_struct("AuditEvent", 12)?;
        event.serialize_field("schema_version", self.schema_version)?;
        event.serialize_field("event_id", &self.event_id)?;
        event.serialize_field("timestamp", &self.timestamp)?;
        event.serialize_field("duration_ms", &self.duration_ms)?;
        event.serialize_field("request_id", self.request_id)?;
        event.serialize_field("outcome", &self.outcome)?;
        event.serialize_field("outcome_reason", &self.outcome_reason())?;
        event.serialize_field("client", &self.client)?;
        event.serialize_field("route", &self.route.as_deref())?;
        if let Some(upstream) = &self.upstream {
            event.serialize_field("upstream", upstream.as_ref())?;
        }
        event.serialize_field("http", &self.http)?;
        event.serialize_field("scim", &self.scim)?;
        event.serialize_field("failure", &self.failure)?;
        // Present only when there is one, so events without `[state]` are as before.
        if let Some(retry_of) = &self.retry_of {
            event.serialize_field("retry_of", retry_of)?;
        }
        if let Some(deprovision) = &self.deprovision {
            event.serialize_field("deprovision", deprovision)?;
        }
        if let Some(alert) = &self.alert {
            event.serialize_field("alert", alert)?;
        }
        event.end()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ClientInfo {
    /// The peer IP of the connection.
    pub address: String,
    pub port: u16,
    pub tls: bool,
    /// Subject of the client certificate (mTLS), RFC 4514 form.
    pub certificate_subject: Option<String>,
    pub user_agent: Option<String>,
    /// Authorization scheme, lower case (`bearer`, `basic`, ...).
    pub auth_scheme: Option<String>,
    /// First 16 hex digits of SHA-256 over the credentials after the scheme.
    pub token_fingerprint: Option<String>,
    /// The configured `[[clients]]` entry whose token this is.
    pub name: Option<String>,
    /// The identity provider: from the matched client, else recognised from the User-Agent.
    pub idp: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HttpInfo<'a> {
    pub version: &'static str,
    pub method: &'a str,
    pub path: &'a str,
    /// The raw query, with the values of secret parameters (`access_token`, ...) replaced.
    pub query: Option<Cow<'a, str>>,
    /// Status sent to the client; null when none was.
    pub status: Option<u16>,
    /// Body bytes received from the client and forwarded.
    pub request_bytes: u64,
    /// Body bytes received from the upstream and forwarded (or generated by scimtap).
    pub response_bytes: u64,
    pub request_content_type: Option<String>,
    pub response_content_type: Option<String>,
    /// The capture kept only part of the body (`capture.max_body_bytes` or
    /// `capture.max_pending_bytes`).
    pub request_body_truncated: bool,
    pub response_body_truncated: bool,
    /// True when scimtap answered itself (502, 504, a refused request).
    pub response_generated: bool,
    /// With `capture.include_bodies = "redacted"`: the request body, sensitive values replaced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_body: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_body: Option<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailureInfo {
    pub side: FailureSide,
    pub kind: FailureKind,
    pub detail: String,
}

impl From<Failure> for FailureInfo {
    fn from(f: Failure) -> Self {
        FailureInfo {
            side: f.side,
            kind: f.kind,
            detail: f.detail,
        }
    }
}

/// The events of one exchange: one, or one per operation of a Bulk request.
pub fn events_for<'a>(ex: &'a Exchange, ctx: &EventContext) -> Vec<AuditEvent<'a>> {
    let (path, query) = split_target(&ex.request.path_and_query);
    let failure = ex.failure();
    let status = ex.response.as_ref().map(|r| r.status.as_u16());
    let envelope_ok = matches!((status, &failure), (Some(s), None) if s < 400);

    // The bodies' bytes outlive their parsed forms, which borrow from them.
    let request_bytes = ex.request_body.to_bytes();
    let response_bytes = ex.response.as_ref().map(|r| r.body.to_bytes());
    let request_body = match parse_body(&request_bytes, &ex.request_body, "request") {
        // The exchange ended before the body was read (the upstream failed first, or the
        // request was refused): say so rather than classify an empty body.
        Body::Absent
            if ex.request_body.end != BodyEnd::Complete && declares_body(&ex.request.headers) =>
        {
            Body::Invalid(
                "request body was not received: the exchange ended before scimtap forwarded it"
                    .to_owned(),
            )
        }
        other => other,
    };
    let parse_response = |r: &ResponseRecord| {
        parse_body(
            response_bytes.as_deref().unwrap_or_default(),
            &r.body,
            "response",
        )
    };
    // Classification reads the service's response only where it needs it; scimtap's own error
    // body repeats `failure` and is not the service's SCIM error.
    let classified_response = ex.response.as_ref().filter(|r| {
        !r.generated
            && wants_response_body(
                ex.request.method.as_str(),
                path,
                r.status.as_u16(),
                r.body.total_bytes,
                &ctx.scim,
            )
    });
    let response_body = classified_response.map_or(Body::Absent, parse_response);
    let location = ex
        .response
        .as_ref()
        .and_then(|r| r.headers.get(LOCATION))
        .and_then(|v| v.to_str().ok());
    let parts = Parts {
        method: ex.request.method.as_str(),
        path,
        query,
        request: &request_body,
        status,
        response: &response_body,
        location,
    };
    let infos = scim::classify(&parts, &ctx.scim);

    let credentials = clients::credentials(&ex.request.headers);
    let user_agent = header_text(&ex.request.headers, USER_AGENT);
    let cert_subject = ex.conn.client_cert_subject.as_deref();
    let client_entry = clients::matching(&ctx.clients, credentials.digest.as_ref(), cert_subject);
    let client = ClientInfo {
        address: ex.conn.peer.ip().to_string(),
        port: ex.conn.peer.port(),
        tls: ex.conn.tls,
        certificate_subject: cert_subject.map(str::to_owned),
        token_fingerprint: credentials.fingerprint(),
        auth_scheme: credentials.scheme,
        name: client_entry.map(|c| c.name.clone()),
        idp: client_entry.and_then(|c| c.idp.clone()).or_else(|| {
            user_agent
                .as_deref()
                .and_then(clients::idp_from_user_agent)
                .map(str::to_owned)
        }),
        user_agent,
    };
    let (shown_request, shown_response) = match ctx.include_bodies {
        IncludeBodies::None => (None, None),
        IncludeBodies::Redacted => {
            // Any response is shown, scimtap's own included; one already parsed is not parsed
            // again.
            let shown_response = match (classified_response, &ex.response) {
                (Some(_), _) => shown_body(&response_body, &ctx.scim),
                (None, Some(r)) => shown_body(&parse_response(r), &ctx.scim),
                (None, None) => None,
            };
            (shown_body(&request_body, &ctx.scim), shown_response)
        }
    };
    let http = HttpInfo {
        version: version_str(ex.request.version),
        method: ex.request.method.as_str(),
        path,
        query: query.map(|q| {
            redact_query(
                q,
                &ctx.secret_query_params,
                ctx.scim.pseudonymizer.is_some(),
            )
        }),
        status,
        request_bytes: ex.request_body.total_bytes,
        response_bytes: ex.response.as_ref().map_or(0, |r| r.body.total_bytes),
        request_content_type: header_text(&ex.request.headers, CONTENT_TYPE),
        response_content_type: ex
            .response
            .as_ref()
            .and_then(|r| header_text(&r.headers, CONTENT_TYPE)),
        request_body_truncated: ex.request_body.truncated,
        response_body_truncated: ex.response.as_ref().is_some_and(|r| r.body.truncated),
        response_generated: ex.response.as_ref().is_some_and(|r| r.generated),
        request_body: shown_request,
        response_body: shown_response,
    };
    let timestamp = ex.started_at;
    let duration_ms = (ex.duration.as_secs_f64() * 1_000_000.0).round() / 1000.0;
    let failure = failure.map(FailureInfo::from);

    infos
        .into_iter()
        .map(|scim| {
            // A Bulk operation succeeded when the exchange did and its own entry says so.
            let answered_ok = match scim.bulk.as_ref().and_then(|b| b.status) {
                Some(op_status) => envelope_ok && op_status < 400,
                None if scim.bulk.is_some() => false,
                None => envelope_ok,
            };
            // "Not found" that fulfils the intent (docs/events.md, Outcome rule), unless the
            // exchange itself failed; for a Bulk operation, unless the envelope did.
            let reasoned = scim.outcome_reason.is_some()
                && match scim.bulk {
                    Some(_) => envelope_ok,
                    None => failure.is_none() && status.is_some(),
                };
            let ok = answered_ok || reasoned;
            AuditEvent {
                schema_version: SCHEMA_VERSION,
                event_id: new_uuid_v7().to_string(),
                timestamp,
                duration_ms,
                request_id: &ex.request_id,
                outcome: if ok {
                    Outcome::Success
                } else {
                    Outcome::Failure
                },
                client: client.clone(),
                http: http.clone(),
                scim,
                failure: failure.clone(),
                retry_of: None,
                deprovision: None,
                alert: None,
                route: ex.route.as_ref().map(|r| r.name.clone()),
                upstream: ctx.upstream.clone(),
            }
        })
        .collect()
}

/// The exchange's request and response bodies as JSON, redacted and pseudonymised by the same
/// rules as `http.request_body` / `http.response_body` (whatever `include_bodies` says): what
/// the shadow state may keep. `None` for a body that is absent, truncated or not JSON, and for
/// scimtap's own error bodies.
pub fn redacted_bodies(ex: &Exchange, ctx: &EventContext) -> (Option<Value>, Option<Value>) {
    let request_bytes = ex.request_body.to_bytes();
    let request = match parse_body(&request_bytes, &ex.request_body, "request") {
        Body::Json(v) => Some(scim::redact_json(&v, &ctx.scim)),
        _ => None,
    };
    let response = ex.response.as_ref().filter(|r| !r.generated).and_then(|r| {
        let bytes = r.body.to_bytes();
        match parse_body(&bytes, &r.body, "response") {
            Body::Json(v) => Some(scim::redact_json(&v, &ctx.scim)),
            _ => None,
        }
    });
    (request, response)
}

impl AuditEvent<'_> {
    /// Why `outcome` is `success` although the service said "not found"; `None` normally, and
    /// always when the outcome is a failure (the exchange itself failed, or a Bulk envelope did).
    pub fn outcome_reason(&self) -> Option<OutcomeReason> {
        self.scim
            .outcome_reason
            .filter(|_| self.outcome == Outcome::Success)
    }

    /// The event as one JSON line, newline included.
    ///
    /// # Errors
    /// Only if serialization fails, which the types above do not allow in practice.
    pub fn to_json_line(&self) -> Result<Vec<u8>, serde_json::Error> {
        // Room for a typical event and the chain fields sealed onto it (no reallocation).
        let mut line = Vec::with_capacity(2048);
        serde_json::to_writer(&mut line, self)?;
        line.push(b'\n');
        Ok(line)
    }
}

fn split_target(path_and_query: &str) -> (&str, Option<&str>) {
    match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    }
}

/// `bytes`: the capture's bytes (`capture.to_bytes()`), which the parsed body borrows.
fn parse_body<'b>(bytes: &'b [u8], capture: &BodyCapture, side: &str) -> Body<'b> {
    Body::parse(bytes, capture.total_bytes, capture.truncated, side)
}

/// The largest list or search response parsed to tell a lookup that found nothing
/// (`totalResults: 0`). An empty ListResponse is about 130 bytes (Entra's, with paging
/// fields); anything much bigger holds resources, and parsing it would cost the audit worker
/// for nothing.
const EMPTY_LIST_MAX_BYTES: u64 = 1024;

/// Whether classification needs the response body: errors, writes (the created id, the
/// resource's names), reads of one resource, Bulk and ResourceTypes, and a list or search
/// answer small enough to be empty; not other lists and searches, which can be large and
/// name no single target.
fn wants_response_body(
    method: &str,
    path: &str,
    status: u16,
    size: u64,
    ctx: &ScimContext,
) -> bool {
    let is_get = method.eq_ignore_ascii_case("GET");
    if (200..300).contains(&status) && size <= EMPTY_LIST_MAX_BYTES {
        let endpoint = scim::endpoint::locate(path, ctx.base_path.as_deref(), &ctx.custom_types);
        let query = match endpoint {
            scim::Endpoint::Resource {
                id: None, search, ..
            } => search != is_get,
            scim::Endpoint::RootSearch => !is_get,
            _ => false,
        };
        if query {
            return true;
        }
    }
    if status >= 400 || !is_get {
        return !path.ends_with(".search");
    }
    matches!(
        scim::endpoint::locate(path, ctx.base_path.as_deref(), &ctx.custom_types),
        scim::Endpoint::Resource { id: Some(_), .. } | scim::Endpoint::Me
    )
}

/// A body for `capture.include_bodies = "redacted"`.
fn shown_body(body: &Body, ctx: &ScimContext) -> Option<Value> {
    match body {
        Body::Absent => None,
        Body::Json(v) => Some(scim::redact_json(v, ctx)),
        Body::Invalid(why) => Some(Value::String(format!("[not shown: {why}]"))),
    }
}

/// The query with the values of secret parameters replaced by `REDACTED`.
/// The query with the values of secret parameters replaced by `REDACTED`, and, with
/// pseudonymisation on, the filter replaced by `PSEUDONYMISED` (its hashed form is in
/// `scim.filter`).
fn redact_query<'q>(query: &'q str, secret: &HashSet<String>, pseudonymise: bool) -> Cow<'q, str> {
    let replacement = |pair: &str| {
        let name = pair.split('=').next().unwrap_or(pair);
        let name = scim::endpoint::percent_decode_with(name, true).to_ascii_lowercase();
        if SECRET_QUERY_PARAMS.contains(&name.as_str()) || secret.contains(&name) {
            Some("REDACTED")
        } else if pseudonymise && name == "filter" {
            Some("PSEUDONYMISED")
        } else {
            None
        }
    };
    if !query.split('&').any(|pair| replacement(pair).is_some()) {
        return Cow::Borrowed(query);
    }
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match replacement(pair) {
            Some(with) => format!("{}={with}", pair.split('=').next().unwrap_or(pair)),
            None => pair.to_owned(),
        })
        .collect();
    Cow::Owned(pairs.join("&"))
}

/// Whether the request announced a body (Content-Length > 0 or chunked).
fn declares_body(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0)
        || headers.contains_key(http::header::TRANSFER_ENCODING)
}

fn header_text(headers: &HeaderMap, name: http::header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn version_str(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests;
