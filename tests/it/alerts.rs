//! Alert rules through a real scimtap: a burst of 401 fires `alert.firing` once and, once the
//! traffic stops, `alert.resolved`; both are in the audit file and both reach a real HTTP
//! listener as the rule's webhook.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;

use crate::support::wait::until;
use crate::support::*;

/// A webhook receiver on 127.0.0.1:0 keeping every JSON body POSTed to it.
async fn webhook() -> (Upstream, Arc<Mutex<Vec<Value>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let keep = received.clone();
    let server = Upstream::start(move |req: Request<Incoming>| {
        let keep = keep.clone();
        async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            keep.lock()
                .unwrap()
                .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
            Response::builder().status(200).body(full("ok")).unwrap()
        }
    })
    .await;
    (server, received)
}

fn alert_events(proxy: &Proxy) -> Vec<Value> {
    proxy
        .events()
        .into_iter()
        .filter(|e| e.get("alert").is_some())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_401_fires_once_resolves_once_and_reaches_the_webhook() {
    let upstream = Upstream::start(|_req: Request<Incoming>| async move {
        Response::builder().status(401).body(full("{}")).unwrap()
    })
    .await;
    let (hook, received) = webhook().await;
    let proxy = Proxy::start(ProxyConfig::new(upstream.url()).top(&format!(
        "[[alerts]]\nname = \"probing\"\nkind = \"status_burst\"\nwindow_secs = 1\nthreshold = 3\nstatuses = [401, 403]\nwebhook_url = \"{}/hook\"\n",
        hook.url()
    )));
    let client = http1_client();
    for _ in 0..5 {
        let req = Request::get(proxy.url("/scim/v2/Users"))
            .body(empty())
            .unwrap();
        assert_eq!(roundtrip(&client, req).await.status(), 401);
    }
    let both = until(
        "alert.firing and alert.resolved",
        WAIT,
        Duration::from_millis(50),
        async || {
            let alerts = alert_events(&proxy);
            if alerts.len() >= 2 {
                return Ok(alerts);
            }
            Err(format!("{alerts:?}\nlog:\n{}", proxy.log_tail()))
        },
    )
    .await;
    // Once each, in order, one episode.
    assert_eq!(both.len(), 2, "{both:#?}");
    let (firing, resolved) = (&both[0], &both[1]);
    assert_eq!(firing["scim"]["actions"][0], "alert.firing");
    assert_eq!(firing["outcome"], "failure");
    assert_eq!(firing["alert"]["rule"], "probing");
    assert_eq!(firing["alert"]["key"]["status"], 401);
    assert_eq!(firing["alert"]["value"], 3.0);
    assert_eq!(resolved["scim"]["actions"][0], "alert.resolved");
    assert_eq!(resolved["outcome"], "success");
    assert_eq!(
        resolved["alert"]["episode_id"],
        firing["alert"]["episode_id"]
    );

    let hooks = until(
        "two webhook POSTs",
        WAIT,
        Duration::from_millis(50),
        async || {
            let got = received.lock().unwrap().clone();
            if got.len() >= 2 {
                return Ok(got);
            }
            Err(format!("{got:?}"))
        },
    )
    .await;
    assert_eq!(hooks.len(), 2, "{hooks:#?}");
    assert_eq!(hooks[0]["alert"], firing["alert"]);
    assert_eq!(hooks[0]["text"], firing["alert"]["summary"]);
    assert_eq!(hooks[1]["alert"]["status"], "resolved");
    assert_eq!(
        proxy
            .metric("scimtap_alerts_total{rule=\"probing\",status=\"firing\"}")
            .await,
        1.0
    );
    assert_eq!(
        proxy
            .metric("scimtap_alert_webhook_deliveries_total{rule=\"probing\",result=\"sent\"}")
            .await,
        2.0
    );
    // The webhook's URL is never logged.
    assert!(!proxy.log_tail().contains("/hook"), "{}", proxy.log_tail());
}
