//! scimtap's own telemetry: the tracing subscriber (stderr, never the audit stream) and every
//! Prometheus metric, defined in this one file so names stay consistent
//! (`scimtap_<name>_<unit>[_total]`).
//!
//! Hot-path counters are resolved once at startup ([`ProxyMetrics`]), so the request path only
//! touches atomics, never a label map.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

const DEFAULT_LOG_FILTER: &str = "info,rskafka=error";

/// Installs the stderr log subscriber. `SCIMTAP_LOG` (or `RUST_LOG`) takes an env-filter
/// directive; the default is `info`, with the Kafka client's own connection chatter at
/// `error` (scimtap logs every failed send itself).
pub fn init_logging() {
    let filter = std::env::var("SCIMTAP_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| DEFAULT_LOG_FILTER.to_owned());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusClassLabels {
    pub status_class: &'static str,
}

/// `scimtap_route_requests_total`: `route` is a configured route's name (at most
/// [`crate::config::MAX_ROUTES`]) or `none`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteStatusLabels {
    pub route: String,
    pub status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: DropReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkReasonLabels {
    pub sink: String,
    pub reason: DropReason,
}

/// `scimtap_scim_actions_total`: one SCIM action of an event. Every label is bounded: `action`
/// by [`KNOWN_ACTIONS`], `outcome` by two values, `client` by the configured `[[clients]]`
/// names and the identity providers [`crate::clients::idp_from_user_agent`] recognises.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: &'static str,
    pub outcome: &'static str,
    pub client: String,
}

/// An alert rule's metrics: `rule` is a configured `[[alerts]]` name (bounded by the file).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub rule: String,
}

/// `scimtap_alerts_total`: `status` is `firing` or `resolved`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleStatusLabels {
    pub rule: String,
    pub status: &'static str,
}

/// `scimtap_alert_webhook_deliveries_total`: `result` is `sent`, `failed` (every attempt
/// failed, or the receiver refused it) or `dropped` (the webhook queue was full).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleResultLabels {
    pub rule: String,
    pub result: &'static str,
}

/// `scimtap_build_info`: what is running.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildInfoLabels {
    pub version: &'static str,
    /// `schema_version` of the events it writes.
    pub schema_version: &'static str,
}

/// The actions `scimtap_scim_actions_total` names (docs/events.md#actions). Anything else (a
/// custom resource type's `device.create`) is counted as `other`; an event without actions
/// (a read, a list, a search, discovery, an unknown path) as `none`.
pub const KNOWN_ACTIONS: &[&str] = &[
    "user.create",
    "user.update",
    "user.deactivate",
    "user.reactivate",
    "user.delete",
    "group.create",
    "group.update",
    "group.rename",
    "group.members.add",
    "group.members.remove",
    "group.members.replace",
    "group.members.update",
    "group.delete",
    "deprovision.gap",
    "deprovision.closed",
    "alert.firing",
    "alert.resolved",
];

/// Why an event did not reach its destination.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum DropReason {
    /// The bounded queue had no room (hand-off or a `drop_newest` sink).
    queue_full,
    /// A `block` sink's queue stayed full for `block_timeout_ms`: the sink is stalled and
    /// drops what does not fit until it has room again, instead of holding back the others.
    stalled,
    /// The receiving side had already shut down.
    shutdown,
    /// The sink failed to write the event, `retry.max_attempts` times.
    write_error,
    /// The event could not be serialized.
    encode_error,
    /// The event is larger than the sink can carry (syslog `max_message_bytes`).
    too_large,
    /// A disk buffer frame was torn by a crash mid-write, or failed its checksum: skipped.
    torn,
    /// The event could not be written to the sink's disk buffer.
    buffer_error,
    /// The receiver refused the event for good (an Elasticsearch item answered 4xx, not 429).
    rejected,
}

/// Declares [`Metrics`]: each metric once, with its type, name, help and initial value.
macro_rules! metrics {
    ($($field:ident: $ty:ty = $name:literal $(in $unit:ident)?, $help:literal $(, $init:expr)?;)*) => {
        /// Every metric scimtap exposes, registered once.
        pub struct Metrics {
            pub registry: Registry,
            $(pub $field: $ty,)*
        }

        impl Metrics {
            pub fn new() -> Arc<Metrics> {
                let mut registry = Registry::with_prefix("scimtap");
                $(
                    let $field: $ty = metrics!(@init $($init)?);
                    metrics!(@register registry, $name, $help, $field $(, $unit)?);
                )*
                Arc::new(Metrics { registry, $($field,)* })
            }
        }
    };
    (@init) => { Default::default() };
    (@init $init:expr) => { $init };
    (@register $registry:ident, $name:literal, $help:literal, $field:ident) => {
        $registry.register($name, $help, $field.clone())
    };
    (@register $registry:ident, $name:literal, $help:literal, $field:ident, $unit:ident) => {
        $registry.register_with_unit($name, $help, Unit::$unit, $field.clone())
    };
}

metrics! {
    requests: Family<StatusClassLabels, Counter> = "requests", "Requests answered, by response status class (none: no response reached the client)";
    upstream_errors: Family<KindLabels, Counter> = "upstream_errors", "Requests that failed on the upstream side, by kind";
    route_requests: Family<RouteStatusLabels, Counter> = "route_requests", "Requests answered, by route ([[routes]] name; none: no route took the request) and response status class";
    request_duration: Histogram = "request_duration" in Seconds,
        "Time from request received to both bodies finished",
        Histogram::new(REQUEST_DURATION_BUCKETS);
    connections_open: Gauge = "connections_open", "Client connections open now";
    connections_accepted: Counter = "connections_accepted", "Client connections accepted";
    tls_handshake_failures: Counter = "tls_handshake_failures", "Client TLS handshakes that failed or timed out";
    handoff_dropped: Family<ReasonLabels, Counter> = "audit_handoff_dropped", "Finished exchanges whose event was dropped before the audit pipeline, by reason";
    handoff_queue_depth: Gauge<i64, AtomicI64Compat> = "audit_handoff_queue_depth", "Finished exchanges waiting for the audit worker";
    events_encoded: Counter = "audit_events_encoded", "Audit events built and serialized by the audit worker";
    exchanges_described: Counter = "audit_exchanges_described", "Finished exchanges the audit worker turned into events (one or more each: a Bulk request gives one per operation)";
    scim_actions: Family<ActionLabels, Counter> = "scim_actions", "SCIM actions in the events the audit worker encoded, by action (none: the event has none; other: not a built-in action), outcome and client ([[clients]] name, unknown/<idp>, or unknown)";
    build_info: Family<BuildInfoLabels, Gauge> = "build_info", "Always 1; the labels say which scimtap version runs and which event schema it writes", build_info();
    state_errors: Counter = "state_errors", "Shadow state ([state]) lookups or updates that failed; the event was written without what state would have added";
    state_settle_timeouts: Counter = "state_settle_timeouts", "State lookups ([state] url) that stopped waiting for another instance to record an earlier exchange on the same ids (its claim outlived the 2 s bound) and read what was there";
    deprovision_open: Gauge = "deprovision_open", "Deactivations and deletions the app refused or never answered and that are not confirmed yet ([state]; shared by every instance on one store)";
    deprovision_gaps: Counter = "deprovision_gaps", "deprovision.gap events this instance wrote: deprovisionings still unconfirmed after [state] confirm_within_secs";
    deprovision_closed: Counter = "deprovision_closed", "deprovision.closed events this instance wrote: open deprovisionings confirmed (or withdrawn by a reactivation)";
    alerts_firing: Family<RuleLabels, Gauge> = "alerts_firing", "Alert episodes firing now, per [[alerts]] rule";
    alerts: Family<RuleStatusLabels, Counter> = "alerts", "alert.firing and alert.resolved events written, per [[alerts]] rule and status (firing, resolved)";
    alert_keys_evicted: Family<RuleLabels, Counter> = "alert_keys_evicted", "Windows an alert rule forgot to stay within its bound on keys (a client, action or request it no longer counts), per rule";
    alert_webhook_deliveries: Family<RuleResultLabels, Counter> = "alert_webhook_deliveries", "Alert webhook POSTs, per rule and result (sent; failed: every attempt failed or the receiver refused it; dropped: the webhook queue was full)";
    alert_webhook_retries: Family<RuleLabels, Counter> = "alert_webhook_retries", "Alert webhook POSTs sent again after a failed attempt, per rule";
    capture_budget_exhausted: Counter = "capture_budget_exhausted", "Body frames not captured because capture.max_pending_bytes was reached (the event says truncated)";
    audit_refused: Counter = "audit_refused_requests", "SCIM writes answered 503 without being forwarded because the audit trail could not take their events (on_audit_failure = \"reject\")";
    config_reloads: Family<ResultLabels, Counter> = "config_reloads", "Configuration reloads on SIGHUP, by result (success, failure: the old configuration stays)";
    ui_feed_dropped: Counter = "ui_feed_dropped_events", "Events the live view ([ui]) did not get because its reader fell behind the audit worker (the audit trail is not affected)";
    ui_stream_clients: Gauge = "ui_stream_clients", "Browsers following the live view's event stream now";
    ui_stream_dropped: Counter = "ui_stream_dropped_clients", "Live view event streams closed because the browser fell behind (it reconnects and catches up from the recent events)";
    ui_unauthorized: Counter = "ui_unauthorized_requests", "Live view requests refused with 401 (no valid token or session cookie)";
    sink_written: Family<SinkLabels, Counter> = "sink_events_written", "Audit events written by each sink";
    sink_dropped: Family<SinkReasonLabels, Counter> = "sink_events_dropped", "Audit events a sink did not write, by reason";
    sink_queue_depth: Family<SinkLabels, Gauge> = "sink_queue_depth", "Audit events waiting in each sink's queue";
    sink_write_errors: Family<SinkLabels, Counter> = "sink_write_errors", "Failed write attempts per sink";
    sink_retried: Family<SinkLabels, Counter> = "sink_events_retried", "Audit events sent again after a failed attempt, per sink";
    sink_send_duration: Family<SinkLabels, Histogram> = "sink_send_duration" in Seconds,
        "Time of one write or send attempt of a batch, per sink",
        Family::new_with_constructor(send_duration_histogram);
}

const REQUEST_DURATION_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn send_duration_histogram() -> Histogram {
    Histogram::new([
        0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0,
    ])
}

fn build_info() -> Family<BuildInfoLabels, Gauge> {
    let family: Family<BuildInfoLabels, Gauge> = Family::default();
    family
        .get_or_create(&BuildInfoLabels {
            version: env!("CARGO_PKG_VERSION"),
            schema_version: crate::event::SCHEMA_VERSION,
        })
        .set(1);
    family
}

/// The gauge's default atomic; named so the field type reads plainly.
pub type AtomicI64Compat = std::sync::atomic::AtomicI64;

impl Metrics {
    /// The registry in Prometheus/OpenMetrics text form.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts the actions of one encoded event in `scimtap_scim_actions_total`: once per
    /// action it carries, or once as `none` when it carries none. `client_name` is the
    /// configured `[[clients]]` name, `idp` the `client.idp` of an unnamed client.
    pub fn count_actions(
        &self,
        actions: &[String],
        failed: bool,
        client_name: Option<&str>,
        idp: Option<&str>,
    ) {
        let client = client_label(client_name, idp);
        let outcome = if failed { "failure" } else { "success" };
        let bounded = |action: &str| {
            KNOWN_ACTIONS
                .iter()
                .find(|known| **known == action)
                .copied()
                .unwrap_or("other")
        };
        let count = |action: &'static str| {
            self.scim_actions
                .get_or_create(&ActionLabels {
                    action,
                    outcome,
                    client: client.clone(),
                })
                .inc();
        };
        if actions.is_empty() {
            count("none");
        }
        for action in actions {
            count(bounded(action));
        }
    }

    /// One route's request counters by status class, resolved once (`None`: the requests no
    /// route took). Every series exists from then on, at zero.
    pub fn route_status_counters(&self, route: Option<&str>) -> StatusCounters {
        let route = route.unwrap_or("none");
        StatusCounters::resolve(|status_class| {
            self.route_requests.get_or_create_owned(&RouteStatusLabels {
                route: route.to_owned(),
                status_class,
            })
        })
    }

    /// Counters the request path uses, resolved now so it never looks up a label set.
    pub fn proxy_metrics(&self) -> ProxyMetrics {
        // `get_or_create_owned` everywhere: a guard from `get_or_create` lives to the end of its
        // statement, and a second lookup on the same family in that statement deadlocks.
        let handoff = |reason| {
            self.handoff_dropped
                .get_or_create_owned(&ReasonLabels { reason })
        };
        let handoff_full = handoff(DropReason::queue_full);
        let handoff_closed = handoff(DropReason::shutdown);
        ProxyMetrics {
            requests: StatusCounters::resolve(|status_class| {
                self.requests
                    .get_or_create_owned(&StatusClassLabels { status_class })
            }),
            unrouted_requests: self.route_status_counters(None),
            request_duration: self.request_duration.clone(),
            handoff_full,
            handoff_closed,
            handoff_queue_depth: self.handoff_queue_depth.clone(),
            audit_refused: self.audit_refused.clone(),
            upstream_errors: self.upstream_errors.clone(),
        }
    }
}

/// How metrics and alert rules name a client, with a bounded set of values: its configured
/// `[[clients]]` name; an unnamed client `unknown/<idp>` when its User-Agent names a
/// recognised identity provider, else `unknown`.
pub fn client_label(client_name: Option<&str>, idp: Option<&str>) -> String {
    match (client_name, idp) {
        (Some(name), _) => name.to_owned(),
        (None, Some(idp)) if crate::clients::is_recognised_idp(idp) => format!("unknown/{idp}"),
        (None, _) => "unknown".to_owned(),
    }
}

/// Requests by the status class sent (`none`: no response head reached the client),
/// resolved once. The default counts into counters no registry holds (tests).
#[derive(Clone, Debug, Default)]
pub struct StatusCounters {
    by_class: [Counter<u64, AtomicU64>; 5],
    no_response: Counter<u64, AtomicU64>,
}

impl StatusCounters {
    /// The counter of each class (`1xx` ... `5xx`, `none`), from `counter`.
    fn resolve(counter: impl Fn(&'static str) -> Counter<u64, AtomicU64>) -> StatusCounters {
        StatusCounters {
            by_class: ["1xx", "2xx", "3xx", "4xx", "5xx"].map(&counter),
            no_response: counter("none"),
        }
    }

    pub fn count(&self, status: Option<u16>) {
        match status {
            Some(s @ 100..=599) => {
                self.by_class[usize::from(s / 100 - 1)].inc();
            }
            _ => {
                self.no_response.inc();
            }
        }
    }
}

/// Pre-resolved counters for the request path.
#[derive(Clone)]
pub struct ProxyMetrics {
    requests: StatusCounters,
    /// `scimtap_route_requests_total{route="none"}` (a route's own travel with its exchanges).
    unrouted_requests: StatusCounters,
    pub request_duration: Histogram,
    pub handoff_full: Counter<u64, AtomicU64>,
    pub handoff_closed: Counter<u64, AtomicU64>,
    pub handoff_queue_depth: Gauge<i64, AtomicI64Compat>,
    pub audit_refused: Counter<u64, AtomicU64>,
    upstream_errors: Family<KindLabels, Counter>,
}

impl ProxyMetrics {
    /// `scimtap_requests_total`, and `scimtap_route_requests_total` under `route` (the
    /// route's counters; `None`: no route took the request).
    pub fn count_status(&self, status: Option<u16>, route: Option<&StatusCounters>) {
        self.requests.count(status);
        route.unwrap_or(&self.unrouted_requests).count(status);
    }

    /// Rare (an upstream failure), so the label lookup is acceptable here.
    pub fn count_upstream_error(&self, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&KindLabels { kind })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_labels_stay_bounded() {
        let metrics = Metrics::new();
        let actions = ["device.create".to_owned(), "user.delete".to_owned()];
        metrics.count_actions(&actions, true, None, Some("made-up-idp"));
        metrics.count_actions(&[], false, Some("okta-prod"), Some("okta"));
        metrics.count_actions(&[], false, None, Some("okta"));
        let text = metrics.encode();
        for series in [
            "scimtap_scim_actions_total{action=\"other\",outcome=\"failure\",client=\"unknown\"} 1",
            "scimtap_scim_actions_total{action=\"user.delete\",outcome=\"failure\",client=\"unknown\"} 1",
            "scimtap_scim_actions_total{action=\"none\",outcome=\"success\",client=\"okta-prod\"} 1",
            "scimtap_scim_actions_total{action=\"none\",outcome=\"success\",client=\"unknown/okta\"} 1",
        ] {
            assert!(text.contains(series), "{series} in:\n{text}");
        }
        assert!(text.contains(&format!(
            "scimtap_build_info{{version=\"{}\",schema_version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            crate::event::SCHEMA_VERSION
        )));
    }
}
