//! In-process upstreams on 127.0.0.1:0: [`Upstream`] answers with any handler (plain or TLS),
//! and [`scim_service`] is the one fake SCIM service the suites share.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::TestBody;

// === in-process upstreams ===

type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<TestBody>> + Send>>
        + Send
        + Sync,
>;

/// An HTTP/1.1 server on 127.0.0.1:0 (optionally TLS) answering with `handler`.
pub struct Upstream {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start<F, Fut>(handler: F) -> Upstream
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        Self::start_inner(Arc::new(move |req| Box::pin(handler(req))), None).await
    }

    pub async fn start_tls<F, Fut>(handler: F, tls: Arc<rustls::ServerConfig>) -> Upstream
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        Self::start_inner(Arc::new(move |req| Box::pin(handler(req))), Some(tls)).await
    }

    async fn start_inner(handler: Handler, tls: Option<Arc<rustls::ServerConfig>>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handler = handler.clone();
                let count = count.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        count.fetch_add(1, Ordering::SeqCst);
                        let fut = handler(req);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(tls) => {
                            let Ok(stream) =
                                tokio_rustls::TlsAcceptor::from(tls).accept(stream).await
                            else {
                                return;
                            };
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        Upstream {
            addr,
            requests,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The SCIM schema URN of a User.
pub const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

impl Upstream {
    /// The fake SCIM service ([`scim_service`]) on 127.0.0.1:0.
    pub async fn scim() -> Upstream {
        Upstream::start(scim_service).await
    }
}

/// A SCIM service that answers every kind of request plausibly, so the proxy has real SCIM
/// traffic to classify:
///
/// - `POST .../Bulk`: a BulkResponse with one entry per operation (201, 204 or 200, with the
///   `bulkId` echoed);
/// - `POST`: 201 with the request's resource and `id = "id-<userName>"` (`u-new` without a
///   userName);
/// - `PATCH`: 200 with `{"schemas": [User], "id": <last path segment>}`;
/// - `PUT`: 200 with the request's resource; `DELETE`: 204 without a body;
/// - `GET .../Users`: a ListResponse of one user; any other `GET`: the user named by the last
///   path segment.
pub async fn scim_service(req: Request<Incoming>) -> Response<TestBody> {
    use http_body_util::BodyExt;
    use serde_json::{json, Value};

    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let last = path.rsplit('/').next().unwrap_or_default().to_owned();
    let (status, answer) = match method.as_str() {
        "POST" if path.ends_with("/Bulk") => {
            let ops: Vec<Value> = body["Operations"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .enumerate()
                .map(|(i, op)| {
                    let method = op["method"].as_str().unwrap_or("POST").to_uppercase();
                    let status = match method.as_str() {
                        "POST" => "201",
                        "DELETE" => "204",
                        _ => "200",
                    };
                    let mut entry = json!({
                        "method": method,
                        "location": format!("https://scim.example/v2/Users/bulk-{i}"),
                        "status": status,
                    });
                    if let Some(bulk_id) = op.get("bulkId") {
                        entry["bulkId"] = bulk_id.clone();
                    }
                    entry
                })
                .collect();
            let schema = "urn:ietf:params:scim:api:messages:2.0:BulkResponse";
            (200, json!({"schemas": [schema], "Operations": ops}))
        }
        "POST" => {
            let mut resource = if body.is_object() {
                body.clone()
            } else {
                json!({"schemas": [USER]})
            };
            resource["id"] = match body["userName"].as_str() {
                Some(name) => json!(format!("id-{name}")),
                None => json!("u-new"),
            };
            (201, resource)
        }
        "PATCH" => (200, json!({"schemas": [USER], "id": last})),
        "PUT" => (200, body),
        "DELETE" => (204, Value::Null),
        _ if path.ends_with("/Users") => (
            200,
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
                "totalResults": 1,
                "Resources": [{"schemas": [USER], "id": "u-9", "userName": "bob"}],
            }),
        ),
        _ => (
            200,
            json!({"schemas": [USER], "id": last, "userName": "alice"}),
        ),
    };
    let resp = Response::builder().status(status);
    if answer.is_null() {
        resp.body(super::empty()).unwrap()
    } else {
        resp.header("content-type", "application/scim+json")
            .body(super::full(answer.to_string()))
            .unwrap()
    }
}
