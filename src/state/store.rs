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

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde_json::{Map, Value};

use super::postgres::Postgres;
use super::recent::Recent;
use super::sql;
use super::StateError;
use crate::config::{PostgresTarget, StateStore};

/// The SQLite schema version this build writes.
pub const SCHEMA_VERSION: i64 = sql::MIGRATIONS.len() as i64;

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

/// A deactivation or deletion the app has not confirmed yet: refused, or never answered.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenDeprovision {
    pub resource_type: String,
    pub id: String,
    /// `user.deactivate` or `user.delete`.
    pub requested_action: String,
    /// The first attempt: its event and when it was asked.
    pub requested_event_id: String,
    pub requested_at: String,
    /// When it becomes a gap if still open (Unix milliseconds).
    pub due_ms: i64,
    pub attempts: i64,
    pub last_event_id: String,
    /// What the app answered the last attempt (none: it never answered).
    pub last_status: Option<u16>,
    /// Why the last attempt failed (`failure.kind`, else the SCIM error's detail).
    pub last_failure: Option<String>,
    /// What a gap or closed event repeats of the last attempt: target, client, method, path,
    /// request id (JSON).
    pub context: Value,
    /// The `deprovision.gap` event reported for it, once reported.
    pub gap_event_id: Option<String>,
}

fn deprovision_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(OpenDeprovision, String)> {
    // The PostgreSQL twin is `postgres::deprovision_row`.
    Ok((
        OpenDeprovision {
            resource_type: row.get(0)?,
            id: row.get(1)?,
            requested_action: row.get(2)?,
            requested_event_id: row.get(3)?,
            requested_at: row.get(4)?,
            due_ms: row.get(5)?,
            attempts: row.get(6)?,
            last_event_id: row.get(7)?,
            last_status: row.get(8)?,
            last_failure: row.get(9)?,
            context: Value::Null,
            gap_event_id: row.get(11)?,
        },
        row.get(10)?,
    ))
}

pub(super) fn with_context(
    (mut open, context): (OpenDeprovision, String),
) -> Result<OpenDeprovision, StateError> {
    open.context = serde_json::from_str(&context)?;
    Ok(open)
}

/// The shadow state, one namespace at a time: the upstream's authority without routes, a
/// route's `state_namespace` with them (the `upstream` column). [`Store::use_namespace`]
/// switches.
pub struct Store {
    backend: Backend,
    upstream: String,
    /// A writable SQLite store's recently used resources ([`Recent`]) of the namespace in use;
    /// `None` otherwise.
    recent: Option<Recent>,
    /// The other namespaces' caches, kept while another is in use.
    parked: std::collections::HashMap<String, Option<Recent>>,
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
    /// Reads and writes `namespace`'s rows from now on (one route's state). Cheap when it is
    /// already in use; otherwise the cache of recently used resources follows the namespace.
    pub fn use_namespace(&mut self, namespace: &str) {
        if self.upstream == namespace {
            return;
        }
        let fresh = self.recent.as_ref().map(|_| Recent::default());
        let recent = self.parked.remove(namespace).unwrap_or(fresh);
        let old = std::mem::replace(&mut self.upstream, namespace.to_owned());
        let old_recent = std::mem::replace(&mut self.recent, recent);
        self.parked.insert(old, old_recent);
    }

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

    /// Opens an existing state file read-only, for commands that only look things up
    /// (`scimtap trace`), possibly while a running scimtap writes it: nothing is created or
    /// migrated, and WAL mode lets it read beside the audit worker. `upstream` picks whose
    /// state to read; `None` takes the only upstream the file holds.
    ///
    /// # Errors
    /// [`StateError`] when the file is missing or not a state file, was written by a newer
    /// scimtap, or holds several upstreams and none was named.
    pub fn open_read_only(path: &Path, upstream: Option<&str>) -> Result<Store, StateError> {
        let open = |source| StateError::Open {
            path: path.to_owned(),
            source,
        };
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(open)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // The first read is where a file that is not SQLite shows.
        let found: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(open)?;
        if found > SCHEMA_VERSION {
            return Err(StateError::NewerSchema {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found < 1 {
            return Err(StateError::NotAStateFile {
                path: path.to_owned(),
            });
        }
        let upstream = match upstream {
            Some(upstream) => upstream.to_owned(),
            None => {
                let mut stmt =
                    conn.prepare("SELECT DISTINCT upstream FROM resources ORDER BY upstream")?;
                let all = stmt
                    .query_map([], |row| row.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                drop(stmt);
                match <[String; 1]>::try_from(all) {
                    Ok([one]) => one,
                    Err(all) if all.is_empty() => String::new(),
                    Err(upstreams) => {
                        return Err(StateError::SeveralUpstreams {
                            path: path.to_owned(),
                            upstreams,
                        })
                    }
                }
            }
        };
        Ok(Store {
            backend: Backend::Sqlite(conn),
            upstream,
            recent: None,
            parked: std::collections::HashMap::new(),
        })
    }

    fn with_connection(mut conn: Connection, upstream: &str) -> Result<Store, StateError> {
        migrate(&mut conn)?;
        Ok(Store {
            backend: Backend::Sqlite(conn),
            upstream: upstream.to_owned(),
            recent: Some(Recent::default()),
            parked: std::collections::HashMap::new(),
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
            recent: None,
            parked: std::collections::HashMap::new(),
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
        if let Some(held) = self.recent.as_mut().and_then(|r| r.get(resource_type, id)) {
            return Ok(held.clone());
        }
        let upstream = self.upstream.as_str();
        let found = match &mut self.backend {
            Backend::Sqlite(conn) => sqlite_get(conn, upstream, resource_type, id)?,
            Backend::Postgres(pg) => return pg.get(upstream, resource_type, id),
        };
        if let Some(recent) = self.recent.as_mut() {
            recent.set(resource_type, id, found.clone());
        }
        Ok(found)
    }

    /// The name to show for a member id: a user's userName, else a group's displayName.
    ///
    /// # Errors
    /// When the store fails.
    pub fn member_name(&mut self, id: &str) -> Result<Option<String>, StateError> {
        if let Some(recent) = self.recent.as_mut() {
            // As MEMBER_NAME: the user's name, else the group's, when both answers are known.
            let name = |r: &Resource| r.user_name.clone().or_else(|| r.display_name.clone());
            match recent.get("User", id) {
                Some(Some(user)) => return Ok(name(user)),
                Some(None) => {
                    if let Some(held) = recent.get("Group", id) {
                        return Ok(held.as_ref().and_then(name));
                    }
                }
                None => {}
            }
        }
        let upstream = self.upstream.as_str();
        match &mut self.backend {
            Backend::Sqlite(conn) => Ok(conn
                .prepare_cached(sql::MEMBER_NAME)?
                .query_row(params![upstream, id], |row| row.get::<_, Option<String>>(0))
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
        let result = self.put_uncached(resource, updated_at);
        if let Some(recent) = self.recent.as_mut() {
            match &result {
                // Refused as older: the store still holds what it held.
                Ok(false) => {}
                Ok(true) => {
                    // As stored: a member listed twice is one membership.
                    let mut stored = resource.clone();
                    if let Some(members) = stored.members.as_mut() {
                        let mut seen = std::collections::HashSet::new();
                        members.retain(|m| seen.insert(m.clone()));
                    }
                    recent.set(&resource.resource_type, &resource.id, Some(stored));
                }
                Err(_) => recent.clear(),
            }
        }
        result
    }

    fn put_uncached(&mut self, resource: &Resource, updated_at: &str) -> Result<bool, StateError> {
        let upstream = self.upstream.as_str();
        let conn = match &mut self.backend {
            Backend::Sqlite(conn) => conn,
            Backend::Postgres(pg) => {
                let attributes = serde_json::to_string(&resource.attributes)?;
                return pg.put(upstream, resource, &attributes, updated_at);
            }
        };
        let held = self
            .recent
            .as_mut()
            .and_then(|r| r.get(&resource.resource_type, &resource.id))
            .and_then(Option::as_ref);
        // Seen again as the store holds it (Okta's PUT of an unchanged profile, Entra's re-add,
        // a list page read again): only the time of the observation moves.
        if held == Some(resource) {
            let touched = conn.prepare_cached(sql::TOUCH)?.execute(params![
                updated_at,
                upstream,
                resource.resource_type,
                resource.id,
            ])?;
            return Ok(touched > 0);
        }
        let members_unchanged = held.is_some_and(|h| h.members == resource.members);
        let attributes = serde_json::to_string(&resource.attributes)?;
        let tx = conn.savepoint()?;
        let written = tx.prepare_cached(sql::PUT)?.execute(params![
            upstream,
            resource.resource_type,
            resource.id,
            resource.user_name,
            resource.external_id,
            resource.display_name,
            resource.active,
            attributes,
            updated_at,
        ])? > 0;
        if let (true, false, Some(members)) = (written, members_unchanged, &resource.members) {
            tx.prepare_cached(sql::FORGET_MEMBERS)?
                .execute(params![upstream, resource.id])?;
            for member in members {
                tx.prepare_cached(sql::ADD_MEMBER)?.execute(params![
                    upstream,
                    resource.id,
                    member
                ])?;
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
        let result = self.remove_uncached(resource_type, id);
        if let Some(recent) = self.recent.as_mut() {
            match &result {
                Ok(()) => {
                    recent.set(resource_type, id, None);
                    if resource_type != "Group" {
                        recent.forget_member(id);
                    }
                }
                Err(_) => recent.clear(),
            }
        }
        result
    }

    fn remove_uncached(&mut self, resource_type: &str, id: &str) -> Result<(), StateError> {
        let upstream = self.upstream.as_str();
        let conn = match &mut self.backend {
            Backend::Sqlite(conn) => conn,
            Backend::Postgres(pg) => return pg.remove(upstream, resource_type, id),
        };
        let tx = conn.savepoint()?;
        tx.prepare_cached(sql::REMOVE)?
            .execute(params![upstream, resource_type, id])?;
        tx.prepare_cached(forget_memberships(resource_type))?
            .execute(params![upstream, id])?;
        tx.commit()?;
        Ok(())
    }

    /// SQLite: starts a transaction that the writes of the following exchanges share, until
    /// [`Store::commit_batch`]: one commit per batch instead of one per write is what lets the
    /// audit worker keep up under load. A crash loses the uncommitted batch's state (rebuildable
    /// from the audit files), never an event. PostgreSQL (shared): nothing, every write is its
    /// own transaction so other instances see it at once.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn begin_batch(&mut self) -> Result<(), StateError> {
        if let Backend::Sqlite(conn) = &mut self.backend {
            if conn.is_autocommit() {
                conn.execute_batch("BEGIN")?;
            }
        }
        Ok(())
    }

    /// Commits the batch [`Store::begin_batch`] started, if one is open.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn commit_batch(&mut self) -> Result<(), StateError> {
        if let Backend::Sqlite(conn) = &mut self.backend {
            if !conn.is_autocommit() {
                if let Err(error) = conn.execute_batch("COMMIT") {
                    // The batch held every namespace's writes.
                    if let Some(recent) = self.recent.as_mut() {
                        recent.clear();
                    }
                    self.parked.clear();
                    return Err(error.into());
                }
            }
        }
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
                let n: i64 = conn
                    .prepare_cached(sql::COUNT)?
                    .query_row(params![upstream], |r| r.get(0))?;
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
        if let Some(recent) = self.recent.as_mut() {
            recent.clear();
        }
        let upstream = self.upstream.as_str();
        let conn = match &mut self.backend {
            Backend::Sqlite(conn) => conn,
            Backend::Postgres(pg) => return pg.clear(upstream),
        };
        let tx = conn.savepoint()?;
        for statement in sql::CLEAR {
            tx.prepare_cached(statement)?.execute(params![upstream])?;
        }
        tx.commit()?;
        Ok(())
    }
}

/// Claims, for a store several instances share. Each instance's audit worker records an
/// exchange a moment after the response went back to the client, who may already have sent
/// its next request to another instance: that one must not look up what the first has not
/// recorded yet. So a worker claims the ids an exchange will write as soon as it is handed
/// the exchange, and a worker about to read ids waits (bounded) while another instance holds
/// a claim on them for an exchange that started earlier. With SQLite (one instance, one
/// worker, exchanges in order) these do nothing.
impl Store {
    /// True when other instances may write the same store (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Claims `ids` for this instance's exchange number `ticket`, which started at
    /// `started_at` (the event timestamp).
    ///
    /// # Errors
    /// When the store fails.
    pub fn claim(
        &mut self,
        ticket: u64,
        started_at: &str,
        ids: &[String],
    ) -> Result<(), StateError> {
        let upstream = self.upstream.as_str();
        match &mut self.backend {
            Backend::Postgres(pg) if !ids.is_empty() => {
                pg.claim(upstream, ticket_number(ticket), started_at, ids)
            }
            _ => Ok(()),
        }
    }

    /// Releases the claims of exchange `ticket` (recorded, or given up on).
    ///
    /// # Errors
    /// When the store fails.
    pub fn release(&mut self, ticket: u64) -> Result<(), StateError> {
        match &mut self.backend {
            Backend::Postgres(pg) => pg.release(ticket_number(ticket)),
            Backend::Sqlite(_) => Ok(()),
        }
    }

    /// True while another instance holds a live claim on one of `ids` for an exchange that
    /// started before `started_at`.
    ///
    /// # Errors
    /// When the store fails.
    pub fn claimed_earlier(
        &mut self,
        ids: &[String],
        started_at: &str,
    ) -> Result<bool, StateError> {
        let upstream = self.upstream.as_str();
        match &mut self.backend {
            Backend::Postgres(pg) if !ids.is_empty() => {
                pg.claimed_earlier(upstream, ids, started_at)
            }
            _ => Ok(false),
        }
    }
}

/// A ticket as PostgreSQL's BIGINT (tickets count exchanges from 0; they never reach 2^63).
fn ticket_number(ticket: u64) -> i64 {
    i64::try_from(ticket).unwrap_or(i64::MAX)
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

impl Store {
    /// The open deprovisioning of `id`, if any.
    ///
    /// # Errors
    /// When the store fails.
    pub fn open_deprovision(
        &mut self,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<OpenDeprovision>, StateError> {
        self.deprovision(sql::OPEN_DEPROVISION, resource_type, id)
    }

    /// Records (or updates) an open deprovisioning.
    ///
    /// # Errors
    /// When the store fails.
    pub fn save_deprovision(&mut self, open: &OpenDeprovision) -> Result<(), StateError> {
        let upstream = self.upstream.as_str();
        let context = serde_json::to_string(&open.context)?;
        let conn = match &mut self.backend {
            Backend::Sqlite(conn) => conn,
            Backend::Postgres(pg) => return pg.save_deprovision(upstream, open, &context),
        };
        conn.prepare_cached(sql::SAVE_DEPROVISION)?
            .execute(params![
                upstream,
                open.resource_type,
                open.id,
                open.requested_action,
                open.requested_event_id,
                open.requested_at,
                open.due_ms,
                open.attempts,
                open.last_event_id,
                open.last_status,
                open.last_failure,
                context,
                open.gap_event_id,
            ])?;
        Ok(())
    }

    /// Removes and returns the open deprovisioning of `id`: whoever gets it reports its
    /// closing, once, however many instances share the store.
    ///
    /// # Errors
    /// When the store fails.
    pub fn close_deprovision(
        &mut self,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<OpenDeprovision>, StateError> {
        self.deprovision(sql::CLOSE_DEPROVISION, resource_type, id)
    }

    /// The deprovisioning row `sql` (selecting or deleting by upstream, type and id) returns.
    fn deprovision(
        &mut self,
        sql: &'static str,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<OpenDeprovision>, StateError> {
        let upstream = self.upstream.as_str();
        let row = match &mut self.backend {
            Backend::Sqlite(conn) => conn
                .prepare_cached(sql)?
                .query_row(params![upstream, resource_type, id], deprovision_row)
                .optional()?,
            Backend::Postgres(pg) => pg.deprovision(sql, upstream, resource_type, id)?,
        };
        row.map(with_context).transpose()
    }

    /// Claims every open deprovisioning due by `now_ms` and not yet reported, giving each the
    /// id of the gap event that will report it. A row another instance claimed first is
    /// skipped (the claim is an `UPDATE ... WHERE gap_event_id IS NULL`, which a second
    /// writer finds already done), so each gap is reported once.
    ///
    /// # Errors
    /// When the store fails.
    pub fn claim_gaps(
        &mut self,
        now_ms: i64,
        mut new_event_id: impl FnMut() -> String,
    ) -> Result<Vec<OpenDeprovision>, StateError> {
        let upstream = self.upstream.as_str();
        let due = match &mut self.backend {
            Backend::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(sql::DUE_GAPS)?;
                let rows = stmt.query_map(params![upstream, now_ms], deprovision_row)?;
                rows.collect::<Result<Vec<_>, _>>()?
            }
            Backend::Postgres(pg) => pg.due_gaps(upstream, now_ms)?,
        };
        let mut claimed = Vec::new();
        for row in due {
            let mut open = with_context(row)?;
            let event_id = new_event_id();
            let args = [event_id.as_str(), upstream, &open.resource_type, &open.id];
            let changed = match &mut self.backend {
                Backend::Sqlite(conn) => conn.prepare_cached(sql::CLAIM_GAP)?.execute(args)? as u64,
                Backend::Postgres(pg) => pg.execute(sql::CLAIM_GAP, &args)?,
            };
            if changed == 1 {
                open.gap_event_id = Some(event_id);
                claimed.push(open);
            }
        }
        Ok(claimed)
    }

    /// The event of the last failed write with this fingerprint (same change to the same
    /// target), if it has not succeeded since.
    ///
    /// # Errors
    /// When the store fails.
    pub fn failed_write(&mut self, fingerprint: &str) -> Result<Option<String>, StateError> {
        let upstream = self.upstream.as_str();
        match &mut self.backend {
            Backend::Sqlite(conn) => Ok(conn
                .prepare_cached(sql::FAILED_WRITE)?
                .query_row(params![upstream, fingerprint], |row| row.get(0))
                .optional()?),
            Backend::Postgres(pg) => pg.failed_write(upstream, fingerprint),
        }
    }

    /// Remembers the last failed write of this fingerprint (`event_id`), or forgets it
    /// (`None`: the change finally succeeded).
    ///
    /// # Errors
    /// When the store fails.
    pub fn set_failed_write(
        &mut self,
        fingerprint: &str,
        event_id: Option<(&str, i64)>,
    ) -> Result<(), StateError> {
        let upstream = self.upstream.as_str();
        match (&mut self.backend, event_id) {
            (Backend::Sqlite(conn), Some((event_id, at_ms))) => conn
                .prepare_cached(sql::SET_FAILED_WRITE)?
                .execute(params![upstream, fingerprint, event_id, at_ms])?,
            (Backend::Sqlite(conn), None) => conn
                .prepare_cached(sql::FORGET_FAILED_WRITE)?
                .execute(params![upstream, fingerprint])?,
            (Backend::Postgres(pg), Some((event_id, at_ms))) => {
                pg.set_failed_write(upstream, fingerprint, event_id, at_ms)?;
                0
            }
            (Backend::Postgres(pg), None) => {
                pg.execute(sql::FORGET_FAILED_WRITE, &[upstream, fingerprint])?;
                0
            }
        };
        Ok(())
    }

    /// Marks the open deprovisioning of `id` as reported by the gap event `event_id` (a
    /// rebuild meeting a gap event in the files).
    ///
    /// # Errors
    /// When the store fails.
    pub fn mark_gap_reported(
        &mut self,
        resource_type: &str,
        id: &str,
        event_id: &str,
    ) -> Result<(), StateError> {
        let upstream = self.upstream.as_str();
        let args = [event_id, upstream, resource_type, id];
        match &mut self.backend {
            Backend::Sqlite(conn) => {
                conn.prepare_cached(sql::MARK_GAP_REPORTED)?.execute(args)?;
            }
            Backend::Postgres(pg) => {
                pg.execute(sql::MARK_GAP_REPORTED, &args)?;
            }
        }
        Ok(())
    }

    /// How many deprovisionings are open.
    ///
    /// # Errors
    /// When the store fails.
    pub fn open_deprovisions(&mut self) -> Result<i64, StateError> {
        let upstream = self.upstream.as_str();
        match &mut self.backend {
            Backend::Sqlite(conn) => Ok(conn
                .prepare_cached(sql::OPEN_DEPROVISIONS)?
                .query_row(params![upstream], |row| row.get(0))?),
            Backend::Postgres(pg) => pg.open_deprovisions(upstream),
        }
    }

    /// Forgets failed writes older than `before_ms`: a retry that late is a new attempt.
    ///
    /// # Errors
    /// When the store fails.
    pub fn forget_failed_writes(&mut self, before_ms: i64) -> Result<usize, StateError> {
        let upstream = self.upstream.as_str();
        match &mut self.backend {
            Backend::Sqlite(conn) => Ok(conn
                .prepare_cached(sql::FORGET_FAILED_WRITES)?
                .execute(params![upstream, before_ms])?),
            Backend::Postgres(pg) => pg.forget_failed_writes(upstream, before_ms),
        }
    }
}

/// [`Store::get`] in SQLite.
fn sqlite_get(
    conn: &Connection,
    upstream: &str,
    resource_type: &str,
    id: &str,
) -> Result<Option<Resource>, StateError> {
    let row = conn
        .prepare_cached(sql::GET)?
        .query_row(params![upstream, resource_type, id], |row| {
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

/// Lookups for `scimtap trace`, which reads a state file ([`Store::open_read_only`]): SQLite
/// only; a PostgreSQL store answers none.
impl Store {
    fn sqlite(&self) -> Option<&Connection> {
        match &self.backend {
            Backend::Sqlite(conn) => Some(conn),
            Backend::Postgres(_) => None,
        }
    }

    /// [`Store::get`] without changing anything (a read-only state file).
    ///
    /// # Errors
    /// When SQLite fails or a stored row is not valid JSON.
    pub fn peek(&self, resource_type: &str, id: &str) -> Result<Option<Resource>, StateError> {
        match self.sqlite() {
            Some(conn) => sqlite_get(conn, &self.upstream, resource_type, id),
            None => Ok(None),
        }
    }

    /// The ids of the resources of `resource_type` that `key` names: its id, its userName
    /// (without regard to ASCII case, as SCIM compares userNames) or its externalId.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn find(&self, resource_type: &str, key: &str) -> Result<Vec<String>, StateError> {
        let Some(conn) = self.sqlite() else {
            return Ok(Vec::new());
        };
        let mut stmt = conn.prepare_cached(
            "SELECT id FROM resources WHERE upstream = ?1 AND resource_type = ?2
               AND (id = ?3 OR user_name = ?3 COLLATE NOCASE OR external_id = ?3)
             ORDER BY updated_at, id",
        )?;
        let rows = stmt.query_map(params![self.upstream, resource_type, key], |row| row.get(0))?;
        Ok(rows.collect::<Result<Vec<String>, _>>()?)
    }

    /// The groups `member_id` belongs to as far as the state knows: (group id, displayName).
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn groups_of(&self, member_id: &str) -> Result<Vec<(String, Option<String>)>, StateError> {
        let Some(conn) = self.sqlite() else {
            return Ok(Vec::new());
        };
        let mut stmt = conn.prepare_cached(
            "SELECT m.group_id, r.display_name FROM memberships m
             LEFT JOIN resources r ON r.upstream = m.upstream AND r.resource_type = 'Group'
                                  AND r.id = m.group_id
             WHERE m.upstream = ?1 AND m.member_id = ?2 ORDER BY m.rowid",
        )?;
        let rows = stmt.query_map(params![self.upstream, member_id], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// When the state last learned something about `id` (RFC 3339, the event's timestamp).
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn updated_at(&self, resource_type: &str, id: &str) -> Result<Option<String>, StateError> {
        let Some(conn) = self.sqlite() else {
            return Ok(None);
        };
        Ok(conn
            .query_row(
                "SELECT updated_at FROM resources
                 WHERE upstream = ?1 AND resource_type = ?2 AND id = ?3",
                params![self.upstream, resource_type, id],
                |row| row.get(0),
            )
            .optional()?)
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
    for (index, sql) in sql::MIGRATIONS
        .iter()
        .enumerate()
        .skip(found.max(0) as usize)
    {
        let tx = conn.savepoint()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
