//! Reading the audit trail back: the events of native audit files, for the commands that
//! replay or search them (`scimtap state rebuild`, `scimtap trace`).
//!
//! One reader for both, so they agree on what an event is: a JSON line with a `scim` object
//! and no `record` member. Integrity records (`integrity.start`, `checkpoint`, `reload`,
//! `stop`, `audit.intent`), blank lines and lines that are not JSON (a cut last line) are
//! skipped and counted. So are the lines of other formats' sinks sharing a directory: ECS
//! keeps `scim` under `scimtap`, OCSF has none, CEF is not JSON.
//!
//! Files are in order of completion, not arrival; [`in_order`] sorts by `timestamp`. A
//! directory stands for its audit files (`*.jsonl`, `*.log` and their rotations), as for
//! `scimtap verify`. The file sink never compresses what it rotates; a file compressed by
//! something else (logrotate's `compress`) is refused with a hint rather than skipped as
//! garbage, so a search never silently misses a day.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Why the trail could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is gzip-compressed: decompress it first (gunzip -k)", path.display())]
    Compressed { path: PathBuf },
}

/// The files `paths` stand for: a file as given, a directory as its audit files
/// ([`crate::integrity::files_in`]).
///
/// # Errors
/// [`ReadError::Io`] when a directory cannot be listed.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ReadError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let found = crate::integrity::files_in(path).map_err(|source| ReadError::Io {
                path: path.clone(),
                source,
            })?;
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// The event on `line`, or `None` for an integrity record, a blank line or anything else that
/// is not a native event.
pub fn event_of_line(line: &[u8]) -> Option<Value> {
    serde_json::from_slice::<Value>(line)
        .ok()
        .filter(|v| v.get("record").is_none() && v.get("scim").is_some_and(Value::is_object))
}

/// Calls `each` with every event of `files`, in file order; returns how many lines were
/// skipped. Streams: nothing is kept between lines.
///
/// # Errors
/// [`ReadError`] when a file cannot be opened or read, or is compressed.
pub fn for_each_event(files: &[&Path], mut each: impl FnMut(Value)) -> Result<u64, ReadError> {
    let mut skipped = 0;
    for path in files {
        let io = |source| ReadError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut reader = BufReader::new(std::fs::File::open(path).map_err(io)?);
        if reader.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]) {
            return Err(ReadError::Compressed {
                path: path.to_path_buf(),
            });
        }
        let mut line = Vec::new();
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).map_err(io)? == 0 {
                break;
            }
            match event_of_line(&line) {
                Some(event) => each(event),
                None => skipped += 1,
            }
        }
    }
    Ok(skipped)
}

/// Sorts events by `timestamp` (arrival), keeping file order among equal times (the
/// operations of one Bulk request), and drops repeats of an `event_id` (the same file given
/// twice, or two native sinks writing one directory). Returns how many were dropped.
pub fn in_order(events: &mut Vec<Value>) -> u64 {
    // RFC 3339 UTC timestamps of one width sort as text.
    events.sort_by(|a, b| timestamp(a).cmp(timestamp(b)));
    let before = events.len();
    let mut seen = HashSet::new();
    events.retain(|e| match e.get("event_id").and_then(Value::as_str) {
        Some(id) => seen.insert(id.to_owned()),
        None => true,
    });
    (before - events.len()) as u64
}

fn timestamp(event: &Value) -> &str {
    event
        .get("timestamp")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Hand-written event lines for the unit tests of the commands that read the trail.
#[cfg(test)]
pub(crate) mod testing {
    use serde_json::{json, Value};

    /// An event line: `patch` laid over an event of the documented shape (Okta, success, 200,
    /// a User with nothing set).
    pub(crate) fn line(patch: Value) -> String {
        let mut event = json!({
            "schema_version": "1.4",
            "event_id": null,
            "timestamp": "2026-11-22T09:00:00.000Z",
            "duration_ms": 1.0,
            "request_id": "req",
            "outcome": "success",
            "outcome_reason": null,
            "client": {"address": "198.51.100.23", "port": 40000, "tls": true,
                       "certificate_subject": null, "user_agent": "Okta SCIM Client 1.0.0",
                       "auth_scheme": "bearer", "token_fingerprint": "26929eeeeee5e900",
                       "name": null, "idp": "okta"},
            "http": {"version": "HTTP/1.1", "method": "PATCH", "path": "/scim/v2/Users/x",
                     "query": null, "status": 200},
            "scim": {
                "endpoint": "Users", "operation": "patch", "resource_type": "User",
                "target": {"id": null, "external_id": null, "user_name": null, "display_name": null},
                "actions": [],
                "changes": {"attributes": [], "patch_ops": [], "members_added": [],
                            "members_removed": [], "members_replaced": null,
                            "requested": {"external_id": null, "user_name": null, "display_name": null}},
                "filter": null, "bulk": null, "error": null, "parse_error": null, "note": null
            },
            "failure": null,
            "instance": "019a8f00-0000-7000-8000-000000000000",
            "integrity": {"seq": 1, "prev_hash": "0", "hash": "0"}
        });
        merge(&mut event, patch);
        if event["event_id"].is_null() {
            event["event_id"] = json!(format!("ev-{}", event["timestamp"].as_str().unwrap()));
        }
        event.to_string()
    }

    /// Lays `patch` over `into`: objects member by member, anything else replaced.
    pub(crate) fn merge(into: &mut Value, patch: Value) {
        match (into, patch) {
            (Value::Object(into), Value::Object(patch)) => {
                for (k, v) in patch {
                    merge(into.entry(k).or_insert(Value::Null), v);
                }
            }
            (into, patch) => *into = patch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, lines: &[&str]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    }

    const RECORD: &str = r#"{"schema_version":"1.4","record":"integrity.start","scim":{},"timestamp":"2026-11-22T09:00:00.000Z"}"#;

    fn event(id: &str, at: &str) -> String {
        format!(r#"{{"event_id":"{id}","timestamp":"{at}","scim":{{"actions":[]}}}}"#)
    }

    #[test]
    fn skips_records_blank_and_broken_lines_and_sorts_by_timestamp() {
        let dir = tempfile::tempdir().unwrap();
        let late = event("b", "2026-11-22T09:00:02.000Z");
        let early = event("a", "2026-11-22T09:00:01.000Z");
        let file = write(
            dir.path(),
            "audit.jsonl",
            &[RECORD, &late, "", &early, "{\"cut"],
        );
        let mut events = Vec::new();
        let skipped = for_each_event(&[&file], |e| events.push(e)).unwrap();
        assert_eq!(skipped, 3);
        assert_eq!(in_order(&mut events), 0);
        let ids: Vec<&str> = events
            .iter()
            .map(|e| e["event_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["a", "b"]);
    }

    #[test]
    fn the_same_event_read_twice_counts_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "audit.jsonl",
            &[&event("a", "2026-11-22T09:00:01.000Z")],
        );
        let mut events = Vec::new();
        for_each_event(&[&file, &file], |e| events.push(e)).unwrap();
        assert_eq!(in_order(&mut events), 1);
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn a_directory_stands_for_its_audit_files_and_rotations() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "audit.jsonl", &[]);
        write(dir.path(), "audit.jsonl.1", &[]);
        write(dir.path(), "proxy.toml", &[]);
        let files = expand(&[dir.path().to_path_buf()]).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["audit.jsonl.1", "audit.jsonl"]);
    }

    #[test]
    fn a_compressed_file_is_refused_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl.2.gz");
        std::fs::write(&path, [0x1f, 0x8b, 8, 0]).unwrap();
        let error = for_each_event(&[&path], |_| {}).unwrap_err();
        assert!(matches!(error, ReadError::Compressed { .. }), "{error}");
        assert!(error.to_string().contains("gunzip"), "{error}");
    }
}
