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
    /// How urgent the event is (syslog's PRI severity). Set by the audit worker from the event
    /// itself ([`crate::formats::severity`]), so no sink has to look for it in a line whose
    /// format (JSON, CEF, OCSF, ECS) it does not know. [`Severity::Info`] for integrity records.
    pub severity: Severity,
}

/// How urgent an event is, in the three levels every format distinguishes (docs/formats.md,
/// "Severity"). Ordered: a higher level is more urgent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// A successful exchange, and scimtap's own integrity records.
    #[default]
    Info,
    /// A failed exchange.
    Warning,
    /// A SCIM write (POST, PUT, PATCH, DELETE; not a `.search`) refused for its credentials:
    /// answered 401 or 403 by the service, or refused by scimtap as `client_not_allowed`. A
    /// revoked or stolen token trying to change identities.
    Error,
}

impl Severity {
    /// The level the disk buffer stores in one byte: 0, 1 or 2. Frames of payload version 2
    /// written before there were three levels hold the old `failed` flag there, 0 or 1, which
    /// reads back as `Info` or `Warning`.
    pub fn level(self) -> u8 {
        match self {
            Severity::Info => 0,
            Severity::Warning => 1,
            Severity::Error => 2,
        }
    }

    /// The severity of a stored level; a level above 2 (not written by this version) is the
    /// most urgent one known, so it is never played down.
    pub fn from_level(level: u8) -> Severity {
        match level {
            0 => Severity::Info,
            1 => Severity::Warning,
            _ => Severity::Error,
        }
    }
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
