//! A real SCIM server (scim2-server from PyPI, in the venv scripts/setup.sh creates) behind a
//! real scimtap, driven with real SCIM requests: one event per request, with the right
//! request id, method, path and status.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::Request;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use support::*;

/// scim2-server on 127.0.0.1 at a port chosen at run time.
struct ScimServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

fn peer_venv() -> PathBuf {
    std::env::var_os("SCIMTAP_PEER_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peer/.venv")))
}

impl ScimServer {
    async fn start() -> ScimServer {
        let venv = peer_venv();
        let server = venv.join("bin/scim2-server");
        assert!(
            server.exists(),
            "{} is missing: run scripts/setup.sh (or scripts/test.sh) to create the test venv",
            server.display()
        );
        // The server takes a port number, not a listener: pick a free one, and retry if
        // another program grabs it in between.
        for _attempt in 0..5 {
            let port = closed_port();
            let dir = tempfile::tempdir().unwrap();
            let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
            let mut child = Command::new(venv.join("bin/python"))
                .arg("-u")
                .arg(&server)
                .args(["--hostname", "127.0.0.1", "--port", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(15);
            let probe = format!("http://127.0.0.1:{port}/v2/ServiceProviderConfig");
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                let req = Request::get(&probe).body(empty()).unwrap();
                if let Ok(Ok(resp)) =
                    tokio::time::timeout(Duration::from_secs(1), http1_client().request(req)).await
                {
                    if resp.status() == 200 {
                        return ScimServer {
                            child,
                            port,
                            _dir: dir,
                        };
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("scim2-server did not start");
    }
}

impl Drop for ScimServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Sent {
    id: String,
    method: &'static str,
    path: String,
    status: u16,
}

async fn send(
    proxy: &Proxy,
    sent: &mut Vec<Sent>,
    method: &'static str,
    path: &str,
    body: Option<Value>,
) -> Value {
    let id = format!("scim-{}", sent.len());
    let mut req = Request::builder()
        .method(method)
        .uri(proxy.url(path))
        .header("x-request-id", &id)
        .header("authorization", "Bearer idp-token-1")
        .header("accept", "application/scim+json");
    let body = match body {
        Some(b) => {
            req = req.header("content-type", "application/scim+json");
            full(b.to_string())
        }
        None => empty(),
    };
    let resp = http1_client()
        .request(req.body(body).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    // scim2-server (wsgiref) answers HTTP/1.0; the version is per hop, so our client still
    // gets HTTP/1.1 (and keeps its connection).
    assert_eq!(resp.version(), http::Version::HTTP_11);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    sent.push(Sent {
        id,
        method,
        path: path.split('?').next().unwrap().to_owned(),
        status,
    });
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread")]
async fn real_scim_server_behind_scimtap_yields_one_event_per_request() {
    let server = ScimServer::start().await;
    let proxy = Proxy::start(ProxyConfig::new(format!(
        "http://127.0.0.1:{}/v2",
        server.port
    )));
    let mut sent = Vec::new();

    let user = send(
        &proxy,
        &mut sent,
        "POST",
        "/Users",
        Some(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "bjensen@example.com",
            "externalId": "00u1",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "active": true
        })),
    )
    .await;
    let user_id = user["id"]
        .as_str()
        .expect("created user has an id")
        .to_owned();
    send(&proxy, &mut sent, "GET", &format!("/Users/{user_id}"), None).await;
    send(
        &proxy,
        &mut sent,
        "GET",
        "/Users?filter=userName%20eq%20%22bjensen%40example.com%22",
        None,
    )
    .await;
    send(
        &proxy,
        &mut sent,
        "PATCH",
        &format!("/Users/{user_id}"),
        Some(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "active", "value": false}]
        })),
    )
    .await;
    let group = send(
        &proxy,
        &mut sent,
        "POST",
        "/Groups",
        Some(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": "Engineering",
            "members": [{"value": user_id}]
        })),
    )
    .await;
    let group_id = group["id"]
        .as_str()
        .expect("created group has an id")
        .to_owned();
    send(
        &proxy,
        &mut sent,
        "DELETE",
        &format!("/Groups/{group_id}"),
        None,
    )
    .await;
    send(
        &proxy,
        &mut sent,
        "DELETE",
        &format!("/Users/{user_id}"),
        None,
    )
    .await;
    send(&proxy, &mut sent, "GET", &format!("/Users/{user_id}"), None).await;
    send(&proxy, &mut sent, "GET", "/ServiceProviderConfig", None).await;

    let statuses: Vec<u16> = sent.iter().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        [201, 200, 200, 204, 201, 204, 204, 404, 200],
        "what the real server answered"
    );

    let events = proxy.wait_for_events(sent.len()).await;
    assert_eq!(events.len(), sent.len(), "exactly one event per request");
    for s in &sent {
        let matching: Vec<&Value> = events
            .iter()
            .filter(|e| e["request_id"] == s.id.as_str())
            .collect();
        assert_eq!(matching.len(), 1, "one event for {}", s.id);
        let e = matching[0];
        assert_eq!(e["http"]["method"], s.method, "{e}");
        assert_eq!(e["http"]["path"], s.path.as_str(), "{e}");
        assert_eq!(e["http"]["status"], s.status, "{e}");
        assert_eq!(
            e["outcome"],
            if s.status < 400 { "success" } else { "failure" }
        );
        assert_eq!(e["client"]["auth_scheme"], "bearer");
        assert!(e["failure"].is_null(), "{e}");
    }
    assert!(!std::fs::read_to_string(&proxy.audit)
        .unwrap()
        .contains("idp-token-1"));
}
