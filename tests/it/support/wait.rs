//! The one "wait for" helper, async and blocking: poll a check until it holds or a deadline
//! passes. A check returns `Ok(value)` when done, or `Err(state)` describing what it saw; on
//! timeout the test panics with what it waited for and the last state, so the failure message
//! says what was missing.

use std::time::{Duration, Instant};

/// Polls `check` every `every` until it returns `Ok`; panics after `timeout`.
pub async fn until<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let state = match check().await {
            Ok(value) => return value,
            Err(state) => state,
        };
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}: {state}");
        }
        tokio::time::sleep(every).await;
    }
}

/// [`until`] for code outside the runtime (threads, `#[test]` functions): sleeps between polls.
pub fn until_blocking<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let state = match check() {
            Ok(value) => return value,
            Err(state) => state,
        };
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}: {state}");
        }
        std::thread::sleep(every);
    }
}

/// Waits until the file at `path` has `n` lines, each a JSON document (a sink writing in its
/// own thread); returns them.
pub async fn json_lines(path: &std::path::Path, n: usize, what: &str) -> Vec<serde_json::Value> {
    let waiting_for = format!("{n} lines from the {what} sink in {}", path.display());
    let text = until(
        &waiting_for,
        super::WAIT,
        Duration::from_millis(20),
        async || {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            match text.lines().count() {
                have if have >= n => Ok(text),
                have => Err(format!("{have} so far")),
            }
        },
    )
    .await;
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

/// A port on 127.0.0.1 that nobody listens on (bound to port 0, then released): for an
/// upstream that is down, or a peer that takes a port number instead of a listener.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A free UDP port on 127.0.0.1 (bound to port 0, then released).
pub fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}
