//! SQL text both store backends run as is (`$1`-style parameters, which SQLite reads as named
//! parameters numbered in order of first appearance, so the same positional values bind in
//! both; a unit test in `store.rs` checks each statement's order).

/// The `deprovisions` columns [`OpenDeprovision`](super::store::OpenDeprovision) is read from, in its order (a macro, so the
/// statements naming them stay `&'static str` for the backends' statement caches).
macro_rules! deprovision_columns {
    () => {
        "resource_type, id, requested_action, requested_event_id, requested_at, due_ms,
        attempts, last_event_id, last_status, last_failure, context, gap_event_id"
    };
}

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
/// SQLite only: the resource was seen again as stored; only `updated_at` moves (not back).
/// The time is `$1` because SQLite numbers parameters by first appearance.
pub const TOUCH: &str = "UPDATE resources SET updated_at = $1
    WHERE upstream = $2 AND resource_type = $3 AND id = $4 AND updated_at <= $1";
pub const FORGET_MEMBERS: &str = "DELETE FROM memberships WHERE upstream = $1 AND group_id = $2";
pub const FORGET_MEMBERSHIPS: &str =
    "DELETE FROM memberships WHERE upstream = $1 AND member_id = $2";
pub const ADD_MEMBER: &str = "INSERT INTO memberships (upstream, group_id, member_id)
    VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
pub const REMOVE: &str =
    "DELETE FROM resources WHERE upstream = $1 AND resource_type = $2 AND id = $3";
pub const COUNT: &str = "SELECT COUNT(*) FROM resources WHERE upstream = $1";
pub const CLEAR_MEMBERSHIPS: &str = "DELETE FROM memberships WHERE upstream = $1";
pub const CLEAR_RESOURCES: &str = "DELETE FROM resources WHERE upstream = $1";
pub const CLEAR_DEPROVISIONS: &str = "DELETE FROM deprovisions WHERE upstream = $1";
pub const CLEAR_FAILED_WRITES: &str = "DELETE FROM failed_writes WHERE upstream = $1";

// The deprovisioning tracker.
pub const OPEN_DEPROVISION: &str = concat!(
    "SELECT ",
    deprovision_columns!(),
    " FROM deprovisions WHERE upstream = $1 AND resource_type = $2 AND id = $3"
);
pub const SAVE_DEPROVISION: &str = concat!(
    "INSERT INTO deprovisions (upstream, ",
    deprovision_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
    ON CONFLICT (upstream, resource_type, id) DO UPDATE SET
        attempts = excluded.attempts, last_event_id = excluded.last_event_id,
        last_status = excluded.last_status, last_failure = excluded.last_failure,
        context = excluded.context"
);
pub const CLOSE_DEPROVISION: &str = concat!(
    "DELETE FROM deprovisions WHERE upstream = $1 AND resource_type = $2 AND id = $3
    RETURNING ",
    deprovision_columns!()
);
pub const DUE_GAPS: &str = concat!(
    "SELECT ",
    deprovision_columns!(),
    " FROM deprovisions WHERE upstream = $1 AND gap_event_id IS NULL AND due_ms <= $2
    ORDER BY due_ms"
);
/// Parameters: gap event id, upstream, resource type, id (`$1` first: see above).
pub const CLAIM_GAP: &str = "UPDATE deprovisions SET gap_event_id = $1
    WHERE upstream = $2 AND resource_type = $3 AND id = $4 AND gap_event_id IS NULL";
/// Parameters as [`CLAIM_GAP`]'s.
pub const MARK_GAP_REPORTED: &str = "UPDATE deprovisions SET gap_event_id = $1
    WHERE upstream = $2 AND resource_type = $3 AND id = $4";
pub const OPEN_DEPROVISIONS: &str = "SELECT COUNT(*) FROM deprovisions WHERE upstream = $1";
pub const FAILED_WRITE: &str =
    "SELECT event_id FROM failed_writes WHERE upstream = $1 AND fingerprint = $2";
pub const SET_FAILED_WRITE: &str =
    "INSERT INTO failed_writes (upstream, fingerprint, event_id, at_ms)
    VALUES ($1, $2, $3, $4)
    ON CONFLICT (upstream, fingerprint) DO UPDATE SET
        event_id = excluded.event_id, at_ms = excluded.at_ms";
pub const FORGET_FAILED_WRITE: &str =
    "DELETE FROM failed_writes WHERE upstream = $1 AND fingerprint = $2";
pub const FORGET_FAILED_WRITES: &str =
    "DELETE FROM failed_writes WHERE upstream = $1 AND at_ms < $2";

/// What `clear` runs: everything known of one upstream.
pub const CLEAR: [&str; 4] = [
    CLEAR_MEMBERSHIPS,
    CLEAR_RESOURCES,
    CLEAR_DEPROVISIONS,
    CLEAR_FAILED_WRITES,
];

/// Every statement above, for the test that SQLite binds them as PostgreSQL does.
#[cfg(test)]
pub const ALL: &[&str] = &[
    GET,
    MEMBER_NAME,
    PUT,
    TOUCH,
    FORGET_MEMBERS,
    FORGET_MEMBERSHIPS,
    ADD_MEMBER,
    REMOVE,
    COUNT,
    CLEAR_MEMBERSHIPS,
    CLEAR_RESOURCES,
    CLEAR_DEPROVISIONS,
    CLEAR_FAILED_WRITES,
    OPEN_DEPROVISION,
    SAVE_DEPROVISION,
    CLOSE_DEPROVISION,
    DUE_GAPS,
    CLAIM_GAP,
    MARK_GAP_REPORTED,
    OPEN_DEPROVISIONS,
    FAILED_WRITE,
    SET_FAILED_WRITE,
    FORGET_FAILED_WRITE,
    FORGET_FAILED_WRITES,
];

/// SQLite's migrations: `MIGRATIONS[n]` takes the schema from version `n` to `n + 1`. Never
/// edit one that has shipped; add another (and its PostgreSQL twin in `postgres.rs`).
pub const MIGRATIONS: &[&str] = &[
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
