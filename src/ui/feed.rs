//! The live view's memory: the newest events (a bounded ring), the deprovisioning gaps still
//! open and the alerts still firing among the events it saw, and per-hour counts. Fed by one
//! task from the audit worker's [`crate::pipeline::EventTap`]; read by the pages and the
//! event streams. Everything is bounded, and nothing here can hold back the audit worker.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::clock::Timestamp;

/// Open gaps and firing alerts kept at most (the oldest go first past it).
const MAX_OPEN: usize = 10_000;

/// Hours of counts kept for the chart.
pub const CHART_HOURS: i64 = 24;

/// Events the streams may fall behind before one is closed (it reconnects and catches up from
/// the ring).
const LIVE_CAPACITY: usize = 256;

const HOUR_MILLIS: i64 = 3_600_000;

/// One event as the view keeps it: the parsed line and its place in arrival order.
#[derive(Debug)]
pub struct Item {
    /// 1, 2, 3, … in the order the view received the events (the streams' `id`).
    pub seq: u64,
    pub event: Value,
}

/// Actions, failed events and all events of one hour.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HourCounts {
    pub events: u64,
    /// Action entries (`scim.actions`), summed over the hour's events.
    pub actions: u64,
    /// Events with `outcome: failure`.
    pub failures: u64,
}

/// The newest events, open gaps, firing alerts and per-hour counts.
pub struct Feed {
    state: Mutex<State>,
    live: broadcast::Sender<Arc<Item>>,
    capacity: usize,
}

#[derive(Default)]
struct State {
    recent: VecDeque<Arc<Item>>,
    /// `deprovision.requested_event_id` → the `deprovision.gap` event, until its
    /// `deprovision.closed`.
    gaps: BTreeMap<String, Arc<Item>>,
    /// `alert.episode_id` (else `alert.rule`) → the `alert.firing` event, until its
    /// `alert.resolved`.
    alerts: BTreeMap<String, Arc<Item>>,
    /// Hours since the Unix epoch → counts.
    hours: BTreeMap<i64, HourCounts>,
    seq: u64,
}

/// What a page shows, taken at once.
pub struct Snapshot {
    /// Newest first.
    pub recent: Vec<Arc<Item>>,
    /// Newest first.
    pub gaps: Vec<Arc<Item>>,
    /// Newest first.
    pub alerts: Vec<Arc<Item>>,
    /// The last [`CHART_HOURS`] hours up to the current one, oldest first: (hour since the
    /// epoch, counts).
    pub hours: Vec<(i64, HourCounts)>,
    /// The newest event's `seq` (0: none yet).
    pub seq: u64,
}

/// Open gaps and firing alerts, for the navigation bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub gaps: usize,
    pub alerts: usize,
}

pub(super) fn text<'v>(event: &'v Value, pointer: &str) -> Option<&'v str> {
    event.pointer(pointer).and_then(Value::as_str)
}

pub(super) fn actions(event: &Value) -> impl Iterator<Item = &str> {
    event
        .pointer("/scim/actions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

impl Feed {
    /// A feed keeping the newest `capacity` events.
    pub fn new(capacity: usize) -> Arc<Feed> {
        let (live, _) = broadcast::channel(LIVE_CAPACITY);
        Arc::new(Feed {
            state: Mutex::new(State::default()),
            live,
            capacity: capacity.max(1),
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one event in: kept in the ring, counted, and offered to every stream.
    pub fn push(&self, event: Value) {
        let item = {
            let mut state = self.lock();
            state.seq += 1;
            let item = Arc::new(Item {
                seq: state.seq,
                event,
            });
            state.note(&item);
            state.recent.push_back(item.clone());
            while state.recent.len() > self.capacity {
                state.recent.pop_front();
            }
            item
        };
        // Err only when no stream is open.
        let _ = self.live.send(item);
    }

    /// Follows the events pushed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Item>> {
        self.live.subscribe()
    }

    /// The kept events after `seq`, oldest first.
    pub fn since(&self, seq: u64) -> Vec<Arc<Item>> {
        self.lock()
            .recent
            .iter()
            .filter(|i| i.seq > seq)
            .cloned()
            .collect()
    }

    /// The newest event's `seq` (0: none yet).
    pub fn latest_seq(&self) -> u64 {
        self.lock().seq
    }

    pub fn counts(&self) -> Counts {
        let state = self.lock();
        Counts {
            gaps: state.gaps.len(),
            alerts: state.alerts.len(),
        }
    }

    /// Everything the pages show, at `now`.
    pub fn snapshot(&self, now: Timestamp) -> Snapshot {
        let state = self.lock();
        let newest = |map: &BTreeMap<String, Arc<Item>>| {
            let mut items: Vec<Arc<Item>> = map.values().cloned().collect();
            items.sort_by_key(|i| std::cmp::Reverse(i.seq));
            items
        };
        let current = now.unix_millis().div_euclid(HOUR_MILLIS);
        let hours = (current - CHART_HOURS + 1..=current)
            .map(|h| (h, state.hours.get(&h).copied().unwrap_or_default()))
            .collect();
        Snapshot {
            recent: state.recent.iter().rev().cloned().collect(),
            gaps: newest(&state.gaps),
            alerts: newest(&state.alerts),
            hours,
            seq: state.seq,
        }
    }
}

impl State {
    /// Updates the gaps, alerts and hour counts with one event.
    fn note(&mut self, item: &Arc<Item>) {
        let event = &item.event;
        let mut action_count = 0;
        for action in actions(event) {
            action_count += 1;
            match action {
                "deprovision.gap" => {
                    if let Some(key) = text(event, "/deprovision/requested_event_id") {
                        insert_bounded(&mut self.gaps, key, item);
                    }
                }
                "deprovision.closed" => {
                    if let Some(key) = text(event, "/deprovision/requested_event_id") {
                        self.gaps.remove(key);
                    }
                }
                "alert.firing" => {
                    if let Some(key) = alert_key(event) {
                        insert_bounded(&mut self.alerts, key, item);
                    }
                }
                "alert.resolved" => {
                    if let Some(key) = alert_key(event) {
                        self.alerts.remove(key);
                    }
                }
                _ => {}
            }
        }
        let Some(at) = text(event, "/timestamp").and_then(Timestamp::parse_rfc3339) else {
            return;
        };
        let hour = at.unix_millis().div_euclid(HOUR_MILLIS);
        let counts = self.hours.entry(hour).or_default();
        counts.events += 1;
        counts.actions += action_count;
        counts.failures += u64::from(text(event, "/outcome") == Some("failure"));
        // Keep two days (events may arrive a little out of order).
        while self
            .hours
            .first_key_value()
            .is_some_and(|(first, _)| *first < hour - 2 * CHART_HOURS)
        {
            self.hours.pop_first();
        }
    }
}

/// An alert episode's key: its `episode_id`, else its rule.
fn alert_key(event: &Value) -> Option<&str> {
    text(event, "/alert/episode_id").or_else(|| text(event, "/alert/rule"))
}

fn insert_bounded(map: &mut BTreeMap<String, Arc<Item>>, key: &str, item: &Arc<Item>) {
    map.insert(key.to_owned(), item.clone());
    while map.len() > MAX_OPEN {
        // Keys are event ids (UUIDv7) or rule names: dropping the smallest drops an old one.
        map.pop_first();
    }
}

/// Reads sealed event lines from the audit worker's tap into `feed` until the tap closes
/// (the audit worker has finished). Lines it fell behind on are counted in `dropped`.
pub async fn collect(mut tap: broadcast::Receiver<Bytes>, feed: Arc<Feed>, dropped: Counter) {
    use broadcast::error::RecvError;
    loop {
        match tap.recv().await {
            Ok(line) => {
                if let Some(event) = crate::trail::event_of_line(&line) {
                    feed.push(event);
                }
            }
            Err(RecvError::Lagged(missed)) => {
                dropped.inc_by(missed);
                tracing::debug!(
                    missed,
                    "The live view fell behind the audit worker; events skipped."
                );
            }
            Err(RecvError::Closed) => break,
        }
    }
}

// === filters ===

/// The list's filters, from the page's query (`action`, `outcome`, `client`, `route`,
/// `user`); empty ones match everything.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filter {
    /// An action or the start of one (`user.` for every user action).
    pub action: String,
    /// `success` or `failure`.
    pub outcome: String,
    /// Part of the client's `[[clients]]` name, identity provider, address or User-Agent.
    pub client: String,
    /// Part of the route's name (`[[routes]]`: the app).
    pub route: String,
    /// Part of the target's id, userName, externalId or displayName.
    pub user: String,
}

impl Filter {
    /// The filters of a query string (`action=user.deactivate&user=ann`); other parameters
    /// are ignored.
    pub fn from_query(query: Option<&str>) -> Filter {
        let mut filter = Filter::default();
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let value = value.trim().to_owned();
            match &*key {
                "action" => filter.action = value.to_ascii_lowercase(),
                "outcome" => filter.outcome = value.to_ascii_lowercase(),
                "client" => filter.client = value,
                "route" => filter.route = value,
                "user" => filter.user = value,
                _ => {}
            }
        }
        filter
    }

    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// The filters as a query string (no `?`), the empty ones left out.
    pub fn to_query(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (key, value) in [
            ("action", &self.action),
            ("outcome", &self.outcome),
            ("client", &self.client),
            ("route", &self.route),
            ("user", &self.user),
        ] {
            if !value.is_empty() {
                query.append_pair(key, value);
            }
        }
        query.finish()
    }

    pub fn matches(&self, event: &Value) -> bool {
        let has = |pointers: &[&str], wanted: &str| {
            wanted.is_empty()
                || pointers
                    .iter()
                    .filter_map(|p| text(event, p))
                    .any(|v| contains_ignoring_case(v, wanted))
        };
        (self.action.is_empty() || actions(event).any(|a| a.starts_with(&self.action)))
            && (self.outcome.is_empty() || text(event, "/outcome") == Some(&self.outcome))
            && has(
                &[
                    "/client/name",
                    "/client/idp",
                    "/client/address",
                    "/client/user_agent",
                ],
                &self.client,
            )
            && has(&["/route"], &self.route)
            && has(
                &[
                    "/scim/target/id",
                    "/scim/target/user_name",
                    "/scim/target/external_id",
                    "/scim/target/display_name",
                    "/scim/changes/requested/user_name",
                ],
                &self.user,
            )
    }
}

fn contains_ignoring_case(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}
