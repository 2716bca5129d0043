//! The route table as the request path uses it: each `[[routes]]` entry with what it matches,
//! its pooled upstream client, its allow-list and a passive health check of its upstream, and
//! the reading of a request's host and path that matching needs.

use std::sync::{Arc, PoisonError};

use http::header::{self, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::{ProxyBuildError, UpstreamClient, UPSTREAM_MAX_RESPONSE_HEADERS};
use crate::clock::Timestamp;
use crate::config::{ClientConfig, RouteConfig, ScimConfig, UpstreamConfig};
use crate::exchange::{FailureKind, RouteTag};
use crate::telemetry::Metrics;

/// One `[[routes]]` entry as the request path uses it: what it matches, where it forwards
/// (its own pooled client), and who may use it. Shared by the requests in flight on it, so a
/// reload that replaces it lets them finish on the old one.
pub struct Route {
    /// The route's name and request counters, handed to each exchange it takes.
    pub tag: Arc<RouteTag>,
    pub(super) config: RouteConfig,
    pub(super) client: UpstreamClient,
    pub(super) upstream_host: HeaderValue,
    /// `Some`: only these clients get in (the route's `clients`, or the global allow-list).
    pub(super) allowed_clients: Option<Vec<ClientConfig>>,
    /// Whether the upstream answered the last request that reached it (`/readyz/<route>`).
    pub(super) health: UpstreamHealth,
}

/// A passive health check: the upstream is failing from a request it could not be reached
/// or did not answer in time, until a request gets a response head again. Only transitions
/// take the lock.
#[derive(Default)]
pub(super) struct UpstreamHealth {
    pub(super) failing: std::sync::atomic::AtomicBool,
    /// Since when, and the failure kind of the latest failure.
    pub(super) since: std::sync::Mutex<Option<(Timestamp, FailureKind)>>,
}

impl UpstreamHealth {
    pub(super) fn answered(&self) {
        use std::sync::atomic::Ordering;
        if self.failing.load(Ordering::Relaxed) {
            self.failing.store(false, Ordering::Relaxed);
            *self.since.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }

    pub(super) fn failed(&self, kind: FailureKind) {
        use std::sync::atomic::Ordering;
        let mut since = self.since.lock().unwrap_or_else(PoisonError::into_inner);
        let started = since.map_or_else(Timestamp::now, |(at, _)| at);
        *since = Some((started, kind));
        self.failing.store(true, Ordering::Relaxed);
    }

    pub(super) fn check(&self) -> Result<(), String> {
        match *self.since.lock().unwrap_or_else(PoisonError::into_inner) {
            Some((since, kind)) => Err(format!("upstream failing since {since} (last: {kind})")),
            None => Ok(()),
        }
    }
}

impl Route {
    pub(super) fn new(
        config: &RouteConfig,
        scim: &ScimConfig,
        metrics: &Metrics,
    ) -> Result<Route, ProxyBuildError> {
        let upstream = &config.upstream;
        let tls = crate::tls::client_config(&upstream.extra_roots)?;
        let connector = crate::tls::https_connector(tls, upstream.connect_timeout);
        let client = Client::builder(TokioExecutor::new())
            // An upstream's response head is relayed whatever its header count (hyper's
            // client default of 100 would turn a 120-header answer into a 502).
            .http1_max_headers(UPSTREAM_MAX_RESPONSE_HEADERS)
            .pool_idle_timeout(upstream.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        let upstream_host = HeaderValue::from_str(upstream.authority.as_str())
            .map_err(|_| ProxyBuildError::Host)?;
        let allowed_clients = match &config.clients {
            Some(names) => Some(
                scim.clients
                    .iter()
                    .filter(|c| names.contains(&c.name))
                    .cloned()
                    .collect(),
            ),
            None => scim.clients_required.then(|| scim.clients.clone()),
        };
        Ok(Route {
            tag: Arc::new(RouteTag {
                name: Arc::from(config.name.as_str()),
                requests: metrics.route_status_counters(Some(&config.name)),
            }),
            config: config.clone(),
            client,
            upstream_host,
            allowed_clients,
            health: UpstreamHealth::default(),
        })
    }

    pub(super) fn upstream(&self) -> &UpstreamConfig {
        &self.config.upstream
    }

    /// What a reload compares to keep a route (and its pooled connections) as it is.
    pub(super) fn settings(&self) -> String {
        format!("{:?} {:?}", self.config, self.allowed_clients)
    }
}

/// The routes in force, in the configuration's order: the first that matches takes the
/// request.
pub(super) struct RouteTable {
    pub(super) routes: Vec<Arc<Route>>,
    /// Whether a route tells requests apart by path: then a path an upstream may read as
    /// another one (`/%61dmin`, `//admin`, `/x/../admin`) is refused rather than let reach a
    /// route by not matching the one meant for it.
    pub(super) by_path: bool,
    /// Whether a route tells requests apart by host (else the host is not even read).
    pub(super) by_host: bool,
}

impl RouteTable {
    pub(super) fn new(routes: Vec<Arc<Route>>) -> RouteTable {
        let by_path = routes.iter().any(|r| r.config.has_prefix());
        let by_host = routes.iter().any(|r| r.config.host.is_some());
        RouteTable {
            routes,
            by_path,
            by_host,
        }
    }

    /// The route for a request that arrived on `listener` for `host` and `path`, with where
    /// the path after the route's prefix starts.
    pub(super) fn find(
        &self,
        listener: usize,
        host: Option<&str>,
        path: &str,
    ) -> Option<(&Arc<Route>, usize)> {
        self.routes.iter().find_map(|route| {
            route
                .config
                .matches(listener, host, path)
                .map(|at| (route, at))
        })
    }
}

/// Why `path` could name another path to an upstream that normalises it (RFC 3986 §6.2.2):
/// an unreserved character percent-encoded, an empty segment, or a dot segment. SCIM clients
/// send none of these.
pub(super) fn ambiguous_path(path: &str) -> Option<&'static str> {
    let bytes = path.as_bytes();
    for (at, &b) in bytes.iter().enumerate() {
        if b == b'%' {
            let hex = bytes
                .get(at + 1..at + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            let decoded = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
            if decoded.is_some_and(|c| c.is_ascii_alphanumeric() || b"-._~".contains(&c)) {
                return Some("an unreserved character is percent-encoded");
            }
        }
    }
    let mut segments = path.split('/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        match segment {
            "." | ".." => return Some("it has a dot segment"),
            // A trailing slash leaves one empty last segment: that is no ambiguity.
            "" if segments.peek().is_some() => return Some("it has an empty segment"),
            _ => {}
        }
    }
    None
}

/// The host a request is for: HTTP/2's `:authority`, else the Host header; without its port
/// (an IPv6 address keeps its brackets), lower case.
pub(super) fn request_host(parts: &http::request::Parts) -> Option<String> {
    let authority = match parts.uri.authority() {
        Some(a) => a.as_str(),
        None => parts.headers.get(header::HOST)?.to_str().ok()?,
    };
    let host = match authority.rsplit_once(':') {
        // `[::1]:8080` and `host:8080`, not the colons inside `[::1]`.
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(':') => {
            host
        }
        _ => authority,
    };
    Some(host.trim().to_ascii_lowercase())
}
