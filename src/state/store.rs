//! The store behind the shadow state: one row per (upstream, resource type, id), one per group
//! membership, kept in a SQLite file (one instance) or a PostgreSQL database (several
//! instances behind one load balancer, [`super::postgres`]). Only the audit worker (a
//! dedicated thread) and `scimtap state rebuild` open it; nothing here is called from the
//! async runtime.
//!
//! Both backends answer the same methods with the same SQL text where the dialects agree
//! ([`sql`]: `$1`-style parameters, which SQLite reads as named parameters numbered in order
//! of first appearance, so the same positional values bind in both). Writes are upserts that
//! keep the newest observation: a row is only replaced by one whose `updated_at` (the event's
//! timestamp) is not older, so two writers, or one writer finishing exchanges out of order,
//! cannot put an older view back.
//!
//! Schema changes are ordered migrations, each applied once in a transaction. SQLite records
//! the version in `user_version`; PostgreSQL in a `scimtap_schema` table, under an advisory
//! lock. A store written by an older scimtap is brought forward on open and one written by a
//! newer scimtap is refused rather than misread.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{Map, Value};

use super::postgres::Postgres;
use super::StateError;
use crate::config::{PostgresTarget, StateStore};

/// SQL text both backends run as is.
pub(super) mod sql {
    pub const GET: &str = "SELECT user_name, external_id, display_name, active, attributes
        FROM resources WHERE upstream = $1 AND resource_type = $2 AND id = $3";
    pub const MEMBER_NAME: &str = "SELECT COALESCE(user_name, display_name) FROM resources
        WHERE upstream = $1 AND id = $2 AND resource_type IN ('User', 'Group')
        ORDER BY resource_type = 'User' DESC LIMIT 1";
    /// Inserts or replaces a resource, unless what is stored was observed later.
    pub const PUT: &str = "INSERT INTO resources (upstream, resource_type, id, user_name,
            external_id, display_name, active, attributes, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        ON CONFLICT (upstream, resource_type, id) DO UPDATE SET
            user_name = excluded.user_name, external_id = excluded.external_id,
            display_name = excluded.display_name, active = excluded.active,
            attributes = excluded.attributes, updated_at = excluded.updated_at
        WHERE excluded.updated_at >= resources.updated_at";
    pub const FORGET_MEMBERS: &str =
        "DELETE FROM memberships WHERE upstream = $1 AND group_id = $2";
    pub const FORGET_MEMBERSHIPS: &str =
        "DELETE FROM memberships WHERE upstream = $1 AND member_id = $2";
    pub const ADD_MEMBER: &str = "INSERT INTO memberships (upstream, group_id, member_id)
        VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
    pub const REMOVE: &str =
        "DELETE FROM resources WHERE upstream = $1 AND resource_type = $2 AND id = $3";
    pub const COUNT: &str = "SELECT COUNT(*) FROM resources WHERE upstream = $1";
    pub const CLEAR_MEMBERSHIPS: &str = "DELETE FROM memberships WHERE upstream = $1";
    pub const CLEAR_RESOURCES: &str = "DELETE FROM resources WHERE upstream = $1";

    /// Every statement above, for the test that SQLite binds them as PostgreSQL does.
    #[cfg(test)]
    pub const ALL: &[&str] = &[
        GET,
        MEMBER_NAME,
        PUT,
        FORGET_MEMBERS,
        FORGET_MEMBERSHIPS,
        ADD_MEMBER,
        REMOVE,
        COUNT,
        CLEAR_MEMBERSHIPS,
        CLEAR_RESOURCES,
    ];
}

/// SQLite's migrations: `MIGRATIONS[n]` takes the schema from version `n` to `n + 1`. Never
/// edit one that has shipped; add another (and its PostgreSQL twin in `postgres.rs`).
const MIGRATIONS: &[&str] = &[
    // 1: resources and memberships.
    "CREATE TABLE resources (
        upstream      TEXT NOT NULL,
        resource_type TEXT NOT NULL,
        id            TEXT NOT NULL,
        user_name     TEXT,
        external_id   TEXT,
        display_name  TEXT,
        active        INTEGER,
        attributes    TEXT NOT NULL DEFAULT '{}',
        updated_at    TEXT NOT NULL,
        PRIMARY KEY (upstream, resource_type, id)
    );
    CREATE TABLE memberships (
        upstream  TEXT NOT NULL,
        group_id  TEXT NOT NULL,
        member_id TEXT NOT NULL,
        PRIMARY KEY (upstream, group_id, member_id)
    );
    CREATE INDEX memberships_by_member ON memberships (upstream, member_id);",
];

/// The SQLite schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// What the state knows of one resource.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resource {
    pub resource_type: String,
    pub id: String,
    pub user_name: Option<String>,
    pub external_id: Option<String>,
    pub display_name: Option<String>,
    pub active: Option<bool>,
    /// Attribute values as last seen, flattened to leaf paths (`name.givenName`,
    /// `urn:…:User:employeeNumber`; multi-valued attributes whole), redacted and pseudonymised
    /// like events; never a sensitive attribute.
    pub attributes: Map<String, Value>,
    /// A group's member ids; `None` when not known (a group read without its members).
    pub members: Option<Vec<String>>,
}

/// A `resources` row as [`sql::GET`] selects it.
pub(super) type Row = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<bool>,
    String,
);

impl Resource {
    /// The resource a [`sql::GET`] row describes.
    pub(super) fn from_row(
        resource_type: &str,
        id: &str,
        row: Row,
        members: Option<Vec<String>>,
    ) -> Result<Resource, StateError> {
        let (user_name, external_id, display_name, active, attributes) = row;
        let attributes = match serde_json::from_str::<Value>(&attributes)? {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        Ok(Resource {
            resource_type: resource_type.to_owned(),
            id: id.to_owned(),
            user_name,
            external_id,
            display_name,
            active,
            attributes,
            members,
        })
    }
}

/// The shadow state of one upstream.
pub struct Store {
    backend: Backend,
    upstream: String,
}

enum Backend {
    Sqlite(Connection),
    Postgres(Box<Postgres>),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match &self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        };
        f.debug_struct("Store")
            .field("backend", &backend)
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store `[state]` names: the SQLite file, or a connection to PostgreSQL.
    /// Must not be called on an async runtime's thread (the PostgreSQL client runs a small
    /// runtime of its own): startup calls it from `spawn_blocking`.
    ///
    /// # Errors
    /// As [`Store::open`] and [`Store::connect`].
    pub fn open_configured(store: &StateStore, upstream: &str) -> Result<Store, StateError> {
        match store {
            StateStore::Sqlite(path) => Store::open(path, upstream),
            StateStore::Postgres(target) => Store::connect(target, upstream),
        }
    }

    /// Opens (creating when missing) the state file in WAL mode and brings its schema up to
    /// date. `upstream` (the configured upstream's authority) keys every row, so one file can
    /// hold several upstreams' state.
    ///
    /// # Errors
    /// [`StateError`] when the file cannot be opened, is not SQLite, or was written by a newer
    /// scimtap.
    pub fn open(path: &Path, upstream: &str) -> Result<Store, StateError> {
        let conn = Connection::open(path).map_err(|source| StateError::Open {
            path: path.to_owned(),
            source,
        })?;
        // WAL: readers (a `scimtap state` command, sqlite3 by hand) never block the worker.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Store::with_connection(conn, upstream)
    }

    /// A store in memory, for tests.
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn in_memory(upstream: &str) -> Result<Store, StateError> {
        Store::with_connection(Connection::open_in_memory()?, upstream)
    }

    fn with_connection(mut conn: Connection, upstream: &str) -> Result<Store, StateError> {
        migrate(&mut conn)?;
        Ok(Store {
            backend: Backend::Sqlite(conn),
            upstream: upstream.to_owned(),
        })
    }

    /// Connects to PostgreSQL and brings its schema up to date (one instance at a time: the
    /// migrations run under an advisory lock). Once open, a lost connection is retried on a
    /// later call rather than given up: calls fail (and the events go out without state)
    /// until it is back.
    ///
    /// # Errors
    /// [`StateError`] when the database cannot be reached or was migrated by a newer scimtap.
    pub fn connect(target: &PostgresTarget, upstream: &str) -> Result<Store, StateError> {
        Ok(Store {
            backend: Backend::Postgres(Box::new(Postgres::connect(target)?)),
            upstream: upstream.to_owned(),
        })
    }

    /// The schema version of the open store.
    ///
    /// # Errors
    /// When the store cannot answer.
    pub fn schema_version(&mut self) -> Result<i64, StateError> {
        match &mut self.backend {
            Backend::Sqlite(conn) => Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?),
            Backend::Postgres(pg) => pg.schema_version(),
        }
    }

    /// What the state knows of `id`, with a group's members.
    ///
    /// # Errors
    /// When the store fails or a stored row is not valid JSON.
    pub fn get(&mut self, resource_type: &str, id: &str) -> Result<Option<Resource>, StateError> {
        let upstream = self.upstream.as_str();
        let conn = match &mut self.backend {
            Backend::Sqlite(conn) => conn,
            Backend::Postgres(pg) => return pg.get(upstream, resource_type, id),
        };
        let row = conn
            .query_row(sql::GET, params![upstream, resource_type, id], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            })
            .optional()?;
        let Some(row) = row else {
            return Ok(None);
        };
        let members = if resource_type == "Group" {
            let mut stmt = conn.prepare_cached(
                "SELECT member_id FROM memberships WHERE upstream = $1 AND group_id = $2
                 ORDER BY rowid",
            )?;
            let rows = stmt.query_map(params![upstream, id], |row| row.get(0))?;
            Some(rows.collect::<Result<Vec<String>, _>>()?)
        } else {
            None
        };
        Resource::from_row(resource_type, id, row, members).map(Some)
    }

    /// The name to show for a member id: a user's userName, else a group's displayName.
    ///
    /// # Errors
    /// When the store fails.
    pub fn member_name(&mut self, id: &str) -> Result<Option<String>, StateError> {
        let upstream = self.upstream.as_str();
        match &mut self.backend {
            Backend::Sqlite(conn) => Ok(conn
                .query_row(sql::MEMBER_NAME, params![upstream, id], |row| {
                    row.get::<_, Option<String>>(0)
                })
                .optional()?
                .flatten()),
            Backend::Postgres(pg) => pg.member_name(upstream, id),
        }
    }

    /// Writes `resource` (and, when known, a group's whole member list) in one transaction,
    /// unless the store holds a later observation of it (`updated_at` newer than this one):
    /// then nothing is written and `false` comes back.
    ///
    /// # Errors
    /// When the store fails.
    pub fn put(&mut self, resource: &Resource, updated_at: &str) -> Result<bool, StateError> {
        let upstream = self.upstream.as_str();
        let attributes = serde_json::to_string(&resource.attributes)?;
        let conn = match &mut self.backend {
            Backend::Sqlite(conn) => conn,
            Backend::Postgres(pg) => return pg.put(upstream, resource, &attributes, updated_at),
        };
        let tx = conn.transaction()?;
        let written = tx.execute(
            sql::PUT,
            params![
                upstream,
                resource.resource_type,
                resource.id,
                resource.user_name,
                resource.external_id,
                resource.display_name,
                resource.active,
                attributes,
                updated_at,
            ],
        )? > 0;
        if let (true, Some(members)) = (written, &resource.members) {
            tx.execute(sql::FORGET_MEMBERS, params![upstream, resource.id])?;
            for member in members {
                tx.execute(sql::ADD_MEMBER, params![upstream, resource.id, member])?;
            }
        }
        tx.commit()?;
        Ok(written)
    }

    /// Forgets a deleted resource, and its memberships on either side.
    ///
    /// # Errors
    /// When the store fails.
    pub fn remove(&mut self, resource_type: &str, id: &str) -> Result<(), StateError> {
        let upstream = self.upstream.as_str();
        let conn = match &mut self.backend {
            Backend::Sqlite(conn) => conn,
            Backend::Postgres(pg) => return pg.remove(upstream, resource_type, id),
        };
        let tx = conn.transaction()?;
        tx.execute(sql::REMOVE, params![upstream, resource_type, id])?;
        tx.execute(forget_memberships(resource_type), params![upstream, id])?;
        tx.commit()?;
        Ok(())
    }

    /// How many resources the store knows for this upstream.
    ///
    /// # Errors
    /// When the store fails.
    pub fn count(&mut self) -> Result<u64, StateError> {
        let upstream = self.upstream.as_str();
        match &mut self.backend {
            Backend::Sqlite(conn) => {
                let n: i64 = conn.query_row(sql::COUNT, params![upstream], |r| r.get(0))?;
                Ok(n.unsigned_abs())
            }
            Backend::Postgres(pg) => pg.count(upstream),
        }
    }

    /// Forgets everything known of this upstream (`state rebuild --replace` on a shared
    /// database, where the other upstreams' rows stay).
    ///
    /// # Errors
    /// When the store fails.
    pub fn clear(&mut self) -> Result<(), StateError> {
        let upstream = self.upstream.as_str();
        let conn = match &mut self.backend {
            Backend::Sqlite(conn) => conn,
            Backend::Postgres(pg) => return pg.clear(upstream),
        };
        let tx = conn.transaction()?;
        tx.execute(sql::CLEAR_MEMBERSHIPS, params![upstream])?;
        tx.execute(sql::CLEAR_RESOURCES, params![upstream])?;
        tx.commit()?;
        Ok(())
    }
}

/// The statement forgetting a removed resource's memberships: a group's members, or a
/// member's groups.
pub(super) fn forget_memberships(resource_type: &str) -> &'static str {
    if resource_type == "Group" {
        sql::FORGET_MEMBERS
    } else {
        sql::FORGET_MEMBERSHIPS
    }
}

/// Applies every migration the file has not seen, each in its own transaction.
fn migrate(conn: &mut Connection) -> Result<(), StateError> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StateError::NewerSchema {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite reads `$1` as a named parameter numbered in order of first appearance: the
    /// shared statements must name theirs `$1`, `$2`... in that order, so the positional
    /// values PostgreSQL binds to `$n` bind to the same places in SQLite.
    #[test]
    fn shared_statements_bind_positionally_in_sqlite() {
        let store = Store::in_memory("app:443").expect("store");
        let Backend::Sqlite(conn) = &store.backend else {
            unreachable!("in_memory is SQLite");
        };
        for text in sql::ALL {
            let stmt = conn.prepare(text).unwrap_or_else(|e| panic!("{e}: {text}"));
            for index in 1..=stmt.parameter_count() {
                assert_eq!(
                    stmt.parameter_name(index),
                    Some(format!("${index}").as_str()),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn an_older_observation_does_not_replace_a_newer_one() {
        let mut store = Store::in_memory("app:443").expect("store");
        let mut ann = Resource {
            resource_type: "User".to_owned(),
            id: "u1".to_owned(),
            user_name: Some("ann".to_owned()),
            ..Resource::default()
        };
        assert!(store.put(&ann, "2026-01-01T00:00:02.000Z").expect("put"));
        ann.user_name = Some("older".to_owned());
        assert!(!store.put(&ann, "2026-01-01T00:00:01.000Z").expect("put"));
        ann.user_name = Some("same-ms".to_owned());
        assert!(store.put(&ann, "2026-01-01T00:00:02.000Z").expect("put"));
        let known = store.get("User", "u1").expect("get").expect("known");
        assert_eq!(known.user_name.as_deref(), Some("same-ms"));
    }
}
