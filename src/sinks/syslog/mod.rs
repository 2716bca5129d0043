//! `type = "syslog"`: each event as the MSG of one RFC 5424 message, over UDP (one datagram
//! per event), TCP with octet-counting framing (RFC 6587 §3.4.1) or TLS (RFC 5425).
//!
//! An event larger than `max_message_bytes` is never cut (a truncated JSON document would
//! mislead a SIEM more than a missing one): it is dropped from this sink and counted with
//! `reason="too_large"`; the other sinks still get it. Delivery over TCP and TLS is
//! at-least-once: after a broken connection the batch is sent again, and the receiver may have
//! kept part of it.

pub(crate) mod config;

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use rustls::pki_types::ServerName;

use self::config::{SyslogProtocol, SyslogSinkConfig};
use crate::sinks::{BatchError, Record, Severity, SinkError, SinkWriter};

/// Severity of events whose outcome is a failure (warning) and of the others (informational).
/// RFC 5424 severities (§6.2.1) for the record's [`Severity`].
const SEVERITY_ERROR: u8 = 3;
const SEVERITY_WARNING: u8 = 4;
const SEVERITY_INFO: u8 = 6;
/// How long one write may block before the connection is treated as broken.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

enum Connection {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

pub struct SyslogWriter {
    config: SyslogSinkConfig,
    hostname: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    connection: Option<Connection>,
    too_large: Counter,
    /// Events of the current batch dropped as too large (see [`SinkWriter::take_skipped`]).
    skipped: usize,
    buf: Vec<u8>,
}

impl SyslogWriter {
    /// Prepares the writer; the connection is made on the first batch (and again after any
    /// error), so a receiver that is down at startup does not stop scimtap.
    ///
    /// # Errors
    /// [`SinkError::Open`] when the TLS configuration cannot be built.
    pub fn new(config: &SyslogSinkConfig, too_large: Counter) -> Result<SyslogWriter, SinkError> {
        let tls = match config.protocol {
            SyslogProtocol::Tls => Some(Arc::new(
                crate::tls::client_config(&config.extra_roots).map_err(|e| SinkError::Open {
                    path: config.address.clone(),
                    source: std::io::Error::other(e),
                })?,
            )),
            _ => None,
        };
        let hostname = config.hostname.clone().unwrap_or_else(local_hostname);
        Ok(SyslogWriter {
            config: config.clone(),
            hostname,
            tls,
            connection: None,
            too_large,
            skipped: 0,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    fn connect(&self) -> Result<Connection, SinkError> {
        let open_err = |source| SinkError::Open {
            path: self.config.address.clone(),
            source,
        };
        let addr = self
            .config
            .address
            .to_socket_addrs()
            .map_err(open_err)?
            .next()
            .ok_or_else(|| open_err(std::io::Error::other("the address resolves to nothing")))?;
        if self.config.protocol == SyslogProtocol::Udp {
            let bind = if addr.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let socket = UdpSocket::bind(bind).map_err(open_err)?;
            socket.connect(addr).map_err(open_err)?;
            return Ok(Connection::Udp(socket));
        }
        let tcp =
            TcpStream::connect_timeout(&addr, self.config.connect_timeout).map_err(open_err)?;
        tcp.set_nodelay(true).map_err(open_err)?;
        tcp.set_write_timeout(Some(WRITE_TIMEOUT))
            .map_err(open_err)?;
        match &self.tls {
            None => Ok(Connection::Tcp(tcp)),
            Some(tls) => {
                let host = self
                    .config
                    .tls_server_name
                    .clone()
                    .unwrap_or_else(|| host_of(&self.config.address).to_owned());
                let name = ServerName::try_from(host).map_err(|e| {
                    open_err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
                })?;
                let session = rustls::ClientConnection::new(tls.clone(), name)
                    .map_err(|e| open_err(std::io::Error::other(e)))?;
                let mut stream = rustls::StreamOwned::new(session, tcp);
                // Complete the handshake now, so certificate errors surface as connect errors.
                while stream.conn.is_handshaking() {
                    stream
                        .conn
                        .complete_io(&mut stream.sock)
                        .map_err(open_err)?;
                }
                Ok(Connection::Tls(Box::new(stream)))
            }
        }
    }

    /// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG` (RFC 5424 §6), MSG = the event.
    fn message(&self, event: &[u8], severity: Severity, out: &mut Vec<u8>) {
        let severity = match severity {
            Severity::Info => SEVERITY_INFO,
            Severity::Warning => SEVERITY_WARNING,
            Severity::Error => SEVERITY_ERROR,
        };
        let pri = u16::from(self.config.facility) * 8 + u16::from(severity);
        let timestamp = humantime::format_rfc3339_micros(std::time::SystemTime::now());
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "<{pri}>1 {timestamp} {} {} {} audit - ",
            self.hostname,
            self.config.app_name,
            std::process::id()
        );
        out.extend_from_slice(event);
    }
}

impl SinkWriter for SyslogWriter {
    fn write_batch(&mut self, lines: &[Record]) -> Result<(), BatchError> {
        if self.connection.is_none() {
            self.connection = Some(
                self.connect()
                    .map_err(|error| BatchError::leading(0, error))?,
            );
        }
        let mut message = Vec::with_capacity(2048);
        let mut sent = 0;
        self.skipped = 0;
        self.buf.clear();
        for line in lines {
            let event = line.strip_suffix(b"\n").unwrap_or(line);
            message.clear();
            self.message(event, line.meta.severity, &mut message);
            if message.len() > self.config.max_message_bytes {
                self.too_large.inc();
                tracing::warn!(
                    sink_address = %self.config.address,
                    bytes = message.len(),
                    max_message_bytes = self.config.max_message_bytes,
                    "Audit event larger than the syslog message limit; not sent to this sink."
                );
                sent += 1;
                self.skipped += 1;
                continue;
            }
            match self.connection.as_mut() {
                Some(Connection::Udp(socket)) => {
                    if let Err(e) = socket.send(&message) {
                        self.connection = None;
                        return Err(BatchError::leading(sent, SinkError::Write(e)));
                    }
                    sent += 1;
                }
                _ => {
                    // Octet counting: "LEN SP MSG", so MSG may hold anything (RFC 6587 §3.4.1).
                    let _ = write!(self.buf, "{} ", message.len());
                    self.buf.extend_from_slice(&message);
                }
            }
        }
        let result = match self.connection.as_mut() {
            Some(Connection::Tcp(stream)) => {
                stream.write_all(&self.buf).and_then(|()| stream.flush())
            }
            Some(Connection::Tls(stream)) => {
                stream.write_all(&self.buf).and_then(|()| stream.flush())
            }
            _ => Ok(()),
        };
        result.map_err(|e| {
            // Unknown how much the receiver kept: resend the batch on a new connection.
            self.connection = None;
            BatchError::leading(0, SinkError::Write(e))
        })
    }

    fn reopen(&mut self) -> Result<(), SinkError> {
        self.connection = None;
        Ok(())
    }

    fn take_skipped(&mut self) -> usize {
        std::mem::take(&mut self.skipped)
    }
}

fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// This machine's host name (RFC 5424 HOSTNAME), or `-` when unknown.
pub(crate) fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| "-".to_owned())
}

#[cfg(test)]
mod tests;
