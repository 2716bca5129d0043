use super::*;

/// A writer on `path` that rotates past `max_file_bytes` (0: never) keeping `keep_files`.
fn writer(path: impl Into<PathBuf>, max_file_bytes: u64, keep_files: u32) -> FileWriter {
    FileWriter::open(&FileSinkConfig {
        path: path.into(),
        max_file_bytes,
        keep_files,
    })
    .unwrap()
}

/// A fresh directory and the path of the audit file in it.
fn audit_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    (dir, path)
}

fn line(n: usize) -> Record {
    Record::from(bytes::Bytes::from(format!("{{\"n\":{n:04}}}\n")))
}

#[test]
fn rotates_by_rename_and_keeps_n_files() {
    let (_dir, path) = audit_file();
    let line_len = line(0).len() as u64;
    let mut w = writer(path.clone(), line_len * 3, 2);
    let lines: Vec<Record> = (0..10).map(line).collect();
    w.write_batch(&lines[..4]).unwrap();
    w.write_batch(&lines[4..]).unwrap();
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    // 10 lines, 3 per file: current holds 9, .1 holds 6-8, .2 holds 3-5, 0-2 deleted.
    assert_eq!(read(&path), "{\"n\":0009}\n");
    assert_eq!(
        read(&w.rotated(1)),
        "{\"n\":0006}\n{\"n\":0007}\n{\"n\":0008}\n"
    );
    assert_eq!(
        read(&w.rotated(2)),
        "{\"n\":0003}\n{\"n\":0004}\n{\"n\":0005}\n"
    );
    assert!(!w.rotated(3).exists());
}

#[test]
fn whole_lines_prefix_stops_at_the_last_complete_line() {
    let buf = b"{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n";
    assert_eq!(whole_lines_prefix(buf, 0), (0, 0));
    assert_eq!(whole_lines_prefix(buf, 5), (0, 0));
    assert_eq!(whole_lines_prefix(buf, 8), (8, 1));
    assert_eq!(whole_lines_prefix(buf, 12), (8, 1));
    assert_eq!(whole_lines_prefix(buf, buf.len()), (buf.len(), 3));
    assert_eq!(whole_lines_prefix(buf, 1000), (buf.len(), 3));
}

#[test]
fn a_failed_write_reports_no_lines_written() {
    // /dev/full fails every write with ENOSPC, like a full disk.
    let mut w = writer(PathBuf::from("/dev/full"), 0, 1);
    let err = w.write_batch(&[line(1), line(2)]).unwrap_err();
    assert_eq!(err.delivered, crate::sinks::Delivered::Leading(0));
    assert!(matches!(err.error, SinkError::Write(_)));
}

#[test]
fn a_failed_rotation_keeps_appending_to_the_current_file() {
    let (dir, path) = audit_file();
    // A non-empty directory where the oldest rotated file goes: it cannot be removed.
    std::fs::create_dir_all(dir.path().join("audit.jsonl.1/blocker")).unwrap();
    let line_len = line(0).len() as u64;
    let mut w = writer(path.clone(), line_len * 2, 1);
    let lines: Vec<Record> = (0..5).map(line).collect();
    w.write_batch(&lines)
        .expect("events are written even when rotation fails");
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 5);
}

#[test]
fn external_truncation_is_noticed_and_never_padded() {
    let (_dir, path) = audit_file();
    let mut w = writer(path.clone(), 0, 1);
    w.write_batch(&[line(1), line(2)]).unwrap();
    // copytruncate-style: the file is emptied under our feet.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    w.write_batch(&[line(3)]).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"n\":0003}\n");
}

#[test]
fn reopen_follows_an_external_rename() {
    let (dir, path) = audit_file();
    let mut w = writer(path.clone(), 0, 1);
    w.write_batch(&[line(1)]).unwrap();
    std::fs::rename(&path, dir.path().join("moved")).unwrap();
    w.reopen().unwrap();
    w.write_batch(&[line(2)]).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"n\":0002}\n");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("moved")).unwrap(),
        "{\"n\":0001}\n"
    );
}
