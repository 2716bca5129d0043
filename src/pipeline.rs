//! The audit pipeline: hand-off queue → audit worker → one bounded queue per sink.
//!
//! Two queues, deliberately. The hand-off queue protects the proxy: the request path only ever
//! calls [`Handoff::submit`], a `try_send` that never waits; what does not fit is counted by
//! reason. Each sink has its own queue and `when_full` policy:
//! - `drop_newest`: a sink that cannot keep up loses (and counts) its own events; the others
//!   are not affected.
//! - `block` (default): the audit worker waits for room, so one stalled sink holds back every
//!   sink (as backpressure does in Vector) until the hand-off queue fills and further events
//!   are dropped there and counted. Requests are never held back either way.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::event::{events_for, EventContext};
use crate::exchange::{Exchange, FailureSide};
use crate::sinks::SinkHandle;
use crate::telemetry::{Metrics, ProxyMetrics};

/// The request path's end of the hand-off queue. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Handoff {
    shared: Arc<HandoffShared>,
}

struct HandoffShared {
    tx: mpsc::Sender<Exchange>,
    metrics: ProxyMetrics,
}

impl Handoff {
    /// Queues a finished exchange for the audit worker without waiting. Also records the
    /// exchange's request metrics (the one place they are counted, from the same facts the
    /// event reports), so they count even when the event itself is dropped.
    pub fn submit(&self, exchange: Exchange) {
        let m = &self.shared.metrics;
        m.count_status(exchange.response.as_ref().map(|r| r.status.as_u16()));
        m.request_duration.observe(exchange.duration.as_secs_f64());
        if let Some(failure) = exchange.failure() {
            if failure.side == FailureSide::Upstream {
                m.count_upstream_error(failure.kind);
            }
        }
        match self.shared.tx.try_send(exchange) {
            Ok(()) => {
                m.handoff_queue_depth.inc();
            }
            Err(mpsc::error::TrySendError::Full(exchange)) => {
                m.handoff_full.inc();
                tracing::debug!(
                    request_id = %exchange.request_id,
                    "Audit hand-off queue full; event dropped."
                );
            }
            Err(mpsc::error::TrySendError::Closed(exchange)) => {
                m.handoff_closed.inc();
                tracing::warn!(
                    request_id = %exchange.request_id,
                    "Audit pipeline already shut down; event dropped."
                );
            }
        }
    }

    /// A hand-off whose receiving end the caller holds (unit tests of the body tee).
    #[cfg(test)]
    pub(crate) fn channel(capacity: usize) -> (Handoff, mpsc::Receiver<Exchange>) {
        let (tx, rx) = mpsc::channel(capacity);
        let metrics = Metrics::new().proxy_metrics();
        (
            Handoff {
                shared: Arc::new(HandoffShared { tx, metrics }),
            },
            rx,
        )
    }

    pub fn metrics(&self) -> &ProxyMetrics {
        &self.shared.metrics
    }
}

/// The running audit worker.
pub struct Pipeline {
    close: watch::Sender<bool>,
    worker: JoinHandle<()>,
}

impl Pipeline {
    /// Starts the audit worker feeding `sinks`. Returns the hand-off for the proxy.
    pub fn start(
        queue_max_events: usize,
        events: EventContext,
        sinks: Vec<SinkHandle>,
        metrics: &Arc<Metrics>,
    ) -> (Handoff, Pipeline) {
        let (tx, rx) = mpsc::channel(queue_max_events.max(1));
        let proxy_metrics = metrics.proxy_metrics();
        let (close, close_rx) = watch::channel(false);
        let worker = tokio::spawn(run_worker(
            rx,
            close_rx,
            events,
            sinks,
            proxy_metrics.clone(),
            metrics.clone(),
        ));
        let handoff = Handoff {
            shared: Arc::new(HandoffShared {
                tx,
                metrics: proxy_metrics,
            }),
        };
        (handoff, Pipeline { close, worker })
    }

    /// Stops accepting new exchanges, writes out every queued one, and returns once the worker
    /// has handed everything to the sinks (and so dropped its ends of their queues).
    pub async fn close(self) {
        let _ = self.close.send(true);
        if let Err(error) = self.worker.await {
            tracing::error!(%error, "Audit worker failed.");
        }
    }
}

async fn run_worker(
    mut rx: mpsc::Receiver<Exchange>,
    mut close: watch::Receiver<bool>,
    mut events: EventContext,
    sinks: Vec<SinkHandle>,
    proxy_metrics: ProxyMetrics,
    metrics: Arc<Metrics>,
) {
    let mut closing = false;
    loop {
        let exchange = if closing {
            rx.recv().await
        } else {
            tokio::select! {
                biased;
                exchange = rx.recv() => exchange,
                _ = close.changed() => {
                    // Refuse new exchanges; what is queued is still drained below.
                    rx.close();
                    closing = true;
                    continue;
                }
            }
        };
        let Some(exchange) = exchange else { break };
        proxy_metrics.handoff_queue_depth.dec();
        events.learn(&exchange);
        for event in events_for(&exchange, &events) {
            let line = match event.to_json_line() {
                Ok(line) => Bytes::from(line),
                Err(error) => {
                    tracing::error!(%error, request_id = %exchange.request_id, "Cannot encode audit event.");
                    for sink in &sinks {
                        sink.count_encode_error();
                    }
                    continue;
                }
            };
            metrics.events_encoded.inc();
            for sink in &sinks {
                sink.enqueue(line.clone()).await;
            }
        }
    }
    tracing::debug!("Audit worker finished.");
}
