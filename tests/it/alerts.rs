//! Alert rules through a real scimtap, one test per kind: traffic from a real client to a real
//! upstream fires the rule once and, once the traffic stops (or the gap closes), it resolves
//! once. Both events are in the audit file (checked after a clean stop, so nothing more can
//! come), both reach a real HTTP listener as the rule's webhook, and the alert events reach
//! the OCSF, ECS and CEF sinks as lines that validate like any other. At shutdown, a webhook
//! delivery still being retried is sent before scimtap exits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::formats::{parse_cef, unescape, validate_ocsf, EcsReference};
use crate::support::upstream::{scim_service, USER};
use crate::support::wait::until;
use crate::support::*;

/// The JSON bodies a webhook receiver accepted, in order.
type Received = Arc<Mutex<Vec<Value>>>;

/// A webhook receiver on 127.0.0.1:0: it answers the first `refuse` POSTs 503 (a failure the
/// webhook retries), then 200, keeping the JSON body of every POST it accepted.
async fn webhook(refuse: usize) -> (Upstream, Received) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let keep = received.clone();
    let refused = Arc::new(AtomicUsize::new(0));
    let server = Upstream::start(move |req: Request<Incoming>| {
        let keep = keep.clone();
        let refused = refused.clone();
        async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            if refused.fetch_add(1, Ordering::SeqCst) < refuse {
                return Response::builder().status(503).body(full("later")).unwrap();
            }
            keep.lock()
                .unwrap()
                .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
            Response::builder().status(200).body(full("ok")).unwrap()
        }
    })
    .await;
    (server, received)
}

/// A running scimtap with one `[[alerts]]` rule whose webhook is a real listener.
struct Watched {
    proxy: Proxy,
    /// The webhook receiver (`count()`: POSTs it was sent, refused ones included).
    hook: Upstream,
    received: Received,
    rule: String,
    kind: String,
}

/// Starts scimtap with `config` and the rule `name` of `kind` (more of its settings in
/// `settings`, one per line), its `webhook_url` a new receiver.
async fn watch(config: ProxyConfig, name: &str, kind: &str, settings: &str) -> Watched {
    watch_refusing(config, name, kind, settings, 0).await
}

/// [`watch`], the receiver refusing its first `refuse` POSTs.
async fn watch_refusing(
    config: ProxyConfig,
    name: &str,
    kind: &str,
    settings: &str,
    refuse: usize,
) -> Watched {
    let (hook, received) = webhook(refuse).await;
    let proxy = Proxy::start(config.top(&format!(
        "[[alerts]]\nname = \"{name}\"\nkind = \"{kind}\"\n{settings}\nwebhook_url = \"{}/hook\"\n",
        hook.url()
    )));
    Watched {
        proxy,
        hook,
        received,
        rule: name.to_owned(),
        kind: kind.to_owned(),
    }
}

/// Asserts that the summary of the alert event `event` says `text`.
fn assert_says(event: &Value, text: &str) {
    let summary = event["alert"]["summary"].as_str().unwrap_or_default();
    assert!(summary.contains(text), "{text:?} is not in {event:#}");
}

/// A PATCH body deactivating a user.
fn deactivation() -> Option<Value> {
    Some(json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "active", "value": false}],
    }))
}

fn alert_events(events: Vec<Value>) -> Vec<Value> {
    events
        .into_iter()
        .filter(|e| e.get("alert").is_some())
        .collect()
}

/// One episode's two events, as the audit file has them.
struct Episode {
    firing: Value,
    resolved: Value,
    /// Every event of the audit file, alert events included.
    events: Vec<Value>,
}

impl Episode {
    /// The event an alert names as the last one that counted toward it.
    fn last_counted(&self, alert: &Value) -> &Value {
        let id = &alert["alert"]["last_event_id"];
        self.events
            .iter()
            .find(|e| e["event_id"] == *id)
            .unwrap_or_else(|| panic!("no event {id} in the audit file"))
    }
}

impl Watched {
    /// Sends one request through scimtap (`x-request-id: <id>`); returns the status.
    async fn send(&self, method: &str, path: &str, body: Option<Value>, id: &str) -> u16 {
        let req = Request::builder()
            .method(method)
            .uri(self.proxy.url(path))
            .header("x-request-id", id)
            .header("content-type", "application/scim+json")
            .body(body.map_or_else(empty, |b| full(b.to_string())))
            .unwrap();
        roundtrip(&http1_client(), req).await.status().as_u16()
    }

    /// Waits until the audit file has an alert event with `status` (`firing`, `resolved`).
    async fn wait_for_alert(&self, status: &str) -> Value {
        until(
            &format!("an alert {status} event of {}", self.rule),
            WAIT,
            Duration::from_millis(50),
            async || {
                let alerts = alert_events(self.proxy.events());
                match alerts.iter().find(|a| a["alert"]["status"] == status) {
                    Some(alert) => Ok(alert.clone()),
                    None => Err(format!("{alerts:#?}\nlog:\n{}", self.proxy.log_tail())),
                }
            },
        )
        .await
    }

    /// Waits until the webhook receiver accepted `n` POSTs; returns them.
    async fn wait_for_webhooks(&self, n: usize) -> Vec<Value> {
        until(
            &format!("{n} webhook POSTs of {}", self.rule),
            WAIT,
            Duration::from_millis(50),
            async || {
                let got = self.received.lock().unwrap().clone();
                if got.len() >= n {
                    return Ok(got);
                }
                Err(format!("{got:#?}\nlog:\n{}", self.proxy.log_tail()))
            },
        )
        .await
    }

    /// Waits for the rule to resolve, checks its metrics, stops scimtap cleanly and checks
    /// what it left: exactly one episode of the rule, fired then resolved, in the audit file
    /// and at the webhook (each POST `{"text": <summary>, "alert": <the event's alert>}`).
    async fn one_episode(mut self) -> Episode {
        self.wait_for_alert("resolved").await;
        self.wait_for_webhooks(2).await;
        let series = |name: &str, label: &str| format!("{name}{{rule=\"{}\"{label}}}", self.rule);
        // Counted once the receiver's answer is read, a moment after it kept the body.
        let sent = series("scimtap_alert_webhook_deliveries_total", ",result=\"sent\"");
        assert_eq!(self.proxy.wait_for_metric(&sent, 2.0, WAIT).await, 2.0);
        // Counted before the event is written.
        for (name, label, want) in [
            ("scimtap_alerts_total", ",status=\"firing\"", 1.0),
            ("scimtap_alerts_total", ",status=\"resolved\"", 1.0),
            ("scimtap_alerts_firing", "", 0.0),
        ] {
            let series = series(name, label);
            assert_eq!(self.proxy.metric(&series).await, want, "{series}");
        }
        assert_eq!(self.proxy.stop(), 0, "{}", self.proxy.log_tail());
        // The webhook's URL is never logged.
        assert!(
            !self.proxy.log_tail().contains("/hook"),
            "{}",
            self.proxy.log_tail()
        );

        let events = self.proxy.events();
        let alerts = alert_events(events.clone());
        assert_eq!(alerts.len(), 2, "one firing, one resolution: {alerts:#?}");
        let (firing, resolved) = (alerts[0].clone(), alerts[1].clone());
        for (event, status, outcome) in [
            (&firing, "firing", "failure"),
            (&resolved, "resolved", "success"),
        ] {
            let alert = &event["alert"];
            assert_eq!(event["scim"]["actions"], json!([format!("alert.{status}")]));
            assert_eq!(event["outcome"], outcome, "{event:#}");
            assert_eq!(
                (&alert["rule"], &alert["kind"], &alert["status"]),
                (&json!(self.rule), &json!(self.kind), &json!(status)),
                "{event:#}"
            );
            assert!(
                alert["summary"]
                    .as_str()
                    .is_some_and(|s| s.starts_with(&format!("{} {status}: ", self.rule))),
                "{event:#}"
            );
        }
        for field in ["episode_id", "since", "threshold", "window_secs", "key"] {
            assert_eq!(
                firing["alert"][field], resolved["alert"][field],
                "{field}: one episode"
            );
        }
        assert_eq!(firing["alert"]["since"], firing["timestamp"]);
        // Written after the event that raised it.
        let position = |e: &Value| events.iter().position(|x| x["event_id"] == e["event_id"]);
        for alert in [&firing, &resolved] {
            let cause = &alert["alert"]["last_event_id"];
            let cause = events.iter().position(|x| x["event_id"] == *cause);
            assert!(cause.is_some() && cause < position(alert), "{alert:#}");
        }

        let hooks = self.received.lock().unwrap().clone();
        assert_eq!(hooks.len(), 2, "{hooks:#?}");
        assert_eq!(self.hook.count(), 2, "no POST retried or sent twice");
        for (hook, event) in hooks.iter().zip([&firing, &resolved]) {
            let alert = &event["alert"];
            assert_eq!(*hook, json!({"text": alert["summary"], "alert": alert}));
        }
        Episode {
            firing,
            resolved,
            events,
        }
    }
}

/// A `status_burst` rule counting `statuses` (three in 2 s, resolved after 1 s quiet) in
/// front of an upstream answering every request with `status`, and three GETs: one episode.
async fn status_burst(name: &str, status: u16, statuses: &str, sinks: Option<&str>) -> Episode {
    let upstream = Upstream::start(move |_req: Request<Incoming>| async move {
        Response::builder()
            .status(status)
            .header("retry-after", "1")
            .body(full("{}"))
            .unwrap()
    })
    .await;
    let mut config = ProxyConfig::new(upstream.url());
    if let Some(sinks) = sinks {
        config = config.sinks(sinks);
    }
    let settings =
        format!("window_secs = 2\nthreshold = 3\nresolve_after_secs = 1\nstatuses = {statuses}");
    let w = watch(config, name, "status_burst", &settings).await;
    for i in 0..3 {
        let id = format!("burst-{i}");
        assert_eq!(w.send("GET", "/scim/v2/Users", None, &id).await, status);
    }
    let episode = w.one_episode().await;
    let firing = &episode.firing["alert"];
    assert_eq!(firing["value"], 3.0);
    assert_eq!(
        firing["key"],
        json!({"client": "unknown", "action": null, "status": status})
    );
    assert_eq!(episode.firing["request_id"], "burst-2");
    episode
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_401_fires_once_resolves_once_and_reaches_the_webhook() {
    let episode = status_burst("probing", 401, "[401, 403]", None).await;
    assert_says(
        &episode.firing,
        "3 responses with status 401 or 403 to client unknown",
    );
    assert!(episode.resolved["alert"]["value"].as_f64().unwrap() < 3.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_429_fires_once_resolves_once_and_reaches_the_webhook() {
    let episode = status_burst("rate-limited", 429, "[429]", None).await;
    let firing = &episode.firing;
    assert_says(
        firing,
        "3 responses with status 429 to client unknown in the last 2 s",
    );
    assert_eq!(firing["http"]["status"], 429);
    assert_eq!(episode.last_counted(firing)["request_id"], "burst-2");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_rate_fires_once_resolves_once_and_reaches_the_webhook() {
    // Creations of `ok-*` succeed, the others fail with 500.
    let upstream = Upstream::start(|req: Request<Incoming>| async move {
        let create = req.method() == "POST";
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let user: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let status = match user["userName"].as_str() {
            _ if !create => 200,
            Some(name) if name.starts_with("ok") => 201,
            _ => 500,
        };
        Response::builder()
            .status(status)
            .body(full(json!({"schemas": [USER], "id": "u-1"}).to_string()))
            .unwrap()
    })
    .await;
    let w = watch(
        ProxyConfig::new(upstream.url()),
        "create-failures",
        "failure_rate",
        "window_secs = 2\nthreshold = 0.5\nmin_events = 4\nresolve_after_secs = 1",
    )
    .await;
    let create = |name: &str| Some(json!({"schemas": [USER], "userName": name}));
    // One success, then failures; a read between them is another key.
    assert_eq!(
        w.send("POST", "/scim/v2/Users", create("ok-1"), "fr-0")
            .await,
        201
    );
    assert_eq!(
        w.send("POST", "/scim/v2/Users", create("bad-1"), "fr-1")
            .await,
        500
    );
    assert_eq!(
        w.send("GET", "/scim/v2/Users/u-1", None, "fr-read").await,
        200
    );
    assert_eq!(
        w.send("POST", "/scim/v2/Users", create("bad-2"), "fr-2")
            .await,
        500
    );
    // Three creations: fewer than min_events, nothing yet.
    let events = w.proxy.wait_for_events(4).await;
    assert!(alert_events(events).is_empty());
    assert_eq!(
        w.send("POST", "/scim/v2/Users", create("bad-3"), "fr-3")
            .await,
        500
    );
    let episode = w.one_episode().await;
    let firing = &episode.firing["alert"];
    // Three of the four creations failed.
    assert_eq!(firing["value"], 0.75);
    assert_eq!(firing["threshold"], 0.5);
    assert_eq!(
        firing["key"],
        json!({"client": "unknown", "action": "user.create", "status": null})
    );
    assert_eq!(episode.firing["request_id"], "fr-3");
    assert_says(
        &episode.firing,
        "create-failures firing: 75% of 4 user.create requests from client unknown failed",
    );
    // Resolved once too few creations were left in the window to judge.
    assert_says(
        &episode.resolved,
        "create-failures resolved: below its threshold for 1 s",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mass_deactivation_fires_once_resolves_once_and_reaches_the_webhook() {
    let upstream = Upstream::start(scim_service).await;
    let w = watch(
        ProxyConfig::new(upstream.url()),
        "mass-deactivation",
        "mass_deactivation",
        "window_secs = 2\nthreshold = 3\nresolve_after_secs = 1",
    )
    .await;
    // u1 twice: three requests, two users, nothing yet.
    for (i, user) in ["u1", "u1", "u2"].iter().enumerate() {
        let path = format!("/scim/v2/Users/{user}");
        let status = w
            .send("PATCH", &path, deactivation(), &format!("md-{i}"))
            .await;
        assert_eq!(status, 200);
    }
    let events = w.proxy.wait_for_events(3).await;
    assert!(alert_events(events).is_empty());
    // A deletion is a deprovisioning too: the third user.
    assert_eq!(
        w.send("DELETE", "/scim/v2/Users/u3", None, "md-3").await,
        204
    );
    let episode = w.one_episode().await;
    let firing = &episode.firing["alert"];
    assert_eq!(firing["value"], 3.0);
    assert_eq!(
        firing["key"],
        json!({"client": "unknown", "action": null, "status": null})
    );
    assert_eq!(
        episode.last_counted(&episode.firing)["scim"]["actions"][0],
        "user.delete"
    );
    assert_says(
        &episode.firing,
        "3 users deactivated or deleted by client unknown in the last 2 s",
    );
    assert!(episode.resolved["alert"]["value"].as_f64().unwrap() < 3.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_storm_fires_once_resolves_once_and_reaches_the_webhook() {
    // The app is down for replacements: the IdP sends the same PUT again and again.
    let upstream = Upstream::start(|req: Request<Incoming>| async move {
        if req.method() == "PUT" {
            return Response::builder().status(503).body(full("{}")).unwrap();
        }
        scim_service(req).await
    })
    .await;
    let w = watch(
        ProxyConfig::new(upstream.url()),
        "retry-storm",
        "retry_storm",
        "window_secs = 2\nthreshold = 3\nresolve_after_secs = 1",
    )
    .await;
    let carol = json!({"schemas": [USER], "userName": "carol", "active": true});
    let put = async |id: &str| {
        w.send("PUT", "/scim/v2/Users/u7", Some(carol.clone()), id)
            .await
    };
    assert_eq!(put("rs-0").await, 503);
    assert_eq!(put("rs-1").await, 503);
    // Other requests are other keys, even to the same resource.
    assert_eq!(
        w.send("GET", "/scim/v2/Users/u7", None, "rs-get").await,
        200
    );
    assert_eq!(
        w.send("GET", "/scim/v2/Users/u7", None, "rs-get2").await,
        200
    );
    let events = w.proxy.wait_for_events(4).await;
    assert!(alert_events(events).is_empty());
    assert_eq!(put("rs-2").await, 503);
    let episode = w.one_episode().await;
    let firing = &episode.firing;
    assert_eq!(firing["alert"]["value"], 3.0);
    let action = episode.last_counted(firing)["scim"]["actions"][0].clone();
    assert_eq!(
        firing["alert"]["key"],
        json!({"client": "unknown", "action": action, "status": 503})
    );
    assert_eq!(firing["request_id"], "rs-2");
    assert_eq!(
        (&firing["http"]["method"], &firing["http"]["path"]),
        (&json!("PUT"), &json!("/scim/v2/Users/u7"))
    );
    // The storm is about one resource: the alert names it.
    assert_eq!(firing["scim"]["target"]["id"], "u7");
    assert_says(firing, "client unknown sent PUT /scim/v2/Users/u7");
    assert_says(firing, "3 times in the last 2 s (threshold 3)");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deprovisioning_gap_fires_once_resolves_once_and_reaches_the_webhook() {
    // The app refuses the first deactivation, and takes the retry.
    let patches = Arc::new(AtomicUsize::new(0));
    let seen = patches.clone();
    let upstream = Upstream::start(move |req: Request<Incoming>| {
        let first = req.method() == "PATCH" && seen.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            if first {
                let error = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "503", "detail": "maintenance"});
                return Response::builder()
                    .status(503)
                    .body(full(error.to_string()))
                    .unwrap();
            }
            scim_service(req).await
        }
    })
    .await;
    let state = tempfile::tempdir().unwrap();
    let config = ProxyConfig::new(upstream.url()).top(&format!(
        "[state]\npath = \"{}\"\nconfirm_within_secs = 1",
        state.path().join("state.db").display()
    ));
    let w = watch(config, "gaps", "deprovision_gap", "").await;
    let path = "/scim/v2/Users/u-gap";
    assert_eq!(w.send("PATCH", path, deactivation(), "gap-0").await, 503);
    // Unconfirmed a second later: the gap, and its alert.
    let firing = w.wait_for_alert("firing").await;
    w.wait_for_webhooks(1).await;
    // The IdP retries; the app takes it: the gap closes, and its alert resolves.
    assert_eq!(w.send("PATCH", path, deactivation(), "gap-1").await, 200);
    let episode = w.one_episode().await;
    assert_eq!(episode.firing["event_id"], firing["event_id"]);
    let alert = &episode.firing["alert"];
    assert_eq!(
        (&alert["value"], &alert["threshold"]),
        (&json!(1.0), &json!(1.0))
    );
    assert_eq!(alert["window_secs"], Value::Null);
    assert_eq!(
        alert["key"],
        json!({"client": "unknown", "action": "user.deactivate", "status": 503})
    );
    assert_eq!(episode.firing["scim"]["target"]["id"], "u-gap");
    let gap = episode.last_counted(&episode.firing);
    assert_eq!(gap["scim"]["actions"][0], "deprovision.gap");
    assert_eq!(gap["request_id"], "gap-0");
    let closed = episode.last_counted(&episode.resolved);
    assert_eq!(closed["scim"]["actions"][0], "deprovision.closed");
    assert_eq!(closed["deprovision"]["closed_by"], "response");
    assert_eq!(episode.resolved["alert"]["value"], 0.0);
    assert_says(
        &episode.firing,
        "user.deactivate of u-gap still unconfirmed after 1 attempt",
    );
    assert_says(&episode.firing, "last answer 503");
    assert_says(
        &episode.resolved,
        "user.deactivate of u-gap confirmed (response)",
    );
}

/// The alert events of one episode reach OCSF, ECS and CEF file sinks, as lines that validate
/// the way tests/it/formats.rs validates every other line of those formats.
#[tokio::test(flavor = "multi_thread")]
async fn alert_events_reach_ocsf_ecs_and_cef_sinks_as_valid_lines() {
    let dir = tempfile::tempdir().unwrap();
    let file = |format: &str| dir.path().join(format!("audit.{format}"));
    let mut sinks = "[[sinks]]\ntype = \"file\"\npath = \"AUDIT_PLACEHOLDER\"\n".to_owned();
    for format in ["ocsf", "ecs", "cef"] {
        sinks.push_str(&format!(
            "[[sinks]]\ntype = \"file\"\nformat = \"{format}\"\npath = \"{}\"\n",
            file(format).display()
        ));
    }
    let episode = status_burst("probing", 401, "[401]", Some(&sinks)).await;
    let alerts = [&episode.firing, &episode.resolved];
    // The stop wrote everything out: one line per event in each format.
    let lines = |format: &str| -> Vec<String> {
        let text = std::fs::read_to_string(file(format)).unwrap();
        text.lines().map(str::to_owned).collect()
    };
    let json_lines = |format: &str| -> Vec<Value> {
        lines(format)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let count = episode.events.len();
    assert_eq!(count, 5, "three 401s and the episode");

    // OCSF: API Activity "Alert Firing" / "Alert Resolved", valid against the schema.
    let ocsf = json_lines("ocsf");
    assert_eq!(ocsf.len(), count);
    let (code, output) = validate_ocsf(&[&file("ocsf")]);
    assert_eq!(code, Some(0), "OCSF alert lines do not validate:\n{output}");
    for (alert, activity, severity) in [
        (alerts[0], "Alert Firing", "High"),
        (alerts[1], "Alert Resolved", "Informational"),
    ] {
        let o = ocsf
            .iter()
            .find(|o| o["metadata"]["uid"] == alert["event_id"])
            .unwrap_or_else(|| panic!("no OCSF record for {alert:#}"));
        assert_eq!(o["activity_name"], activity, "{o:#}");
        assert_eq!(o["class_uid"], 6003, "{o:#}");
        assert_eq!(o["severity"], severity, "{o:#}");
        assert_eq!(o["message"], alert["alert"]["summary"]);
        assert_eq!(o["unmapped"]["alert"], alert["alert"]);
    }

    // ECS: only ECS fields with values of their types, `event.kind` alert.
    let reference = EcsReference::load();
    let ecs = json_lines("ecs");
    assert_eq!(ecs.len(), count);
    for doc in &ecs {
        let violations = reference.violations(doc);
        assert!(violations.is_empty(), "{violations:?}\n{doc:#}");
    }
    for (alert, action) in [(alerts[0], "alert-firing"), (alerts[1], "alert-resolved")] {
        let d = ecs
            .iter()
            .find(|d| d["event"]["id"] == alert["event_id"])
            .unwrap_or_else(|| panic!("no ECS document for {alert:#}"));
        assert_eq!(
            (&d["event"]["kind"], &d["event"]["action"]),
            (&json!("alert"), &json!(action)),
            "{d:#}"
        );
        assert_eq!(d["event"]["outcome"], alert["outcome"]);
        assert_eq!(d["message"], alert["alert"]["summary"]);
        assert_eq!(d["scimtap"]["alert"], alert["alert"]);
    }

    // CEF: split back by an independent parser into the alert's values.
    let cef = parse_cef(&file("cef"));
    assert_eq!(cef.len(), count);
    for (alert, severity) in [(alerts[0], "8"), (alerts[1], "3")] {
        let id = alert["event_id"].as_str().unwrap();
        let c = cef
            .iter()
            .find(|c| c.get("eventId").map(|v| unescape(v)).as_deref() == Some(id))
            .unwrap_or_else(|| panic!("no CEF line for {alert:#}"));
        let get = |key: &str| c.get(key).map(|v| unescape(v));
        let info = &alert["alert"];
        let action = alert["scim"]["actions"][0].as_str().unwrap();
        assert_eq!(c["DeviceEventClassID"], action, "{c:?}");
        assert_eq!(c["Severity"], severity, "{c:?}");
        assert_eq!(get("msg").as_deref(), info["summary"].as_str());
        assert_eq!(get("cat").as_deref(), Some("alert.status_burst"));
        assert_eq!(get("alertRule").as_deref(), Some("probing"));
        assert_eq!(get("alertEpisode").as_deref(), info["episode_id"].as_str());
        assert_eq!(
            get("alertValue").and_then(|v| v.parse::<f64>().ok()),
            info["value"].as_f64()
        );
        assert_eq!(get("alertThreshold").as_deref(), Some("3"));
        let labels: Vec<&String> = c.keys().filter(|k| k.ends_with("Label")).collect();
        assert!(
            labels.is_empty(),
            "labels without values: {labels:?} in {c:?}"
        );
    }
}

/// A webhook delivery still being retried when scimtap is asked to stop is sent before it
/// exits (within its shutdown deadline), not lost.
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_sends_the_queued_webhook_deliveries() {
    let upstream = Upstream::start(|_req: Request<Incoming>| async move {
        Response::builder().status(401).body(full("{}")).unwrap()
    })
    .await;
    // The receiver refuses twice: the delivery waits 0.5 s, then 1 s, before its third try.
    let mut w = watch_refusing(
        ProxyConfig::new(upstream.url()),
        "probing",
        "status_burst",
        "window_secs = 60\nthreshold = 2\nstatuses = [401]",
        2,
    )
    .await;
    for i in 0..2 {
        assert_eq!(
            w.send("GET", "/scim/v2/Users", None, &format!("s-{i}"))
                .await,
            401
        );
    }
    let firing = w.wait_for_alert("firing").await;
    until(
        "the first webhook attempt",
        WAIT,
        Duration::from_millis(20),
        async || match w.hook.count() {
            0 => Err("none yet".to_owned()),
            n => Ok(n),
        },
    )
    .await;
    assert!(w.received.lock().unwrap().is_empty());
    assert_eq!(w.proxy.stop(), 0, "{}", w.proxy.log_tail());
    let hooks = w.received.lock().unwrap().clone();
    assert_eq!(
        hooks,
        [json!({"text": firing["alert"]["summary"], "alert": firing["alert"]})],
        "log:\n{}",
        w.proxy.log_tail()
    );
    assert_eq!(w.hook.count(), 3);
    let log = w.proxy.log_tail();
    assert!(
        log.contains("Sending the queued alert webhooks before exiting. deliveries=1"),
        "{log}"
    );
}
