//! The admin listener: `/healthz` (the process is up), `/readyz` (accepting and every sink
//! writing), `/readyz/<route>` (that, and the route's upstream answering), `/metrics`
//! (Prometheus text). Plain HTTP/1.1, meant for loopback or a private
//! network; it never sees audit data.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::stopped;
use crate::telemetry::Metrics;

/// What `/readyz` looks at.
#[derive(Clone)]
pub struct Readiness {
    pub listening: Arc<AtomicBool>,
    pub sinks: Vec<(String, Arc<AtomicBool>)>,
    /// The routes in force, for `/readyz/<route>`.
    pub proxy: Option<Arc<crate::proxy::Proxy>>,
}

impl Readiness {
    /// `Ok` when ready, else the reason.
    fn check(&self) -> Result<(), String> {
        if !self.listening.load(Ordering::Relaxed) {
            return Err("not listening yet".to_owned());
        }
        let unhealthy: Vec<&str> = self
            .sinks
            .iter()
            .filter(|(_, ok)| !ok.load(Ordering::Relaxed))
            .map(|(name, _)| name.as_str())
            .collect();
        if unhealthy.is_empty() {
            Ok(())
        } else {
            Err(format!("sinks failing: {}", unhealthy.join(", ")))
        }
    }
}

/// Serves the admin endpoints until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "Admin accept failed.");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        let metrics = metrics.clone();
        let readiness = readiness.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = route(&req, &metrics, &readiness);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn route(
    req: &Request<Incoming>,
    metrics: &Metrics,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".to_owned()),
        "/readyz" => match readiness.check() {
            Ok(()) => text(StatusCode::OK, "ready\n".to_owned()),
            Err(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
            ),
        },
        path if path.starts_with("/readyz/") => {
            let name = &path["/readyz/".len()..];
            let route = readiness
                .proxy
                .as_ref()
                .and_then(|proxy| proxy.route_readiness(name));
            match (route, readiness.check()) {
                (None, _) => text(StatusCode::NOT_FOUND, format!("no route named {name}\n")),
                (Some(Ok(())), Ok(())) => text(StatusCode::OK, "ready\n".to_owned()),
                (Some(Err(reason)), _) | (_, Err(reason)) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {reason}\n"),
                ),
            }
        }
        "/metrics" => {
            let mut response = text(StatusCode::OK, metrics.encode());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /readyz or /metrics\n".to_owned(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

// === the probe behind `scimtap healthcheck` ===

/// The URL to probe from `--url`: `http://HOST:PORT` gets `path` appended; a URL that already
/// has a path is used as given.
///
/// # Errors
/// A one-line reason when the URL is not a plain `http://` URL with a host.
pub fn probe_url(url: &str, path: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("--url {url:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(format!(
            "--url {url:?}: the admin listener speaks plain http://HOST:PORT"
        ));
    }
    if uri.path() != "/" || uri.query().is_some() {
        return Ok(uri);
    }
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    format!("http://{authority}{path}")
        .parse()
        .map_err(|e| format!("--url {url:?}: {e}"))
}

/// The URL to probe from the configuration file's `[admin] address`. Only that key is read,
/// so no key or certificate file has to be readable. A wildcard address (`0.0.0.0`, `[::]`) is
/// probed on the loopback of the same family.
///
/// # Errors
/// A one-line reason: the file cannot be read or parsed, or has no usable `[admin] address`.
pub fn probe_url_from_config(config: &std::path::Path, path: &str) -> Result<http::Uri, String> {
    let file = config.display();
    let text = std::fs::read_to_string(config).map_err(|e| format!("cannot read {file}: {e}"))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| format!("{file}: {}", e.message()))?;
    let Some(admin) = table.get("admin") else {
        return Err(format!(
            "{file} has no [admin] section: nothing to probe (or give --url)"
        ));
    };
    let address = admin
        .get("address")
        .and_then(toml::Value::as_str)
        .ok_or_else(|| format!("{file}: admin.address is missing or not a string"))?;
    let mut address: std::net::SocketAddr = address
        .parse()
        .map_err(|e| format!("{file}: admin.address {address:?}: {e}"))?;
    if address.port() == 0 {
        return Err(format!(
            "{file}: admin.address has port 0 (chosen at run time): give --url"
        ));
    }
    if address.ip().is_unspecified() {
        address.set_ip(match address.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{address}{path}")
        .parse()
        .map_err(|e| format!("{file}: admin.address: {e}"))
}

/// GETs `url` (plain HTTP/1.1) within `timeout`. `Ok` with the first line of the body when the
/// answer is 200; otherwise a one-line reason naming the URL.
///
/// # Errors
/// The connection failed or timed out, or the status was not 200.
pub fn probe(url: &http::Uri, timeout: std::time::Duration) -> Result<String, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let answer = runtime.block_on(async {
        tokio::time::timeout(timeout, get(url))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {}s", timeout.as_secs_f64())))
    });
    match answer {
        Ok((StatusCode::OK, body)) => Ok(body),
        Ok((status, body)) => Err(format!("{url}: {} {body}", status.as_u16())),
        Err(reason) => Err(format!("{url}: {reason}")),
    }
}

async fn get(url: &http::Uri) -> Result<(StatusCode, String), String> {
    use http_body_util::{BodyExt, Empty};
    let host = url.host().unwrap_or_default();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = url.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    tokio::spawn(connection);
    let authority = url.authority().map(|a| a.as_str()).unwrap_or(host);
    let request = Request::get(url.path_and_query().map_or("/", |p| p.as_str()))
        .header(header::HOST, authority)
        .header(header::USER_AGENT, "scimtap-healthcheck")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    // The admin answers are one short line (but /metrics is long): read up to the first line.
    let mut body = response.into_body();
    let mut head = Vec::new();
    while head.len() < 4096 && !head.contains(&b'\n') {
        match body.frame().await {
            Some(Ok(frame)) => head.extend_from_slice(frame.data_ref().map_or(&[][..], |d| d)),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let first = head.lines().next().unwrap_or_default().trim().to_owned();
    Ok((status, first))
}
