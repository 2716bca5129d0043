//! Tamper evidence: one hash chain through every native event line scimtap writes.
//!
//! Each line ends with `"instance":"<id>","integrity":{"seq":N,"prev_hash":"<hex>","hash":"<hex>"}}`.
//! `hash` is HMAC-SHA256 (keyed from `integrity.key_file`; plain SHA-256 without a key) over
//! the line's bytes up to and not including `"hash":"` — so it covers the whole event, the
//! instance, the sequence number and the previous hash. Hashing the bytes as written (not a
//! re-serialization) means a verifier needs no canonical JSON: it checks the exact bytes.
//!
//! The chain starts with a genesis `integrity.start` record (`prev_hash` all zeros, `seq` 1),
//! so deleting the first event shows; a clean stop ends it with `integrity.stop`, so a cut
//! at a line boundary shows; `integrity.checkpoint` records every
//! `integrity.checkpoint_interval_secs` make a cut tail show even without traffic. After a
//! restart the chain resumes from the last record a native file sink holds (else from
//! `integrity.state_file`), with an `integrity.start` record that says how the previous run
//! ended. [`verify`] walks files and names the first broken `seq` and what broke.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `prev_hash` of the genesis record.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// `schema_version` of integrity records (the same layout version as events).
pub const RECORD_SCHEMA_VERSION: &str = crate::event::SCHEMA_VERSION;
const HASH_FIELD: &[u8] = b"\"hash\":\"";

/// The kinds of records besides events: the chain's own (start, checkpoint, reload, stop),
/// and write-ahead intents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordKind {
    #[serde(rename = "integrity.start")]
    Start,
    #[serde(rename = "integrity.checkpoint")]
    Checkpoint,
    #[serde(rename = "integrity.stop")]
    Stop,
    /// A write-ahead intent record (written by the audit worker, sealed like the others).
    #[serde(rename = "audit.intent")]
    Intent,
    /// A configuration reload (SIGHUP) the audit worker applied: which event settings changed
    /// and which changes wait for a restart. Sealed where the new settings start to apply.
    #[serde(rename = "integrity.reload")]
    Reload,
}

/// Where a chain stands: the last record's sequence number and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub instance: String,
    pub seq: u64,
    pub hash: String,
    /// Whether the last record was a clean stop.
    pub closed: bool,
}

/// Seals lines into the chain. Owned by the audit worker: one chain per process.
pub struct Chain {
    key: Option<Vec<u8>>,
    instance: String,
    seq: u64,
    prev: String,
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chain")
            .field("instance", &self.instance)
            .field("seq", &self.seq)
            .field("keyed", &self.key.is_some())
            .finish()
    }
}

impl Chain {
    /// A chain continuing from `head`, or a new one (a fresh instance id) when there is none.
    pub fn resume(key: Option<Vec<u8>>, head: Option<&ChainHead>) -> Chain {
        match head {
            Some(head) => Chain {
                key,
                instance: head.instance.clone(),
                seq: head.seq,
                prev: head.hash.clone(),
            },
            None => Chain {
                key,
                instance: crate::clock::new_uuid_v7().to_string(),
                seq: 0,
                prev: GENESIS_PREV.to_owned(),
            },
        }
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Where the chain stands now.
    pub fn head(&self, closed: bool) -> ChainHead {
        ChainHead {
            instance: self.instance.clone(),
            seq: self.seq,
            hash: self.prev.clone(),
            closed,
        }
    }

    /// Appends the chain fields to one JSON-object line (`{...}\n`) and returns the sealed
    /// line. A line that is not a JSON object is returned unchanged (not expected: scimtap
    /// builds every line itself).
    pub fn seal(&mut self, line: Vec<u8>) -> Vec<u8> {
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        let Some(open) = body.strip_suffix(b"}") else {
            return line;
        };
        let open_len = open.len();
        self.seq += 1;
        // Extended in place: the event's bytes are not copied again.
        let mut out = line;
        out.truncate(open_len);
        out.reserve(220);
        if open_len > 1 {
            out.push(b',');
        }
        out.extend_from_slice(b"\"instance\":\"");
        out.extend_from_slice(self.instance.as_bytes());
        out.extend_from_slice(b"\",\"integrity\":{\"seq\":");
        out.extend_from_slice(self.seq.to_string().as_bytes());
        out.extend_from_slice(b",\"prev_hash\":\"");
        out.extend_from_slice(self.prev.as_bytes());
        out.extend_from_slice(b"\",");
        let hash = digest(self.key.as_deref(), &out);
        out.extend_from_slice(HASH_FIELD);
        out.extend_from_slice(hash.as_bytes());
        out.extend_from_slice(b"\"}}\n");
        self.prev = hash;
        out
    }

    /// A sealed integrity record of `kind` with `details`, and its event id.
    pub fn record(&mut self, kind: RecordKind, details: serde_json::Value) -> (String, Vec<u8>) {
        #[derive(Serialize)]
        struct Record<'a> {
            schema_version: &'a str,
            record: RecordKind,
            event_id: String,
            timestamp: crate::clock::Timestamp,
            details: serde_json::Value,
        }
        let event_id = crate::clock::new_uuid_v7().to_string();
        let record = Record {
            schema_version: RECORD_SCHEMA_VERSION,
            record: kind,
            event_id: event_id.clone(),
            timestamp: crate::clock::Timestamp::now(),
            details,
        };
        let mut line = serde_json::to_vec(&record).unwrap_or_else(|_| b"{}".to_vec());
        line.push(b'\n');
        (event_id, self.seal(line))
    }
}

/// Hex of HMAC-SHA256 under `key`, or of SHA-256 without one.
fn digest(key: Option<&[u8]>, bytes: &[u8]) -> String {
    let raw: [u8; 32] = match key {
        Some(key) => match Hmac::<Sha256>::new_from_slice(key) {
            Ok(mut mac) => {
                mac.update(bytes);
                mac.finalize().into_bytes().into()
            }
            // HMAC takes keys of any length; unreachable.
            Err(_) => Sha256::digest(bytes).into(),
        },
        None => Sha256::digest(bytes).into(),
    };
    hex::encode(raw)
}

/// The chain fields of one line, as read back.
#[derive(Debug, Deserialize)]
struct Sealed {
    /// A record kind this version does not know (written by a newer scimtap) reads as `None`,
    /// like an event: its bytes are still checked against its hash.
    #[serde(default, deserialize_with = "known_kind")]
    record: Option<RecordKind>,
    instance: Option<String>,
    integrity: Option<SealedIntegrity>,
}

fn known_kind<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<RecordKind>, D::Error> {
    let name = Option::<String>::deserialize(de)?;
    Ok(name.and_then(|n| serde_json::from_value(serde_json::Value::String(n)).ok()))
}

#[derive(Debug, Deserialize)]
struct SealedIntegrity {
    seq: u64,
    prev_hash: String,
    hash: String,
}

/// The chain head a file's last whole line holds, if it is a sealed line.
///
/// # Errors
/// When the file exists but cannot be read.
pub fn head_of_file(path: &Path) -> std::io::Result<Option<ChainHead>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let metadata = file.metadata()?;
    // Only a regular file has a last line (a sink on /dev/stdout or /dev/full has none).
    if !metadata.is_file() {
        return Ok(None);
    }
    let len = metadata.len();
    // The last line of an event is well under this; read a window from the end.
    let window = len.min(4 * 1024 * 1024);
    file.seek(SeekFrom::Start(len - window))?;
    let mut tail = Vec::with_capacity(window as usize);
    file.read_to_end(&mut tail)?;
    // Only whole lines count: a torn tail (a crash mid-write) is ignored.
    let whole = match tail.iter().rposition(|&b| b == b'\n') {
        Some(end) => &tail[..end],
        None => return Ok(None),
    };
    let last = match whole.iter().rposition(|&b| b == b'\n') {
        Some(start) => &whole[start + 1..],
        None if window == len => whole,
        None => return Ok(None),
    };
    Ok(parse_head(last))
}

fn parse_head(line: &[u8]) -> Option<ChainHead> {
    let sealed: Sealed = serde_json::from_slice(line).ok()?;
    let integrity = sealed.integrity?;
    Some(ChainHead {
        instance: sealed.instance?,
        seq: integrity.seq,
        hash: integrity.hash,
        closed: sealed.record == Some(RecordKind::Stop),
    })
}

/// Where the chain left off: the last sealed line of the first native-format file sink (the
/// record itself is the most exact place: nothing can be newer), else `integrity.state_file`.
/// Also says where it was found, for the `integrity.start` record.
pub fn resume_point(config: &crate::config::Config) -> (Option<ChainHead>, &'static str) {
    use crate::config::{EventFormat, SinkKind};
    let file_sink = config.sinks.iter().find_map(|s| match &s.kind {
        SinkKind::File(file) if s.format == EventFormat::Native => Some(file.path.clone()),
        _ => None,
    });
    if let Some(path) = file_sink {
        let mut rotated = path.clone().into_os_string();
        rotated.push(".1");
        for candidate in [path.clone(), PathBuf::from(rotated)] {
            match head_of_file(&candidate) {
                Ok(Some(head)) => return (Some(head), "file_sink"),
                Ok(None) => {}
                Err(error) => {
                    tracing::error!(%error, path = %candidate.display(), "Cannot read the audit file to resume the integrity chain.");
                }
            }
        }
    }
    if let Some(state) = config.integrity.state_file.as_deref().and_then(read_state) {
        return (Some(state), "state_file");
    }
    (None, "none")
}

/// The `details` of the `integrity.start` record for a chain resumed from `head`.
pub fn start_details(head: Option<&ChainHead>, source: &str) -> serde_json::Value {
    match head {
        None => serde_json::json!({ "genesis": true, "version": env!("CARGO_PKG_VERSION") }),
        Some(head) => serde_json::json!({
            "genesis": false,
            "version": env!("CARGO_PKG_VERSION"),
            "previous_stop": if head.closed { "clean" } else { "unclean" },
            "resumed_from": { "seq": head.seq, "source": source },
        }),
    }
}

/// The saved head in `integrity.state_file`, if any.
pub fn read_state(path: &Path) -> Option<ChainHead> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Saves the head (write a temporary file, rename over).
///
/// # Errors
/// When the file cannot be written.
pub fn write_state(path: &Path, head: &ChainHead) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(head).unwrap_or_default())?;
    std::fs::rename(&tmp, path)
}

// === verification ===

/// What broke in a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breakage {
    /// A line's bytes do not match its hash (or it is not a readable record).
    Edited,
    /// One or more records are missing.
    Deleted,
    /// A record that does not belong (a copy, or one from another chain).
    Inserted,
    /// Records out of order.
    Reordered,
    /// The chain ends early: a torn last line, or no closing record.
    Truncated,
}

impl Breakage {
    /// `scimtap verify`'s exit code for this breakage.
    pub fn exit_code(self) -> u8 {
        match self {
            Breakage::Edited => 10,
            Breakage::Deleted => 11,
            Breakage::Inserted => 12,
            Breakage::Reordered => 13,
            Breakage::Truncated => 14,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Breakage::Edited => "edited",
            Breakage::Deleted => "deleted",
            Breakage::Inserted => "inserted",
            Breakage::Reordered => "reordered",
            Breakage::Truncated => "truncated",
        }
    }
}

/// The first place a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub kind: Breakage,
    /// The sequence number expected where the chain broke.
    pub seq: u64,
    pub file: PathBuf,
    /// 1-based line in `file` (the line after the last one for a missing tail).
    pub line: usize,
    pub detail: String,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "BROKEN at seq {} ({}:{}): {}: {}",
            self.seq,
            self.file.display(),
            self.line,
            self.kind.as_str(),
            self.detail
        )
    }
}

/// A chain that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub instances: Vec<String>,
    /// Restarts after a run that did not stop cleanly (events of that run may be missing
    /// from its end: whatever was queued when it died).
    pub unclean_restarts: u64,
    /// Whether the chain ends with a clean stop.
    pub closed: bool,
}

/// Where verification starts.
#[derive(Debug, Clone, Default)]
pub enum StartAt {
    /// At the genesis record (`seq` 1, `prev_hash` zeros): the default.
    #[default]
    Genesis,
    /// At the record whose `prev_hash` is this (a later rotated file, with the last hash of
    /// the file before it, e.g. from a checkpoint record).
    PrevHash(String),
    /// Wherever the first line is, trusting it (only the rest is checked).
    Anywhere,
}

#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    pub start: StartAt,
    /// Accept a chain that does not end with a stop record (a running instance's current file).
    pub allow_open: bool,
}

/// One line as read for verification.
struct Line {
    file: usize,
    line: usize,
    /// `None`: unreadable as a sealed record.
    sealed: Option<(Option<RecordKind>, String, SealedIntegrity)>,
    /// The hash recomputed over the line's own bytes matches its `hash`.
    self_valid: bool,
    /// The line had no newline (the end of a file cut mid-line).
    torn: bool,
}

/// The audit files of a directory (`*.jsonl`, `*.log` and their rotations `*.jsonl.N`) in
/// chain order: per base name, rotated files oldest first (`x.jsonl.3`, `x.jsonl.2`,
/// `x.jsonl.1`, `x.jsonl`).
///
/// # Errors
/// When the directory cannot be listed.
pub fn files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<(String, u32, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if !path.is_file() {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let (base, rotation) = match name.rsplit_once('.') {
            Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                (base.to_owned(), n.parse::<u32>().unwrap_or(u32::MAX))
            }
            _ => (name.clone(), 0),
        };
        // Only audit files: `*.jsonl`, `*.log` and their rotations (not keys, configs, ...).
        if !(base.ends_with(".jsonl") || base.ends_with(".log")) {
            continue;
        }
        files.push((base, rotation, path));
    }
    // Newest rotation (0 = the current file) last.
    files.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    Ok(files.into_iter().map(|(_, _, p)| p).collect())
}

/// The files of `paths` that carry the chain, in chain order, and those skipped: a file named
/// is taken as given; a directory stands for its audit files ([`files_in`]) that belong to
/// the trail ([`is_trail_file`]), the output of OCSF, ECS or CEF sinks beside it skipped.
/// `scimtap verify` and `scimtap report` check the same files.
///
/// # Errors
/// [`ChainFilesError`] when a directory cannot be listed or one of its files read.
pub fn chain_files(paths: &[PathBuf]) -> Result<ChainFiles, ChainFilesError> {
    let mut chain = ChainFiles::default();
    for path in paths {
        if !path.is_dir() {
            chain.files.push(path.clone());
            continue;
        }
        let found = files_in(path).map_err(|source| ChainFilesError::List {
            path: path.clone(),
            source,
        })?;
        for file in found {
            match is_trail_file(&file) {
                Ok(true) => chain.files.push(file),
                Ok(false) => chain.skipped.push(file),
                Err(source) => return Err(ChainFilesError::Read { path: file, source }),
            }
        }
    }
    Ok(chain)
}

/// What [`chain_files`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainFiles {
    /// The files to verify, in chain order.
    pub files: Vec<PathBuf>,
    /// Files of a directory without the chain's fields (another format's output).
    pub skipped: Vec<PathBuf>,
}

/// Why [`chain_files`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ChainFilesError {
    #[error("cannot list {}: {source}", path.display())]
    List {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Whether `path` belongs to the hash-chained trail: one of its lines carries the chain's
/// fields (`instance` and `integrity` with `seq`, `prev_hash`, `hash`), or it is empty (a
/// trail file just rotated). The files of OCSF, ECS and CEF sinks never carry them, so `verify
/// DIR` can tell the trail from other sinks' output sharing the directory. A trail file whose
/// every line was rewritten without the chain fields is skipped too; what it held is then
/// missing from the chain, which `verify` reports (deleted or truncated).
///
/// # Errors
/// When the file cannot be read.
pub fn is_trail_file(path: &Path) -> std::io::Result<bool> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut buf = Vec::new();
    let mut empty = true;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(empty);
        }
        empty = false;
        let content = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if serde_json::from_slice::<Sealed>(content)
            .is_ok_and(|s| s.instance.is_some() && s.integrity.is_some())
        {
            return Ok(true);
        }
    }
}

/// Verifies the chain through `files`, in order.
///
/// # Errors
/// `Err(Ok(broken))` for a broken chain, `Err(Err(io))` when a file cannot be read.
pub fn verify(
    files: &[PathBuf],
    key: Option<&[u8]>,
    options: &VerifyOptions,
) -> Result<Verified, Result<Broken, std::io::Error>> {
    let mut lines = Vec::new();
    for (index, path) in files.iter().enumerate() {
        let file = File::open(path).map_err(Err)?;
        let mut reader = BufReader::new(file);
        let mut buf = Vec::new();
        let mut number = 0;
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf).map_err(Err)?;
            if n == 0 {
                break;
            }
            number += 1;
            let torn = buf.last() != Some(&b'\n');
            let content = buf.strip_suffix(b"\n").unwrap_or(&buf);
            lines.push(read_line(index, number, content, key, torn));
        }
    }
    check(&lines, files, options).map_err(Ok)
}

fn read_line(file: usize, line: usize, content: &[u8], key: Option<&[u8]>, torn: bool) -> Line {
    let sealed = serde_json::from_slice::<Sealed>(content)
        .ok()
        .and_then(|s| Some((s.record, s.instance?, s.integrity?)));
    let self_valid = sealed.as_ref().is_some_and(|(_, _, integrity)| {
        // The hash field is the last member: the line ends `"hash":"<64 hex>"}}`.
        let suffix_len = HASH_FIELD.len() + 64 + 3;
        content.len() >= suffix_len
            && content.ends_with(b"\"}}")
            && content[content.len() - suffix_len..].starts_with(HASH_FIELD)
            && digest(key, &content[..content.len() - suffix_len]) == integrity.hash
    });
    Line {
        file,
        line,
        sealed,
        self_valid,
        torn,
    }
}

fn check(lines: &[Line], files: &[PathBuf], options: &VerifyOptions) -> Result<Verified, Broken> {
    let broken = |kind, seq, at: &Line, detail: String| Broken {
        kind,
        seq,
        file: files.get(at.file).cloned().unwrap_or_default(),
        line: at.line,
        detail,
    };
    let (mut expected_seq, mut expected_prev) = match &options.start {
        StartAt::Genesis => (1, Some(GENESIS_PREV.to_owned())),
        StartAt::PrevHash(hash) => (0, Some(hash.clone())),
        StartAt::Anywhere => (0, None),
    };
    let mut verified = Verified {
        records: 0,
        first_seq: 0,
        last_seq: 0,
        instances: Vec::new(),
        unclean_restarts: 0,
        closed: false,
    };
    let mut seen_hashes = std::collections::HashSet::new();
    let mut last_kind = None;
    for (i, at) in lines.iter().enumerate() {
        let first = i == 0;
        if at.torn {
            return Err(broken(
                Breakage::Truncated,
                expected_seq.max(1),
                at,
                "the line is cut off (no newline at the end of the file)".into(),
            ));
        }
        let Some((kind, instance, integrity)) = &at.sealed else {
            return Err(broken(
                Breakage::Edited,
                expected_seq.max(1),
                at,
                "not a readable sealed record".into(),
            ));
        };
        if first && expected_seq == 0 {
            // Starting mid-chain: the first record sets the expected sequence.
            expected_seq = integrity.seq;
        }
        let seq = integrity.seq;
        let fail = |kind, detail: String| Err(broken(kind, expected_seq, at, detail));
        if !at.self_valid {
            let kind = if seq == expected_seq {
                Breakage::Edited
            } else {
                Breakage::Inserted
            };
            return fail(
                kind,
                format!("the hash of seq {seq} does not match its bytes"),
            );
        }
        if seen_hashes.contains(&integrity.hash) {
            return fail(Breakage::Inserted, format!("a second copy of seq {seq}"));
        }
        if seq != expected_seq {
            let later = &lines[i + 1..];
            let found = |test: &dyn Fn(&SealedIntegrity) -> bool| {
                later
                    .iter()
                    .any(|o| o.sealed.as_ref().is_some_and(|(_, _, s)| test(s)))
            };
            let kind = if seq < expected_seq {
                Breakage::Reordered
            } else if found(&|s| s.hash == integrity.hash) {
                Breakage::Inserted
            } else if found(&|s| s.seq == expected_seq) {
                Breakage::Reordered
            } else {
                Breakage::Deleted
            };
            return fail(
                kind,
                format!("expected seq {expected_seq}, found seq {seq}"),
            );
        }
        if let Some(prev) = &expected_prev {
            if &integrity.prev_hash != prev {
                return fail(
                    Breakage::Inserted,
                    "prev_hash does not match the record before it: this record belongs to another chain".into(),
                );
            }
        }
        if *kind == Some(RecordKind::Start) && !first && last_kind != Some(RecordKind::Stop) {
            verified.unclean_restarts += 1;
        }
        if first {
            verified.first_seq = integrity.seq;
        }
        if !verified.instances.contains(instance) {
            verified.instances.push(instance.clone());
        }
        seen_hashes.insert(integrity.hash.clone());
        verified.records += 1;
        verified.last_seq = integrity.seq;
        expected_seq = integrity.seq + 1;
        expected_prev = Some(integrity.hash.clone());
        last_kind = *kind;
    }
    verified.closed = last_kind == Some(RecordKind::Stop);
    if lines.is_empty() {
        return Err(Broken {
            kind: Breakage::Truncated,
            seq: expected_seq.max(1),
            file: files.first().cloned().unwrap_or_default(),
            line: 1,
            detail: "no records at all".into(),
        });
    }
    if !verified.closed && !options.allow_open {
        let last = &lines[lines.len() - 1];
        return Err(Broken {
            kind: Breakage::Truncated,
            seq: expected_seq,
            file: files.get(last.file).cloned().unwrap_or_default(),
            line: last.line + 1,
            detail: format!(
                "the chain ends at seq {} without a closing integrity.stop record (use --allow-open for a running instance's current file)",
                verified.last_seq
            ),
        });
    }
    Ok(verified)
}

#[cfg(test)]
mod tests;
