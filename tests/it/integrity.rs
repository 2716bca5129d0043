//! The hash chain and `verify`: a property test mutates chains of random length (with
//! restarts and rotation across files) and checks that every mutation is caught at the right
//! seq with the right kind, and that every unmodified chain passes. Then the real binary:
//! events written by a running scimtap, across a restart, verify with `scimtap verify`, and
//! an edited file fails with the documented exit code.

use std::path::{Path, PathBuf};

use crate::support::*;
use proptest::prelude::*;
use scimtap::integrity::{verify, Breakage, Chain, RecordKind, StartAt, VerifyOptions};

const KEY: &[u8] = b"integrity-test-key-0123456789";

/// A chain of `events` events with a restart after each index in `restarts`, ending with a
/// clean stop. Line i has seq i + 1.
fn build_chain(key: Option<&[u8]>, events: usize, restarts: &[usize]) -> Vec<Vec<u8>> {
    let mut chain = Chain::resume(key.map(<[u8]>::to_vec), None);
    let mut lines = vec![
        chain
            .record(RecordKind::Start, serde_json::json!({"genesis": true}))
            .1,
    ];
    for i in 0..events {
        lines.push(
            chain.seal(
                format!("{{\"event_id\":\"ev-{i:04}\",\"request_id\":\"r{i}\",\"n\":{i}}}\n")
                    .into_bytes(),
            ),
        );
        if restarts.contains(&i) {
            // A new process resumes from the last line it finds.
            let head = chain.head(false);
            chain = Chain::resume(key.map(<[u8]>::to_vec), Some(&head));
            lines.push(
                chain
                    .record(
                        RecordKind::Start,
                        serde_json::json!({"genesis": false, "previous_stop": "unclean"}),
                    )
                    .1,
            );
        }
    }
    lines.push(chain.record(RecordKind::Stop, serde_json::json!({})).1);
    lines
}

/// Writes `lines` across files split at `cuts` (line indexes), oldest first.
fn write_files(
    dir: &Path,
    lines: &[Vec<u8>],
    cuts: &[usize],
    tail_cut: Option<usize>,
) -> Vec<PathBuf> {
    let mut bounds: Vec<usize> = cuts
        .iter()
        .copied()
        .filter(|c| *c > 0 && *c < lines.len())
        .collect();
    bounds.sort_unstable();
    bounds.dedup();
    bounds.push(lines.len());
    let mut files = Vec::new();
    let mut start = 0;
    let count = bounds.len();
    for (n, end) in bounds.into_iter().enumerate() {
        let path = dir.join(format!("audit.jsonl.{}", count - n - 1));
        let mut bytes = lines[start..end].concat();
        if n == count - 1 {
            if let Some(cut) = tail_cut {
                bytes.truncate(cut.min(bytes.len()));
            }
        }
        std::fs::write(&path, bytes).unwrap();
        files.push(path);
        start = end;
    }
    files
}

#[derive(Debug, Clone)]
enum Mutation {
    None,
    Edit {
        line: usize,
        at: usize,
    },
    Delete {
        line: usize,
    },
    Insert {
        at: usize,
        copy_of: usize,
    },
    Swap {
        a: usize,
        b: usize,
    },
    /// Cut the last file to this fraction of its bytes.
    Truncate {
        keep_permille: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => Just(Mutation::None),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(line, at)| Mutation::Edit { line, at }),
        2 => any::<usize>().prop_map(|line| Mutation::Delete { line }),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(at, copy_of)| Mutation::Insert { at, copy_of }),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Swap { a, b }),
        2 => (0usize..1000).prop_map(|keep_permille| Mutation::Truncate { keep_permille }),
    ]
}

/// Applies `mutation` to `lines`; returns the breakage `verify` must report (kind, seq), and
/// the byte length to cut the last file to.
fn apply(
    lines: &mut Vec<Vec<u8>>,
    mutation: &Mutation,
    last_file_start: usize,
) -> (Option<(Breakage, u64)>, Option<usize>) {
    let n = lines.len();
    match *mutation {
        Mutation::None => (None, None),
        Mutation::Edit { line, at } => {
            let line = line % n;
            // Inside the event or record, before the chain fields: one character changes.
            let body_end = find(&lines[line], b"\"instance\":").unwrap();
            let at = 1 + at % (body_end - 2);
            let byte = lines[line][at];
            lines[line][at] = if byte == b'x' { b'y' } else { b'x' };
            (Some((Breakage::Edited, line as u64 + 1)), None)
        }
        Mutation::Delete { line } => {
            let line = line % n;
            lines.remove(line);
            let kind = if line == n - 1 {
                Breakage::Truncated
            } else {
                Breakage::Deleted
            };
            (Some((kind, line as u64 + 1)), None)
        }
        Mutation::Insert { at, copy_of } => {
            let at = at % (n + 1);
            let copy_of = copy_of % n;
            let copy = lines[copy_of].clone();
            lines.insert(at, copy);
            // The copy placed right before its original is read as the original; the
            // original then shows up as the second copy, one position later.
            let seq = if copy_of == at { at + 2 } else { at + 1 };
            (Some((Breakage::Inserted, seq as u64)), None)
        }
        Mutation::Swap { a, b } => {
            let (a, b) = (a % n, b % n);
            if a == b {
                return (None, None);
            }
            let (a, b) = (a.min(b), a.max(b));
            lines.swap(a, b);
            (Some((Breakage::Reordered, a as u64 + 1)), None)
        }
        Mutation::Truncate { keep_permille } => {
            let last_bytes: usize = lines[last_file_start..].iter().map(Vec::len).sum();
            let keep = last_bytes * keep_permille / 1000;
            // The first line (of the whole chain) that is cut or missing.
            let mut offset = 0;
            let mut first_missing = n;
            for (i, line) in lines.iter().enumerate().skip(last_file_start) {
                if offset + line.len() > keep {
                    first_missing = i;
                    break;
                }
                offset += line.len();
            }
            (
                Some((Breakage::Truncated, first_missing as u64 + 1)),
                Some(keep),
            )
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn every_mutation_is_caught_at_its_seq_and_intact_chains_pass(
        events in 0usize..40,
        restarts in proptest::collection::vec(0usize..40, 0..3),
        cuts in proptest::collection::vec(1usize..60, 0..3),
        keyed in any::<bool>(),
        mutation in mutation(),
    ) {
        let key = keyed.then_some(KEY);
        let mut lines = build_chain(key, events, &restarts);
        let mut bounds: Vec<usize> = cuts.iter().copied().filter(|c| *c < lines.len()).collect();
        bounds.sort_unstable();
        let last_file_start = bounds.last().copied().unwrap_or(0);
        let (expected, tail_cut) = apply(&mut lines, &mutation, last_file_start);
        let dir = tempfile::tempdir().unwrap();
        // Truncation cuts the last file; other mutations keep the files whole.
        let files = write_files(dir.path(), &lines, &bounds, tail_cut);
        let result = verify(&files, key, &VerifyOptions::default());
        match expected {
            None => {
                let ok = result.unwrap_or_else(|e| panic!("intact chain refused: {e:?}"));
                prop_assert_eq!(ok.records as usize, lines.len());
                prop_assert!(ok.closed);
                prop_assert_eq!(ok.unclean_restarts as usize, restarts.iter().filter(|r| **r < events).collect::<std::collections::HashSet<_>>().len());
            }
            Some((kind, seq)) => match result {
                Err(Ok(broken)) => {
                    prop_assert_eq!((broken.kind, broken.seq), (kind, seq), "{}", broken);
                }
                other => prop_assert!(false, "{mutation:?} not caught: {other:?}"),
            },
        }
    }
}

#[test]
fn a_later_file_verifies_from_a_known_hash_or_anywhere() {
    let lines = build_chain(Some(KEY), 10, &[]);
    let dir = tempfile::tempdir().unwrap();
    let files = write_files(dir.path(), &lines, &[6], None);
    // Only the second file: the genesis is not there.
    let later = &files[1..];
    assert!(matches!(
        verify(later, Some(KEY), &VerifyOptions::default()),
        Err(Ok(b)) if b.kind == Breakage::Deleted && b.seq == 1
    ));
    let sealed: serde_json::Value = serde_json::from_slice(&lines[5]).unwrap();
    let known = sealed["integrity"]["hash"].as_str().unwrap().to_owned();
    let from_hash = VerifyOptions {
        start: StartAt::PrevHash(known),
        allow_open: false,
    };
    assert_eq!(verify(later, Some(KEY), &from_hash).unwrap().first_seq, 7);
    let wrong = VerifyOptions {
        start: StartAt::PrevHash("ab".repeat(32)),
        allow_open: false,
    };
    assert!(matches!(verify(later, Some(KEY), &wrong), Err(Ok(b)) if b.kind == Breakage::Inserted));
    let anywhere = VerifyOptions {
        start: StartAt::Anywhere,
        allow_open: false,
    };
    assert_eq!(verify(later, Some(KEY), &anywhere).unwrap().records, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_proxy_writes_a_chain_that_verifies_across_a_restart() {
    let upstream = Upstream::start(|_req: http::Request<hyper::body::Incoming>| async {
        http::Response::builder()
            .status(201)
            .body(full(r#"{"id":"u1","userName":"a@example.com"}"#))
            .unwrap()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("chain.key");
    std::fs::write(&key, "a-long-random-integrity-key-for-tests").unwrap();
    let audit = dir.path().join("audit.jsonl");
    let top = format!(
        "[integrity]\nkey_file = \"{}\"\ncheckpoint_interval_secs = 0.2\n",
        key.display()
    );
    let sinks = format!(
        "[[sinks]]\ntype = \"file\"\npath = \"{}\"\nmax_file_bytes = 4096\nkeep_files = 50\n",
        audit.display()
    );
    let config = ProxyConfig::new(upstream.url()).top(&top).sinks(&sinks);
    for run in 0..2 {
        let mut proxy = Proxy::start(config.clone());
        for n in 0..8 {
            let req = http::Request::post(proxy.url("/scim/v2/Users"))
                .header("content-type", "application/scim+json")
                .body(full(format!(
                    r#"{{"userName":"run{run}-{n}@example.com"}}"#
                )))
                .unwrap();
            http1_client().request(req).await.unwrap();
        }
        // Let a checkpoint or two happen.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert_eq!(proxy.stop(), 0);
    }
    let config_path = dir.path().join("verify.toml");
    std::fs::write(&config_path, config.render(&audit)).unwrap();
    let (code, out) = scimtap_verify(&config_path, &[dir.path()], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("OK: "), "{out}");
    assert!(out.contains("closed cleanly"), "{out}");
    let files = scimtap::integrity::files_in(dir.path()).unwrap();
    let jsonl: Vec<&PathBuf> = files
        .iter()
        .filter(|p| p.to_string_lossy().contains("audit.jsonl"))
        .collect();
    assert!(
        jsonl.len() > 2,
        "the small max_file_bytes rotated the file: {files:?}"
    );
    let all: String = jsonl
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let records: Vec<serde_json::Value> = all
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = records
        .iter()
        .filter_map(|r| r["record"].as_str())
        .collect();
    assert_eq!(kinds.iter().filter(|k| **k == "integrity.start").count(), 2);
    assert_eq!(kinds.iter().filter(|k| **k == "integrity.stop").count(), 2);
    assert!(kinds.contains(&"integrity.checkpoint"), "{kinds:?}");
    assert_eq!(
        records.iter().filter(|r| r.get("record").is_none()).count(),
        16
    );
    let instances: std::collections::HashSet<&str> = records
        .iter()
        .map(|r| r["instance"].as_str().unwrap())
        .collect();
    assert_eq!(
        instances.len(),
        1,
        "one chain per instance, across the restart"
    );
    let restart = records
        .iter()
        .filter(|r| r["record"] == "integrity.start")
        .nth(1)
        .unwrap();
    assert_eq!(restart["details"]["previous_stop"], "clean");

    // An edited event in the middle: exit 10, with its seq.
    let target = jsonl[1];
    let text = std::fs::read_to_string(target).unwrap();
    let edited = text.replacen("run", "RUN", 1);
    assert_ne!(edited, text);
    std::fs::write(target, edited).unwrap();
    let (code, out) = scimtap_verify(&config_path, &[dir.path()], &[]);
    assert_eq!(code, 10, "{out}");
    assert!(out.contains("edited"), "{out}");
}

/// OCSF, ECS and CEF file sinks writing beside the native trail: `verify DIR` checks the chain
/// in the native files, lists the others as skipped, and needs only the key file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_dir_skips_the_files_of_other_formats_beside_the_trail() {
    let upstream = Upstream::start(|_req: http::Request<hyper::body::Incoming>| async {
        http::Response::builder()
            .status(201)
            .body(full(r#"{"id":"u1","userName":"a@example.com"}"#))
            .unwrap()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let key = dir.path().join("chain.key");
    std::fs::write(&key, "a-long-random-integrity-key-for-tests").unwrap();
    let audit = logs.join("audit.jsonl");
    let mut sinks = format!(
        "[[sinks]]\ntype = \"file\"\npath = \"{}\"\nmax_file_bytes = 4096\nkeep_files = 50\n",
        audit.display()
    );
    for (name, format, file) in [
        ("ocsf", "ocsf", "ocsf.jsonl"),
        ("ecs", "ecs", "ecs.jsonl"),
        ("cef", "cef", "cef.log"),
    ] {
        sinks.push_str(&format!(
            "[[sinks]]\nname = \"{name}\"\ntype = \"file\"\nformat = \"{format}\"\npath = \"{}\"\n",
            logs.join(file).display()
        ));
    }
    let top = format!("[integrity]\nkey_file = \"{}\"\n", key.display());
    let config = ProxyConfig::new(upstream.url()).top(&top).sinks(&sinks);
    let mut proxy = Proxy::start(config.clone());
    for n in 0..12 {
        let req = http::Request::post(proxy.url("/scim/v2/Users"))
            .header("content-type", "application/scim+json")
            .body(full(format!(r#"{{"userName":"u{n}@example.com"}}"#)))
            .unwrap();
        http1_client().request(req).await.unwrap();
    }
    assert_eq!(proxy.stop(), 0);
    let key_arg = key.display().to_string();
    let out = run(scimtap(&["verify", "--key-file", &key_arg])
        .arg(&logs)
        .current_dir(dir.path()));
    let all = report(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("OK: 14 records"), "{all}");
    assert!(stdout.contains("closed cleanly"), "{all}");
    for skipped in ["ocsf.jsonl", "ecs.jsonl", "cef.log"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("skipped") && l.contains(skipped)),
            "{skipped} is listed as skipped: {all}"
        );
    }
    // With the configuration, the same.
    let config_path = dir.path().join("verify.toml");
    std::fs::write(&config_path, config.render(&audit)).unwrap();
    let (code, out) = scimtap_verify(&config_path, &[&logs], &[]);
    assert_eq!(code, 0, "{out}");

    // Tampering in the trail is still caught with the other files there.
    let trail = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("audit.jsonl")
                && std::fs::read_to_string(p).unwrap().contains("u3@")
        })
        .unwrap();
    let text = std::fs::read_to_string(&trail).unwrap();
    std::fs::write(&trail, text.replacen("u3@", "U3@", 1)).unwrap();
    let out = run(scimtap(&["verify", "--key-file", &key_arg]).arg(&logs));
    assert_eq!(out.status.code(), Some(10), "{}", report(&out));
    // A file named explicitly is checked as given, even without chain fields.
    let out = run(scimtap(&["verify", "--key-file", &key_arg]).arg(logs.join("ocsf.jsonl")));
    assert_eq!(out.status.code(), Some(10), "{}", report(&out));
}
