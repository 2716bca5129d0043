use super::*;

fn chain_lines(key: Option<&[u8]>, n: usize) -> Vec<Vec<u8>> {
    let mut chain = Chain::resume(key.map(<[u8]>::to_vec), None);
    let mut lines = vec![
        chain
            .record(RecordKind::Start, serde_json::json!({"genesis": true}))
            .1,
    ];
    for i in 0..n {
        lines.push(chain.seal(format!("{{\"event_id\":\"e{i}\",\"n\":{i}}}\n").into_bytes()));
    }
    lines.push(chain.record(RecordKind::Stop, serde_json::json!({})).1);
    lines
}

fn write(dir: &Path, lines: &[Vec<u8>]) -> PathBuf {
    let path = dir.join("audit.jsonl");
    std::fs::write(&path, lines.concat()).unwrap();
    path
}

#[test]
fn a_sealed_line_keeps_the_event_and_ends_with_the_chain() {
    let mut chain = Chain::resume(None, None);
    let line = chain.seal(b"{\"a\":1}\n".to_vec());
    let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(value["a"], 1);
    assert_eq!(value["integrity"]["seq"], 1);
    assert_eq!(value["integrity"]["prev_hash"], GENESIS_PREV);
    assert_eq!(value["instance"], chain.instance());
    assert!(line.ends_with(b"\"}}\n"));
    let second = chain.seal(b"{\"a\":2}\n".to_vec());
    let second: serde_json::Value = serde_json::from_slice(&second).unwrap();
    assert_eq!(second["integrity"]["prev_hash"], value["integrity"]["hash"]);
}

#[test]
fn an_intact_chain_verifies_and_a_key_matters() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &chain_lines(Some(b"0123456789abcdef"), 5));
    let ok = verify(
        std::slice::from_ref(&path),
        Some(b"0123456789abcdef"),
        &VerifyOptions::default(),
    )
    .unwrap();
    assert_eq!(ok.records, 7);
    assert!(ok.closed);
    let wrong = verify(
        &[path],
        Some(b"another key 12345"),
        &VerifyOptions::default(),
    );
    assert!(matches!(
        wrong,
        Err(Ok(Broken {
            kind: Breakage::Edited,
            seq: 1,
            ..
        }))
    ));
}

#[test]
fn head_of_file_reads_the_last_whole_line() {
    let dir = tempfile::tempdir().unwrap();
    let lines = chain_lines(None, 3);
    let path = write(dir.path(), &lines);
    let head = head_of_file(&path).unwrap().unwrap();
    assert_eq!(head.seq, 5);
    assert!(head.closed);
    // A torn tail is ignored.
    let mut torn = lines.concat();
    torn.extend_from_slice(b"{\"half");
    std::fs::write(&path, torn).unwrap();
    assert_eq!(head_of_file(&path).unwrap().unwrap().seq, 5);
}

#[test]
fn trail_files_are_told_from_other_formats_by_their_chain_fields() {
    let dir = tempfile::tempdir().unwrap();
    let trail = write(dir.path(), &chain_lines(None, 2));
    assert!(is_trail_file(&trail).unwrap());
    let ocsf = dir.path().join("ocsf.jsonl");
    std::fs::write(&ocsf, "{\"class_uid\":3001,\"metadata\":{}}\n").unwrap();
    assert!(!is_trail_file(&ocsf).unwrap());
    let cef = dir.path().join("cef.log");
    std::fs::write(&cef, "CEF:0|scimtap|scimtap|0.1|user.create|x|3|\n").unwrap();
    assert!(!is_trail_file(&cef).unwrap());
    // Just rotated: empty, still the trail's (it holds nothing to check).
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    assert!(is_trail_file(&empty).unwrap());
}

#[test]
fn a_record_kind_from_a_newer_version_is_checked_like_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = chain_lines(None, 1);
    // Replace the stop: seal a future kind, then a new stop.
    lines.pop();
    let head = parse_head(lines.last().unwrap().strip_suffix(b"\n").unwrap()).unwrap();
    let mut chain = Chain::resume(None, Some(&head));
    lines.push(chain.seal(b"{\"record\":\"integrity.future\",\"details\":{}}\n".to_vec()));
    lines.push(chain.record(RecordKind::Stop, serde_json::json!({})).1);
    let path = write(dir.path(), &lines);
    let ok = verify(&[path], None, &VerifyOptions::default()).unwrap();
    assert_eq!(ok.records, 4);
    assert!(ok.closed);
}

#[test]
fn rotated_files_sort_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "audit.jsonl",
        "audit.jsonl.1",
        "audit.jsonl.10",
        "audit.jsonl.2",
    ] {
        std::fs::write(dir.path().join(name), "").unwrap();
    }
    let names: Vec<String> = files_in(dir.path())
        .unwrap()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "audit.jsonl.10",
            "audit.jsonl.2",
            "audit.jsonl.1",
            "audit.jsonl"
        ]
    );
}
