//! The shadow state as the audit worker uses it (`[state]`): looking up and updating the
//! store for each exchange before its events are encoded, batching SQLite writes, reporting
//! due deprovisioning gaps, and, with a shared PostgreSQL store, holding an exchange back while
//! another instance records an earlier one on the same ids.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use super::{emit_intent, ChainSetup, Message, RouteStages};
use crate::clock::Timestamp;
use crate::event::{AuditEvent, EventContext, Outcome};
use crate::exchange::Exchange;
use crate::sinks::SinkHandle;
use crate::state::tracker::{self, Attempt};
use crate::state::Store;
use crate::telemetry::Metrics;

/// The shadow state as the audit worker uses it: the store, and the deprovisioning tracker's
/// setting.
pub struct StateStage {
    pub store: Store,
    /// `[state] confirm_within_secs`.
    pub confirm_within: Duration,
    /// `[state] settle_ms` (a shared store only).
    pub settle: Duration,
    /// Exchanges written in the open SQLite batch.
    pub batched: usize,
}

/// How often a worker holding an exchange back (shared store) looks at the hand-off queue and
/// at other instances' claims.
pub(super) const HOLD_POLL: Duration = Duration::from_millis(2);

/// The longest a lookup waits for another instance's earlier claim (an instance that stalls
/// longer must not stall every other one: its claim is then read past, and counted).
pub(super) const CLAIM_WAIT: Duration = Duration::from_secs(2);

/// Messages a worker with a shared store took from the hand-off queue while it held an
/// exchange back, in order, each exchange with the ticket its claim was made under.
#[derive(Default)]
pub(super) struct Ahead {
    pub(super) queue: VecDeque<(Message, Option<u64>)>,
    next_ticket: u64,
}

impl Ahead {
    /// Claims the ids `message` (an exchange) will write, at once: other instances wait for
    /// this claim before they read those ids. Returns the message with its ticket.
    pub(super) fn claim(
        &mut self,
        store: &mut Store,
        message: Message,
        metrics: &Metrics,
        routes: &RouteStages,
    ) -> (Message, Option<u64>) {
        let Message::Exchange(exchange) = &message else {
            return (message, None);
        };
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        store.use_namespace(&routes.get(exchange.route_name()).state_namespace);
        let ids = crate::state::settle::written_ids(exchange);
        if let Err(error) = store.claim(ticket, &exchange.started_at.to_string(), &ids) {
            metrics.state_errors.inc();
            tracing::debug!(%error, request_id = %exchange.request_id, "Cannot claim ids in the shared state store.");
        }
        (message, Some(ticket))
    }
}

/// Takes what is in the hand-off queue without waiting: intents are written at once (a
/// request waits for them; one may so precede an earlier exchange's events, which says
/// nothing false), everything else is claimed and kept in order in `ahead`.
#[allow(clippy::too_many_arguments)]
pub(super) fn drain(
    rx: &mut mpsc::Receiver<Message>,
    ahead: &mut Ahead,
    store: &mut Store,
    sinks: &[SinkHandle],
    integrity: &mut ChainSetup,
    routes: &RouteStages,
    metrics: &Metrics,
) {
    while let Ok(message) = rx.try_recv() {
        match message {
            Message::Intent(snapshot, ack) => {
                let events = &routes.get(snapshot.route_name()).events;
                emit_intent(sinks, integrity, events, &snapshot, ack);
            }
            other => {
                let claimed = ahead.claim(store, other, metrics, routes);
                ahead.queue.push_back(claimed);
            }
        }
    }
}

/// A shared store only: holds the exchange's state lookup back until `settle` after it ended,
/// then while another instance holds a claim on an id it reads or writes for an exchange that
/// started earlier (at most [`CLAIM_WAIT`]). `drain` keeps claiming what arrives meanwhile.
pub(super) fn hold(
    state: &mut StateStage,
    exchange: &Exchange,
    built: &[AuditEvent<'_>],
    namespace: &str,
    metrics: &Metrics,
    mut drain: impl FnMut(&mut Store),
) {
    // Claims made while draining switch the store to their exchange's namespace.
    let mut drain = |store: &mut Store| {
        drain(store);
        store.use_namespace(namespace);
    };
    // What it reads, and what it writes: a search's finds learned before an earlier create was
    // looked up would make that create look known.
    let mut ids: Vec<String> = built
        .iter()
        .flat_map(|e| crate::state::settle::read_ids(&e.scim))
        .cloned()
        .chain(crate::state::settle::written_ids(exchange))
        .collect();
    if ids.is_empty() {
        return;
    }
    ids.sort();
    ids.dedup();
    let store = &mut state.store;
    let ended = exchange.started_at.system_time() + exchange.duration;
    let settled = ended + state.settle;
    loop {
        drain(store);
        match settled.duration_since(SystemTime::now()) {
            Ok(left) if !left.is_zero() => std::thread::park_timeout(left.min(HOLD_POLL)),
            _ => break,
        }
    }
    let started = exchange.started_at.to_string();
    let give_up = Instant::now() + CLAIM_WAIT;
    // A store error ends the wait: the lookup that follows fails too, and is counted there.
    while let Ok(true) = store.claimed_earlier(&ids, &started) {
        if Instant::now() >= give_up {
            metrics.state_settle_timeouts.inc();
            tracing::warn!(request_id = %exchange.request_id, "Another instance did not record an earlier exchange on the same ids in time; state is read without it.");
            return;
        }
        drain(store);
        std::thread::park_timeout(HOLD_POLL);
    }
}

/// Looks up and updates the shadow state for each event of one exchange, before the events
/// are encoded (so they carry what state adds). Runs on the audit worker's thread: the store
/// is SQLite, and a slow disk holds back the audit worker, never the request path. A store
/// error is logged and counted; the event is written all the same, without what state would
/// have added.
pub(super) fn remember(
    state: &mut StateStage,
    exchange: &Exchange,
    events: &EventContext,
    built: &mut [AuditEvent<'_>],
    metrics: &Metrics,
) -> Vec<tracker::Notice> {
    let store = &mut state.store;
    let mut notices = Vec::new();
    // Only what events may show is remembered: the bodies redacted by the event's rules.
    let (request, response) = crate::event::redacted_bodies(exchange, events);
    let at = built
        .first()
        .map(|e| e.timestamp.to_string())
        .unwrap_or_default();
    for event in built.iter_mut() {
        // A Bulk operation's event carries the envelope, not its own body.
        let whole = event.scim.bulk.is_none();
        let seen = crate::state::Seen {
            success: event.outcome == Outcome::Success,
            request: request.as_ref().filter(|_| whole),
            response: response.as_ref().filter(|_| whole),
            at: &at,
        };
        let result = crate::state::observe(store, &mut event.scim, &seen).and_then(|()| {
            let context = || {
                serde_json::json!({
                    "request_id": event.request_id,
                    "method": event.http.method,
                    "path": event.http.path,
                    "client": event.client,
                    "target": event.scim.target,
                })
            };
            let attempt = Attempt {
                event_id: &event.event_id,
                at: event.timestamp,
                success: seen.success,
                status: event.http.status,
                failure_kind: event.failure.as_ref().map(|f| f.kind.as_str()),
                scim: &event.scim,
                context: &context,
            };
            tracker::track(store, &attempt, state.confirm_within)
        });
        match result {
            Ok(tracked) => {
                event.retry_of = tracked.retry_of;
                notices.extend(tracked.closed);
            }
            Err(error) => {
                metrics.state_errors.inc();
                tracing::error!(%error, request_id = %exchange.request_id, "Shadow state store failed; the event is written without it.");
            }
        }
    }
    notices
}

/// Exchanges whose state writes share one SQLite transaction at most; the batch is also
/// committed whenever the hand-off queue runs empty and on every tick.
pub(super) const STATE_BATCH: usize = 256;

pub(super) enum StateBatch {
    Begin,
    Commit,
}

/// Opens or commits the SQLite batch ([`Store::begin_batch`]); a failure is counted and
/// logged like any store error.
pub(super) fn batch(state: &mut StateStage, metrics: &Metrics, step: StateBatch) {
    let result = match step {
        StateBatch::Begin => state.store.begin_batch(),
        StateBatch::Commit => {
            state.batched = 0;
            state.store.commit_batch()
        }
    };
    if let Err(error) = result {
        metrics.state_errors.inc();
        tracing::error!(%error, "Shadow state store failed to batch its writes.");
    }
}

/// Reports the deprovisionings of the store's namespace that became gaps, and how many are
/// open (none when the store failed).
pub(super) fn due_gaps(
    state: &mut StateStage,
    metrics: &Metrics,
) -> (Vec<tracker::Notice>, Option<u64>) {
    let store = &mut state.store;
    let result = tracker::due_gaps(store, Timestamp::now())
        .and_then(|gaps| Ok((gaps, store.open_deprovisions()?)));
    match result {
        Ok((gaps, open)) => (gaps, u64::try_from(open).ok()),
        Err(error) => {
            metrics.state_errors.inc();
            tracing::error!(%error, "Shadow state store failed; deprovisioning gaps are reported on a later tick.");
            (Vec::new(), None)
        }
    }
}
