//! `/events/stream`: new events as Server-Sent Events, one `row` event (the table row, HTML)
//! per matching event and a `counts` event (open gaps, firing alerts) when those change.
//!
//! Each stream has its own task and a small queue to the connection. A browser that stops
//! reading fills its queue, and one that falls further behind than the feed keeps misses
//! events; either way its stream is closed and counted
//! (`scimtap_ui_stream_dropped_clients_total`), never waited for. EventSource reconnects by
//! itself with `Last-Event-ID`, and the stream resumes from the events the feed still keeps.
//! A comment line every [`HEARTBEAT`] keeps idle connections open through proxies and
//! tunnels.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::sync::{broadcast, mpsc, watch};

use super::feed::{actions, Filter, Item};
use super::Ui;

/// How often an idle stream sends a comment line.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// Frames one stream may have waiting for its connection.
const QUEUE: usize = 64;

/// A response body fed by a stream's task; it ends when the task drops its sender.
pub struct SseBody {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|frame| frame.map(|data| Ok(Frame::data(data))))
    }
}

/// One SSE message: `id`, `event` and the data, split into `data:` lines.
fn message(id: Option<u64>, event: &str, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + 48);
    if let Some(id) = id {
        out.push_str(&format!("id: {id}\n"));
    }
    out.push_str("event: ");
    out.push_str(event);
    out.push('\n');
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line.strip_suffix('\r').unwrap_or(line));
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

/// Starts a stream of the events after `after` (the page's newest, or the browser's
/// `Last-Event-ID`) that match `filter`. `None` when too many streams are open.
pub fn start(
    ui: &Arc<Ui>,
    filter: Filter,
    after: u64,
    shutdown: watch::Receiver<bool>,
) -> Option<SseBody> {
    let open = ui.streams.fetch_add(1, Ordering::AcqRel);
    if open >= super::MAX_STREAMS {
        ui.streams.fetch_sub(1, Ordering::AcqRel);
        return None;
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    // Subscribed before the backlog is read, so nothing falls between the two.
    let live = ui.feed.subscribe();
    let backlog = ui.feed.since(after);
    let ui = ui.clone();
    tokio::spawn(async move {
        ui.metrics.ui_stream_clients.inc();
        let dropped = follow(&ui, &tx, live, backlog, &filter, after, shutdown).await;
        if dropped {
            ui.metrics.ui_stream_dropped.inc();
            tracing::debug!("A live view stream fell behind and was closed.");
        }
        ui.metrics.ui_stream_clients.dec();
        ui.streams.fetch_sub(1, Ordering::AcqRel);
    });
    Some(SseBody { rx })
}

/// What a stream's task does until the browser leaves, falls behind (true) or scimtap stops.
async fn follow(
    ui: &Ui,
    tx: &mpsc::Sender<Bytes>,
    mut live: broadcast::Receiver<Arc<Item>>,
    backlog: Vec<Arc<Item>>,
    filter: &Filter,
    after: u64,
    mut shutdown: watch::Receiver<bool>,
) -> bool {
    // Ok(true): sent; Ok(false): the browser left; Err: it fell behind.
    let send = |frame: Bytes| match tx.try_send(frame) {
        Ok(()) => Ok(true),
        Err(mpsc::error::TrySendError::Closed(_)) => Ok(false),
        Err(mpsc::error::TrySendError::Full(_)) => Err(()),
    };
    let counts = || {
        let c = ui.feed.counts();
        message(
            None,
            "counts",
            &format!("{{\"gaps\":{},\"alerts\":{}}}", c.gaps, c.alerts),
        )
    };
    let mut last = after;
    let mut first = vec![Bytes::from_static(b"retry: 2000\n\n"), counts()];
    for item in backlog {
        last = last.max(item.seq);
        if filter.matches(&item.event) {
            let row = super::views::event_row(&item).into_string();
            first.push(message(Some(item.seq), "row", &row));
        }
    }
    for frame in first {
        match send(frame) {
            Ok(true) => {}
            Ok(false) => return false,
            Err(()) => return true,
        }
    }
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    loop {
        let frames: Vec<Bytes> = tokio::select! {
            received = live.recv() => match received {
                Ok(item) => {
                    if item.seq <= last {
                        continue;
                    }
                    last = item.seq;
                    let mut frames = Vec::new();
                    if filter.matches(&item.event) {
                        let row = super::views::event_row(&item).into_string();
                        frames.push(message(Some(item.seq), "row", &row));
                    }
                    if actions(&item.event).any(|a| a.starts_with("deprovision.") || a.starts_with("alert.")) {
                        frames.push(counts());
                    }
                    frames
                }
                Err(broadcast::error::RecvError::Lagged(_)) => return true,
                Err(broadcast::error::RecvError::Closed) => return false,
            },
            _ = heartbeat.tick() => vec![Bytes::from_static(b": ping\n\n")],
            _ = tx.closed() => return false,
            _ = crate::stopped(&mut shutdown) => return false,
        };
        for frame in frames {
            match send(frame) {
                Ok(true) => {}
                Ok(false) => return false,
                Err(()) => return true,
            }
        }
    }
}
