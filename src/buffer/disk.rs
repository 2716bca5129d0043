//! `buffer = { type = "disk", path, max_bytes }`: a sink's queue kept in append-only segment
//! files, so events survive a receiver outage longer than memory allows, and a crash or a
//! restart of scimtap.
//!
//! Layout of `path/`: segments `00000000000000000001.seg`, ... each a sequence of frames
//! `[len: u32 LE][crc32: u32 LE][payload: len bytes]`, and `reader.pos` (`<segment> <offset>`),
//! the position up to which every event has been delivered (or dropped and counted).
//!
//! - The audit worker appends whole frames, one `write(2)` each; a process kill can only ever
//!   leave a torn frame at the very end of the segment it was writing, and a restart always
//!   starts a new segment, so nothing is ever appended after a torn tail.
//! - The sink thread reads frames, and after a batch is delivered persists its position
//!   (write + rename, so the file is always whole) *before* deleting a segment it finished.
//!   A crash between delivery and the position update re-delivers that batch: at least once.
//! - A frame whose length runs past the end of its file or whose checksum does not match is
//!   a torn tail: it is skipped (counted as `reason="torn"`), never delivered half.
//! - Data is `fdatasync`ed when a segment is finished and at most every
//!   [`SYNC_INTERVAL`] while events arrive, so a power loss loses at most that long; a process
//!   crash loses nothing the kernel accepted.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::sinks::{Record, RecordMeta, Severity};

/// A segment is closed and a new one started past this size (or an eighth of `max_bytes`,
/// whichever is smaller: space is freed a whole segment at a time).
const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
const MIN_SEGMENT_BYTES: u64 = 64 * 1024;
/// Largest frame read back: anything claiming more is a torn or corrupt header.
const MAX_FRAME_BYTES: u32 = 64 * 1024 * 1024;
const SYNC_INTERVAL: Duration = Duration::from_millis(200);
const FRAME_HEADER: u64 = 8;
/// 2 added the outcome byte; frames of version 1 (written before) are still read.
const PAYLOAD_VERSION: u8 = 2;

/// Why an event could not be buffered.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("disk buffer is full ({max_bytes} bytes)")]
    Full { max_bytes: u64 },
    #[error("disk buffer is closed")]
    Closed,
    #[error("disk buffer I/O at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where the reader is: the next frame to read, or the end of what was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// The writing end (the audit worker) and the shared state. Cheap to clone.
#[derive(Clone)]
pub struct DiskBuffer {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    state: Mutex<State>,
    /// Signalled when the reader frees space.
    space: Condvar,
    /// Signalled when a frame is appended, or the buffer closes.
    data: Notify,
    closed: AtomicBool,
}

struct State {
    /// Every segment on disk, by id, with its size in bytes.
    segments: BTreeMap<u64, u64>,
    total_bytes: u64,
    /// Events appended and not yet acknowledged (the queue-depth gauge).
    queued: u64,
    writer: File,
    write_segment: u64,
    write_end: u64,
    dirty: bool,
    last_sync: Instant,
}

impl DiskBuffer {
    /// Opens (or creates) the buffer in `dir`: keeps whatever an earlier run left unsent,
    /// and starts a new segment for what comes.
    ///
    /// # Errors
    /// [`BufferError::Io`] when the directory or a file cannot be used.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(DiskBuffer, DiskReader), BufferError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BufferError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let start = read_position(dir)?;
        let mut segments = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if start.is_some_and(|p| id < p.segment) {
                // Finished and delivered; its deletion was interrupted.
                let path = entry.path();
                std::fs::remove_file(&path).map_err(io(&path))?;
                continue;
            }
            let size = entry.metadata().map_err(io(&entry.path()))?.len();
            segments.insert(id, size);
        }
        let write_segment = segments.keys().next_back().map_or(1, |last| last + 1);
        let first = segments.keys().next().copied().unwrap_or(write_segment);
        let position = match start {
            Some(p) if segments.contains_key(&p.segment) => p,
            _ => Position {
                segment: first,
                offset: 0,
            },
        };
        let path = segment_path(dir, write_segment);
        let writer = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        segments.insert(write_segment, 0);
        let total_bytes = segments.values().sum::<u64>();
        let queued = count_frames(dir, &segments, position);
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: (max_bytes / 8).clamp(MIN_SEGMENT_BYTES, SEGMENT_BYTES),
            state: Mutex::new(State {
                segments,
                total_bytes,
                queued,
                writer,
                write_segment,
                write_end: 0,
                dirty: false,
                last_sync: Instant::now(),
            }),
            space: Condvar::new(),
            data: Notify::new(),
            closed: AtomicBool::new(false),
        });
        let reader = DiskReader {
            shared: shared.clone(),
            position,
            file: None,
            read: 0,
            torn: 0,
        };
        Ok((DiskBuffer { shared }, reader))
    }

    /// Appends one event. With `wait`, blocks (the audit worker, never a request) until the
    /// reader frees room; without, a full buffer is an error the caller counts.
    ///
    /// # Errors
    /// [`BufferError::Full`], [`BufferError::Closed`], or [`BufferError::Io`] (the partial
    /// frame is cut off again, so the segment stays readable).
    /// `wait`: how long to wait for room when the buffer is full (`None`: not at all).
    pub fn append(&self, record: &Record, wait: Option<Duration>) -> Result<(), BufferError> {
        let frame = encode_frame(record);
        let frame_len = frame.len() as u64;
        let shared = &self.shared;
        let mut state = shared.lock();
        let deadline = wait.map(|w| std::time::Instant::now() + w);
        // An event bigger than the whole buffer is let in alone rather than refused forever.
        while state.total_bytes + frame_len > shared.max_bytes && state.queued > 0 {
            let left = deadline.map_or(Duration::ZERO, |d| {
                d.saturating_duration_since(std::time::Instant::now())
            });
            if left.is_zero() {
                return Err(BufferError::Full {
                    max_bytes: shared.max_bytes,
                });
            }
            if shared.closed.load(Ordering::Acquire) {
                return Err(BufferError::Closed);
            }
            state = shared
                .space
                .wait_timeout(state, left.min(Duration::from_millis(500)))
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
        if state.write_end > 0 && state.write_end + frame_len > shared.segment_bytes {
            self.roll(&mut state)?;
        }
        let segment = state.write_segment;
        if let Err(source) = state.writer.write_all(&frame) {
            let end = state.write_end;
            let _ = state.writer.set_len(end);
            return Err(BufferError::Io {
                path: segment_path(&shared.dir, segment),
                source,
            });
        }
        state.write_end += frame_len;
        state.total_bytes += frame_len;
        state.queued += 1;
        *state.segments.entry(segment).or_insert(0) += frame_len;
        state.dirty = true;
        let ack = record.meta.ack.as_ref();
        let synced =
            (ack.is_some() || state.last_sync.elapsed() >= SYNC_INTERVAL) && sync(&mut state);
        drop(state);
        if let (Some(ack), true) = (ack, synced) {
            ack.fire();
        }
        shared.data.notify_one();
        Ok(())
    }

    /// Finishes the current segment (synced) and starts the next.
    fn roll(&self, state: &mut MutexGuard<'_, State>) -> Result<(), BufferError> {
        let _ = sync(state);
        let next = state.write_segment + 1;
        let path = segment_path(&self.shared.dir, next);
        state.writer = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| BufferError::Io { path, source })?;
        state.write_segment = next;
        state.write_end = 0;
        state.segments.insert(next, 0);
        Ok(())
    }

    pub fn is_full(&self) -> bool {
        self.shared.is_full()
    }

    /// Events appended and not yet delivered.
    pub fn queued(&self) -> u64 {
        self.shared.lock().queued
    }

    /// No more appends: syncs what was written and lets the reader finish.
    pub fn close(&self) {
        let _ = sync(&mut self.shared.lock());
        self.shared.closed.store(true, Ordering::Release);
        self.shared.data.notify_one();
        self.shared.space.notify_all();
    }
}

impl Shared {
    /// Whether another typical event may not fit (`on_audit_failure = "reject"` looks ahead).
    fn is_full(&self) -> bool {
        self.lock().total_bytes + 64 * 1024 > self.max_bytes
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Syncs what was appended; false when the disk refused.
fn sync(state: &mut State) -> bool {
    let mut ok = true;
    if state.dirty {
        if let Err(error) = state.writer.sync_data() {
            tracing::error!(%error, "Cannot sync the disk buffer.");
            ok = false;
        }
        state.dirty = false;
    }
    state.last_sync = Instant::now();
    ok
}

/// The sink thread's end: reads frames in order and acknowledges delivered ones.
pub struct DiskReader {
    shared: Arc<Shared>,
    position: Position,
    file: Option<File>,
    /// Events read since the last acknowledgement.
    read: u64,
    /// Torn or corrupt frames skipped since the last call to [`DiskReader::take_torn`].
    torn: u64,
}

impl DiskReader {
    /// The next event and the position just after it, if one is there now.
    ///
    /// # Errors
    /// [`BufferError::Io`] when a segment cannot be read.
    pub fn try_next(&mut self) -> Result<Option<(Record, Position)>, BufferError> {
        loop {
            let (limit, next_segment) = {
                let state = self.shared.lock();
                let limit = if self.position.segment == state.write_segment {
                    state.write_end
                } else {
                    state
                        .segments
                        .get(&self.position.segment)
                        .copied()
                        .unwrap_or(0)
                };
                let next = state
                    .segments
                    .range(self.position.segment + 1..)
                    .next()
                    .map(|(id, _)| *id);
                (limit, next)
            };
            if self.position.offset >= limit {
                match next_segment {
                    Some(next) => {
                        self.next_segment(next);
                        continue;
                    }
                    None => return Ok(None),
                }
            }
            match self.read_frame(limit)? {
                Some(record) => {
                    self.read += 1;
                    return Ok(Some((record, self.position)));
                }
                None => {
                    // Torn tail or corruption: the rest of this segment cannot be trusted.
                    self.torn += 1;
                    tracing::warn!(
                        segment = self.position.segment,
                        offset = self.position.offset,
                        "Disk buffer: torn or corrupt frame skipped with the rest of its segment."
                    );
                    match next_segment {
                        Some(next) => self.next_segment(next),
                        None => {
                            self.position.offset = limit;
                            return Ok(None);
                        }
                    }
                }
            }
        }
    }

    fn next_segment(&mut self, next: u64) {
        self.position = Position {
            segment: next,
            offset: 0,
        };
        self.file = None;
    }

    /// Reads the frame at the current position (within `limit`), advancing past it.
    /// `None`: torn or corrupt.
    fn read_frame(&mut self, limit: u64) -> Result<Option<Record>, BufferError> {
        let path = segment_path(&self.shared.dir, self.position.segment);
        let io = |source| BufferError::Io {
            path: path.clone(),
            source,
        };
        if self.file.is_none() {
            let mut file = File::open(&path).map_err(io)?;
            file.seek(SeekFrom::Start(self.position.offset))
                .map_err(io)?;
            self.file = Some(file);
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(None);
        };
        if self.position.offset + FRAME_HEADER > limit {
            return Ok(None);
        }
        let mut header = [0u8; FRAME_HEADER as usize];
        file.read_exact(&mut header).map_err(io)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > MAX_FRAME_BYTES || self.position.offset + FRAME_HEADER + u64::from(len) > limit {
            return Ok(None);
        }
        let mut payload = vec![0u8; len as usize];
        file.read_exact(&mut payload).map_err(io)?;
        if crc32fast::hash(&payload) != crc {
            return Ok(None);
        }
        let Some(record) = decode_payload(payload) else {
            return Ok(None);
        };
        self.position.offset += FRAME_HEADER + u64::from(len);
        Ok(Some(record))
    }

    /// Waits until a frame may be there, or the buffer closes (`false`).
    pub async fn wait(&self) -> bool {
        let notified = self.shared.data.notified();
        if self.shared.closed.load(Ordering::Acquire) {
            return false;
        }
        notified.await;
        true
    }

    /// Whether no more appends come (the reader then drains what is there and stops).
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Records that every event up to `upto` is delivered (or dropped and counted):
    /// persists the position, then deletes the segments wholly before it.
    ///
    /// # Errors
    /// [`BufferError::Io`] when the position cannot be saved (the segments are then kept).
    pub fn ack(&mut self, upto: Position, events: u64) -> Result<(), BufferError> {
        write_position(&self.shared.dir, upto)?;
        let mut state = self.shared.lock();
        state.queued = state.queued.saturating_sub(events);
        self.read = self.read.saturating_sub(events);
        let done: Vec<u64> = state
            .segments
            .range(..upto.segment)
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            let path = segment_path(&self.shared.dir, id);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(BufferError::Io { path, source }),
            }
            if let Some(size) = state.segments.remove(&id) {
                state.total_bytes = state.total_bytes.saturating_sub(size);
            }
        }
        drop(state);
        self.shared.space.notify_all();
        Ok(())
    }

    pub fn is_full(&self) -> bool {
        self.shared.is_full()
    }

    pub fn take_torn(&mut self) -> u64 {
        std::mem::take(&mut self.torn)
    }

    pub fn queued(&self) -> u64 {
        self.shared.lock().queued
    }
}

/// Whole frames left to deliver from `from` on (what an earlier run left unsent), found by
/// walking frame headers.
fn count_frames(dir: &Path, segments: &BTreeMap<u64, u64>, from: Position) -> u64 {
    let mut count = 0;
    for (&id, &size) in segments.range(from.segment..) {
        let Ok(mut file) = File::open(segment_path(dir, id)) else {
            continue;
        };
        let mut offset = if id == from.segment { from.offset } else { 0 };
        let mut header = [0u8; FRAME_HEADER as usize];
        while offset + FRAME_HEADER <= size
            && file.seek(SeekFrom::Start(offset)).is_ok()
            && file.read_exact(&mut header).is_ok()
        {
            let len = u64::from(u32::from_le_bytes([
                header[0], header[1], header[2], header[3],
            ]));
            if offset + FRAME_HEADER + len > size {
                break;
            }
            offset += FRAME_HEADER + len;
            count += 1;
        }
    }
    count
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

fn read_position(dir: &Path) -> Result<Option<Position>, BufferError> {
    let path = dir.join("reader.pos");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(BufferError::Io { path, source }),
    };
    let mut parts = text.split_whitespace().map(str::parse::<u64>);
    match (parts.next(), parts.next()) {
        (Some(Ok(segment)), Some(Ok(offset))) => Ok(Some(Position { segment, offset })),
        _ => {
            tracing::warn!(path = %path.display(), "Unreadable disk buffer position; reading from the oldest segment (events may be sent twice).");
            Ok(None)
        }
    }
}

/// Replaces `reader.pos` whole (write a temporary file, rename over).
fn write_position(dir: &Path, position: Position) -> Result<(), BufferError> {
    let path = dir.join("reader.pos");
    let tmp = dir.join("reader.pos.tmp");
    let text = format!("{} {}\n", position.segment, position.offset);
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| BufferError::Io { path, source })
}

/// `[len][crc32][payload]`, payload =
/// `[version][id len: u16][id][key len: u16][key][time: i64][severity: u8][line]`; the
/// severity byte is [`Severity::level`] (version 2 frames of older builds hold 0/1 there, the
/// `failed` flag, which reads back as info/warning).
fn encode_frame(record: &Record) -> Vec<u8> {
    let meta = &record.meta;
    let id = &meta.event_id.as_bytes()[..meta.event_id.len().min(u16::MAX as usize)];
    let key = &meta.key.as_bytes()[..meta.key.len().min(u16::MAX as usize)];
    let payload_len = 1 + 2 + id.len() + 2 + key.len() + 8 + 1 + record.line.len();
    let mut frame = Vec::with_capacity(FRAME_HEADER as usize + payload_len);
    frame.extend_from_slice(&[0u8; FRAME_HEADER as usize]);
    frame.push(PAYLOAD_VERSION);
    frame.extend_from_slice(&(id.len() as u16).to_le_bytes());
    frame.extend_from_slice(id);
    frame.extend_from_slice(&(key.len() as u16).to_le_bytes());
    frame.extend_from_slice(key);
    frame.extend_from_slice(&meta.time_millis.to_le_bytes());
    frame.push(meta.severity.level());
    frame.extend_from_slice(&record.line);
    let payload = &frame[FRAME_HEADER as usize..];
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32fast::hash(payload).to_le_bytes();
    frame[..4].copy_from_slice(&len);
    frame[4..8].copy_from_slice(&crc);
    frame
}

fn decode_payload(payload: Vec<u8>) -> Option<Record> {
    let mut at = 0usize;
    let take = |at: &mut usize, n: usize| -> Option<std::ops::Range<usize>> {
        let range = *at..at.checked_add(n)?;
        if range.end > payload.len() {
            return None;
        }
        *at = range.end;
        Some(range)
    };
    let version = *payload.get(take(&mut at, 1)?.start)?;
    if !(1..=PAYLOAD_VERSION).contains(&version) {
        return None;
    }
    let len16 = |r: std::ops::Range<usize>| -> Option<usize> {
        Some(u16::from_le_bytes(payload.get(r)?.try_into().ok()?) as usize)
    };
    let id_len = len16(take(&mut at, 2)?)?;
    let id = String::from_utf8(payload.get(take(&mut at, id_len)?)?.to_vec()).ok()?;
    let key_len = len16(take(&mut at, 2)?)?;
    let key = String::from_utf8(payload.get(take(&mut at, key_len)?)?.to_vec()).ok()?;
    let time = i64::from_le_bytes(payload.get(take(&mut at, 8)?)?.try_into().ok()?);
    let severity = if version >= 2 {
        Severity::from_level(*payload.get(take(&mut at, 1)?.start)?)
    } else {
        Severity::Info
    };
    let line = Bytes::from(payload).slice(at..);
    Some(Record {
        line,
        meta: Arc::new(RecordMeta {
            ack: None,
            event_id: id,
            key,
            time_millis: time,
            severity,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize) -> Record {
        Record {
            line: Bytes::from(format!("{{\"n\":{n}}}\n")),
            meta: Arc::new(RecordMeta {
                ack: None,
                event_id: format!("id-{n}"),
                key: format!("user-{}", n % 3),
                time_millis: 1_700_000_000_000 + n as i64,
                severity: Severity::from_level((n % 3) as u8),
            }),
        }
    }

    /// Opens the buffer in `dir` (1 MiB) and appends records `from..to`.
    fn filled(dir: &Path, from: usize, to: usize) -> (DiskBuffer, DiskReader) {
        let (buffer, reader) = DiskBuffer::open(dir, 1 << 20).unwrap();
        for n in from..to {
            buffer.append(&record(n), None).unwrap();
        }
        (buffer, reader)
    }

    fn drain(reader: &mut DiskReader) -> Vec<(Record, Position)> {
        let mut out = Vec::new();
        while let Some(item) = reader.try_next().unwrap() {
            out.push(item);
        }
        out
    }

    #[test]
    fn frames_written_before_the_outcome_byte_are_still_read() {
        // A version-1 payload, as an older scimtap left it in the buffer.
        let mut payload = vec![1u8];
        payload.extend_from_slice(&2u16.to_le_bytes());
        payload.extend_from_slice(b"e1");
        payload.extend_from_slice(&1u16.to_le_bytes());
        payload.extend_from_slice(b"k");
        payload.extend_from_slice(&7i64.to_le_bytes());
        payload.extend_from_slice(b"{\"outcome\":\"failure\"}\n");
        let r = decode_payload(payload).expect("a version-1 frame decodes");
        assert_eq!(r.meta.event_id, "e1");
        assert_eq!(r.meta.time_millis, 7);
        assert_eq!(r.meta.severity, Severity::Info);
        assert_eq!(&r.line[..], b"{\"outcome\":\"failure\"}\n");
        assert!(
            decode_payload(vec![3u8, 0, 0]).is_none(),
            "unknown versions are refused"
        );
    }

    #[test]
    fn events_come_back_in_order_with_their_meta() {
        let dir = tempfile::tempdir().unwrap();
        let (buffer, mut reader) = filled(dir.path(), 0, 10);
        let read = drain(&mut reader);
        assert_eq!(read.len(), 10);
        for (n, (r, _)) in read.iter().enumerate() {
            assert_eq!(r.line, record(n).line);
            assert_eq!(r.meta.event_id, format!("id-{n}"));
            assert_eq!(r.meta.key, format!("user-{}", n % 3));
            assert_eq!(r.meta.time_millis, 1_700_000_000_000 + n as i64);
            assert_eq!(r.meta.severity, Severity::from_level((n % 3) as u8));
        }
        assert_eq!(buffer.queued(), 10);
        reader.ack(read[9].1, 10).unwrap();
        assert_eq!(buffer.queued(), 0);
    }

    #[test]
    fn unacknowledged_events_survive_a_restart_and_acknowledged_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_buffer, mut reader) = filled(dir.path(), 0, 6);
            let read = drain(&mut reader);
            reader.ack(read[2].1, 3).unwrap();
        }
        let (_buffer, mut reader) = filled(dir.path(), 6, 7);
        let ids: Vec<String> = drain(&mut reader)
            .iter()
            .map(|(r, _)| r.meta.event_id.clone())
            .collect();
        assert_eq!(ids, ["id-3", "id-4", "id-5", "id-6"]);
    }

    #[test]
    fn a_torn_tail_is_skipped_never_delivered_half() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_buffer, _reader) = filled(dir.path(), 0, 3);
        }
        // A crash in the middle of the third frame's write.
        let segment = segment_path(dir.path(), 1);
        let len = std::fs::metadata(&segment).unwrap().len();
        let file = OpenOptions::new().write(true).open(&segment).unwrap();
        file.set_len(len - 5).unwrap();
        let (_buffer, mut reader) = filled(dir.path(), 3, 4);
        let ids: Vec<String> = drain(&mut reader)
            .iter()
            .map(|(r, _)| r.meta.event_id.clone())
            .collect();
        assert_eq!(ids, ["id-0", "id-1", "id-3"]);
        assert_eq!(reader.take_torn(), 1);
    }

    #[test]
    fn a_flipped_byte_is_caught_by_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_buffer, _reader) = filled(dir.path(), 0, 1);
        }
        let segment = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&segment).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x20;
        std::fs::write(&segment, bytes).unwrap();
        let (_buffer, mut reader) = DiskBuffer::open(dir.path(), 1 << 20).unwrap();
        assert!(drain(&mut reader).is_empty());
        assert_eq!(reader.take_torn(), 1);
    }

    #[test]
    fn a_full_buffer_refuses_without_waiting_and_frees_space_on_ack() {
        let dir = tempfile::tempdir().unwrap();
        let frame = encode_frame(&record(0)).len() as u64;
        let (buffer, mut reader) = DiskBuffer::open(dir.path(), frame * 3).unwrap();
        for n in 0..3 {
            buffer.append(&record(n), None).unwrap();
        }
        assert!(matches!(
            buffer.append(&record(3), None),
            Err(BufferError::Full { .. })
        ));
        let read = drain(&mut reader);
        // Space comes back when a finished segment is deleted; force a new segment.
        buffer.roll(&mut buffer.shared.lock()).unwrap();
        reader
            .ack(
                Position {
                    segment: 2,
                    offset: 0,
                },
                3,
            )
            .unwrap();
        assert_eq!(read.len(), 3);
        buffer.append(&record(3), None).unwrap();
    }

    #[test]
    fn finished_segments_are_deleted_only_after_the_position_is_saved() {
        let dir = tempfile::tempdir().unwrap();
        let (buffer, mut reader) = DiskBuffer::open(dir.path(), 1 << 30).unwrap();
        let big = Record {
            line: Bytes::from(vec![b'x'; 3 * 1024 * 1024]),
            meta: Arc::new(RecordMeta::default()),
        };
        for _ in 0..4 {
            buffer.append(&big, None).unwrap();
        }
        let read = drain(&mut reader);
        assert_eq!(read.len(), 4);
        let last = read[3].1;
        assert!(last.segment > 1, "segments rolled");
        reader.ack(last, 4).unwrap();
        assert_eq!(read_position(dir.path()).unwrap(), Some(last));
        assert!(!segment_path(dir.path(), 1).exists());
        assert!(segment_path(dir.path(), last.segment).exists());
    }
}
