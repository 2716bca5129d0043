//! The unit a sink's queue carries: one encoded event ([`Record`]) and the facts about it some
//! sinks put beside the line ([`RecordMeta`]), including the write-ahead acknowledgement.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

/// One encoded event on its way to a sink: the line, and what network sinks need besides it.
#[derive(Debug, Clone)]
pub struct Record {
    /// The event in the sink's format, one line, newline included.
    pub line: Bytes,
    pub meta: Arc<RecordMeta>,
}

/// Facts about an event that some sinks put beside the line (shared by every format's record).
#[derive(Debug, Default)]
pub struct RecordMeta {
    /// Set on a write-ahead intent record: fired once the record is on stable storage (a
    /// file sink after `fdatasync`, or a disk buffer after its append is synced).
    pub ack: Option<Arc<DurableAck>>,
    /// The event id: Elasticsearch `_id`, so a retried item is not indexed twice.
    pub event_id: String,
    /// The SCIM resource id the event is about (else the request id): the Kafka message key,
    /// so events about one identity stay in order on one partition.
    pub key: String,
    /// When the request arrived, milliseconds since the Unix epoch (HEC `time`).
    pub time_millis: i64,
    /// The event's outcome is `failure` (syslog sends it at warning severity). Set by the
    /// audit worker from the event itself, so no sink has to look for it in a line whose
    /// format (JSON, CEF, OCSF, ECS) it does not know. False for integrity records.
    pub failed: bool,
}

/// "This record is durable": fired by the first sink that makes it so; a record dropped
/// undelivered drops its sender, which the waiting request sees as a failure.
#[derive(Debug)]
pub struct DurableAck(std::sync::Mutex<Option<oneshot::Sender<()>>>);

impl DurableAck {
    pub fn new() -> (Arc<DurableAck>, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (Arc::new(DurableAck(std::sync::Mutex::new(Some(tx)))), rx)
    }

    pub fn fire(&self) {
        let sender = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(sender) = sender {
            let _ = sender.send(());
        }
    }
}

impl std::ops::Deref for Record {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.line
    }
}

impl From<Bytes> for Record {
    fn from(line: Bytes) -> Record {
        Record {
            line,
            meta: Arc::default(),
        }
    }
}
