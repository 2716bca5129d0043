use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::queue::QueueTx;
use super::worker::{backoff, remaining};
use super::*;
use crate::config::{BatchConfig, EventFormat, RetryConfig, SinkConfig, SinkKind, WhenFull};
use crate::telemetry::Metrics;

fn records(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record::from(Bytes::from(format!("{i}\n"))))
        .collect()
}

#[test]
fn only_failed_events_are_sent_again() {
    let left = remaining(records(5), Delivered::Leading(2));
    assert_eq!(
        left.iter().map(|r| r.line.clone()).collect::<Vec<_>>(),
        [Bytes::from("2\n"), Bytes::from("3\n"), Bytes::from("4\n")]
    );
    let left = remaining(records(5), Delivered::AllBut(vec![1, 4]));
    assert_eq!(
        left.iter().map(|r| r.line.clone()).collect::<Vec<_>>(),
        [Bytes::from("1\n"), Bytes::from("4\n")]
    );
}

/// A file sink writing `<dir>/audit.jsonl` whose batches may wait 30 s to fill: only the bell
/// can make it write sooner.
struct Lingering {
    dir: tempfile::TempDir,
    handle: SinkHandle,
    thread: SinkThread,
}

impl Lingering {
    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("audit.jsonl")
    }
}

fn lingering_file_sink(max_events: usize) -> Lingering {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = SinkConfig {
        name: "t".to_owned(),
        format: EventFormat::Native,
        when_full: WhenFull::Block,
        block_timeout: Duration::from_millis(250),
        max_events: 64,
        disk_buffer: None,
        batch: BatchConfig {
            max_events,
            max_bytes: 1 << 20,
            timeout: Duration::from_secs(30),
        },
        retry: RetryConfig {
            max_attempts: 1,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(10),
        },
        kind: SinkKind::File(crate::config::FileSinkConfig {
            path: dir.path().join("audit.jsonl"),
            max_file_bytes: 1 << 30,
            keep_files: 1,
        }),
    };
    let (handle, thread) =
        start(&config, &Metrics::new(), ReopenSignal::default()).expect("sink starts");
    Lingering {
        dir,
        handle,
        thread,
    }
}

fn lines_within(path: &std::path::Path, want: usize, limit: Duration) -> usize {
    let until = Instant::now() + limit;
    loop {
        let n = std::fs::read_to_string(path).map_or(0, |t| t.lines().count());
        if n >= want || Instant::now() >= until {
            return n;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_full_batch_is_written_without_waiting_out_the_linger() {
    let sink = lingering_file_sink(4);
    let handle = &sink.handle;
    let mut three = records(3).into_iter();
    handle.enqueue_blocking(three.next().expect("a record"));
    // Once the sink thread holds the first record it lingers for the rest of its batch.
    let QueueTx::Memory(tx) = &handle.tx else {
        panic!("memory queue");
    };
    let until = Instant::now() + Duration::from_secs(5);
    while tx.capacity() < handle.capacity && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    for record in three {
        handle.enqueue_blocking(record);
    }
    let path = sink.path();
    assert_eq!(
        lines_within(&path, 1, Duration::from_millis(300)),
        0,
        "3 of 4: the batch is still filling"
    );
    handle.enqueue_blocking(Record::from(Bytes::from("3\n")));
    assert_eq!(lines_within(&path, 4, Duration::from_secs(5)), 4);
}

#[test]
fn an_intent_is_made_durable_without_waiting_out_the_linger() {
    let sink = lingering_file_sink(512);
    let handle = &sink.handle;
    handle.enqueue_blocking(Record::from(Bytes::from("0\n")));
    let (ack, mut fired) = DurableAck::new();
    handle.enqueue_blocking(Record {
        line: Bytes::from("{\"record\":\"audit.intent\"}\n"),
        meta: Arc::new(RecordMeta {
            ack: Some(ack),
            ..RecordMeta::default()
        }),
    });
    let until = Instant::now() + Duration::from_secs(5);
    while fired.try_recv().is_err() {
        assert!(Instant::now() < until, "intent not acknowledged within 5 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    let path = sink.path();
    assert_eq!(lines_within(&path, 2, Duration::from_secs(1)), 2);
}

#[test]
fn closing_the_queue_ends_the_linger() {
    let Lingering {
        dir,
        handle,
        thread,
    } = lingering_file_sink(512);
    handle.enqueue_blocking(Record::from(Bytes::from("0\n")));
    drop(handle);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let finished = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), thread.finished()).await });
    assert!(
        finished.is_ok(),
        "the sink thread kept lingering after its queue closed"
    );
    assert_eq!(
        lines_within(&dir.path().join("audit.jsonl"), 1, Duration::ZERO),
        1
    );
}

#[test]
fn backoff_doubles_with_jitter_and_honours_retry_after_up_to_the_cap() {
    let retry = RetryConfig {
        max_attempts: 10,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(2),
    };
    for _ in 0..100 {
        let first = backoff(&retry, 1, None);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        let third = backoff(&retry, 3, None);
        assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
        let late = backoff(&retry, 30, None);
        assert!(late >= Duration::from_secs(1) && late <= Duration::from_secs(2));
    }
    assert_eq!(
        backoff(&retry, 1, Some(Duration::from_secs(1))),
        Duration::from_secs(1)
    );
    assert_eq!(
        backoff(&retry, 1, Some(Duration::from_secs(3600))),
        Duration::from_secs(2)
    );
    let spread: std::collections::HashSet<_> = (0..20).map(|_| backoff(&retry, 5, None)).collect();
    assert!(spread.len() > 1, "jitter must vary the wait");
}

/// A `block` sink whose queue holds 2 and whose reader never reads (`rx` is kept, unread).
fn stuck_block_sink(block_timeout: Duration) -> (SinkHandle, tokio::sync::mpsc::Receiver<Record>) {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let handle = SinkHandle {
        name: "stuck".to_owned(),
        format: EventFormat::Native,
        tx: QueueTx::Memory(tx),
        when_full: WhenFull::Block,
        block_timeout,
        stalled: std::sync::atomic::AtomicBool::new(false),
        dropped_full: Default::default(),
        dropped_stalled: Default::default(),
        dropped_shutdown: Default::default(),
        dropped_encode: Default::default(),
        dropped_buffer: Default::default(),
        queue_depth: Default::default(),
        capacity: 2,
        healthy: Arc::default(),
        saturated: Arc::default(),
        trail: true,
        durable: false,
        bell: Arc::default(),
        batch_events: 512,
        batch_bytes: 1 << 20,
    };
    (handle, rx)
}

#[test]
fn a_stuck_block_sink_waits_once_then_drops_its_own_events_until_it_has_room() {
    let timeout = Duration::from_millis(300);
    let (sink, mut rx) = stuck_block_sink(timeout);
    for r in records(2) {
        sink.enqueue_blocking(r);
    }
    assert_eq!(sink.dropped_stalled.get(), 0);

    // Full: the worker waits for room once, up to the timeout, then the sink is stalled.
    let started = Instant::now();
    sink.enqueue_blocking(records(1).remove(0));
    assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
    assert_eq!(sink.dropped_stalled.get(), 1);

    // Stalled: ten more are dropped without waiting (waiting would take 10 x 300 ms).
    let started = Instant::now();
    for r in records(10) {
        sink.enqueue_blocking(r);
    }
    assert!(started.elapsed() < timeout, "{:?}", started.elapsed());
    assert_eq!(sink.dropped_stalled.get(), 11);
    assert_eq!(
        sink.dropped_full.get(),
        0,
        "counted as stalled, not as drop_newest"
    );

    // The reader takes one: the next event fits, and the sink is no longer stalled.
    assert!(rx.try_recv().is_ok());
    sink.enqueue_blocking(records(1).remove(0));
    assert_eq!(sink.dropped_stalled.get(), 11);
    assert!(!sink.stalled.load(std::sync::atomic::Ordering::Relaxed));
}
