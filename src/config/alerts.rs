//! `[[alerts]]`: rules the audit worker evaluates over the events it writes, each over a sliding
//! window (or, for `deprovision_gap`, over the tracker's gap events). A rule that holds fires an
//! `alert.firing` event once per episode, and an `alert.resolved` event when it has not held
//! for `resolve_after_secs` (crate::alerts). Read once at startup: a reload (SIGHUP) keeps the
//! running rules.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::validate::{is_label_name, Checker};

/// The most events a count threshold (or `min_events`) may ask for: the windows keep counts,
/// but a rule asking for more than this is a typo.
pub const MAX_COUNT_THRESHOLD: f64 = 1_000_000.0;

/// `min_events` of a `failure_rate` rule when not set: a ratio over fewer events is noise.
pub const DEFAULT_MIN_EVENTS: u64 = 10;

/// `[[alerts]]`: one rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlert {
    /// Unique; names the rule in events (`alert.rule`), metrics and webhooks.
    name: Spanned<String>,
    /// What the rule watches (see [`AlertKind`]).
    kind: Spanned<AlertKind>,
    /// The sliding window, in seconds (not for `deprovision_gap`).
    window_secs: Option<Spanned<f64>>,
    /// A count of events (a ratio above 0 and at most 1 for `failure_rate`); not for
    /// `deprovision_gap`, which fires on every gap.
    threshold: Option<Spanned<f64>>,
    /// `failure_rate` only: the fewest events in the window the ratio is judged on.
    min_events: Option<Spanned<u64>>,
    /// `status_burst` only: the HTTP statuses counted (`[429]`, `[401, 403]`).
    statuses: Option<Spanned<Vec<u16>>>,
    /// Only events of this client: its `[[clients]]` name, else `unknown/<idp>` or `unknown`.
    client: Option<Spanned<String>>,
    /// Only events with this action (`user.create`, `scim.read` for a request without one).
    action: Option<Spanned<String>>,
    /// How long the condition must stay false before the episode resolves; default the
    /// window (not for `deprovision_gap`, which resolves when the deprovisioning is confirmed).
    resolve_after_secs: Option<Spanned<f64>>,
    /// Where each firing and resolution is POSTed (Slack-compatible JSON), `http` or `https`.
    webhook_url: Option<Spanned<String>>,
}

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// The share of failed events per client and action reaches `threshold`.
    FailureRate,
    /// `threshold` events answered with one of `statuses`, per client.
    StatusBurst,
    /// `threshold` users deactivated or deleted (distinct targets), per client.
    MassDeactivation,
    /// The same request (client, method, path, action) seen `threshold` times.
    RetryStorm,
    /// A `deprovision.gap` event (needs `[state]`): one episode per gap, resolved when the
    /// deprovisioning is confirmed.
    DeprovisionGap,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::FailureRate => "failure_rate",
            AlertKind::StatusBurst => "status_burst",
            AlertKind::MassDeactivation => "mass_deactivation",
            AlertKind::RetryStorm => "retry_storm",
            AlertKind::DeprovisionGap => "deprovision_gap",
        }
    }
}

/// One resolved `[[alerts]]` rule.
#[derive(Debug, Clone)]
pub struct AlertRule {
    pub name: String,
    pub kind: AlertKind,
    /// Zero for `deprovision_gap`.
    pub window: Duration,
    /// A count, or a ratio for `failure_rate`; 1 for `deprovision_gap`.
    pub threshold: f64,
    pub min_events: u64,
    pub statuses: Vec<u16>,
    pub client: Option<String>,
    pub action: Option<String>,
    pub resolve_after: Duration,
    pub webhook: Option<WebhookUrl>,
}

/// A webhook URL. Incoming-webhook URLs carry their secret in the path (Slack's
/// `/services/T…/B…/<secret>`), so Debug and Display show the scheme and host only, with a
/// short digest of the whole URL so that a changed URL still compares different.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    pub uri: http::Uri,
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.uri.to_string().as_bytes());
        write!(
            f,
            "{}://{}/… (sha256 {})",
            self.uri.scheme_str().unwrap_or("http"),
            self.uri.host().unwrap_or_default(),
            hex::encode(&digest[..4])
        )
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({self})")
    }
}

/// Every `[[alerts]]` rule; `state_on` says whether `[state]` is configured (a
/// `deprovision_gap` rule needs it).
pub(super) fn validate_alerts(
    c: &mut Checker<'_>,
    raw: &[Spanned<RawAlert>],
    state_on: bool,
) -> Vec<AlertRule> {
    let mut rules: Vec<AlertRule> = Vec::new();
    for (i, entry) in raw.iter().enumerate() {
        let key = |field: &str| format!("alerts[{i}].{field}");
        let a = entry.get_ref();
        let kind = *a.kind.get_ref();
        let name = a.name.get_ref().clone();
        if !is_label_name(&name) {
            c.at(
                a.name.span(),
                &key("name"),
                "must be 1 to 64 letters, digits, `_`, `-` or `.` (it labels a metric)",
            );
        } else if rules.iter().any(|r| r.name == name) {
            c.at(
                a.name.span(),
                &key("name"),
                format!("duplicate alert name `{name}`"),
            );
        }
        // What only some kinds take.
        let refuse =
            |c: &mut Checker<'_>, span: Option<std::ops::Range<usize>>, field: &str, why: &str| {
                if let Some(span) = span {
                    c.at(
                        span,
                        &key(field),
                        format!("not for kind = \"{}\": {why}", kind.as_str()),
                    );
                }
            };
        let gap = kind == AlertKind::DeprovisionGap;
        let window = match (&a.window_secs, gap) {
            (Some(w), false) => c.secs(w, &key("window_secs")),
            (None, false) => {
                c.at(
                    entry.span(),
                    &key("window_secs"),
                    "missing: the window the rule counts over, in seconds",
                );
                Duration::from_secs(1)
            }
            (w, true) => {
                refuse(
                    c,
                    w.as_ref().map(Spanned::span),
                    "window_secs",
                    "it fires on each gap",
                );
                Duration::ZERO
            }
        };
        let threshold = match (&a.threshold, kind) {
            (Some(t), AlertKind::DeprovisionGap) => {
                refuse(c, Some(t.span()), "threshold", "it fires on each gap");
                1.0
            }
            (None, AlertKind::DeprovisionGap) => 1.0,
            (None, _) => {
                c.at(entry.span(), &key("threshold"), "missing");
                1.0
            }
            (Some(t), AlertKind::FailureRate) => {
                let v = *t.get_ref();
                if !(v > 0.0 && v <= 1.0) {
                    c.at(t.span(), &key("threshold"), format!("a failure_rate threshold is a ratio above 0 and at most 1 (0.5 = half), got {v}"));
                }
                v
            }
            (Some(t), _) => {
                let v = *t.get_ref();
                if !((1.0..=MAX_COUNT_THRESHOLD).contains(&v) && v.fract() == 0.0) {
                    c.at(t.span(), &key("threshold"), format!("must be a whole number of events from 1 to {MAX_COUNT_THRESHOLD}, got {v}"));
                }
                v
            }
        };
        let min_events = match (&a.min_events, kind) {
            (Some(m), AlertKind::FailureRate) => {
                if *m.get_ref() == 0 || *m.get_ref() as f64 > MAX_COUNT_THRESHOLD {
                    c.at(
                        m.span(),
                        &key("min_events"),
                        format!("must be from 1 to {MAX_COUNT_THRESHOLD}"),
                    );
                }
                *m.get_ref()
            }
            (None, AlertKind::FailureRate) => DEFAULT_MIN_EVENTS,
            (m, _) => {
                refuse(
                    c,
                    m.as_ref().map(Spanned::span),
                    "min_events",
                    "only failure_rate judges a ratio",
                );
                0
            }
        };
        let statuses = match (&a.statuses, kind) {
            (Some(s), AlertKind::StatusBurst) => {
                if s.get_ref().is_empty() || s.get_ref().iter().any(|st| !(100..=599).contains(st))
                {
                    c.at(
                        s.span(),
                        &key("statuses"),
                        "must list HTTP statuses from 100 to 599, e.g. [429] or [401, 403]",
                    );
                }
                s.get_ref().clone()
            }
            (None, AlertKind::StatusBurst) => {
                c.at(
                    entry.span(),
                    &key("statuses"),
                    "missing: the statuses counted, e.g. [429] or [401, 403]",
                );
                Vec::new()
            }
            (s, _) => {
                refuse(
                    c,
                    s.as_ref().map(Spanned::span),
                    "statuses",
                    "only status_burst counts statuses",
                );
                Vec::new()
            }
        };
        if let Some(action) = &a.action {
            let allowed: &[&str] = match kind {
                AlertKind::MassDeactivation | AlertKind::DeprovisionGap => {
                    &["user.deactivate", "user.delete"]
                }
                _ => &[],
            };
            if !allowed.is_empty() && !allowed.contains(&action.get_ref().as_str()) {
                c.at(action.span(), &key("action"), format!("kind = \"{}\" watches user.deactivate and user.delete: the filter must be one of them", kind.as_str()));
            }
        }
        let resolve_after = match (&a.resolve_after_secs, gap) {
            (Some(r), false) => c.secs(r, &key("resolve_after_secs")),
            (None, false) => window,
            (r, true) => {
                refuse(
                    c,
                    r.as_ref().map(Spanned::span),
                    "resolve_after_secs",
                    "a gap resolves when the deprovisioning is confirmed",
                );
                Duration::ZERO
            }
        };
        if gap && !state_on {
            c.at(
                a.kind.span(),
                &key("kind"),
                "deprovision_gap needs a [state] section (the deprovisioning tracker)",
            );
        }
        let webhook = a.webhook_url.as_ref().and_then(|url| {
            let parsed = url.get_ref().parse::<http::Uri>().ok().filter(|u| {
                matches!(u.scheme_str(), Some("http" | "https"))
                    && u.host().is_some_and(|h| !h.is_empty())
            });
            if parsed.is_none() {
                // The URL itself is not repeated: it may hold the webhook's secret.
                c.at(
                    url.span(),
                    &key("webhook_url"),
                    "must be an http:// or https:// URL with a host",
                );
            }
            parsed.map(|uri| WebhookUrl { uri })
        });
        rules.push(AlertRule {
            name,
            kind,
            window,
            threshold,
            min_events,
            statuses,
            client: a.client.as_ref().map(|s| s.get_ref().clone()),
            action: a.action.as_ref().map(|s| s.get_ref().clone()),
            resolve_after,
            webhook,
        });
    }
    rules
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, ConfigError, Problem};

    const BASE: &str = "[listen]\naddress = \"127.0.0.1:8080\"\n[upstream]\nurl = \"http://127.0.0.1:9000\"\n[[sinks]]\ntype = \"stdout\"\n";

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(&format!("{BASE}{extra}"), Path::new("proxy.toml"))
    }

    fn problems(extra: &str) -> Vec<Problem> {
        match parse(extra) {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn rules_are_read_with_their_defaults() {
        let config = parse(
            "[[alerts]]\nname = \"okta-failures\"\nkind = \"failure_rate\"\nwindow_secs = 300\nthreshold = 0.5\nclient = \"okta-prod\"\n\
             [[alerts]]\nname = \"probing\"\nkind = \"status_burst\"\nwindow_secs = 60\nthreshold = 20\nstatuses = [401, 403]\nresolve_after_secs = 600\nwebhook_url = \"https://hooks.slack.com/services/T0/B0/sekrit\"\n",
        )
        .expect("valid");
        let [rate, burst] = &config.alerts[..] else {
            panic!("{:?}", config.alerts)
        };
        assert_eq!(
            (rate.kind, rate.threshold, rate.min_events),
            (AlertKind::FailureRate, 0.5, DEFAULT_MIN_EVENTS)
        );
        assert_eq!(rate.resolve_after, Duration::from_secs(300));
        assert_eq!(rate.client.as_deref(), Some("okta-prod"));
        assert_eq!(burst.statuses, [401, 403]);
        assert_eq!(burst.resolve_after, Duration::from_secs(600));
        // The webhook's secret path is never shown.
        let shown = format!("{:?} {}", burst.webhook, burst.webhook.as_ref().unwrap());
        assert!(
            !shown.contains("sekrit") && shown.contains("hooks.slack.com"),
            "{shown}"
        );
    }

    #[test]
    fn each_kind_takes_only_its_own_keys_and_every_problem_is_named() {
        let p = problems(
            "[[alerts]]\nname = \"a\"\nkind = \"failure_rate\"\nwindow_secs = 60\nthreshold = 2\nstatuses = [429]\n\
             [[alerts]]\nname = \"a\"\nkind = \"status_burst\"\nwindow_secs = 60\nthreshold = 1.5\n\
             [[alerts]]\nname = \"gap\"\nkind = \"deprovision_gap\"\nwindow_secs = 60\n\
             [[alerts]]\nname = \"b c\"\nkind = \"retry_storm\"\nthreshold = 5\nwebhook_url = \"ftp://x/secret-path\"\n",
        );
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        for key in [
            "alerts[0].threshold",
            "alerts[0].statuses",
            "alerts[1].name",
            "alerts[1].threshold",
            "alerts[1].statuses",
            "alerts[2].window_secs",
            "alerts[2].kind",
            "alerts[3].name",
            "alerts[3].window_secs",
            "alerts[3].webhook_url",
        ] {
            assert!(keys.contains(&key), "{key} not in {p:#?}");
        }
        assert!(p.iter().all(|p| p.line.is_some()), "{p:#?}");
        assert!(!format!("{p:?}").contains("secret-path"), "{p:?}");
    }

    #[test]
    fn an_unknown_kind_or_key_is_refused() {
        let p = problems(
            "[[alerts]]\nname = \"a\"\nkind = \"vibes\"\nwindow_secs = 1\nthreshold = 1\n",
        );
        assert!(p[0].message.contains("unknown variant"), "{p:?}");
        let p = problems("[[alerts]]\nname = \"a\"\nkind = \"retry_storm\"\nwindow_secs = 1\nthreshold = 1\ncolour = \"red\"\n");
        assert!(p[0].message.contains("unknown field"), "{p:?}");
    }

    #[test]
    fn a_gap_rule_with_state_is_valid() {
        let config = parse("[state]\npath = \"s.db\"\n[[alerts]]\nname = \"gaps\"\nkind = \"deprovision_gap\"\nwebhook_url = \"http://127.0.0.1:9/hook\"\n").expect("valid");
        assert_eq!(config.alerts[0].kind, AlertKind::DeprovisionGap);
    }
}
