//! The SQLite store behind the shadow state: one row per (upstream, resource type, id), one
//! per group membership. Only the audit worker (a dedicated thread) and `scimtap state
//! rebuild` open it; nothing here is called from the async runtime.
//!
//! Schema changes are ordered migrations, each applied once in a transaction and recorded in
//! SQLite's `user_version`, so a file written by an older scimtap is brought forward on open
//! and one written by a newer scimtap is refused rather than misread.

use std::path::Path;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde_json::{Map, Value};

use super::StateError;

/// Ordered migrations: `MIGRATIONS[n]` takes the schema from version `n` to `n + 1`. Never
/// edit one that has shipped; add another.
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
    // 2: the deprovisioning tracker, and failed writes a retry links to (`retry_of`).
    "CREATE TABLE deprovisions (
        upstream           TEXT NOT NULL,
        resource_type      TEXT NOT NULL,
        id                 TEXT NOT NULL,
        requested_action   TEXT NOT NULL,
        requested_event_id TEXT NOT NULL,
        requested_at       TEXT NOT NULL,
        due_ms             INTEGER NOT NULL,
        attempts           INTEGER NOT NULL,
        last_event_id      TEXT NOT NULL,
        last_status        INTEGER,
        last_failure       TEXT,
        context            TEXT NOT NULL,
        gap_event_id       TEXT,
        PRIMARY KEY (upstream, resource_type, id)
    );
    CREATE INDEX deprovisions_due ON deprovisions (upstream, due_ms);
    CREATE TABLE failed_writes (
        upstream    TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        event_id    TEXT NOT NULL,
        at_ms       INTEGER NOT NULL,
        PRIMARY KEY (upstream, fingerprint)
    );",
];

/// The schema version this build writes.
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

const DEPROVISION_COLUMNS: &str = "resource_type, id, requested_action, requested_event_id,
    requested_at, due_ms, attempts, last_event_id, last_status, last_failure, context,
    gap_event_id";

fn deprovision_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(OpenDeprovision, String)> {
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

fn with_context(
    (mut open, context): (OpenDeprovision, String),
) -> Result<OpenDeprovision, StateError> {
    open.context = serde_json::from_str(&context)?;
    Ok(open)
}

/// The shadow state of one upstream.
pub struct Store {
    conn: Connection,
    upstream: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl Store {
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
        Ok(Store { conn, upstream })
    }

    fn with_connection(mut conn: Connection, upstream: &str) -> Result<Store, StateError> {
        migrate(&mut conn)?;
        Ok(Store {
            conn,
            upstream: upstream.to_owned(),
        })
    }

    /// The schema version of the open file.
    ///
    /// # Errors
    /// When SQLite cannot answer.
    pub fn schema_version(&self) -> Result<i64, StateError> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))?)
    }

    /// What the state knows of `id`, with a group's members.
    ///
    /// # Errors
    /// When SQLite fails or a stored row is not valid JSON.
    pub fn get(&self, resource_type: &str, id: &str) -> Result<Option<Resource>, StateError> {
        let row = self
            .conn
            .query_row(
                "SELECT user_name, external_id, display_name, active, attributes
                 FROM resources WHERE upstream = ?1 AND resource_type = ?2 AND id = ?3",
                params![self.upstream, resource_type, id],
                |row| {
                    Ok((
                        row.get::<_, Option<String>>(0)?,
                        row.get::<_, Option<String>>(1)?,
                        row.get::<_, Option<String>>(2)?,
                        row.get::<_, Option<bool>>(3)?,
                        row.get::<_, String>(4)?,
                    ))
                },
            )
            .optional()?;
        let Some((user_name, external_id, display_name, active, attributes)) = row else {
            return Ok(None);
        };
        let attributes = match serde_json::from_str::<Value>(&attributes)? {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let members = if resource_type == "Group" {
            Some(self.members(id)?)
        } else {
            None
        };
        Ok(Some(Resource {
            resource_type: resource_type.to_owned(),
            id: id.to_owned(),
            user_name,
            external_id,
            display_name,
            active,
            attributes,
            members,
        }))
    }

    fn members(&self, group_id: &str) -> Result<Vec<String>, StateError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT member_id FROM memberships WHERE upstream = ?1 AND group_id = ?2
             ORDER BY rowid",
        )?;
        let rows = stmt.query_map(params![self.upstream, group_id], |row| row.get(0))?;
        Ok(rows.collect::<Result<Vec<String>, _>>()?)
    }

    /// The name to show for a member id: a user's userName, else a group's displayName.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn member_name(&self, id: &str) -> Result<Option<String>, StateError> {
        Ok(self
            .conn
            .query_row(
                "SELECT COALESCE(user_name, display_name) FROM resources
                 WHERE upstream = ?1 AND id = ?2 AND resource_type IN ('User', 'Group')
                 ORDER BY resource_type = 'User' DESC LIMIT 1",
                params![self.upstream, id],
                |row| row.get::<_, Option<String>>(0),
            )
            .optional()?
            .flatten())
    }

    /// The ids of the resources of `resource_type` that `key` names: its id, its userName
    /// (without regard to ASCII case, as SCIM compares userNames) or its externalId.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn find(&self, resource_type: &str, key: &str) -> Result<Vec<String>, StateError> {
        let mut stmt = self.conn.prepare_cached(
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
        let mut stmt = self.conn.prepare_cached(
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
        Ok(self
            .conn
            .query_row(
                "SELECT updated_at FROM resources
                 WHERE upstream = ?1 AND resource_type = ?2 AND id = ?3",
                params![self.upstream, resource_type, id],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// Writes `resource` (and, when known, a group's whole member list) in one transaction.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn put(&mut self, resource: &Resource, updated_at: &str) -> Result<(), StateError> {
        let attributes = serde_json::to_string(&resource.attributes)?;
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO resources (upstream, resource_type, id, user_name, external_id,
                                    display_name, active, attributes, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (upstream, resource_type, id) DO UPDATE SET
                user_name = excluded.user_name, external_id = excluded.external_id,
                display_name = excluded.display_name, active = excluded.active,
                attributes = excluded.attributes, updated_at = excluded.updated_at",
            params![
                self.upstream,
                resource.resource_type,
                resource.id,
                resource.user_name,
                resource.external_id,
                resource.display_name,
                resource.active,
                attributes,
                updated_at,
            ],
        )?;
        if let Some(members) = &resource.members {
            tx.execute(
                "DELETE FROM memberships WHERE upstream = ?1 AND group_id = ?2",
                params![self.upstream, resource.id],
            )?;
            for member in members {
                tx.execute(
                    "INSERT OR IGNORE INTO memberships (upstream, group_id, member_id)
                     VALUES (?1, ?2, ?3)",
                    params![self.upstream, resource.id, member],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Forgets a deleted resource, and its memberships on either side.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn remove(&mut self, resource_type: &str, id: &str) -> Result<(), StateError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "DELETE FROM resources WHERE upstream = ?1 AND resource_type = ?2 AND id = ?3",
            params![self.upstream, resource_type, id],
        )?;
        let side = if resource_type == "Group" {
            "group_id"
        } else {
            "member_id"
        };
        tx.execute(
            &format!("DELETE FROM memberships WHERE upstream = ?1 AND {side} = ?2"),
            params![self.upstream, id],
        )?;
        tx.commit()?;
        Ok(())
    }
}

impl Store {
    /// The open deprovisioning of `id`, if any.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn open_deprovision(
        &self,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<OpenDeprovision>, StateError> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {DEPROVISION_COLUMNS} FROM deprovisions
                     WHERE upstream = ?1 AND resource_type = ?2 AND id = ?3"
                ),
                params![self.upstream, resource_type, id],
                deprovision_row,
            )
            .optional()?
            .map(with_context)
            .transpose()
    }

    /// Records (or updates) an open deprovisioning.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn save_deprovision(&mut self, open: &OpenDeprovision) -> Result<(), StateError> {
        self.conn.execute(
            &format!(
                "INSERT INTO deprovisions (upstream, {DEPROVISION_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT (upstream, resource_type, id) DO UPDATE SET
                    attempts = excluded.attempts, last_event_id = excluded.last_event_id,
                    last_status = excluded.last_status, last_failure = excluded.last_failure,
                    context = excluded.context"
            ),
            params![
                self.upstream,
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
                serde_json::to_string(&open.context)?,
                open.gap_event_id,
            ],
        )?;
        Ok(())
    }

    /// Removes and returns the open deprovisioning of `id`: whoever gets it reports its
    /// closing, once, however many instances share the store.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn close_deprovision(
        &mut self,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<OpenDeprovision>, StateError> {
        self.conn
            .query_row(
                &format!(
                    "DELETE FROM deprovisions
                     WHERE upstream = ?1 AND resource_type = ?2 AND id = ?3
                     RETURNING {DEPROVISION_COLUMNS}"
                ),
                params![self.upstream, resource_type, id],
                deprovision_row,
            )
            .optional()?
            .map(with_context)
            .transpose()
    }

    /// Claims every open deprovisioning due by `now_ms` and not yet reported, giving each the
    /// id of the gap event that will report it. A row another instance claimed first is
    /// skipped, so each gap is reported once.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn claim_gaps(
        &mut self,
        now_ms: i64,
        mut new_event_id: impl FnMut() -> String,
    ) -> Result<Vec<OpenDeprovision>, StateError> {
        let due = {
            let mut stmt = self.conn.prepare_cached(&format!(
                "SELECT {DEPROVISION_COLUMNS} FROM deprovisions
                 WHERE upstream = ?1 AND gap_event_id IS NULL AND due_ms <= ?2
                 ORDER BY due_ms"
            ))?;
            let rows = stmt.query_map(params![self.upstream, now_ms], deprovision_row)?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        let mut claimed = Vec::new();
        for row in due {
            let mut open = with_context(row)?;
            let event_id = new_event_id();
            let changed = self.conn.execute(
                "UPDATE deprovisions SET gap_event_id = ?4
                 WHERE upstream = ?1 AND resource_type = ?2 AND id = ?3
                   AND gap_event_id IS NULL",
                params![self.upstream, open.resource_type, open.id, event_id],
            )?;
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
    /// When SQLite fails.
    pub fn failed_write(&self, fingerprint: &str) -> Result<Option<String>, StateError> {
        Ok(self
            .conn
            .query_row(
                "SELECT event_id FROM failed_writes WHERE upstream = ?1 AND fingerprint = ?2",
                params![self.upstream, fingerprint],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// Remembers the last failed write of this fingerprint (`event_id`), or forgets it
    /// (`None`: the change finally succeeded).
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn set_failed_write(
        &mut self,
        fingerprint: &str,
        event_id: Option<(&str, i64)>,
    ) -> Result<(), StateError> {
        match event_id {
            Some((event_id, at_ms)) => self.conn.execute(
                "INSERT INTO failed_writes (upstream, fingerprint, event_id, at_ms)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (upstream, fingerprint) DO UPDATE SET
                    event_id = excluded.event_id, at_ms = excluded.at_ms",
                params![self.upstream, fingerprint, event_id, at_ms],
            )?,
            None => self.conn.execute(
                "DELETE FROM failed_writes WHERE upstream = ?1 AND fingerprint = ?2",
                params![self.upstream, fingerprint],
            )?,
        };
        Ok(())
    }

    /// Marks the open deprovisioning of `id` as reported by the gap event `event_id` (a
    /// rebuild meeting a gap event in the files).
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn mark_gap_reported(
        &mut self,
        resource_type: &str,
        id: &str,
        event_id: &str,
    ) -> Result<(), StateError> {
        self.conn.execute(
            "UPDATE deprovisions SET gap_event_id = ?4
             WHERE upstream = ?1 AND resource_type = ?2 AND id = ?3",
            params![self.upstream, resource_type, id, event_id],
        )?;
        Ok(())
    }

    /// How many deprovisionings are open.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn open_deprovisions(&self) -> Result<i64, StateError> {
        Ok(self.conn.query_row(
            "SELECT count(*) FROM deprovisions WHERE upstream = ?1",
            params![self.upstream],
            |row| row.get(0),
        )?)
    }

    /// Forgets failed writes older than `before_ms`: a retry that late is a new attempt.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn forget_failed_writes(&mut self, before_ms: i64) -> Result<usize, StateError> {
        Ok(self.conn.execute(
            "DELETE FROM failed_writes WHERE upstream = ?1 AND at_ms < ?2",
            params![self.upstream, before_ms],
        )?)
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
