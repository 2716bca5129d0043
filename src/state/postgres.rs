//! The PostgreSQL backend of [`super::Store`]: one database shared by every scimtap instance
//! serving one application behind a load balancer (`[state] url`).
//!
//! The sync `postgres` client drives tokio-postgres on a small runtime of its own, so it is
//! only ever used from the audit worker's thread or `scimtap state rebuild`, never from a
//! thread of the proxy's runtime (where starting or dropping that runtime would panic).
//!
//! A lost connection does not end the state: the call that finds it gone fails (the worker
//! counts it and writes the event without state), and a later call connects again, at most
//! once per back-off step (1 s, doubling to 10 s) so an unreachable database does not hold
//! the audit worker in connection attempts. Plain text only: no TLS (see docs/operations.md).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use postgres::{Client, NoTls, Statement};

use super::sql;
use super::store::{forget_memberships, OpenDeprovision, Resource, Row};
use super::StateError;
use crate::config::PostgresTarget;

/// PostgreSQL's migrations, recorded in `scimtap_schema`: `MIGRATIONS[n]` takes the schema
/// from version `n` to `n + 1`. The twin of SQLite's list (`store.rs`): never edit one that
/// has shipped; add another to both.
const MIGRATIONS: &[&str] = &[
    // 1: resources and memberships; memberships keep their order by an identity column
    // (SQLite uses its rowid).
    "CREATE TABLE resources (
        upstream      TEXT NOT NULL,
        resource_type TEXT NOT NULL,
        id            TEXT NOT NULL,
        user_name     TEXT,
        external_id   TEXT,
        display_name  TEXT,
        active        BOOLEAN,
        attributes    TEXT NOT NULL DEFAULT '{}',
        updated_at    TEXT NOT NULL,
        PRIMARY KEY (upstream, resource_type, id)
    );
    CREATE TABLE memberships (
        seq       BIGINT GENERATED ALWAYS AS IDENTITY,
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
        due_ms             BIGINT NOT NULL,
        attempts           BIGINT NOT NULL,
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
        at_ms       BIGINT NOT NULL,
        PRIMARY KEY (upstream, fingerprint)
    );",
    // 3: claims (PostgreSQL only): what each instance's audit worker has been handed and not
    // yet recorded, so another instance looking the same ids up waits for it
    // (`Store::claim`).
    "CREATE TABLE state_claims (
        upstream   TEXT NOT NULL,
        id         TEXT NOT NULL,
        instance   TEXT NOT NULL,
        ticket     BIGINT NOT NULL,
        started_at TEXT NOT NULL,
        claimed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (upstream, id, instance, ticket)
    );
    CREATE INDEX state_claims_by_ticket ON state_claims (instance, ticket);",
];

/// The PostgreSQL schema version this build writes.
pub const PG_SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The advisory lock migrations run under ("SCIMTAP" in ASCII): two instances starting
/// together migrate one after the other, and the second finds nothing left to do.
const MIGRATION_LOCK: i64 = 0x0053_4349_4D54_4150;

const MEMBERS: &str = "SELECT member_id FROM memberships WHERE upstream = $1 AND group_id = $2
    ORDER BY seq";

/// A claim older than this is from an instance that stopped (or lost the database) before
/// releasing it: nobody waits for it, and the next instance to connect deletes it.
const CLAIM_STALE_SECS: f64 = 10.0;

const CLAIM: &str = "INSERT INTO state_claims (upstream, id, instance, ticket, started_at)
    SELECT $1, unnest($2::TEXT[]), $3, $4, $5 ON CONFLICT DO NOTHING";
const RELEASE: &str = "DELETE FROM state_claims WHERE instance = $1 AND ticket = $2";
const CLAIMED_EARLIER: &str = "SELECT EXISTS (SELECT 1 FROM state_claims
    WHERE upstream = $1 AND id = ANY($2::TEXT[]) AND instance <> $3 AND started_at < $4
      AND claimed_at > now() - make_interval(secs => $5))";

/// The first wait after a failed connection attempt, and the longest.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// A connection to the shared database, reopened when lost.
pub(super) struct Postgres {
    target: PostgresTarget,
    /// This process's name in `state_claims` (a UUIDv7, new at each start).
    instance: String,
    conn: Option<Conn>,
    /// No connection attempt before this instant (after a failed one), and the wait after
    /// the next failure.
    retry_at: Option<Instant>,
    backoff: Duration,
}

/// An open connection and its prepared statements.
struct Conn {
    client: Client,
    prepared: HashMap<&'static str, Statement>,
}

impl Conn {
    /// `sql` prepared once per connection.
    fn statement(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.prepared.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql)?;
        self.prepared.insert(sql, statement.clone());
        Ok(statement)
    }
}

impl Postgres {
    /// Connects and migrates; a failure here is returned, not retried (startup refuses to run
    /// with a database it cannot reach or read).
    pub(super) fn connect(target: &PostgresTarget) -> Result<Postgres, StateError> {
        let conn = open(target)?;
        Ok(Postgres {
            target: target.clone(),
            instance: crate::clock::new_uuid_v7().to_string(),
            conn: Some(conn),
            retry_at: None,
            backoff: RETRY_FIRST,
        })
    }

    /// Runs `op` on the connection, connecting first when there is none (and the back-off
    /// allows). A failure that closed the connection drops it, so the next call reconnects.
    fn with<T>(
        &mut self,
        op: impl FnOnce(&mut Conn) -> Result<T, postgres::Error>,
    ) -> Result<T, StateError> {
        if self.conn.is_none() {
            if let Some(at) = self.retry_at {
                let now = Instant::now();
                if now < at {
                    return Err(StateError::Unavailable {
                        target: self.target.to_string(),
                        retry_in_ms: (at - now).as_millis(),
                    });
                }
            }
            match open(&self.target) {
                Ok(conn) => {
                    tracing::info!(store = %self.target, "Shadow state store connected again.");
                    self.conn = Some(conn);
                    self.retry_at = None;
                    self.backoff = RETRY_FIRST;
                }
                Err(error) => {
                    self.retry_at = Some(Instant::now() + self.backoff);
                    self.backoff = (self.backoff * 2).min(RETRY_MAX);
                    return Err(error);
                }
            }
        }
        let Some(conn) = self.conn.as_mut() else {
            unreachable!("connected just above");
        };
        match op(conn) {
            Ok(value) => Ok(value),
            Err(error) => {
                if error.is_closed() || conn.client.is_closed() {
                    tracing::warn!(store = %self.target, %error, "Shadow state store connection lost; reconnecting on the next event.");
                    self.drop_connection();
                }
                Err(StateError::Postgres(error))
            }
        }
    }

    /// Forgets the connection, dropping it on a thread of its own when called on an async
    /// runtime (dropping the client's own runtime there would panic).
    fn drop_connection(&mut self) {
        if let Some(conn) = self.conn.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = std::thread::Builder::new()
                    .name("state-pg-close".to_owned())
                    .spawn(move || drop(conn));
            }
        }
    }

    pub(super) fn schema_version(&mut self) -> Result<i64, StateError> {
        self.with(|conn| {
            let row = conn.client.query_one(
                "SELECT COALESCE(MAX(version), 0)::BIGINT FROM scimtap_schema",
                &[],
            )?;
            Ok(row.get(0))
        })
    }

    pub(super) fn get(
        &mut self,
        upstream: &str,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<Resource>, StateError> {
        let found = self.with(|conn| {
            let get = conn.statement(sql::GET)?;
            let Some(row) = conn
                .client
                .query_opt(&get, &[&upstream, &resource_type, &id])?
            else {
                return Ok(None);
            };
            let row: Row = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
            let members = if resource_type == "Group" {
                let members = conn.statement(MEMBERS)?;
                let rows = conn.client.query(&members, &[&upstream, &id])?;
                Some(rows.iter().map(|r| r.get(0)).collect())
            } else {
                None
            };
            Ok(Some((row, members)))
        })?;
        found
            .map(|(row, members)| Resource::from_row(resource_type, id, row, members))
            .transpose()
    }

    pub(super) fn member_name(
        &mut self,
        upstream: &str,
        id: &str,
    ) -> Result<Option<String>, StateError> {
        self.with(|conn| {
            let name = conn.statement(sql::MEMBER_NAME)?;
            let row = conn.client.query_opt(&name, &[&upstream, &id])?;
            Ok(row.and_then(|r| r.get::<_, Option<String>>(0)))
        })
    }

    pub(super) fn put(
        &mut self,
        upstream: &str,
        resource: &Resource,
        attributes: &str,
        updated_at: &str,
    ) -> Result<bool, StateError> {
        self.with(|conn| {
            let put = conn.statement(sql::PUT)?;
            let forget = conn.statement(sql::FORGET_MEMBERS)?;
            let add = conn.statement(sql::ADD_MEMBER)?;
            let mut tx = conn.client.transaction()?;
            let written = tx.execute(
                &put,
                &[
                    &upstream,
                    &resource.resource_type,
                    &resource.id,
                    &resource.user_name,
                    &resource.external_id,
                    &resource.display_name,
                    &resource.active,
                    &attributes,
                    &updated_at,
                ],
            )? > 0;
            if let (true, Some(members)) = (written, &resource.members) {
                tx.execute(&forget, &[&upstream, &resource.id])?;
                for member in members {
                    tx.execute(&add, &[&upstream, &resource.id, member])?;
                }
            }
            tx.commit()?;
            Ok(written)
        })
    }

    pub(super) fn remove(
        &mut self,
        upstream: &str,
        resource_type: &str,
        id: &str,
    ) -> Result<(), StateError> {
        self.with(|conn| {
            let remove = conn.statement(sql::REMOVE)?;
            let forget = conn.statement(forget_memberships(resource_type))?;
            let mut tx = conn.client.transaction()?;
            tx.execute(&remove, &[&upstream, &resource_type, &id])?;
            tx.execute(&forget, &[&upstream, &id])?;
            tx.commit()
        })
    }

    pub(super) fn count(&mut self, upstream: &str) -> Result<u64, StateError> {
        self.with(|conn| {
            let row = conn.client.query_one(sql::COUNT, &[&upstream])?;
            Ok(row.get::<_, i64>(0).unsigned_abs())
        })
    }

    pub(super) fn clear(&mut self, upstream: &str) -> Result<(), StateError> {
        self.with(|conn| {
            let mut tx = conn.client.transaction()?;
            for statement in sql::CLEAR {
                tx.execute(statement, &[&upstream])?;
            }
            tx.commit()
        })
    }
}

/// Claims: the hold that keeps instances sharing the database from reading state another
/// one is about to write (see `Store::claim`).
impl Postgres {
    pub(super) fn claim(
        &mut self,
        upstream: &str,
        ticket: i64,
        started_at: &str,
        ids: &[String],
    ) -> Result<(), StateError> {
        let instance = self.instance.clone();
        self.with(|conn| {
            let statement = conn.statement(CLAIM)?;
            conn.client.execute(
                &statement,
                &[&upstream, &ids, &instance, &ticket, &started_at],
            )?;
            Ok(())
        })
    }

    pub(super) fn release(&mut self, ticket: i64) -> Result<(), StateError> {
        let instance = self.instance.clone();
        self.with(|conn| {
            let statement = conn.statement(RELEASE)?;
            conn.client.execute(&statement, &[&instance, &ticket])?;
            Ok(())
        })
    }

    pub(super) fn claimed_earlier(
        &mut self,
        upstream: &str,
        ids: &[String],
        started_at: &str,
    ) -> Result<bool, StateError> {
        let instance = self.instance.clone();
        self.with(|conn| {
            let statement = conn.statement(CLAIMED_EARLIER)?;
            let row = conn.client.query_one(
                &statement,
                &[&upstream, &ids, &instance, &started_at, &CLAIM_STALE_SECS],
            )?;
            Ok(row.get(0))
        })
    }
}

/// The deprovisioning tracker's rows (`store.rs` has the SQLite side and the SQL).
impl Postgres {
    /// Runs a statement whose parameters are all text; returns the rows changed.
    pub(super) fn execute(&mut self, sql: &'static str, args: &[&str]) -> Result<u64, StateError> {
        self.with(|conn| {
            let statement = conn.statement(sql)?;
            let params: Vec<&(dyn postgres::types::ToSql + Sync)> = args
                .iter()
                .map(|a| a as &(dyn postgres::types::ToSql + Sync))
                .collect();
            conn.client.execute(&statement, &params)
        })
    }

    /// The deprovisioning row `sql` (selecting or deleting by upstream, type and id) returns.
    pub(super) fn deprovision(
        &mut self,
        sql: &'static str,
        upstream: &str,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<(OpenDeprovision, String)>, StateError> {
        self.with(|conn| {
            let statement = conn.statement(sql)?;
            let row = conn
                .client
                .query_opt(&statement, &[&upstream, &resource_type, &id])?;
            Ok(row.as_ref().map(deprovision_row))
        })
    }

    pub(super) fn save_deprovision(
        &mut self,
        upstream: &str,
        open: &OpenDeprovision,
        context: &str,
    ) -> Result<(), StateError> {
        let last_status = open.last_status.map(i32::from);
        self.with(|conn| {
            let statement = conn.statement(sql::SAVE_DEPROVISION)?;
            conn.client.execute(
                &statement,
                &[
                    &upstream,
                    &open.resource_type,
                    &open.id,
                    &open.requested_action,
                    &open.requested_event_id,
                    &open.requested_at,
                    &open.due_ms,
                    &open.attempts,
                    &open.last_event_id,
                    &last_status,
                    &open.last_failure,
                    &context,
                    &open.gap_event_id,
                ],
            )?;
            Ok(())
        })
    }

    pub(super) fn due_gaps(
        &mut self,
        upstream: &str,
        now_ms: i64,
    ) -> Result<Vec<(OpenDeprovision, String)>, StateError> {
        self.with(|conn| {
            let statement = conn.statement(sql::DUE_GAPS)?;
            let rows = conn.client.query(&statement, &[&upstream, &now_ms])?;
            Ok(rows.iter().map(deprovision_row).collect())
        })
    }

    pub(super) fn failed_write(
        &mut self,
        upstream: &str,
        fingerprint: &str,
    ) -> Result<Option<String>, StateError> {
        self.with(|conn| {
            let statement = conn.statement(sql::FAILED_WRITE)?;
            let row = conn
                .client
                .query_opt(&statement, &[&upstream, &fingerprint])?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    pub(super) fn set_failed_write(
        &mut self,
        upstream: &str,
        fingerprint: &str,
        event_id: &str,
        at_ms: i64,
    ) -> Result<(), StateError> {
        self.with(|conn| {
            let statement = conn.statement(sql::SET_FAILED_WRITE)?;
            conn.client
                .execute(&statement, &[&upstream, &fingerprint, &event_id, &at_ms])?;
            Ok(())
        })
    }

    pub(super) fn open_deprovisions(&mut self, upstream: &str) -> Result<i64, StateError> {
        self.with(|conn| {
            let statement = conn.statement(sql::OPEN_DEPROVISIONS)?;
            Ok(conn.client.query_one(&statement, &[&upstream])?.get(0))
        })
    }

    pub(super) fn forget_failed_writes(
        &mut self,
        upstream: &str,
        before_ms: i64,
    ) -> Result<usize, StateError> {
        self.with(|conn| {
            let statement = conn.statement(sql::FORGET_FAILED_WRITES)?;
            let n = conn.client.execute(&statement, &[&upstream, &before_ms])?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }
}

/// An [`OpenDeprovision`] and its context (JSON text) from a row of
/// [`sql::OPEN_DEPROVISION`]'s columns; the twin of SQLite's `store::deprovision_row`.
fn deprovision_row(row: &postgres::Row) -> (OpenDeprovision, String) {
    let last_status: Option<i32> = row.get(8);
    (
        OpenDeprovision {
            resource_type: row.get(0),
            id: row.get(1),
            requested_action: row.get(2),
            requested_event_id: row.get(3),
            requested_at: row.get(4),
            due_ms: row.get(5),
            attempts: row.get(6),
            last_event_id: row.get(7),
            last_status: last_status.and_then(|s| u16::try_from(s).ok()),
            last_failure: row.get(9),
            context: serde_json::Value::Null,
            gap_event_id: row.get(11),
        },
        row.get(10),
    )
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.drop_connection();
    }
}

/// Connects to `target` and applies the migrations it has not seen.
fn open(target: &PostgresTarget) -> Result<Conn, StateError> {
    let connect_error = |source| StateError::Connect {
        target: target.to_string(),
        source,
    };
    let mut client = target.config.connect(NoTls).map_err(connect_error)?;
    migrate(&mut client)?;
    // Claims an instance left behind when it stopped or lost the database.
    client.execute(
        "DELETE FROM state_claims WHERE claimed_at < now() - make_interval(secs => $1)",
        &[&(CLAIM_STALE_SECS * 6.0)],
    )?;
    Ok(Conn {
        client,
        prepared: HashMap::new(),
    })
}

/// Applies every migration the database has not seen, all in one transaction under
/// [`MIGRATION_LOCK`], each recorded in `scimtap_schema`.
fn migrate(client: &mut Client) -> Result<(), StateError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS scimtap_schema (
            version    BIGINT PRIMARY KEY,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )?;
    let found: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM scimtap_schema",
            &[],
        )?
        .get(0);
    if found > PG_SCHEMA_VERSION {
        return Err(StateError::NewerSchema {
            found,
            supported: PG_SCHEMA_VERSION,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO scimtap_schema (version) VALUES ($1)",
            &[&(index as i64 + 1)],
        )?;
    }
    tx.commit()?;
    Ok(())
}
