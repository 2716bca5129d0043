//! The alert webhook: each firing and resolution POSTed as JSON (`{"text": ..., "alert":
//! {...}}`, what a Slack incoming webhook takes) to its rule's `webhook_url`.
//!
//! Deliveries run on a thread of their own (one small single-threaded runtime), one after the
//! other, behind a bounded queue: the audit worker only ever `try_send`s, and what does not fit
//! is dropped and counted. A failed attempt (no connection, no answer within
//! [`REQUEST_TIMEOUT`], 408, 429 or 5xx) is tried again after a growing pause, at most
//! [`ATTEMPTS`] times in all; any other status refuses the delivery for good. The URL is never
//! logged: incoming-webhook URLs carry their secret.
//!
//! At shutdown the queue closes with the audit worker, and [`WebhookDrain::wait`] gives the
//! thread up to [`DRAIN`] (within the shutdown deadline) to send what is queued, retries
//! included; what is still queued after that is lost, and logged.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::{mpsc, oneshot};

use crate::config::WebhookUrl;
use crate::telemetry::{Metrics, RuleLabels, RuleResultLabels};

/// Deliveries waiting for the webhook thread.
const QUEUE: usize = 256;
/// Attempts per delivery, the first included.
const ATTEMPTS: u32 = 5;
/// The pause before the second attempt; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One attempt, connecting included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits, at most, for the queued deliveries.
pub const DRAIN: Duration = Duration::from_secs(5);

struct Delivery {
    rule: String,
    url: http::Uri,
    body: Bytes,
}

/// The sending end of the webhook thread's queue. The thread ends when this is dropped and
/// what is queued has been delivered (or given up).
pub struct Webhooks {
    tx: mpsc::Sender<Delivery>,
    metrics: Arc<Metrics>,
    /// Deliveries queued or under way.
    pending: Arc<AtomicUsize>,
    /// Until [`Webhooks::drain`] takes it.
    drain: Option<WebhookDrain>,
}

/// Shutdown's hold on the webhook thread: whether it has finished, and how many deliveries it
/// still has.
pub struct WebhookDrain {
    /// Resolves (sent or dropped) when the thread ends.
    done: oneshot::Receiver<()>,
    pending: Arc<AtomicUsize>,
}

impl WebhookDrain {
    /// Once the queue is closed (the [`Webhooks`] dropped with the audit worker), waits up to
    /// `within` for the thread to send (or give up on) every queued delivery. True when it did;
    /// otherwise what is left is lost, and logged.
    pub async fn wait(self, within: Duration) -> bool {
        let pending = self.pending.load(Ordering::Acquire);
        if pending > 0 {
            tracing::info!(
                deliveries = pending,
                "Sending the queued alert webhooks before exiting."
            );
        }
        if tokio::time::timeout(within, self.done).await.is_ok() {
            return true;
        }
        tracing::warn!(
            deliveries = self.pending.load(Ordering::Acquire),
            waited = ?within,
            "Alert webhook deliveries still queued at shutdown; not sent."
        );
        false
    }
}

impl Webhooks {
    /// Starts the webhook thread.
    ///
    /// # Errors
    /// When the operating system refuses the thread, or TLS cannot be set up.
    pub fn start(metrics: Arc<Metrics>) -> std::io::Result<Webhooks> {
        let tls = crate::tls::client_config(&[]).map_err(std::io::Error::other)?;
        let connector = crate::tls::https_connector(tls, CONNECT_TIMEOUT);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(50))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        let (tx, rx) = mpsc::channel(QUEUE);
        let (done_tx, done) = oneshot::channel();
        let pending = Arc::new(AtomicUsize::new(0));
        let thread_pending = pending.clone();
        let thread_metrics = metrics.clone();
        std::thread::Builder::new()
            .name("alert-webhook".to_owned())
            .spawn(move || {
                // Dropped (shutdown's wait ends) however the thread ends.
                let _done = done_tx;
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        tracing::error!(%error, "Cannot start the alert webhook runtime; alert webhooks are not sent.");
                        return;
                    }
                };
                runtime.block_on(deliver_all(rx, client, thread_metrics, thread_pending));
            })?;
        let drain = Some(WebhookDrain {
            done,
            pending: pending.clone(),
        });
        Ok(Webhooks {
            tx,
            metrics,
            pending,
            drain,
        })
    }

    /// What shutdown waits on (once: later calls give `None`).
    pub fn drain(&mut self) -> Option<WebhookDrain> {
        self.drain.take()
    }

    /// Queues one POST without waiting; a full queue drops it (counted, logged).
    pub fn send(&self, rule: &str, url: &WebhookUrl, body: Vec<u8>) {
        let delivery = Delivery {
            rule: rule.to_owned(),
            url: url.uri.clone(),
            body: Bytes::from(body),
        };
        // Counted before it is queued: the thread may take it at once.
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.tx.try_send(delivery).is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            count(&self.metrics, rule, "dropped");
            tracing::warn!(
                rule,
                reason = "queue_full",
                "Alert webhook queue full; delivery dropped."
            );
        }
    }
}

fn count(metrics: &Metrics, rule: &str, result: &'static str) {
    metrics
        .alert_webhook_deliveries
        .get_or_create(&RuleResultLabels {
            rule: rule.to_owned(),
            result,
        })
        .inc();
}

async fn deliver_all(
    mut rx: mpsc::Receiver<Delivery>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    metrics: Arc<Metrics>,
    pending: Arc<AtomicUsize>,
) {
    while let Some(delivery) = rx.recv().await {
        deliver(&client, &delivery, &metrics).await;
        pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why an attempt failed, and whether another may succeed.
struct Failed {
    detail: String,
    retryable: bool,
}

async fn deliver(
    client: &Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    delivery: &Delivery,
    metrics: &Metrics,
) {
    let rule = delivery.rule.as_str();
    let mut backoff = FIRST_BACKOFF;
    let mut last = None;
    for attempt in 1..=ATTEMPTS {
        if attempt > 1 {
            metrics
                .alert_webhook_retries
                .get_or_create(&RuleLabels {
                    rule: rule.to_owned(),
                })
                .inc();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        match post(client, delivery).await {
            Ok(()) => {
                count(metrics, rule, "sent");
                return;
            }
            Err(failed) if !failed.retryable => {
                count(metrics, rule, "failed");
                tracing::error!(rule, error = %failed.detail, "Alert webhook refused the delivery; not sent again.");
                return;
            }
            Err(failed) => {
                tracing::debug!(rule, attempt, error = %failed.detail, "Alert webhook attempt failed.");
                last = Some(failed.detail);
            }
        }
    }
    count(metrics, rule, "failed");
    tracing::warn!(rule, attempts = ATTEMPTS, error = %last.unwrap_or_default(), "Alert webhook not delivered; given up.");
}

async fn post(
    client: &Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    delivery: &Delivery,
) -> Result<(), Failed> {
    let request = Request::post(delivery.url.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, concat!("scimtap/", env!("CARGO_PKG_VERSION")))
        .body(Full::new(delivery.body.clone()))
        .map_err(|e| Failed {
            detail: format!("cannot build the request: {e}"),
            retryable: false,
        })?;
    let exchange = async {
        let response = client.request(request).await?;
        let status = response.status();
        // Read (and discard) the answer, so the connection can be used again.
        let _ = response.into_body().collect().await;
        Ok::<StatusCode, hyper_util::client::legacy::Error>(status)
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(Ok(status)) if status.is_success() => Ok(()),
        Ok(Ok(status)) => Err(Failed {
            detail: status.to_string(),
            retryable: crate::sinks::http::retryable(status),
        }),
        Ok(Err(error)) => Err(Failed {
            detail: crate::tls::error_chain(&error),
            retryable: true,
        }),
        Err(_) => Err(Failed {
            detail: format!("no answer within {REQUEST_TIMEOUT:?}"),
            retryable: true,
        }),
    }
}
