//! SCIM meaning of an exchange: which endpoint, which operation on which resource, what it asked
//! to happen to identities, to whom, and with what result.
//!
//! [`classify`] is a pure function of the finished exchange (request and response) and a
//! [`ScimContext`]; it does no I/O, keeps no state, and never panics whatever the input: what
//! cannot be parsed is reported in `parse_error` and everything else known is kept. Actions
//! describe the request's intent; the event's `outcome` says whether it happened.

pub mod endpoint;
mod patch;
mod privacy;

use std::collections::HashSet;

use serde::Serialize;
use serde_json::{Map, Value};
use serde_json_borrow::ObjectAsVec;

pub use endpoint::{CustomTypes, Discovery, Endpoint};
pub use privacy::Pseudonymizer;

/// A parsed body as classification reads it: strings borrowed from the captured bytes wherever
/// JSON allows (no escapes), objects as their members in document order. Parsing into
/// `serde_json::Value` instead (a hash map per object, a `String` per string) was the largest
/// single cost of the audit worker.
pub type Json<'a> = serde_json_borrow::Value<'a>;

/// What classification needs besides the exchange: configuration and learned resource types.
#[derive(Debug, Clone)]
pub struct ScimContext {
    /// `scim.base_path`: where the SCIM endpoints start, when known.
    pub base_path: Option<String>,
    /// Custom resource types by lower-case endpoint segment.
    pub custom_types: CustomTypes,
    /// Lower-case attribute names whose values never leave scimtap (`password` and
    /// `redact.attributes`).
    pub sensitive: HashSet<String>,
    /// Keyed pseudonymisation of userName, emails, displayName and filter literals.
    pub pseudonymizer: Option<Pseudonymizer>,
}

impl Default for ScimContext {
    /// No configuration: `password` is still never shown.
    fn default() -> Self {
        ScimContext::new(None, CustomTypes::new(), &[], None)
    }
}

impl ScimContext {
    pub fn new(
        base_path: Option<String>,
        custom_types: CustomTypes,
        redact: &[String],
        pseudonymizer: Option<Pseudonymizer>,
    ) -> Self {
        // Compared as body keys and PATCH paths are: the bare attribute, lower case (a
        // configured `urn:...:User:costCenter` must match `costCenter` in the extension).
        let mut sensitive: HashSet<String> =
            redact.iter().map(|a| patch::base_attribute(a)).collect();
        sensitive.insert("password".to_owned());
        ScimContext {
            base_path,
            custom_types,
            sensitive,
            pseudonymizer,
        }
    }

    /// Whether values of `attribute` (a bare attribute name, in any case) never leave scimtap.
    /// A scan, not a hash lookup: the set is a handful of names, and body keys need no
    /// lower-case copy this way.
    fn is_sensitive(&self, attribute: &str) -> bool {
        self.sensitive
            .iter()
            .any(|s| s.eq_ignore_ascii_case(attribute))
    }

    /// Learns custom resource types from a `/ResourceTypes` response body.
    pub fn learn_resource_types(&mut self, body: &Json<'_>) {
        let resources: Vec<&Json<'_>> = match get_ci(body, "Resources").and_then(Json::as_array) {
            Some(list) => list.iter().collect(),
            None => vec![body],
        };
        for r in resources {
            let (Some(name), Some(endpoint)) = (
                get_ci(r, "name").and_then(Json::as_str),
                get_ci(r, "endpoint").and_then(Json::as_str),
            ) else {
                continue;
            };
            let segment = endpoint.trim_matches('/').to_ascii_lowercase();
            if segment.is_empty()
                || segment.contains('/')
                || segment == "users"
                || segment == "groups"
            {
                continue;
            }
            self.custom_types
                .entry(segment)
                .or_insert_with(|| name.to_owned());
        }
    }
}

/// The SCIM operation, from endpoint and method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Create,
    Replace,
    Patch,
    Delete,
    Read,
    List,
    Search,
    Bulk,
    Discovery,
}

/// The `scim` object of an event.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ScimInfo {
    /// `Users`, `Groups`, `Me`, `Bulk`, `search` (root `.search`), `ServiceProviderConfig`,
    /// `ResourceTypes`, `Schemas`, `custom`, or null when the path is not a SCIM endpoint.
    pub endpoint: Option<&'static str>,
    pub operation: Option<Operation>,
    /// `User`, `Group`, a custom type's name, or null.
    pub resource_type: Option<String>,
    pub target: Target,
    /// What the request asked to happen to identities; empty for reads.
    pub actions: Vec<String>,
    pub changes: Changes,
    /// The filter of a list or search request (literals pseudonymised when configured).
    pub filter: Option<String>,
    /// Set on each event of a Bulk request.
    pub bulk: Option<BulkRef>,
    /// The SCIM error the service answered with, if any.
    pub error: Option<ScimError>,
    /// Why something could not be parsed; everything else known is still reported.
    pub parse_error: Option<String>,
    /// Caveats about the classification (e.g. a rename scimtap cannot verify without state).
    pub note: Option<String>,
    /// Why an answer that looks like a failure is not one for the provisioning intent (a
    /// DELETE of what is already gone, a lookup that finds nothing). Decided here, per
    /// operation (a Bulk operation has its own), but written as the event's top-level
    /// `outcome_reason` beside the `outcome` it qualifies, so not part of `scim`; the event
    /// drops it when the exchange itself failed.
    #[serde(skip)]
    pub outcome_reason: Option<OutcomeReason>,
    /// What the shadow state adds (`[state]` on); left out of the event when state is off,
    /// so events without `[state]` are as before. Filled by `crate::state`, never by
    /// classification, which stays stateless.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<StateInfo>,
}

/// `scim.state`: what scimtap's memory of earlier traffic adds to an event. Everything here
/// comes from state, not from this exchange, so a reader can tell inference from evidence.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct StateInfo {
    /// The state knew the target before this exchange.
    pub known: bool,
    /// The `scim.target` fields (`user_name`, `display_name`, `external_id`) filled from
    /// state because the exchange did not carry them (a PATCH, DELETE or GET by id).
    pub target_filled: Vec<&'static str>,
    /// The stateless action this event's action replaced: `"user.update"` when a PUT with
    /// `active: true` reactivated a user the state knew inactive (`user.reactivate`).
    pub reclassified_from: Option<String>,
    /// What a successful PUT or PATCH changed, attribute by attribute (leaf paths,
    /// multi-valued attributes whole); sensitive attributes never appear.
    pub diff: Vec<DiffEntry>,
    /// A successful PUT or PATCH of a known resource that changed nothing known: no attribute
    /// and no membership.
    pub noop: bool,
    /// The members the change added and removed, with their names: `scim.changes`'
    /// `members_added` / `members_removed` less those that changed nothing against a known
    /// member list (a member added again, a non-member removed), plus, for a replaced list,
    /// who it added and dropped compared with the known one, and for a deleted group, every
    /// member it had. `members_replaced`: the replacement list, named.
    pub members_added: Vec<MemberRef>,
    pub members_removed: Vec<MemberRef>,
    pub members_replaced: Option<Vec<MemberRef>>,
}

/// Where a tracked deprovisioning stands on its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeprovisionStatus {
    /// Still unconfirmed after `confirm_within_secs`.
    Gap,
    Closed,
}

/// Why a deprovisioning closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClosedBy {
    /// A later attempt succeeded.
    Response,
    /// A later read showed the user inactive or gone.
    Read,
    /// The user was reactivated: the deprovisioning was withdrawn, not confirmed.
    Reactivation,
}

impl ClosedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            ClosedBy::Response => "response",
            ClosedBy::Read => "read",
            ClosedBy::Reactivation => "reactivation",
        }
    }
}

/// The top-level `deprovision` object of a `deprovision.gap` or `deprovision.closed` event:
/// a deactivation or deletion the app refused or never answered, and how it ended.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeprovisionInfo {
    pub status: DeprovisionStatus,
    /// `user.deactivate` or `user.delete`.
    pub requested_action: String,
    /// The first attempt's event, and when it was asked.
    pub requested_event_id: String,
    pub requested_at: String,
    /// Attempts that failed, so far.
    pub attempts: i64,
    pub last_event_id: String,
    /// The status the app answered the last failed attempt; null when it never answered.
    pub last_status: Option<u16>,
    /// Why the last failed attempt failed: `failure.kind`, else the SCIM error's detail.
    pub last_failure: Option<String>,
    /// When it became (or becomes) a gap: `requested_at` + `confirm_within_secs`.
    pub due_at: String,
    /// The `deprovision.gap` event that reported it, if one did.
    pub gap_event_id: Option<String>,
    /// On `closed`: what closed it.
    pub closed_by: Option<ClosedBy>,
    /// The event that closed it.
    pub closing_event_id: Option<String>,
    /// From the first attempt to the closing event, in milliseconds.
    pub latency_ms: Option<i64>,
}

/// One changed attribute: its value before and after (null when absent).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DiffEntry {
    pub attribute: String,
    pub before: Value,
    pub after: Value,
}

/// A member id and, when the state knows it, the member's userName (a group's displayName).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MemberRef {
    pub id: String,
    pub name: Option<String>,
}

/// Why `outcome` is `success` although the service answered "not found".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeReason {
    /// A DELETE answered 404 with a SCIM error: the resource is gone, as asked (an IdP
    /// retrying a delete, or cleaning up after a manual removal).
    AlreadyAbsent,
    /// A GET by id answered 404 with a SCIM error, or a filtered list or search answered 2xx
    /// with `totalResults: 0`: the IdP asked whether the identity exists (Entra ID checks
    /// before every create, and probes with a user that does not exist), and was told.
    NotFoundLookup,
}

/// Who the operation was done to.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Target {
    pub id: Option<String>,
    pub external_id: Option<String>,
    pub user_name: Option<String>,
    pub display_name: Option<String>,
}

/// What the request touches.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Changes {
    /// Attribute paths the request touches, as written (without values).
    pub attributes: Vec<String>,
    /// PATCH operations: op lower-cased, path, and the value where it is not sensitive.
    pub patch_ops: Vec<PatchOpInfo>,
    pub members_added: Vec<String>,
    pub members_removed: Vec<String>,
    /// The full new member list of a replace; `[]` for an emptied group; null when the
    /// request did not replace the members.
    pub members_replaced: Option<Vec<String>>,
    /// What the request asked the identifying attributes to become, accepted or not.
    pub requested: Requested,
}

/// The identifying values a create, replace or patch sets, as requested. Kept apart from
/// [`Target`] because a request can be refused: `target` names the identity as it is known
/// after the exchange, `requested` what the IdP asked for (a rename the service rejected with
/// 409 shows here, never as the target's name).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Requested {
    pub external_id: Option<String>,
    pub user_name: Option<String>,
    pub display_name: Option<String>,
}

/// One PATCH operation as the event shows it. `op` and `value` are normalised so rules can
/// match them; `raw_op` and `raw_value` keep what the client sent when normalising changed it,
/// because the form of a request (Entra's `"Replace"`, a boolean sent as `"False"`) is evidence
/// of who sent it. Both are left out when nothing was changed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PatchOpInfo {
    /// The op lower-cased (`add`, `remove`, `replace`); `""` when missing.
    pub op: String,
    /// The op as sent, only when it differs from `op`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_op: Option<String>,
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// The value as sent, only when `value` converted it (`active: "False"` → `false`); for a
    /// path-less operation, the converted members only. Never for a sensitive attribute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_value: Option<Value>,
}

/// Where an event sits in a Bulk request.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BulkRef {
    /// 0-based position in the BulkRequest's `Operations`.
    pub index: usize,
    pub bulk_id: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    /// The status of the matching BulkResponse entry.
    pub status: Option<u16>,
}

/// A SCIM error response (RFC 7644 §3.12).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ScimError {
    pub status: Option<String>,
    pub scim_type: Option<String>,
    pub detail: Option<String>,
}

/// A body as classification sees it.
#[derive(Debug, Clone)]
pub enum Body<'a> {
    /// No body, or an empty one.
    Absent,
    Json(Json<'a>),
    /// Present but unusable: the reason.
    Invalid(String),
}

impl<'a> Body<'a> {
    /// Parses captured bytes. `truncated` captures are not parsed: half a JSON document would
    /// mislead. A key repeated in an object is read with its last value (as most JSON
    /// parsers, and so most SCIM services, do).
    pub fn parse(bytes: &'a [u8], total: u64, truncated: bool, side: &str) -> Body<'a> {
        if total == 0 || (bytes.is_empty() && !truncated) {
            return Body::Absent;
        }
        if truncated {
            return Body::Invalid(format!(
                "{side} body not classified: only the first {} of {total} bytes were captured (capture.max_body_bytes or capture.max_pending_bytes)",
                bytes.len()
            ));
        }
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Body::Absent;
        }
        match serde_json::from_slice::<Json<'a>>(bytes) {
            Ok(v) => Body::Json(v),
            Err(e) => {
                let hint = if bytes.first() == Some(&b'<') {
                    " (looks like HTML)"
                } else {
                    ""
                };
                Body::Invalid(format!("{side} body is not JSON{hint}: {e}"))
            }
        }
    }

    fn json(&self) -> Option<&Json<'a>> {
        match self {
            Body::Json(v) => Some(v),
            _ => None,
        }
    }
}

/// One request (or one Bulk operation) to classify.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    pub method: &'a str,
    /// Raw path without the query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub request: &'a Body<'a>,
    pub status: Option<u16>,
    pub response: &'a Body<'a>,
    /// The response's Location header.
    pub location: Option<&'a str>,
}

/// Classifies one exchange. A Bulk request yields one [`ScimInfo`] per operation inside it
/// (with `bulk` set); anything else yields exactly one.
pub fn classify(parts: &Parts<'_>, ctx: &ScimContext) -> Vec<ScimInfo> {
    let endpoint = endpoint::locate(parts.path, ctx.base_path.as_deref(), &ctx.custom_types);
    if endpoint == Endpoint::Bulk && parts.method.eq_ignore_ascii_case("POST") {
        return classify_bulk(parts, ctx);
    }
    vec![classify_one(parts, &endpoint, ctx)]
}

fn classify_one(parts: &Parts<'_>, endpoint: &Endpoint, ctx: &ScimContext) -> ScimInfo {
    let method = parts.method.to_ascii_uppercase();
    let mut info = ScimInfo {
        endpoint: endpoint.name(),
        ..ScimInfo::default()
    };
    let (resource_type, id, search) = match endpoint {
        Endpoint::Resource {
            resource_type,
            id,
            search,
        } => (Some(resource_type.clone()), id.clone(), *search),
        Endpoint::Me => (Some("User".to_owned()), None, false),
        _ => (None, None, false),
    };
    info.resource_type = resource_type.clone();
    info.operation = match (endpoint, method.as_str()) {
        (Endpoint::Resource { search: true, .. } | Endpoint::RootSearch, "POST") => {
            Some(Operation::Search)
        }
        (Endpoint::Resource { id: None, .. }, "GET") => Some(Operation::List),
        (Endpoint::Resource { id: None, .. } | Endpoint::Me, "POST") => Some(Operation::Create),
        (Endpoint::Resource { id: Some(_), .. } | Endpoint::Me, "GET") => Some(Operation::Read),
        (Endpoint::Resource { id: Some(_), .. } | Endpoint::Me, "PUT") => Some(Operation::Replace),
        (Endpoint::Resource { id: Some(_), .. } | Endpoint::Me, "PATCH") => Some(Operation::Patch),
        (Endpoint::Resource { id: Some(_), .. } | Endpoint::Me, "DELETE") => {
            Some(Operation::Delete)
        }
        (Endpoint::Bulk, "POST") => Some(Operation::Bulk),
        (Endpoint::Discovery(_), "GET") => Some(Operation::Discovery),
        _ => None,
    };
    let _ = search;

    let needs_request = matches!(
        info.operation,
        Some(Operation::Create | Operation::Replace | Operation::Patch | Operation::Search)
    );
    if needs_request {
        if let Body::Invalid(why) = parts.request {
            info.parse_error = Some(why.clone());
        }
    }
    let request = parts.request.json();

    // Actions and changes: what the request asked for.
    if let (Some(rt), Some(op)) = (&resource_type, info.operation) {
        let prefix = action_prefix(rt);
        match op {
            Operation::Create => {
                info.actions.push(format!("{prefix}.create"));
                if let Some(body) = request {
                    info.changes.attributes = body_attributes(body);
                    if rt == "Group" {
                        let members = get_ci(body, "members")
                            .map(patch::member_ids)
                            .unwrap_or_default();
                        if !members.is_empty() {
                            info.actions.push("group.members.add".to_owned());
                            info.changes.members_added = members;
                        }
                    }
                }
            }
            Operation::Replace => {
                if let Some(body) = request {
                    info.changes.attributes = body_attributes(body);
                    match rt.as_str() {
                        "User" => {
                            let active = get_ci(body, "active").and_then(patch::as_bool);
                            // A PUT with active true cannot be told from a routine profile
                            // update without the prior state (Okta sends it in every PUT).
                            info.actions.push(if active == Some(false) {
                                "user.deactivate".to_owned()
                            } else {
                                "user.update".to_owned()
                            });
                        }
                        "Group" => {
                            info.actions.push("group.update".to_owned());
                            if let Some(members) = get_ci(body, "members") {
                                info.actions.push("group.members.replace".to_owned());
                                info.changes.members_replaced = Some(patch::member_ids(members));
                            }
                        }
                        _ => info.actions.push(format!("{prefix}.update")),
                    }
                } else {
                    info.actions.push(format!("{prefix}.update"));
                }
            }
            Operation::Patch => match request {
                Some(body) => {
                    let analysis = patch::analyze(body, rt, ctx);
                    info.actions = analysis.actions;
                    info.changes = analysis.changes;
                    info.note = analysis.note;
                    if let Some(why) = analysis.parse_error {
                        info.parse_error.get_or_insert(why);
                    }
                    if info.actions.is_empty() {
                        info.actions.push(format!("{prefix}.update"));
                    }
                }
                None => info.actions.push(format!("{prefix}.update")),
            },
            Operation::Delete => info.actions.push(format!("{prefix}.delete")),
            _ => {}
        }
    }

    // Filter of a list or search.
    info.filter = match info.operation {
        Some(Operation::List) => parts.query.and_then(|q| query_param(q, "filter")),
        Some(Operation::Search) => request
            .and_then(|b| get_ci(b, "filter"))
            .and_then(Json::as_str)
            .map(str::to_owned),
        _ => None,
    }
    .map(|f| match &ctx.pseudonymizer {
        Some(p) => p.filter(&f),
        None => f,
    });

    // Target: path first, then request body, then response body.
    info.target.id = id;
    let response = parts.response.json();
    let single_resource =
        |v: &&Json<'_>| get_ci(v, "Resources").is_none() && get_ci(v, "Operations").is_none();
    // Only a 2xx answer describes the resource: an error body, or the `Location` some services
    // send with one (scim2-server: the collection `…/v2/Users` on a 409), says nothing of it.
    let answered_2xx = parts.status.is_some_and(|s| (200..300).contains(&s));
    let response_resource = response.filter(single_resource).filter(|_| answered_2xx);
    let request_resource =
        request.filter(|_| matches!(info.operation, Some(Operation::Create | Operation::Replace)));
    if info.target.id.is_none() && info.operation == Some(Operation::Create) && answered_2xx {
        info.target.id = response_resource
            .and_then(|r| get_ci(r, "id"))
            .and_then(Json::as_str)
            .map(str::to_owned)
            .or_else(|| {
                let rt = resource_type.as_deref()?;
                location_id(parts.location?, rt, &ctx.custom_types)
            });
    }
    if resource_type.is_some()
        && !matches!(
            info.operation,
            Some(Operation::List | Operation::Search) | None
        )
    {
        let patched = (info.operation == Some(Operation::Patch))
            .then(|| request.map(patch::patched_values))
            .flatten();
        let requested = |key: &str| {
            request_resource
                .and_then(|r| get_ci(r, key))
                .or_else(|| {
                    patched
                        .as_ref()
                        .and_then(|m| m.get(&key.to_ascii_lowercase()).copied())
                })
                .and_then(Json::as_str)
                .map(str::to_owned)
        };
        let answered = |key: &str| {
            response_resource
                .and_then(|r| get_ci(r, key))
                .and_then(Json::as_str)
                .map(str::to_owned)
        };
        info.changes.requested = Requested {
            external_id: requested("externalId"),
            user_name: requested("userName"),
            display_name: requested("displayName"),
        };
        // What a replace or patch asked the names to become is the identity's name only once
        // the service accepted it: a rejected rename (409, 400, a 502 from scimtap) must not
        // put the refused name on the target as if it were the person's. It stays visible in
        // `changes.requested`. A create's request is the only name its identity has, refused
        // or not (a 409 `uniqueness` names the account that already holds it).
        let accepted = answered_2xx || info.operation == Some(Operation::Create);
        let name = |requested: &Option<String>, key: &str| {
            requested
                .clone()
                .filter(|_| accepted)
                .or_else(|| answered(key))
        };
        let r = &info.changes.requested;
        info.target.external_id = name(&r.external_id, "externalId");
        info.target.user_name = name(&r.user_name, "userName");
        info.target.display_name = name(&r.display_name, "displayName");
        if let Some(p) = &ctx.pseudonymizer {
            for v in [
                &mut info.target.user_name,
                &mut info.target.display_name,
                &mut info.changes.requested.user_name,
                &mut info.changes.requested.display_name,
            ] {
                *v = v.as_deref().map(|v| p.hash(v));
            }
        }
    }

    // Result: the SCIM error the service answered with.
    if parts.status.is_some_and(|s| s >= 400) {
        match parts.response {
            Body::Json(v) => info.error = scim_error(v),
            Body::Invalid(why) => {
                info.parse_error.get_or_insert_with(|| why.clone());
            }
            Body::Absent => {}
        }
    } else if let (Body::Invalid(why), true) = (
        parts.response,
        info.operation == Some(Operation::Create) && info.target.id.is_none(),
    ) {
        info.parse_error.get_or_insert_with(|| why.clone());
    }
    info.outcome_reason = outcome_reason(&info, endpoint, parts);
    info
}

/// Whether a "not found" answer fulfils the request's intent. A 404 counts only with a SCIM
/// error body: a web server's or gateway's own 404 (a wrong base path, a missing route) says
/// nothing about the resource, and a delete that reached nothing must stay a failure.
fn outcome_reason(
    info: &ScimInfo,
    endpoint: &Endpoint,
    parts: &Parts<'_>,
) -> Option<OutcomeReason> {
    let status = parts.status?;
    let by_id = matches!(endpoint, Endpoint::Resource { id: Some(_), .. });
    let scim_not_found = status == 404
        && info
            .error
            .as_ref()
            .is_some_and(|e| e.status.as_deref().is_none_or(|s| s.trim() == "404"));
    match info.operation? {
        Operation::Delete if by_id && scim_not_found => Some(OutcomeReason::AlreadyAbsent),
        Operation::Read if by_id && scim_not_found => Some(OutcomeReason::NotFoundLookup),
        // Only a filtered query is a lookup: an empty import page is not.
        Operation::List | Operation::Search
            if (200..300).contains(&status)
                && info.filter.is_some()
                && parts
                    .response
                    .json()
                    .and_then(|r| get_ci(r, "totalResults"))
                    .and_then(Json::as_u64)
                    == Some(0) =>
        {
            Some(OutcomeReason::NotFoundLookup)
        }
        _ => None,
    }
}

fn classify_bulk(parts: &Parts<'_>, ctx: &ScimContext) -> Vec<ScimInfo> {
    let envelope = || ScimInfo {
        endpoint: Some("Bulk"),
        operation: Some(Operation::Bulk),
        ..ScimInfo::default()
    };
    let request_ops = match parts.request {
        Body::Json(v) => match get_ci(v, "Operations").and_then(Json::as_array) {
            Some(ops) if !ops.is_empty() => ops,
            Some(_) => {
                let mut info = envelope();
                info.note = Some("BulkRequest without operations".to_owned());
                return vec![info];
            }
            None => {
                let mut info = envelope();
                info.parse_error = Some("BulkRequest has no Operations array".to_owned());
                return vec![info];
            }
        },
        Body::Invalid(why) => {
            let mut info = envelope();
            info.parse_error = Some(why.clone());
            return vec![info];
        }
        Body::Absent => {
            let mut info = envelope();
            info.parse_error = Some("BulkRequest has no body".to_owned());
            return vec![info];
        }
    };
    let response_ops: &[Json<'_>] = parts
        .response
        .json()
        .and_then(|v| get_ci(v, "Operations"))
        .and_then(Json::as_array)
        .unwrap_or(&[]);
    let envelope_error = match (parts.status, parts.response) {
        (Some(s), Body::Json(v)) if s >= 400 => scim_error(v),
        _ => None,
    };

    request_ops
        .iter()
        .enumerate()
        .map(|(index, op)| {
            let method = get_ci(op, "method").and_then(Json::as_str).unwrap_or("");
            let path = get_ci(op, "path").and_then(Json::as_str).unwrap_or("");
            let bulk_id = get_ci(op, "bulkId")
                .and_then(Json::as_str)
                .map(str::to_owned);
            let entry = bulk_id
                .as_deref()
                .and_then(|id| {
                    response_ops
                        .iter()
                        .find(|e| get_ci(e, "bulkId").and_then(Json::as_str) == Some(id))
                })
                .or_else(|| {
                    response_ops.get(index).filter(|e| {
                        let m = get_ci(e, "method").and_then(Json::as_str);
                        m.is_none_or(|m| m.eq_ignore_ascii_case(method))
                    })
                });
            let status = entry
                .and_then(|e| get_ci(e, "status"))
                .and_then(bulk_status);
            let request_body = get_ci(op, "data").map_or(Body::Absent, |d| Body::Json(d.clone()));
            let response_body = entry
                .and_then(|e| get_ci(e, "response"))
                .map_or(Body::Absent, |r| Body::Json(r.clone()));
            let location = entry
                .and_then(|e| get_ci(e, "location"))
                .and_then(Json::as_str);
            let (op_path, op_query) = match path.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (path, None),
            };
            let sub = Parts {
                method,
                path: op_path,
                query: op_query,
                request: &request_body,
                status,
                response: &response_body,
                location,
            };
            // Paths inside a BulkRequest are relative to the SCIM base, never to scimtap's.
            let endpoint = endpoint::locate(op_path, None, &ctx.custom_types);
            let mut info = classify_one(&sub, &endpoint, ctx);
            if info.error.is_none() {
                info.error = envelope_error.clone();
            }
            if entry.is_none() && parts.status.is_some_and(|s| s < 400) && !response_ops.is_empty()
            {
                info.note.get_or_insert_with(|| {
                    "no matching BulkResponse entry (not attempted after failOnErrors?)".to_owned()
                });
            }
            if let Body::Invalid(why) = parts.response {
                info.parse_error.get_or_insert_with(|| why.clone());
            }
            info.bulk = Some(BulkRef {
                index,
                bulk_id,
                method: (!method.is_empty()).then(|| method.to_ascii_uppercase()),
                path: (!path.is_empty()).then(|| path.to_owned()),
                status,
            });
            info
        })
        .collect()
}

/// A copy of a JSON body safe to put in an event: the value of every sensitive attribute
/// (`password`, `redact.attributes`) replaced by `[REDACTED]` wherever it sits (top level,
/// nested, PATCH `path`/`value` pairs, value objects, Bulk `data`), and, with
/// pseudonymisation on, userName, emails and displayName hashed.
pub fn redact_json(value: &Json<'_>, ctx: &ScimContext) -> Value {
    match value {
        Json::Object(object) => {
            let patch_path = get_ci(value, "path")
                .and_then(Json::as_str)
                .map(patch::base_name);
            let patch_path_sensitive = patch_path.is_some_and(|a| ctx.is_sensitive(a));
            let patch_path_pii = patch_path.is_some_and(patch::is_pii);
            let mut out = Map::new();
            for (k, v) in members(object) {
                let attribute = patch::base_name(k);
                let is_patch_value = k.eq_ignore_ascii_case("value");
                let shown =
                    if ctx.is_sensitive(attribute) || (is_patch_value && patch_path_sensitive) {
                        Value::String(patch::REDACTED.to_owned())
                    } else if let (Some(p), true) = (
                        &ctx.pseudonymizer,
                        patch::is_pii(attribute) || (is_patch_value && patch_path_pii),
                    ) {
                        hash_strings(v, p, ctx)
                    } else {
                        redact_json(v, ctx)
                    };
                out.insert(k.to_owned(), shown);
            }
            Value::Object(out)
        }
        Json::Array(items) => Value::Array(items.iter().map(|v| redact_json(v, ctx)).collect()),
        other => Value::from(other),
    }
}

/// Pseudonymises the personal strings in a PII attribute's value: the value itself, or in
/// multi-valued attributes (emails, members) their `value` and `display`, not `type` or
/// `primary`. Other members are redacted as anywhere else (a sensitive attribute nested in
/// a personal one is still `[REDACTED]`).
fn hash_strings(value: &Json<'_>, p: &Pseudonymizer, ctx: &ScimContext) -> Value {
    match value {
        Json::Str(s) => Value::String(p.hash(s)),
        Json::Object(o) => Value::Object(
            members(o)
                .map(|(k, v)| {
                    let shown = if ctx.is_sensitive(patch::base_name(k)) {
                        Value::String(patch::REDACTED.to_owned())
                    } else if k.eq_ignore_ascii_case("value") || k.eq_ignore_ascii_case("display") {
                        hash_strings(v, p, ctx)
                    } else {
                        redact_json(v, ctx)
                    };
                    (k.to_owned(), shown)
                })
                .collect(),
        ),
        Json::Array(items) => Value::Array(items.iter().map(|v| hash_strings(v, p, ctx)).collect()),
        other => Value::from(other),
    }
}

fn action_prefix(resource_type: &str) -> String {
    match resource_type {
        "User" => "user".to_owned(),
        "Group" => "group".to_owned(),
        // Custom type names become action prefixes: keep them to [a-z0-9_-].
        other => other
            .chars()
            .map(|c| match c.to_ascii_lowercase() {
                c @ ('a'..='z' | '0'..='9' | '_' | '-') => c,
                _ => '_',
            })
            .collect(),
    }
}

/// Top-level attribute names a POST or PUT body carries (not `schemas`, `meta`, `id`).
fn body_attributes(body: &Json<'_>) -> Vec<String> {
    body.as_object()
        .map(|o| {
            members(o)
                .map(|(k, _)| k)
                .filter(|k| {
                    !["schemas", "meta", "id"]
                        .iter()
                        .any(|skip| k.eq_ignore_ascii_case(skip))
                })
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Object member by name: the exact name, else case-insensitively (SCIM attribute names are
/// case-insensitive); of a repeated key, the last.
pub(crate) fn get_ci<'v, 'a>(value: &'v Json<'a>, key: &str) -> Option<&'v Json<'a>> {
    let mut folded = None;
    for (k, v) in value.as_object()?.as_vec().iter().rev() {
        if **k == *key {
            return Some(v);
        }
        if folded.is_none() && k.eq_ignore_ascii_case(key) {
            folded = Some(v);
        }
    }
    folded
}

/// An object's members in document order, a repeated key once, with its last value.
pub(crate) fn members<'v, 'a>(
    object: &'v ObjectAsVec<'a>,
) -> impl Iterator<Item = (&'v str, &'v Json<'a>)> {
    let entries = object.as_vec();
    entries
        .iter()
        .enumerate()
        .filter(move |(i, (k, _))| !entries[i + 1..].iter().any(|(later, _)| **later == **k))
        .map(|(_, (k, v))| (&**k, v))
}

/// A SCIM error body: `status` may be a string or a number.
fn scim_error(v: &Json<'_>) -> Option<ScimError> {
    let text = |key: &str| get_ci(v, key).and_then(Json::as_str).map(str::to_owned);
    let status = get_ci(v, "status").and_then(|s| match s {
        Json::Str(s) => Some(s.to_string()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    });
    let error = ScimError {
        status,
        scim_type: text("scimType"),
        detail: text("detail"),
    };
    (error.status.is_some() || error.scim_type.is_some() || error.detail.is_some()).then_some(error)
}

/// BulkResponse `status`: "201", 201, or (older drafts) `{"code": "201"}`.
fn bulk_status(v: &Json<'_>) -> Option<u16> {
    match v {
        Json::Str(s) => s.trim().get(..3).and_then(|c| c.parse().ok()),
        Json::Number(n) => n.as_i64().and_then(|n| u16::try_from(n).ok()),
        Json::Object(_) => get_ci(v, "code").and_then(bulk_status),
        _ => None,
    }
}

/// The new resource's id from a `Location` URL, when it names a resource of `resource_type`
/// (`…/Users/{id}`). Anything else (the collection `…/Users`, another type, a page that is not
/// a SCIM resource) gives none: taking the last segment blindly made `"Users"` an id.
fn location_id(location: &str, resource_type: &str, custom: &CustomTypes) -> Option<String> {
    let without_fragment = location.split(['?', '#']).next()?;
    // Absolute (`https://host/scim/v2/Users/id`) or a path; the authority is not a segment.
    let path = match without_fragment.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("", |i| &rest[i..]),
        None => without_fragment,
    };
    match endpoint::locate(path, None, custom) {
        Endpoint::Resource {
            resource_type: found,
            id: Some(id),
            search: false,
        } if found == resource_type && !id.is_empty() => Some(id),
        _ => None,
    }
}

/// The decoded value of `name` in a query string.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        endpoint::percent_decode_with(k, true)
            .eq_ignore_ascii_case(name)
            .then(|| endpoint::percent_decode_with(v, true))
    })
}

#[cfg(test)]
mod tests;
