//! The audit pipeline: hand-off queue → audit worker → one bounded queue per sink.
//!
//! Two queues, deliberately. The hand-off queue protects the proxy: the request path only ever
//! calls [`AuditQueue`]'s [`Auditor::submit`], a `try_send` that never waits; what does not fit is counted by
//! reason. Each sink has its own queue and `when_full` policy:
//! - `drop_newest`: a sink that cannot keep up loses (and counts) its own events; the others
//!   are not affected.
//! - `block` (default): the audit worker waits for room, at most the sink's
//!   `block_timeout_ms`; a sink still full then is stalled and drops its own overflow (counted)
//!   until it has room again, so one stuck sink holds back the others once, briefly, not for
//!   as long as it is stuck. Requests are never held back either way.
//!
//! The audit worker is a dedicated thread, not a task on the async runtime: parsing and
//! classifying bodies is CPU work, and on a small machine it must not take turns with the
//! tasks that forward bytes. Under load it works in batches: once the queue is empty it
//! lingers `HANDOFF_LINGER` before it listens to the queue again, so the request path does
//! not wake it (a futex call and a context switch) for every exchange. Whatever a request
//! waits on (a write-ahead intent) unparks it at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::alerts::Alerts;
use crate::clock::Timestamp;
use crate::config::EventFormat;
use crate::event::{events_for, AuditEvent, EventContext, Outcome};
use crate::exchange::{Auditor, Exchange, FailureSide};
use crate::integrity::{Chain, RecordKind};
use crate::sinks::{DurableAck, Record, RecordMeta, Severity, SinkHandle};
use crate::state::tracker;
use crate::telemetry::{Metrics, ProxyMetrics};

mod routes;
mod state;

pub use self::routes::{RouteStage, RouteStages};
pub use self::state::StateStage;
use self::state::{batch, drain, due_gaps, hold, remember, Ahead, StateBatch, STATE_BATCH};

/// How long the audit worker, having emptied the queue, lets exchanges gather before it asks
/// to be woken by the next one. Events are written this much later at most; requests never
/// wait for it.
const HANDOFF_LINGER: Duration = Duration::from_millis(2);

/// What travels through the hand-off queue: an exchange, or the marker that closes it.
enum Message {
    Exchange(Box<Exchange>),
    /// Write-ahead: record what this SCIM write is about to do, durably, before it is
    /// forwarded; `ack` fires once a sink has it on stable storage.
    Intent(Box<Exchange>, Arc<DurableAck>),
    /// Time for an `integrity.checkpoint` record.
    Checkpoint,
    /// Time to look for deprovisionings that became gaps (`[state]` on) and to let alert
    /// episodes resolve (`[[alerts]]`).
    Tick,
    /// A reloaded configuration's routes and event settings (SIGHUP), and what changed.
    Reconfigure(Box<RouteStages>, Box<SettingsChange>),
    Close,
}

/// The audit side of the hand-off: the queue's sending end, as the request path's
/// [`Auditor`]. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct AuditQueue {
    shared: Arc<QueueShared>,
}

struct QueueShared {
    tx: mpsc::Sender<Message>,
    metrics: ProxyMetrics,
    /// Set once shutdown closes the pipeline: later exchanges are counted, not queued.
    closed: AtomicBool,
    /// One flag per sink, set while its queue or buffer is full.
    sinks_saturated: Vec<Arc<AtomicBool>>,
    /// The audit worker's thread, unparked for messages that must not wait out its linger.
    worker: OnceLock<std::thread::Thread>,
}

impl Auditor for AuditQueue {
    /// Queues a finished exchange for the audit worker without waiting. Also records the
    /// exchange's request metrics (the one place they are counted, from the same facts the
    /// event reports), so they count even when the event itself is dropped.
    fn submit(&self, exchange: Exchange) {
        let m = &self.shared.metrics;
        m.count_status(
            exchange.response.as_ref().map(|r| r.status.as_u16()),
            exchange.route.as_ref().map(|r| &r.requests),
        );
        m.request_duration.observe(exchange.duration.as_secs_f64());
        if let Some(failure) = exchange.failure() {
            if failure.side == FailureSide::Upstream {
                m.count_upstream_error(failure.kind.as_str());
            }
        }
        if self.shared.closed.load(Ordering::Acquire) {
            m.handoff_closed.inc();
            tracing::warn!(
                request_id = %exchange.request_id,
                "Audit pipeline already shut down; event dropped."
            );
            return;
        }
        match self
            .shared
            .tx
            .try_send(Message::Exchange(Box::new(exchange)))
        {
            Ok(()) => {
                m.handoff_queue_depth.inc();
            }
            Err(mpsc::error::TrySendError::Full(Message::Exchange(exchange))) => {
                m.handoff_full.inc();
                tracing::debug!(
                    request_id = %exchange.request_id,
                    "Audit hand-off queue full; event dropped."
                );
            }
            Err(mpsc::error::TrySendError::Closed(Message::Exchange(exchange))) => {
                m.handoff_closed.inc();
                tracing::warn!(
                    request_id = %exchange.request_id,
                    "Audit pipeline already shut down; event dropped."
                );
            }
            Err(_) => {}
        }
    }

    /// True when the hand-off queue has room and no sink's queue or buffer is full.
    fn can_accept(&self) -> bool {
        let shared = &self.shared;
        !shared.closed.load(Ordering::Acquire)
            && shared.tx.capacity() > 0
            && !shared
                .sinks_saturated
                .iter()
                .any(|s| s.load(Ordering::Relaxed))
    }

    fn submit_intent(&self, snapshot: Exchange) -> Option<oneshot::Receiver<()>> {
        if self.shared.closed.load(Ordering::Acquire) {
            return None;
        }
        let (ack, durable) = DurableAck::new();
        let queued = self
            .shared
            .tx
            .try_send(Message::Intent(Box::new(snapshot), ack))
            .is_ok();
        self.shared.wake_worker();
        queued.then_some(durable)
    }
}

impl AuditQueue {
    /// Asks the audit worker for an `integrity.checkpoint` record (skipped when the queue is
    /// full: the events in it prove the chain is alive anyway).
    pub fn checkpoint(&self) {
        let _ = self.shared.tx.try_send(Message::Checkpoint);
    }

    /// Asks the audit worker to report the deprovisioning gaps now due and to look at the
    /// alert episodes (skipped when the queue is full: the next tick asks again).
    pub fn tick(&self) {
        let _ = self.shared.tx.try_send(Message::Tick);
    }
}

impl QueueShared {
    /// Ends the audit worker's linger now.
    fn wake_worker(&self) {
        if let Some(thread) = self.worker.get() {
            thread.unpark();
        }
    }
}

/// The running audit worker.
pub struct Pipeline {
    queue: AuditQueue,
    done: oneshot::Receiver<()>,
}

impl Pipeline {
    /// Starts the audit worker thread feeding `sinks`. Returns the queue the request path
    /// hands exchanges to. `state` (`[state]` on) and `alerts` (`[[alerts]]`) move to the
    /// worker thread, which alone touches them.
    ///
    /// # Errors
    /// When the operating system refuses a new thread.
    pub fn start(
        queue_max_events: usize,
        routes: RouteStages,
        sinks: Vec<SinkHandle>,
        integrity: ChainSetup,
        state: Option<StateStage>,
        alerts: Option<Alerts>,
        metrics: &Arc<Metrics>,
    ) -> std::io::Result<(AuditQueue, Pipeline)> {
        let (tx, rx) = mpsc::channel(queue_max_events.max(1));
        let proxy_metrics = metrics.proxy_metrics();
        let saturated = sinks.iter().map(SinkHandle::saturation).collect();
        let queue = AuditQueue {
            shared: Arc::new(QueueShared {
                tx,
                metrics: proxy_metrics.clone(),
                closed: AtomicBool::new(false),
                sinks_saturated: saturated,
                worker: OnceLock::new(),
            }),
        };
        let (done_tx, done) = oneshot::channel();
        let metrics = metrics.clone();
        let worker = std::thread::Builder::new()
            .name("audit-worker".to_owned())
            .spawn(move || {
                run_worker(
                    rx,
                    routes,
                    sinks,
                    integrity,
                    Stages { state, alerts },
                    &proxy_metrics,
                    &metrics,
                );
                let _ = done_tx.send(());
            })?;
        let _ = queue.shared.worker.set(worker.thread().clone());
        Ok((queue.clone(), Pipeline { queue, done }))
    }

    /// Hands new routes and event settings (clients, redaction, privacy, SCIM paths) to the
    /// audit worker; exchanges queued before it are described with the old ones. The worker writes an
    /// `integrity.reload` record with `change.details` into the trail where it swaps them, and
    /// logs which settings changed. Waits (bounded) for room.
    pub async fn reconfigure(&self, routes: RouteStages, change: SettingsChange) -> bool {
        let send = self
            .queue
            .shared
            .tx
            .send(Message::Reconfigure(Box::new(routes), Box::new(change)));
        let sent = matches!(
            tokio::time::timeout(Duration::from_secs(5), send).await,
            Ok(Ok(()))
        );
        self.queue.shared.wake_worker();
        sent
    }

    /// Stops accepting new exchanges, writes out every queued one, and returns once the worker
    /// has handed everything to the sinks (and so dropped its ends of their queues).
    pub async fn close(self) {
        let shared = &self.queue.shared;
        shared.closed.store(true, Ordering::Release);
        // Waits for room behind what is queued; the caller bounds this with its deadline.
        let _ = shared.tx.send(Message::Close).await;
        shared.wake_worker();
        if self.done.await.is_err() {
            tracing::error!("Audit worker ended without finishing its queue.");
        }
    }
}

/// What a reload changed, for the `integrity.reload` record and the log.
#[derive(Debug, Clone, Default)]
pub struct SettingsChange {
    /// The event settings that differ, by their configuration name (`capture.include_bodies`).
    pub changed: Vec<&'static str>,
    /// The record's `details`: setting names and key file paths, never a key or a token hash.
    pub details: serde_json::Value,
}

/// The hash chain the audit worker seals native lines into, and how it began.
pub struct ChainSetup {
    pub chain: Chain,
    /// `details` of the `integrity.start` record (genesis, or how the last run ended).
    pub start: serde_json::Value,
    pub state_file: Option<std::path::PathBuf>,
    /// The live view's feed (`[ui]` on): every sealed native event line is offered to it as
    /// well, without waiting (see [`EventTap`]).
    pub tap: Option<EventTap>,
}

/// Where the audit worker offers each sealed native event line besides the sinks: the live
/// view's feed. A broadcast send never blocks the worker: a reader that falls behind loses
/// the oldest lines and learns how many (`scimtap_ui_feed_dropped_events_total` counts
/// them), and with no reader the line is simply not kept. Integrity records and intents are
/// not offered: the view shows events.
pub type EventTap = tokio::sync::broadcast::Sender<Bytes>;

/// What sinks need to know about an event besides its encoded line.
fn record_meta(event: &AuditEvent<'_>) -> Arc<RecordMeta> {
    Arc::new(RecordMeta {
        ack: None,
        event_id: event.event_id.clone(),
        key: event
            .scim
            .target
            .id
            .clone()
            .unwrap_or_else(|| event.request_id.to_owned()),
        time_millis: event.timestamp.unix_millis(),
        severity: crate::formats::severity(event),
    })
}

/// One record per line of an encoded event. The lines of an event that gives several each get
/// their own id ([`crate::formats::record_id`], which OCSF also writes as `metadata.uid`), so a
/// sink that keys on it (Elasticsearch `_id`) keeps them all.
fn records_of(lines: Vec<Vec<u8>>, meta: &Arc<RecordMeta>) -> Vec<Record> {
    let count = lines.len();
    lines
        .into_iter()
        .enumerate()
        .map(|(index, line)| Record {
            line: Bytes::from(line),
            meta: if count == 1 {
                meta.clone()
            } else {
                Arc::new(RecordMeta {
                    ack: None,
                    event_id: crate::formats::record_id(&meta.event_id, index, count),
                    key: meta.key.clone(),
                    time_millis: meta.time_millis,
                    severity: meta.severity,
                })
            },
        })
        .collect()
}

/// Sends an integrity record to the trail sinks (native-format file and stdout: the chain is
/// verified there); network sinks get events only.
fn emit_record(
    sinks: &[SinkHandle],
    integrity: &mut ChainSetup,
    kind: RecordKind,
    details: serde_json::Value,
) {
    let (event_id, line) = integrity.chain.record(kind, details);
    let meta = Arc::new(RecordMeta {
        ack: None,
        event_id,
        key: integrity.chain.instance().to_owned(),
        time_millis: Timestamp::now().unix_millis(),
        severity: Severity::Info,
    });
    let line = Bytes::from(line);
    for sink in sinks.iter().filter(|s| s.is_trail()) {
        sink.enqueue_blocking(Record {
            line: line.clone(),
            meta: meta.clone(),
        });
    }
    if let Some(path) = &integrity.state_file {
        let head = integrity.chain.head(kind == RecordKind::Stop);
        if let Err(error) = crate::integrity::write_state(path, &head) {
            tracing::error!(%error, path = %path.display(), "Cannot save the integrity chain's head.");
        }
    }
}

/// Writes the `audit.intent` record of a SCIM write to the native sinks, carrying `ack`.
/// Built from the same classification as the event that follows the exchange.
fn emit_intent(
    sinks: &[SinkHandle],
    integrity: &mut ChainSetup,
    events: &EventContext,
    snapshot: &Exchange,
    ack: Arc<DurableAck>,
) {
    let built = events_for(snapshot, events);
    let Some(first) = built.first() else {
        return;
    };
    let value = |e: &AuditEvent<'_>| serde_json::to_value(e).unwrap_or_default();
    let head = value(first);
    let event_id = crate::clock::new_uuid_v7().to_string();
    let record = serde_json::json!({
        "schema_version": crate::event::SCHEMA_VERSION,
        "record": "audit.intent",
        "event_id": event_id,
        "timestamp": first.timestamp,
        "request_id": first.request_id,
        "client": head["client"],
        "http": {
            "method": head["http"]["method"],
            "path": head["http"]["path"],
            "query": head["http"]["query"],
        },
        "operations": built.iter().map(|e| value(e)["scim"].clone()).collect::<Vec<_>>(),
    });
    let mut line = serde_json::to_vec(&record).unwrap_or_default();
    line.push(b'\n');
    let line = Bytes::from(integrity.chain.seal(line));
    let meta = Arc::new(RecordMeta {
        ack: Some(ack),
        event_id,
        key: first.request_id.to_owned(),
        time_millis: first.timestamp.unix_millis(),
        severity: Severity::Info,
    });
    // Trail sinks keep the chain whole; durable ones make the record safe (one is enough).
    for sink in sinks.iter().filter(|s| s.is_trail() || s.is_durable()) {
        sink.enqueue_blocking(Record {
            line: line.clone(),
            meta: meta.clone(),
        });
    }
}

/// The next message: at once when one is queued; after [`HANDOFF_LINGER`] when the queue just
/// ran empty (`busy`); otherwise the worker sleeps until the next message wakes it.
fn next_message(rx: &mut mpsc::Receiver<Message>, busy: &mut bool) -> Option<Message> {
    loop {
        match rx.try_recv() {
            Ok(message) => {
                *busy = true;
                return Some(message);
            }
            Err(mpsc::error::TryRecvError::Disconnected) => return None,
            Err(mpsc::error::TryRecvError::Empty) if *busy => {
                *busy = false;
                std::thread::park_timeout(HANDOFF_LINGER);
            }
            Err(mpsc::error::TryRecvError::Empty) => {
                *busy = true;
                return rx.blocking_recv();
            }
        }
    }
}

/// Writes a tracker notice as its event, and counts it; returns the alerts it raised.
fn emit_notice(
    notice: &tracker::Notice,
    route: &RouteStage,
    sinks: &[SinkHandle],
    integrity: &mut ChainSetup,
    alerts: Option<&mut Alerts>,
    metrics: &Metrics,
    since_checkpoint: &mut u64,
) -> Vec<crate::alerts::Alert> {
    if notice.info.status == crate::scim::DeprovisionStatus::Gap {
        metrics.deprovision_gaps.inc();
        tracing::warn!(id = ?notice.target.id, requested_event_id = %notice.info.requested_event_id, "Deprovisioning still unconfirmed: deprovision.gap.");
    } else {
        metrics.deprovision_closed.inc();
    }
    let mut event = notice.event();
    event.route = route.name.clone();
    event.upstream = route.events.upstream.clone();
    emit_event(&event, route, sinks, integrity, metrics, since_checkpoint);
    alerts.map_or_else(Vec::new, |a| a.observe(&event, Timestamp::now()))
}

/// Writes the `alert.firing` / `alert.resolved` events of `raised`, each as an event of the
/// route it watched.
fn emit_alerts(
    raised: &[crate::alerts::Alert],
    routes: &RouteStages,
    sinks: &[SinkHandle],
    integrity: &mut ChainSetup,
    metrics: &Metrics,
    since_checkpoint: &mut u64,
) {
    for alert in raised {
        let route = routes.get(alert.route.as_deref());
        let mut event = alert.event();
        event.upstream = route.events.upstream.clone();
        emit_event(&event, route, sinks, integrity, metrics, since_checkpoint);
    }
}

/// What the audit worker owns besides its queue, sinks and chain: the shadow state
/// (`[state]`) and the alert rules (`[[alerts]]`).
struct Stages {
    state: Option<StateStage>,
    alerts: Option<Alerts>,
}

fn run_worker(
    mut rx: mpsc::Receiver<Message>,
    mut routes: RouteStages,
    sinks: Vec<SinkHandle>,
    mut integrity: ChainSetup,
    stages: Stages,
    proxy_metrics: &ProxyMetrics,
    metrics: &Metrics,
) {
    let Stages {
        mut state,
        mut alerts,
    } = stages;
    routes.resolve(&sinks);
    let start = std::mem::take(&mut integrity.start);
    emit_record(&sinks, &mut integrity, RecordKind::Start, start);
    let mut since_checkpoint: u64 = 0;
    let mut busy = false;
    let mut ahead = Ahead::default();
    loop {
        let (message, ticket) = match ahead.queue.pop_front() {
            Some(held) => held,
            None => match (next_message(&mut rx, &mut busy), state.as_mut()) {
                (Some(message), Some(s)) if s.store.is_shared() => {
                    ahead.claim(&mut s.store, message, metrics, &routes)
                }
                (Some(message), _) => (message, None),
                (None, _) => break,
            },
        };
        let exchange = match message {
            Message::Exchange(exchange) => exchange,
            Message::Reconfigure(new_routes, change) => {
                routes = *new_routes;
                routes.resolve(&sinks);
                if let Some(alerts) = alerts.as_mut() {
                    alerts.set_routes(&routes.alert_routes());
                }
                // Sealed where the swap happens: events above it were described with the old
                // settings, events below with the new.
                emit_record(&sinks, &mut integrity, RecordKind::Reload, change.details);
                if change.changed.is_empty() {
                    tracing::info!("Event settings reloaded; none changed.");
                } else {
                    tracing::info!(
                        changed = %change.changed.join(", "),
                        "Event settings reloaded."
                    );
                }
                continue;
            }
            Message::Intent(snapshot, ack) => {
                let events = &routes.get(snapshot.route_name()).events;
                emit_intent(&sinks, &mut integrity, events, &snapshot, ack);
                continue;
            }
            Message::Checkpoint => {
                let details = serde_json::json!({ "events_since_last": since_checkpoint });
                emit_record(&sinks, &mut integrity, RecordKind::Checkpoint, details);
                since_checkpoint = 0;
                continue;
            }
            Message::Tick => {
                let mut raised = Vec::new();
                let mut open = Vec::new();
                if let Some(state) = state.as_mut() {
                    batch(state, metrics, StateBatch::Commit);
                    let mut open_total = Some(0_u64);
                    for (namespace, route) in routes.namespaces() {
                        state.store.use_namespace(namespace);
                        let (gaps, open_now) = due_gaps(state, metrics);
                        open_total = open_total.zip(open_now).map(|(a, b)| a + b);
                        if let (Some(name), Some(n)) = (&route.name, open_now) {
                            open.push((name.clone(), n));
                        }
                        for notice in gaps {
                            raised.extend(emit_notice(
                                &notice,
                                route,
                                &sinks,
                                &mut integrity,
                                alerts.as_mut(),
                                metrics,
                                &mut since_checkpoint,
                            ));
                        }
                    }
                    if let Some(total) = open_total.and_then(|t| i64::try_from(t).ok()) {
                        metrics.deprovision_open.set(total);
                    }
                }
                if let Some(alerts) = alerts.as_mut() {
                    let open = state.is_some().then_some(&open[..]);
                    raised.extend(alerts.tick(Timestamp::now(), open));
                }
                emit_alerts(
                    &raised,
                    &routes,
                    &sinks,
                    &mut integrity,
                    metrics,
                    &mut since_checkpoint,
                );
                continue;
            }
            Message::Close => {
                // Refuse new exchanges; what is already queued is still drained.
                rx.close();
                continue;
            }
        };
        proxy_metrics.handoff_queue_depth.dec();
        metrics.exchanges_described.inc();
        routes
            .get_mut(exchange.route_name())
            .events
            .learn(&exchange);
        let route = routes.get(exchange.route_name());
        let mut built = events_for(&exchange, &route.events);
        // Nothing was forwarded for a request no route took: the state has nothing to learn.
        let notices = match state.as_mut().filter(|_| route.name.is_some()) {
            Some(state) => {
                state.store.use_namespace(&route.state_namespace);
                if ticket.is_some() {
                    hold(
                        state,
                        &exchange,
                        &built,
                        &route.state_namespace,
                        metrics,
                        |store| {
                            drain(
                                &mut rx,
                                &mut ahead,
                                store,
                                &sinks,
                                &mut integrity,
                                &routes,
                                metrics,
                            );
                        },
                    );
                }
                if !state.store.is_shared() {
                    batch(state, metrics, StateBatch::Begin);
                }
                let notices = remember(state, &exchange, &route.events, &mut built, metrics);
                state.batched += 1;
                if state.batched >= STATE_BATCH || rx.is_empty() {
                    batch(state, metrics, StateBatch::Commit);
                }
                if let Some(ticket) = ticket {
                    if let Err(error) = state.store.release(ticket) {
                        metrics.state_errors.inc();
                        tracing::debug!(%error, request_id = %exchange.request_id, "Cannot release claims in the shared state store.");
                    }
                }
                notices
            }
            None => Vec::new(),
        };
        let mut raised = Vec::new();
        for event in &built {
            emit_event(
                event,
                route,
                &sinks,
                &mut integrity,
                metrics,
                &mut since_checkpoint,
            );
            if let Some(alerts) = alerts.as_mut() {
                raised.extend(alerts.observe(event, Timestamp::now()));
            }
        }
        for notice in notices {
            raised.extend(emit_notice(
                &notice,
                route,
                &sinks,
                &mut integrity,
                alerts.as_mut(),
                metrics,
                &mut since_checkpoint,
            ));
        }
        // Written after what raised them, so the trail reads cause, then alert.
        emit_alerts(
            &raised,
            &routes,
            &sinks,
            &mut integrity,
            metrics,
            &mut since_checkpoint,
        );
    }
    if let Some(state) = state.as_mut() {
        batch(state, metrics, StateBatch::Commit);
    }
    emit_record(
        &sinks,
        &mut integrity,
        RecordKind::Stop,
        serde_json::json!({}),
    );
    tracing::debug!("Audit worker finished.");
}

/// Seals one event into the chain and hands it, in each sink's format, to every sink its
/// route sends to.
fn emit_event(
    event: &AuditEvent<'_>,
    route: &RouteStage,
    sinks: &[SinkHandle],
    integrity: &mut ChainSetup,
    metrics: &Metrics,
    since_checkpoint: &mut u64,
) {
    let line = match event.to_json_line() {
        Ok(line) => {
            *since_checkpoint += 1;
            Bytes::from(integrity.chain.seal(line))
        }
        Err(error) => {
            tracing::error!(%error, request_id = %event.request_id, "Cannot encode audit event.");
            for sink in sinks {
                sink.count_encode_error();
            }
            return;
        }
    };
    if let Some(tap) = &integrity.tap {
        // Err only when no one listens (the live view not started yet, or stopping).
        let _ = tap.send(line.clone());
    }
    metrics.events_encoded.inc();
    metrics.count_actions(
        &event.scim.actions,
        event.outcome == Outcome::Failure,
        event.client.name.as_deref(),
        event.client.idp.as_deref(),
    );
    let meta = record_meta(event);
    // Other formats are made once per event, and only when a sink wants them. A format
    // may give several lines (OCSF: one per action); each is one record.
    let native = Record {
        line,
        meta: meta.clone(),
    };
    let mut encoded: Vec<(EventFormat, Vec<Record>)> = vec![(EventFormat::Native, vec![native])];
    for (_, sink) in sinks.iter().enumerate().filter(|(i, _)| route.wants(*i)) {
        let format = sink.format();
        let records = match encoded.iter().find(|(f, _)| *f == format) {
            Some((_, records)) => records.clone(),
            None => match crate::formats::encode(format, event) {
                Ok(lines) => {
                    let records = records_of(lines, &meta);
                    encoded.push((format, records.clone()));
                    records
                }
                Err(error) => {
                    tracing::error!(%error, sink = sink.name(), "Cannot encode audit event.");
                    sink.count_encode_error();
                    return;
                }
            },
        };
        for record in records {
            sink.enqueue_blocking(record);
        }
    }
}
