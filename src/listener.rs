//! Accepting client connections: TCP, optional TLS termination (rustls, TLS 1.2+ or 1.3 only,
//! ALPN h2 and http/1.1, optional client certificates), HTTP/1.1 and HTTP/2, the connection
//! limits of `[listen]`, and a graceful drain on shutdown.
//!
//! The accept loop never does per-connection work itself (handshakes run in the connection's
//! task) and never stops on an accept error. Slow or hostile clients are bounded per
//! connection, so they cannot starve others:
//!
//! - at most `max_connections` connections are served at once; more wait in the kernel
//!   backlog until one closes;
//! - the TLS handshake gets `tls_handshake_timeout`; the first bytes (which decide HTTP/1 or
//!   HTTP/2) and every HTTP/1 request head get `header_read_timeout`, and so does an HTTP/1
//!   keep-alive connection between requests or an HTTP/2 connection without an open stream;
//! - a client that stops reading (nothing can be written to it for `body_idle_timeout`) has
//!   its connection cut (`StallGuard`), and an HTTP/2 stream whose flow-control window the
//!   client keeps shut that long is reset (`StreamExecutor`); request bodies that stop
//!   arriving are cut by their tee (see [`crate::tee`]);
//! - HTTP/1 heads are capped in bytes and header count (431); HTTP/2 caps concurrent streams,
//!   header list size (which also ends CONTINUATION floods) and streams reset before they were
//!   served (rapid reset), closing the offending connection with GOAWAY.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::config::{ListenConfig, ServerTls, TlsMinVersion};
use crate::exchange::ConnInfo;
use crate::proxy::{Proxy, ProxyBody};
use crate::stopped;
use crate::telemetry::Metrics;

/// The HTTP/2 connection preface (RFC 9113 §3.4): a cleartext connection that starts with it
/// speaks HTTP/2 with prior knowledge; anything else is HTTP/1.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Streams a client may reset before scimtap has served them before its connection is closed
/// with GOAWAY (HTTP/2 rapid reset, CVE-2023-44487). h2's own default.
const H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;

/// Streams scimtap may reset because the client broke the protocol on them before the
/// connection is closed with GOAWAY ("MadeYouReset", CVE-2025-8671). hyper's default.
const H2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// Why TLS termination could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("invalid server certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("invalid client CA: {0}")]
    ClientCa(#[from] rustls::server::VerifierBuilderError),
}

/// Builds the TLS acceptor for `[listen]` TLS settings, accepting `min_version` and newer.
///
/// # Errors
/// [`TlsSetupError`] when the key does not match the certificate or a CA is unusable.
pub fn tls_acceptor(
    tls: &ServerTls,
    min_version: TlsMinVersion,
) -> Result<TlsAcceptor, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // rustls implements neither TLS 1.0 nor 1.1, so 1.2 is the floor whatever is configured.
    let versions: &[&rustls::SupportedProtocolVersion] = match min_version {
        TlsMinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsMinVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)?;
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
    /// `listen.address`, then `listen.extra_addresses`: a connection's `ConnInfo::listener`
    /// is the index of the one that accepted it.
    pub tcp: Vec<TcpListener>,
    pub tls: Option<TlsAcceptor>,
    pub proxy: Arc<Proxy>,
    pub config: ListenConfig,
    pub metrics: Arc<Metrics>,
}

/// What every connection task shares.
struct Shared {
    proxy: Arc<Proxy>,
    tls: Option<TlsAcceptor>,
    h1: http1::Builder,
    h2: http2::Builder<StreamExecutor>,
    header_read_timeout: Duration,
    tls_handshake_timeout: Duration,
    body_idle_timeout: Duration,
    tls_failures: Counter,
}

impl Listener {
    /// Serves until `shutdown` turns true, then stops accepting and waits up to `drain` for
    /// open connections to finish their in-flight exchanges.
    pub async fn serve(self, mut shutdown: watch::Receiver<bool>, drain: Duration) {
        let config = &self.config;
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .keep_alive(true)
            // The read buffer bounds a head still arriving; max_header_size the parsed head.
            .max_buf_size(config.max_header_bytes)
            .max_header_size(config.max_header_bytes)
            .max_headers(config.max_headers)
            // Forwarded responses carry the upstream's headers only (no added Date).
            .auto_date_header(false);
        let mut h2 = http2::Builder::new(StreamExecutor {
            body_idle_timeout: config.body_idle_timeout,
        });
        h2.timer(TokioTimer::new())
            .auto_date_header(false)
            .max_concurrent_streams(config.http2_max_concurrent_streams)
            .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESET_STREAMS)
            .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESET_STREAMS)
            .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX));
        let shared = Arc::new(Shared {
            proxy: self.proxy.clone(),
            tls: self.tls.clone(),
            h1,
            h2,
            header_read_timeout: config.header_read_timeout,
            tls_handshake_timeout: config.tls_handshake_timeout,
            body_idle_timeout: config.body_idle_timeout,
            tls_failures: self.metrics.tls_handshake_failures.clone(),
        });
        let permits = Arc::new(Semaphore::new(config.max_connections));
        // Connection tasks, so the ones still open when the drain times out can be closed.
        let mut connections = tokio::task::JoinSet::new();
        let accepted = self.metrics.connections_accepted.clone();
        let open = self.metrics.connections_open.clone();
        let mut at_limit = false;
        let mut turn = 0;

        loop {
            // Take a connection slot before accepting: at the limit, new connections wait in
            // the kernel backlog, unserved, until a slot frees.
            let permit = match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    at_limit = false;
                    permit
                }
                Err(_) => {
                    if !at_limit {
                        at_limit = true;
                        tracing::warn!(
                            max_connections = config.max_connections,
                            "Connection limit reached; new connections wait until one closes."
                        );
                    }
                    tokio::select! {
                        permit = permits.clone().acquire_owned() => match permit {
                            Ok(permit) => permit,
                            Err(_) => break,
                        },
                        _ = stopped(&mut shutdown) => break,
                    }
                }
            };
            let (stream, peer, listener) = tokio::select! {
                accepted = accept_any(&self.tcp, &mut turn) => match accepted {
                    Ok(accepted) => accepted,
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
            let open = ConnGauge::new(open.clone());
            let shared = shared.clone();
            let shutdown = shutdown.clone();
            connections.spawn(async move {
                let _slot = permit;
                let _open = open;
                connection(shared, stream, peer, listener, shutdown).await;
            });
        }

        drop(self.tcp);
        tracing::info!("Stopped accepting; draining open connections.");
        // Every connection task saw the shutdown signal: HTTP/1 connections close after their
        // current response, HTTP/2 connections send GOAWAY and finish their open streams.
        let drained = tokio::time::timeout(drain, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        match drained {
            Ok(()) => tracing::info!("All connections drained."),
            Err(_) => {
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

/// One client connection: TLS, protocol detection, then HTTP until it closes.
/// The next connection any of `listeners` accepts, with the index of the one that did. The
/// listener looked at first turns with each call (`turn`), so a busy one cannot starve the
/// others.
async fn accept_any(
    listeners: &[TcpListener],
    turn: &mut usize,
) -> std::io::Result<(TcpStream, std::net::SocketAddr, usize)> {
    let count = listeners.len().max(1);
    *turn = (*turn + 1) % count;
    let first = *turn;
    std::future::poll_fn(|cx| {
        for offset in 0..count {
            let index = (first + offset) % count;
            let Some(listener) = listeners.get(index) else {
                continue;
            };
            if let std::task::Poll::Ready(accepted) = listener.poll_accept(cx) {
                return std::task::Poll::Ready(accepted.map(|(s, peer)| (s, peer, index)));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

async fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    listener: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let write_stalled = Arc::new(AtomicBool::new(false));
    let io = StallGuard::new(
        stream,
        shared.body_idle_timeout,
        write_stalled.clone(),
        peer,
    );
    let Some(acceptor) = shared.tls.clone() else {
        let conn = ConnInfo {
            peer,
            listener,
            tls: false,
            client_cert_subject: None,
            write_stalled,
            stream_stalled: None,
        };
        return serve_http(&shared, io, conn, shutdown).await;
    };
    let handshake = tokio::select! {
        handshake = tokio::time::timeout(shared.tls_handshake_timeout, acceptor.accept(io)) => handshake,
        _ = stopped(&mut shutdown) => return,
    };
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            count_tls_failure(&shared.tls_failures, peer, &error.to_string());
            return;
        }
        Err(_) => {
            count_tls_failure(&shared.tls_failures, peer, "handshake timed out");
            return;
        }
    };
    let conn = ConnInfo {
        peer,
        listener,
        tls: true,
        client_cert_subject: client_certificate_subject(tls.get_ref().1),
        write_stalled,
        stream_stalled: None,
    };
    serve_http(&shared, tls, conn, shutdown).await;
}

/// Reads the first bytes (bounded by `header_read_timeout`) to tell HTTP/2 from HTTP/1, then
/// serves the connection with the matching builder until it ends.
async fn serve_http<I>(
    shared: &Shared,
    mut io: I,
    conn: ConnInfo,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let sniffed = tokio::select! {
        sniffed = tokio::time::timeout(shared.header_read_timeout, sniff(&mut io)) => sniffed,
        _ = stopped(&mut shutdown) => return,
    };
    let (is_h2, prefix) = match sniffed {
        Ok(Ok(Some(found))) => found,
        // Closed before sending anything (a port probe, a health check).
        Ok(Ok(None)) => return,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "Connection failed before its first request.");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "No request within header_read_timeout_secs; connection closed.");
            return;
        }
    };
    let io = TokioIo::new(Prefixed { prefix, inner: io });
    let proxy = shared.proxy.clone();
    if is_h2 {
        let active = ActiveStreams::default();
        let service = exchange_service(proxy, conn, Some(active.clone()));
        let served = shared.h2.serve_connection(io, service);
        let idle = (active, shared.header_read_timeout);
        drive(served, shutdown, Some(idle), peer).await;
    } else {
        // hyper closes idle HTTP/1 keep-alive connections itself (header_read_timeout runs
        // while it waits for the next head).
        let service = exchange_service(proxy, conn, None);
        let served = shared.h1.serve_connection(io, service);
        drive(served, shutdown, None, peer).await;
    }
}

/// The per-connection service: every request goes to the proxy. On HTTP/2, each exchange
/// counts as an open stream until its response body is done.
fn exchange_service(
    proxy: Arc<Proxy>,
    conn: ConnInfo,
    active: Option<ActiveStreams>,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<ConnBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<http::Response<ConnBody>, Infallible>> + Send,
> + Clone {
    service_fn(move |req| {
        let proxy = proxy.clone();
        let mut conn = conn.clone();
        let open = active.as_ref().map(ActiveStreams::enter);
        async move {
            // On HTTP/2 hyper polls this future in the stream's own task, which carries its
            // watch (the closure around it runs in the connection's task).
            let watch = STREAM_WATCH.try_with(Arc::clone).ok();
            if let Some(watch) = &watch {
                conn.stream_stalled = Some(watch.stalled.clone());
            }
            let response = proxy.forward(req, conn).await;
            Ok::<_, Infallible>(response.map(|inner| ConnBody {
                inner,
                _open: open,
                watch,
            }))
        }
    })
}

/// Runs a connection to its end, asking it to finish gracefully on shutdown or, when `idle`
/// is given, once it has had no open stream for the idle time.
async fn drive<C>(
    conn: C,
    mut shutdown: watch::Receiver<bool>,
    idle: Option<(ActiveStreams, Duration)>,
    peer: std::net::SocketAddr,
) where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    let mut conn = pin!(conn);
    let mut idle_close = pin!(async move {
        match idle {
            Some((active, after)) => {
                active.idle_for(after).await;
                after
            }
            None => std::future::pending().await,
        }
    });
    let mut closing = false;
    // An idle connection asked to close gets as long again to do so; a client that ignores
    // GOAWAY (and the PING that comes with it) is then dropped.
    let mut idle_deadline: Option<tokio::time::Instant> = None;
    loop {
        let hard_stop = async {
            match idle_deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(error) = served {
                    tracing::debug!(%peer, %error, "Connection ended with an error.");
                }
                return;
            }
            _ = stopped(&mut shutdown), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            after = idle_close.as_mut(), if !closing => {
                tracing::debug!(%peer, "HTTP/2 connection idle for header_read_timeout_secs; closing.");
                closing = true;
                idle_deadline = Some(tokio::time::Instant::now() + after);
                conn.as_mut().graceful_shutdown();
            }
            _ = hard_stop => {
                tracing::debug!(%peer, "Idle HTTP/2 connection did not close; dropped.");
                return;
            }
        }
    }
}

/// Reads until the bytes read either are the HTTP/2 preface or cannot be: `Some((is_h2,
/// bytes read))`, or `None` when the client closed before sending anything.
async fn sniff<I: AsyncRead + Unpin>(io: &mut I) -> io::Result<Option<(bool, Bytes)>> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut filled = 0;
    loop {
        let n = io.read(&mut buf[filled..]).await?;
        if n == 0 {
            // An incomplete start goes to HTTP/1, which answers or closes as it sees fit.
            return Ok((filled > 0).then(|| (false, Bytes::copy_from_slice(&buf[..filled]))));
        }
        filled += n;
        if buf[..filled] != H2_PREFACE[..filled] {
            return Ok(Some((false, Bytes::copy_from_slice(&buf[..filled]))));
        }
        if filled == H2_PREFACE.len() {
            return Ok(Some((true, Bytes::copy_from_slice(&buf))));
        }
    }
}

/// Open HTTP/2 exchanges on one connection.
#[derive(Clone, Default)]
struct ActiveStreams(Arc<watch::Sender<usize>>);

impl ActiveStreams {
    fn enter(&self) -> OpenStream {
        self.0.send_modify(|n| *n += 1);
        OpenStream(self.clone())
    }

    /// Resolves once no exchange has been open for `after`.
    async fn idle_for(&self, after: Duration) {
        let mut rx = self.0.subscribe();
        loop {
            if rx.wait_for(|n| *n == 0).await.is_err() {
                return std::future::pending().await;
            }
            // `map` drops the (non-Send) borrow before anything else is awaited.
            let busy = tokio::select! {
                _ = tokio::time::sleep(after) => return,
                busy = rx.wait_for(|n| *n > 0) => busy.map(|_| ()),
            };
            if busy.is_err() {
                return std::future::pending().await;
            }
        }
    }
}

/// One open exchange; closes when dropped (response body done, or the stream went away).
struct OpenStream(ActiveStreams);

impl Drop for OpenStream {
    fn drop(&mut self) {
        (self.0).0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// The response body as served: the proxy's body plus the open-stream mark it holds, and on
/// HTTP/2 its stream's watch.
pub struct ConnBody {
    inner: ProxyBody,
    _open: Option<OpenStream>,
    watch: Option<Arc<StreamWatch>>,
}

impl Body for ConnBody {
    type Data = Bytes;
    type Error = <ProxyBody as Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some(watch) = &this.watch {
            // A frame handed over: hyper polls again once the client's window lets it send
            // it. Anything else: it is the upstream (or nobody) that is awaited.
            watch.handed_over(matches!(&polled, Poll::Ready(Some(Ok(_)))));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

tokio::task_local! {
    /// The watch of the HTTP/2 stream whose task is running (see [`StreamExecutor`]).
    static STREAM_WATCH: Arc<StreamWatch>;
}

/// Runs hyper's HTTP/2 stream tasks, each with a [`StreamWatch`]: a client that lets a
/// stream's flow-control window stay shut while a response frame waits has the stream reset
/// after `body_idle_timeout` (the socket stays writable, so [`StallGuard`] cannot see it).
/// Dropping the stream's task makes h2 reset it (`RST_STREAM`, CANCEL); the connection and its
/// other streams go on.
#[derive(Clone)]
struct StreamExecutor {
    body_idle_timeout: Duration,
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, stream: F) {
        let watch = Arc::new(StreamWatch::default());
        let timeout = self.body_idle_timeout;
        tokio::spawn(STREAM_WATCH.scope(watch.clone(), async move {
            tokio::select! {
                _ = stream => {}
                () = watch.until_stalled(timeout) => {
                    tracing::debug!("HTTP/2 client kept its window shut; stream reset after body_idle_timeout_secs.");
                }
            }
        }));
    }
}

/// Whether an HTTP/2 stream's response waits on the client's flow-control window, and since
/// when (milliseconds since `created`, plus one; 0: it does not).
#[derive(Debug)]
struct StreamWatch {
    created: std::time::Instant,
    waiting_since: std::sync::atomic::AtomicU64,
    /// Shared with the exchange (`ConnInfo::stream_stalled`), so its event says why.
    stalled: Arc<AtomicBool>,
}

impl Default for StreamWatch {
    fn default() -> Self {
        StreamWatch {
            created: std::time::Instant::now(),
            waiting_since: std::sync::atomic::AtomicU64::new(0),
            stalled: Arc::default(),
        }
    }
}

impl StreamWatch {
    fn handed_over(&self, frame: bool) {
        let now = if frame {
            u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
        } else {
            0
        };
        self.waiting_since.store(now, Ordering::Relaxed);
    }

    /// Resolves once a frame has waited for the client's window for `timeout`.
    async fn until_stalled(&self, timeout: Duration) {
        let check = (timeout / 4).max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(check).await;
            let since = self.waiting_since.load(Ordering::Relaxed);
            if since == 0 {
                continue;
            }
            let waited = self
                .created
                .elapsed()
                .saturating_sub(Duration::from_millis(since - 1));
            if waited >= timeout {
                self.stalled.store(true, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// The client's socket, cut when the client stops reading: once a write has made no progress
/// for `timeout`, writing fails with `TimedOut`, hyper closes the connection, and the flag
/// tells the exchanges on it why (`client_read_timeout`). Reads pass through untouched.
struct StallGuard<T> {
    inner: T,
    timeout: Duration,
    /// Re-armed when a write first blocks, so moving bytes cost no timer work.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
    stalled: Arc<AtomicBool>,
    peer: std::net::SocketAddr,
}

impl<T> StallGuard<T> {
    fn new(
        inner: T,
        timeout: Duration,
        stalled: Arc<AtomicBool>,
        peer: std::net::SocketAddr,
    ) -> Self {
        StallGuard {
            inner,
            timeout,
            sleep: None,
            armed: false,
            stalled,
            peer,
        }
    }

    fn on_progress<R>(
        &mut self,
        result: Poll<io::Result<R>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<R>> {
        if result.is_ready() {
            self.armed = false;
            return result;
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            sleep.as_mut().reset(deadline);
            self.armed = true;
        }
        if sleep.as_mut().poll(cx).is_ready() {
            self.stalled.store(true, Ordering::Relaxed);
            tracing::debug!(peer = %self.peer, "Client stopped reading; connection cut after body_idle_timeout_secs.");
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            )));
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallGuard<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallGuard<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.on_progress(result, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.on_progress(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.on_progress(result, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A stream whose first bytes were already read (protocol detection): they are read again
/// first.
struct Prefixed<T> {
    prefix: Bytes,
    inner: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn the_h2_preface_is_recognised_and_replayed() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(H2_PREFACE).await.unwrap();
        let (h2, prefix) = sniff(&mut server).await.unwrap().unwrap();
        assert!(h2);
        assert_eq!(&prefix[..], H2_PREFACE);

        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let (h2, prefix) = sniff(&mut server).await.unwrap().unwrap();
        assert!(!h2);
        assert_eq!(&prefix[..], b"GET / HTTP/1.1\r\n");
        let mut replay = Prefixed {
            prefix,
            inner: server,
        };
        client.write_all(b"Host: x\r\n").await.unwrap();
        drop(client);
        let mut all = Vec::new();
        replay.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"GET / HTTP/1.1\r\nHost: x\r\n");
    }

    #[tokio::test]
    async fn a_closed_connection_sniffs_as_nothing() {
        let (client, mut server) = tokio::io::duplex(64);
        drop(client);
        assert!(sniff(&mut server).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_write_blocked_longer_than_the_timeout_fails_and_flags_the_connection() {
        use tokio::io::AsyncWriteExt;
        // A 16-byte pipe nobody reads.
        let (_reader, writer) = tokio::io::duplex(16);
        let stalled = Arc::new(AtomicBool::new(false));
        let mut guard = StallGuard::new(
            writer,
            Duration::from_millis(50),
            stalled.clone(),
            "127.0.0.1:1".parse().unwrap(),
        );
        let error = tokio::time::timeout(Duration::from_secs(5), guard.write_all(&[0u8; 64]))
            .await
            .expect("cut well before 5 s")
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(stalled.load(Ordering::Relaxed));
    }
}
