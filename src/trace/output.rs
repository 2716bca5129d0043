//! The two forms of a [`Trace`]: aligned lines for people, JSON lines for scripts.

use std::io::Write;

use serde_json::Value;

use super::{Entry, Kind, Trace};

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Created => "created",
            Kind::Updated => "updated",
            Kind::Deactivated => "deactivated",
            Kind::Reactivated => "reactivated",
            Kind::Deleted => "deleted",
            Kind::GroupGained => "group gained",
            Kind::GroupLost => "group lost",
            Kind::DeprovisionGap => "deprovision gap",
            Kind::DeprovisionClosed => "deprovision closed",
            Kind::State => "state now",
        }
    }
}

/// `--json`: one entry per line.
///
/// # Errors
/// When `out` fails.
pub fn write_json(trace: &Trace, out: &mut impl Write) -> std::io::Result<()> {
    for entry in &trace.entries {
        serde_json::to_writer(&mut *out, entry)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// The human form: a line naming the user, then one aligned line per entry (time, what,
/// result, who, details).
///
/// # Errors
/// When `out` fails.
pub fn write_text(trace: &Trace, user: &str, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "{}", heading(trace, user))?;
    let several = trace.ids.len() > 1;
    let rows: Vec<[String; 5]> = trace
        .entries
        .iter()
        .map(|entry| {
            let mut details = details(trace, entry);
            if several {
                let id = entry.user.id.as_deref().unwrap_or("-");
                details = format!("[{}] {details}", short_id(id));
            }
            [
                entry.at.clone().unwrap_or_else(|| "-".to_owned()),
                entry.kind.label().to_owned(),
                result(entry),
                who(entry),
                details,
            ]
        })
        .collect();
    let mut widths = [0; 4];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (width, cell) in widths.iter().zip(&row) {
            line.push_str(&format!("{cell:<width$}  "));
        }
        line.push_str(&row[4]);
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn heading(trace: &Trace, user: &str) -> String {
    let who: Vec<String> = trace
        .ids
        .iter()
        .map(|id| {
            let known = trace
                .entries
                .iter()
                .rev()
                .find(|e| e.user.id.as_deref() == Some(id))
                .map(|e| &e.user);
            let names: Vec<String> = known
                .into_iter()
                .flat_map(|u| {
                    [
                        u.user_name
                            .as_deref()
                            .map(|n| format!("userName {}", shown(n))),
                        u.external_id.as_deref().map(|n| format!("externalId {n}")),
                    ]
                })
                .flatten()
                .collect();
            if names.is_empty() {
                format!("user {id}")
            } else {
                format!("user {id} ({})", names.join(", "))
            }
        })
        .collect();
    let entries = trace.entries.len();
    format!(
        "{}: {}; {entries} entr{}",
        shown(user),
        if who.is_empty() {
            "no id known".to_owned()
        } else {
            who.join("; ")
        },
        if entries == 1 { "y" } else { "ies" }
    )
}

fn result(entry: &Entry) -> String {
    let status = entry
        .status
        .map_or_else(|| "-".to_owned(), |s| s.to_string());
    match (entry.kind, entry.outcome.as_deref()) {
        (Kind::State, _) => String::new(),
        (Kind::DeprovisionGap, _) => "UNCONFIRMED".to_owned(),
        (Kind::DeprovisionClosed, _) => "confirmed".to_owned(),
        (_, Some("success")) => format!("ok {status}"),
        (_, Some(_)) => format!("FAILED {status}"),
        (_, None) => status,
    }
}

fn who(entry: &Entry) -> String {
    let Some(client) = &entry.client else {
        return String::new();
    };
    let field = |name: &str| client.get(name).and_then(Value::as_str);
    field("name")
        .or_else(|| field("idp"))
        .map(str::to_owned)
        .or_else(|| field("token_fingerprint").map(|t| format!("token {t}")))
        .unwrap_or_else(|| "-".to_owned())
}

fn details(trace: &Trace, entry: &Entry) -> String {
    let mut parts: Vec<String> = Vec::new();
    let user = &entry.user;
    match entry.kind {
        Kind::Created => {
            let names = [
                user.user_name
                    .as_deref()
                    .map(|n| format!("userName {}", shown(n))),
                user.external_id
                    .as_deref()
                    .map(|n| format!("externalId {n}")),
                user.id.as_deref().map(|n| format!("id {n}")),
            ];
            parts.push(names.into_iter().flatten().collect::<Vec<_>>().join(", "));
        }
        Kind::Updated => {
            if !entry.diff.is_empty() {
                let diff: Vec<String> = entry
                    .diff
                    .iter()
                    .map(|d| {
                        format!(
                            "{}: {} → {}",
                            d.attribute,
                            value(&d.before),
                            value(&d.after)
                        )
                    })
                    .collect();
                parts.push(diff.join(", "));
            } else if !entry.set.is_empty() {
                let set: Vec<String> = entry
                    .set
                    .iter()
                    .map(|s| format!("{} → {}", s.attribute, value(&s.value)))
                    .collect();
                parts.push(set.join(", "));
            } else if !entry.attributes.is_empty() {
                parts.push(format!("touched {}", entry.attributes.join(", ")));
            }
            if entry.noop {
                // A password sync is a noop to the state, which never holds one.
                parts.push("no change the state can see".to_owned());
            }
        }
        Kind::GroupGained | Kind::GroupLost => {
            if let Some(group) = &entry.group {
                let name = group
                    .name
                    .as_deref()
                    .map_or_else(|| group.id.clone(), |name| format!("\"{}\"", shown(name)));
                parts.push(format!(
                    "{name} by {}",
                    entry.action.as_deref().unwrap_or("-")
                ));
            }
        }
        Kind::DeprovisionGap | Kind::DeprovisionClosed => {
            parts.push(deprovision(entry.deprovision.as_ref()));
        }
        Kind::State => {
            if let Some(state) = &entry.state {
                parts.push(
                    match state.active {
                        Some(true) => "active",
                        Some(false) => "inactive",
                        None => "active unknown",
                    }
                    .to_owned(),
                );
                if let Some(name) = &user.user_name {
                    parts.push(format!("userName {}", shown(name)));
                }
                let groups: Vec<String> = state
                    .groups
                    .iter()
                    .map(|g| g.name.as_deref().map_or_else(|| g.id.clone(), shown))
                    .collect();
                parts.push(if groups.is_empty() {
                    "in no group".to_owned()
                } else {
                    format!("in {}", groups.join(", "))
                });
            }
        }
        Kind::Deactivated | Kind::Reactivated | Kind::Deleted => {}
    }
    if entry.outcome_reason.as_deref() == Some("already_absent") {
        parts.push("already absent".to_owned());
    }
    if let Some(failure) = &entry.failure {
        let reason: Vec<&str> = [failure.kind.as_deref(), failure.detail.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        parts.push(reason.join(": "));
    }
    if let Some(retried) = &entry.retry_of {
        let when = trace
            .entries
            .iter()
            .find(|e| e.event_id.as_deref() == Some(retried))
            .and_then(|e| e.at.as_deref());
        parts.push(format!("retry of {}", when.unwrap_or(retried)));
    }
    parts.retain(|p| !p.is_empty());
    parts.join("; ")
}

fn deprovision(d: Option<&Value>) -> String {
    let Some(d) = d else {
        return String::new();
    };
    let field = |name: &str| d.get(name).filter(|v| !v.is_null());
    let mut out = format!(
        "{} asked {}",
        field("requested_action")
            .and_then(Value::as_str)
            .unwrap_or("deprovisioning"),
        field("requested_at").and_then(Value::as_str).unwrap_or("-")
    );
    if let Some(by) = field("confirmed_by").and_then(Value::as_str) {
        out.push_str(&format!(", confirmed by {by}"));
    }
    if let Some(ms) = field("latency_ms").and_then(Value::as_f64) {
        out.push_str(&format!(" after {:.1} s", ms / 1000.0));
    }
    if let Some(attempts) = field("attempts").and_then(Value::as_u64) {
        out.push_str(&format!(
            ", {attempts} attempt{}",
            if attempts == 1 { "" } else { "s" }
        ));
    }
    if let Some(status) = field("last_status") {
        out.push_str(&format!(", last status {status}"));
    }
    out
}

/// A value as a person reads it: strings quoted, pseudonyms shortened, absent as `(none)`,
/// and cut after [`VALUE_CHARS`] characters (`--json` has it whole).
fn value(v: &Value) -> String {
    let text = match v {
        Value::Null => return "(none)".to_owned(),
        Value::String(s) => format!("\"{}\"", shown(s)),
        other => other.to_string(),
    };
    match text.char_indices().nth(VALUE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

const VALUE_CHARS: usize = 60;

/// A pseudonym (`hmac-sha256:` and 64 hex digits) cut to its first 12 digits: enough to tell
/// two apart on screen; `--json` keeps them whole.
fn shown(name: &str) -> String {
    match name.strip_prefix("hmac-sha256:") {
        Some(hex) if hex.len() > 12 && hex.is_ascii() => format!("hmac-sha256:{}…", &hex[..12]),
        _ => name.to_owned(),
    }
}

fn short_id(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}
