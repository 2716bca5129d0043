//! The live view (`[ui]`): a read-only web page on its own listener, over the events the
//! audit worker writes. Off unless configured.
//!
//! - `/` the newest events, filtered by action, outcome, client, route and user (GET parameters, so
//!   the list works without JavaScript); a small inline script follows `/events/stream` (SSE)
//!   and puts new matching rows on top without a reload;
//! - `/user?u=X` one identity's timeline, from the events kept ([`crate::trace::trace_events`],
//!   the same story `scimtap trace` tells from files);
//! - `/gaps` deprovisioning gaps reported and not closed; `/alerts` alert episodes firing and
//!   not resolved; `/activity` actions and failures per hour (inline SVG).
//!
//! **Feed.** The audit worker offers each sealed native event line to a broadcast channel
//! ([`crate::pipeline::EventTap`]) and never waits for it; one task here parses the lines into
//! the [`feed::Feed`] (a bounded ring plus open gaps, firing alerts and hour counts). What the
//! task falls behind on is counted, and the audit trail is never affected.
//!
//! **Access.** The view shows personal data. Every page but `/login` wants the token of
//! `token_file`, as `Authorization: Bearer <token>` (compared in constant time), or the
//! session cookie `/login` sets in exchange for it (HttpOnly, SameSite=Strict; its value is
//! an HMAC of the token, so it is not the token and stops working when the token changes).
//! Without either: 401 with `WWW-Authenticate: Bearer`. Every answer carries a
//! Content-Security-Policy that allows only this module's own inline style and script (by
//! hash), no other origin, no framing; and `Cache-Control: no-store`.
//!
//! The request path imports nothing from here (see `lib.rs`).

pub mod feed;
pub mod sse;
pub mod views;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

use crate::clock::Timestamp;
use crate::config::UiConfig;
use crate::pipeline::EventTap;
use crate::telemetry::Metrics;
use feed::{Feed, Filter};

/// Sealed lines the tap holds for the feed's reader before it starts losing the oldest.
const TAP_CAPACITY: usize = 4096;

/// Event streams open at once; more are answered 503.
pub const MAX_STREAMS: usize = 32;

/// The name of the session cookie `/login` sets.
const COOKIE: &str = "scimtap_ui";

/// Seconds a connection may take to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest `/login` form accepted.
const MAX_FORM_BYTES: usize = 4096;

type UiBody = BoxBody<Bytes, Infallible>;

/// The live view: its feed, who may see it, and its counters.
pub struct Ui {
    pub feed: Arc<Feed>,
    auth: Auth,
    metrics: Arc<Metrics>,
    /// Event streams open now.
    streams: AtomicUsize,
}

/// The token and the session cookie derived from it. Debug shows neither.
struct Auth {
    token_sha256: [u8; 32],
    /// The cookie's value: hex HMAC-SHA256 of a fixed label under the token.
    session: String,
    session_sha256: [u8; 32],
}

impl Auth {
    fn new(token: &[u8]) -> Auth {
        let session = match Hmac::<Sha256>::new_from_slice(token) {
            Ok(mut mac) => {
                mac.update(b"scimtap ui session v1");
                hex::encode(mac.finalize().into_bytes())
            }
            // HMAC takes keys of any length; kept total rather than unwrapped.
            Err(_) => hex::encode(Sha256::digest(token)),
        };
        Auth {
            token_sha256: Sha256::digest(token).into(),
            session_sha256: Sha256::digest(session.as_bytes()).into(),
            session,
        }
    }

    /// Compares the SHA-256 of what was presented with the expected one in constant time (the
    /// digests have one length whatever was sent).
    fn is_token(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        digest[..].ct_eq(&self.token_sha256[..]).into()
    }

    fn is_session(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        digest[..].ct_eq(&self.session_sha256[..]).into()
    }

    /// The request carries the token (`Authorization: Bearer`) or the session cookie.
    fn allows(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .any(|(_, token)| self.is_token(token.trim().as_bytes()));
        bearer
            || headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .filter(|(name, _)| *name == COOKIE)
                .any(|(_, value)| self.is_session(value.as_bytes()))
    }
}

impl Ui {
    pub fn new(feed: Arc<Feed>, token: &[u8], metrics: Arc<Metrics>) -> Arc<Ui> {
        Arc::new(Ui {
            feed,
            auth: Auth::new(token),
            metrics,
            streams: AtomicUsize::new(0),
        })
    }
}

/// What `lib.rs` needs to start the view: the tap for the audit worker, and the view with its
/// feed already following that tap.
pub struct Setup {
    pub tap: EventTap,
    pub ui: Arc<Ui>,
}

/// Makes the tap and the feed, and starts the task that reads one into the other (it ends
/// when the audit worker drops the tap). Call before the audit worker starts, so the feed
/// sees its first event.
pub fn setup(config: &UiConfig, metrics: &Arc<Metrics>) -> Setup {
    let (tap, rx) = broadcast::channel(TAP_CAPACITY);
    let feed = Feed::new(config.recent_events);
    tokio::spawn(feed::collect(
        rx,
        feed.clone(),
        metrics.ui_feed_dropped.clone(),
    ));
    Setup {
        tap,
        ui: Ui::new(feed, &config.token.0, metrics.clone()),
    }
}

/// Serves the live view until `shutdown` turns true; open streams end then too.
pub async fn serve(listener: TcpListener, ui: Arc<Ui>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "Live view accept failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::stopped(&mut shutdown) => break,
        };
        let ui = ui.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let ui = ui.clone();
                let shutdown = shutdown.clone();
                async move { Ok::<_, Infallible>(handle(req, &ui, shutdown).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Answers one request.
pub async fn handle<B>(
    req: Request<B>,
    ui: &Arc<Ui>,
    shutdown: watch::Receiver<bool>,
) -> Response<UiBody>
where
    B: http_body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (parts, body) = req.into_parts();
    let get = parts.method == Method::GET || parts.method == Method::HEAD;
    if parts.uri.path() == "/login" {
        return match parts.method {
            ref m if *m == Method::POST => {
                let form = Limited::new(body, MAX_FORM_BYTES).collect().await;
                match form {
                    Ok(form) => login(ui, &form.to_bytes()),
                    Err(_) => plain(StatusCode::PAYLOAD_TOO_LARGE, "form too large\n"),
                }
            }
            _ if get => html(StatusCode::OK, views::login_page(false)),
            _ => not_allowed("GET, POST"),
        };
    }
    if !ui.auth.allows(&parts.headers) {
        ui.metrics.ui_unauthorized.inc();
        let mut response = html(StatusCode::UNAUTHORIZED, views::unauthorized_page());
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"scimtap live view\""),
        );
        return response;
    }
    if !get {
        return not_allowed("GET");
    }
    route(&parts, ui, shutdown)
}

fn route(
    parts: &http::request::Parts,
    ui: &Arc<Ui>,
    shutdown: watch::Receiver<bool>,
) -> Response<UiBody> {
    let query = parts.uri.query();
    let feed = &ui.feed;
    let counts = feed.counts();
    match parts.uri.path() {
        "/" => {
            let filter = Filter::from_query(query);
            let snapshot = feed.snapshot(Timestamp::now());
            html(
                StatusCode::OK,
                views::events_page(&snapshot, counts, &filter, feed.capacity()),
            )
        }
        "/events/stream" => {
            let filter = Filter::from_query(query);
            // The browser's Last-Event-ID (a reconnect) is later than the page's `after`.
            let after = parts
                .headers
                .get("last-event-id")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
                .or_else(|| param(query, "after").and_then(|v| v.parse().ok()))
                .unwrap_or_else(|| feed.latest_seq());
            match sse::start(ui, filter, after, shutdown) {
                Some(body) => {
                    let mut response = Response::new(body.boxed());
                    let headers = response.headers_mut();
                    headers.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/event-stream; charset=utf-8"),
                    );
                    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
                    secure(headers);
                    response
                }
                None => plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many live view streams open\n",
                ),
            }
        }
        "/user" => {
            let user = param(query, "u").unwrap_or_default();
            let snapshot = feed.snapshot(Timestamp::now());
            let trace = (!user.is_empty()).then(|| {
                let events: Vec<serde_json::Value> =
                    snapshot.recent.iter().map(|i| i.event.clone()).collect();
                let lookup = crate::trace::Lookup {
                    user: &user,
                    pseudonymizer: None,
                    state: None,
                };
                // Without a state store nothing here can fail.
                crate::trace::trace_events(&events, &lookup).ok()
            });
            html(
                StatusCode::OK,
                views::timeline_page(
                    &user,
                    trace.flatten().as_ref(),
                    counts,
                    snapshot.recent.len(),
                ),
            )
        }
        "/gaps" => html(
            StatusCode::OK,
            views::gaps_page(&feed.snapshot(Timestamp::now()), counts),
        ),
        "/alerts" => html(
            StatusCode::OK,
            views::alerts_page(&feed.snapshot(Timestamp::now()), counts),
        ),
        "/activity" => html(
            StatusCode::OK,
            views::activity_page(&feed.snapshot(Timestamp::now()), counts),
        ),
        // Browsers ask for it on their own: nothing to show, and no 404 in their console.
        "/favicon.ico" => plain(StatusCode::NO_CONTENT, ""),
        _ => plain(
            StatusCode::NOT_FOUND,
            "not found: try /, /user, /gaps, /alerts or /activity\n",
        ),
    }
}

/// The first value of `name` in a query string, percent-decoded and trimmed.
fn param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim().to_owned())
}

/// `POST /login` with `token=...`: the session cookie and a redirect to `/`, or 401.
fn login(ui: &Ui, form: &[u8]) -> Response<UiBody> {
    let token = form_urlencoded::parse(form)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    if !ui.auth.is_token(token.as_bytes()) {
        ui.metrics.ui_unauthorized.inc();
        let mut response = html(StatusCode::UNAUTHORIZED, views::login_page(true));
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"scimtap live view\""),
        );
        return response;
    }
    let mut response = plain(StatusCode::SEE_OTHER, "signed in\n");
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, HeaderValue::from_static("/"));
    // Plain HTTP (loopback or a tunnel), so no `Secure`.
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        ui.auth.session
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        headers.insert(header::SET_COOKIE, value);
    }
    response
}

fn sha256_base64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
}

/// The Content-Security-Policy: this module's inline style and script by hash, the stream
/// from the same origin, forms to the same origin, nothing else.
static CSP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; connect-src 'self'; \
         img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        sha256_base64(views::SCRIPT),
        sha256_base64(views::STYLE),
    )
});

/// Headers every answer carries.
fn secure(headers: &mut HeaderMap) {
    if let Ok(csp) = HeaderValue::from_str(&CSP) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<UiBody> {
    let mut response = Response::new(Full::new(body).boxed());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    secure(headers);
    response
}

fn html(status: StatusCode, page: maud::Markup) -> Response<UiBody> {
    respond(
        status,
        "text/html; charset=utf-8",
        Bytes::from(page.into_string()),
    )
}

fn plain(status: StatusCode, text: &'static str) -> Response<UiBody> {
    respond(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(text.as_bytes()),
    )
}

fn not_allowed(allow: &'static str) -> Response<UiBody> {
    let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// Where the view listens, for the log line tests and operators read.
pub fn log_listening(address: SocketAddr) {
    tracing::info!(address = %address, "UI listening.");
}

#[cfg(test)]
mod tests;
