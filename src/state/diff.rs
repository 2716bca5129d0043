//! Attribute values as the shadow state keeps them, flattened to leaf paths, and the
//! before → after diff of two such sets. Pure functions: no store, no I/O.
//!
//! Flattening makes a PATCH path (`name.givenName`, `urn:…:enterprise:2.0:User:employeeNumber`)
//! and a PUT body address the same key, so Okta's full-replacement PUT and Entra's PATCH give
//! comparable diffs. Multi-valued attributes (`emails`) stay whole: their items have no stable
//! identity to diff by.

use serde_json::{Map, Value};

use crate::scim::DiffEntry;

/// The placeholder redaction puts where a sensitive value was (`crate::scim::redact_json`);
/// such an attribute is never kept.
const REDACTED: &str = "[REDACTED]";

/// Top-level keys never kept as attributes: message plumbing, server-owned metadata, and
/// memberships (kept as memberships, not values).
const NOT_ATTRIBUTES: &[&str] = &["schemas", "meta", "id", "members", "groups", "password"];

/// Core schema prefixes a PATCH path may carry (`urn:…:core:2.0:User:active` is `active`).
const CORE_PREFIXES: &[&str] = &[
    "urn:ietf:params:scim:schemas:core:2.0:user:",
    "urn:ietf:params:scim:schemas:core:2.0:group:",
];

/// A resource body's attributes, flattened: `{"name":{"givenName":"A"}}` →
/// `{"name.givenName":"A"}`; an extension object's members are joined with `:`
/// (`urn:…:User:employeeNumber`). Redacted values are dropped, never kept.
pub fn flatten(body: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    if let Value::Object(object) = body {
        for (key, value) in object {
            if NOT_ATTRIBUTES.iter().any(|n| key.eq_ignore_ascii_case(n)) {
                continue;
            }
            insert_flat(&mut out, key, value);
        }
    }
    out
}

fn insert_flat(out: &mut Map<String, Value>, key: &str, value: &Value) {
    match value {
        Value::String(s) if s == REDACTED => {}
        Value::Object(object) => {
            let join = if key.starts_with("urn:") { ':' } else { '.' };
            for (k, v) in object {
                insert_flat(out, &format!("{key}{join}{k}"), v);
            }
        }
        // `active` is kept as a boolean however it was sent (Entra's `"False"`), so a
        // deactivation diffs as `true → false`, not as a change of type.
        _ if key.eq_ignore_ascii_case("active") => {
            out.insert(
                key.to_owned(),
                as_bool(value).map_or(value.clone(), Value::Bool),
            );
        }
        _ => {
            out.insert(key.to_owned(), value.clone());
        }
    }
}

/// The attribute a PATCH path names, without a core schema prefix; `None` for a filtered path
/// (`emails[type eq "work"].value`), whose effect only the service knows.
pub fn patch_key(path: &str) -> Option<String> {
    if path.contains('[') {
        return None;
    }
    let lower = path.to_ascii_lowercase();
    for prefix in CORE_PREFIXES {
        if lower.starts_with(prefix) {
            return Some(path[prefix.len()..].to_owned());
        }
    }
    Some(path.to_owned())
}

/// Whether a PATCH path or value-object key names memberships or something never kept.
fn is_kept(key: &str) -> bool {
    let base = key.split(['.', '[']).next().unwrap_or(key);
    !NOT_ATTRIBUTES.iter().any(|n| base.eq_ignore_ascii_case(n))
}

/// Removes `key` and everything under it (`name` removes `name.givenName`).
fn remove_under(attributes: &mut Map<String, Value>, key: &str) {
    let lower = key.to_ascii_lowercase();
    attributes.retain(|k, _| {
        let k = k.to_ascii_lowercase();
        !(k == lower
            || k.strip_prefix(&lower)
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with(':')))
    });
}

/// Applies a PatchOp's `Operations` (redacted) to flattened attributes, as far as they can be
/// applied without the service: plain paths and path-less value objects. Filtered paths are
/// skipped (the caller prefers the service's response when there is one).
pub fn apply_patch(attributes: &mut Map<String, Value>, operations: &[Value]) {
    for operation in operations {
        let field = |name: &str| {
            operation.as_object().and_then(|o| {
                o.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v)
            })
        };
        let op = field("op")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_ascii_lowercase();
        let value = field("value");
        match field("path").and_then(Value::as_str) {
            Some(path) => {
                let Some(key) = patch_key(path).filter(|k| is_kept(k)) else {
                    continue;
                };
                if op == "remove" {
                    remove_under(attributes, &key);
                } else if let Some(value) = value {
                    set(attributes, &key, value, op == "add");
                }
            }
            None => {
                if let (false, Some(Value::Object(object))) = (op == "remove", value) {
                    for (key, v) in object {
                        if let Some(key) = patch_key(key).filter(|k| is_kept(k)) {
                            set(attributes, &key, v, op == "add");
                        }
                    }
                }
            }
        }
    }
}

fn set(attributes: &mut Map<String, Value>, key: &str, value: &Value, add: bool) {
    let existing = attributes
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(k, v)| (k.clone(), v.clone()));
    // `add` to a multi-valued attribute appends (RFC 7644 §3.5.2.1).
    if let (true, Some((k, Value::Array(mut items))), Value::Array(new)) = (add, existing, value) {
        items.extend(new.iter().cloned());
        attributes.insert(k, Value::Array(items));
        return;
    }
    remove_under(attributes, key);
    insert_flat(attributes, key, value);
}

/// The attributes that differ between `before` and `after` (attribute names compared without
/// regard to case), sorted by name; an attribute missing on one side shows `null` there.
pub fn diff(before: &Map<String, Value>, after: &Map<String, Value>) -> Vec<DiffEntry> {
    let find = |map: &Map<String, Value>, key: &str| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.clone())
    };
    let mut out: Vec<DiffEntry> = Vec::new();
    for (key, value) in after {
        let old = find(before, key).unwrap_or(Value::Null);
        if old != *value {
            out.push(DiffEntry {
                attribute: key.clone(),
                before: old,
                after: value.clone(),
            });
        }
    }
    for (key, value) in before {
        if find(after, key).is_none() && !value.is_null() {
            out.push(DiffEntry {
                attribute: key.clone(),
                before: value.clone(),
                after: Value::Null,
            });
        }
    }
    out.sort_by(|a, b| a.attribute.cmp(&b.attribute));
    out
}

/// A boolean as SCIM clients write it: `true`, `"True"`, `" false "`.
pub fn as_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn flatten_joins_nested_names_and_drops_plumbing_and_redacted_values() {
        let flat = flatten(&json!({
            "schemas": ["x"], "id": "1", "meta": {"version": "W/1"},
            "userName": "a", "password": "[REDACTED]", "secretCode": "[REDACTED]",
            "name": {"givenName": "A", "familyName": "B"},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "7"},
            "emails": [{"value": "a@x", "type": "work"}],
            "members": [{"value": "u1"}]
        }));
        assert_eq!(
            Value::Object(flat),
            json!({
                "userName": "a", "name.givenName": "A", "name.familyName": "B",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "7",
                "emails": [{"value": "a@x", "type": "work"}]
            })
        );
    }

    #[test]
    fn a_put_replacement_diffs_changed_added_and_removed_attributes() {
        let before = flatten(&json!({"userName": "a", "active": true,
            "name": {"givenName": "Test", "familyName": "User"}, "locale": "en-US"}));
        let after = flatten(&json!({"userName": "a", "active": true,
            "name": {"givenName": "Another", "middleName": "Excited", "familyName": "User"}}));
        let d = diff(&before, &after);
        let shown: Vec<(&str, Value, Value)> = d
            .iter()
            .map(|e| (e.attribute.as_str(), e.before.clone(), e.after.clone()))
            .collect();
        assert_eq!(
            shown,
            vec![
                ("locale", json!("en-US"), Value::Null),
                ("name.givenName", json!("Test"), json!("Another")),
                ("name.middleName", Value::Null, json!("Excited")),
            ]
        );
    }

    #[test]
    fn an_identical_replacement_has_no_diff_whatever_the_casing_of_names() {
        let before = map(json!({"userName": "a", "Active": true}));
        let after = map(json!({"username": "a", "active": true}));
        assert!(diff(&before, &after).is_empty());
    }

    #[test]
    fn patch_ops_apply_plain_paths_value_objects_and_removals() {
        let mut attrs = flatten(&json!({"userName": "a", "active": true,
            "name": {"givenName": "G", "familyName": "F"}, "nickName": "n",
            "emails": [{"value": "a@x"}]}));
        apply_patch(
            &mut attrs,
            &[
                json!({"op": "Replace", "path": "urn:ietf:params:scim:schemas:core:2.0:User:active", "value": "False"}),
                json!({"op": "replace", "value": {"name.givenName": "H", "displayName": "D"}}),
                json!({"op": "remove", "path": "nickName"}),
                json!({"op": "add", "path": "emails", "value": [{"value": "b@x"}]}),
                json!({"op": "replace", "path": "emails[type eq \"work\"].value", "value": "c@x"}),
                json!({"op": "replace", "path": "password", "value": "[REDACTED]"}),
                json!({"op": "add", "path": "members", "value": [{"value": "u1"}]}),
            ],
        );
        assert_eq!(
            Value::Object(attrs),
            json!({"userName": "a", "name.familyName": "F", "emails": [{"value": "a@x"}, {"value": "b@x"}],
                   "active": false, "name.givenName": "H", "displayName": "D"})
        );
    }

    #[test]
    fn booleans_are_read_as_clients_write_them() {
        assert_eq!(as_bool(&json!("False")), Some(false));
        assert_eq!(as_bool(&json!(" TRUE ")), Some(true));
        assert_eq!(as_bool(&json!(true)), Some(true));
        assert_eq!(as_bool(&json!("yes")), None);
    }
}
