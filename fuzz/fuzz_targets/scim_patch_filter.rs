//! The SCIM layer on its own, under every context: `scim::classify` on a request and response
//! (PATCH operations in every form, filters, Bulk), `redact_json` on the request body, the
//! endpoint locator, percent-decoding and filter pseudonymisation. Checks, besides never
//! panicking: one result per request (one per operation for Bulk), a sensitive PATCH path's
//! value only ever shown as `[REDACTED]`, no sensitive attribute's value left in a redacted
//! body, redaction idempotent, and every quoted filter literal replaced by an HMAC.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scimtap::scim::{self, endpoint, Body, Endpoint, Parts, ScimContext};
use scimtap_fuzz::{contexts, parse_exchange, NEXT_MARK};
use serde_json::Value;

const REDACTED: &str = "[REDACTED]";

fuzz_target!(|data: &[u8]| {
    let data = match scimtap_fuzz::find(data, NEXT_MARK) {
        Some(at) => &data[..at],
        None => data,
    };
    let (_, ex) = parse_exchange(data);
    let (path, query) = match ex.request.path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (ex.request.path_and_query.as_str(), None),
    };
    let request_bytes = ex.request_body.to_bytes();
    let response_bytes = ex.response.as_ref().map(|r| r.body.to_bytes());
    let request = Body::parse(
        &request_bytes,
        ex.request_body.total_bytes,
        ex.request_body.truncated,
        "request",
    );
    let response = match (&ex.response, &response_bytes) {
        (Some(r), Some(bytes)) => {
            Body::parse(bytes, r.body.total_bytes, r.body.truncated, "response")
        }
        _ => Body::Absent,
    };
    let location = ex
        .response
        .as_ref()
        .and_then(|r| r.headers.get(http::header::LOCATION))
        .and_then(|v| v.to_str().ok());
    let parts = Parts {
        method: ex.request.method.as_str(),
        path,
        query,
        request: &request,
        status: ex.response.as_ref().map(|r| r.status.as_u16()),
        response: &response,
        location,
    };
    let _ = endpoint::percent_decode(path);
    let filters: Vec<String> = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|pair| pair.split_once('='))
        .filter(|(name, _)| name.eq_ignore_ascii_case("filter"))
        .map(|(_, value)| endpoint::percent_decode_with(value, true))
        .collect();

    for ctx in contexts() {
        let ctx = &ctx.scim;
        let infos = scim::classify(&parts, ctx);
        let located = endpoint::locate(path, ctx.base_path.as_deref(), &ctx.custom_types);
        if located == Endpoint::Bulk && parts.method.eq_ignore_ascii_case("POST") {
            assert!(!infos.is_empty(), "Bulk without an event");
        } else {
            assert_eq!(infos.len(), 1, "one request, {} results", infos.len());
        }
        for info in &infos {
            for op in &info.changes.patch_ops {
                if let (Some(p), Some(v)) = (&op.path, &op.value) {
                    if sensitive(ctx, &base_attribute(p)) {
                        assert_eq!(v, REDACTED, "PATCH {p} shown as {v}");
                    }
                }
            }
        }
        if let Body::Json(v) = &request {
            let shown = scim::redact_json(v, ctx);
            assert_redacted(&shown, ctx, "$");
            if ctx.pseudonymizer.is_none() {
                assert_eq!(
                    scim::redact_json(&scim::Json::from(&shown), ctx),
                    shown,
                    "redaction not idempotent"
                );
            }
        }
        if let Some(p) = &ctx.pseudonymizer {
            let raw = String::from_utf8_lossy(&ex.request_body.to_bytes()).into_owned();
            for f in filters.iter().chain([&raw]) {
                let out = p.filter(f);
                for (i, piece) in out.split('"').enumerate() {
                    if i % 2 == 1 {
                        assert!(
                            piece.len() == 12 + 64 && piece.starts_with("hmac-sha256:"),
                            "filter literal not pseudonymised: {out}"
                        );
                    }
                }
            }
        }
    }
});

/// The attribute a PATCH path or body key names, as the SCIM schema reads it: without the
/// schema URN, a value filter or a sub-attribute, lower case. Written here from RFC 7644, not
/// copied from scimtap.
fn base_attribute(path: &str) -> String {
    let before_filter = path.split('[').next().unwrap_or(path);
    let name = if before_filter
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
    {
        before_filter.rsplit(':').next().unwrap_or(before_filter)
    } else {
        before_filter
    };
    name.split('.')
        .next()
        .unwrap_or(name)
        .trim()
        .to_ascii_lowercase()
}

fn sensitive(ctx: &ScimContext, attribute: &str) -> bool {
    ctx.sensitive.contains(attribute)
}

/// No member named by a sensitive attribute holds anything but `[REDACTED]`, and no PATCH
/// operation with a sensitive path shows its value.
fn assert_redacted(v: &Value, ctx: &ScimContext, at: &str) {
    match v {
        Value::Object(o) => {
            // SCIM names are case-insensitive; an exact `path` wins over other casings.
            let path_sensitive = o
                .get("path")
                .or_else(|| {
                    o.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("path"))
                        .map(|(_, p)| p)
                })
                .and_then(Value::as_str)
                .is_some_and(|p| sensitive(ctx, &base_attribute(p)));
            for (k, child) in o {
                let hidden = sensitive(ctx, &base_attribute(k))
                    || (path_sensitive && k.eq_ignore_ascii_case("value"));
                if hidden {
                    assert_eq!(child, REDACTED, "{at}.{k} shown: {child}");
                } else {
                    assert_redacted(child, ctx, &format!("{at}.{k}"));
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                assert_redacted(item, ctx, &format!("{at}[{i}]"));
            }
        }
        _ => {}
    }
}
