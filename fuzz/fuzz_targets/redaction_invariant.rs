//! Secrets never reach an output. A random secret is put into the positions README's "Never in
//! an event" lists, chosen by the fuzzer, inside request and response bodies that the fuzzer
//! shapes: the Authorization value (any scheme), Proxy-Authorization, Cookie, Set-Cookie and
//! other headers scimtap does not copy; `password` and the configured `[redact] attributes`
//! in any casing, URN-qualified or not, at any depth, as every PATCH form (path, URN path,
//! path-less value object) and inside Bulk operations; secret query parameters. The exchange
//! goes through event building and every encoder (native, OCSF, ECS, CEF); the secret must
//! appear in none of them, not even lower-cased.
#![no_main]

use arbitrary::{Result, Unstructured};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use libfuzzer_sys::fuzz_target;
use scimtap::event::events_for;
use scimtap::exchange::{BodyEnd, ConnInfo, Exchange, RequestHead, ResponseRecord};
use scimtap_fuzz::{capture, check_encodings, contexts};
use serde_json::{json, Map, Value};
use std::time::{Duration, SystemTime};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
});

/// Words the fuzzer combines into paths, keys and values (SCIM's own vocabulary).
const WORDS: &[&str] = &[
    "Users",
    "Groups",
    "Me",
    "Bulk",
    ".search",
    "ResourceTypes",
    "Devices",
    "scim",
    "v2",
    "schemas",
    "Operations",
    "op",
    "path",
    "value",
    "Value",
    "members",
    "emails",
    "active",
    "displayName",
    "userName",
    "name",
    "givenName",
    "externalId",
    "id",
    "meta",
    "add",
    "remove",
    "replace",
    "Replace",
    "Add",
    "method",
    "bulkId",
    "data",
    "status",
    "response",
    "location",
    "Resources",
    "detail",
    "scimType",
    "display",
    "type",
    "primary",
    "work",
    "True",
    "False",
    "members[value eq \"u1\"]",
    "emails[type eq \"work\"].value",
    "urn:ietf:params:scim:schemas:core:2.0:User",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
    "urn:ietf:params:scim:api:messages:2.0:PatchOp",
    "urn:ietf:params:scim:api:messages:2.0:BulkRequest",
    "urn:ietf:params:scim:api:messages:2.0:BulkResponse",
    "urn:ietf:params:scim:api:messages:2.0:Error",
    "password",
    "ssn",
    "manager",
    "employeeNumber",
    "filter",
    "userName eq \"a\"",
    "u1",
    "g1",
    "POST",
    "PATCH",
    "PUT",
    "DELETE",
    "/Users",
    "/Users/u1",
    "/Groups/g1",
    "b1",
];

/// Attribute names that hold a secret in every context (`password`) or in the configured
/// ones (`[redact] attributes = ["ssn", "EmployeeNumber", "urn:…:enterprise:2.0:User:costCenter"]`).
const PASSWORD_KEYS: &[&str] = &[
    "password",
    "Password",
    "PASSWORD",
    "passWord",
    "urn:ietf:params:scim:schemas:core:2.0:User:password",
];
const CONFIGURED_KEYS: &[&str] = &[
    "ssn",
    "SSN",
    "employeeNumber",
    "EMPLOYEENUMBER",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:ssn",
    // Configured URN-qualified.
    "costCenter",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter",
];
/// PATCH paths naming a secret attribute (beyond the plain keys).
const PASSWORD_PATHS: &[&str] = &[
    "password[type eq \"x\"]",
    "password.value",
    "URN:IETF:PARAMS:SCIM:SCHEMAS:CORE:2.0:USER:PASSWORD",
];
/// Query parameters whose values are secret (built in, and `[redact] query_params`).
const SECRET_PARAMS: &[&str] = &[
    "access_token",
    "ACCESS_TOKEN",
    "access%5Ftoken",
    "id_token",
    "refresh_token",
    "token",
    "api_key",
    "apikey",
    "password",
    "client_secret",
    "secret",
];
const CONFIGURED_PARAMS: &[&str] = &["sig", "SIG", "x-api-key", "X-Api-Key"];

struct Secret {
    /// What is sent.
    value: String,
    /// What must not appear in any output (lower case; outputs are lower-cased to compare).
    needles: Vec<String>,
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let n: u64 = u.arbitrary()?;
    // Letters outside hex and base64-looking runs, so nothing else in an event matches.
    let core: String = (0..14)
        .map(|i| b"ghjkmnpqrstvwz"[((n >> (i * 4)) & 0xf) as usize % 14] as char)
        .collect();
    let mut secret = Secret {
        value: format!("Cnry{core}"),
        needles: vec![core.clone()],
    };
    let context = u.int_in_range(0..=3usize)?;
    let configured = context != 0;
    let mut g = Gen {
        u,
        core: core.clone(),
        configured,
        urn_configured: false,
    };

    // Request line.
    let method = g.pick(&["GET", "POST", "PUT", "PATCH", "DELETE", "POST", "PATCH"])?;
    let prefix = g.pick(&["/scim/v2", "", "/api/scim", "/scim/v2/"])?;
    let id = g.segment()?;
    let path = match g.u.int_in_range(0..=9)? {
        0 => format!("{prefix}/Users"),
        1 => format!("{prefix}/Users/{id}"),
        2 => format!("{prefix}/Groups/{id}"),
        3 => format!("{prefix}/Bulk"),
        4 => format!("{prefix}/Users/.search"),
        5 => format!("{prefix}/Me"),
        6 => format!("{prefix}/Devices/{id}"),
        7 => format!("{prefix}/Groups"),
        8 => format!("{prefix}/ResourceTypes"),
        _ => format!("/{id}/{}", g.segment()?),
    };
    let mut pairs = Vec::new();
    for _ in 0..g.u.int_in_range(0..=3)? {
        pairs.push(format!("{}={}", g.segment()?, g.segment()?));
    }
    if g.u.arbitrary()? {
        let mut names: Vec<&str> = SECRET_PARAMS.to_vec();
        if configured {
            names.extend(CONFIGURED_PARAMS);
        }
        let name = g.pick(&names)?;
        let at = g.u.int_in_range(0..=pairs.len())?;
        pairs.insert(at, format!("{name}={}", secret.value));
    }
    let target = if pairs.is_empty() {
        path
    } else {
        format!("{path}?{}", pairs.join("&"))
    };
    let Ok(target) = http::uri::PathAndQuery::try_from(target.as_str()) else {
        return Ok(());
    };

    // Request headers: plain ones the event may copy, and secret ones it must not.
    let mut request_headers = HeaderMap::new();
    for _ in 0..g.u.int_in_range(0..=3)? {
        let name = g.pick(&["user-agent", "content-type", "x-request-id", "accept"])?;
        let value = match g.u.int_in_range(0..=2)? {
            0 => g
                .pick(&["Okta SCIM Client 1.0.0", "application/scim+json", "req-1"])?
                .to_owned(),
            _ => g.word()?,
        };
        insert(&mut request_headers, name, &value);
    }
    match g.u.int_in_range(0..=7)? {
        0 => {}
        1 => insert(
            &mut request_headers,
            "authorization",
            &format!("Bearer {}", secret.value),
        ),
        2 => insert(
            &mut request_headers,
            "authorization",
            &format!("bearer  {} ", secret.value),
        ),
        3 => {
            let credentials = base64(format!("okta:{}", secret.value).as_bytes());
            secret.needles.push(credentials.to_ascii_lowercase());
            insert(
                &mut request_headers,
                "authorization",
                &format!("Basic {credentials}"),
            );
        }
        4 => insert(
            &mut request_headers,
            "authorization",
            &format!("SSWS {}", secret.value),
        ),
        // A token without a scheme, as some clients send it.
        5 if !skipped("auth-token-alone") => {
            insert(&mut request_headers, "authorization", &secret.value)
        }
        6 if !skipped("auth-tab") => insert(
            &mut request_headers,
            "authorization",
            &format!("Bearer\t{}", secret.value),
        ),
        5 | 6 => return Ok(()),
        _ => {
            insert(&mut request_headers, "authorization", "Bearer other-token");
            request_headers.append(
                http::header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {}", secret.value))
                    .unwrap_or(HeaderValue::from_static("x")),
            );
        }
    }
    for _ in 0..g.u.int_in_range(0..=2)? {
        let (name, value) = match g.u.int_in_range(0..=4)? {
            0 => ("proxy-authorization", format!("Basic {}", secret.value)),
            1 => ("cookie", format!("session={}; theme=dark", secret.value)),
            2 => ("x-api-key", secret.value.clone()),
            3 => ("x-forwarded-for", format!("10.0.0.1, {}", secret.value)),
            _ => ("x-tenant-secret", secret.value.clone()),
        };
        insert(&mut request_headers, name, &value);
    }

    // Bodies.
    let request_body = g.request_body(&secret.value)?;
    let status = match g.u.int_in_range(0..=8)? {
        0 => None,
        1 => Some(200),
        2 => Some(201),
        3 => Some(204),
        4 => Some(400),
        5 => Some(404),
        6 => Some(409),
        7 => Some(500),
        _ => Some(g.u.int_in_range(100..=599)?),
    };
    let response_body = g.response_body(&secret.value)?;
    let mut response_headers = HeaderMap::new();
    if g.u.arbitrary()? {
        insert(
            &mut response_headers,
            "set-cookie",
            &format!("sid={}; HttpOnly", secret.value),
        );
    }
    if g.u.arbitrary()? {
        insert(
            &mut response_headers,
            "content-type",
            "application/scim+json",
        );
    }
    if g.u.arbitrary()? {
        insert(&mut response_headers, "x-upstream-token", &secret.value);
    }
    let request_truncated = g.u.ratio(1, 16)?;

    let exchange = Exchange {
        request_id: "redaction-fuzz".to_owned(),
        started_at: (SystemTime::UNIX_EPOCH + Duration::from_secs(1_717_000_000)).into(),
        duration: Duration::from_millis(3),
        conn: ConnInfo::new(([192, 0, 2, 1], 443).into(), true),
        route: Some(scimtap::exchange::RouteTag::named("default")),
        request: RequestHead {
            method: Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET),
            path_and_query: target.as_str().to_owned(),
            version: Version::HTTP_11,
            headers: request_headers,
        },
        request_body: capture(&request_body, request_truncated, BodyEnd::Complete),
        response: status.map(|s| ResponseRecord {
            status: StatusCode::from_u16(s).unwrap_or(StatusCode::OK),
            headers: response_headers,
            body: capture(&response_body, false, BodyEnd::Complete),
            generated: false,
        }),
        recorded_failure: None,
    };

    if g.urn_configured && skipped("redact-urn-config") {
        return Ok(());
    }
    let ctx = &contexts()[context];
    if ctx.scim.pseudonymizer.is_some() && skipped("pii-nested") {
        let body_hides = |b: &[u8]| {
            serde_json::from_slice::<Value>(b).is_ok_and(|v| under_pii(&v, &secret.value, false))
        };
        if body_hides(&request_body) || body_hides(&response_body) {
            return Ok(());
        }
    }
    for event in &events_for(&exchange, ctx) {
        for (format, line) in scimtap_fuzz::FORMATS.iter().zip(check_encodings(event)) {
            let text = String::from_utf8_lossy(&line).to_ascii_lowercase();
            for needle in &secret.needles {
                if let Some(at) = text.find(needle.as_str()) {
                    let around = &text.as_bytes()
                        [at.saturating_sub(160)..(at + needle.len() + 40).min(text.len())];
                    panic!(
                        "secret {} leaked (context {context}, {format:?}): ...{}...\nrequest: {method} {target}\nrequest body: {}\nresponse body: {}",
                        secret.value,
                        String::from_utf8_lossy(around),
                        String::from_utf8_lossy(&request_body),
                        String::from_utf8_lossy(&response_body),
                    );
                }
            }
        }
    }
    Ok(())
}

/// Whether the finding `id` is listed in `SCIMTAP_FUZZ_SKIP` (comma-separated): inputs that
/// would hit a position known to leak are then not tried, so a run can look for other leaks
/// while one is being fixed. Empty by default: every position is checked.
fn skipped(id: &str) -> bool {
    static SKIP: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    SKIP.get_or_init(|| {
        std::env::var("SCIMTAP_FUZZ_SKIP")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    })
    .iter()
    .any(|s| s == id)
}

fn insert(headers: &mut HeaderMap, name: &str, value: &str) {
    if let (Ok(n), Ok(v)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        headers.append(n, v);
    }
}

struct Gen<'a, 'b> {
    u: &'a mut Unstructured<'b>,
    /// The secret's distinctive part: no free-form string may contain it.
    core: String,
    configured: bool,
    /// A key of the URN-qualified `[redact] attributes` entry was used.
    urn_configured: bool,
}

impl Gen<'_, '_> {
    fn pick<'w>(&mut self, words: &[&'w str]) -> Result<&'w str> {
        Ok(*self.u.choose(words)?)
    }

    /// A vocabulary word or a short free-form string that does not contain the secret.
    fn word(&mut self) -> Result<String> {
        if self.u.ratio(3, 4)? {
            return Ok(self.pick(WORDS)?.to_owned());
        }
        let len = self.u.int_in_range(0..=16)?;
        let bytes = self.u.bytes(len)?;
        let s = String::from_utf8_lossy(bytes).into_owned();
        Ok(if s.to_ascii_lowercase().contains(&self.core) {
            String::new()
        } else {
            s
        })
    }

    /// A word made safe for a path segment or query (percent-encoded).
    fn segment(&mut self) -> Result<String> {
        let w = self.word()?;
        Ok(w.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect())
    }

    fn json(&mut self, depth: usize) -> Result<Value> {
        let top = if depth >= 4 { 3 } else { 5 };
        Ok(match self.u.int_in_range(0..=top)? {
            0 => Value::Null,
            1 => Value::Bool(self.u.arbitrary()?),
            2 => Value::from(self.u.arbitrary::<i32>()?),
            3 => Value::String(self.word()?),
            4 => {
                let n = self.u.int_in_range(0..=3)?;
                Value::Array(
                    (0..n)
                        .map(|_| self.json(depth + 1))
                        .collect::<Result<_>>()?,
                )
            }
            _ => {
                let n = self.u.int_in_range(0..=4)?;
                let mut o = Map::new();
                for _ in 0..n {
                    let k = self.word()?;
                    let v = self.json(depth + 1)?;
                    o.insert(k, v);
                }
                Value::Object(o)
            }
        })
    }

    /// An attribute name that holds a secret in this context.
    fn secret_key(&mut self) -> Result<&'static str> {
        if self.configured && self.u.arbitrary()? {
            let key = *self.u.choose(CONFIGURED_KEYS)?;
            self.urn_configured |= key.contains("costCenter");
            Ok(key)
        } else {
            Ok(*self.u.choose(PASSWORD_KEYS)?)
        }
    }

    fn secret_path(&mut self) -> Result<&'static str> {
        if self.u.ratio(1, 4)? {
            Ok(*self.u.choose(PASSWORD_PATHS)?)
        } else {
            self.secret_key()
        }
    }

    /// The secret as a value: a string, in an array, in a complex value, or nested deeper.
    fn wrapped(&mut self, secret: &str) -> Result<Value> {
        Ok(match self.u.int_in_range(0..=4)? {
            0 | 1 => json!(secret),
            2 => json!([secret]),
            3 => json!({"value": secret, "type": "work"}),
            _ => json!({"a": {"b": [secret]}}),
        })
    }

    /// A SCIM-shaped request body with the secret in 0 to 4 places.
    fn request_body(&mut self, secret: &str) -> Result<Vec<u8>> {
        let mut body = match self.u.int_in_range(0..=5)? {
            0 => return Ok(Vec::new()),
            1 => self.json(0)?,
            2 => json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": self.word()?,
                "name": {"givenName": self.word()?},
                "emails": [{"value": self.word()?, "type": "work", "primary": true}],
                "active": self.json(3)?,
            }),
            3 => json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": self.pick(&["replace", "add", "remove", "Replace"])?, "path": self.word()?, "value": self.json(2)?}],
            }),
            4 => json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
                "Operations": [{"method": self.pick(&["POST", "PATCH", "PUT", "DELETE"])?, "path": self.pick(&["/Users", "/Users/u1", "/Groups/g1"])?, "bulkId": "b1", "data": self.json(1)?}],
            }),
            _ => json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": self.word()?,
                "members": [{"value": self.word()?, "display": self.word()?}],
            }),
        };
        for _ in 0..self.u.int_in_range(0..=4)? {
            match self.u.int_in_range(0..=4)? {
                0 => {
                    let key = self.secret_key()?;
                    let value = self.wrapped(secret)?;
                    let index = self.u.arbitrary::<u8>()?;
                    insert_into_object(&mut body, index, key, value);
                }
                1 => {
                    let op = self.pick(&["replace", "add", "Replace", "Add", "remove"])?;
                    let path = self.secret_path()?;
                    let value = self.wrapped(secret)?;
                    operations(&mut body).push(json!({"op": op, "path": path, "value": value}));
                }
                2 => {
                    let op = self.pick(&["replace", "add", "Replace"])?;
                    let key = self.secret_key()?;
                    let value = self.wrapped(secret)?;
                    let object = match self.u.int_in_range(0..=2)? {
                        0 => json!({ key: value }),
                        1 => json!({"name": { key: value }}),
                        _ => {
                            json!({"active": false, "emails": [{"value": "a@b", key: value}], key: value})
                        }
                    };
                    operations(&mut body).push(json!({"op": op, "value": object}));
                }
                3 => {
                    let key = self.secret_key()?;
                    let value = self.wrapped(secret)?;
                    let method = self.pick(&["POST", "PUT"])?;
                    operations(&mut body).push(json!({"method": method, "path": "/Users", "bulkId": "b2", "data": {"userName": "bulk", key: value}}));
                }
                _ => {
                    let path = self.secret_path()?;
                    let value = self.wrapped(secret)?;
                    operations(&mut body).push(
                        json!({"method": "PATCH", "path": "/Users/u2", "data": {
                        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                        "Operations": [{"op": "replace", "path": path, "value": value}]}}),
                    );
                }
            }
        }
        Ok(body.to_string().into_bytes())
    }

    /// A response body (resource, list, BulkResponse, error) with the secret in 0 to 3 places.
    fn response_body(&mut self, secret: &str) -> Result<Vec<u8>> {
        let mut body = match self.u.int_in_range(0..=4)? {
            0 => return Ok(Vec::new()),
            1 => self.json(0)?,
            2 => json!({"id": "u1", "userName": self.word()?, "meta": {"resourceType": "User"}}),
            3 => {
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkResponse"], "Operations": [
                {"method": "POST", "bulkId": "b1", "status": "201", "location": "/Users/u9", "response": self.json(2)?}]})
            }
            _ => {
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": 1,
                "Resources": [{"id": "u1", "userName": self.word()?}]})
            }
        };
        for _ in 0..self.u.int_in_range(0..=3)? {
            let key = self.secret_key()?;
            let value = self.wrapped(secret)?;
            let index = self.u.arbitrary::<u8>()?;
            insert_into_object(&mut body, index, key, value);
        }
        Ok(body.to_string().into_bytes())
    }
}

/// Whether `secret` sits inside the value of an attribute that pseudonymisation hashes
/// (userName, emails, displayName, members; or a PATCH `value` whose path names one).
fn under_pii(v: &Value, secret: &str, inside: bool) -> bool {
    fn pii(name: &str) -> bool {
        let before = name.split('[').next().unwrap_or(name);
        let last = if before.to_ascii_lowercase().starts_with("urn:") {
            before.rsplit(':').next().unwrap_or(before)
        } else {
            before
        };
        let base = last
            .split('.')
            .next()
            .unwrap_or(last)
            .trim()
            .to_ascii_lowercase();
        matches!(
            base.as_str(),
            "username" | "emails" | "displayname" | "members"
        )
    }
    match v {
        Value::Object(o) => {
            let path_pii = o
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("path"))
                .and_then(|(_, p)| p.as_str())
                .is_some_and(pii);
            o.iter().any(|(k, c)| {
                let inside = inside || pii(k) || (path_pii && k.eq_ignore_ascii_case("value"));
                under_pii(c, secret, inside)
            })
        }
        Value::Array(items) => items.iter().any(|c| under_pii(c, secret, inside)),
        Value::String(s) => inside && s == secret,
        _ => false,
    }
}

/// Sets `key` in the `index`-th object of `v` (depth first, modulo their number); makes `v`
/// an object when it holds none.
fn insert_into_object(v: &mut Value, index: u8, key: &str, value: Value) {
    fn count(v: &Value) -> usize {
        match v {
            Value::Object(o) => 1 + o.values().map(count).sum::<usize>(),
            Value::Array(a) => a.iter().map(count).sum(),
            _ => 0,
        }
    }
    fn nth<'v>(v: &'v mut Value, n: &mut usize) -> Option<&'v mut Map<String, Value>> {
        match v {
            Value::Object(_) if *n == 0 => v.as_object_mut(),
            Value::Object(o) => {
                *n -= 1;
                o.values_mut().find_map(|c| nth(c, n))
            }
            Value::Array(a) => a.iter_mut().find_map(|c| nth(c, n)),
            _ => None,
        }
    }
    let total = count(v);
    if total == 0 {
        *v = json!({});
    }
    let mut n = usize::from(index) % total.max(1);
    if let Some(object) = nth(v, &mut n) {
        object.insert(key.to_owned(), value);
    }
}

/// The body's top-level `Operations` array, created when missing.
fn operations(body: &mut Value) -> &mut Vec<Value> {
    if !body.is_object() {
        *body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"]});
    }
    let object = body.as_object_mut().expect("an object");
    let ops = object
        .entry("Operations")
        .or_insert_with(|| Value::Array(Vec::new()));
    if !ops.is_array() {
        *ops = Value::Array(Vec::new());
    }
    ops.as_array_mut().expect("an array")
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
