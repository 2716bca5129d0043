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
fn seeing_a_resource_again_unchanged_moves_only_its_time_forward() {
    let mut store = Store::in_memory("app:443").expect("store");
    let ann = Resource {
        resource_type: "User".to_owned(),
        id: "u1".to_owned(),
        user_name: Some("ann".to_owned()),
        ..Resource::default()
    };
    assert!(store.put(&ann, "2026-01-01T00:00:02.000Z").expect("put"));
    assert!(store.put(&ann, "2026-01-01T00:00:03.000Z").expect("touch"));
    // Older than the touch: not applied, although equal to what is held.
    assert!(!store.put(&ann, "2026-01-01T00:00:02.500Z").expect("stale"));
    let Backend::Sqlite(conn) = &store.backend else {
        unreachable!("in_memory is SQLite");
    };
    let at: String = conn
        .query_row(
            "SELECT updated_at FROM resources WHERE id = 'u1'",
            [],
            |row| row.get(0),
        )
        .expect("row");
    assert_eq!(at, "2026-01-01T00:00:03.000Z");
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
