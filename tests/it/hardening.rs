//! Hardening: hostile clients against a real scimtap process. Raw sockets send what no
//! well-behaved client would (absolute-form targets, smuggling framings, dribbled heads, stalled
//! bodies, HTTP/2 frame floods, TLS 1.1 hellos); a decoy listener proves scimtap never connects
//! anywhere but its upstream, and the upstream counts what actually arrived.
//!
//! mTLS accepted and refused, and an upstream with an unknown CA failing closed, are covered in
//! `transparency.rs` (`mtls_requires_a_client_certificate_and_names_the_client_by_its_subject`,
//! `https_upstream_is_trusted_through_ca_file`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::support::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// === helpers ===

/// A TCP listener that must never be reached: it counts every connection it accepts.
struct Decoy {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Decoy {
    async fn start() -> Decoy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Decoy { addr, accepted }
    }

    fn count(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    host: Option<String>,
    /// The body arrived whole (an aborted body is not a request the upstream can act on).
    complete: bool,
    body: Bytes,
}

/// An upstream that records every request and answers 200 with a small SCIM body.
async fn recording_upstream() -> (Upstream, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let upstream = Upstream::start(move |req: Request<Incoming>| {
        let log = log.clone();
        async move {
            let (parts, body) = req.into_parts();
            let collected = body.collect().await;
            log.lock().unwrap().push(Seen {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                host: parts
                    .headers
                    .get("host")
                    .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned()),
                complete: collected.is_ok(),
                body: collected.map(|c| c.to_bytes()).unwrap_or_default(),
            });
            Response::builder()
                .status(200)
                .header("content-type", "application/scim+json")
                .body(full("{}"))
                .unwrap()
        }
    })
    .await;
    (upstream, seen)
}

fn complete_requests(seen: &Mutex<Vec<Seen>>) -> usize {
    seen.lock().unwrap().iter().filter(|s| s.complete).count()
}

/// Sends `request` on a new connection and reads until the proxy closes it (or `WAIT`).
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The proxy may answer and close before reading everything (a refused head).
    let _ = stream.write_all(request).await;
    String::from_utf8_lossy(&read_to_close(&mut stream, WAIT).await).into_owned()
}

/// Reads until EOF, a reset, or `limit`; returns what arrived.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    out
}

/// Waits until the peer closes the connection; returns how long that took, or None.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

fn status_of(response: &str) -> &str {
    response.get(9..12).unwrap_or("")
}

/// A normal request through the proxy; returns its status and how long it took.
async fn timed_get(proxy: &Proxy) -> (StatusCode, Duration) {
    let started = Instant::now();
    let resp = http1_client()
        .request(Request::get(proxy.url("/Users")).body(empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    resp.into_body().collect().await.unwrap();
    (status, started.elapsed())
}

// === never an open proxy ===

#[tokio::test(flavor = "multi_thread")]
async fn no_request_target_or_header_makes_scimtap_connect_anywhere_but_its_upstream() {
    let decoy = Decoy::start().await;
    let d = decoy.addr;
    let (upstream, seen) = recording_upstream().await;
    let u = upstream.addr;
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()));

    // (request, expected status, reaches the upstream)
    let cases: Vec<(String, &str, bool)> = vec![
        (format!("GET http://{d}/Users HTTP/1.1\r\nHost: {d}\r\n"), "400", false),
        (format!("GET https://{d}/Users HTTP/1.1\r\nHost: {d}\r\n"), "400", false),
        (format!("GET http://{u}@{d}/Users HTTP/1.1\r\nHost: {u}\r\n"), "400", false),
        (format!("GET {d} HTTP/1.1\r\nHost: {d}\r\n"), "400", false),
        (format!("CONNECT {d} HTTP/1.1\r\nHost: {d}\r\n"), "405", false),
        ("OPTIONS * HTTP/1.1\r\nHost: x\r\n".to_owned(), "400", false),
        (format!("GET @{d}/Users HTTP/1.1\r\nHost: x\r\n"), "400", false),
        (format!("GET /Users HTTP/1.1\r\nHost: {d}\r\n"), "200", true),
        (
            format!("GET /Users HTTP/1.1\r\nHost: {u}\r\nX-Forwarded-Host: {d}\r\nForwarded: host={d}\r\nX-Forwarded-For: {d}\r\n"),
            "200",
            true,
        ),
        (format!("GET //{d}/Users HTTP/1.1\r\nHost: x\r\n"), "200", true),
        (format!("GET /..%2f..%2f{d}/Users HTTP/1.1\r\nHost: x\r\n"), "200", true),
        ("GET /%2e%2e/%2e%2e/Users HTTP/1.1\r\nHost: x\r\n".to_owned(), "200", true),
        ("GET /../../Users HTTP/1.1\r\nHost: x\r\n".to_owned(), "200", true),
        (
            format!("GET /Users HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-Target: {d}\r\n"),
            "200",
            true,
        ),
    ];
    let mut forwarded = 0;
    for (head, expected, reaches) in &cases {
        let request = format!("{head}Connection: close\r\n\r\n");
        let response = raw(proxy.addr, request.as_bytes()).await;
        assert_eq!(
            status_of(&response),
            *expected,
            "request:\n{request}\nresponse:\n{response}\nlog:\n{}",
            proxy.log_tail()
        );
        if *reaches {
            forwarded += 1;
        }
    }

    // HTTP/2: :authority, :scheme and the URI's host are never where scimtap connects.
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for uri in [
        format!("http://{d}/Users"),
        format!("https://{d}/Users"),
        format!("http://{u}@{d}/Users"),
    ] {
        let resp = h2
            .send_request(Request::get(&uri).body(empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{uri}");
        forwarded += 1;
    }
    if let Ok(resp) = h2
        .send_request(Request::connect(d.to_string()).body(empty()).unwrap())
        .await
    {
        assert_ne!(
            resp.status(),
            StatusCode::OK,
            "HTTP/2 CONNECT was not refused"
        );
    }

    // Whatever the client asked for, only the upstream was contacted, with its own Host.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        decoy.count(),
        0,
        "the decoy was reached; log:\n{}",
        proxy.log_tail()
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), forwarded, "{seen:#?}");
    for s in &seen {
        assert_eq!(s.host.as_deref(), Some(u.to_string().as_str()), "{s:?}");
    }
    // Paths go to the upstream byte for byte; the upstream decides what they mean.
    assert!(
        seen.iter().any(|s| s.uri == format!("//{d}/Users")),
        "{seen:#?}"
    );
    assert!(
        seen.iter().any(|s| s.uri == "/%2e%2e/%2e%2e/Users"),
        "{seen:#?}"
    );
    assert!(seen.iter().any(|s| s.uri == "/../../Users"), "{seen:#?}");

    let event = proxy
        .wait_for_events(cases.len())
        .await
        .into_iter()
        .find(|e| e["failure"]["kind"] == "connect_refused_by_proxy");
    assert!(event.is_some(), "CONNECT has its event");
}

// === request smuggling ===

#[tokio::test(flavor = "multi_thread")]
async fn smuggling_attempts_never_become_more_upstream_requests_than_the_client_sent() {
    let (upstream, seen) = recording_upstream().await;
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()));
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

    // (name, bytes, whole requests in it by a strict reading, proxy must answer 400)
    let cases: Vec<(&str, String, usize, bool)> = vec![
        (
            "CL.TE: Content-Length covers a hidden request, chunked ends before it",
            format!("POST /Users HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}", 5 + smuggled.len()),
            1,
            false,
        ),
        (
            "TE.CL: the chunk carries a hidden request, Content-Length ends before it",
            format!("POST /Users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len()),
            1,
            false,
        ),
        (
            "two different Content-Length values",
            format!("POST /Users HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: {}\r\n\r\n{{}}{smuggled}", 2 + smuggled.len()),
            0,
            true,
        ),
        (
            "a Content-Length list with different values",
            format!("POST /Users HTTP/1.1\r\nHost: x\r\nContent-Length: 2, {}\r\n\r\n{{}}{smuggled}", 2 + smuggled.len()),
            0,
            true,
        ),
        (
            "chunked not the final transfer coding",
            format!("POST /Users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"),
            0,
            true,
        ),
        (
            "an unknown transfer coding",
            format!("POST /Users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{smuggled}"),
            0,
            true,
        ),
        (
            "whitespace before the colon of Transfer-Encoding",
            format!("POST /Users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{smuggled}"),
            0,
            true,
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            format!("POST /Users HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
            0,
            true,
        ),
        (
            "a negative Content-Length",
            format!("POST /Users HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{smuggled}"),
            0,
            true,
        ),
        (
            "a chunk size that is not hex",
            format!("POST /Users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{smuggled}\r\n0\r\n\r\n"),
            0,
            false,
        ),
        (
            "a chunk size that overflows",
            format!("POST /Users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n{smuggled}\r\n0\r\n\r\n"),
            0,
            false,
        ),
        (
            "a body that is itself a request",
            format!("POST /Users HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{smuggled}", smuggled.len()),
            1,
            false,
        ),
    ];
    for (i, (name, request, whole, refused)) in cases.iter().enumerate() {
        let request = request.replacen(
            "Host: x\r\n",
            &format!("Host: x\r\nX-Request-Id: smuggle-{i}\r\n"),
            1,
        );
        let before = complete_requests(&seen);
        let started = Instant::now();
        let response = raw(proxy.addr, request.as_bytes()).await;
        // Every attempt ends its connection: nothing after it is read as another request.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name}: the connection stayed open\n{response}"
        );
        if name.contains("chunk size") {
            let event = proxy.event_for(&format!("smuggle-{i}")).await;
            assert_eq!(
                event["failure"]["kind"], "request_body_error",
                "{name}: {event}"
            );
        }
        // Give a smuggled request time to arrive if one were ever forwarded.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let arrived = complete_requests(&seen) - before;
        assert!(
            arrived <= *whole,
            "{name}: {arrived} upstream requests from {whole} whole client requests\nresponse:\n{response}\nseen: {:#?}",
            seen.lock().unwrap()
        );
        if *refused {
            assert_eq!(status_of(&response), "400", "{name}:\n{response}");
            assert_eq!(arrived, 0, "{name}");
        }
        assert!(
            !response.contains("HTTP/1.1 200 OK\r\n") || response.matches("HTTP/1.1 ").count() == 1,
            "{name}: more than one response on one connection:\n{response}"
        );
    }
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|s| !s.uri.contains("smuggled")),
        "a hidden request reached the upstream: {seen:#?}"
    );
    // Framed by Transfer-Encoding, the TE.CL body reached the upstream whole, as a body.
    assert!(
        seen.iter()
            .any(|s| s.complete && s.method == "POST" && s.body.starts_with(b"GET /smuggled")),
        "{seen:#?}"
    );
}

// === slow clients ===

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_are_cut_at_their_timeouts_while_a_normal_client_is_served() {
    let (upstream, seen) = recording_upstream().await;
    let proxy = Proxy::start(
        ProxyConfig::new(upstream.url())
            .listen("header_read_timeout_secs = 2\nbody_idle_timeout_secs = 2"),
    );
    let addr = proxy.addr;

    // Slowloris: a head dribbled one byte at a time, never finished.
    let slowloris = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        stream
            .write_all(b"GET /Users HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        for byte in b"X-Slow: ".iter().chain([b'a'; 200].iter()) {
            if stream.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if started.elapsed() > Duration::from_secs(15) {
                break;
            }
        }
        closed_within(&mut stream, WAIT)
            .await
            .map(|_| started.elapsed())
    });
    // A connection that never sends a byte.
    let silent = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        closed_within(&mut stream, WAIT).await
    });
    // A slow uploader: promises 100 bytes, sends 10, stops.
    let uploader = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        stream
            .write_all(b"POST /Users HTTP/1.1\r\nHost: x\r\nX-Request-Id: slow-upload\r\nContent-Type: application/scim+json\r\nContent-Length: 100\r\n\r\n{\"userName\"")
            .await
            .unwrap();
        let response = read_to_close(&mut stream, WAIT).await;
        (
            String::from_utf8_lossy(&response).into_owned(),
            started.elapsed(),
        )
    });

    // Meanwhile a normal client is served at loopback speed, request after request.
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let (status, took) = timed_get(&proxy).await;
        assert_eq!(status, StatusCode::OK);
        slowest = slowest.max(took);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        slowest < Duration::from_secs(1),
        "a normal request took {slowest:?} while slow clients were connected"
    );

    let cut_after = slowloris
        .await
        .unwrap()
        .expect("the slowloris connection was closed");
    assert!(
        cut_after >= Duration::from_millis(1500) && cut_after < Duration::from_secs(10),
        "slowloris cut after {cut_after:?} (header_read_timeout_secs = 2)"
    );
    let silent_cut = silent
        .await
        .unwrap()
        .expect("the silent connection was closed");
    assert!(
        silent_cut >= Duration::from_millis(1500) && silent_cut < Duration::from_secs(10),
        "silent connection cut after {silent_cut:?}"
    );
    let (response, upload_cut) = uploader.await.unwrap();
    assert_eq!(
        status_of(&response),
        "408",
        "{response}\nlog:\n{}",
        proxy.log_tail()
    );
    assert!(
        response.contains("urn:ietf:params:scim:api:messages:2.0:Error"),
        "{response}"
    );
    assert!(
        upload_cut >= Duration::from_millis(1500) && upload_cut < Duration::from_secs(10),
        "slow upload cut after {upload_cut:?} (body_idle_timeout_secs = 2)"
    );
    let event = proxy.event_for("slow-upload").await;
    assert_eq!(event["failure"]["side"], "downstream", "{event}");
    assert_eq!(event["failure"]["kind"], "request_body_timeout", "{event}");
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .all(|s| s.method != "POST" || !s.complete),
        "the cut upload never completed upstream"
    );
}

/// A response body of `chunks` × 64 KiB, produced as fast as it is read.
struct Endless {
    chunk: Bytes,
    left: usize,
}

impl Body for Endless {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.left == 0 {
            return Poll::Ready(None);
        }
        this.left -= 1;
        Poll::Ready(Some(Ok(Frame::data(this.chunk.clone()))))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_is_cut_after_body_idle_timeout() {
    let upstream = Upstream::start(|_req: Request<Incoming>| async {
        let body = Endless {
            chunk: Bytes::from(pattern(64 * 1024, 3)),
            left: 4096, // 256 MiB: far more than socket buffers hold
        };
        Response::builder()
            .status(200)
            .header("content-type", "application/scim+json")
            .body(body.map_err(|never| match never {}).boxed())
            .unwrap()
    })
    .await;
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()).listen("body_idle_timeout_secs = 1"));

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(proxy.addr).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(b"GET /Users HTTP/1.1\r\nHost: x\r\nX-Request-Id: stopped-reading\r\n\r\n")
        .await
        .unwrap();
    // Never read: the event says scimtap cut the connection for it.
    let event = proxy.event_for("stopped-reading").await;
    let cut_after = started.elapsed();
    assert_eq!(event["failure"]["side"], "downstream", "{event}");
    assert_eq!(event["failure"]["kind"], "client_read_timeout", "{event}");
    assert_eq!(event["http"]["status"], 200);
    assert!(
        cut_after < Duration::from_secs(15),
        "cut only after {cut_after:?} (body_idle_timeout_secs = 1)"
    );
    let received = read_to_close(&mut stream, WAIT).await;
    assert!(
        received.len() < 256 * 1024 * 1024,
        "the whole body arrived: the client was not cut"
    );
}

// === limits ===

#[tokio::test(flavor = "multi_thread")]
async fn oversized_heads_too_many_headers_and_large_bodies_are_refused() {
    let (upstream, seen) = recording_upstream().await;
    let proxy = Proxy::start(
        ProxyConfig::new(upstream.url())
            .listen("max_header_bytes = 8192\nmax_headers = 8\nmax_request_body_bytes = 1000"),
    );

    let big = "a".repeat(10_000);
    let response = raw(
        proxy.addr,
        format!("GET /Users HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&response), "431", "{response}");

    let many: String = (0..20).map(|i| format!("X-H{i}: v\r\n")).collect();
    let response = raw(
        proxy.addr,
        format!("GET /Users HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&response), "431", "{response}");

    // A declared body over the limit: 413 before anything is forwarded.
    let response = raw(
        proxy.addr,
        b"POST /Users HTTP/1.1\r\nHost: x\r\nX-Request-Id: too-large-cl\r\nContent-Type: application/scim+json\r\nContent-Length: 2000\r\nConnection: close\r\n\r\n{\"userName\":\"x\"}",
    )
    .await;
    assert_eq!(status_of(&response), "413", "{response}");
    assert!(
        response.contains("urn:ietf:params:scim:api:messages:2.0:Error"),
        "{response}"
    );
    let event = proxy.event_for("too-large-cl").await;
    assert_eq!(
        event["failure"]["kind"], "request_body_too_large",
        "{event}"
    );
    assert_eq!(event["failure"]["side"], "downstream");
    assert_eq!(upstream.count(), 0, "nothing was forwarded");

    // A chunked body that grows past the limit is cut: never complete upstream.
    let chunk = "x".repeat(600);
    let response = raw(
        proxy.addr,
        format!("POST /Users HTTP/1.1\r\nHost: x\r\nX-Request-Id: too-large-chunked\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(
        status_of(&response),
        "413",
        "{response}\nlog:\n{}",
        proxy.log_tail()
    );
    let event = proxy.event_for("too-large-chunked").await;
    assert_eq!(
        event["failure"]["kind"], "request_body_too_large",
        "{event}"
    );
    assert!(
        event["http"]["request_bytes"].as_u64().unwrap() <= 1000,
        "{event}"
    );
    assert_eq!(complete_requests(&seen), 0, "{:#?}", seen.lock().unwrap());

    // HTTP/2 declares its length too.
    let resp = h2c_client()
        .request(
            Request::post(proxy.url("/Users"))
                .header("x-request-id", "too-large-h2")
                .body(full(vec![b'x'; 2000]))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // At the limit, it is forwarded whole.
    let resp = http1_client()
        .request(
            Request::post(proxy.url("/Users"))
                .body(full(vec![b'x'; 1000]))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.into_body().collect().await.unwrap();
    assert_eq!(complete_requests(&seen), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn max_connections_holds_the_next_connection_until_one_closes() {
    let (upstream, _seen) = recording_upstream().await;
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()).listen("max_connections = 2"));
    let first = TcpStream::connect(proxy.addr).await.unwrap();
    let _second = TcpStream::connect(proxy.addr).await.unwrap();
    let deadline = Instant::now() + WAIT;
    while proxy.metric("scimtap_connections_open").await < 2.0 {
        assert!(
            Instant::now() < deadline,
            "the two connections were not accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut third = TcpStream::connect(proxy.addr).await.unwrap();
    third
        .write_all(b"GET /Users HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(700), third.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "the third connection was served at the limit"
    );

    drop(first);
    let response = String::from_utf8_lossy(&read_to_close(&mut third, WAIT).await).into_owned();
    assert_eq!(status_of(&response), "200", "{response}");
}

// === HTTP/2 ===

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut frame = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// HPACK for `GET http://localhost/`: static-table indexes, :authority not indexed.
fn get_block() -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x84, 0x01, 9];
    block.extend_from_slice(b"localhost");
    block
}

/// Opens an h2c connection and returns it with the server's SETTINGS as (id, value) pairs.
async fn h2_open(addr: SocketAddr) -> (TcpStream, Vec<(u16, u32)>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(PREFACE).await.unwrap();
    stream.write_all(&h2_frame(0x4, 0, 0, &[])).await.unwrap();
    let mut head = [0u8; 9];
    tokio::time::timeout(WAIT, stream.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head[3], 0x4, "the server speaks first with SETTINGS");
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.unwrap();
    let settings = payload
        .chunks_exact(6)
        .map(|s| {
            (
                u16::from_be_bytes([s[0], s[1]]),
                u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
            )
        })
        .collect();
    stream.write_all(&h2_frame(0x4, 0x1, 0, &[])).await.unwrap();
    (stream, settings)
}

/// Reads frames until the connection closes; returns the GOAWAY error code, if one came.
async fn goaway_then_close(stream: &mut TcpStream) -> (Option<u32>, bool) {
    let data = read_to_close(stream, WAIT).await;
    let mut at = 0;
    let mut goaway = None;
    while at + 9 <= data.len() {
        let len = u32::from_be_bytes([0, data[at], data[at + 1], data[at + 2]]) as usize;
        if data[at + 3] == 0x7 && at + 9 + 8 <= data.len() {
            let p = &data[at + 9..];
            goaway = Some(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
        }
        at += 9 + len;
    }
    let mut probe = [0u8; 1];
    let closed = matches!(
        tokio::time::timeout(Duration::from_millis(500), stream.read(&mut probe)).await,
        Ok(Ok(0)) | Ok(Err(_))
    );
    (goaway, closed)
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_limits_are_advertised_and_floods_close_the_connection() {
    let (upstream, _seen) = recording_upstream().await;
    let proxy = Proxy::start(
        ProxyConfig::new(upstream.url())
            .listen("http2_max_concurrent_streams = 7\nmax_header_bytes = 16384"),
    );

    let (mut stream, settings) = h2_open(proxy.addr).await;
    assert!(
        settings.contains(&(0x3, 7)),
        "SETTINGS_MAX_CONCURRENT_STREAMS: {settings:?}"
    );
    assert!(
        settings.contains(&(0x6, 16384)),
        "SETTINGS_MAX_HEADER_LIST_SIZE: {settings:?}"
    );

    // Rapid reset: open streams and cancel them at once, many times over.
    let mut burst = Vec::new();
    for i in 0..500u32 {
        let id = 2 * i + 1;
        burst.extend(h2_frame(0x1, 0x5, id, &get_block()));
        burst.extend(h2_frame(0x3, 0, id, &0x8u32.to_be_bytes()));
    }
    let _ = stream.write_all(&burst).await;
    let (goaway, closed) = goaway_then_close(&mut stream).await;
    assert_eq!(goaway, Some(0xb), "GOAWAY ENHANCE_YOUR_CALM expected");
    assert!(closed, "the rapid-reset connection was left open");

    // CONTINUATION flood: one header block that never ends.
    let (mut stream, _) = h2_open(proxy.addr).await;
    let _ = stream.write_all(&h2_frame(0x1, 0x1, 1, &get_block())).await;
    let junk = vec![0x40u8; 4096];
    let started = Instant::now();
    for _ in 0..2048 {
        if stream.write_all(&h2_frame(0x9, 0, 1, &junk)).await.is_err() {
            break;
        }
        if started.elapsed() > WAIT {
            break;
        }
    }
    let (goaway, closed) = goaway_then_close(&mut stream).await;
    assert!(
        closed,
        "the CONTINUATION flood was not cut (GOAWAY {goaway:?})"
    );

    // An HTTP/2 connection with no open stream is closed like an idle HTTP/1 connection.
    let idle =
        Proxy::start(ProxyConfig::new(upstream.url()).listen("header_read_timeout_secs = 1"));
    let (mut stream, _) = h2_open(idle.addr).await;
    let after = closed_within(&mut stream, WAIT)
        .await
        .expect("idle h2 connection closed");
    assert!(after < Duration::from_secs(10), "closed after {after:?}");

    // Others are still served.
    let resp = h2c_client()
        .request(Request::get(proxy.url("/Users")).body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

// === TLS ===

/// A TLS 1.1 ClientHello: legacy_version 0x0302, no supported_versions extension, TLS 1.1-era
/// cipher suites.
fn tls11_client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x02];
    hello.extend_from_slice(&[0x42; 32]); // random
    hello.push(0); // session id
    let suites: &[u8] = &[0xc0, 0x13, 0xc0, 0x14, 0x00, 0x2f, 0x00, 0x35, 0x00, 0xff];
    hello.extend_from_slice(&(suites.len() as u16).to_be_bytes());
    hello.extend_from_slice(suites);
    hello.extend_from_slice(&[1, 0]); // compression: null
    let mut handshake = vec![0x01];
    handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x02];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

fn tls_listen(dir: &std::path::Path, pki: &TestPki) -> String {
    let (_, cert, key) = pki.write(dir);
    format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
        cert.display(),
        key.display()
    )
}

/// Handshakes with only `versions` enabled; Ok with the negotiated version.
async fn handshake(
    addr: SocketAddr,
    pki: &TestPki,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<rustls::ProtocolVersion, std::io::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))??;
    Ok(tls.get_ref().1.protocol_version().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_1_1_is_refused_and_tls_min_version_1_3_refuses_tls_1_2() {
    let (upstream, _seen) = recording_upstream().await;
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let default =
        Proxy::start(ProxyConfig::new(upstream.url()).listen(&tls_listen(dir.path(), &pki)));

    // TLS 1.1: an alert or a close, never a ServerHello.
    let mut stream = TcpStream::connect(default.addr).await.unwrap();
    stream.write_all(&tls11_client_hello()).await.unwrap();
    let reply = read_to_close(&mut stream, WAIT).await;
    assert!(
        reply.is_empty() || reply[0] == 0x15,
        "TLS 1.1 hello answered with {:02x?}",
        &reply[..reply.len().min(16)]
    );
    assert!(
        !(reply.len() > 5 && reply[0] == 0x16 && reply[5] == 0x02),
        "a ServerHello was sent to a TLS 1.1 client"
    );
    assert!(default.metric("scimtap_tls_handshake_failures_total").await >= 1.0);

    // The default accepts 1.2 and 1.3.
    assert_eq!(
        handshake(default.addr, &pki, &[&rustls::version::TLS12])
            .await
            .unwrap(),
        rustls::ProtocolVersion::TLSv1_2
    );
    assert_eq!(
        handshake(default.addr, &pki, &[&rustls::version::TLS13])
            .await
            .unwrap(),
        rustls::ProtocolVersion::TLSv1_3
    );

    let strict = Proxy::start(
        ProxyConfig::new(upstream.url())
            .listen(&tls_listen(dir.path(), &pki))
            .listen("tls_min_version = \"1.3\""),
    );
    assert!(
        handshake(strict.addr, &pki, &[&rustls::version::TLS12])
            .await
            .is_err(),
        "a TLS 1.2-only client was accepted with tls_min_version = \"1.3\""
    );
    assert_eq!(
        handshake(strict.addr, &pki, &[&rustls::version::TLS13])
            .await
            .unwrap(),
        rustls::ProtocolVersion::TLSv1_3
    );
}

// === allow-list ===

#[tokio::test(flavor = "multi_thread")]
async fn clients_outside_the_allow_list_get_401_and_nothing_reaches_the_upstream() {
    let (upstream, seen) = recording_upstream().await;
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()).top(&format!(
        "[[clients]]\nname = \"okta-prod\"\ntoken_sha256 = \"{}\"\nrequired = true",
        sha256_hex(b"good-token")
    )));
    let send = |auth: Option<&'static str>, id: &'static str| {
        let mut req = Request::get(proxy.url("/Users")).header("x-request-id", id);
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        http1_client().request(req.body(empty()).unwrap())
    };

    for (auth, id) in [
        (None, "no-token"),
        (Some("Bearer wrong-token"), "wrong-token"),
        (Some("Bearer"), "empty-token"),
        (Some("Basic Z29vZC10b2tlbg=="), "other-scheme"),
    ] {
        let resp = send(auth, id).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{id}");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer", "{id}");
        assert_eq!(resp.headers()["content-type"], "application/scim+json");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["status"], "401", "{body}");
        let event = proxy.event_for(id).await;
        assert_eq!(event["failure"]["kind"], "client_not_allowed", "{event}");
        assert_eq!(event["failure"]["side"], "downstream");
        assert_eq!(event["http"]["status"], 401);
    }
    assert_eq!(upstream.count(), 0, "a refused client reached the upstream");

    let resp = send(Some("Bearer good-token"), "good-token").await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.into_body().collect().await.unwrap();
    let event = proxy.event_for("good-token").await;
    assert_eq!(event["client"]["name"], "okta-prod", "{event}");
    assert!(event["failure"].is_null(), "{event}");
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_allow_list_admits_client_certificates_by_subject() {
    let (upstream, _seen) = recording_upstream().await;
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki.write(dir.path());
    let proxy = Proxy::start(
        ProxyConfig::new(upstream.url())
            .listen(&format!(
                "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\nclient_ca_file = \"{}\"",
                cert.display(),
                key.display(),
                ca.display()
            ))
            .top("[[clients]]\nname = \"okta-mtls\"\ncert_subject = \"CN=okta-scim, O=Example IdP\"\nrequired = true"),
    );
    let url = format!("https://localhost:{}/Users", proxy.addr.port());

    // Signed by the trusted CA, but not a configured client.
    let (other_cert, other_key) = pki.client_cert("someone-else");
    let resp = mtls_client(&pki.ca_der, other_cert, other_key)
        .request(
            Request::get(&url)
                .header("x-request-id", "unknown-cert")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let event = proxy.event_for("unknown-cert").await;
    assert_eq!(event["failure"]["kind"], "client_not_allowed", "{event}");
    assert_eq!(upstream.count(), 0);

    let (cert, key) = pki.client_cert("okta-scim");
    let resp = mtls_client(&pki.ca_der, cert, key)
        .request(
            Request::get(&url)
                .header("x-request-id", "known-cert")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let event = proxy.event_for("known-cert").await;
    assert_eq!(event["client"]["name"], "okta-mtls", "{event}");
    assert_eq!(upstream.count(), 1);
}
