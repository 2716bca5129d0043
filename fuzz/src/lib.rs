//! Shared by the fuzz targets: the plain-text exchange format the seed corpora use, the event
//! contexts every target runs under, and the checks every encoded event must pass.
//!
//! # Exchange text
//!
//! ```text
//! [FLAGS ]METHOD TARGET
//! Request-Header: value
//! ...
//! <blank line>
//! STATUS            (three digits, or `-` when no response reached the client)
//! Response-Header: value
//! ...
//! <blank line>
//! request body bytes
//! @@response@@
//! response body bytes
//! ```
//!
//! Several exchanges may follow each other, separated by a line `@@next@@`; they share one
//! event context, so a `/ResourceTypes` response teaches later exchanges a custom type.
//! FLAGS is one word whose bytes pick, bit by bit (see [`Flags`]): the event context, TLS and a
//! client certificate, the HTTP version, how each body ended and whether it was cut at the
//! capture limit, whether scimtap generated the response, and a failure the request path
//! recorded. `fuzz/make_seeds.py` writes the committed seeds in this format from the fixtures.
//!
//! The request target must be one hyper accepts (`http::uri::PathAndQuery`), header names and
//! values must be valid `http` ones: what cannot reach scimtap over the wire is dropped, so a
//! finding is always an input a client could send.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use scimtap::config::{Config, EventFormat, SecretKey};
use scimtap::event::{AuditEvent, EventContext};
use scimtap::exchange::{
    BodyCapture, BodyEnd, ConnInfo, Exchange, Failure, FailureKind, RequestHead, ResponseRecord,
};
use serde_json::Value;

/// Separates the request body from the response body.
pub const RESPONSE_MARK: &[u8] = b"\n@@response@@\n";
/// Separates exchanges in one input.
pub const NEXT_MARK: &[u8] = b"\n@@next@@\n";
/// At most this many exchanges per input (more would only slow every run down).
pub const MAX_EXCHANGES: usize = 4;

/// Every output format a sink can ask for.
pub const FORMATS: [EventFormat; 4] = [
    EventFormat::Native,
    EventFormat::Ocsf,
    EventFormat::Ecs,
    EventFormat::Cef,
];

/// The secret a configured client sends (its SHA-256 is in the configured contexts).
pub const CLIENT_TOKEN: &str = "fuzz-client-token";

/// What the FLAGS word selects. Missing bytes count as `'0'` (0x30), which picks the default
/// of everything: context 0, plain TCP, HTTP/1.1, complete untruncated bodies.
#[derive(Debug, Clone, Copy)]
pub struct Flags {
    pub context: usize,
    pub tls: bool,
    pub cert: bool,
    pub version: Version,
    pub request_truncated: bool,
    pub request_end: u8,
    pub response_truncated: bool,
    pub response_generated: bool,
    pub response_end: u8,
    pub failure: Option<u8>,
}

impl Flags {
    pub fn from_word(word: &[u8]) -> Flags {
        let at = |i: usize| word.get(i).copied().unwrap_or(b'0');
        let (f0, f1, f2, f3) = (at(0), at(1), at(2), at(3));
        Flags {
            context: usize::from(f0 & 3),
            tls: f0 & 4 != 0,
            cert: f0 & 8 != 0,
            version: [
                Version::HTTP_11,
                Version::HTTP_10,
                Version::HTTP_2,
                Version::HTTP_11,
            ][usize::from((f0 >> 4) & 3)],
            request_truncated: f1 & 1 != 0,
            request_end: (f1 >> 1) % 6,
            response_truncated: f2 & 1 != 0,
            response_generated: f2 & 2 != 0,
            response_end: (f2 >> 2) % 4,
            failure: (f3 & 1 != 0).then_some(f3 >> 1),
        }
    }
}

/// One input: the exchanges and the context they share.
pub struct Case {
    pub context: usize,
    pub exchanges: Vec<Exchange>,
}

/// Parses an input in the exchange text format. Never fails: anything unreadable becomes a
/// default (GET /, no headers, no response).
pub fn parse_case(data: &[u8]) -> Case {
    let mut exchanges = Vec::new();
    let mut context = 0;
    for (i, chunk) in split(data, NEXT_MARK).into_iter().enumerate() {
        if i == MAX_EXCHANGES {
            break;
        }
        let (flags, exchange) = parse_exchange(chunk);
        if i == 0 {
            context = flags.context;
        }
        exchanges.push(exchange);
    }
    Case { context, exchanges }
}

/// Parses one exchange (no `@@next@@` inside).
pub fn parse_exchange(data: &[u8]) -> (Flags, Exchange) {
    let (head, bodies) = split_head(data);
    let mut lines = head.split(|&b| b == b'\n').map(trim_cr);
    let first = lines.next().unwrap_or_default();
    let words: Vec<&[u8]> = first.splitn(3, |&b| b == b' ').collect();
    let (flags_word, method, target): (&[u8], &[u8], &[u8]) = match words.as_slice() {
        [f, m, t] => (f, m, t),
        [m, t] => (b"", m, t),
        [t] => (b"", b"GET", t),
        _ => (b"", b"GET", b"/"),
    };
    let flags = Flags::from_word(flags_word);

    let mut request_headers = HeaderMap::new();
    for line in lines.by_ref() {
        if line.is_empty() {
            break;
        }
        add_header(&mut request_headers, line);
    }
    let status_line = lines.next().unwrap_or(b"-");
    let mut response_headers = HeaderMap::new();
    for line in lines.by_ref() {
        if line.is_empty() {
            break;
        }
        add_header(&mut response_headers, line);
    }

    let (request_body, response_body) = match find(bodies, RESPONSE_MARK) {
        Some(at) => (&bodies[..at], &bodies[at + RESPONSE_MARK.len()..]),
        None => (bodies, &b""[..]),
    };
    let status = std::str::from_utf8(status_line)
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok());

    let method = Method::from_bytes(method).unwrap_or(Method::GET);
    let path_and_query = http::uri::PathAndQuery::try_from(target)
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|_| "/".to_owned());
    let request_id = request_id(&request_headers);
    let mut conn = ConnInfo::new(SocketAddr::from(([192, 0, 2, 7], 50123)), flags.tls);
    if flags.cert {
        conn.client_cert_subject = Some(Arc::from("CN=okta-scim, O=Example"));
    }
    let request_end = match flags.request_end {
        0 => BodyEnd::Complete,
        1 => BodyEnd::Error("connection reset by peer".to_owned()),
        2 => BodyEnd::Cancelled,
        3 => BodyEnd::NotForwarded,
        4 => BodyEnd::IdleTimeout,
        _ => BodyEnd::TooLarge,
    };
    let response_end = match flags.response_end {
        0 => BodyEnd::Complete,
        1 => BodyEnd::Error("upstream reset mid-body".to_owned()),
        2 => BodyEnd::Cancelled,
        _ => BodyEnd::NotForwarded,
    };
    let exchange = Exchange {
        request_id,
        started_at: (SystemTime::UNIX_EPOCH + Duration::from_millis(1_717_000_000_123)).into(),
        duration: Duration::from_micros(12_345),
        conn,
        route: Some(scimtap::exchange::RouteTag::named("default")),
        request: RequestHead {
            method,
            path_and_query,
            version: flags.version,
            headers: request_headers,
        },
        request_body: capture(request_body, flags.request_truncated, request_end),
        response: status.map(|status| ResponseRecord {
            status,
            headers: response_headers,
            body: capture(response_body, flags.response_truncated, response_end),
            generated: flags.response_generated,
        }),
        recorded_failure: flags.failure.map(recorded_failure),
    };
    (flags, exchange)
}

/// The failures the request path records (proxy.rs), every kind in turn.
fn recorded_failure(n: u8) -> Failure {
    let kind = FailureKind::ALL[usize::from(n) % FailureKind::ALL.len()];
    Failure::new(kind, format!("fuzz: {kind} with = | \\ and\nnewline"))
}

/// X-Request-Id as the proxy keeps it (sane: 1 to 200 printable ASCII bytes), else generated.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .map(HeaderValue::as_bytes)
        .filter(|b| !b.is_empty() && b.len() <= 200 && b.iter().all(u8::is_ascii_graphic))
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_else(|| "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".to_owned())
}

/// A body capture holding `bytes` (as the tee would after they all passed).
pub fn capture(bytes: &[u8], truncated: bool, end: BodyEnd) -> BodyCapture {
    let mut c = BodyCapture::empty(end);
    c.captured_bytes = bytes.len();
    c.total_bytes = bytes.len() as u64 + if truncated { 1024 } else { 0 };
    c.truncated = truncated;
    // Two frames when there is room, as bodies usually arrive.
    if bytes.len() > 1 {
        let half = bytes.len() / 2;
        c.chunks.push(Bytes::copy_from_slice(&bytes[..half]));
        c.chunks.push(Bytes::copy_from_slice(&bytes[half..]));
    } else if !bytes.is_empty() {
        c.chunks.push(Bytes::copy_from_slice(bytes));
    }
    c
}

fn add_header(headers: &mut HeaderMap, line: &[u8]) {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return;
    };
    let name = line[..colon].trim_ascii();
    let value = line[colon + 1..].trim_ascii();
    if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
        headers.append(n, v);
    }
}

/// Splits the head (up to the blank line after the response headers) from the bodies.
fn split_head(data: &[u8]) -> (&[u8], &[u8]) {
    let mut blank = 0;
    let mut start = 0;
    while let Some(nl) = data[start..].iter().position(|&b| b == b'\n') {
        let line = trim_cr(&data[start..start + nl]);
        // The first line (method and target) is never the blank one.
        if start > 0 && line.is_empty() {
            blank += 1;
            if blank == 2 {
                return (&data[..start + nl], &data[start + nl + 1..]);
            }
        }
        start += nl + 1;
    }
    (data, &[])
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn split<'a>(data: &'a [u8], mark: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(at) = find(rest, mark) {
        out.push(&rest[..at]);
        rest = &rest[at + mark.len()..];
    }
    out.push(rest);
    out
}

// === event contexts ===

/// A minimal valid configuration with everything that changes events turned on.
const CONFIGURED: &str = r#"
[listen]
address = "127.0.0.1:0"
[upstream]
url = "http://127.0.0.1:9"
[capture]
include_bodies = "redacted"
[scim]
base_path = "/scim/v2"
resource_types = [{ name = "Device", endpoint = "/Devices" }, { name = "Räume|=\\", endpoint = "/Rooms" }]
[redact]
attributes = ["ssn", "EmployeeNumber", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter"]
query_params = ["sig", "X-Api-Key"]
[[clients]]
name = "okta-prod"
token_sha256 = "TOKEN_SHA256"
idp = "okta"
[[clients]]
name = "entra|=\\ \"quoted\""
cert_subject = "O=Example,CN=okta-scim"
[[sinks]]
type = "stdout"
"#;

/// The four contexts FLAGS chooses from:
/// 0. no configuration (`EventContext::default()`);
/// 1. `CONFIGURED`: base path, custom types, redaction, clients, bodies in events;
/// 2. as 1 with pseudonymisation and no base path;
/// 3. as 2 with a base path that ends in `/`, and no clients.
pub fn contexts() -> &'static [EventContext; 4] {
    static CONTEXTS: OnceLock<[EventContext; 4]> = OnceLock::new();
    CONTEXTS.get_or_init(|| {
        let text = CONFIGURED.replace("TOKEN_SHA256", &sha256_hex(CLIENT_TOKEN));
        let config = match Config::from_toml_str(&text, Path::new("fuzz.toml")) {
            Ok(config) => config,
            Err(e) => panic!("the fuzz context's configuration is invalid: {e}"),
        };
        let configured = EventContext::from_config(&config);
        let mut hashed = config.clone();
        hashed.scim.base_path = None;
        hashed.scim.hash_key = Some(SecretKey(b"fuzz-pseudonymisation-key-0123456789".to_vec()));
        let mut odd_base = hashed.clone();
        odd_base.scim.base_path = Some("/api/scim/".to_owned());
        odd_base.scim.clients.clear();
        [
            EventContext::default(),
            configured,
            EventContext::from_config(&hashed),
            EventContext::from_config(&odd_base),
        ]
    })
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// === invariants on encoded events ===

/// Encodes `event` in every format and checks each line (OCSF may give several, one record
/// each; they come back joined, one entry per format): each exactly one line ending in `\n`;
/// native, OCSF and ECS are JSON objects; CEF starts `CEF:0|`, has the seven header fields,
/// and its extension gives back the event's method, path and request id.
pub fn check_encodings(event: &AuditEvent<'_>) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(FORMATS.len());
    for format in FORMATS {
        let lines = match scimtap::formats::encode(format, event) {
            Ok(lines) => lines,
            Err(e) => panic!("{format:?}: the event does not encode: {e}"),
        };
        assert!(!lines.is_empty(), "{format:?}: no line");
        for line in &lines {
            check_line(format, line, event);
        }
        out.push(lines.concat());
    }
    out
}

fn check_line(format: EventFormat, line: &[u8], event: &AuditEvent<'_>) {
    assert_eq!(line.last(), Some(&b'\n'), "{format:?}: no final newline");
    let body = &line[..line.len() - 1];
    assert!(
        !body.contains(&b'\n') && !body.contains(&b'\r'),
        "{format:?}: a raw line break inside the line: {}",
        String::from_utf8_lossy(line)
    );
    let text = match std::str::from_utf8(body) {
        Ok(t) => t,
        Err(e) => panic!("{format:?}: not UTF-8: {e}"),
    };
    match format {
        EventFormat::Cef => check_cef(text, event),
        _ => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(_)) => {}
            Ok(other) => panic!("{format:?}: not a JSON object: {other}"),
            Err(e) => panic!("{format:?}: not JSON ({e}): {text}"),
        },
    }
}

fn check_cef(line: &str, event: &AuditEvent<'_>) {
    assert!(line.starts_with("CEF:0|"), "CEF: bad start: {line}");
    // Seven unescaped `|` end the header; `\` escapes the next character.
    let mut pipes = 0;
    let mut escaped = false;
    let mut fields = vec![String::new()];
    let mut ext_start = None;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
            fields.last_mut().map(|f| f.push(c));
            continue;
        }
        match c {
            '\\' => escaped = true,
            '|' => {
                pipes += 1;
                if pipes == 7 {
                    ext_start = Some(i + 1);
                    break;
                }
                fields.push(String::new());
            }
            c => {
                fields.last_mut().map(|f| f.push(c));
            }
        }
    }
    let Some(ext_start) = ext_start else {
        panic!("CEF: fewer than 7 header fields: {line}");
    };
    assert!(
        matches!(fields[6].as_str(), "3" | "6" | "8"),
        "CEF: severity {:?}: {line}",
        fields[6]
    );
    let ext = cef_extension(&line[ext_start..]);
    let get = |key: &str| ext.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    assert_eq!(
        get("requestMethod"),
        Some(event.http.method),
        "CEF requestMethod: {line}"
    );
    assert_eq!(get("request"), Some(event.http.path), "CEF request: {line}");
    assert_eq!(
        get("externalId"),
        Some(event.request_id),
        "CEF externalId: {line}"
    );
    assert_eq!(
        get("requestClientApplication"),
        event.client.user_agent.as_deref(),
        "CEF requestClientApplication: {line}"
    );
}

/// `key=value` pairs of a CEF extension: an unescaped `=` ends a key (the word before it);
/// a value runs to the space before the next key. Values are unescaped (`\\`, `\=`, `\n`,
/// `\r`).
pub fn cef_extension(ext: &str) -> Vec<(String, String)> {
    // Byte offsets of unescaped '='.
    let bytes = ext.as_bytes();
    let mut equals = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'=' => {
                equals.push(i);
                i += 1;
            }
            _ => i += 1,
        }
    }
    let mut out = Vec::new();
    for (n, &eq) in equals.iter().enumerate() {
        let key_start = ext[..eq].rfind(' ').map_or(0, |s| s + 1);
        let key = &ext[key_start..eq];
        let value_end = match equals.get(n + 1) {
            Some(&next) => ext[..next].rfind(' ').unwrap_or(next),
            None => ext.len(),
        };
        let raw = &ext[eq + 1..value_end.max(eq + 1)];
        let mut value = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => value.push('\n'),
                    Some('r') => value.push('\r'),
                    Some(other) => value.push(other),
                    None => value.push('\\'),
                }
            } else {
                value.push(c);
            }
        }
        out.push((key.to_owned(), value));
    }
    out
}
