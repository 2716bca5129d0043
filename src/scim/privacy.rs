//! Keyed pseudonymisation (`privacy.hash_key_file`): userName, emails, displayName and filter
//! literals appear as HMAC-SHA256 values, so a SIEM can still join events on them without
//! holding the raw personal data. Without the key nobody can recompute or reverse them.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// HMAC-SHA256 with a secret key. Debug never prints the key.
#[derive(Clone)]
pub struct Pseudonymizer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymizer(<key redacted>)")
    }
}

impl Pseudonymizer {
    pub fn new(key: Vec<u8>) -> Self {
        Pseudonymizer { key }
    }

    /// `hmac-sha256:<64 hex digits>` of `value`.
    pub fn hash(&self, value: &str) -> String {
        // HMAC accepts keys of any length, so this cannot fail.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return "hmac-sha256:unavailable".to_owned();
        };
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        format!("hmac-sha256:{}", hex::encode(digest))
    }

    /// The filter with every quoted string literal replaced by its pseudonym (quoted).
    pub fn filter(&self, filter: &str) -> String {
        let mut out = String::with_capacity(filter.len());
        let mut chars = filter.chars();
        while let Some(c) = chars.next() {
            if c != '"' {
                out.push(c);
                continue;
            }
            let mut literal = String::new();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(escaped) = chars.next() {
                            literal.push(escaped);
                        }
                    }
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => literal.push(c),
                }
            }
            out.push('"');
            out.push_str(&self.hash(&literal));
            if closed {
                out.push('"');
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_value_same_pseudonym_and_never_the_value() {
        let p = Pseudonymizer::new(b"k".to_vec());
        let a = p.hash("bjensen@example.com");
        assert_eq!(a, p.hash("bjensen@example.com"));
        assert!(a.starts_with("hmac-sha256:"));
        assert_eq!(a.len(), 12 + 64);
        assert_ne!(
            a,
            Pseudonymizer::new(b"other".to_vec()).hash("bjensen@example.com")
        );
    }

    #[test]
    fn filter_literals_are_replaced_and_structure_kept() {
        let p = Pseudonymizer::new(b"k".to_vec());
        let f = p.filter("userName eq \"bjensen\" and active eq true");
        assert_eq!(
            f,
            format!("userName eq \"{}\" and active eq true", p.hash("bjensen"))
        );
        assert!(!p.filter("x eq \"a\\\"b\"").contains("a\\\"b"));
    }
}
