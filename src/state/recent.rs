//! What a SQLite store holds of the resources the audit worker used last, so that looking one
//! up needs no query and no JSON parse, and writing one back unchanged needs no rewrite.
//!
//! Exact, not a guess: with SQLite scimtap is the file's only writer (one instance, one audit
//! worker), every write goes through [`super::Store`], and the store keeps this in step with
//! what it wrote (a store error forgets everything). A shared PostgreSQL store has no such
//! cache: other instances write it.
//!
//! Bounded by two generations of at most [`GENERATION`] entries: when the newer one is full,
//! the older is dropped and the newer becomes the older. Whatever was used in the last
//! generation survives (a hit in the older generation moves it to the newer), without the
//! bookkeeping of an exact LRU.

use std::collections::HashMap;

use super::Resource;

/// Entries per generation: at most twice this many resources are held (a few MB).
const GENERATION: usize = 4096;

/// (resource type, id).
type Key = (String, String);

/// What the store holds for a key: the resource, or `None` when it holds nothing.
#[derive(Debug, Default)]
pub(super) struct Recent {
    newer: HashMap<Key, Option<Resource>>,
    older: HashMap<Key, Option<Resource>>,
}

impl Recent {
    /// What the store holds for (`resource_type`, `id`), if that is known: `Some(None)` means
    /// the store holds nothing.
    pub(super) fn get(&mut self, resource_type: &str, id: &str) -> Option<&Option<Resource>> {
        let key = (resource_type.to_owned(), id.to_owned());
        if !self.newer.contains_key(&key) {
            let moved = self.older.remove(&key)?;
            self.insert_key(key.clone(), moved);
        }
        self.newer.get(&key)
    }

    /// Records what the store now holds for (`resource_type`, `id`).
    pub(super) fn set(&mut self, resource_type: &str, id: &str, held: Option<Resource>) {
        let key = (resource_type.to_owned(), id.to_owned());
        self.older.remove(&key);
        self.insert_key(key, held);
    }

    fn insert_key(&mut self, key: Key, held: Option<Resource>) {
        if self.newer.len() >= GENERATION && !self.newer.contains_key(&key) {
            self.older = std::mem::take(&mut self.newer);
        }
        self.newer.insert(key, held);
    }

    /// A user or group left every group: the store deleted its memberships.
    pub(super) fn forget_member(&mut self, member_id: &str) {
        for held in self.newer.values_mut().chain(self.older.values_mut()) {
            if let Some(Resource {
                members: Some(members),
                ..
            }) = held
            {
                members.retain(|m| m != member_id);
            }
        }
    }

    /// Forgets everything (the store was cleared, or failed in a way that may have left it
    /// other than recorded here).
    pub(super) fn clear(&mut self) {
        self.newer.clear();
        self.older.clear();
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.newer.len() + self.older.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> Resource {
        Resource {
            resource_type: "User".to_owned(),
            id: id.to_owned(),
            ..Resource::default()
        }
    }

    #[test]
    fn holds_two_generations_and_keeps_what_was_used() {
        let mut recent = Recent::default();
        recent.set("User", "kept", Some(user("kept")));
        for i in 0..GENERATION - 1 {
            recent.set("User", &i.to_string(), Some(user(&i.to_string())));
        }
        // The newer generation is full: the next insert starts a new one.
        recent.set("User", "next", None);
        assert_eq!(recent.len(), GENERATION + 1);
        // A hit in the older generation moves it to the newer one...
        assert!(recent.get("User", "kept").is_some());
        for i in GENERATION..2 * GENERATION {
            recent.set("User", &i.to_string(), None);
        }
        // ...so it outlives the rest of its generation.
        assert!(recent.get("User", "kept").is_some());
        assert!(recent.get("User", "0").is_none());
        assert!(recent.len() <= 2 * GENERATION);
        // A known absence is an answer too.
        recent.set("User", "gone", None);
        assert_eq!(recent.get("User", "gone"), Some(&None));
    }

    #[test]
    fn a_member_that_left_leaves_every_cached_group() {
        let mut recent = Recent::default();
        let group = |members: &[&str]| Resource {
            resource_type: "Group".to_owned(),
            id: "g".to_owned(),
            members: Some(members.iter().map(|m| (*m).to_owned()).collect()),
            ..Resource::default()
        };
        recent.set("Group", "g", Some(group(&["u1", "u2"])));
        recent.forget_member("u1");
        assert_eq!(recent.get("Group", "g"), Some(&Some(group(&["u2"]))));
        recent.clear();
        assert_eq!(recent.get("Group", "g"), None);
    }
}
