//! Alert rules (`[[alerts]]`): conditions over the events the audit worker writes, each
//! reported once per episode.
//!
//! The audit worker hands every event it writes to [`Alerts::observe`] and, once a second,
//! calls [`Alerts::tick`] (traffic or not, so an episode resolves when the traffic stops).
//! A rule keeps one sliding window per key (per client and action for `failure_rate`, per
//! client for `status_burst` and `mass_deactivation`, per request for `retry_storm`; see
//! `rules.rs`); `deprovision_gap` keeps one episode per gap the tracker reports. When a
//! rule's condition starts to hold for a key, an episode begins and fires once: an
//! `alert.firing` event. It resolves when the condition has not held for
//! `resolve_after_secs`: an `alert.resolved` event (for a gap: when the deprovisioning is
//! confirmed). Both are audit events like any other (every sink, every format), counted in
//! `scimtap_alerts_total`, and POSTed to the rule's `webhook_url` by the webhook thread.
//!
//! Everything here runs on the audit worker's thread and never waits: the webhook has its own
//! thread behind a bounded queue. Memory is bounded: each rule keeps at most [`MAX_KEYS`]
//! windows, and a window of counts has a fixed size.

mod rules;
mod webhook;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use serde::Serialize;

use crate::clock::Timestamp;
use crate::config::AlertRule;
use crate::event::{AuditEvent, ClientInfo, HttpInfo, Outcome};
use crate::scim::{ScimInfo, Target};
use crate::telemetry::{Metrics, RuleLabels, RuleStatusLabels};

pub use self::webhook::{WebhookDrain, Webhooks, DRAIN as WEBHOOK_DRAIN};

/// The most keys (windows, open gaps) one rule keeps. Beyond it the least recently seen key
/// that is not firing is forgotten, and counted (`scimtap_alert_keys_evicted_total`).
pub const MAX_KEYS: usize = 10_000;

/// What an alert is about: the client, action and status of its key; null where the rule
/// does not key on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertKey {
    pub client: Option<String>,
    pub action: Option<String>,
    pub status: Option<u16>,
}

/// The `alert` object of an `alert.firing` / `alert.resolved` event (docs/events.md,
/// "Alerts"), and of the webhook's JSON.
#[derive(Debug, Clone, Serialize)]
pub struct AlertInfo {
    /// The `[[alerts]]` rule's name.
    pub rule: String,
    pub kind: &'static str,
    /// `firing` or `resolved`.
    pub status: &'static str,
    /// The same on an episode's firing and its resolution (UUIDv7).
    pub episode_id: String,
    /// When the episode began.
    pub since: Timestamp,
    /// What the rule measured: a count, or a ratio for `failure_rate`.
    pub value: f64,
    pub threshold: f64,
    /// The rule's window; null for `deprovision_gap`.
    pub window_secs: Option<f64>,
    pub key: AlertKey,
    /// One sentence for people (the webhook's `text`).
    pub summary: String,
    /// The last event that counted toward it.
    pub last_event_id: Option<String>,
}

/// The last event a key saw: what an alert event repeats of it.
#[derive(Debug, Clone)]
struct Last {
    event_id: String,
    request_id: String,
    client: ClientInfo,
    method: String,
    path: String,
    status: Option<u16>,
    /// Only where the alert is about one resource (a retry storm, a gap).
    target: Target,
}

impl Last {
    fn of(event: &AuditEvent<'_>, with_target: bool) -> Last {
        Last {
            event_id: event.event_id.clone(),
            request_id: event.request_id.to_owned(),
            client: event.client.clone(),
            method: event.http.method.to_owned(),
            path: event.http.path.to_owned(),
            status: event.http.status,
            target: if with_target {
                event.scim.target.clone()
            } else {
                Target::default()
            },
        }
    }
}

/// An `alert.firing` or `alert.resolved` event to write.
#[derive(Debug, Clone)]
pub struct Alert {
    pub event_id: String,
    pub at: Timestamp,
    pub info: AlertInfo,
    /// The route whose events the rule watched (its `alert.*` event belongs to it).
    pub route: Option<Arc<str>>,
    last: Last,
}

impl Alert {
    pub fn firing(&self) -> bool {
        self.info.status == "firing"
    }

    /// The event that reports it: `alert.firing` (outcome failure) or `alert.resolved`
    /// (success), with the client, request, method, path and status of the last event that
    /// counted (`http.version` `unknown`, byte counts 0, `duration_ms` 0).
    pub fn event(&self) -> AuditEvent<'_> {
        let action = if self.firing() {
            "alert.firing"
        } else {
            "alert.resolved"
        };
        AuditEvent {
            schema_version: crate::event::SCHEMA_VERSION,
            event_id: self.event_id.clone(),
            timestamp: self.at,
            duration_ms: 0.0,
            request_id: &self.last.request_id,
            outcome: if self.firing() {
                Outcome::Failure
            } else {
                Outcome::Success
            },
            client: self.last.client.clone(),
            http: HttpInfo {
                // Not an HTTP exchange of its own.
                version: "unknown",
                method: &self.last.method,
                path: &self.last.path,
                query: None,
                status: self.last.status,
                request_bytes: 0,
                response_bytes: 0,
                request_content_type: None,
                response_content_type: None,
                request_body_truncated: false,
                response_body_truncated: false,
                response_generated: false,
                request_body: None,
                response_body: None,
            },
            scim: ScimInfo {
                target: self.last.target.clone(),
                actions: vec![action.to_owned()],
                ..ScimInfo::default()
            },
            failure: None,
            retry_of: None,
            deprovision: None,
            alert: Some(self.info.clone()),
            route: self.route.clone(),
            // Set by the audit worker, which knows the service.
            upstream: None,
        }
    }

    /// The webhook's JSON: Slack's incoming-webhook `text`, and the `alert` object.
    pub fn webhook_body(&self) -> Vec<u8> {
        let body = serde_json::json!({ "text": self.info.summary, "alert": self.info });
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

/// The rules that watch one route, each with its own windows and episodes: one route's
/// events never count toward another's alerts.
struct RouteRules {
    route: Arc<str>,
    /// `[routes] alerts`: the rules by name; `None`: every rule.
    selection: Option<Vec<String>>,
    rules: Vec<rules::RuleState>,
}

/// The alert rules as the audit worker runs them.
pub struct Alerts {
    /// The configured rules, for the routes a reload adds and for the webhook URLs.
    configured: Vec<AlertRule>,
    routes: Vec<RouteRules>,
    metrics: Arc<Metrics>,
    webhooks: Option<Webhooks>,
}

impl Alerts {
    /// The engine for `rules` over `routes` (each with the rules it selects), and the webhook
    /// thread when a rule has a `webhook_url`. `None` without rules.
    ///
    /// # Errors
    /// When the operating system refuses the webhook thread.
    pub fn start(
        rules: &[AlertRule],
        routes: &[(Arc<str>, Option<Vec<String>>)],
        metrics: &Arc<Metrics>,
    ) -> std::io::Result<Option<Alerts>> {
        if rules.is_empty() {
            return Ok(None);
        }
        let webhooks = if rules.iter().any(|r| r.webhook.is_some()) {
            Some(Webhooks::start(metrics.clone())?)
        } else {
            None
        };
        let mut alerts = Alerts::new(rules, metrics, webhooks);
        alerts.set_routes(routes);
        Ok(Some(alerts))
    }

    /// Every rule over the events of the implicit route (`default`), until
    /// [`Alerts::set_routes`] says which routes there are.
    fn new(rules: &[AlertRule], metrics: &Arc<Metrics>, webhooks: Option<Webhooks>) -> Alerts {
        for rule in rules {
            // Every series exists from the start, at zero.
            let labels = RuleLabels {
                rule: rule.name.clone(),
            };
            metrics.alerts_firing.get_or_create(&labels).set(0);
            metrics.alert_keys_evicted.get_or_create_owned(&labels);
            for status in ["firing", "resolved"] {
                metrics.alerts.get_or_create_owned(&RuleStatusLabels {
                    rule: rule.name.clone(),
                    status,
                });
            }
        }
        let mut alerts = Alerts {
            configured: rules.to_vec(),
            routes: Vec::new(),
            metrics: metrics.clone(),
            webhooks,
        };
        let implicit = Arc::from(crate::config::DEFAULT_ROUTE);
        alerts.routes.push(alerts.route_rules(implicit, None));
        alerts
    }

    fn route_rules(&self, route: Arc<str>, selection: Option<Vec<String>>) -> RouteRules {
        let rules = self
            .configured
            .iter()
            .filter(|rule| {
                selection
                    .as_ref()
                    .is_none_or(|names| names.contains(&rule.name))
            })
            .map(|rule| rules::RuleState::new(rule.clone(), &self.metrics))
            .collect();
        RouteRules {
            route,
            selection,
            rules,
        }
    }

    /// The routes watched from now on (startup, reload): a route that stays with the same
    /// rules keeps its windows and open episodes; a new or changed one starts afresh; a
    /// removed one is forgotten (its firing episodes are not resolved: nothing watches them).
    pub fn set_routes(&mut self, routes: &[(Arc<str>, Option<Vec<String>>)]) {
        let mut old = std::mem::take(&mut self.routes);
        for (name, selection) in routes {
            let kept = old
                .iter()
                .position(|r| r.route == *name && r.selection == *selection);
            let rules = match kept {
                Some(at) => old.swap_remove(at),
                None => self.route_rules(name.clone(), selection.clone()),
            };
            self.routes.push(rules);
        }
        for gone in old {
            for rule in &gone.rules {
                let firing = rule.firing_episodes();
                if firing > 0 {
                    let labels = RuleLabels {
                        rule: rule.rule.name.clone(),
                    };
                    self.metrics
                        .alerts_firing
                        .get_or_create(&labels)
                        .dec_by(i64::try_from(firing).unwrap_or(i64::MAX));
                }
            }
        }
    }

    /// What shutdown waits on for the queued webhook deliveries (once; `None` without a
    /// webhook).
    pub fn webhook_drain(&mut self) -> Option<WebhookDrain> {
        self.webhooks.as_mut().and_then(Webhooks::drain)
    }

    /// Counts `event` in every rule of its route it concerns; returns the alerts that fired or
    /// resolved. Alert events themselves are never observed.
    pub fn observe(&mut self, event: &AuditEvent<'_>, now: Timestamp) -> Vec<Alert> {
        if event.alert.is_some() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let Some(route) = self
            .routes
            .iter_mut()
            .find(|r| event.route.as_ref() == Some(&r.route))
        else {
            return out;
        };
        for rule in &mut route.rules {
            rule.observe(event, now, &mut out);
        }
        for alert in &mut out {
            alert.route = Some(route.route.clone());
        }
        self.announce(&out);
        out
    }

    /// Looks at every firing episode (the windows slide with time); `open_deprovisions` is
    /// how many deprovisionings the tracker has open per route (`[state]` on): at zero, every
    /// gap episode of that route resolves.
    pub fn tick(
        &mut self,
        now: Timestamp,
        open_deprovisions: Option<&[(Arc<str>, u64)]>,
    ) -> Vec<Alert> {
        let mut out = Vec::new();
        for route in &mut self.routes {
            let open = open_deprovisions.and_then(|open| {
                open.iter()
                    .find(|(name, _)| *name == route.route)
                    .map(|(_, n)| *n)
            });
            let first = out.len();
            for rule in &mut route.rules {
                rule.tick(now, open, &mut out);
            }
            for alert in &mut out[first..] {
                alert.route = Some(route.route.clone());
            }
        }
        self.announce(&out);
        out
    }

    /// Counts, logs and sends (webhook) what fired or resolved.
    fn announce(&self, alerts: &[Alert]) {
        for alert in alerts {
            let info = &alert.info;
            let labels = RuleLabels {
                rule: info.rule.clone(),
            };
            self.metrics
                .alerts
                .get_or_create(&RuleStatusLabels {
                    rule: info.rule.clone(),
                    status: info.status,
                })
                .inc();
            if alert.firing() {
                self.metrics.alerts_firing.get_or_create(&labels).inc();
                tracing::warn!(rule = %info.rule, episode_id = %info.episode_id, summary = %info.summary, "Alert firing.");
            } else {
                self.metrics.alerts_firing.get_or_create(&labels).dec();
                tracing::info!(rule = %info.rule, episode_id = %info.episode_id, summary = %info.summary, "Alert resolved.");
            }
            let url = self
                .configured
                .iter()
                .find(|r| r.name == info.rule)
                .and_then(|r| r.webhook.as_ref());
            if let (Some(webhooks), Some(url)) = (&self.webhooks, url) {
                webhooks.send(&info.rule, url, alert.webhook_body());
            }
        }
    }
}
