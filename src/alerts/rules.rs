//! One rule's windows and episodes.
//!
//! Which events a rule counts, and per which key:
//!
//! | kind | counts | key |
//! |---|---|---|
//! | `failure_rate` | every event (failed ones as failures), once per action | client, action |
//! | `status_burst` | events answered with one of `statuses` | client |
//! | `mass_deactivation` | `user.deactivate` / `user.delete` requests, distinct users | client |
//! | `retry_storm` | every event | client, action, method + path + query |
//! | `deprovision_gap` | `deprovision.gap` events; their `deprovision.closed` resolve them | the gap |
//!
//! The tracker's and the rules' own events are not exchanges: only `deprovision_gap` reads
//! the former, and nothing reads the latter. The `client` and `action` filters apply to every
//! kind. An event without actions counts under its operation (`scim.read`, `scim.list`,
//! `http.request`), as the CEF and OCSF formats name it.
//!
//! A window of counts is [`SLICES`] slices of `window_secs / SLICES` each: fixed memory per
//! key, and an event leaves the count between 95 and 100 % of the window after it was seen.

use std::collections::{HashMap, VecDeque};

use prometheus_client::metrics::counter::Counter;

use super::{Alert, AlertInfo, AlertKey, Last, MAX_KEYS};
use crate::clock::{new_uuid_v7, Timestamp};
use crate::config::{AlertKind, AlertRule};
use crate::event::{AuditEvent, Outcome};
use crate::telemetry::{Metrics, RuleLabels};

/// Slices of a window of counts.
const SLICES: usize = 20;

/// The most deprovisioning requests a `mass_deactivation` window remembers per key (oldest
/// forgotten first, and counted as evictions).
const MAX_DISTINCT: usize = 100_000;

/// Counts in a sliding window of fixed slices: (slice number, events, failures).
#[derive(Debug)]
struct Slices {
    width_ms: i64,
    slots: [(i64, u32, u32); SLICES],
}

impl Slices {
    fn new(window_ms: i64) -> Slices {
        Slices {
            width_ms: (window_ms / SLICES as i64).max(1),
            slots: [(i64::MIN, 0, 0); SLICES],
        }
    }

    fn add(&mut self, at_ms: i64, failed: bool) {
        let slice = at_ms.div_euclid(self.width_ms);
        let slot = &mut self.slots[slice.rem_euclid(SLICES as i64) as usize];
        if slot.0 != slice {
            *slot = (slice, 0, 0);
        }
        slot.1 = slot.1.saturating_add(1);
        if failed {
            slot.2 = slot.2.saturating_add(1);
        }
    }

    /// Events and failures in the window ending at `now_ms`.
    fn sum(&self, now_ms: i64) -> (u64, u64) {
        let current = now_ms.div_euclid(self.width_ms);
        self.slots
            .iter()
            .filter(|(slice, ..)| *slice > current - SLICES as i64 && *slice <= current)
            .fold((0, 0), |(events, failures), (_, e, f)| {
                (events + u64::from(*e), failures + u64::from(*f))
            })
    }
}

/// Distinct targets in a sliding window (mass deactivation).
#[derive(Debug, Default)]
struct Distinct {
    seen: VecDeque<(i64, String)>,
    counts: HashMap<String, u32>,
}

impl Distinct {
    /// Adds `target`; returns how many old entries were forgotten to stay bounded.
    fn add(&mut self, at_ms: i64, target: String) -> u64 {
        let mut forgotten = 0;
        while self.seen.len() >= MAX_DISTINCT {
            self.pop();
            forgotten += 1;
        }
        *self.counts.entry(target.clone()).or_default() += 1;
        self.seen.push_back((at_ms, target));
        forgotten
    }

    fn pop(&mut self) {
        if let Some((_, target)) = self.seen.pop_front() {
            if let Some(count) = self.counts.get_mut(&target) {
                *count -= 1;
                if *count == 0 {
                    self.counts.remove(&target);
                }
            }
        }
    }

    fn count(&mut self, now_ms: i64, window_ms: i64) -> u64 {
        while self
            .seen
            .front()
            .is_some_and(|(at, _)| *at <= now_ms - window_ms)
        {
            self.pop();
        }
        self.counts.len() as u64
    }
}

#[derive(Debug)]
enum Tally {
    // Boxed: a window of counts is a fixed 328 bytes.
    Counts(Box<Slices>),
    Distinct(Distinct),
}

/// An episode under way.
#[derive(Debug)]
struct Episode {
    id: String,
    since: Timestamp,
    /// When the condition last held.
    last_held_ms: i64,
}

/// The key of one window.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SlotKey {
    client: String,
    action: Option<String>,
    /// `retry_storm`: method, path and query.
    request: Option<String>,
}

#[derive(Debug)]
struct Slot {
    tally: Tally,
    episode: Option<Episode>,
    last: Last,
    /// `status_burst`: the last status counted.
    status: Option<u16>,
    seen_ms: i64,
}

/// An open gap (`deprovision_gap`).
#[derive(Debug)]
struct Gap {
    episode: Episode,
    last: Last,
    key: AlertKey,
    user: String,
}

/// One rule: its windows (or gaps) and episodes.
pub(super) struct RuleState {
    pub(super) rule: AlertRule,
    slots: HashMap<SlotKey, Slot>,
    gaps: HashMap<String, Gap>,
    evicted: Counter,
}

/// What a transition says: fired or resolved, and the value measured (over `events` events,
/// for a failure rate).
struct Transition {
    firing: bool,
    value: f64,
    events: u64,
}

impl RuleState {
    /// Its episodes firing now (windows and gaps).
    pub(super) fn firing_episodes(&self) -> usize {
        self.slots.values().filter(|s| s.episode.is_some()).count() + self.gaps.len()
    }

    pub(super) fn new(rule: AlertRule, metrics: &Metrics) -> RuleState {
        let evicted = metrics.alert_keys_evicted.get_or_create_owned(&RuleLabels {
            rule: rule.name.clone(),
        });
        RuleState {
            rule,
            slots: HashMap::new(),
            gaps: HashMap::new(),
            evicted,
        }
    }

    /// No window and no gap kept.
    #[cfg(test)]
    pub(super) fn is_idle(&self) -> bool {
        self.slots.is_empty() && self.gaps.is_empty()
    }

    fn window_ms(&self) -> i64 {
        self.rule.window.as_millis() as i64
    }

    /// Counts `event` where it belongs; pushes what fired or resolved.
    pub(super) fn observe(&mut self, event: &AuditEvent<'_>, now: Timestamp, out: &mut Vec<Alert>) {
        let client = crate::telemetry::client_label(
            event.client.name.as_deref(),
            event.client.idp.as_deref(),
        );
        if self.rule.client.as_ref().is_some_and(|c| *c != client) {
            return;
        }
        if self.rule.kind == AlertKind::DeprovisionGap {
            self.observe_gap(event, client, now, out);
            return;
        }
        if event.deprovision.is_some() {
            return;
        }
        let actions: Vec<String> = if event.scim.actions.is_empty() {
            vec![crate::formats::operation_name(&event.scim, None)]
        } else {
            event.scim.actions.clone()
        };
        if let Some(wanted) = &self.rule.action {
            if !actions.contains(wanted) {
                return;
            }
        }
        let failed = event.outcome == Outcome::Failure;
        let now_ms = now.unix_millis();
        let key = |action: Option<String>, request: Option<String>| SlotKey {
            client: client.clone(),
            action,
            request,
        };
        // (key, failed, distinct target, whether the alert names the target)
        let counted: Vec<(SlotKey, Option<String>, bool)> = match self.rule.kind {
            AlertKind::FailureRate => match &self.rule.action {
                Some(action) => vec![(key(Some(action.clone()), None), None, false)],
                None => actions
                    .into_iter()
                    .map(|a| (key(Some(a), None), None, false))
                    .collect(),
            },
            AlertKind::StatusBurst => {
                if !event
                    .http
                    .status
                    .is_some_and(|s| self.rule.statuses.contains(&s))
                {
                    return;
                }
                vec![(key(self.rule.action.clone(), None), None, false)]
            }
            AlertKind::MassDeactivation => {
                if !actions
                    .iter()
                    .any(|a| a == "user.deactivate" || a == "user.delete")
                {
                    return;
                }
                let t = &event.scim.target;
                let user =
                    t.id.clone()
                        .or_else(|| t.user_name.clone())
                        .unwrap_or_else(|| event.http.path.to_owned());
                vec![(key(self.rule.action.clone(), None), Some(user), false)]
            }
            AlertKind::RetryStorm => {
                let action = self
                    .rule
                    .action
                    .clone()
                    .unwrap_or_else(|| actions.join(","));
                let request = match &event.http.query {
                    Some(q) => format!("{} {}?{q}", event.http.method, event.http.path),
                    None => format!("{} {}", event.http.method, event.http.path),
                };
                vec![(key(Some(action), Some(request)), None, true)]
            }
            AlertKind::DeprovisionGap => return,
        };
        for (slot_key, target, with_target) in counted {
            if !self.slots.contains_key(&slot_key) && !self.make_room(now_ms) {
                continue;
            }
            let window_ms = self.window_ms();
            let slot = self.slots.entry(slot_key.clone()).or_insert_with(|| Slot {
                tally: match target {
                    Some(_) => Tally::Distinct(Distinct::default()),
                    None => Tally::Counts(Box::new(Slices::new(window_ms))),
                },
                episode: None,
                last: Last::of(event, with_target),
                status: None,
                seen_ms: now_ms,
            });
            match (&mut slot.tally, target) {
                (Tally::Counts(slices), _) => slices.add(now_ms, failed),
                (Tally::Distinct(distinct), Some(user)) => {
                    let forgotten = distinct.add(now_ms, user);
                    self.evicted.inc_by(forgotten);
                }
                (Tally::Distinct(_), None) => {}
            }
            slot.last = Last::of(event, with_target);
            slot.status = event.http.status;
            slot.seen_ms = now_ms;
            if let Some(alert) = self.step(&slot_key, now) {
                out.push(alert);
            }
        }
    }

    /// Keeps the number of windows within [`MAX_KEYS`]: forgets windows with nothing left in
    /// them, then the least recently seen one that is not firing (counted). False when every
    /// window is firing: the new key is not counted (and that is counted too).
    fn make_room(&mut self, now_ms: i64) -> bool {
        if self.slots.len() < MAX_KEYS {
            return true;
        }
        let window_ms = self.window_ms();
        self.slots.retain(|_, slot| {
            slot.episode.is_some() || !tally_empty(&mut slot.tally, now_ms, window_ms)
        });
        if self.slots.len() < MAX_KEYS {
            return true;
        }
        self.evicted.inc();
        let oldest = self
            .slots
            .iter()
            .filter(|(_, slot)| slot.episode.is_none())
            .min_by_key(|(_, slot)| slot.seen_ms)
            .map(|(key, _)| key.clone());
        match oldest {
            Some(key) => {
                self.slots.remove(&key);
                true
            }
            None => false,
        }
    }

    /// Measures the window of `key` at `now`: (value, holds, events in the window).
    fn measure(&mut self, key: &SlotKey, now_ms: i64) -> Option<(f64, bool, u64)> {
        let window_ms = self.window_ms();
        let rule = &self.rule;
        let slot = self.slots.get_mut(key)?;
        Some(match &mut slot.tally {
            Tally::Counts(slices) => {
                let (events, failures) = slices.sum(now_ms);
                match rule.kind {
                    AlertKind::FailureRate => {
                        let ratio = if events == 0 {
                            0.0
                        } else {
                            failures as f64 / events as f64
                        };
                        let holds = events >= rule.min_events && ratio >= rule.threshold;
                        (ratio, holds, events)
                    }
                    _ => (events as f64, events as f64 >= rule.threshold, events),
                }
            }
            Tally::Distinct(distinct) => {
                let users = distinct.count(now_ms, window_ms);
                (users as f64, users as f64 >= rule.threshold, users)
            }
        })
    }

    /// Fires, keeps or resolves the episode of `key` at `now`.
    fn step(&mut self, key: &SlotKey, now: Timestamp) -> Option<Alert> {
        let now_ms = now.unix_millis();
        let (value, holds, events) = self.measure(key, now_ms)?;
        let resolve_after_ms = self.rule.resolve_after.as_millis() as i64;
        let slot = self.slots.get_mut(key)?;
        let transition = match &mut slot.episode {
            None if holds => {
                slot.episode = Some(Episode {
                    id: new_uuid_v7().to_string(),
                    since: now,
                    last_held_ms: now_ms,
                });
                Transition {
                    firing: true,
                    value,
                    events,
                }
            }
            None => return None,
            Some(episode) if holds => {
                episode.last_held_ms = now_ms;
                return None;
            }
            Some(episode) if now_ms - episode.last_held_ms >= resolve_after_ms => Transition {
                firing: false,
                value,
                events,
            },
            Some(_) => return None,
        };
        let slot = self.slots.get(key)?;
        let episode = slot.episode.as_ref()?;
        let alert = self.alert(key, slot, episode, &transition, now);
        if !transition.firing {
            if let Some(slot) = self.slots.get_mut(key) {
                slot.episode = None;
            }
        }
        Some(alert)
    }

    fn alert(
        &self,
        key: &SlotKey,
        slot: &Slot,
        episode: &Episode,
        transition: &Transition,
        now: Timestamp,
    ) -> Alert {
        let rule = &self.rule;
        let status = match rule.kind {
            AlertKind::StatusBurst | AlertKind::RetryStorm => slot.status,
            _ => None,
        };
        let alert_key = AlertKey {
            client: Some(key.client.clone()),
            action: key.action.clone(),
            status,
        };
        let summary = summary(rule, key, &slot.last, status, transition, episode.since);
        Alert {
            event_id: new_uuid_v7().to_string(),
            at: now,
            info: AlertInfo {
                rule: rule.name.clone(),
                kind: rule.kind.as_str(),
                status: if transition.firing {
                    "firing"
                } else {
                    "resolved"
                },
                episode_id: episode.id.clone(),
                since: episode.since,
                value: transition.value,
                threshold: rule.threshold,
                window_secs: Some(rule.window.as_secs_f64()),
                key: alert_key,
                summary,
                last_event_id: Some(slot.last.event_id.clone()),
            },
            route: None,
            last: slot.last.clone(),
        }
    }

    /// The windows slide: every firing episode is looked at again; windows with nothing left
    /// in them are forgotten. Gap episodes resolve when no deprovisioning is open.
    pub(super) fn tick(
        &mut self,
        now: Timestamp,
        open_deprovisions: Option<u64>,
        out: &mut Vec<Alert>,
    ) {
        if self.rule.kind == AlertKind::DeprovisionGap {
            if open_deprovisions == Some(0) {
                let ids: Vec<String> = self.gaps.keys().cloned().collect();
                for id in ids {
                    if let Some(gap) = self.gaps.remove(&id) {
                        out.push(self.gap_alert(
                            gap,
                            None,
                            now,
                            "no deprovisioning is open any more",
                        ));
                    }
                }
            }
            return;
        }
        let now_ms = now.unix_millis();
        let window_ms = self.window_ms();
        let firing: Vec<SlotKey> = self
            .slots
            .iter()
            .filter(|(_, slot)| slot.episode.is_some())
            .map(|(key, _)| key.clone())
            .collect();
        for key in firing {
            if let Some(alert) = self.step(&key, now) {
                out.push(alert);
            }
        }
        self.slots.retain(|_, slot| {
            slot.episode.is_some() || !tally_empty(&mut slot.tally, now_ms, window_ms)
        });
    }

    /// `deprovision_gap`: a gap opens an episode, its closing resolves it.
    fn observe_gap(
        &mut self,
        event: &AuditEvent<'_>,
        client: String,
        now: Timestamp,
        out: &mut Vec<Alert>,
    ) {
        let Some(info) = &event.deprovision else {
            return;
        };
        if self
            .rule
            .action
            .as_ref()
            .is_some_and(|a| *a != info.requested_action)
        {
            return;
        }
        let id = info.requested_event_id.clone();
        if info.status == crate::scim::DeprovisionStatus::Gap {
            if self.gaps.contains_key(&id) {
                return;
            }
            if self.gaps.len() >= MAX_KEYS {
                self.evicted.inc();
                return;
            }
            let t = &event.scim.target;
            let user = t
                .user_name
                .clone()
                .or_else(|| t.id.clone())
                .unwrap_or_else(|| event.http.path.to_owned());
            let gap = Gap {
                episode: Episode {
                    id: new_uuid_v7().to_string(),
                    since: now,
                    last_held_ms: now.unix_millis(),
                },
                last: Last::of(event, true),
                key: AlertKey {
                    client: Some(client),
                    action: Some(info.requested_action.clone()),
                    status: info.last_status,
                },
                user,
            };
            let why = format!(
                "{} of {} still unconfirmed after {} attempt{} (asked at {}, last answer {})",
                info.requested_action,
                gap.user,
                info.attempts,
                if info.attempts == 1 { "" } else { "s" },
                info.requested_at,
                info.last_status
                    .map_or_else(|| "none".to_owned(), |s| s.to_string()),
            );
            out.push(self.gap_alert_firing(&gap, now, &why));
            self.gaps.insert(id, gap);
        } else if let Some(gap) = self.gaps.remove(&id) {
            let last = Last::of(event, true);
            let why = format!(
                "{} of {} confirmed ({})",
                info.requested_action,
                gap.user,
                info.closed_by
                    .map_or("closed", crate::scim::ClosedBy::as_str)
            );
            out.push(self.gap_alert(gap, Some(last), now, &why));
        }
    }

    fn gap_alert_firing(&self, gap: &Gap, now: Timestamp, why: &str) -> Alert {
        Alert {
            event_id: new_uuid_v7().to_string(),
            at: now,
            info: AlertInfo {
                rule: self.rule.name.clone(),
                kind: self.rule.kind.as_str(),
                status: "firing",
                episode_id: gap.episode.id.clone(),
                since: gap.episode.since,
                value: 1.0,
                threshold: 1.0,
                window_secs: None,
                key: gap.key.clone(),
                summary: format!("{} firing: {why}.", self.rule.name),
                last_event_id: Some(gap.last.event_id.clone()),
            },
            route: None,
            last: gap.last.clone(),
        }
    }

    /// A gap episode's resolution; `last` is the closing event, when one closed it.
    fn gap_alert(&self, gap: Gap, last: Option<Last>, now: Timestamp, why: &str) -> Alert {
        let mut alert = self.gap_alert_firing(&gap, now, why);
        let last = last.unwrap_or(gap.last);
        alert.info.status = "resolved";
        alert.info.value = 0.0;
        alert.info.summary = format!(
            "{} resolved: {why}; firing since {}.",
            self.rule.name, gap.episode.since
        );
        alert.info.last_event_id = Some(last.event_id.clone());
        alert.last = last;
        alert
    }
}

fn tally_empty(tally: &mut Tally, now_ms: i64, window_ms: i64) -> bool {
    match tally {
        Tally::Counts(slices) => slices.sum(now_ms).0 == 0,
        Tally::Distinct(distinct) => distinct.count(now_ms, window_ms) == 0,
    }
}

/// One sentence: the rule, what it saw, over which window.
fn summary(
    rule: &AlertRule,
    key: &SlotKey,
    last: &Last,
    status: Option<u16>,
    transition: &Transition,
    since: Timestamp,
) -> String {
    let window = rule.window.as_secs_f64();
    let client = &key.client;
    let action = key.action.as_deref().unwrap_or("any");
    let what = match rule.kind {
        AlertKind::FailureRate => format!(
            "{:.0}% of {} {action} requests from client {client} failed in the last {window} s (threshold {:.0}%, at least {} requests)",
            transition.value * 100.0,
            transition.events,
            rule.threshold * 100.0,
            rule.min_events
        ),
        AlertKind::StatusBurst => format!(
            "{} responses with status {} to client {client} in the last {window} s (threshold {}; last {})",
            transition.value,
            rule.statuses
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" or "),
            rule.threshold,
            status.map_or_else(|| "none".to_owned(), |s| s.to_string())
        ),
        AlertKind::MassDeactivation => format!(
            "{} users deactivated or deleted by client {client} in the last {window} s (threshold {})",
            transition.value, rule.threshold
        ),
        AlertKind::RetryStorm => {
            let named = last
                .target
                .user_name
                .as_deref()
                .or(last.target.display_name.as_deref())
                .map(|name| format!(" for {name}"))
                .unwrap_or_default();
            format!(
                "client {client} sent {} {}{named} ({action}) {} times in the last {window} s (threshold {})",
                last.method, last.path, transition.value, rule.threshold
            )
        }
        AlertKind::DeprovisionGap => String::new(),
    };
    if transition.firing {
        format!("{} firing: {what}.", rule.name)
    } else {
        format!(
            "{} resolved: below its threshold for {} s (now: {what}); firing since {since}.",
            rule.name,
            rule.resolve_after.as_secs_f64()
        )
    }
}
