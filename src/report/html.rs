//! The report as one self-contained HTML page: inline CSS, the chart as inline SVG, no script
//! and nothing fetched (a Content-Security-Policy forbids both), laid out to print.
//!
//! Plain `write!` with one escaping wrapper, [`Esc`], rather than a template crate: the page
//! is one function long, and every value from the audit files (user names and error details
//! are whatever an IdP or an app sent) goes through `Esc` on its way in. Numbers are written
//! as numbers.

use std::fmt::{self, Write};

use super::{chart, DeprovisionStatus, Report};

/// Text made safe for HTML element content and quoted attribute values.
pub(super) struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

/// An optional text, escaped, or a dash.
struct Or<'a>(Option<&'a str>);

impl fmt::Display for Or<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(text) => Esc(text).fmt(f),
            None => f.write_str("—"),
        }
    }
}

/// A latency in words: `850 ms`, `12.3 s`, `4 min 05 s`, `2 h 03 min`.
pub(super) fn latency(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else if ms < 60_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        let secs = (ms / 1000.0).round() as u64;
        if secs < 3600 {
            format!("{} min {:02} s", secs / 60, secs % 60)
        } else {
            format!("{} h {:02} min", secs / 3600, secs % 3600 / 60)
        }
    }
}

const STYLE: &str = r#"
:root { --ink: #1d2430; --muted: #5b6575; --line: #d8dde5; --ok: #1f7a3d; --bad: #b42318;
        --warn: #9a6700; --blue: #2f5fb3; --red: #d1453b; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       margin: 0 auto; max-width: 1180px; padding: 24px 32px;
       -webkit-print-color-adjust: exact; print-color-adjust: exact; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 2px solid var(--line); padding-bottom: 4px; }
.meta { color: var(--muted); margin: 2px 0; }
.cards { display: grid; grid-template-columns: repeat(6, 1fr); gap: 10px; margin: 18px 0 4px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; }
.card .n { font-size: 26px; font-weight: 650; }
.card .l { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .s { color: var(--muted); font-size: 12px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: #f3f5f8; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tfoot td { font-weight: 600; border-top: 2px solid var(--line); }
.ok { color: var(--ok); font-weight: 600; }
.bad { color: var(--bad); font-weight: 600; }
.warn { color: var(--warn); font-weight: 600; }
.muted { color: var(--muted); }
.mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; word-break: break-all; }
.chart { width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
.chart .grid { stroke: #e6e9ee; }
.chart .axisline { stroke: #8a94a3; }
.chart .axis { fill: var(--muted); font-size: 11px; }
.chart .writes { fill: var(--blue); }
.chart .failures { fill: var(--red); }
.verdict { border-radius: 6px; padding: 10px 14px; margin: 6px 0; }
.verdict.ok { background: #e8f5ec; }
.verdict.bad { background: #fdecea; }
footer { margin-top: 28px; color: var(--muted); font-size: 12px; }
@media print {
  body { padding: 0; max-width: none; font-size: 11px; }
  h2 { break-after: avoid; }
  thead { display: table-header-group; }
  tr, .card, .chart { break-inside: avoid; }
}
"#;

/// Writes the page.
///
/// # Errors
/// When `out` fails.
pub fn write_html(report: &Report, out: &mut impl std::io::Write) -> std::io::Result<()> {
    let mut page = String::with_capacity(64 * 1024);
    // Writing into a String cannot fail.
    let _ = render(report, &mut page);
    out.write_all(page.as_bytes())
}

fn render(report: &Report, out: &mut String) -> fmt::Result {
    let period = format!(
        "{} to {}",
        report.period.from.as_deref().unwrap_or("the first event"),
        report.period.to.as_ref().map_or_else(
            || "the last event".to_owned(),
            |to| format!("{to} (exclusive)")
        ),
    );
    writeln!(
        out,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="scimtap {version}">
<title>SCIM audit report: {period}</title>
<style>{STYLE}</style></head><body>
<header><h1>SCIM audit report{route}</h1>
<p class="meta">Period: <strong>{period}</strong> (UTC). Events from {first} to {last}.</p>
<p class="meta">Generated {generated} by scimtap {version} from {nfiles} file{s}: <span class="mono">{files}</span></p>
</header>"#,
        version = env!("CARGO_PKG_VERSION"),
        route = report
            .period
            .route
            .as_ref()
            .map(|r| format!(": route {}", Esc(r)))
            .unwrap_or_default(),
        period = Esc(&period),
        first = Or(report.period.first_event.as_deref()),
        last = Or(report.period.last_event.as_deref()),
        generated = Esc(&report.generated_at),
        nfiles = report.files.len(),
        s = if report.files.len() == 1 { "" } else { "s" },
        files = Esc(&report.files.join(", ")),
    )?;
    cards(report, out)?;
    out.push_str("<section id=\"activity\"><h2>Activity</h2>\n");
    chart::svg(&report.timeline, out)?;
    out.push_str("</section>\n");
    actions(report, out)?;
    deprovisionings(report, out)?;
    failures(report, out)?;
    alerts(report, out)?;
    integrity(report, out)?;
    let t = &report.totals;
    writeln!(
        out,
        r#"<footer><p>Exchanges are the events of IdP requests; the deprovisioning tracker's {tracker} event{ts} and {alerts} alert event{as_} are counted in their own sections. Not counted: {outside} event{os} outside the period, {dups} read twice, {skipped} line{ls} that are not events (integrity records, other formats, cut lines), {untimed} without a readable timestamp{others}. Field names and meanings: docs/report.md; the JSON form (<span class="mono">--format json</span>) carries the same numbers.</p></footer>
</body></html>"#,
        tracker = t.tracker_events,
        ts = plural(t.tracker_events),
        alerts = t.alert_events,
        as_ = plural(t.alert_events),
        outside = t.outside_period,
        os = plural(t.outside_period),
        dups = t.duplicates,
        skipped = t.lines_skipped,
        ls = plural(t.lines_skipped),
        untimed = t.without_timestamp,
        others = if report.period.route.is_some() {
            format!(", {} of other routes", t.other_routes)
        } else {
            String::new()
        },
    )
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn cards(report: &Report, out: &mut String) -> fmt::Result {
    let t = &report.totals;
    let d = &report.deprovisionings;
    let (verdict, class) = integrity_verdict(report);
    out.push_str("<section class=\"cards\">\n");
    let mut card = |label: &str, n: &str, class: &str, sub: String| {
        writeln!(
            out,
            r#"<div class="card"><div class="l">{label}</div><div class="n {class}">{n}</div><div class="s">{sub}</div></div>"#,
            label = Esc(label),
            n = Esc(n),
            class = Esc(class),
            sub = Esc(&sub),
        )
    };
    card(
        "Exchanges",
        &t.exchanges.to_string(),
        "",
        format!("{} writes, {} reads", t.writes, t.reads),
    )?;
    card(
        "Succeeded",
        &t.success.to_string(),
        "ok",
        format!("{} failed", t.failure),
    )?;
    card(
        "Deprovisionings",
        &d.total.to_string(),
        "",
        format!("{} confirmed, {} withdrawn", d.confirmed, d.withdrawn),
    )?;
    card(
        "Unconfirmed",
        &(d.open_gaps + d.unconfirmed).to_string(),
        if d.open_gaps + d.unconfirmed > 0 {
            "bad"
        } else {
            "ok"
        },
        format!("{} open gap{}", d.open_gaps, plural(d.open_gaps)),
    )?;
    card(
        "Alerts firing",
        &report.alerts.firing.to_string(),
        if report.alerts.firing > 0 {
            "bad"
        } else {
            "ok"
        },
        format!(
            "{} episode{}, {} resolved",
            report.alerts.episodes.len(),
            plural(report.alerts.episodes.len() as u64),
            report.alerts.resolved
        ),
    )?;
    card(
        "Integrity",
        verdict,
        class,
        match &report.integrity.broken {
            Some(broken) => format!("{} at seq {}", broken.kind, broken.seq),
            None => format!("{} records checked", report.integrity.records),
        },
    )?;
    out.push_str("</section>\n");
    Ok(())
}

fn integrity_verdict(report: &Report) -> (&'static str, &'static str) {
    match report.integrity.status {
        "intact" => ("intact", "ok"),
        "broken" => ("BROKEN", "bad"),
        _ => ("not checked", "warn"),
    }
}

fn actions(report: &Report, out: &mut String) -> fmt::Result {
    out.push_str(
        "<section id=\"actions\"><h2>Actions by outcome</h2>\n<table><thead><tr><th>action</th>\
         <th class=\"num\">success</th><th class=\"num\">failure</th><th class=\"num\">total</th>\
         </tr></thead><tbody>\n",
    );
    for row in &report.actions {
        writeln!(
            out,
            "<tr><td class=\"mono\">{}</td><td class=\"num\">{}</td><td class=\"num{}\">{}</td><td class=\"num\">{}</td></tr>",
            Esc(&row.action),
            row.success,
            if row.failure > 0 { " bad" } else { "" },
            row.failure,
            row.total
        )?;
    }
    let t = &report.totals;
    writeln!(
        out,
        "</tbody><tfoot><tr><td>all exchanges ({} without an action: reads, lists, searches, discovery)</td>\
         <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr></tfoot></table>\n\
         <p class=\"muted\">An exchange with several actions counts once in each row; the last row counts exchanges.</p></section>",
        t.reads, t.success, t.failure, t.exchanges
    )
}

fn deprovisionings(report: &Report, out: &mut String) -> fmt::Result {
    let d = &report.deprovisionings;
    writeln!(
        out,
        "<section id=\"deprovisionings\"><h2>Deprovisionings</h2>\n<p>{} deactivation{} or deletion{}: \
         <span class=\"ok\">{} confirmed</span>, <span class=\"{}\">{} open gap{}</span>, \
         <span class=\"{}\">{} unconfirmed</span>, {} withdrawn (reactivated).</p>",
        d.total,
        plural(d.total),
        plural(d.total),
        d.confirmed,
        if d.open_gaps > 0 { "bad" } else { "muted" },
        d.open_gaps,
        plural(d.open_gaps),
        if d.unconfirmed > 0 { "warn" } else { "muted" },
        d.unconfirmed,
        d.withdrawn,
    )?;
    if d.items.is_empty() {
        return out.write_str(
            "<p class=\"muted\">No deactivation or deletion in this period.</p></section>\n",
        );
    }
    out.push_str(
        "<table><thead><tr><th>first asked</th><th>action</th><th>user</th><th>who</th>\
         <th class=\"num\">attempts</th><th>status</th><th>confirmed</th><th class=\"num\">latency</th>\
         <th>last failure</th></tr></thead><tbody>\n",
    );
    for item in &d.items {
        let class = match item.status {
            DeprovisionStatus::Confirmed => "ok",
            DeprovisionStatus::Gap => "bad",
            DeprovisionStatus::Unconfirmed => "warn",
            DeprovisionStatus::Withdrawn => "muted",
        };
        let confirmed = match (&item.confirmed_by, &item.confirmed_at) {
            (Some(by), Some(at)) => format!("{at} by {by}"),
            (Some(by), None) => format!("by {by}"),
            _ => String::new(),
        };
        let failure = match (&item.last_status, &item.last_failure) {
            (Some(status), Some(why)) => format!("{status}: {why}"),
            (Some(status), None) => status.to_string(),
            (None, Some(why)) => why.clone(),
            (None, None) => String::new(),
        };
        writeln!(
            out,
            "<tr><td class=\"mono\">{asked}</td><td class=\"mono\">{action}</td><td title=\"{id}\">{target}</td>\
             <td>{who}</td><td class=\"num\">{attempts}</td><td class=\"{class}\">{status}</td>\
             <td class=\"mono\">{confirmed}</td><td class=\"num\">{latency}</td><td>{failure}</td></tr>",
            asked = Esc(&item.first_asked),
            action = Esc(&item.action),
            id = Esc(item.target_id.as_deref().unwrap_or("")),
            target = Or(item.target.as_deref()),
            who = Or(item.who.as_deref()),
            attempts = item.attempts,
            status = item.status.as_str(),
            confirmed = Esc(&confirmed),
            latency = Esc(&item.latency_ms.map(latency).unwrap_or_default()),
            failure = Esc(&failure),
        )?;
    }
    out.write_str(
        "</tbody></table>\n<p class=\"muted\">Confirmed: an attempt succeeded (<em>response</em>), or the \
         deprovisioning tracker closed it (<em>read</em>: a later read showed the user inactive or gone). \
         Latency: from the first attempt until the confirmation. Gap: still open after the tracker's \
         <span class=\"mono\">confirm_within_secs</span>.</p></section>\n",
    )
}

fn failures(report: &Report, out: &mut String) -> fmt::Result {
    let failed = report.totals.failure;
    writeln!(
        out,
        "<section id=\"failures\"><h2>Failures by reason</h2>\n<p>{failed} failed exchange{}.</p>",
        plural(failed)
    )?;
    if report.failures.is_empty() {
        return out.write_str("</section>\n");
    }
    out.push_str(
        "<table><thead><tr><th>reason</th><th class=\"num\">count</th><th>statuses</th><th>actions</th>\
         <th>first</th><th>last</th><th>example</th></tr></thead><tbody>\n",
    );
    for group in &report.failures {
        let statuses: Vec<String> = group.statuses.iter().map(u64::to_string).collect();
        writeln!(
            out,
            "<tr><td class=\"mono\">{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"mono\">{}</td>\
             <td class=\"mono\">{}</td><td class=\"mono\">{}</td><td>{}</td></tr>",
            Esc(&group.reason),
            group.count,
            Esc(&statuses.join(", ")),
            Esc(&group.actions.join(", ")),
            Esc(&group.first_at),
            Esc(&group.last_at),
            Or(group.example.as_deref()),
        )?;
    }
    out.write_str(
        "</tbody></table>\n<p class=\"muted\">Reason: the transport failure (<span class=\"mono\">failure.kind</span>), \
         else the SCIM error type the app answered, else the status.</p></section>\n",
    )
}

fn alerts(report: &Report, out: &mut String) -> fmt::Result {
    let a = &report.alerts;
    out.push_str("<section id=\"alerts\"><h2>Alerts</h2>\n");
    if a.episodes.is_empty() {
        return out.write_str("<p class=\"muted\">No alert events in this period.</p></section>\n");
    }
    writeln!(
        out,
        "<p>{} episode{}: <span class=\"{}\">{} firing</span>, {} resolved.</p>\n\
         <table><thead><tr><th>since</th><th>rule</th><th>kind</th><th>status</th><th>resolved</th>\
         <th>summary</th><th class=\"num\">events</th></tr></thead><tbody>",
        a.episodes.len(),
        plural(a.episodes.len() as u64),
        if a.firing > 0 { "bad" } else { "muted" },
        a.firing,
        a.resolved
    )?;
    for episode in &a.episodes {
        let class = match episode.status.as_deref() {
            Some("firing") => "bad",
            Some("resolved") => "ok",
            _ => "muted",
        };
        writeln!(
            out,
            "<tr><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{}</td><td class=\"mono\">{}</td>\
             <td>{}</td><td class=\"num\">{}</td></tr>",
            Esc(&episode.since),
            Or(episode.rule.as_deref()),
            Or(episode.kind.as_deref()),
            Or(episode.status.as_deref()),
            Or(episode.resolved_at.as_deref()),
            Or(episode.summary.as_deref()),
            episode.events,
        )?;
    }
    out.write_str("</tbody></table></section>\n")
}

fn integrity(report: &Report, out: &mut String) -> fmt::Result {
    let i = &report.integrity;
    out.push_str("<section id=\"integrity\"><h2>Integrity</h2>\n");
    let key = if i.keyed {
        "with the HMAC key"
    } else {
        "without a key (plain SHA-256; a keyed chain fails at its first record)"
    };
    match (i.status, &i.broken) {
        ("intact", _) => writeln!(
            out,
            "<div class=\"verdict ok\"><span class=\"ok\">Chain intact</span>: {} records (seq {}..{}), \
             instance{} <span class=\"mono\">{}</span>, {}{}. Checked {key}, as <span class=\"mono\">scimtap verify</span> does.</div>",
            i.records,
            i.first_seq,
            i.last_seq,
            plural(i.instances.len() as u64),
            Esc(&i.instances.join(", ")),
            if i.closed {
                "closed cleanly"
            } else {
                "open (no closing record yet)"
            },
            if i.unclean_restarts > 0 {
                format!(
                    "; {} restart{} after an unclean stop (events queued then may be missing)",
                    i.unclean_restarts,
                    plural(i.unclean_restarts)
                )
            } else {
                String::new()
            },
        )?,
        (_, Some(broken)) => writeln!(
            out,
            "<div class=\"verdict bad\"><span class=\"bad\">Chain BROKEN</span> at seq {} \
             (<span class=\"mono\">{}:{}</span>): <strong>{}</strong>: {}. Checked {key}.</div>",
            broken.seq,
            Esc(&broken.file),
            broken.line,
            Esc(&broken.kind),
            Esc(&broken.detail),
        )?,
        _ => out.write_str(
            "<div class=\"verdict bad\"><span class=\"warn\">Not checked</span>: no file given carries the hash chain.</div>\n",
        )?,
    }
    let skipped = if i.skipped_files.is_empty() {
        String::new()
    } else {
        format!(
            "; skipped (no chain fields: another format's output): {}",
            i.skipped_files.join(", ")
        )
    };
    let checked = i.files.join(", ");
    writeln!(
        out,
        "<p class=\"muted\">Files checked, in chain order: <span class=\"mono\">{}</span>{}. The whole files are \
         checked, not only the period.</p></section>",
        Or(Some(checked.as_str()).filter(|f| !f.is_empty())),
        Esc(&skipped),
    )
}
