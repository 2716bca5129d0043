//! OCSF 1.8 events: one OCSF object per [`AuditEvent`] (so one per Bulk operation).
//!
//! Requests that change an identity map to Account Change (3001) or Group Management (3006);
//! reads, custom resource types and anything else without identity meaning map to API Activity
//! (6003). When an event carries several actions the most significant one picks the activity
//! (delete > create > disable > enable > member add > member remove > the rest); every action
//! stays in `unmapped.scim.actions`. Only attributes that OCSF 1.8 defines for the class (with
//! no profile) are written: `api` is a Cloud-profile attribute in the IAM classes, so it appears
//! only in API Activity. docs/formats-ocsf.md has the full mapping.

use serde_json::{json, Map, Value};

use crate::event::{AuditEvent, Outcome};
use crate::scim::{Operation, ScimInfo};
use crate::sinks::Severity;

/// OCSF schema version the events follow (`metadata.version`).
pub const OCSF_VERSION: &str = "1.8.0";

/// HTTP methods `http_request.http_method` accepts in OCSF 1.8 (an enum); any other method is
/// kept in `unmapped.http.method` instead.
const OCSF_HTTP_METHODS: &[&str] = &[
    "OPTIONS", "GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "CONNECT", "PATCH",
];

/// OCSF `activity_id` meaning "Other": the activity name then carries the source's own term.
const OTHER: u32 = 99;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    AccountChange,
    GroupManagement,
    ApiActivity,
}

impl Class {
    fn uid(self) -> u32 {
        match self {
            Class::AccountChange => 3001,
            Class::GroupManagement => 3006,
            Class::ApiActivity => 6003,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Class::AccountChange => "Account Change",
            Class::GroupManagement => "Group Management",
            Class::ApiActivity => "API Activity",
        }
    }

    fn category(self) -> (u32, &'static str) {
        match self {
            Class::AccountChange | Class::GroupManagement => (3, "Identity & Access Management"),
            Class::ApiActivity => (6, "Application Activity"),
        }
    }
}

/// Class and activity of one event. `name` is the OCSF caption of `id`, or scimtap's own term
/// when `id` is [`OTHER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Activity {
    class: Class,
    id: u32,
    name: &'static str,
}

impl Activity {
    const fn new(class: Class, id: u32, name: &'static str) -> Self {
        Activity { class, id, name }
    }

    /// `type_uid` and its caption (`type_name`): OCSF's caption for "Other" is "Other", not
    /// the activity name.
    fn type_uid(self) -> (u64, String) {
        let uid = u64::from(self.class.uid()) * 100 + u64::from(self.id);
        let caption = if self.id == OTHER { "Other" } else { self.name };
        (uid, format!("{}: {caption}", self.class.name()))
    }
}

/// The identity meaning of a SCIM action, most significant first: the first of an event's
/// actions in this list picks its activity.
#[rustfmt::skip]
const IDENTITY_ACTIONS: &[(&str, Activity)] = &[
    ("user.delete", Activity::new(Class::AccountChange, 6, "Delete")),
    ("user.create", Activity::new(Class::AccountChange, 1, "Create")),
    ("user.deactivate", Activity::new(Class::AccountChange, 5, "Disable")),
    ("user.reactivate", Activity::new(Class::AccountChange, 2, "Enable")),
    ("group.delete", Activity::new(Class::GroupManagement, 5, "Delete")),
    ("group.create", Activity::new(Class::GroupManagement, 6, "Create")),
    ("group.members.add", Activity::new(Class::GroupManagement, 3, "Add User")),
    ("group.members.remove", Activity::new(Class::GroupManagement, 4, "Remove User")),
    ("group.members.replace", Activity::new(Class::GroupManagement, OTHER, "Replace Members")),
    ("group.members.update", Activity::new(Class::GroupManagement, OTHER, "Update Members")),
    ("group.rename", Activity::new(Class::GroupManagement, OTHER, "Rename")),
    ("group.update", Activity::new(Class::GroupManagement, OTHER, "Update")),
    ("user.update", Activity::new(Class::AccountChange, OTHER, "Update")),
    ("deprovision.gap", Activity::new(Class::AccountChange, OTHER, "Deprovisioning Gap")),
    ("deprovision.closed", Activity::new(Class::AccountChange, OTHER, "Deprovisioning Confirmed")),
];

/// API Activity for an action that has no OCSF identity class (custom resource types), or
/// whose target cannot be named in one.
fn api_activity_for_action(action: &str) -> Activity {
    // scimtap's alert events (docs/formats-ocsf.md, "Alerts").
    match action {
        "alert.firing" => return Activity::new(Class::ApiActivity, OTHER, "Alert Firing"),
        "alert.resolved" => return Activity::new(Class::ApiActivity, OTHER, "Alert Resolved"),
        _ => {}
    }
    let verb = action.rsplit('.').next().unwrap_or(action);
    match verb {
        "create" => Activity::new(Class::ApiActivity, 1, "Create"),
        "delete" => Activity::new(Class::ApiActivity, 4, "Delete"),
        _ => Activity::new(Class::ApiActivity, 3, "Update"),
    }
}

/// API Activity of a request that asked nothing of an identity.
fn api_activity_for_request(scim: &ScimInfo, method: &str) -> Activity {
    let api = |id, name| Activity::new(Class::ApiActivity, id, name);
    match scim.operation {
        Some(Operation::Create) => api(1, "Create"),
        Some(Operation::Read | Operation::List | Operation::Search | Operation::Discovery) => {
            api(2, "Read")
        }
        Some(Operation::Replace | Operation::Patch) => api(3, "Update"),
        Some(Operation::Delete) => api(4, "Delete"),
        Some(Operation::Bulk) => api(OTHER, "Bulk"),
        None => match method.to_ascii_uppercase().as_str() {
            "GET" | "HEAD" => api(2, "Read"),
            "POST" => api(1, "Create"),
            "PUT" | "PATCH" => api(3, "Update"),
            "DELETE" => api(4, "Delete"),
            _ => api(OTHER, "Other"),
        },
    }
}

/// One OCSF record of an event: its activity, the SCIM action it stands for (if one does) and,
/// for Add User / Remove User, the one member it is about.
#[derive(Debug, Clone, Copy)]
struct Part<'e> {
    activity: Activity,
    action: Option<&'e str>,
    member: Option<&'e str>,
}

/// Every OCSF record of `event`, most significant first (the order of [`IDENTITY_ACTIONS`],
/// then the other actions as written): one per SCIM action, so no action is lost, and one per
/// member of a member add or remove, since OCSF 1.8's Group Management names a single `user`.
/// A request that asked nothing of an identity is one API Activity record.
fn parts<'e>(event: &'e AuditEvent<'_>) -> Vec<Part<'e>> {
    let scim = &event.scim;
    let mut parts = Vec::new();
    for (action, activity) in IDENTITY_ACTIONS {
        if !scim.actions.iter().any(|a| a == action) {
            continue;
        }
        // Both IAM classes require their target (`user`, `group`) to carry a name or an id;
        // without one the action is only an API call.
        let nameable = scim.target.id.is_some()
            || match activity.class {
                Class::AccountChange => scim.target.user_name.is_some(),
                _ => scim.target.display_name.is_some(),
            };
        let activity = if nameable {
            *activity
        } else {
            api_activity_for_action(action)
        };
        let members: &[String] = match (activity.class, activity.id) {
            (Class::GroupManagement, 3) => &scim.changes.members_added,
            (Class::GroupManagement, 4) => &scim.changes.members_removed,
            _ => &[],
        };
        if members.is_empty() {
            parts.push(Part {
                activity,
                action: Some(action),
                member: None,
            });
        }
        for member in members {
            parts.push(Part {
                activity,
                action: Some(action),
                member: Some(member),
            });
        }
    }
    // Actions with no identity class (custom resource types): API Activity each.
    for action in &scim.actions {
        if !IDENTITY_ACTIONS.iter().any(|(name, _)| name == action) {
            parts.push(Part {
                activity: api_activity_for_action(action),
                action: Some(action),
                member: None,
            });
        }
    }
    if parts.is_empty() {
        parts.push(Part {
            activity: api_activity_for_request(scim, event.http.method),
            action: None,
            member: None,
        });
    }
    parts
}

/// What the event is called in `api.operation` and `metadata.event_code`: the same class id as
/// the CEF format (`user.deactivate`, `scim.list`, `http.request`).
pub(crate) fn operation_name(scim: &ScimInfo, action: Option<&str>) -> String {
    if let Some(action) = action {
        return action.to_owned();
    }
    match scim.operation.and_then(|op| serde_json::to_value(op).ok()) {
        Some(Value::String(op)) => format!("scim.{op}"),
        _ => "http.request".to_owned(),
    }
}

/// `severity_id` and its caption. A failed identity change matters more than a failed read:
/// a deprovisioning that did not happen leaves access in place; a write refused for its
/// credentials (a revoked or unknown token trying to change identities) matters most.
fn severity(event: &AuditEvent<'_>, class: Class) -> (u32, &'static str) {
    match (crate::formats::severity(event), class) {
        (Severity::Error, _) => (4, "High"),
        (Severity::Info, _) => (1, "Informational"),
        // A firing alert is never Low: someone should look.
        (Severity::Warning, _) if event.alert.is_some() => (3, "Medium"),
        (Severity::Warning, Class::ApiActivity) => (2, "Low"),
        (Severity::Warning, _) => (3, "Medium"),
    }
}

/// Why the operation failed: scimtap's own failure first, then the service's SCIM error.
fn status_detail(event: &AuditEvent<'_>) -> Option<String> {
    if let Some(f) = &event.failure {
        return Some(format!("{}: {}", f.kind, f.detail));
    }
    let error = event.scim.error.as_ref()?;
    match (&error.scim_type, &error.detail) {
        (Some(t), Some(d)) => Some(format!("{t}: {d}")),
        (Some(t), None) => Some(t.clone()),
        (None, Some(d)) => Some(d.clone()),
        (None, None) => error.status.clone(),
    }
}

/// Inserts `value` under `key` when it is present.
fn put(map: &mut Map<String, Value>, key: &str, value: Option<impl Into<Value>>) {
    if let Some(v) = value {
        map.insert(key.to_owned(), v.into());
    }
}

/// The IdP client, as the service account it is: `user` with the configured name (else the mTLS
/// subject), the token fingerprint as `uid` and `type_id` 4 (Service); its identity provider;
/// and its software (User-Agent). OCSF's Actor needs one of these; `app_name` is `"unknown"`
/// when none is known.
fn actor(event: &AuditEvent<'_>) -> Value {
    let client = &event.client;
    let mut actor = Map::new();
    let mut user = Map::new();
    put(
        &mut user,
        "name",
        client
            .name
            .as_ref()
            .or(client.certificate_subject.as_ref())
            .cloned(),
    );
    put(&mut user, "uid", client.token_fingerprint.clone());
    if !user.is_empty() {
        user.insert("type_id".into(), json!(USER_TYPE_SERVICE));
        user.insert("type".into(), json!("Service"));
        actor.insert("user".into(), Value::Object(user));
    }
    if let Some(idp) = &client.idp {
        actor.insert("idp".into(), json!({ "name": idp }));
    }
    put(&mut actor, "app_name", client.user_agent.clone());
    if actor.is_empty() {
        actor.insert("app_name".into(), json!("unknown"));
    }
    Value::Object(actor)
}

/// `dst_endpoint`: the upstream SCIM service, by IP when its host is an address.
fn dst_endpoint(upstream: &crate::event::UpstreamInfo) -> Value {
    let key = if upstream.host_is_ip() {
        "ip"
    } else {
        "hostname"
    };
    json!({key: upstream.host, "port": upstream.port, "svc_name": "SCIM"})
}

/// OCSF User `type_id` 4: a service account (the IdP's provisioning integration).
const USER_TYPE_SERVICE: u32 = 4;

/// `observables`: the values an analyst pivots on, each named by where it sits in the record,
/// with its OCSF observable type (`type_id` and its caption `type`).
fn observables(event: &AuditEvent<'_>, part: &Part<'_>) -> Value {
    let mut out = Vec::new();
    let mut add = |name: &str, type_id: u32, caption: &str, value: Option<&String>| {
        if let Some(value) = value {
            out.push(json!({"name": name, "type_id": type_id, "type": caption, "value": value}));
        }
    };
    let t = &event.scim.target;
    add(
        "src_endpoint.ip",
        2,
        "IP Address",
        Some(&event.client.address),
    );
    add(
        "actor.user.uid",
        19,
        "User Credential ID",
        event.client.token_fingerprint.as_ref(),
    );
    if let (Class::ApiActivity, Some(upstream)) = (part.activity.class, &event.upstream) {
        if upstream.host_is_ip() {
            add("dst_endpoint.ip", 2, "IP Address", Some(&upstream.host));
        } else {
            add("dst_endpoint.hostname", 1, "Hostname", Some(&upstream.host));
        }
    }
    match part.activity.class {
        Class::AccountChange => {
            add("user.uid", 31, "User Object: uid", t.id.as_ref());
            add("user.name", 4, "User Name", t.user_name.as_ref());
        }
        Class::GroupManagement => {
            add("group.uid", 33, "Group Object: uid", t.id.as_ref());
            add(
                "group.name",
                32,
                "Group Object: name",
                t.display_name.as_ref(),
            );
            let member = part.member.map(str::to_owned);
            add("user.uid", 31, "User Object: uid", member.as_ref());
        }
        Class::ApiActivity => {
            add("resources.uid", 10, "Resource UID", t.id.as_ref());
            let name = t.user_name.as_ref().or(t.display_name.as_ref());
            add("resources.name", 38, "Resource Details Object: name", name);
        }
    }
    Value::Array(out)
}

/// The SCIM target as an OCSF User (Account Change) or Group (Group Management).
fn target(scim: &ScimInfo, class: Class) -> Value {
    let t = &scim.target;
    let mut out = Map::new();
    put(&mut out, "uid", t.id.clone());
    match class {
        Class::AccountChange => {
            put(&mut out, "name", t.user_name.clone());
            put(&mut out, "display_name", t.display_name.clone());
        }
        _ => put(&mut out, "name", t.display_name.clone()),
    }
    put(&mut out, "uid_alt", t.external_id.clone());
    Value::Object(out)
}

/// API Activity's `resources`: the SCIM resource acted on, when it can be named.
fn resources(scim: &ScimInfo) -> Option<Value> {
    let t = &scim.target;
    let name = t.user_name.as_ref().or(t.display_name.as_ref());
    if t.id.is_none() && name.is_none() {
        return None;
    }
    let mut r = Map::new();
    put(&mut r, "uid", t.id.clone());
    put(&mut r, "name", name.cloned());
    put(&mut r, "type", scim.resource_type.clone());
    put(&mut r, "uid_alt", t.external_id.clone());
    Some(json!([r]))
}

/// The event as OCSF JSON objects, one line each, newline included: one per SCIM action and,
/// for member adds and removes, per member (see [`parts`]); one for anything else.
pub fn ocsf_lines(event: &AuditEvent<'_>) -> Vec<Vec<u8>> {
    let parts = parts(event);
    let count = parts.len();
    parts
        .iter()
        .enumerate()
        .map(|(index, part)| {
            let mut line =
                serde_json::to_vec(&ocsf_value(event, part, index, count)).unwrap_or_default();
            line.push(b'\n');
            line
        })
        .collect()
}

fn ocsf_value(event: &AuditEvent<'_>, part: &Part<'_>, index: usize, count: usize) -> Value {
    let scim = &event.scim;
    let (activity, action) = (part.activity, part.action);
    let class = activity.class;
    let (category_uid, category_name) = class.category();
    let (type_uid, type_name) = activity.type_uid();
    let (severity_id, severity_name) = severity(event, class);
    let operation = operation_name(scim, action);
    // A Bulk operation's own status is its result; the envelope's is in `http_response`.
    let status_code = scim
        .bulk
        .as_ref()
        .and_then(|b| b.status)
        .or(event.http.status);
    let time = event.timestamp.unix_millis();

    let mut doc = Map::new();
    doc.insert("category_uid".into(), json!(category_uid));
    doc.insert("category_name".into(), json!(category_name));
    doc.insert("class_uid".into(), json!(class.uid()));
    doc.insert("class_name".into(), json!(class.name()));
    doc.insert("activity_id".into(), json!(activity.id));
    doc.insert("activity_name".into(), json!(activity.name));
    doc.insert("type_uid".into(), json!(type_uid));
    doc.insert("type_name".into(), json!(type_name));
    doc.insert("time".into(), json!(time));
    doc.insert("timezone_offset".into(), json!(0));
    doc.insert(
        "duration".into(),
        json!(event.duration_ms.round().max(0.0) as u64),
    );
    doc.insert("severity_id".into(), json!(severity_id));
    doc.insert("severity".into(), json!(severity_name));
    let (status_id, status) = match event.outcome {
        Outcome::Success => (1, "Success"),
        Outcome::Failure => (2, "Failure"),
    };
    doc.insert("status_id".into(), json!(status_id));
    doc.insert("status".into(), json!(status));
    put(&mut doc, "status_code", status_code.map(|s| s.to_string()));
    put(&mut doc, "status_detail", status_detail(event));
    let what = match (&scim.resource_type, scim.operation) {
        (Some(rt), Some(_)) => rt.clone(),
        _ => format!("{} {}", event.http.method, event.http.path),
    };
    let message = match &event.alert {
        Some(alert) => alert.summary.clone(),
        None => format!("{operation} {what}: {}", status.to_lowercase()),
    };
    doc.insert("message".into(), json!(message));
    doc.insert(
        "metadata".into(),
        json!({
            "version": OCSF_VERSION,
            "product": {
                "name": "scimtap",
                "vendor_name": "scimtap",
                "version": env!("CARGO_PKG_VERSION"),
            },
            "uid": crate::formats::record_id(&event.event_id, index, count),
            "correlation_uid": event.request_id,
            "event_code": operation,
            "original_time": event.timestamp,
        }),
    );
    doc.insert("actor".into(), actor(event));
    doc.insert("observables".into(), observables(event, part));
    doc.insert(
        "src_endpoint".into(),
        json!({"ip": event.client.address, "port": event.client.port}),
    );

    let method = event.http.method;
    let known_method = OCSF_HTTP_METHODS.contains(&method);
    let mut url = Map::new();
    url.insert("path".into(), json!(event.http.path));
    put(
        &mut url,
        "query_string",
        event.http.query.as_deref().map(str::to_owned),
    );
    let mut request = Map::new();
    if known_method {
        request.insert("http_method".into(), json!(method));
    }
    request.insert("url".into(), Value::Object(url));
    put(&mut request, "user_agent", event.client.user_agent.clone());
    request.insert("uid".into(), json!(event.request_id));
    request.insert(
        "version".into(),
        json!(event.http.version.trim_start_matches("HTTP/")),
    );
    request.insert("body_length".into(), json!(event.http.request_bytes));
    doc.insert("http_request".into(), Value::Object(request));
    if let Some(code) = event.http.status {
        let mut response = Map::new();
        response.insert("code".into(), json!(code));
        response.insert("body_length".into(), json!(event.http.response_bytes));
        put(
            &mut response,
            "content_type",
            event.http.response_content_type.clone(),
        );
        doc.insert("http_response".into(), Value::Object(response));
    }

    // The provisioned app: `dst_endpoint` and `api.service.uid` where the class has them (API
    // Activity), `unmapped.upstream` in every class.
    match class {
        Class::AccountChange => {
            doc.insert("user".into(), target(scim, class));
        }
        Class::GroupManagement => {
            doc.insert("group".into(), target(scim, class));
            if let Some(member) = part.member {
                doc.insert("user".into(), json!({ "uid": member }));
            }
        }
        Class::ApiActivity => {
            if let Some(upstream) = &event.upstream {
                doc.insert("dst_endpoint".into(), dst_endpoint(upstream));
            }
            let mut api = Map::new();
            api.insert("operation".into(), json!(operation));
            if scim.endpoint.is_some() {
                let mut service = Map::new();
                // The route: the provisioned app, as scimtap names it.
                service.insert(
                    "name".into(),
                    json!(event.route.as_deref().unwrap_or("SCIM")),
                );
                let uid = event
                    .upstream
                    .as_ref()
                    .map(|u| format!("{}:{}", u.host, u.port));
                put(&mut service, "uid", uid);
                api.insert("service".into(), Value::Object(service));
            }
            api.insert("request".into(), json!({"uid": event.request_id}));
            let mut response = Map::new();
            put(&mut response, "code", status_code);
            if let Some(error) = &scim.error {
                put(&mut response, "error", error.scim_type.clone());
                put(&mut response, "error_message", error.detail.clone());
            }
            if !response.is_empty() {
                api.insert("response".into(), Value::Object(response));
            }
            doc.insert("api".into(), Value::Object(api));
            put(&mut doc, "resources", resources(scim));
        }
    }

    // What OCSF has no attribute for, in scimtap's terms (docs/events.md).
    let mut http = Map::new();
    if !known_method {
        http.insert("method".into(), json!(method));
    }
    if event.http.response_generated {
        http.insert("response_generated".into(), json!(true));
    }
    if event.http.request_body_truncated {
        http.insert("request_body_truncated".into(), json!(true));
    }
    if event.http.response_body_truncated {
        http.insert("response_body_truncated".into(), json!(true));
    }
    put(&mut http, "request_body", event.http.request_body.clone());
    put(&mut http, "response_body", event.http.response_body.clone());
    let mut unmapped = Map::new();
    unmapped.insert("schema_version".into(), json!(event.schema_version));
    unmapped.insert("scim".into(), json!(scim));
    if let Some(route) = &event.route {
        unmapped.insert("route".into(), json!(&**route));
    }
    if let Some(upstream) = &event.upstream {
        unmapped.insert("upstream".into(), json!(upstream.as_ref()));
    }
    let client = &event.client;
    unmapped.insert(
        "client".into(),
        json!({
            "tls": client.tls,
            "auth_scheme": client.auth_scheme,
            "token_fingerprint": client.token_fingerprint,
            "certificate_subject": client.certificate_subject,
        }),
    );
    if let Some(f) = &event.failure {
        unmapped.insert("failure".into(), json!({"side": f.side, "kind": f.kind}));
    }
    if let Some(retry_of) = &event.retry_of {
        unmapped.insert("retry_of".into(), json!(retry_of));
    }
    if let Some(deprovision) = &event.deprovision {
        unmapped.insert("deprovision".into(), json!(deprovision));
    }
    if let Some(alert) = &event.alert {
        unmapped.insert("alert".into(), json!(alert));
    }
    if !http.is_empty() {
        unmapped.insert("http".into(), Value::Object(http));
    }
    doc.insert("unmapped".into(), Value::Object(unmapped));
    Value::Object(doc)
}

#[cfg(test)]
mod tests;
