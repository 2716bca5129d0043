//! Who is calling: the Authorization credentials reduced to a scheme and a SHA-256, and the
//! configured `[[clients]]` entry that the credentials or the client certificate match.
//!
//! One module for both users of it, so they can never disagree: the request path's allow-list
//! (`[[clients]] required = true`) and the event's `client.name` / `client.token_fingerprint`.
//! The credentials themselves never leave [`credentials`].

use http::header::AUTHORIZATION;
use http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::config::{normalize_subject, ClientConfig};

/// Hex digits of SHA-256 kept in `client.token_fingerprint` (64 bits: enough to tell clients
/// apart, far too few to be useful for guessing the token).
const FINGERPRINT_HEX_LEN: usize = 16;

/// Authorization schemes reported by name (IANA registry and common vendor ones). Anything
/// else is reported as `other`: a word that is not a known scheme may be the credential
/// itself (a raw token sent without a scheme), and must never reach an event.
const KNOWN_SCHEMES: &[&str] = &[
    "basic",
    "bearer",
    "digest",
    "dpop",
    "gnap",
    "hoba",
    "mutual",
    "negotiate",
    "ntlm",
    "privatetoken",
    "concealed",
    "scram-sha-1",
    "scram-sha-256",
    "vapid",
    "aws4-hmac-sha256",
    "splunk",
    "token",
    "apikey",
    "sharedkey",
    "sso-key",
];

/// What the Authorization header says about the caller, without the secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The scheme, lower case (`bearer`, `basic`, ...), or `other` when the first word is not
    /// a known scheme (it may be a raw token).
    pub scheme: Option<String>,
    /// SHA-256 of the credentials after the scheme; `None` when there are none.
    pub digest: Option<[u8; 32]>,
}

impl Credentials {
    /// `client.token_fingerprint`: the first 16 hex digits of [`Credentials::digest`].
    pub fn fingerprint(&self) -> Option<String> {
        self.digest.as_ref().map(fingerprint_of_digest)
    }
}

/// The credentials of the Authorization header (RFC 9110 §11.6.2: scheme, whitespace, then
/// the credentials), reduced to their scheme and SHA-256.
pub fn credentials(headers: &HeaderMap) -> Credentials {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Credentials::default();
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    let text = text.trim();
    let (word, rest) = match text.split_once(|c: char| c.is_ascii_whitespace()) {
        Some((word, rest)) => (word, rest.trim()),
        None => (text, ""),
    };
    let lower = word.to_ascii_lowercase();
    let known = KNOWN_SCHEMES.contains(&lower.as_str());
    let (scheme, secret) = match (known, rest.is_empty()) {
        // `Bearer` alone: a scheme without credentials.
        (true, true) => (lower, ""),
        (true, false) => (lower, rest),
        // A lone unknown word is a raw credential: hash it, never show it.
        (false, true) => ("other".to_owned(), text),
        (false, false) => ("other".to_owned(), rest),
    };
    Credentials {
        scheme: Some(scheme),
        digest: (!secret.is_empty()).then(|| Sha256::digest(secret.as_bytes()).into()),
    }
}

/// Identity providers recognised by their User-Agent, as (substring, `client.idp`). Okta's
/// is documented (`Okta SCIM Client 1.0.0`); the others are best effort.
const USER_AGENT_IDPS: [(&str, &str); 6] = [
    ("okta", "okta"),
    ("azure", "entra"),
    ("microsoft", "entra"),
    ("onelogin", "onelogin"),
    ("jumpcloud", "jumpcloud"),
    ("google", "google"),
];

/// The identity provider a User-Agent names, if it is one scimtap recognises.
pub fn idp_from_user_agent(user_agent: &str) -> Option<&'static str> {
    let ua = user_agent.to_ascii_lowercase();
    USER_AGENT_IDPS
        .into_iter()
        .find(|(needle, _)| ua.contains(needle))
        .map(|(_, idp)| idp)
}

/// Whether `idp` is one [`idp_from_user_agent`] gives (a bounded set, for metric labels).
pub fn is_recognised_idp(idp: &str) -> bool {
    USER_AGENT_IDPS.iter().any(|(_, known)| *known == idp)
}

/// The configured client these credentials or this certificate subject belong to: a token
/// match first, else the certificate subject (compared in normalised form).
pub fn matching<'c>(
    clients: &'c [ClientConfig],
    digest: Option<&[u8; 32]>,
    cert_subject: Option<&str>,
) -> Option<&'c ClientConfig> {
    if let Some(digest) = digest {
        if let Some(client) = clients
            .iter()
            .find(|c| c.token_sha256.as_ref() == Some(digest))
        {
            return Some(client);
        }
    }
    let subject = cert_subject?;
    // Normalising costs a few allocations: only when some client is known by certificate.
    if !clients.iter().any(|c| c.cert_subject.is_some()) {
        return None;
    }
    let subject = normalize_subject(subject);
    clients
        .iter()
        .find(|c| c.cert_subject.as_deref() == Some(subject.as_str()))
}

/// Short hex SHA-256 of `secret`, as in `client.token_fingerprint` (for operators who want to
/// know which fingerprint a token they hold has).
pub fn fingerprint(secret: &[u8]) -> String {
    fingerprint_of_digest(&Sha256::digest(secret).into())
}

fn fingerprint_of_digest(digest: &[u8; 32]) -> String {
    hex::encode(&digest[..FINGERPRINT_HEX_LEN / 2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn client(name: &str, token: Option<&[u8]>, subject: Option<&str>) -> ClientConfig {
        ClientConfig {
            name: name.to_owned(),
            token_sha256: token.map(|t| Sha256::digest(t).into()),
            cert_subject: subject.map(normalize_subject),
            idp: None,
        }
    }

    fn with_auth(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static(value));
        h
    }

    fn name_of(
        clients: &[ClientConfig],
        headers: &HeaderMap,
        subject: Option<&str>,
    ) -> Option<String> {
        let creds = credentials(headers);
        matching(clients, creds.digest.as_ref(), subject).map(|c| c.name.clone())
    }

    #[test]
    fn tokens_and_certificate_subjects_match_their_client() {
        let clients = [
            client("okta", Some(b"s3cret"), None),
            client("entra", None, Some("CN=entra-scim, O=Example")),
        ];
        let okta = Some("okta".to_owned());
        assert_eq!(name_of(&clients, &with_auth("Bearer s3cret"), None), okta);
        assert_eq!(
            name_of(&clients, &with_auth("  bearer   s3cret  "), None),
            okta
        );
        assert_eq!(name_of(&clients, &with_auth("Bearer s3cret2"), None), None);
        assert_eq!(name_of(&clients, &with_auth("Bearer"), None), None);
        // A raw token without a scheme is a credential too (never shown, but matched).
        assert_eq!(name_of(&clients, &with_auth("s3cret"), None), okta);
        assert_eq!(name_of(&clients, &with_auth("Bearer\ts3cret"), None), okta);
        assert_eq!(name_of(&clients, &with_auth("s3cret2"), None), None);
        assert_eq!(name_of(&clients, &HeaderMap::new(), None), None);
        let entra = Some("entra".to_owned());
        assert_eq!(
            name_of(&clients, &HeaderMap::new(), Some("O=Example,CN=entra-scim")),
            entra
        );
        assert_eq!(
            name_of(
                &clients,
                &HeaderMap::new(),
                Some("CN=someone-else,O=Example")
            ),
            None
        );
        // A known token is enough whatever certificate comes with it.
        assert_eq!(
            name_of(
                &clients,
                &with_auth("Bearer s3cret"),
                Some("CN=someone-else")
            ),
            okta
        );
    }

    #[test]
    fn the_scheme_is_shown_and_the_secret_only_as_a_digest() {
        let c = credentials(&with_auth("Bearer s3cr3t-token"));
        assert_eq!(c.scheme.as_deref(), Some("bearer"));
        assert_eq!(c.fingerprint(), Some(fingerprint(b"s3cr3t-token")));
        assert_eq!(fingerprint(b"s3cr3t-token").len(), FINGERPRINT_HEX_LEN);
        let raw = credentials(&with_auth("s3cr3t-token"));
        assert_eq!(raw.scheme.as_deref(), Some("other"));
        assert_eq!(raw.digest, c.digest);
        let bare = credentials(&with_auth("Bearer"));
        assert_eq!(bare.scheme.as_deref(), Some("bearer"));
        assert_eq!(bare.digest, None);
        assert_eq!(credentials(&HeaderMap::new()), Credentials::default());
    }
}
