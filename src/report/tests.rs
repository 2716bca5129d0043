//! The report's model over hand-written event lines (each a real event's shape, docs/events.md,
//! with only what the case is about filled in), and its HTML.

use serde_json::{json, Value};

use super::*;
use crate::integrity::{Chain, RecordKind};
use crate::trail::testing::{line, merge};

fn at(minute: u32, second: u32) -> String {
    format!("2026-11-22T09:{minute:02}:{second:02}.000Z")
}

fn write(dir: &Path, lines: &[String]) -> PathBuf {
    let path = dir.join("audit.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// The report of `lines` (one file) with `options`.
fn report_of(lines: &[String], options: &Options<'_>) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), lines);
    report(&[path], options).unwrap()
}

fn exchange(id: &str, when: String, actions: &[&str], patch: Value) -> String {
    let mut base = json!({"event_id": id, "timestamp": when, "scim": {"actions": actions}});
    merge(&mut base, patch);
    line(base)
}

fn failed(status: u64, patch: Value) -> Value {
    let mut base = json!({"outcome": "failure", "http": {"status": status}});
    merge(&mut base, patch);
    base
}

fn user(id: &str, name: &str) -> Value {
    json!({"scim": {"target": {"id": id, "user_name": name}}})
}

/// A tracker event (`deprovision.gap` / `deprovision.closed`) about the attempt `requested`.
fn tracker(id: &str, when: String, status: &str, requested: &str, extra: Value) -> String {
    let mut deprovision = json!({
        "status": status, "requested_action": "user.deactivate",
        "requested_event_id": requested, "requested_at": at(0, 0), "attempts": 1,
        "last_event_id": requested, "last_status": 502, "last_failure": "connect_refused",
        "due_at": at(1, 0), "gap_event_id": null, "closed_by": null,
        "closing_event_id": null, "latency_ms": null
    });
    merge(&mut deprovision, extra);
    line(json!({
        "event_id": id, "timestamp": when, "duration_ms": 0.0,
        "outcome": (if status == "gap" { "failure" } else { "success" }),
        "scim": {"operation": null, "actions": [format!("deprovision.{status}")],
                 "target": {"id": "u2", "user_name": "bob@example.com"}},
        "deprovision": deprovision
    }))
}

#[test]
fn counts_exchanges_by_action_and_outcome_and_groups_failures_by_reason() {
    let lines = [
        exchange("c1", at(0, 1), &["user.create"], json!({"http": {"status": 201}})),
        exchange(
            "c2",
            at(0, 2),
            &["user.create"],
            failed(409, json!({"scim": {"error": {"status": "409", "scim_type": "uniqueness", "detail": "userName exists"}}})),
        ),
        exchange("r1", at(0, 3), &[], json!({"http": {"method": "GET"}})),
        exchange(
            "g1",
            at(0, 4),
            &["group.members.remove", "group.members.add"],
            json!({}),
        ),
        exchange(
            "p1",
            at(0, 5),
            &["user.update"],
            failed(502, json!({"failure": {"side": "upstream", "kind": "connect_refused", "detail": "refused"}})),
        ),
        exchange("p2", at(0, 6), &["user.update"], failed(500, json!({}))),
        r#"{"schema_version":"1.4","record":"integrity.stop","timestamp":"2026-11-22T09:00:07.000Z"}"#.to_owned(),
    ];
    let report = report_of(&lines, &Options::default());
    let t = &report.totals;
    assert_eq!(
        (
            t.events,
            t.exchanges,
            t.success,
            t.failure,
            t.writes,
            t.reads
        ),
        (6, 6, 3, 3, 5, 1)
    );
    assert_eq!(t.lines_skipped, 1);
    let rows: Vec<(&str, u64, u64)> = report
        .actions
        .iter()
        .map(|a| (a.action.as_str(), a.success, a.failure))
        .collect();
    assert_eq!(
        rows,
        [
            ("group.members.add", 1, 0),
            ("group.members.remove", 1, 0),
            ("user.create", 1, 1),
            ("user.update", 0, 2)
        ]
    );
    let groups: Vec<(&str, u64, &[u64])> = report
        .failures
        .iter()
        .map(|g| (g.reason.as_str(), g.count, g.statuses.as_slice()))
        .collect();
    assert_eq!(
        groups,
        [
            ("connect_refused", 1, &[502][..]),
            ("status 500", 1, &[500][..]),
            ("uniqueness", 1, &[409][..])
        ]
    );
    assert_eq!(
        report.failures[2].example.as_deref(),
        Some("userName exists")
    );
    assert_eq!(
        report.period.first_event.as_deref(),
        Some(at(0, 1).as_str())
    );
    // One minute of traffic: minute buckets, every exchange in one.
    assert_eq!(report.timeline.bucket, "minute");
    assert_eq!(report.timeline.buckets.len(), 1);
    assert_eq!(
        (
            report.timeline.buckets[0].exchanges,
            report.timeline.buckets[0].writes,
            report.timeline.buckets[0].failures
        ),
        (6, 5, 3)
    );
}

#[test]
fn a_gap_pairs_with_its_closing_and_a_retry_joins_its_first_attempt() {
    let lines = [
        // alice: refused, reported as a gap, retried with success, closed by the tracker.
        exchange("a1", at(0, 0), &["user.deactivate"], {
            let mut p = failed(
                502,
                json!({"failure": {"kind": "connect_refused", "detail": "x"}}),
            );
            merge(&mut p, user("u1", "alice@example.com"));
            p
        }),
        tracker("gap-a", at(1, 1), "gap", "a1", json!({})),
        exchange("a2", at(2, 0), &["user.deactivate"], {
            let mut p = user("u1", "alice@example.com");
            merge(&mut p, json!({"retry_of": "a1", "duration_ms": 5.0}));
            p
        }),
        tracker(
            "closed-a",
            at(2, 0),
            "closed",
            "a1",
            json!({"closed_by": "response", "gap_event_id": "gap-a", "closing_event_id": "a2", "latency_ms": 120000}),
        ),
        // bob: refused, reported as a gap, never closed.
        exchange("b1", at(3, 0), &["user.deactivate"], {
            let mut p = failed(504, json!({"failure": {"kind": "response_timeout"}}));
            merge(&mut p, user("u2", "bob@example.com"));
            p
        }),
        tracker("gap-b", at(4, 1), "gap", "b1", json!({})),
        // carol, without [state]: a refused delete and a plain retry of it, matched by id.
        exchange("c1", at(5, 0), &["user.delete"], {
            let mut p = failed(500, json!({}));
            merge(&mut p, user("u3", "carol@example.com"));
            p
        }),
        exchange("c2", at(5, 30), &["user.delete"], {
            let mut p = user("u3", "carol@example.com");
            merge(&mut p, json!({"http": {"status": 204}, "duration_ms": 2.5}));
            p
        }),
        // dave: confirmed at once.
        exchange("d1", at(6, 0), &["user.deactivate"], {
            let mut p = user("u4", "dave@example.com");
            merge(
                &mut p,
                json!({"duration_ms": 7.25, "client": {"name": "okta-prod"}}),
            );
            p
        }),
        // erin: refused, then reactivated: withdrawn.
        exchange("e1", at(7, 0), &["user.deactivate"], {
            let mut p = failed(400, json!({}));
            merge(&mut p, user("u5", "erin@example.com"));
            p
        }),
        tracker(
            "closed-e",
            at(7, 30),
            "closed",
            "e1",
            json!({"closed_by": "reactivation", "latency_ms": 30000}),
        ),
    ];
    let d = report_of(&lines, &Options::default()).deprovisionings;
    assert_eq!(
        (
            d.total,
            d.confirmed,
            d.open_gaps,
            d.unconfirmed,
            d.withdrawn
        ),
        (5, 3, 1, 0, 1),
        "{d:#?}"
    );
    let alice = &d.items[0];
    assert_eq!(alice.target.as_deref(), Some("alice@example.com"));
    assert_eq!(alice.attempts, 2);
    assert_eq!(alice.status, DeprovisionStatus::Confirmed);
    assert_eq!(alice.confirmed_by.as_deref(), Some("response"));
    assert_eq!(alice.confirmed_at.as_deref(), Some(at(2, 0).as_str()));
    assert_eq!(alice.latency_ms, Some(120_000.0));
    assert_eq!(alice.gap_event_id.as_deref(), Some("gap-a"));
    assert_eq!(alice.who.as_deref(), Some("okta"));
    let bob = &d.items[1];
    assert_eq!(bob.status, DeprovisionStatus::Gap);
    assert_eq!(
        (bob.last_status, bob.last_failure.as_deref()),
        (Some(504), Some("response_timeout"))
    );
    let carol = &d.items[2];
    assert_eq!(
        (carol.action.as_str(), carol.attempts, carol.status),
        ("user.delete", 2, DeprovisionStatus::Confirmed)
    );
    // 30 s from the first attempt to the retry, plus the retry's own duration.
    assert_eq!(carol.latency_ms, Some(30_002.5));
    let dave = &d.items[3];
    assert_eq!(
        (dave.latency_ms, dave.who.as_deref()),
        (Some(7.25), Some("okta-prod"))
    );
    assert_eq!(d.items[4].status, DeprovisionStatus::Withdrawn);
    // The tracker's events are not actions.
    let report = report_of(&lines, &Options::default());
    assert_eq!(report.totals.tracker_events, 4);
    assert!(report
        .actions
        .iter()
        .all(|a| !a.action.starts_with("deprovision.")));
}

#[test]
fn the_period_keeps_events_from_its_start_up_to_not_including_its_end() {
    let lines = [
        exchange(
            "before",
            "2026-11-21T23:59:59.999Z".into(),
            &["user.create"],
            json!({}),
        ),
        exchange(
            "first",
            "2026-11-22T00:00:00.000Z".into(),
            &["user.create"],
            json!({}),
        ),
        exchange(
            "last",
            "2026-11-22T23:59:59.999Z".into(),
            &["user.delete"],
            json!({}),
        ),
        exchange(
            "after",
            "2026-11-23T00:00:00.000Z".into(),
            &["user.create"],
            json!({}),
        ),
        // A closing whose first attempt was before the period: a row of its own.
        tracker(
            "closed-x",
            "2026-11-22T10:00:00.000Z".into(),
            "closed",
            "long-ago",
            json!({"closed_by": "read", "latency_ms": 5}),
        ),
    ];
    let options = Options {
        from: Some(parse_from("2026-11-22").unwrap()),
        to: Some(parse_to("2026-11-22").unwrap()),
        ..Options::default()
    };
    let report = report_of(&lines, &options);
    assert_eq!((report.totals.events, report.totals.outside_period), (3, 2));
    assert_eq!(
        report.period.from.as_deref(),
        Some("2026-11-22T00:00:00.000Z")
    );
    assert_eq!(
        report.period.to.as_deref(),
        Some("2026-11-23T00:00:00.000Z")
    );
    // A day: hour buckets, all 24 of them.
    assert_eq!(report.timeline.bucket, "hour");
    assert_eq!(report.timeline.buckets.len(), 24);
    assert_eq!(report.timeline.buckets[23].start, "2026-11-22T23:00:00Z");
    assert_eq!(report.timeline.buckets[23].writes, 1);
    let items = &report.deprovisionings.items;
    assert_eq!(items.len(), 2, "{items:#?}");
    assert_eq!(
        (
            items[0].first_event_id.as_deref(),
            items[0].confirmed_by.as_deref()
        ),
        (Some("long-ago"), Some("read"))
    );
    // A month: day buckets.
    let month = Options {
        from: Some(parse_from("2026-11-01").unwrap()),
        to: Some(parse_to("2026-11-30").unwrap()),
        ..Options::default()
    };
    let report = report_of(&lines, &month);
    assert_eq!(
        (report.timeline.bucket, report.timeline.buckets.len()),
        ("day", 30)
    );
}

#[test]
fn bounds_take_dates_utc_times_and_offsets() {
    let utc = parse_from("2026-11-22T09:00:00Z").unwrap();
    assert_eq!(show(utc), "2026-11-22T09:00:00.000Z");
    assert_eq!(parse_from("2026-11-22T10:30:00+01:30").unwrap(), utc);
    assert_eq!(parse_from("2026-11-22T04:00:00-05:00").unwrap(), utc);
    assert_eq!(
        show(parse_from("2026-11-22T09:00:00.250Z").unwrap()),
        "2026-11-22T09:00:00.250Z"
    );
    assert_eq!(
        show(parse_to("2026-11-22").unwrap()),
        "2026-11-23T00:00:00.000Z"
    );
    for bad in [
        "yesterday",
        "2026-13-01",
        "2026-11-22T09:00:00+1:00",
        "22/11/2026",
        "2026-11-22T09:00:00+ü0:00",
    ] {
        assert!(parse_from(bad).is_err(), "{bad}");
    }
}

#[test]
fn alerts_are_listed_as_episodes_firing_or_resolved() {
    let alert = |id: &str, when: String, status: &str, episode: &str| {
        line(json!({
            "event_id": id, "timestamp": when, "outcome": "failure",
            "scim": {"operation": null, "actions": [format!("alert.{status}")]},
            "alert": {"rule": "deletes_burst", "kind": "rate", "status": status,
                      "episode_id": episode, "since": at(0, 0), "summary": "60 deletes in 10 min"}
        }))
    };
    let lines = [
        alert("x1", at(0, 0), "firing", "ep1"),
        alert("x2", at(5, 0), "resolved", "ep1"),
        alert("x3", at(6, 0), "firing", "ep2"),
    ];
    let report = report_of(&lines, &Options::default());
    let a = &report.alerts;
    assert_eq!((a.firing, a.resolved, a.episodes.len()), (1, 1, 2));
    assert_eq!(
        a.episodes[0].resolved_at.as_deref(),
        Some(at(5, 0).as_str())
    );
    assert_eq!(a.episodes[0].events, 2);
    assert_eq!(
        a.episodes[1].summary.as_deref(),
        Some("60 deletes in 10 min")
    );
    assert_eq!(
        (report.totals.alert_events, report.totals.exchanges),
        (3, 0)
    );
    assert!(report.actions.is_empty());
    // Without alerts the page says so.
    let mut page = Vec::new();
    let none = report_of(
        &[exchange("c", at(0, 0), &["user.create"], json!({}))],
        &Options::default(),
    );
    write_html(&none, &mut page).unwrap();
    assert!(String::from_utf8(page)
        .unwrap()
        .contains("No alert events in this period."));
}

#[test]
fn the_chain_is_verified_as_scimtap_verify_does() {
    let mut chain = Chain::resume(None, None);
    let mut sealed = vec![chain.record(RecordKind::Start, json!({"genesis": true})).1];
    for (i, second) in [1, 2].into_iter().enumerate() {
        let event = exchange(&format!("e{i}"), at(0, second), &["user.create"], json!({}));
        // The helper's own chain fields are replaced by the real ones.
        let mut value: Value = serde_json::from_str(&event).unwrap();
        let object = value.as_object_mut().unwrap();
        object.remove("instance");
        object.remove("integrity");
        sealed.push(chain.seal(format!("{value}\n").into_bytes()));
    }
    sealed.push(chain.record(RecordKind::Stop, json!({})).1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    std::fs::write(&path, sealed.concat()).unwrap();
    let report = report(std::slice::from_ref(&path), &Options::default()).unwrap();
    let i = &report.integrity;
    assert_eq!(
        (i.status, i.records, i.closed, i.exit_code()),
        ("intact", 4, true, 0)
    );
    assert_eq!(report.totals.events, 2);

    // One byte changed in an event: broken there, exit code as verify's.
    let text = String::from_utf8(sealed.concat()).unwrap().replacen(
        "\"duration_ms\":1.0",
        "\"duration_ms\":2.0",
        1,
    );
    std::fs::write(&path, text).unwrap();
    let report = super::report(std::slice::from_ref(&path), &Options::default()).unwrap();
    let broken = report.integrity.broken.as_ref().unwrap();
    assert_eq!(
        (report.integrity.status, broken.kind.as_str(), broken.seq),
        ("broken", "edited", 2)
    );
    assert_eq!(report.integrity.exit_code(), 10);
    let mut page = Vec::new();
    write_html(&report, &mut page).unwrap();
    assert!(String::from_utf8(page)
        .unwrap()
        .contains("Chain BROKEN</span> at seq 2"));
}

#[test]
fn user_names_are_escaped_in_the_page_and_kept_as_they_are_in_json() {
    let evil = "<script>alert(1)</script>\"'&@example.com";
    let lines = [exchange("s1", at(0, 0), &["user.deactivate"], {
        let mut p = failed(
            400,
            json!({"scim": {"error": {"status": "400", "scim_type": "<b>bad</b>", "detail": "<img src=x onerror=alert(2)>"}}}),
        );
        merge(&mut p, user("<id>", evil));
        p
    })];
    let report = report_of(&lines, &Options::default());
    let mut page = Vec::new();
    write_html(&report, &mut page).unwrap();
    let page = String::from_utf8(page).unwrap();
    assert!(!page.contains("<script"), "{page}");
    assert!(!page.contains("<img"), "{page}");
    assert!(!page.contains("<b>"), "{page}");
    assert!(!page.contains("<id>"), "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;@example.com"),
        "{page}"
    );
    assert!(
        page.contains("&lt;img src=x onerror=alert(2)&gt;"),
        "{page}"
    );
    // Nothing is fetched or run: no script, no external reference.
    assert!(page.contains("default-src 'none'"));
    assert!(!page.contains("src=\"http") && !page.contains("href=\"http"));
    let mut json = Vec::new();
    write_json(&report, &mut json).unwrap();
    let json: Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(json["deprovisionings"]["items"][0]["target"], evil);
    assert_eq!(json["failures"][0]["reason"], "<b>bad</b>");
}

#[test]
fn the_json_has_its_documented_top_level_fields_in_order() {
    let report = report_of(
        &[exchange("c", at(0, 0), &["user.create"], json!({}))],
        &Options::default(),
    );
    let mut json = Vec::new();
    write_json(&report, &mut json).unwrap();
    let json: Value = serde_json::from_slice(&json).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "report_version",
            "generated_at",
            "files",
            "period",
            "totals",
            "actions",
            "timeline",
            "deprovisionings",
            "failures",
            "alerts",
            "integrity"
        ]
    );
    // Every documented field name of docs/report.md's tables is one the JSON has.
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/report.md")).unwrap();
    for key in keys {
        assert!(
            doc.contains(&format!("`{key}`")),
            "docs/report.md does not document {key}"
        );
    }
}

#[test]
fn latencies_read_as_words() {
    assert_eq!(
        [850.0, 12_345.0, 245_000.0, 7_380_000.0].map(html::latency),
        ["850 ms", "12.3 s", "4 min 05 s", "2 h 03 min"]
    );
}

#[test]
fn a_route_report_counts_only_that_routes_events() {
    let lines = vec![
        exchange("e1", at(0, 1), &["user.create"], json!({"route": "crm"})),
        exchange("e2", at(0, 2), &["user.deactivate"], json!({"route": "hr"})),
        exchange(
            "e3",
            at(0, 3),
            &["user.create"],
            failed(502, json!({"route": "crm"})),
        ),
        exchange("e4", at(0, 4), &[], json!({"route": null})),
    ];
    let crm = report_of(
        &lines,
        &Options {
            route: Some("crm"),
            ..Options::default()
        },
    );
    assert_eq!(crm.period.route.as_deref(), Some("crm"));
    assert_eq!(
        (
            crm.totals.exchanges,
            crm.totals.failure,
            crm.totals.other_routes
        ),
        (2, 1, 2)
    );
    assert!(crm.actions.iter().all(|a| a.action == "user.create"));
    let mut page = Vec::new();
    write_html(&crm, &mut page).unwrap();
    let html = String::from_utf8(page).unwrap();
    assert!(html.contains("SCIM audit report: route crm"), "{html}");
    assert!(html.contains("2 of other routes"), "{html}");

    let all = report_of(&lines, &Options::default());
    assert_eq!((all.totals.exchanges, all.totals.other_routes), (4, 0));
    assert!(all.period.route.is_none());
}
