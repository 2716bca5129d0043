use super::*;
use crate::sinks::RecordMeta;
use std::sync::Arc;

fn writer(encoding: HttpEncoding, format: EventFormat) -> HttpWriter {
    let config = HttpSinkConfig {
        url: "http://127.0.0.1:1/ingest".parse().unwrap(),
        encoding,
        headers: Vec::new(),
        extra_roots: Vec::new(),
        index: Some("audit".into()),
        source: "scimtap".into(),
        sourcetype: "scimtap:native".into(),
        host: Some("h1".into()),
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
    };
    HttpWriter::new(&config, format, Counter::default()).unwrap()
}

fn record(line: &str, id: &str) -> Record {
    Record {
        line: Bytes::from(format!("{line}\n")),
        meta: Arc::new(RecordMeta {
            ack: None,
            event_id: id.into(),
            key: "k".into(),
            time_millis: 1_700_000_000_123,
            severity: crate::sinks::Severity::Info,
        }),
    }
}

#[test]
fn encodings_lay_out_batches_as_their_receivers_expect() {
    let records = [record(r#"{"a":1}"#, "e1"), record(r#"{"a":2}"#, "e2")];
    let (body, _) = writer(HttpEncoding::Ndjson, EventFormat::Native).body(&records);
    assert_eq!(body, b"{\"a\":1}\n{\"a\":2}\n");
    let (body, _) = writer(HttpEncoding::JsonArray, EventFormat::Native).body(&records);
    assert_eq!(body, b"[{\"a\":1},{\"a\":2}]");
    let (body, _) = writer(HttpEncoding::ElasticsearchBulk, EventFormat::Native).body(&records);
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "{\"index\":{\"_index\":\"audit\",\"_id\":\"e1\"}}\n{\"a\":1}\n{\"index\":{\"_index\":\"audit\",\"_id\":\"e2\"}}\n{\"a\":2}\n"
    );
    let (body, _) = writer(HttpEncoding::SplunkHec, EventFormat::Native).body(&records);
    let text = String::from_utf8(body).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["time"], serde_json::json!(1_700_000_000.123));
    assert_eq!(first["host"], "h1");
    assert_eq!(first["sourcetype"], "scimtap:native");
    assert_eq!(first["index"], "audit");
    assert_eq!(first["event"], serde_json::json!({"a": 1}));
}

#[test]
fn cef_lines_travel_as_json_strings() {
    let records = [record(r"CEF:0|scimtap|x|1|a|b|3|msg=a\=b", "e1")];
    let (body, _) = writer(HttpEncoding::JsonArray, EventFormat::Cef).body(&records);
    let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(parsed[0], r"CEF:0|scimtap|x|1|a|b|3|msg=a\=b");
    let (body, _) = writer(HttpEncoding::ElasticsearchBulk, EventFormat::Cef).body(&records);
    let doc: serde_json::Value =
        serde_json::from_str(std::str::from_utf8(&body).unwrap().lines().nth(1).unwrap()).unwrap();
    assert_eq!(doc["message"], r"CEF:0|scimtap|x|1|a|b|3|msg=a\=b");
}

#[test]
fn bulk_items_retry_only_429_and_5xx() {
    let mut w = writer(HttpEncoding::ElasticsearchBulk, EventFormat::Native);
    let response = br#"{"took":1,"errors":true,"items":[
        {"index":{"status":201}},{"index":{"status":429,"error":{"type":"es_rejected_execution_exception"}}},
        {"index":{"status":400,"error":{"type":"mapper_parsing_exception"}}},{"index":{"status":503}}]}"#;
    let error = w.bulk_items(5, response).unwrap_err();
    assert_eq!(error.delivered, Delivered::AllBut(vec![1, 3, 4]));
    assert_eq!(w.take_skipped(), 1);
    assert_eq!(w.rejected.get(), 1);
    assert!(w
        .bulk_items(1, br#"{"errors":false,"items":[{"index":{"status":201}}]}"#)
        .is_ok());
}

#[test]
fn retry_after_reads_seconds_and_dates() {
    let secs = http::HeaderValue::from_static("7");
    assert_eq!(retry_after(&secs), Some(Duration::from_secs(7)));
    let later = std::time::SystemTime::now() + Duration::from_secs(30);
    let date = http::HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap();
    let wait = retry_after(&date).unwrap();
    assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30));
    assert_eq!(retry_after(&http::HeaderValue::from_static("soon")), None);
    assert!(retryable(StatusCode::SERVICE_UNAVAILABLE));
    assert!(retryable(StatusCode::TOO_MANY_REQUESTS));
    assert!(!retryable(StatusCode::BAD_REQUEST));
}
