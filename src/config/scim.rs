//! `[scim]`, `[[clients]]`, `[redact]` and `[privacy]`: how events describe SCIM traffic:
//! endpoints and custom resource types, the identity providers known by name, the values that
//! never leave scimtap, and keyed pseudonymisation.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::validate::Checker;
use super::{RawConfig, SecretKey};

/// `[scim]`: how to read the SCIM traffic.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScim {
    /// Path where the SCIM endpoints start (`/scim/v2`). Optional: without it the endpoint is
    /// found wherever it starts in the path.
    base_path: Option<Spanned<String>>,
    /// Custom resource types, besides those learned from `/ResourceTypes` responses.
    #[serde(default)]
    resource_types: Vec<Spanned<RawResourceType>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResourceType {
    /// The type's name as events show it (`Device`).
    name: String,
    /// Its endpoint (`/Devices`).
    endpoint: String,
}

/// `[[clients]]`: identity providers scimtap knows by name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClient {
    /// Name in events (`client.name`), e.g. `okta-prod`.
    name: String,
    /// Hex SHA-256 of the bearer token this client sends (`printf %s "$TOKEN" | sha256sum`);
    /// the token itself never goes into the configuration.
    token_sha256: Option<Spanned<String>>,
    /// Subject of the client certificate this client presents over mTLS, RFC 4514 form as
    /// `openssl x509 -noout -subject -nameopt RFC2253` prints it (`CN=okta-scim,O=Example`).
    cert_subject: Option<String>,
    /// The identity provider, for `client.idp` (`okta`, `entra`, ...).
    idp: Option<String>,
    /// Turns the allow-list on: with `required = true` on any client, a request whose bearer
    /// token or certificate matches no configured client gets 401 and is not forwarded.
    #[serde(default)]
    required: bool,
}

/// `[redact]`: values that never leave scimtap, besides `password`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRedact {
    /// Attribute names (any casing) whose values are never shown.
    #[serde(default)]
    pub(super) attributes: Vec<String>,
    /// Query parameters whose values are replaced in `http.query`, besides the built-in list.
    #[serde(default)]
    pub(super) query_params: Vec<String>,
}

/// `[privacy]`: keyed pseudonymisation of personal data in events.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPrivacy {
    /// File holding the secret HMAC key. When set, userName, emails, displayName and filter
    /// literals appear as `hmac-sha256:<hex>` values.
    hash_key_file: Option<Spanned<PathBuf>>,
}

/// How events describe SCIM traffic: endpoints, clients, redaction and privacy.
#[derive(Debug, Clone, Default)]
pub struct ScimConfig {
    pub base_path: Option<String>,
    /// Custom resource types: lower-case endpoint segment → type name.
    pub resource_types: Vec<(String, String)>,
    pub clients: Vec<ClientConfig>,
    /// Refuse (401) requests from clients matching no entry of `clients`.
    pub clients_required: bool,
    pub redact_attributes: Vec<String>,
    pub redact_query_params: Vec<String>,
    /// The HMAC key for pseudonymisation. Never printed.
    pub hash_key: Option<SecretKey>,
    /// Where `hash_key` was read from (`privacy.hash_key_file`): what a reload record names.
    pub hash_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub name: String,
    pub token_sha256: Option<[u8; 32]>,
    /// Normalised with [`normalize_subject`].
    pub cert_subject: Option<String>,
    pub idp: Option<String>,
}

/// Everything that describes SCIM traffic, from the four sections.
pub(super) fn validate_scim(c: &mut Checker<'_>, raw: &RawConfig) -> ScimConfig {
    let mut out = ScimConfig::default();
    if let Some(scim) = &raw.scim {
        let scim = scim.get_ref();
        if let Some(base) = &scim.base_path {
            if !base.get_ref().starts_with('/') {
                c.at(
                    base.span(),
                    "scim.base_path",
                    "must start with `/` (e.g. \"/scim/v2\")",
                );
            }
            out.base_path = Some(base.get_ref().trim_end_matches('/').to_owned());
        }
        for (i, rt) in scim.resource_types.iter().enumerate() {
            let key = format!("scim.resource_types[{i}]");
            let segment = rt.get_ref().endpoint.trim_matches('/').to_ascii_lowercase();
            if segment.is_empty() || segment.contains('/') {
                c.at(
                    rt.span(),
                    &format!("{key}.endpoint"),
                    "must be one path segment such as \"/Devices\"",
                );
            } else if segment == "users" || segment == "groups" {
                c.at(
                    rt.span(),
                    &format!("{key}.endpoint"),
                    "Users and Groups are built in",
                );
            } else {
                out.resource_types
                    .push((segment, rt.get_ref().name.clone()));
            }
        }
    }
    for (i, client) in raw.clients.iter().enumerate() {
        let key = format!("clients[{i}]");
        let raw_client = client.get_ref();
        let token_sha256 = raw_client.token_sha256.as_ref().and_then(|hex| {
            let parsed = parse_sha256_hex(hex.get_ref());
            if parsed.is_none() {
                c.at(
                    hex.span(),
                    &format!("{key}.token_sha256"),
                    "must be 64 hex digits: the SHA-256 of the token (printf %s \"$TOKEN\" | sha256sum)",
                );
            }
            parsed
        });
        if raw_client.token_sha256.is_none() && raw_client.cert_subject.is_none() {
            c.at(
                client.span(),
                &format!("{key}.token_sha256"),
                "missing: a client is matched by its token's SHA-256 or its certificate's subject (cert_subject)",
            );
        }
        if out
            .clients
            .iter()
            .any(|o: &ClientConfig| o.name == raw_client.name)
        {
            c.at(
                client.span(),
                &format!("{key}.name"),
                format!("duplicate client name `{}`", raw_client.name),
            );
        }
        out.clients_required |= raw_client.required;
        out.clients.push(ClientConfig {
            name: raw_client.name.clone(),
            token_sha256,
            cert_subject: raw_client.cert_subject.as_deref().map(normalize_subject),
            idp: raw_client.idp.clone(),
        });
    }
    if let Some(redact) = &raw.redact {
        out.redact_attributes = redact.get_ref().attributes.clone();
        out.redact_query_params = redact.get_ref().query_params.clone();
    }
    if let Some(file) = raw
        .privacy
        .as_ref()
        .and_then(|p| p.get_ref().hash_key_file.as_ref())
    {
        out.hash_key_file = Some(file.get_ref().clone());
        match std::fs::read(file.get_ref()) {
            Ok(key) if key.iter().filter(|b| !b.is_ascii_whitespace()).count() >= 16 => {
                let trimmed: Vec<u8> = key.trim_ascii().to_vec();
                out.hash_key = Some(SecretKey(trimmed));
            }
            Ok(_) => c.at(
                file.span(),
                "privacy.hash_key_file",
                format!("{} holds fewer than 16 bytes: use a long random key (e.g. openssl rand -hex 32)", file.get_ref().display()),
            ),
            Err(e) => c.at(
                file.span(),
                "privacy.hash_key_file",
                format!("cannot read {}: {e}", file.get_ref().display()),
            ),
        }
    }
    out
}

/// A distinguished name for comparison: no spaces around `,` and `=`, lower case, RDNs in
/// sorted order (so `CN=a,O=b` written either way round matches).
pub fn normalize_subject(subject: &str) -> String {
    let mut rdns: Vec<String> = subject
        .split(',')
        .map(|rdn| {
            rdn.split('=')
                .map(str::trim)
                .collect::<Vec<_>>()
                .join("=")
                .to_lowercase()
        })
        .collect();
    rdns.sort();
    rdns.join(",")
}

fn parse_sha256_hex(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}
