//! The live view's HTML, compiled in with maud: every value from an event is escaped by the
//! `html!` macro (user names are whatever an identity provider or an attacker sent). The only
//! unescaped text is this file's own stylesheet and script, whose hashes the
//! Content-Security-Policy names (see `super::csp`).

use std::sync::Arc;

use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde_json::Value;

use super::feed::{actions, text, Counts, Filter, HourCounts, Item, Snapshot};
use crate::clock::Timestamp;
use crate::trace::{Entry, Trace};

/// The stylesheet, inline (its hash is in the CSP).
pub const STYLE: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}\
nav{background:#1d2330;padding:.6em 1em;display:flex;gap:1.2em;align-items:center}\
nav a{color:#dfe6f3;text-decoration:none}nav a.active{color:#fff;font-weight:600}\
nav .brand{color:#fff;font-weight:700;margin-right:1em}\
.badge{display:inline-block;min-width:1.2em;padding:0 .35em;border-radius:.6em;background:#56607a;color:#fff;text-align:center;font-size:12px}\
.badge.hot{background:#c0392b}\
main{padding:1em}h1{font-size:20px;margin:.2em 0 .6em}\
table{border-collapse:collapse;width:100%;background:#fff}\
th,td{border-bottom:1px solid #e3e6ec;padding:.3em .5em;text-align:left;vertical-align:top}\
th{background:#eef1f6;font-weight:600}tr.failure td{background:#fdf0ef}\
td.time{white-space:nowrap;font-variant-numeric:tabular-nums}\
form.filters{display:flex;gap:.6em;flex-wrap:wrap;align-items:end;margin-bottom:.8em}\
form.filters label{display:flex;flex-direction:column;font-size:12px;color:#56607a}\
#live{font-size:12px;padding:.1em .5em;border-radius:.6em;background:#e3e6ec}\
#live.on{background:#d4f0dc}#live.off{background:#f6dcd9}\
.muted{color:#6b7489}.note{margin:.6em 0}svg{background:#fff}";

/// The events page's script: follows `/events/stream` with the page's own filters and puts
/// each new row on top, and keeps the gap and alert counts current. The lists work without it.
pub const SCRIPT: &str = "(function(){\
var body=document.getElementById('events-body'),live=document.getElementById('live');\
if(!body||!window.EventSource)return;\
var max=parseInt(body.getAttribute('data-max'),10)||1000;\
var q=location.search?location.search.substring(1)+'&':'';\
var src=new EventSource('/events/stream?'+q+'after='+body.getAttribute('data-seq'));\
function set(id,v){var el=document.getElementById(id);if(el){el.textContent=v;el.className=v>0?'badge hot':'badge';}}\
src.onopen=function(){live.textContent='live';live.className='on';};\
src.onerror=function(){live.textContent='reconnecting';live.className='off';};\
src.addEventListener('row',function(e){\
var empty=document.getElementById('empty');if(empty)empty.parentNode.removeChild(empty);\
body.insertAdjacentHTML('afterbegin',e.data);\
while(body.rows.length>max)body.deleteRow(-1);\
var n=document.getElementById('shown');if(n)n.textContent=body.rows.length;});\
src.addEventListener('counts',function(e){var c=JSON.parse(e.data);set('gap-count',c.gaps);set('alert-count',c.alerts);});\
})();";

/// Which page is open, for the navigation bar.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Events,
    Timeline,
    Gaps,
    Alerts,
    Activity,
    None,
}

fn layout(title: &str, tab: Tab, counts: Counts, body: Markup, script: bool) -> Markup {
    let badge = |id: &str, n: usize| {
        html! { span id=(id) class=(if n > 0 { "badge hot" } else { "badge" }) { (n) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { "scimtap · " (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                nav {
                    span.brand { "scimtap live view" }
                    a.active[tab == Tab::Events] href="/" { "Events" }
                    a.active[tab == Tab::Timeline] href="/user" { "Timeline" }
                    a.active[tab == Tab::Gaps] href="/gaps" { "Open gaps " (badge("gap-count", counts.gaps)) }
                    a.active[tab == Tab::Alerts] href="/alerts" { "Alerts " (badge("alert-count", counts.alerts)) }
                    a.active[tab == Tab::Activity] href="/activity" { "Activity" }
                }
                main { (body) }
                @if script {
                    script { (PreEscaped(SCRIPT)) }
                }
            }
        }
    }
}

/// `2026-11-22T09:00:00.000Z` → `2026-11-22 09:00:00`.
fn short_time(at: &str) -> String {
    match (at.get(..10), at.get(11..19)) {
        (Some(day), Some(time)) => format!("{day} {time}"),
        _ => at.to_owned(),
    }
}

fn cut(mut s: String, max: usize) -> String {
    if s.chars().count() > max {
        s = s.chars().take(max).collect::<String>() + "…";
    }
    s
}

/// A link to an identity's timeline.
pub fn timeline_href(user: &str) -> String {
    format!(
        "/user?u={}",
        form_urlencoded::byte_serialize(user.as_bytes()).collect::<String>()
    )
}

/// Who the event is about (its label) and, for a user, what opens their timeline.
fn target(event: &Value) -> (String, Option<String>) {
    let label = [
        "/scim/target/user_name",
        "/scim/target/display_name",
        "/scim/target/external_id",
        "/scim/target/id",
        "/scim/changes/requested/user_name",
    ]
    .iter()
    .find_map(|p| text(event, p))
    .unwrap_or("—")
    .to_owned();
    let is_user = text(event, "/scim/resource_type") == Some("User")
        || actions(event).any(|a| a.starts_with("user.") || a.starts_with("deprovision."));
    let key = is_user
        .then(|| {
            text(event, "/scim/target/id")
                .or_else(|| text(event, "/scim/target/user_name"))
                .or_else(|| text(event, "/scim/changes/requested/user_name"))
        })
        .flatten()
        .map(str::to_owned);
    (label, key)
}

fn client_label(client: Option<&Value>) -> String {
    let Some(client) = client else {
        return "—".to_owned();
    };
    ["/name", "/idp", "/address"]
        .iter()
        .find_map(|p| text(client, p))
        .unwrap_or("—")
        .to_owned()
}

/// Why it failed, or what a tracker or alert event says.
fn detail(event: &Value) -> String {
    let said = if let Some(d) = event.get("deprovision").filter(|d| d.is_object()) {
        format!(
            "{} {} (attempts {}, last {})",
            text(d, "/status").unwrap_or_default(),
            text(d, "/requested_action").unwrap_or_default(),
            d.get("attempts").and_then(Value::as_u64).unwrap_or(0),
            d.get("last_failure")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| d.get("last_status").map(Value::to_string))
                .unwrap_or_default(),
        )
    } else if let Some(summary) = text(event, "/alert/summary") {
        summary.to_owned()
    } else if let Some(kind) = text(event, "/failure/kind") {
        match text(event, "/failure/detail") {
            Some(d) => format!("{kind}: {d}"),
            None => kind.to_owned(),
        }
    } else if let Some(error) = event.pointer("/scim/error").filter(|e| e.is_object()) {
        [text(error, "/scim_type"), text(error, "/detail")]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": ")
    } else {
        text(event, "/outcome_reason")
            .or_else(|| text(event, "/scim/parse_error"))
            .unwrap_or_default()
            .to_owned()
    };
    cut(said, 200)
}

/// One row of the events table (also what the stream sends).
pub fn event_row(item: &Item) -> Markup {
    let event = &item.event;
    let listed: Vec<&str> = actions(event).collect();
    let what = if listed.is_empty() {
        text(event, "/scim/operation")
            .or_else(|| text(event, "/http/method"))
            .unwrap_or("—")
            .to_owned()
    } else {
        listed.join(", ")
    };
    let outcome = text(event, "/outcome").unwrap_or("—");
    let status = event
        .pointer("/scim/bulk/status")
        .or_else(|| event.pointer("/http/status"))
        .and_then(Value::as_u64);
    let at = text(event, "/timestamp").unwrap_or_default();
    let (label, key) = target(event);
    html! {
        tr.failure[outcome == "failure"] data-seq=(item.seq) data-event-id=(text(event, "/event_id").unwrap_or_default()) {
            td.time title=(at) { (short_time(at)) }
            td.action { (what) }
            td.outcome { (outcome) }
            td.status { @if let Some(s) = status { (s) } @else { "—" } }
            td.client { (client_label(event.get("client"))) }
            td.route { (text(event, "/route").unwrap_or("—")) }
            td.target {
                @if let Some(key) = key {
                    a href=(timeline_href(&key)) { (label) }
                } @else {
                    (label)
                }
            }
            td.detail { (detail(event)) }
        }
    }
}

fn events_table(rows: Markup, empty: bool, seq: u64, max: usize, what: &str) -> Markup {
    html! {
        table #events {
            thead { tr { th { "time (UTC)" } th { "action" } th { "outcome" } th { "status" } th { "client" } th { "route" } th { "target" } th { "detail" } } }
            tbody #events-body data-seq=(seq) data-max=(max) {
                @if empty {
                    tr #empty { td.muted colspan="8" { (what) } }
                }
                (rows)
            }
        }
    }
}

/// `/`: the newest events, filtered.
pub fn events_page(snapshot: &Snapshot, counts: Counts, filter: &Filter, max: usize) -> Markup {
    let matching: Vec<&Arc<Item>> = snapshot
        .recent
        .iter()
        .filter(|i| filter.matches(&i.event))
        .collect();
    let rows = html! { @for item in &matching { (event_row(item)) } };
    let outcome = |v: &str| filter.outcome == v;
    let body = html! {
        h1 { "Recent events " span #live { "updates need JavaScript: reload" } }
        form.filters method="get" action="/" {
            label { "action" input name="action" list="known-actions" value=(filter.action) placeholder="user.deactivate"; }
            label { "outcome"
                select name="outcome" {
                    option value="" selected[filter.outcome.is_empty()] { "any" }
                    option value="success" selected[outcome("success")] { "success" }
                    option value="failure" selected[outcome("failure")] { "failure" }
                }
            }
            label { "client" input name="client" value=(filter.client) placeholder="okta"; }
            label { "route" input name="route" value=(filter.route) placeholder="crm"; }
            label { "user" input name="user" value=(filter.user) placeholder="id or userName"; }
            button type="submit" { "Filter" }
            @if !filter.is_empty() { a href="/" { "clear" } }
            datalist #known-actions {
                @for action in crate::telemetry::KNOWN_ACTIONS { option value=(action); }
                option value="alert.firing";
                option value="alert.resolved";
            }
        }
        p.muted {
            span #shown { (matching.len()) } " shown, newest first. The view keeps the newest "
            (max) " events written since scimtap started."
        }
        (events_table(rows, matching.is_empty(), snapshot.seq, max, "No matching event yet."))
    };
    layout("events", Tab::Events, counts, body, true)
}

fn kind_label(entry: &Entry) -> String {
    serde_json::to_value(entry.kind)
        .ok()
        .and_then(|v| v.as_str().map(|k| k.replace('_', " ")))
        .unwrap_or_default()
}

fn show(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "—".to_owned(),
        other => other.to_string(),
    }
}

/// `/user?u=X`: one identity's timeline from the events kept.
pub fn timeline_page(user: &str, trace: Option<&Trace>, counts: Counts, kept: usize) -> Markup {
    let body = html! {
        h1 { "Timeline" }
        form.filters method="get" action="/user" {
            label { "user (id, userName or externalId)" input name="u" value=(user); }
            button type="submit" { "Show" }
        }
        @if let Some(trace) = trace {
            @if trace.entries.is_empty() {
                p.note { "No change to " strong { (user) } " in the " (kept) " newest events. "
                    span.muted { "(scimtap trace --user reads the whole audit trail.)" } }
            } @else {
                p.muted { "Ids: " (trace.ids.join(", ")) ". From the " (kept) " newest events, oldest first." }
                table #timeline {
                    thead { tr { th { "time (UTC)" } th { "what" } th { "action" } th { "outcome" } th { "status" } th { "user" } th { "details" } th { "client" } } }
                    tbody {
                        @for entry in &trace.entries {
                            tr.failure[entry.outcome.as_deref() == Some("failure")] {
                                td.time { (short_time(entry.at.as_deref().unwrap_or_default())) }
                                td.kind { (kind_label(entry)) }
                                td { (entry.action.as_deref().unwrap_or("—")) }
                                td { (entry.outcome.as_deref().unwrap_or("—")) }
                                td { @if let Some(s) = entry.status { (s) } @else { "—" } }
                                td { (entry.user.user_name.as_deref().or(entry.user.id.as_deref()).unwrap_or("—")) }
                                td {
                                    @if let Some(group) = &entry.group {
                                        "group " (group.name.as_deref().unwrap_or(&group.id)) " "
                                    }
                                    @for d in &entry.diff {
                                        (d.attribute) ": " (show(&d.before)) " → " (show(&d.after)) "; "
                                    }
                                    @for s in &entry.set {
                                        (s.attribute) " = " (show(&s.value)) "; "
                                    }
                                    @if let Some(f) = &entry.failure {
                                        (cut([f.kind.as_deref(), f.detail.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(": "), 200))
                                    }
                                    @if let Some(d) = &entry.deprovision {
                                        (text(d, "/status").unwrap_or_default()) " " (text(d, "/requested_action").unwrap_or_default())
                                    }
                                }
                                td { (client_label(entry.client.as_ref())) }
                            }
                        }
                    }
                }
            }
        }
    };
    layout("timeline", Tab::Timeline, counts, body, false)
}

/// `/gaps`: deprovisionings reported as gaps and not closed since.
pub fn gaps_page(snapshot: &Snapshot, counts: Counts) -> Markup {
    let body = html! {
        h1 { "Open deprovisioning gaps" }
        p.muted { "Deactivations and deletions the application refused or never answered, reported by a deprovision.gap event and not closed since (among the events this scimtap wrote since it started; scimtap_deprovision_open counts every open one)." }
        table #gaps {
            thead { tr { th { "reported (UTC)" } th { "user" } th { "asked" } th { "first attempt (UTC)" } th { "attempts" } th { "last answer" } th { "client" } } }
            tbody {
                @if snapshot.gaps.is_empty() {
                    tr { td.muted colspan="7" { "No open gap." } }
                }
                @for item in &snapshot.gaps {
                    @let e = &item.event;
                    @let (label, key) = target(e);
                    tr.failure data-event-id=(text(e, "/event_id").unwrap_or_default()) {
                        td.time { (short_time(text(e, "/timestamp").unwrap_or_default())) }
                        td { @if let Some(key) = key { a href=(timeline_href(&key)) { (label) } } @else { (label) } }
                        td { (text(e, "/deprovision/requested_action").unwrap_or_default()) }
                        td.time { (short_time(text(e, "/deprovision/requested_at").unwrap_or_default())) }
                        td { (e.pointer("/deprovision/attempts").map(show).unwrap_or_default()) }
                        td { (e.pointer("/deprovision/last_status").map(show).unwrap_or_default()) " "
                             (text(e, "/deprovision/last_failure").unwrap_or_default()) }
                        td { (client_label(e.get("client"))) }
                    }
                }
            }
        }
    };
    layout("open gaps", Tab::Gaps, counts, body, false)
}

/// `/alerts`: alert episodes firing and not resolved.
pub fn alerts_page(snapshot: &Snapshot, counts: Counts) -> Markup {
    let body = html! {
        h1 { "Active alerts" }
        table #alerts {
            thead { tr { th { "since (UTC)" } th { "rule" } th { "kind" } th { "status" } th { "summary" } } }
            tbody {
                @if snapshot.alerts.is_empty() {
                    tr { td.muted colspan="5" { "No alert is firing." } }
                }
                @for item in &snapshot.alerts {
                    @let e = &item.event;
                    tr.failure {
                        td.time { (short_time(text(e, "/alert/since").or_else(|| text(e, "/timestamp")).unwrap_or_default())) }
                        td { (text(e, "/alert/rule").unwrap_or("—")) }
                        td { (text(e, "/alert/kind").unwrap_or("—")) }
                        td { (text(e, "/alert/status").unwrap_or("firing")) }
                        td { (cut(text(e, "/alert/summary").unwrap_or_default().to_owned(), 300)) }
                    }
                }
            }
        }
    };
    layout("alerts", Tab::Alerts, counts, body, false)
}

/// The label of an hour since the epoch: `09:00`.
fn hour_label(hour: i64) -> String {
    let at = Timestamp::from_unix_millis(u64::try_from(hour * 3_600_000).unwrap_or(0)).to_string();
    at.get(11..16).unwrap_or_default().to_owned()
}

/// `/activity`: actions and failures per hour, the last 24 hours, as an inline SVG bar chart
/// and the same numbers as a table.
pub fn activity_page(snapshot: &Snapshot, counts: Counts) -> Markup {
    const W: i64 = 760;
    const H: i64 = 220;
    const LEFT: i64 = 40;
    const BOTTOM: i64 = 190;
    const TOP: i64 = 20;
    let hours: &[(i64, HourCounts)] = &snapshot.hours;
    let peak = hours
        .iter()
        .map(|(_, c)| c.actions.max(c.failures))
        .max()
        .unwrap_or(0)
        .max(1);
    let slot = (W - LEFT - 10) / i64::try_from(hours.len().max(1)).unwrap_or(1);
    let height = |n: u64| {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        (n.saturating_mul(BOTTOM - TOP) / i64::try_from(peak).unwrap_or(1)).max(i64::from(n > 0))
    };
    let body = html! {
        h1 { "Activity per hour" }
        p.muted { "SCIM actions (blue) and failed exchanges (red) per hour (UTC), the last 24 hours, counted from the events this scimtap wrote since it started." }
        svg #chart xmlns="http://www.w3.org/2000/svg" width=(W) height=(H) viewBox=(format!("0 0 {W} {H}")) role="img" aria-label="actions and failures per hour" {
            line x1=(LEFT) y1=(BOTTOM) x2=(W - 10) y2=(BOTTOM) stroke="#56607a";
            text x="4" y=(TOP + 4) font-size="11" fill="#56607a" { (peak) }
            text x="4" y=(BOTTOM) font-size="11" fill="#56607a" { "0" }
            @for (i, (hour, c)) in hours.iter().enumerate() {
                @let x = LEFT + i64::try_from(i).unwrap_or(0) * slot;
                @let a = height(c.actions);
                @let f = height(c.failures);
                rect.actions x=(x + 2) y=(BOTTOM - a) width=((slot - 4) / 2) height=(a) fill="#3b6fd1" {
                    title { (hour_label(*hour)) ": " (c.actions) " actions" }
                }
                rect.failures x=(x + 2 + (slot - 4) / 2) y=(BOTTOM - f) width=((slot - 4) / 2) height=(f) fill="#c0392b" {
                    title { (hour_label(*hour)) ": " (c.failures) " failures" }
                }
                @if i % 3 == 0 {
                    text x=(x + slot / 2) y=(BOTTOM + 14) font-size="11" text-anchor="middle" fill="#56607a" { (hour_label(*hour)) }
                }
            }
        }
        table #activity {
            thead { tr { th { "hour (UTC)" } th { "events" } th { "actions" } th { "failures" } } }
            tbody {
                @for (hour, c) in hours.iter().rev().filter(|(_, c)| c.events > 0) {
                    tr { td { (hour_label(*hour)) } td { (c.events) } td { (c.actions) } td { (c.failures) } }
                }
            }
        }
    };
    layout("activity", Tab::Activity, counts, body, false)
}

/// `/login`: where a browser without the header trades the token for a session cookie.
pub fn login_page(failed: bool) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "scimtap · sign in" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                nav { span.brand { "scimtap live view" } }
                main {
                    h1 { "Sign in" }
                    @if failed { p.note { "That is not the token." } }
                    form method="post" action="/login" {
                        label { "token (the content of [ui] token_file) "
                            input type="password" name="token" autocomplete="current-password" autofocus; }
                        " "
                        button type="submit" { "Sign in" }
                    }
                }
            }
        }
    }
}

/// The body of a 401.
pub fn unauthorized_page() -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "scimtap · 401" } }
            body {
                h1 { "401: a token is needed" }
                p { "Send " code { "Authorization: Bearer <token>" } ", or " a href="/login" { "sign in" } "." }
            }
        }
    }
}
