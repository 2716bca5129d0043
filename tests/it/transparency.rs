//! Bytes in == bytes out: a real scimtap process between a real client and a real upstream,
//! all on 127.0.0.1 with ports chosen at run time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// What the echo upstream saw of a request.
#[derive(Debug, Clone, Default)]
struct Seen {
    method: String,
    uri: String,
    headers: Vec<(String, String)>,
    body_sha256: String,
    body_len: usize,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An upstream that records each request and answers with a body of `response_len` pattern
/// bytes (content-length framed) and a few distinctive headers.
async fn echo_upstream(response_len: usize) -> (Upstream, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let upstream = Upstream::start(move |req: Request<Incoming>| {
        let log = log.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            log.lock().unwrap().push(Seen {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                headers: parts
                    .headers
                    .iter()
                    .map(|(n, v)| {
                        (
                            n.to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect(),
                body_sha256: sha256_hex(&body),
                body_len: body.len(),
            });
            Response::builder()
                .status(201)
                .header("content-type", "application/scim+json")
                .header("etag", "W/\"abc\"")
                .header("x-upstream-custom", "kept")
                .header("set-cookie", "sid=upstream-session-secret")
                .body(full(pattern(response_len, 7)))
                .unwrap()
        }
    })
    .await;
    (upstream, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn forwards_method_path_query_headers_and_bodies_unchanged() {
    let (upstream, seen) = echo_upstream(1500).await;
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()));
    let body =
        br#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"bjensen"}"#;
    let req = Request::post(proxy.url("/scim/v2/Users?attributes=userName&x=%2F%20y"))
        .header("authorization", "Bearer super-secret-token-value")
        .header("content-type", "application/scim+json")
        .header("user-agent", "Okta SCIM Client 1.0.0")
        .header("x-request-id", "req-small-1")
        .header("x-custom", "a")
        .header("connection", "x-hop")
        .header("x-hop", "must-not-pass")
        .header("cookie", "idp-cookie-secret")
        .body(full(&body[..]))
        .unwrap();
    let resp = http1_client().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["etag"], "W/\"abc\"");
    assert_eq!(resp.headers()["x-upstream-custom"], "kept");
    assert_eq!(resp.headers()["content-length"], "1500");
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(sha256_hex(&got), sha256_hex(&pattern(1500, 7)));

    let seen = seen.lock().unwrap()[0].clone();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.uri, "/scim/v2/Users?attributes=userName&x=%2F%20y");
    assert_eq!(seen.body_sha256, sha256_hex(body));
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer super-secret-token-value")
    );
    assert_eq!(seen.header("content-type"), Some("application/scim+json"));
    assert_eq!(seen.header("x-custom"), Some("a"));
    assert_eq!(seen.header("x-request-id"), Some("req-small-1"));
    assert_eq!(
        seen.header("host"),
        Some(upstream.addr.to_string().as_str())
    );
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        seen.header("x-hop"),
        None,
        "headers named by Connection are hop-by-hop"
    );
    assert_eq!(seen.header("connection"), None);

    let event = proxy.event_for("req-small-1").await;
    assert_eq!(event["http"]["method"], "POST");
    assert_eq!(event["http"]["path"], "/scim/v2/Users");
    assert_eq!(event["http"]["query"], "attributes=userName&x=%2F%20y");
    assert_eq!(event["http"]["status"], 201);
    assert_eq!(event["http"]["request_bytes"], body.len());
    assert_eq!(event["http"]["response_bytes"], 1500);
    assert_eq!(event["outcome"], "success");
    assert_eq!(event["client"]["address"], "127.0.0.1");
    assert_eq!(event["client"]["user_agent"], "Okta SCIM Client 1.0.0");
    assert_eq!(
        event["client"]["token_fingerprint"].as_str().unwrap().len(),
        16
    );
    assert!(event["failure"].is_null());
    let text = std::fs::read_to_string(&proxy.audit).unwrap() + &proxy.log_tail();
    for secret in [
        "super-secret-token-value",
        "idp-cookie-secret",
        "upstream-session-secret",
    ] {
        assert!(
            !text.contains(secret),
            "{secret} leaked into events or logs"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn request_id_is_generated_when_absent_and_sent_upstream() {
    let (upstream, seen) = echo_upstream(2).await;
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()));
    let resp = http1_client()
        .request(Request::get(proxy.url("/Users/1")).body(empty()).unwrap())
        .await
        .unwrap();
    resp.into_body().collect().await.unwrap();
    let id = seen.lock().unwrap()[0]
        .header("x-request-id")
        .unwrap()
        .to_owned();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
    let event = proxy.event_for(&id).await;
    assert_eq!(event["http"]["path"], "/Users/1");
}

#[tokio::test(flavor = "multi_thread")]
async fn large_bodies_stream_both_ways_with_equal_sha256() {
    const SIZE: usize = 20 * 1024 * 1024;
    let (upstream, seen) = echo_upstream(SIZE).await;
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()));
    let payload = Bytes::from(pattern(SIZE, 3));

    // Content-length request.
    let req = Request::put(proxy.url("/Users/big"))
        .header("x-request-id", "big-cl")
        .body(full(payload.clone()))
        .unwrap();
    let resp = http1_client().request(req).await.unwrap();
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got.len(), SIZE);
    assert_eq!(sha256_hex(&got), sha256_hex(&pattern(SIZE, 7)));

    // Chunked request, fed in 64 KiB pieces.
    let (tx, body) = ChannelBody::pair();
    let req = Request::put(proxy.url("/Users/big"))
        .header("x-request-id", "big-chunked")
        .body(body)
        .unwrap();
    let feeder = {
        let payload = payload.clone();
        tokio::spawn(async move {
            for chunk in payload.chunks(64 * 1024) {
                tx.send(Bytes::copy_from_slice(chunk)).await.unwrap();
            }
        })
    };
    let resp = http1_client().request(req).await.unwrap();
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    feeder.await.unwrap();
    assert_eq!(sha256_hex(&got), sha256_hex(&pattern(SIZE, 7)));

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(s.body_len, SIZE);
        assert_eq!(s.body_sha256, sha256_hex(&payload));
    }
    assert_eq!(
        seen[0].header("content-length"),
        Some(SIZE.to_string().as_str())
    );
    assert_eq!(seen[1].header("transfer-encoding"), Some("chunked"));

    for id in ["big-cl", "big-chunked"] {
        let event = proxy.event_for(id).await;
        assert_eq!(event["http"]["request_bytes"], SIZE);
        assert_eq!(event["http"]["response_bytes"], SIZE);
        assert_eq!(event["http"]["request_body_truncated"], true);
        assert_eq!(event["http"]["response_body_truncated"], true);
        assert_eq!(event["outcome"], "success");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_body_statuses_and_head_pass_through() {
    let upstream = Upstream::start(|req: Request<Incoming>| async move {
        let status = match req.uri().path() {
            "/204" => 204,
            "/304" => 304,
            _ => 200,
        };
        let mut builder = Response::builder().status(status).header("etag", "W/\"1\"");
        if status == 200 {
            builder = builder.header("content-length", "42");
        }
        let body = if req.method() == Method::HEAD || status != 200 {
            empty()
        } else {
            full(vec![b'x'; 42])
        };
        builder.body(body).unwrap()
    })
    .await;
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()));
    let client = http1_client();
    for (method, path, status, id) in [
        (Method::DELETE, "/204", 204, "nb-204"),
        (Method::GET, "/304", 304, "nb-304"),
        (Method::HEAD, "/head", 200, "nb-head"),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(proxy.url(path))
            .header("x-request-id", id)
            .body(empty())
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), status);
        if id == "nb-head" {
            assert_eq!(
                resp.headers()["content-length"],
                "42",
                "HEAD keeps the length of the GET"
            );
        }
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(body.is_empty());
        let event = proxy.event_for(id).await;
        assert_eq!(event["http"]["status"], status);
        assert_eq!(event["outcome"], "success");
        assert!(event["failure"].is_null(), "{event}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_clients_are_served_over_cleartext_and_tls() {
    let (upstream, seen) = echo_upstream(100).await;
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let (_ca, cert, key) = pki.write(dir.path());
    let plain = Proxy::start(ProxyConfig::new(upstream.url()));
    let tls = Proxy::start(ProxyConfig::new(upstream.url()).listen(&format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
        cert.display(),
        key.display()
    )));

    let resp = h2c_client()
        .request(
            Request::post(plain.url("/Users"))
                .header("x-request-id", "h2c-1")
                .body(full("{\"userName\":\"a\"}"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes().len(),
        100
    );

    for (h2, id) in [(true, "tls-h2"), (false, "tls-h1")] {
        let url = format!("https://localhost:{}/Users", tls.addr.port());
        let resp = tls_client(&pki.ca_der, h2)
            .request(
                Request::post(url)
                    .header("x-request-id", id)
                    .body(full("{}"))
                    .unwrap(),
            )
            .await
            .unwrap();
        let expected = if h2 {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        assert_eq!(resp.version(), expected);
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert_eq!(
            resp.into_body().collect().await.unwrap().to_bytes().len(),
            100
        );
        let event = tls.event_for(id).await;
        assert_eq!(event["client"]["tls"], true);
        assert_eq!(
            event["http"]["version"],
            if h2 { "HTTP/2" } else { "HTTP/1.1" }
        );
    }
    let event = plain.event_for("h2c-1").await;
    assert_eq!(event["http"]["version"], "HTTP/2");
    assert_eq!(event["http"]["status"], 201);

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert!(seen
        .iter()
        .all(|s| s.header("host") == Some(upstream.addr.to_string().as_str())));
    assert_eq!(seen[1].header("x-forwarded-proto"), Some("https"));
}

#[tokio::test(flavor = "multi_thread")]
async fn https_upstream_is_trusted_through_ca_file() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, _) = pki.write(dir.path());
    let upstream = Upstream::start_tls(
        |_req: Request<Incoming>| async {
            Response::builder()
                .status(200)
                .body(full("secure"))
                .unwrap()
        },
        pki.server_config(),
    )
    .await;
    let url = format!("https://localhost:{}", upstream.addr.port());
    let trusted = Proxy::start(
        ProxyConfig::new(url.clone()).upstream(&format!("ca_file = \"{}\"", ca.display())),
    );
    let resp = http1_client()
        .request(
            Request::get(trusted.url("/ServiceProviderConfig"))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes(),
        "secure"
    );

    // Without the CA the certificate is not trusted: fail closed with a 502 and a TLS event.
    let untrusted = Proxy::start(ProxyConfig::new(url));
    let resp = http1_client()
        .request(
            Request::get(untrusted.url("/ServiceProviderConfig"))
                .header("x-request-id", "untrusted")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let event = untrusted.event_for("untrusted").await;
    assert_eq!(event["failure"]["side"], "upstream");
    assert_eq!(event["failure"]["kind"], "tls_error", "{event}");
    assert_eq!(
        upstream.count(),
        1,
        "the untrusted handshake never became a request"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_down_gives_502_and_an_upstream_event() {
    let proxy = Proxy::start(ProxyConfig::new(format!(
        "http://127.0.0.1:{}",
        closed_port()
    )));
    let resp = http1_client()
        .request(
            Request::get(proxy.url("/Users"))
                .header("x-request-id", "down-1")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(resp.headers()["content-type"], "application/scim+json");
    let body: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(
        body["schemas"][0],
        "urn:ietf:params:scim:api:messages:2.0:Error"
    );
    assert_eq!(body["status"], "502");
    let event = proxy.event_for("down-1").await;
    assert_eq!(event["outcome"], "failure");
    assert_eq!(event["http"]["status"], 502);
    assert_eq!(event["http"]["response_generated"], true);
    assert_eq!(event["failure"]["side"], "upstream");
    assert_eq!(event["failure"]["kind"], "connect_refused");
    assert!(
        event["http"]["response_bytes"].as_u64().unwrap() > 0,
        "the SCIM error body is counted"
    );
    assert!(
        event["scim"]["error"].is_null(),
        "scimtap's own 502 body is not the service's error"
    );
    // A write the upstream never read is still classified from its body: scimtap reads what
    // the upstream did not (for the event only), so a deactivation refused with 502 is
    // recorded as a deactivation, not as an unknown update.
    let deactivation = r#"{"Operations":[{"op":"replace","path":"active","value":false}]}"#;
    let resp = http1_client()
        .request(
            Request::patch(proxy.url("/scim/v2/Users/u1"))
                .header("x-request-id", "down-2")
                .header("content-type", "application/scim+json")
                .body(full(deactivation))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let event = proxy.event_for("down-2").await;
    assert_eq!(
        event["scim"]["actions"],
        serde_json::json!(["user.deactivate"]),
        "{event}"
    );
    assert_eq!(event["scim"]["target"]["id"], "u1", "{event}");
    assert!(event["scim"]["parse_error"].is_null(), "{event}");
    assert_eq!(
        event["http"]["request_bytes"],
        deactivation.len(),
        "{event}"
    );
    assert_eq!(event["outcome"], "failure");
    assert_eq!(event["failure"]["kind"], "connect_refused");
    assert_eq!(
        proxy
            .metric("scimtap_upstream_errors_total{kind=\"connect_refused\"}")
            .await,
        2.0
    );
    assert_eq!(
        proxy
            .metric("scimtap_requests_total{status_class=\"5xx\"}")
            .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_too_slow_gives_504_and_an_upstream_event() {
    let upstream = Upstream::start(|_req: Request<Incoming>| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Response::new(empty())
    })
    .await;
    let proxy =
        Proxy::start(ProxyConfig::new(upstream.url()).upstream("response_timeout_secs = 0.3"));
    let resp = http1_client()
        .request(
            Request::get(proxy.url("/Users"))
                .header("x-request-id", "slow-1")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    let event = proxy.event_for("slow-1").await;
    assert_eq!(event["http"]["status"], 504);
    assert_eq!(event["failure"]["side"], "upstream");
    assert_eq!(event["failure"]["kind"], "response_timeout");
}

/// An upstream that sends `first` at once, then the rest only when the test says so.
async fn gated_upstream(first: &'static str) -> (Upstream, mpsc::Sender<()>) {
    let (release_tx, release_rx) = mpsc::channel::<()>(1);
    let release_rx = Arc::new(tokio::sync::Mutex::new(release_rx));
    let upstream = Upstream::start(move |_req: Request<Incoming>| {
        let release_rx = release_rx.clone();
        async move {
            let (tx, body) = ChannelBody::pair();
            tokio::spawn(async move {
                let _ = tx.send(Bytes::from_static(first.as_bytes())).await;
                let _ = release_rx.lock().await.recv().await;
                let _ = tx.send(Bytes::from_static(b"-rest")).await;
            });
            Response::builder().status(200).body(body).unwrap()
        }
    })
    .await;
    (upstream, release_tx)
}

#[tokio::test(flavor = "multi_thread")]
async fn first_response_byte_arrives_before_the_upstream_finishes() {
    let (upstream, release) = gated_upstream("first").await;
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()));
    let resp = http1_client()
        .request(
            Request::get(proxy.url("/Users"))
                .header("x-request-id", "stream-1")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    // The upstream holds the rest back until we have the first chunk: a buffering proxy
    // would deadlock here and the timeout would fail the test.
    let frame = tokio::time::timeout(WAIT, body.frame())
        .await
        .expect("first chunk streamed")
        .unwrap()
        .unwrap();
    assert_eq!(frame.into_data().unwrap(), "first");
    release.send(()).await.unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "-rest");
    let event = proxy.event_for("stream-1").await;
    assert_eq!(event["http"]["response_bytes"], 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn request_body_streams_upstream_before_the_client_finishes() {
    let (got_first_tx, got_first_rx) = oneshot::channel::<Bytes>();
    let got_first_tx = Arc::new(Mutex::new(Some(got_first_tx)));
    let upstream = Upstream::start(move |req: Request<Incoming>| {
        let got_first_tx = got_first_tx.clone();
        async move {
            let mut body = req.into_body();
            let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
            if let Some(tx) = got_first_tx.lock().unwrap().take() {
                let _ = tx.send(first.clone());
            }
            let rest = body.collect().await.unwrap().to_bytes();
            Response::new(full([first, rest].concat()))
        }
    })
    .await;
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()));
    let (tx, body) = ChannelBody::pair();
    let req = Request::post(proxy.url("/Bulk")).body(body).unwrap();
    let pending = tokio::spawn(http1_client().request(req));
    tx.send(Bytes::from_static(b"{\"Operations\":["))
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, got_first_rx)
        .await
        .expect("upstream saw the first chunk")
        .unwrap();
    assert_eq!(first, "{\"Operations\":[");
    tx.send(Bytes::from_static(b"]}")).await.unwrap();
    drop(tx);
    let resp = pending.await.unwrap().unwrap();
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes(),
        "{\"Operations\":[]}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn client_gone_mid_response_is_a_downstream_failure() {
    let (upstream, release) = gated_upstream("partial").await;
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()));
    let resp = http1_client()
        .request(
            Request::get(proxy.url("/Users"))
                .header("x-request-id", "gone-1")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    let _ = tokio::time::timeout(WAIT, body.frame()).await.unwrap();
    drop(body); // hang up mid-body
    let event = proxy.event_for("gone-1").await;
    drop(release);
    assert_eq!(event["outcome"], "failure");
    assert_eq!(event["failure"]["side"], "downstream", "{event}");
    assert_eq!(event["failure"]["kind"], "client_disconnected");
    assert_eq!(event["http"]["status"], 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_gone_before_the_response_head_is_a_downstream_failure() {
    let upstream = Upstream::start(|_req: Request<Incoming>| async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        Response::new(full("late"))
    })
    .await;
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()));
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /Users HTTP/1.1\r\nHost: x\r\nX-Request-Id: gone-early\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(stream);
    let event = proxy.event_for("gone-early").await;
    assert_eq!(event["failure"]["side"], "downstream", "{event}");
    assert!(event["http"]["status"].is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn redirects_are_passed_through_not_followed() {
    let upstream = Upstream::start(|req: Request<Incoming>| async move {
        if req.uri().path() == "/elsewhere" {
            panic!("scimtap followed a redirect");
        }
        Response::builder()
            .status(302)
            .header("location", "/elsewhere")
            .body(empty())
            .unwrap()
    })
    .await;
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()));
    let resp = http1_client()
        .request(Request::get(proxy.url("/Users")).body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(resp.headers()["location"], "/elsewhere");
    assert_eq!(upstream.count(), 1);
}

async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn absolute_form_targets_and_connect_are_refused() {
    let (upstream, _seen) = echo_upstream(1).await;
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()));
    let abs = raw_exchange(
        proxy.addr,
        b"GET http://169.254.169.254/latest/meta-data HTTP/1.1\r\nHost: 169.254.169.254\r\nX-Request-Id: abs-1\r\n\r\n",
    )
    .await;
    assert!(abs.starts_with("HTTP/1.1 400"), "{abs}");
    let connect = raw_exchange(
        proxy.addr,
        b"CONNECT internal.example:443 HTTP/1.1\r\nHost: internal.example:443\r\nX-Request-Id: connect-1\r\n\r\n",
    )
    .await;
    assert!(connect.starts_with("HTTP/1.1 405"), "{connect}");
    assert_eq!(upstream.count(), 0, "nothing reached the upstream");
    let event = proxy.event_for("abs-1").await;
    assert_eq!(event["failure"]["kind"], "absolute_form_refused");
    assert_eq!(event["failure"]["side"], "downstream");
    let event = proxy.event_for("connect-1").await;
    assert_eq!(event["failure"]["kind"], "connect_refused_by_proxy");
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_base_path_is_prefixed_and_preserve_host_keeps_the_client_host() {
    let (upstream, seen) = echo_upstream(1).await;
    let proxy = Proxy::start(
        ProxyConfig::new(format!("{}/tenant-a/scim", upstream.url()))
            .upstream("preserve_host = true"),
    );
    let resp = http1_client()
        .request(
            Request::get(proxy.url("/v2/Users?startIndex=1&count=100"))
                .header("host", "scim.customer.example")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    resp.into_body().collect().await.unwrap();
    let seen = seen.lock().unwrap()[0].clone();
    assert_eq!(seen.uri, "/tenant-a/scim/v2/Users?startIndex=1&count=100");
    assert_eq!(seen.header("host"), Some("scim.customer.example"));
}

/// A raw upstream that answers every request with a head promising 100 bytes and 10 of them,
/// then keeps the connection `hold` before hanging up.
async fn truncating_upstream(hold: Duration) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/scim+json\r\ncontent-length: 100\r\n\r\n{\"Resource")
                    .await;
                tokio::time::sleep(hold).await;
                drop(stream);
            });
        }
    });
    addr
}

/// Asks `proxy` (in front of a [`truncating_upstream`]) for `/Users` as `id`: the head arrives,
/// the body breaks after its 10 bytes (within `WAIT`), and the event blames the upstream with
/// failure `kind`.
async fn assert_truncated_by_upstream(
    proxy: &Proxy,
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        TestBody,
    >,
    id: &str,
    kind: &str,
) {
    let resp = client
        .request(
            Request::get(proxy.url("/Users"))
                .header("x-request-id", id)
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "the head was already forwarded"
    );
    let body = tokio::time::timeout(WAIT, resp.into_body().collect())
        .await
        .expect("the broken body ends, it is not left hanging");
    assert!(body.is_err(), "{id}: the client sees the body break too");
    let event = proxy.event_for(id).await;
    assert_eq!(event["outcome"], "failure");
    assert_eq!(event["failure"]["side"], "upstream", "{event}");
    assert_eq!(event["failure"]["kind"], kind, "{event}");
    assert_eq!(event["http"]["response_bytes"], 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_reset_mid_body_is_an_upstream_failure() {
    // A raw upstream that promises 100 bytes, sends 10, and hangs up.
    let addr = truncating_upstream(Duration::ZERO).await;
    let proxy = Proxy::start(ProxyConfig::new(format!("http://{addr}")));
    assert_truncated_by_upstream(&proxy, &http1_client(), "reset-1", "response_body_error").await;
    assert_eq!(
        proxy
            .metric("scimtap_upstream_errors_total{kind=\"response_body_error\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_stalling_mid_body_is_cut_after_its_idle_timeout() {
    // A raw upstream that promises 100 bytes, sends 10, and then neither sends nor hangs up.
    let addr = truncating_upstream(Duration::from_secs(60)).await;
    let proxy = Proxy::start(
        ProxyConfig::new(format!("http://{addr}")).upstream("body_idle_timeout_secs = 1"),
    );
    for (client, id) in [(http1_client(), "stall-h1"), (h2c_client(), "stall-h2")] {
        assert_truncated_by_upstream(&proxy, &client, id, "response_body_timeout").await;
    }
    assert_eq!(
        proxy
            .metric("scimtap_upstream_errors_total{kind=\"response_body_timeout\"}")
            .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_client_that_keeps_its_window_shut_has_the_stream_reset() {
    let big = Bytes::from(vec![b'x'; 1 << 20]);
    let upstream = Upstream::start(move |_req: Request<Incoming>| {
        let big = big.clone();
        async move { Response::new(full(big)) }
    })
    .await;
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()).listen("body_idle_timeout_secs = 1"));
    // h2c with a 64 KiB stream window (and a large connection window): a body nobody reads
    // never gets its window reopened after the first 64 KiB. The socket stays writable.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .http2_initial_stream_window_size(65_535)
        .http2_initial_connection_window_size(16 << 20)
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let get = |id: &str| {
        Request::get(proxy.url("/scim/v2/Users/u1"))
            .header("x-request-id", id)
            .body(empty())
            .unwrap()
    };
    let unread = client.request(get("h2-window-shut")).await.unwrap();
    assert_eq!(unread.status(), StatusCode::OK);

    let event = proxy.event_for("h2-window-shut").await;
    assert_eq!(event["outcome"], "failure", "{event}");
    assert_eq!(event["failure"]["kind"], "client_read_timeout", "{event}");
    assert_eq!(event["failure"]["side"], "downstream", "{event}");
    // What the client had room for, not the whole body.
    assert!(
        event["http"]["response_bytes"].as_u64().unwrap() < 1 << 20,
        "{event}"
    );
    assert!(
        unread.into_body().collect().await.is_err(),
        "the stream was reset"
    );

    // Only the stream: the connection serves the next request in full.
    let read = client.request(get("h2-window-open")).await.unwrap();
    let body = read.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 1 << 20);
    let event = proxy.event_for("h2-window-open").await;
    assert_eq!(event["outcome"], "success", "{event}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mtls_requires_a_client_certificate_and_names_the_client_by_its_subject() {
    let (upstream, seen) = echo_upstream(2).await;
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
            .top("[[clients]]\nname = \"okta-mtls\"\nidp = \"okta\"\ncert_subject = \"CN=okta-scim, O=Example IdP\""),
    );
    let url = format!("https://localhost:{}/scim/v2/Users", proxy.addr.port());

    // Without a certificate the handshake fails and nothing reaches the upstream.
    let refused = tls_client(&pki.ca_der, false)
        .request(Request::get(&url).body(empty()).unwrap())
        .await;
    assert!(
        refused.is_err(),
        "a client without a certificate was served"
    );

    let (client_cert, client_key) = pki.client_cert("okta-scim");
    let resp = mtls_client(&pki.ca_der, client_cert, client_key)
        .request(
            Request::get(&url)
                .header("x-request-id", "mtls-1")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    resp.into_body().collect().await.unwrap();
    let event = proxy.event_for("mtls-1").await;
    assert_eq!(event["client"]["tls"], true);
    assert_eq!(event["client"]["name"], "okta-mtls", "{event}");
    assert_eq!(event["client"]["idp"], "okta");
    // RFC 4514 order is the reverse of the DER order; rcgen encodes CN before O.
    assert_eq!(
        event["client"]["certificate_subject"],
        "O=Example IdP,CN=okta-scim"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert!(proxy.metric("scimtap_tls_handshake_failures_total").await >= 1.0);
}

/// An upstream that answers every request with `response`, byte for byte, then closes.
async fn raw_upstream(response: &'static [u8]) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(response).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunked_response_with_trailers_completes_normally() {
    let addr = raw_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/scim+json\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n2\r\n{}\r\n0\r\nx-checksum: abc\r\n\r\n",
    )
    .await;
    let proxy = Proxy::start(ProxyConfig::new(format!("http://{addr}")));
    let resp = http1_client()
        .request(
            Request::get(proxy.url("/Users/1"))
                .header("x-request-id", "trailers-1")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "{}");
    let event = proxy.event_for("trailers-1").await;
    assert_eq!(event["outcome"], "success", "{event}");
    assert!(event["failure"].is_null(), "{event}");
}

#[tokio::test(flavor = "multi_thread")]
async fn transfer_encoding_wins_over_a_conflicting_content_length() {
    // RFC 9112 6.3: with both, the body is chunked; forwarding the stale length would cut
    // the body short or hang the client.
    let addr = raw_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let proxy = Proxy::start(ProxyConfig::new(format!("http://{addr}")));
    let resp = http1_client()
        .request(
            Request::get(proxy.url("/Users"))
                .header("x-request-id", "te-cl-1")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(resp.headers().get("content-length").is_none());
    let body = tokio::time::timeout(WAIT, resp.into_body().collect())
        .await
        .expect("body completes")
        .unwrap();
    assert_eq!(body.to_bytes(), "hello");
    let event = proxy.event_for("te-cl-1").await;
    assert_eq!(event["outcome"], "success", "{event}");
    assert_eq!(event["http"]["response_bytes"], 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_cannot_strip_the_request_id() {
    let (upstream, seen) = echo_upstream(1).await;
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()));
    let resp = http1_client()
        .request(
            Request::get(proxy.url("/Users"))
                .header("connection", "x-request-id")
                .header("x-request-id", "hop-id")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    resp.into_body().collect().await.unwrap();
    let upstream_id = seen.lock().unwrap()[0]
        .header("x-request-id")
        .map(str::to_owned)
        .unwrap();
    proxy.event_for(&upstream_id).await;
}
