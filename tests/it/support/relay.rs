//! A TCP relay in front of a real upstream that a test can take down and bring back on the
//! same port: "the upstream was killed mid-way" without losing the upstream's data (scim2-server
//! keeps its resources in memory, so killing it for real would forget them).

use std::sync::Mutex;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Relay {
    pub port: u16,
    target: u16,
    /// True while down: open connections are cut.
    down: watch::Sender<bool>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Relay {
    /// Relays 127.0.0.1:`port` (chosen at run time) to 127.0.0.1:`target`.
    pub async fn start(target: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (down, _) = watch::channel(false);
        let relay = Relay {
            port,
            target,
            down,
            accept: Mutex::new(None),
        };
        relay.serve(listener);
        relay
    }

    fn serve(&self, listener: TcpListener) {
        let target = self.target;
        let down = self.down.subscribe();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut down = down.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = down.wait_for(|d| *d) => {}
                    }
                });
            }
        });
        *self.accept.lock().unwrap() = Some(task);
    }

    /// Takes the upstream down: open connections are cut, new ones refused (nothing listens).
    pub async fn kill(&self) {
        if let Some(task) = self.accept.lock().unwrap().take() {
            task.abort();
        }
        self.down.send_replace(true);
        // Until the aborted accept loop has dropped its listener, connections would still be
        // accepted (and cut); wait for the port to refuse.
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("relay port {} still accepts after kill", self.port);
    }

    /// Brings the upstream back on the same port.
    pub async fn restore(&self) {
        self.down.send_replace(false);
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap_or_else(|e| panic!("cannot listen again on {}: {e}", self.port));
        self.serve(listener);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(task) = self.accept.lock().unwrap().take() {
            task.abort();
        }
        self.down.send_replace(true);
    }
}
