//! Where a request went: the SCIM endpoint in a path, whatever base path the service uses
//! (`/scim/v2/Users`, `/api/scim/Users/{id}`, `/v2/Groups`, `/Users`).

use std::collections::HashMap;

/// A SCIM endpoint named by a request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `/<Type>s`, `/<Type>s/{id}` or `/<Type>s/.search` for Users, Groups or a custom type.
    Resource {
        /// `User`, `Group` or the custom type's name.
        resource_type: String,
        id: Option<String>,
        search: bool,
    },
    /// `/Me`: the authenticated subject's own User resource.
    Me,
    /// `/Bulk`.
    Bulk,
    /// `/.search` at the root: a search across resource types.
    RootSearch,
    /// `/ServiceProviderConfig`, `/ResourceTypes[/{name}]`, `/Schemas[/{urn}]`.
    Discovery(Discovery),
    /// Not a SCIM endpoint scimtap recognises.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovery {
    ServiceProviderConfig,
    ResourceTypes,
    Schemas,
}

impl Endpoint {
    /// The endpoint's name as written in events.
    pub fn name(&self) -> Option<&'static str> {
        Some(match self {
            Endpoint::Resource { resource_type, .. } => match resource_type.as_str() {
                "User" => "Users",
                "Group" => "Groups",
                _ => "custom",
            },
            Endpoint::Me => "Me",
            Endpoint::Bulk => "Bulk",
            Endpoint::RootSearch => "search",
            Endpoint::Discovery(Discovery::ServiceProviderConfig) => "ServiceProviderConfig",
            Endpoint::Discovery(Discovery::ResourceTypes) => "ResourceTypes",
            Endpoint::Discovery(Discovery::Schemas) => "Schemas",
            Endpoint::Unknown => return None,
        })
    }
}

/// Custom resource types by endpoint segment (lower case, without the slash): `devices` →
/// `Device`. Filled from the configuration and from `/ResourceTypes` responses.
pub type CustomTypes = HashMap<String, String>;

/// Finds the endpoint in `path` (raw, percent-encoded, without the query). With `base_path`
/// set and matching, the endpoint must follow it directly; otherwise the first position in the
/// path where a known endpoint with a valid shape starts wins.
pub fn locate(path: &str, base_path: Option<&str>, custom: &CustomTypes) -> Endpoint {
    if let Some(base) = base_path {
        let base = base.trim_end_matches('/');
        if let Some(rest) = path.strip_prefix(base) {
            if rest.is_empty() || rest.starts_with('/') {
                let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
                return match_at(&segments, custom).unwrap_or(Endpoint::Unknown);
            }
        }
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    (0..segments.len())
        .find_map(|i| match_at(&segments[i..], custom))
        .unwrap_or(Endpoint::Unknown)
}

fn match_at(segments: &[&str], custom: &CustomTypes) -> Option<Endpoint> {
    let (first, rest) = segments.split_first()?;
    let lower = first.to_ascii_lowercase();
    let resource_type = match lower.as_str() {
        "users" => Some("User".to_owned()),
        "groups" => Some("Group".to_owned()),
        other => custom.get(other).cloned(),
    };
    if let Some(resource_type) = resource_type {
        return match rest {
            [] => Some(Endpoint::Resource {
                resource_type,
                id: None,
                search: false,
            }),
            [".search"] => Some(Endpoint::Resource {
                resource_type,
                id: None,
                search: true,
            }),
            [id] => Some(Endpoint::Resource {
                resource_type,
                id: Some(percent_decode(id)),
                search: false,
            }),
            _ => None,
        };
    }
    match (lower.as_str(), rest.len()) {
        ("me", 0) => Some(Endpoint::Me),
        ("bulk", 0) => Some(Endpoint::Bulk),
        (".search", 0) => Some(Endpoint::RootSearch),
        ("serviceproviderconfig" | "serviceproviderconfigs", 0) => {
            Some(Endpoint::Discovery(Discovery::ServiceProviderConfig))
        }
        ("resourcetypes", 0 | 1) => Some(Endpoint::Discovery(Discovery::ResourceTypes)),
        ("schemas", 0 | 1) => Some(Endpoint::Discovery(Discovery::Schemas)),
        _ => None,
    }
}

/// Percent-decodes `s`; `plus_as_space` for form-encoded query values. Invalid escapes are
/// kept as written; invalid UTF-8 becomes U+FFFD.
pub fn percent_decode_with(s: &str, plus_as_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' if plus_as_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn percent_decode(s: &str) -> String {
    percent_decode_with(s, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(path: &str) -> Endpoint {
        locate(path, None, &CustomTypes::new())
    }

    fn resource(t: &str, id: Option<&str>, search: bool) -> Endpoint {
        Endpoint::Resource {
            resource_type: t.to_owned(),
            id: id.map(str::to_owned),
            search,
        }
    }

    #[test]
    fn finds_endpoints_under_any_base_path() {
        assert_eq!(at("/scim/v2/Users"), resource("User", None, false));
        assert_eq!(
            at("/api/scim/Users/2819c223"),
            resource("User", Some("2819c223"), false)
        );
        assert_eq!(at("/v2/Groups"), resource("Group", None, false));
        assert_eq!(at("/Users"), resource("User", None, false));
        assert_eq!(at("/scim/v2/Groups/.search"), resource("Group", None, true));
        assert_eq!(at("/scim/v2/.search"), Endpoint::RootSearch);
        assert_eq!(at("/scim/v2/Bulk"), Endpoint::Bulk);
        assert_eq!(at("/scim/v2/Me"), Endpoint::Me);
        assert_eq!(
            at("/v2/ServiceProviderConfig"),
            Endpoint::Discovery(Discovery::ServiceProviderConfig)
        );
        assert_eq!(
            at("/v2/ResourceTypes/User"),
            Endpoint::Discovery(Discovery::ResourceTypes)
        );
        assert_eq!(
            at("/v2/Schemas/urn:ietf:params:scim:schemas:core:2.0:User"),
            Endpoint::Discovery(Discovery::Schemas)
        );
        assert_eq!(at("/healthz"), Endpoint::Unknown);
        assert_eq!(at("/"), Endpoint::Unknown);
        assert_eq!(at("/scim/v2/Users/a/b"), Endpoint::Unknown);
    }

    #[test]
    fn an_id_that_looks_like_an_endpoint_is_still_an_id() {
        assert_eq!(
            at("/scim/Groups/Users"),
            resource("Group", Some("Users"), false)
        );
    }

    #[test]
    fn ids_are_percent_decoded() {
        assert_eq!(
            at("/Users/a%2Fb%20c"),
            resource("User", Some("a/b c"), false)
        );
        assert_eq!(at("/Users/%E2%9C%93"), resource("User", Some("✓"), false));
        assert_eq!(
            at("/Users/bad%zz%"),
            resource("User", Some("bad%zz%"), false)
        );
    }

    #[test]
    fn base_path_anchors_the_endpoint() {
        let custom = CustomTypes::new();
        // Anchored: no scanning past the base path for something that looks like an endpoint.
        assert_eq!(
            locate("/tenant/x/Users", Some("/tenant/"), &custom),
            Endpoint::Unknown
        );
        assert_eq!(
            locate("/tenant/Groups", Some("/tenant"), &custom),
            resource("Group", None, false)
        );
    }

    #[test]
    fn custom_resource_types_are_recognised() {
        let mut custom = CustomTypes::new();
        custom.insert("devices".to_owned(), "Device".to_owned());
        assert_eq!(
            locate("/scim/v2/Devices/d1", None, &custom),
            resource("Device", Some("d1"), false)
        );
    }
}
