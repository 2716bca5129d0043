//! Accepting client connections: TCP, optional TLS termination (rustls, TLS 1.2+, ALPN h2 and
//! http/1.1, optional client certificates), HTTP/1.1 and HTTP/2 via hyper-util's auto builder,
//! and a graceful drain on shutdown.
//!
//! The accept loop never does per-connection work itself (handshakes run in the connection's
//! task) and never stops on an accept error.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::{ListenConfig, ServerTls};
use crate::exchange::ConnInfo;
use crate::proxy::Proxy;
use crate::stopped;
use crate::telemetry::Metrics;

/// Why TLS termination could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("invalid server certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("invalid client CA: {0}")]
    ClientCa(#[from] rustls::server::VerifierBuilderError),
}

/// Builds the TLS acceptor for `[listen]` TLS settings.
///
/// # Errors
/// [`TlsSetupError`] when the key does not match the certificate or a CA is unusable.
pub fn tls_acceptor(tls: &ServerTls) -> Result<TlsAcceptor, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match &tls.client_ca {
        Some(cas) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in cas {
                roots.add(ca.clone())?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(tls.cert_chain.clone(), tls.key.clone_key())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Everything the accept loop needs.
pub struct Listener {
    pub tcp: TcpListener,
    pub tls: Option<TlsAcceptor>,
    pub proxy: Arc<Proxy>,
    pub config: ListenConfig,
    pub metrics: Arc<Metrics>,
}

impl Listener {
    /// Serves until `shutdown` turns true, then stops accepting and waits up to `drain` for
    /// open connections to finish their in-flight exchanges.
    pub async fn serve(self, mut shutdown: watch::Receiver<bool>, drain: Duration) {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.config.header_read_timeout)
            .keep_alive(true);
        builder.http2().timer(TokioTimer::new());
        let builder = Arc::new(builder);
        let graceful = GracefulShutdown::new();
        // Connection tasks, so the ones still open when the drain times out can be closed.
        let mut connections = tokio::task::JoinSet::new();
        let accepted = self.metrics.connections_accepted.clone();
        let open = self.metrics.connections_open.clone();
        let tls_failures = self.metrics.tls_handshake_failures.clone();

        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        // EMFILE and friends: back off and keep serving.
                        tracing::warn!(%error, "Accept failed.");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stopped(&mut shutdown) => break,
            };
            let _ = stream.set_nodelay(true);
            accepted.inc();
            while connections.try_join_next().is_some() {}
            let proxy = self.proxy.clone();
            let service = move |conn: ConnInfo| {
                service_fn(move |req| {
                    let proxy = proxy.clone();
                    let conn = conn.clone();
                    async move { Ok::<_, Infallible>(proxy.forward(req, conn).await) }
                })
            };
            let builder = builder.clone();
            let watcher = graceful.watcher();
            let open = ConnGauge::new(open.clone());
            match &self.tls {
                None => {
                    connections.spawn(async move {
                        let _open = open;
                        let io = TokioIo::new(stream);
                        let service = service(ConnInfo::new(peer, false));
                        let served =
                            watcher.watch(builder.serve_connection(io, service).into_owned());
                        if let Err(error) = served.await {
                            tracing::debug!(%peer, error = %error, "Connection ended with an error.");
                        }
                    });
                }
                Some(acceptor) => {
                    let acceptor = acceptor.clone();
                    let handshake_timeout = self.config.tls_handshake_timeout;
                    let tls_failures = tls_failures.clone();
                    connections.spawn(async move {
                        let _open = open;
                        let tls =
                            match tokio::time::timeout(handshake_timeout, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(tls)) => tls,
                                Ok(Err(error)) => {
                                    count_tls_failure(&tls_failures, peer, &error.to_string());
                                    return;
                                }
                                Err(_) => {
                                    count_tls_failure(&tls_failures, peer, "handshake timed out");
                                    return;
                                }
                            };
                        let conn = ConnInfo {
                            peer,
                            tls: true,
                            client_cert_subject: client_certificate_subject(tls.get_ref().1),
                        };
                        let io = TokioIo::new(tls);
                        let service = service(conn);
                        let served =
                            watcher.watch(builder.serve_connection(io, service).into_owned());
                        if let Err(error) = served.await {
                            tracing::debug!(%peer, error = %error, "Connection ended with an error.");
                        }
                    });
                }
            }
        }

        drop(self.tcp);
        tracing::info!("Stopped accepting; draining open connections.");
        tokio::select! {
            _ = graceful.shutdown() => tracing::info!("All connections drained."),
            _ = tokio::time::sleep(drain) => {
                tracing::warn!(
                    timeout_secs = drain.as_secs_f64(),
                    open = connections.len(),
                    "Drain timed out; closing the remaining connections."
                );
                // Dropping a connection drops its exchanges' bodies, which reports them, so
                // their events are still written (failure.side = "proxy", kind "shutdown").
                self.proxy.handoff().mark_aborting();
                connections.abort_all();
                while connections.join_next().await.is_some() {}
            }
        }
    }
}

/// The subject of the client's certificate, if it sent one (mTLS), in RFC 4514 form.
fn client_certificate_subject(session: &rustls::ServerConnection) -> Option<std::sync::Arc<str>> {
    use x509_cert::der::Decode;
    let leaf = session.peer_certificates()?.first()?;
    let cert = x509_cert::Certificate::from_der(leaf.as_ref()).ok()?;
    // RFC 4514 lists the most specific RDN first, the reverse of the DER order (as
    // `openssl x509 -subject -nameopt RFC2253` prints it).
    let rdns: Vec<String> = cert
        .tbs_certificate
        .subject
        .0
        .iter()
        .rev()
        .map(ToString::to_string)
        .collect();
    Some(rdns.join(",").into())
}

fn count_tls_failure(counter: &Counter, peer: std::net::SocketAddr, error: &str) {
    counter.inc();
    tracing::info!(%peer, %error, "TLS handshake failed.");
}

/// Keeps `connections_open` right however the connection task ends.
struct ConnGauge(Gauge);

impl ConnGauge {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        ConnGauge(gauge)
    }
}

impl Drop for ConnGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}
