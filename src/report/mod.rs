//! `scimtap report`: an auditor's summary of native audit files over a period, as a
//! self-contained HTML page ([`write_html`]) or JSON ([`write_json`]); both render one
//! [`Report`], whose field names docs/report.md documents.
//!
//! **What it counts.** Events are read through [`crate::trail`] (integrity records and other
//! formats' lines skipped, an event found twice counted once), kept when their `timestamp` is
//! in `[from, to)`, and sorted by it. Three kinds of event:
//!
//! - *exchanges* (every event an IdP's request made): counted by action and outcome, drawn
//!   per time bucket, and, when failed, grouped by reason;
//! - the deprovisioning tracker's `deprovision.gap` / `deprovision.closed` (with `[state]`):
//!   they confirm or flag the deprovisionings, and are not counted as actions;
//! - alert events (`scim.actions` starting with `alert.`, a top-level `alert` object): listed
//!   as episodes, not counted as actions.
//!
//! **Deprovisionings.** Every `user.deactivate` / `user.delete` starts one, or joins the one
//! still unconfirmed for the same user (by `retry_of`, else by target id: an IdP's retry);
//! success confirms it. A `deprovision.closed` naming its first attempt
//! (`deprovision.requested_event_id`) confirms it too, or withdraws it (`closed_by:
//! "reactivation"`), and gives the latency; a `deprovision.gap` without a closing marks it an
//! open gap. A tracker event whose first attempt is before the period starts a row of its own.
//!
//! **Integrity.** The same check as `scimtap verify` over the whole files (not only the
//! period: the chain runs through them all), with the key when given.
//!
//! Memory: one small [`Fact`] per event of the period, not the event.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

use crate::integrity::{chain_files, ChainFilesError, VerifyOptions};
use crate::trail::{self, ReadError};

mod chart;
mod html;
#[cfg(test)]
mod tests;

pub use html::write_html;

/// `report_version` of the JSON form: bumped when a field changes meaning or goes away.
pub const REPORT_VERSION: &str = "1";

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    ChainFiles(#[from] ChainFilesError),
    #[error("no audit files to read (a directory holds none: *.jsonl, *.log and their rotations)")]
    NoFiles,
}

/// What to report on.
#[derive(Debug, Clone, Default)]
pub struct Options<'a> {
    /// The period: events with `from <= timestamp < to`; open ends when `None`.
    pub from: Option<SystemTime>,
    pub to: Option<SystemTime>,
    /// The chain's HMAC key (`integrity.key_file`); without it a plain SHA-256 chain.
    pub key: Option<&'a [u8]>,
    /// Accept a chain without a closing record (a running instance's current file).
    pub allow_open: bool,
    /// Only the events of this route (`[[routes]]` name; `default` without routes). The
    /// integrity check still covers every line.
    pub route: Option<&'a str>,
}

// === the model (serialized as is by --format json; docs/report.md) ===

/// The whole report. Fields are written in this order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub report_version: &'static str,
    pub generated_at: String,
    /// The files read, as expanded from the command line.
    pub files: Vec<String>,
    pub period: Period,
    pub totals: Totals,
    /// One row per action, alphabetical.
    pub actions: Vec<ActionCount>,
    pub timeline: Timeline,
    pub deprovisionings: Deprovisionings,
    /// Failed exchanges grouped by reason, most frequent first.
    pub failures: Vec<FailureGroup>,
    pub alerts: Alerts,
    pub integrity: Integrity,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Period {
    /// `--from` / `--to` as UTC RFC 3339, null when not given (`to` is exclusive).
    pub from: Option<String>,
    pub to: Option<String>,
    /// The first and last event of the period, null without events.
    pub first_event: Option<String>,
    pub last_event: Option<String>,
    /// `--route`: the only route counted, null for every route.
    pub route: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Events in the period, of every kind.
    pub events: u64,
    /// Events of exchanges (not the tracker's, not alerts), and how they ended.
    pub exchanges: u64,
    pub success: u64,
    pub failure: u64,
    /// Exchanges with at least one action (writes), and without (reads, lists, discovery).
    pub writes: u64,
    pub reads: u64,
    pub tracker_events: u64,
    pub alert_events: u64,
    /// Events outside the period, lines that are not events (integrity records, other
    /// formats, a cut line), events read twice, events without a readable timestamp.
    pub outside_period: u64,
    pub lines_skipped: u64,
    pub duplicates: u64,
    pub without_timestamp: u64,
    /// `--route`: events of other routes (or of none).
    pub other_routes: u64,
}

/// How many exchanges asked for `action`, by outcome. An exchange with several actions
/// counts once in each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionCount {
    pub action: String,
    pub success: u64,
    pub failure: u64,
    pub total: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    /// `minute`, `hour`, `day` or `week`: the smallest that gives at most
    /// [`MAX_BUCKETS`] buckets over the period.
    pub bucket: &'static str,
    pub bucket_secs: u64,
    /// Every bucket from the period's start to its end, empty ones included.
    pub buckets: Vec<Bucket>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// UTC start of the bucket.
    pub start: String,
    pub exchanges: u64,
    pub writes: u64,
    pub failures: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deprovisionings {
    pub total: u64,
    pub confirmed: u64,
    /// Refused or unanswered, no gap reported (yet), not closed.
    pub unconfirmed: u64,
    /// A `deprovision.gap` and no closing.
    pub open_gaps: u64,
    pub withdrawn: u64,
    /// Oldest first.
    pub items: Vec<Deprovisioning>,
}

/// Where a deprovisioning stands at the end of the period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeprovisionStatus {
    Confirmed,
    Unconfirmed,
    Gap,
    Withdrawn,
}

impl DeprovisionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeprovisionStatus::Confirmed => "confirmed",
            DeprovisionStatus::Unconfirmed => "unconfirmed",
            DeprovisionStatus::Gap => "gap",
            DeprovisionStatus::Withdrawn => "withdrawn",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deprovisioning {
    /// `user.deactivate` or `user.delete` (a delete after a deactivation makes it a delete).
    pub action: String,
    /// `scim.target.user_name`, else its id.
    pub target: Option<String>,
    pub target_id: Option<String>,
    /// `client.name`, else `client.idp`, of the first attempt.
    pub who: Option<String>,
    pub first_asked: String,
    pub first_event_id: Option<String>,
    pub attempts: u64,
    pub status: DeprovisionStatus,
    /// `response` (an attempt succeeded), or the tracker's `closed_by` (`read`,
    /// `reactivation`); null while not confirmed.
    pub confirmed_by: Option<String>,
    pub confirmed_at: Option<String>,
    /// `deprovision.closed`'s `latency_ms`; else the successful attempt's `duration_ms`
    /// plus the time from the first attempt to it.
    pub latency_ms: Option<f64>,
    /// The last failed attempt: its status (null: never answered) and why.
    pub last_status: Option<u64>,
    pub last_failure: Option<String>,
    pub gap_event_id: Option<String>,
    pub closing_event_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureGroup {
    /// `failure.kind`, else `scim.error.scim_type`, else `status N` (`no response`).
    pub reason: String,
    pub count: u64,
    pub statuses: Vec<u64>,
    pub actions: Vec<String>,
    pub first_at: String,
    pub last_at: String,
    /// The latest one's `failure.detail`, else `scim.error.detail`, else `scim.parse_error`.
    pub example: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alerts {
    /// Episodes whose last event in the period says `firing`, and `resolved`.
    pub firing: u64,
    pub resolved: u64,
    /// Oldest first.
    pub episodes: Vec<AlertEpisode>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertEpisode {
    /// `alert.episode_id`, else the event's id.
    pub episode_id: String,
    pub rule: Option<String>,
    pub kind: Option<String>,
    /// The last event's `alert.status` (`firing`, `resolved`).
    pub status: Option<String>,
    /// `alert.since`, else the first event's time.
    pub since: String,
    pub resolved_at: Option<String>,
    pub summary: Option<String>,
    pub events: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Integrity {
    /// `intact`, `broken`, or `not_checked` (no file carries the chain).
    pub status: &'static str,
    pub keyed: bool,
    pub allow_open: bool,
    /// The files checked, in chain order, and the files of a directory skipped (another
    /// format's output).
    pub files: Vec<String>,
    pub skipped_files: Vec<String>,
    /// For an intact chain (0 / empty otherwise).
    pub records: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub instances: Vec<String>,
    pub closed: bool,
    pub unclean_restarts: u64,
    pub broken: Option<Broken>,
}

impl Integrity {
    /// `scimtap verify`'s exit code for this result: 0 unless broken.
    pub fn exit_code(&self) -> u8 {
        self.broken.as_ref().map_or(0, |b| b.exit_code)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Broken {
    /// `edited`, `deleted`, `inserted`, `reordered`, `truncated`, or `unreadable`.
    pub kind: String,
    pub seq: u64,
    pub file: String,
    pub line: usize,
    pub detail: String,
    #[serde(skip)]
    pub exit_code: u8,
}

// === time ===

/// A `--from` bound: RFC 3339 (`2026-11-22T09:00:00Z`, `…+02:00`) or a UTC date
/// (`2026-11-22`, its midnight).
///
/// # Errors
/// A message saying what is accepted.
pub fn parse_from(text: &str) -> Result<SystemTime, String> {
    parse_bound(text, false)
}

/// A `--to` bound (exclusive): RFC 3339, or a UTC date standing for the end of that day.
///
/// # Errors
/// A message saying what is accepted.
pub fn parse_to(text: &str) -> Result<SystemTime, String> {
    parse_bound(text, true)
}

fn parse_bound(text: &str, end_of_day: bool) -> Result<SystemTime, String> {
    let text = text.trim();
    let bad = || {
        format!(
            "{text:?} is neither an RFC 3339 time (2026-11-22T09:00:00Z, or with an offset: \
             2026-11-22T10:00:00+01:00) nor a date (2026-11-22)"
        )
    };
    if !text.is_ascii() {
        return Err(bad());
    }
    if text.len() == 10 {
        let midnight = humantime::parse_rfc3339(&format!("{text}T00:00:00Z")).map_err(|_| bad())?;
        return Ok(if end_of_day {
            midnight + Duration::from_secs(86_400)
        } else {
            midnight
        });
    }
    // humantime reads UTC only: an offset is taken off by hand (10:00+01:00 is 09:00Z).
    let (utc, offset_secs) = match text.len().checked_sub(6).map(|i| text.split_at(i)) {
        Some((head, tail))
            if head.len() > 10
                && (tail.starts_with('+') || tail.starts_with('-'))
                && tail.as_bytes()[3] == b':' =>
        {
            let hours: u64 = tail[1..3].parse().map_err(|_| bad())?;
            let minutes: u64 = tail[4..6].parse().map_err(|_| bad())?;
            if hours > 23 || minutes > 59 {
                return Err(bad());
            }
            (
                format!("{head}Z"),
                (tail.starts_with('+'), hours * 3600 + minutes * 60),
            )
        }
        _ => (text.to_ascii_uppercase(), (true, 0)),
    };
    let local = humantime::parse_rfc3339_weak(&utc).map_err(|_| bad())?;
    let offset = Duration::from_secs(offset_secs.1);
    Ok(if offset_secs.0 {
        local - offset
    } else {
        local + offset
    })
}

/// RFC 3339 UTC with milliseconds, as events write it.
fn show(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

// === reading ===

/// What kind of event a fact is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exchange,
    Tracker,
    Alert,
}

/// What the report needs of one event.
#[derive(Debug, Clone)]
struct Fact {
    at: SystemTime,
    timestamp: String,
    event_id: Option<String>,
    kind: Kind,
    actions: Vec<String>,
    success: bool,
    /// A Bulk operation's own status, else the status the client got.
    status: Option<u64>,
    duration_ms: f64,
    who: Option<String>,
    target_id: Option<String>,
    target_name: Option<String>,
    retry_of: Option<String>,
    /// Failed exchanges: the reason and a detail.
    reason: Option<(String, Option<String>)>,
    /// The tracker's `deprovision` object, an alert's `alert` object.
    extra: Option<Value>,
}

fn text(event: &Value, pointer: &str) -> Option<String> {
    event
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

impl Fact {
    fn of(event: &Value) -> Option<Fact> {
        let timestamp = text(event, "/timestamp")?;
        let at = humantime::parse_rfc3339_weak(&timestamp).ok()?;
        let actions: Vec<String> = event
            .pointer("/scim/actions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        let kind = if actions.iter().any(|a| a.starts_with("alert.")) {
            Kind::Alert
        } else if actions.iter().any(|a| a.starts_with("deprovision.")) {
            Kind::Tracker
        } else {
            Kind::Exchange
        };
        let success = text(event, "/outcome").as_deref() == Some("success");
        let status = event
            .pointer("/scim/bulk/status")
            .and_then(Value::as_u64)
            .or_else(|| event.pointer("/http/status").and_then(Value::as_u64));
        let reason = (!success && kind == Kind::Exchange).then(|| failure_reason(event, status));
        Some(Fact {
            at,
            timestamp,
            event_id: text(event, "/event_id"),
            kind,
            actions,
            success,
            status,
            duration_ms: event
                .get("duration_ms")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
            who: text(event, "/client/name").or_else(|| text(event, "/client/idp")),
            target_id: text(event, "/scim/target/id"),
            target_name: text(event, "/scim/target/user_name"),
            retry_of: text(event, "/retry_of"),
            reason,
            extra: match kind {
                Kind::Exchange => None,
                Kind::Tracker => event.get("deprovision").cloned(),
                Kind::Alert => event.get("alert").cloned(),
            },
        })
    }

    /// The user a deprovisioning is about: the id, else the userName.
    fn target_key(&self) -> Option<&str> {
        self.target_id.as_deref().or(self.target_name.as_deref())
    }

    fn extra(&self, field: &str) -> Option<&Value> {
        self.extra.as_ref().and_then(|x| x.get(field))
    }

    fn extra_text(&self, field: &str) -> Option<String> {
        self.extra(field).and_then(Value::as_str).map(str::to_owned)
    }
}

/// Why a failed exchange failed, and a detail: `failure.kind`, else the SCIM error's
/// `scim_type`, else the status.
fn failure_reason(event: &Value, status: Option<u64>) -> (String, Option<String>) {
    let detail = text(event, "/failure/detail")
        .or_else(|| text(event, "/scim/error/detail"))
        .or_else(|| text(event, "/scim/parse_error"));
    let reason = text(event, "/failure/kind")
        .or_else(|| text(event, "/scim/error/scim_type"))
        .unwrap_or_else(|| match status {
            Some(status) => format!("status {status}"),
            None => "no response".to_owned(),
        });
    (reason, detail)
}

/// Reads `paths` (files, or directories of audit files) and builds the report.
///
/// # Errors
/// [`ReportError`] when a file cannot be read (or is compressed), a directory listed, or there
/// is no file at all.
pub fn report(paths: &[PathBuf], options: &Options<'_>) -> Result<Report, ReportError> {
    let files = trail::expand(paths)?;
    if files.is_empty() {
        return Err(ReportError::NoFiles);
    }
    let file_refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let mut facts = Vec::new();
    let (mut outside_period, mut without_timestamp, mut other_routes) = (0, 0, 0);
    let of_route = |event: &Value| {
        options
            .route
            .is_none_or(|route| event.get("route").and_then(Value::as_str) == Some(route))
    };
    let in_period = |at: SystemTime| {
        options.from.is_none_or(|from| at >= from) && options.to.is_none_or(|to| at < to)
    };
    let lines_skipped = trail::for_each_event(&file_refs, |event| match Fact::of(&event) {
        _ if !of_route(&event) => other_routes += 1,
        Some(fact) if in_period(fact.at) => facts.push(fact),
        Some(_) => outside_period += 1,
        None => without_timestamp += 1,
    })?;
    let mut totals = Totals {
        outside_period,
        lines_skipped,
        without_timestamp,
        other_routes,
        ..Totals::default()
    };
    // Arrival order, file order among equal times; an event read twice counts once.
    facts.sort_by_key(|f| f.at);
    let mut seen = HashSet::new();
    let before = facts.len();
    facts.retain(|f| f.event_id.as_ref().is_none_or(|id| seen.insert(id.clone())));
    totals.duplicates = (before - facts.len()) as u64;

    let integrity = integrity(paths, options)?;
    Ok(build(
        &facts,
        totals,
        options,
        files.iter().map(|f| f.display().to_string()).collect(),
        integrity,
    ))
}

fn build(
    facts: &[Fact],
    mut totals: Totals,
    options: &Options<'_>,
    files: Vec<String>,
    integrity: Integrity,
) -> Report {
    let mut actions: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut failures: HashMap<&str, FailureGroup> = HashMap::new();
    totals.events = facts.len() as u64;
    for fact in facts {
        match fact.kind {
            Kind::Tracker => totals.tracker_events += 1,
            Kind::Alert => totals.alert_events += 1,
            Kind::Exchange => {
                totals.exchanges += 1;
                if fact.success {
                    totals.success += 1;
                } else {
                    totals.failure += 1;
                }
                if fact.actions.is_empty() {
                    totals.reads += 1;
                } else {
                    totals.writes += 1;
                }
                for action in &fact.actions {
                    let counts = actions.entry(action).or_default();
                    if fact.success {
                        counts.0 += 1;
                    } else {
                        counts.1 += 1;
                    }
                }
            }
        }
        if let Some((reason, detail)) = &fact.reason {
            let group = failures
                .entry(reason.as_str())
                .or_insert_with(|| FailureGroup {
                    reason: reason.clone(),
                    count: 0,
                    statuses: Vec::new(),
                    actions: Vec::new(),
                    first_at: fact.timestamp.clone(),
                    last_at: String::new(),
                    example: None,
                });
            group.count += 1;
            group.last_at.clone_from(&fact.timestamp);
            if let Some(status) = fact.status {
                if !group.statuses.contains(&status) {
                    group.statuses.push(status);
                }
            }
            for action in &fact.actions {
                if !group.actions.contains(action) {
                    group.actions.push(action.clone());
                }
            }
            if detail.is_some() {
                group.example.clone_from(detail);
            }
        }
    }
    let mut failures: Vec<FailureGroup> = failures.into_values().collect();
    for group in &mut failures {
        group.statuses.sort_unstable();
        group.actions.sort();
    }
    failures.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));

    Report {
        report_version: REPORT_VERSION,
        generated_at: show(SystemTime::now()),
        files,
        period: Period {
            from: options.from.map(show),
            to: options.to.map(show),
            first_event: facts.first().map(|f| f.timestamp.clone()),
            last_event: facts.last().map(|f| f.timestamp.clone()),
            route: options.route.map(str::to_owned),
        },
        totals,
        actions: actions
            .into_iter()
            .map(|(action, (success, failure))| ActionCount {
                action: action.to_owned(),
                success,
                failure,
                total: success + failure,
            })
            .collect(),
        timeline: timeline(facts, options),
        deprovisionings: deprovisionings(facts),
        failures,
        alerts: alerts(facts),
        integrity,
    }
}

// === timeline ===

/// The most buckets a timeline has (bars in the chart), unless the period is longer than
/// that many weeks.
pub const MAX_BUCKETS: u64 = 120;

const BUCKETS: [(&str, u64); 4] = [
    ("minute", 60),
    ("hour", 3_600),
    ("day", 86_400),
    ("week", 7 * 86_400),
];

/// 1970-01-05, a Monday: weeks start on Mondays.
const WEEK_ORIGIN: u64 = 4 * 86_400;

fn timeline(facts: &[Fact], options: &Options<'_>) -> Timeline {
    let start = options.from.or_else(|| facts.first().map(|f| f.at));
    let end = options.to.or_else(|| facts.last().map(|f| f.at));
    let (Some(start), Some(end)) = (start, end) else {
        return Timeline {
            bucket: "hour",
            bucket_secs: 3_600,
            buckets: Vec::new(),
        };
    };
    let start = unix_secs(start);
    // The last second the period covers: `to` is exclusive, the last event is not.
    let last = match options.to {
        Some(to) => unix_secs(to).saturating_sub(1),
        None => unix_secs(end),
    }
    .max(start);
    let floor = |secs: u64, size: u64| {
        let origin = if size == BUCKETS[3].1 { WEEK_ORIGIN } else { 0 };
        (secs.saturating_sub(origin) / size * size + origin).min(secs)
    };
    let (name, size) = BUCKETS
        .into_iter()
        .find(|&(_, size)| (last - floor(start, size)) / size < MAX_BUCKETS)
        .unwrap_or(BUCKETS[3]);
    let first = floor(start, size);
    let count = (last - first) / size + 1;
    let mut buckets: Vec<Bucket> = (0..count)
        .map(|i| Bucket {
            start: humantime::format_rfc3339_seconds(
                UNIX_EPOCH + Duration::from_secs(first + i * size),
            )
            .to_string(),
            exchanges: 0,
            writes: 0,
            failures: 0,
        })
        .collect();
    for fact in facts.iter().filter(|f| f.kind == Kind::Exchange) {
        let index = (unix_secs(fact.at).saturating_sub(first) / size) as usize;
        if let Some(bucket) = buckets.get_mut(index) {
            bucket.exchanges += 1;
            bucket.writes += u64::from(!fact.actions.is_empty());
            bucket.failures += u64::from(!fact.success);
        }
    }
    Timeline {
        bucket: name,
        bucket_secs: size,
        buckets,
    }
}

// === deprovisionings ===

fn is_deprovision(action: &str) -> bool {
    action == "user.deactivate" || action == "user.delete"
}

fn millis_between(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn deprovisionings(facts: &[Fact]) -> Deprovisionings {
    let mut items: Vec<Deprovisioning> = Vec::new();
    // First-attempt time of each row, for latencies.
    let mut started: Vec<SystemTime> = Vec::new();
    // Every attempt's event id → its row; the unconfirmed row of each user.
    let mut by_event: HashMap<String, usize> = HashMap::new();
    let mut open: HashMap<String, usize> = HashMap::new();
    for fact in facts {
        match fact.kind {
            Kind::Exchange => {
                let Some(action) = fact.actions.iter().find(|a| is_deprovision(a)) else {
                    continue;
                };
                let joined = fact
                    .retry_of
                    .as_ref()
                    .and_then(|id| by_event.get(id))
                    .or_else(|| fact.target_key().and_then(|key| open.get(key)))
                    .copied()
                    .filter(|&i| items[i].confirmed_by.is_none());
                let index = match joined {
                    Some(index) => {
                        let item = &mut items[index];
                        item.attempts += 1;
                        if action == "user.delete" {
                            item.action.clone_from(action);
                        }
                        if item.target_id.is_none() {
                            item.target_id.clone_from(&fact.target_id);
                        }
                        if fact.target_name.is_some() {
                            item.target.clone_from(&fact.target_name);
                        }
                        index
                    }
                    None => {
                        items.push(Deprovisioning {
                            action: action.clone(),
                            target: fact.target_name.clone().or_else(|| fact.target_id.clone()),
                            target_id: fact.target_id.clone(),
                            who: fact.who.clone(),
                            first_asked: fact.timestamp.clone(),
                            first_event_id: fact.event_id.clone(),
                            attempts: 1,
                            status: DeprovisionStatus::Unconfirmed,
                            confirmed_by: None,
                            confirmed_at: None,
                            latency_ms: None,
                            last_status: None,
                            last_failure: None,
                            gap_event_id: None,
                            closing_event_id: None,
                        });
                        started.push(fact.at);
                        items.len() - 1
                    }
                };
                if let Some(id) = &fact.event_id {
                    by_event.insert(id.clone(), index);
                }
                let item = &mut items[index];
                if fact.success {
                    item.status = DeprovisionStatus::Confirmed;
                    item.confirmed_by = Some("response".to_owned());
                    item.confirmed_at = Some(fact.timestamp.clone());
                    item.latency_ms =
                        Some(millis_between(started[index], fact.at) + fact.duration_ms);
                    if let Some(key) = fact.target_key() {
                        open.remove(key);
                    }
                } else {
                    item.last_status = fact.status;
                    item.last_failure = fact.reason.as_ref().map(|(reason, _)| reason.clone());
                    if let Some(key) = fact.target_key() {
                        open.insert(key.to_owned(), index);
                    }
                }
            }
            Kind::Tracker => {
                let requested = fact.extra_text("requested_event_id");
                let index = match requested.as_ref().and_then(|id| by_event.get(id)) {
                    Some(&index) => index,
                    None => {
                        // Its first attempt is before the period (or in a file not given).
                        let asked = fact
                            .extra_text("requested_at")
                            .unwrap_or_else(|| fact.timestamp.clone());
                        items.push(Deprovisioning {
                            action: fact
                                .extra_text("requested_action")
                                .unwrap_or_else(|| "user.deactivate".to_owned()),
                            target: fact.target_name.clone().or_else(|| fact.target_id.clone()),
                            target_id: fact.target_id.clone(),
                            who: fact.who.clone(),
                            first_asked: asked.clone(),
                            first_event_id: requested.clone(),
                            attempts: fact.extra("attempts").and_then(Value::as_u64).unwrap_or(1),
                            status: DeprovisionStatus::Unconfirmed,
                            confirmed_by: None,
                            confirmed_at: None,
                            latency_ms: None,
                            last_status: fact.extra("last_status").and_then(Value::as_u64),
                            last_failure: fact.extra_text("last_failure"),
                            gap_event_id: None,
                            closing_event_id: None,
                        });
                        started.push(humantime::parse_rfc3339_weak(&asked).unwrap_or(fact.at));
                        if let Some(id) = requested {
                            by_event.insert(id, items.len() - 1);
                        }
                        items.len() - 1
                    }
                };
                let item = &mut items[index];
                match fact.extra_text("status").as_deref() {
                    Some("gap") => {
                        item.gap_event_id = fact
                            .extra_text("gap_event_id")
                            .or_else(|| fact.event_id.clone());
                        if item.confirmed_by.is_none() {
                            item.status = DeprovisionStatus::Gap;
                        }
                    }
                    Some("closed") => {
                        let by = fact
                            .extra_text("closed_by")
                            .unwrap_or_else(|| "response".to_owned());
                        item.status = if by == "reactivation" {
                            DeprovisionStatus::Withdrawn
                        } else {
                            DeprovisionStatus::Confirmed
                        };
                        if item.confirmed_by.is_none() {
                            item.confirmed_at = Some(fact.timestamp.clone());
                        }
                        item.confirmed_by = Some(by);
                        item.closing_event_id = fact.extra_text("closing_event_id");
                        if let Some(gap) = fact.extra_text("gap_event_id") {
                            item.gap_event_id = Some(gap);
                        }
                        if let Some(latency) = fact.extra("latency_ms").and_then(Value::as_f64) {
                            item.latency_ms = Some(latency);
                        }
                        if let Some(key) = fact.target_key() {
                            open.remove(key);
                        }
                    }
                    _ => {}
                }
            }
            Kind::Alert => {}
        }
    }
    items.sort_by(|a, b| a.first_asked.cmp(&b.first_asked));
    let count = |status| items.iter().filter(|i| i.status == status).count() as u64;
    Deprovisionings {
        total: items.len() as u64,
        confirmed: count(DeprovisionStatus::Confirmed),
        unconfirmed: count(DeprovisionStatus::Unconfirmed),
        open_gaps: count(DeprovisionStatus::Gap),
        withdrawn: count(DeprovisionStatus::Withdrawn),
        items,
    }
}

// === alerts ===

fn alerts(facts: &[Fact]) -> Alerts {
    let mut episodes: Vec<AlertEpisode> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for fact in facts.iter().filter(|f| f.kind == Kind::Alert) {
        let id = fact
            .extra_text("episode_id")
            .or_else(|| fact.event_id.clone())
            .unwrap_or_else(|| fact.timestamp.clone());
        let index = *by_id.entry(id.clone()).or_insert_with(|| {
            episodes.push(AlertEpisode {
                episode_id: id,
                rule: None,
                kind: None,
                status: None,
                since: fact
                    .extra_text("since")
                    .unwrap_or_else(|| fact.timestamp.clone()),
                resolved_at: None,
                summary: None,
                events: 0,
            });
            episodes.len() - 1
        });
        let episode = &mut episodes[index];
        episode.events += 1;
        let status = fact.extra_text("status").or_else(|| {
            // No alert object: the action says it (`alert.firing`, `alert.resolved`).
            fact.actions
                .iter()
                .find_map(|a| a.strip_prefix("alert."))
                .map(str::to_owned)
        });
        if status.as_deref() == Some("resolved") {
            episode.resolved_at = Some(fact.timestamp.clone());
        }
        for (field, value) in [
            (&mut episode.rule, fact.extra_text("rule")),
            (&mut episode.kind, fact.extra_text("kind")),
            (&mut episode.summary, fact.extra_text("summary")),
            (&mut episode.status, status),
        ] {
            if value.is_some() {
                *field = value;
            }
        }
    }
    let count = |status: &str| {
        episodes
            .iter()
            .filter(|e| e.status.as_deref() == Some(status))
            .count() as u64
    };
    Alerts {
        firing: count("firing"),
        resolved: count("resolved"),
        episodes,
    }
}

// === integrity ===

fn integrity(paths: &[PathBuf], options: &Options<'_>) -> Result<Integrity, ReportError> {
    let chain = chain_files(paths)?;
    let shown = |files: &[PathBuf]| files.iter().map(|f| f.display().to_string()).collect();
    let mut result = Integrity {
        status: "not_checked",
        keyed: options.key.is_some(),
        allow_open: options.allow_open,
        files: shown(&chain.files),
        skipped_files: shown(&chain.skipped),
        records: 0,
        first_seq: 0,
        last_seq: 0,
        instances: Vec::new(),
        closed: false,
        unclean_restarts: 0,
        broken: None,
    };
    if chain.files.is_empty() {
        return Ok(result);
    }
    let verify_options = VerifyOptions {
        allow_open: options.allow_open,
        ..VerifyOptions::default()
    };
    match crate::integrity::verify(&chain.files, options.key, &verify_options) {
        Ok(ok) => {
            result.status = "intact";
            result.records = ok.records;
            result.first_seq = ok.first_seq;
            result.last_seq = ok.last_seq;
            result.instances = ok.instances;
            result.closed = ok.closed;
            result.unclean_restarts = ok.unclean_restarts;
        }
        Err(Ok(broken)) => {
            result.status = "broken";
            result.broken = Some(Broken {
                kind: broken.kind.as_str().to_owned(),
                seq: broken.seq,
                file: broken.file.display().to_string(),
                line: broken.line,
                detail: broken.detail,
                exit_code: broken.kind.exit_code(),
            });
        }
        // The events were read already: a file that fails now changed under us.
        Err(Err(error)) => {
            result.status = "broken";
            result.broken = Some(Broken {
                kind: "unreadable".to_owned(),
                seq: 0,
                file: String::new(),
                line: 0,
                detail: error.to_string(),
                exit_code: 66,
            });
        }
    }
    Ok(result)
}

// === JSON ===

/// The report as one pretty-printed JSON object and a newline.
///
/// # Errors
/// When `out` fails.
pub fn write_json(report: &Report, out: &mut impl std::io::Write) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, report)?;
    out.write_all(b"\n")
}
