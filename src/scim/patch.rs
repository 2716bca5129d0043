//! PATCH (RFC 7644 §3.5.2) as identity providers really send it: `op` in any casing, paths
//! plain, dotted, filtered (`members[value eq "id"]`) or URN-qualified, path-less operations
//! whose value object holds the attributes (Okta's deactivate, Entra's multi-attribute replace),
//! and booleans sent as strings (`"False"`).

use std::collections::HashMap;

use serde_json::{Map, Value};
use serde_json_borrow::ObjectAsVec;

use super::{get_ci, members, Changes, Json, PatchOpInfo, ScimContext};

/// What a PATCH asked for.
#[derive(Debug, Default)]
pub(super) struct PatchAnalysis {
    pub actions: Vec<String>,
    pub changes: Changes,
    pub note: Option<String>,
    pub parse_error: Option<String>,
}

impl PatchAnalysis {
    /// Records an attribute path the request touches, once.
    fn touch(&mut self, path: &str) {
        if !self.changes.attributes.iter().any(|a| a == path) {
            self.changes.attributes.push(path.to_owned());
        }
    }

    fn act(&mut self, action: String) {
        if !self.actions.contains(&action) {
            self.actions.push(action);
        }
    }
}

/// The operation [`apply`] works on: its resource type, that type's action prefix
/// (`user`, `group`, ...) and the op name, lower case.
struct OpAt<'a> {
    prefix: &'a str,
    resource_type: &'a str,
    op: &'a str,
}

pub(super) fn analyze(body: &Json<'_>, resource_type: &str, ctx: &ScimContext) -> PatchAnalysis {
    let mut out = PatchAnalysis::default();
    let prefix = super::action_prefix(resource_type);
    let Some(ops) = get_ci(body, "Operations").and_then(Json::as_array) else {
        out.parse_error = Some("PatchOp has no Operations array".to_owned());
        return out;
    };
    let mut renamed_by_value_object = false;
    for op in ops {
        let sent_op = get_ci(op, "op").and_then(Json::as_str);
        let name = sent_op.unwrap_or("").to_ascii_lowercase();
        // The op as sent, when normalising changed it (Entra's and Okta's `Replace`): which
        // client wrote a request is evidence too.
        let raw_op = sent_op.filter(|o| *o != name).map(str::to_owned);
        let path = get_ci(op, "path").and_then(Json::as_str);
        let value = get_ci(op, "value");
        let at = OpAt {
            prefix: &prefix,
            resource_type,
            op: &name,
        };
        match path {
            Some(path) => {
                out.touch(path);
                let attribute = base_attribute(path);
                apply(&mut out, &at, &attribute, Some(path), value);
                let shown = value.and_then(|v| shown_value(&attribute, v, ctx));
                out.changes.patch_ops.push(PatchOpInfo {
                    op: name.clone(),
                    raw_op,
                    path: Some(path.to_owned()),
                    value: shown.as_ref().map(|s| s.value.clone()),
                    raw_value: shown.and_then(|s| s.raw),
                });
            }
            None => {
                let Some(object) = value.and_then(Json::as_object) else {
                    if name != "remove" {
                        out.parse_error.get_or_insert_with(|| {
                            format!("PATCH `{name}` without a path needs an object value")
                        });
                    }
                    out.changes.patch_ops.push(PatchOpInfo {
                        op: name.clone(),
                        raw_op,
                        path: None,
                        value: None,
                        raw_value: None,
                    });
                    continue;
                };
                for (key, v) in members(object) {
                    let attribute = base_attribute(key);
                    if matches!(attribute.as_str(), "id" | "schemas" | "meta") {
                        continue;
                    }
                    out.touch(key);
                    if resource_type == "Group" && attribute == "displayname" {
                        renamed_by_value_object = true;
                    }
                    apply(&mut out, &at, &attribute, None, Some(v));
                }
                let (value, raw_value) = shown_object(object, ctx);
                out.changes.patch_ops.push(PatchOpInfo {
                    op: name.clone(),
                    raw_op,
                    path: None,
                    value,
                    raw_value,
                });
            }
        }
    }
    if renamed_by_value_object {
        out.note = Some(
            "group.rename: a displayName replace was requested; scimtap keeps no state, so it cannot tell whether the name actually changed (Okta resends the name on membership updates)"
                .to_owned(),
        );
    }
    out
}

/// The effect of one (op, attribute, value).
fn apply(
    out: &mut PatchAnalysis,
    at: &OpAt<'_>,
    attribute: &str,
    path: Option<&str>,
    value: Option<&Json<'_>>,
) {
    let (prefix, op) = (at.prefix, at.op);
    match (at.resource_type, attribute) {
        ("Group", "members") => {
            let filtered = path.map(filter_values).unwrap_or_default();
            let listed = value.map(member_ids).unwrap_or_default();
            match op {
                "add" => {
                    out.act("group.members.add".to_owned());
                    out.changes.members_added.extend(listed);
                }
                "remove" if !filtered.is_empty() || !listed.is_empty() => {
                    out.act("group.members.remove".to_owned());
                    out.changes.members_removed.extend(filtered);
                    out.changes.members_removed.extend(listed);
                }
                "remove" if path.is_some_and(|p| p.contains('[')) => {
                    // A filter scimtap cannot resolve to ids (`members[display eq "x"]`):
                    // members are removed, which ones only the service knows.
                    out.act("group.members.remove".to_owned());
                    out.note.get_or_insert_with(|| {
                        "members removed by a filter that names no member ids; the service resolves which".to_owned()
                    });
                }
                "remove" => {
                    // `remove` of `members` without a filter or value empties the group.
                    out.act("group.members.replace".to_owned());
                    out.changes.members_replaced = Some(Vec::new());
                }
                "replace" if filtered.is_empty() => {
                    out.act("group.members.replace".to_owned());
                    out.changes.members_replaced = Some(listed);
                }
                _ => out.act("group.members.update".to_owned()),
            }
        }
        ("User", "active") if op != "remove" => match value.and_then(as_bool) {
            Some(false) => out.act("user.deactivate".to_owned()),
            Some(true) => out.act("user.reactivate".to_owned()),
            None => out.act("user.update".to_owned()),
        },
        ("Group", "displayname") if op != "remove" => out.act("group.rename".to_owned()),
        _ => out.act(format!("{prefix}.update")),
    }
}

/// `urn:…:User:emails[type eq "work"].value` → `emails`; `name.givenName` → `name`; lower case.
pub(super) fn base_attribute(path: &str) -> String {
    base_name(path).to_ascii_lowercase()
}

/// [`base_attribute`] in the path's own case, without allocating, for comparisons that ignore
/// case (the sensitive attributes, [`is_pii`]).
pub(super) fn base_name(path: &str) -> &str {
    let before_filter = path.split('[').next().unwrap_or(path);
    let without_urn = if before_filter
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
    {
        match before_filter.rfind(':') {
            Some(i) => &path[i + 1..],
            None => path,
        }
    } else {
        path
    };
    let end = without_urn.find(['[', '.']).unwrap_or(without_urn.len());
    without_urn[..end].trim()
}

/// Quoted literals compared with `value eq` in a value filter: `members[value eq "a"]` → `a`.
fn filter_values(path: &str) -> Vec<String> {
    let Some(start) = path.find('[') else {
        return Vec::new();
    };
    let filter = &path[start + 1..];
    let mut out = Vec::new();
    let mut rest = filter;
    while let Some(q) = rest.find('"') {
        let before = rest[..q].trim_end().to_ascii_lowercase();
        let after = &rest[q + 1..];
        let mut literal = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        literal.push(escaped);
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => literal.push(c),
            }
        }
        let words: Vec<&str> = before.split_whitespace().collect();
        if let [.., attr, op] = words.as_slice() {
            if op == &"eq" && attr.trim_start_matches(['(', '[']) == "value" {
                out.push(literal);
            }
        }
        rest = &after[end.min(after.len())..];
    }
    out
}

/// Member ids from a members value: `[{"value": "id"}]`, `[{"value": "id", "$ref": null}]`,
/// `["id"]` or a single object.
pub(super) fn member_ids(value: &Json<'_>) -> Vec<String> {
    let one = |v: &Json<'_>| match v {
        Json::Str(s) => Some(s.to_string()),
        Json::Object(_) => get_ci(v, "value").and_then(Json::as_str).map(str::to_owned),
        _ => None,
    };
    match value {
        Json::Array(items) => items.iter().filter_map(one).collect(),
        other => one(other).into_iter().collect(),
    }
}

/// `true`, `false`, or a string of either in any casing.
pub(super) fn as_bool(value: &Json<'_>) -> Option<bool> {
    match value {
        Json::Bool(b) => Some(*b),
        Json::Str(s) if s.trim().eq_ignore_ascii_case("true") => Some(true),
        Json::Str(s) if s.trim().eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// New values of identifying attributes set by a PATCH (`userName`, `displayName`,
/// `externalId`), keyed by lower-case name.
pub(super) fn patched_values<'v, 'a>(body: &'v Json<'a>) -> HashMap<String, &'v Json<'a>> {
    let mut out = HashMap::new();
    let Some(ops) = get_ci(body, "Operations").and_then(Json::as_array) else {
        return out;
    };
    for op in ops {
        let name = get_ci(op, "op")
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_ascii_lowercase();
        if name == "remove" {
            continue;
        }
        let value = get_ci(op, "value");
        match (get_ci(op, "path").and_then(Json::as_str), value) {
            (Some(path), Some(v)) if v.is_string() && !path.contains(['[', '.']) => {
                out.insert(base_attribute(path), v);
            }
            (None, Some(Json::Object(object))) => {
                for (k, v) in members(object) {
                    if v.is_string() && !k.contains('.') {
                        out.insert(base_attribute(k), v);
                    }
                }
            }
            _ => {}
        }
    }
    out.retain(|k, _| matches!(k.as_str(), "username" | "displayname" | "externalid"));
    out
}

/// A PATCH value as the event shows it, and what was sent when the two differ.
struct Shown {
    value: Value,
    /// The value as sent, only when `value` is a conversion of it (`"False"` → `false`).
    raw: Option<Value>,
}

/// A PATCH value as the event may show it: scalars of attributes that are not sensitive
/// (pseudonymised where configured); members and complex values are summarised elsewhere.
/// `active` is shown as the boolean it means; the string sent is kept beside it, because
/// which client sends booleans as strings (Entra's `"False"`) is evidence a reader may want.
/// A sensitive value is never converted, so its raw form never exists to leak.
fn shown_value(attribute: &str, value: &Json<'_>, ctx: &ScimContext) -> Option<Shown> {
    let plain = |value: Value| Some(Shown { value, raw: None });
    if ctx.is_sensitive(attribute) {
        return plain(Value::String(REDACTED.to_owned()));
    }
    match value {
        Json::Bool(_) | Json::Number(_) | Json::Null => plain(Value::from(value)),
        Json::Str(s) => {
            if attribute == "active" {
                return match as_bool(value) {
                    Some(b) => Some(Shown {
                        value: Value::Bool(b),
                        raw: Some(Value::from(value)),
                    }),
                    None => plain(Value::from(value)),
                };
            }
            plain(Value::String(match &ctx.pseudonymizer {
                Some(p) if is_pii(attribute) => p.hash(s),
                _ => s.to_string(),
            }))
        }
        _ => None,
    }
}

/// A path-less value object as shown (its scalar members), and the members that were
/// converted, as sent.
fn shown_object(object: &ObjectAsVec<'_>, ctx: &ScimContext) -> (Option<Value>, Option<Value>) {
    let mut shown = Map::new();
    let mut raw = Map::new();
    for (k, v) in members(object) {
        let attribute = base_attribute(k);
        if matches!(attribute.as_str(), "schemas" | "meta") {
            continue;
        }
        if let Some(s) = shown_value(&attribute, v, ctx) {
            shown.insert(k.to_owned(), s.value);
            if let Some(r) = s.raw {
                raw.insert(k.to_owned(), r);
            }
        }
    }
    let object = |m: Map<String, Value>| (!m.is_empty()).then_some(Value::Object(m));
    (object(shown), object(raw))
}

/// What sensitive values become wherever scimtap shows a structure that held one.
pub const REDACTED: &str = "[REDACTED]";

/// Attributes pseudonymised with `privacy.hash_key_file`.
pub(super) fn is_pii(attribute: &str) -> bool {
    ["username", "emails", "displayname", "members"]
        .iter()
        .any(|pii| attribute.eq_ignore_ascii_case(pii))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_attribute_strips_urns_filters_and_sub_attributes() {
        assert_eq!(base_attribute("active"), "active");
        assert_eq!(base_attribute("Active"), "active");
        assert_eq!(
            base_attribute("urn:ietf:params:scim:schemas:core:2.0:User:active"),
            "active"
        );
        assert_eq!(base_attribute("emails[type eq \"work\"].value"), "emails");
        assert_eq!(base_attribute("name.familyName"), "name");
        assert_eq!(
            base_attribute(
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber"
            ),
            "employeenumber"
        );
        assert_eq!(
            base_attribute("urn:x:User:emails[value eq \"a:b\"]"),
            "emails"
        );
        assert_eq!(base_attribute("members[value eq \"x\"]"), "members");
        assert_eq!(base_attribute(""), "");
        assert_eq!(base_attribute("ü.x"), "ü");
    }

    #[test]
    fn member_filters_yield_their_ids() {
        assert_eq!(filter_values("members[value eq \"7f4b\"]"), vec!["7f4b"]);
        assert_eq!(
            filter_values("members[value eq \"a\" or value eq \"b\\\"c\"]"),
            vec!["a", "b\"c"]
        );
        assert_eq!(
            filter_values("members[display eq \"x\"]"),
            Vec::<String>::new()
        );
        assert_eq!(
            filter_values("members[value eq \"unterminated"),
            vec!["unterminated"]
        );
        assert_eq!(filter_values("members"), Vec::<String>::new());
    }

    #[test]
    fn booleans_arrive_in_any_casing() {
        assert_eq!(as_bool(&Json::Bool(false)), Some(false));
        assert_eq!(as_bool(&Json::Str("False".into())), Some(false));
        assert_eq!(as_bool(&Json::Str("false".into())), Some(false));
        assert_eq!(as_bool(&Json::Str("TRUE".into())), Some(true));
        assert_eq!(as_bool(&Json::Str("yes".into())), None);
    }
}
