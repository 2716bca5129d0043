//! Windows and episodes on a fake clock: each kind fires once while its condition holds and
//! resolves once it has not held for `resolve_after_secs`.

use std::time::Duration;

use std::sync::Arc;

use super::*;
use crate::config::{AlertKind, AlertRule};
use crate::formats::testing::{event, scim};
use crate::scim::{ClosedBy, DeprovisionInfo, DeprovisionStatus, Operation};
use crate::sinks::Severity;

/// The value of one series in the metrics text, 0 when absent.
fn metric(metrics: &Metrics, series: &str) -> f64 {
    metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

fn at(secs: f64) -> Timestamp {
    Timestamp::from_unix_millis(1_800_000_000_000 + (secs * 1000.0) as u64)
}

fn rule(kind: AlertKind, window_secs: u64, threshold: f64) -> AlertRule {
    AlertRule {
        name: "r".to_owned(),
        kind,
        window: Duration::from_secs(window_secs),
        threshold,
        min_events: 4,
        statuses: Vec::new(),
        client: None,
        action: None,
        resolve_after: Duration::from_secs(window_secs),
        webhook: None,
    }
}

fn engine(rules: &[AlertRule]) -> (Alerts, Arc<Metrics>) {
    let metrics = Metrics::new();
    (Alerts::new(rules, &metrics, None), metrics)
}

fn create(status: u16) -> AuditEvent<'static> {
    event(
        "POST",
        scim("User", Operation::Create, &["user.create"]),
        Some(status),
    )
}

/// Feeds `event` at each of `times`; returns every alert raised.
fn feed(alerts: &mut Alerts, make: impl Fn() -> AuditEvent<'static>, times: &[f64]) -> Vec<Alert> {
    times
        .iter()
        .flat_map(|t| alerts.observe(&make(), at(*t)))
        .collect()
}

#[test]
fn a_failure_rate_fires_once_and_resolves_after_a_quiet_window() {
    let (mut alerts, metrics) = engine(&[rule(AlertKind::FailureRate, 60, 0.5)]);
    // Three failures: fewer than min_events (4), nothing yet.
    assert!(feed(&mut alerts, || create(500), &[0.0, 1.0, 2.0]).is_empty());
    let fired = feed(&mut alerts, || create(500), &[3.0]);
    assert_eq!(fired.len(), 1, "{fired:?}");
    let firing = &fired[0].info;
    assert_eq!(
        (firing.status, firing.kind, firing.value),
        ("firing", "failure_rate", 1.0)
    );
    assert_eq!(
        firing.key,
        AlertKey {
            client: Some("okta-prod".to_owned()),
            action: Some("user.create".to_owned()),
            status: None
        }
    );
    assert!(
        firing
            .summary
            .starts_with("r firing: 100% of 4 user.create requests from client okta-prod"),
        "{}",
        firing.summary
    );
    // Still failing: the same episode, no second firing.
    assert!(feed(&mut alerts, || create(503), &[4.0, 5.0, 30.0]).is_empty());
    assert!(alerts.tick(at(40.0), None).is_empty());
    assert_eq!(metric(&metrics, "scimtap_alerts_firing{rule=\"r\"}"), 1.0);
    // The failures leave the window by t = 90; resolve_after (60 s) later it resolves.
    assert!(alerts.tick(at(95.0), None).is_empty());
    let resolved = alerts.tick(at(151.0), None);
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    let info = &resolved[0].info;
    assert_eq!(info.status, "resolved");
    assert_eq!(info.episode_id, firing.episode_id);
    assert_eq!(info.since, at(3.0));
    assert!(alerts.tick(at(300.0), None).is_empty());
    assert_eq!(metric(&metrics, "scimtap_alerts_firing{rule=\"r\"}"), 0.0);
    assert_eq!(
        metric(
            &metrics,
            "scimtap_alerts_total{rule=\"r\",status=\"resolved\"}"
        ),
        1.0
    );
}

#[test]
fn a_failure_rate_resolved_for_too_few_events_says_how_many_were_left() {
    let mut short = rule(AlertKind::FailureRate, 60, 0.5);
    short.resolve_after = Duration::from_secs(10);
    let (mut alerts, _) = engine(&[short]);
    assert_eq!(
        feed(&mut alerts, || create(500), &[0.0, 10.0, 20.0, 30.0]).len(),
        1
    );
    // The first failure left the window: three left, all failed, but fewer than min_events.
    let resolved = alerts.tick(at(61.0), None);
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    let info = &resolved[0].info;
    assert_eq!((info.status, info.value), ("resolved", 1.0));
    assert!(
        info.summary.contains(
            "(now: 100% of 3 user.create requests from client okta-prod failed in the last 60 s (threshold 50%, at least 4 requests))"
        ),
        "{}",
        info.summary
    );
}

#[test]
fn successes_keep_the_failure_rate_below_its_threshold() {
    // One in three fails (two of the first four): always below 60 %.
    let (mut alerts, _) = engine(&[rule(AlertKind::FailureRate, 60, 0.6)]);
    let mut raised = Vec::new();
    for i in 0..20 {
        let status = if i % 3 == 0 { 500 } else { 201 };
        raised.extend(alerts.observe(&create(status), at(f64::from(i))));
    }
    assert!(raised.is_empty(), "{raised:?}");
}

#[test]
fn a_burst_of_401_and_403_fires_per_client_at_high_severity_and_ignores_other_statuses() {
    let mut r = rule(AlertKind::StatusBurst, 10, 3.0);
    r.statuses = vec![401, 403];
    let (mut alerts, _) = engine(&[r]);
    assert!(feed(&mut alerts, || create(401), &[0.0]).is_empty());
    assert!(feed(&mut alerts, || create(429), &[0.5, 0.6, 0.7]).is_empty());
    assert!(feed(&mut alerts, || create(201), &[0.8]).is_empty());
    assert!(feed(&mut alerts, || create(403), &[1.0]).is_empty());
    let fired = feed(&mut alerts, || create(401), &[2.0]);
    assert_eq!(fired.len(), 1);
    let alert = &fired[0];
    assert_eq!(alert.info.key.status, Some(401));
    assert_eq!(alert.info.value, 3.0);
    let e = alert.event();
    assert_eq!(e.scim.actions, ["alert.firing"]);
    assert_eq!(e.outcome, Outcome::Failure);
    assert_eq!(crate::formats::severity(&e), Severity::Error);
    // Below the threshold from t = 11 (the first 401 and the 403 left the window), 10 s
    // after it last held (t = 2) it resolves, as a success at info severity.
    assert!(alerts.tick(at(11.0), None).is_empty());
    let resolved = alerts.tick(at(12.5), None);
    assert_eq!(resolved.len(), 1);
    let e = resolved[0].event();
    assert_eq!(e.scim.actions, ["alert.resolved"]);
    assert_eq!(e.outcome, Outcome::Success);
    assert_eq!(crate::formats::severity(&e), Severity::Info);
}

#[test]
fn a_burst_of_429_is_a_warning() {
    let mut r = rule(AlertKind::StatusBurst, 10, 2.0);
    r.statuses = vec![429];
    let (mut alerts, _) = engine(&[r]);
    let fired = feed(&mut alerts, || create(429), &[0.0, 1.0]);
    assert_eq!(fired.len(), 1);
    assert_eq!(
        crate::formats::severity(&fired[0].event()),
        Severity::Warning
    );
}

fn deactivate(user: &str) -> AuditEvent<'static> {
    let mut s = scim("User", Operation::Patch, &["user.deactivate"]);
    s.target.id = Some(user.to_owned());
    event("PATCH", s, Some(200))
}

#[test]
fn mass_deactivation_counts_distinct_users() {
    let (mut alerts, _) = engine(&[rule(AlertKind::MassDeactivation, 60, 3.0)]);
    // The same user three times is one user.
    assert!(feed(&mut alerts, || deactivate("u1"), &[0.0, 1.0, 2.0]).is_empty());
    assert!(feed(&mut alerts, || deactivate("u2"), &[3.0]).is_empty());
    let fired = feed(&mut alerts, || deactivate("u3"), &[4.0]);
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].info.value, 3.0);
    assert_eq!(crate::formats::severity(&fired[0].event()), Severity::Error);
    assert!(feed(&mut alerts, || deactivate("u4"), &[5.0]).is_empty());
    // Still four users in the window at t = 50; none at t = 100; resolved 60 s after 50.
    assert!(alerts.tick(at(50.0), None).is_empty());
    assert!(alerts.tick(at(100.0), None).is_empty());
    assert_eq!(alerts.tick(at(111.0), None).len(), 1);
}

#[test]
fn a_retry_storm_is_the_same_request_repeated_and_names_its_target() {
    let (mut alerts, _) = engine(&[rule(AlertKind::RetryStorm, 10, 3.0)]);
    let patch = || {
        event(
            "PATCH",
            scim("User", Operation::Patch, &["user.update"]),
            Some(500),
        )
    };
    let mut other = patch();
    other.http.path = "/scim/v2/Users/u2";
    assert!(alerts.observe(&other, at(0.0)).is_empty());
    assert!(alerts.observe(&other, at(0.1)).is_empty());
    assert!(feed(&mut alerts, patch, &[0.0, 0.5]).is_empty());
    let fired = feed(&mut alerts, patch, &[1.0]);
    assert_eq!(fired.len(), 1, "{fired:?}");
    let e = fired[0].event();
    assert_eq!(e.scim.target.id.as_deref(), Some("u1"));
    assert_eq!(e.http.path, "/scim/v2/Users/u1");
    assert_eq!(e.http.status, Some(500));
    assert!(
        fired[0]
            .info
            .summary
            .contains("PATCH /scim/v2/Users/u1 for bjensen"),
        "{}",
        fired[0].info.summary
    );
    assert_eq!(alerts.tick(at(21.0), None).len(), 1);
}

#[test]
fn filters_keep_other_clients_and_actions_out() {
    let mut r = rule(AlertKind::RetryStorm, 10, 2.0);
    r.client = Some("entra-prod".to_owned());
    let mut s = rule(AlertKind::StatusBurst, 10, 2.0);
    s.name = "s".to_owned();
    s.statuses = vec![500];
    s.action = Some("user.delete".to_owned());
    let (mut alerts, _) = engine(&[r, s]);
    assert!(feed(&mut alerts, || create(500), &[0.0, 1.0, 2.0]).is_empty());
}

fn gap_event(status: DeprovisionStatus, requested: &str) -> AuditEvent<'static> {
    let mut e = event(
        "PATCH",
        scim(
            "User",
            Operation::Patch,
            &[if status == DeprovisionStatus::Gap {
                "deprovision.gap"
            } else {
                "deprovision.closed"
            }],
        ),
        Some(502),
    );
    e.deprovision = Some(DeprovisionInfo {
        status,
        requested_action: "user.deactivate".to_owned(),
        requested_event_id: requested.to_owned(),
        requested_at: "2027-01-15T08:00:00.000Z".to_owned(),
        attempts: 2,
        last_event_id: "e2".to_owned(),
        last_status: Some(502),
        last_failure: Some("connect_refused".to_owned()),
        due_at: "2027-01-15T09:00:00.000Z".to_owned(),
        gap_event_id: None,
        closed_by: (status == DeprovisionStatus::Closed).then_some(ClosedBy::Response),
        closing_event_id: None,
        latency_ms: None,
    });
    e
}

#[test]
fn a_gap_fires_once_and_resolves_when_its_deprovisioning_is_confirmed() {
    let mut r = rule(AlertKind::DeprovisionGap, 0, 1.0);
    r.window = Duration::ZERO;
    let (mut alerts, _) = engine(&[r]);
    let fired = alerts.observe(&gap_event(DeprovisionStatus::Gap, "e1"), at(0.0));
    assert_eq!(fired.len(), 1);
    let info = &fired[0].info;
    assert_eq!((info.kind, info.window_secs), ("deprovision_gap", None));
    assert_eq!(info.key.action.as_deref(), Some("user.deactivate"));
    assert!(
        info.summary
            .contains("user.deactivate of bjensen still unconfirmed after 2 attempts"),
        "{}",
        info.summary
    );
    assert_eq!(fired[0].event().scim.target.id.as_deref(), Some("u1"));
    assert!(alerts
        .observe(&gap_event(DeprovisionStatus::Gap, "e1"), at(1.0))
        .is_empty());
    // Another deprovisioning's closing resolves nothing; its own does.
    assert!(alerts
        .observe(&gap_event(DeprovisionStatus::Closed, "other"), at(2.0))
        .is_empty());
    let resolved = alerts.observe(&gap_event(DeprovisionStatus::Closed, "e1"), at(3.0));
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].info.episode_id, info.episode_id);
    assert_eq!(resolved[0].info.status, "resolved");

    // A gap closed where this instance did not see it: resolved when none is open.
    assert_eq!(
        alerts
            .observe(&gap_event(DeprovisionStatus::Gap, "e9"), at(4.0))
            .len(),
        1
    );
    assert!(alerts
        .tick(at(5.0), Some(&[(Arc::from("default"), 1)]))
        .is_empty());
    assert_eq!(
        alerts
            .tick(at(6.0), Some(&[(Arc::from("default"), 0)]))
            .len(),
        1
    );
}

#[test]
fn windowed_rules_ignore_tracker_and_alert_events() {
    let (mut alerts, _) = engine(&[rule(AlertKind::FailureRate, 60, 0.5)]);
    for i in 0..10 {
        assert!(alerts
            .observe(&gap_event(DeprovisionStatus::Gap, "e1"), at(f64::from(i)))
            .is_empty());
    }
    let fired = feed(&mut alerts, || create(500), &[0.0, 1.0, 2.0, 3.0]);
    let alert_event = fired[0].event();
    assert!(alerts.observe(&alert_event, at(4.0)).is_empty());
}

#[test]
fn windows_are_bounded_and_forgetting_one_is_counted() {
    let (mut alerts, metrics) = engine(&[rule(AlertKind::RetryStorm, 10, 5.0)]);
    for i in 0..=MAX_KEYS {
        let mut e = create(201);
        let path = format!("/scim/v2/Users/{i}");
        e.http.path = Box::leak(path.into_boxed_str());
        alerts.observe(&e, at(0.0));
    }
    assert_eq!(
        metric(&metrics, "scimtap_alert_keys_evicted_total{rule=\"r\"}"),
        1.0
    );
    // Nothing left in any window after it: the next tick forgets them all.
    alerts.tick(at(11.0), None);
    assert!(alerts.routes[0].rules[0].is_idle());
}

#[test]
fn the_event_and_the_webhook_carry_the_alert_object() {
    let (mut alerts, _) = engine(&[rule(AlertKind::FailureRate, 60, 0.5)]);
    let fired = feed(&mut alerts, || create(500), &[0.0, 1.0, 2.0, 3.0]);
    let json: serde_json::Value =
        serde_json::from_slice(&fired[0].event().to_json_line().unwrap()).unwrap();
    let alert = &json["alert"];
    let keys: Vec<&str> = alert
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "rule",
            "kind",
            "status",
            "episode_id",
            "since",
            "value",
            "threshold",
            "window_secs",
            "key",
            "summary",
            "last_event_id"
        ]
    );
    assert_eq!(alert["since"], "2027-01-15T08:00:03.000Z");
    assert_eq!(json["scim"]["actions"][0], "alert.firing");
    assert_eq!(json["http"]["version"], "unknown");
    let body: serde_json::Value = serde_json::from_slice(&fired[0].webhook_body()).unwrap();
    assert_eq!(body["text"], alert["summary"]);
    assert_eq!(body["alert"], *alert);
}

/// A webhook receiver on 127.0.0.1:0 that answers every POST 200, or never answers; its URL
/// and how many POSTs it was sent.
async fn receiver(
    answers: bool,
) -> (
    crate::config::WebhookUrl,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = count.clone();
            let service = hyper::service::service_fn(move |_req| {
                count.fetch_add(1, Ordering::SeqCst);
                async move {
                    if !answers {
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Empty::<bytes::Bytes>::new(),
                    ))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    let url = crate::config::WebhookUrl {
        uri: uri.parse().unwrap(),
    };
    (url, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_waits_for_the_queued_webhooks_within_its_bound() {
    use std::sync::atomic::Ordering;
    let metrics = Metrics::new();
    let (url, seen) = receiver(true).await;
    let mut webhooks = Webhooks::start(metrics.clone()).unwrap();
    let drain = webhooks.drain().expect("a drain");
    assert!(webhooks.drain().is_none(), "taken once");
    for _ in 0..3 {
        webhooks.send("r", &url, b"{}".to_vec());
    }
    // The audit worker ends: the queue closes, what is in it is still sent.
    drop(webhooks);
    assert!(drain.wait(Duration::from_secs(5)).await);
    assert_eq!(seen.load(Ordering::SeqCst), 3);
    assert_eq!(
        metric(
            &metrics,
            "scimtap_alert_webhook_deliveries_total{rule=\"r\",result=\"sent\"}"
        ),
        3.0
    );

    // A receiver that never answers does not hold the shutdown beyond the bound.
    let (url, seen) = receiver(false).await;
    let mut webhooks = Webhooks::start(metrics.clone()).unwrap();
    let drain = webhooks.drain().expect("a drain");
    webhooks.send("r", &url, b"{}".to_vec());
    drop(webhooks);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while seen.load(Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "never sent");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = std::time::Instant::now();
    assert!(!drain.wait(Duration::from_millis(300)).await);
    assert!(started.elapsed() < Duration::from_secs(3));
}
