//! `type = "http"`: each batch POSTed to a collector as NDJSON, a JSON array, Splunk HEC
//! envelopes or an Elasticsearch `_bulk` request.
//!
//! Which failures are retried follows what the receivers document: connection errors,
//! timeouts, 408, 429 and 5xx are retried (after `Retry-After` when the receiver sends one);
//! any other status refuses the batch for good, and its events are counted as dropped with
//! `reason="rejected"`. Elasticsearch answers `_bulk` with 200 even when items fail, so its
//! per-item results are read: only items that failed with 429 or 5xx are sent again, and every
//! document carries the event id as `_id`, so a retried item overwrites itself instead of
//! being indexed twice.

pub(crate) mod config;

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;

use self::config::{HttpEncoding, HttpSinkConfig};
use crate::config::EventFormat;
use crate::sinks::{BatchError, Delivered, Record, SinkError};

/// Most bytes of a response body read (an error text for the log, or `_bulk` item results).
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

pub struct HttpWriter {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    config: HttpSinkConfig,
    /// CEF lines are text, not JSON: the JSON encodings carry them as strings.
    text_events: bool,
    hostname: String,
    rejected: Counter,
    /// Events of the last attempt refused for good (already counted as `rejected`).
    skipped: usize,
    /// The last attempt's whole batch was refused by its status (a 401, a 400, ...): the sink
    /// is not healthy even though nothing is left to retry.
    refused: bool,
}

impl HttpWriter {
    /// # Errors
    /// [`SinkError::Setup`] when a CA certificate cannot be used.
    pub fn new(
        config: &HttpSinkConfig,
        format: EventFormat,
        rejected: Counter,
    ) -> Result<HttpWriter, SinkError> {
        let tls = crate::tls::client_config(&config.extra_roots)
            .map_err(|e| SinkError::Setup(format!("ca_file: {e}")))?;
        let connector = crate::tls::https_connector(tls, config.connect_timeout);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(50))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Ok(HttpWriter {
            client,
            config: config.clone(),
            text_events: format == EventFormat::Cef,
            hostname: config
                .host
                .clone()
                .unwrap_or_else(crate::sinks::syslog::local_hostname),
            rejected,
            skipped: 0,
            refused: false,
        })
    }

    pub fn take_skipped(&mut self) -> usize {
        std::mem::take(&mut self.skipped)
    }

    /// Whether the last attempt's batch was refused whole (and dropped as `rejected`).
    pub fn take_refused(&mut self) -> bool {
        std::mem::take(&mut self.refused)
    }

    /// Sends one batch; see the module docs for what is retried.
    pub async fn send(&mut self, records: &[Record]) -> Result<(), BatchError> {
        self.skipped = 0;
        self.refused = false;
        let (body, content_type) = self.body(records);
        let mut request = Request::post(self.config.url.clone())
            .header(CONTENT_TYPE, content_type)
            .header(
                http::header::USER_AGENT,
                concat!("scimtap/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in &self.config.headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| fail(SinkError::Send(format!("cannot build the request: {e}"))))?;
        let exchange = async {
            let response = self.client.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = http_body_util::Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok::<_, hyper_util::client::legacy::Error>((parts, body))
        };
        let (parts, response) = match tokio::time::timeout(self.config.request_timeout, exchange)
            .await
        {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => return Err(fail(SinkError::Send(crate::tls::error_chain(&error)))),
            Err(_) => {
                return Err(fail(SinkError::Send(format!(
                    "no answer within {:?}",
                    self.config.request_timeout
                ))))
            }
        };
        let status = parts.status;
        if status.is_success() {
            if self.config.encoding == HttpEncoding::ElasticsearchBulk {
                return self.bulk_items(records.len(), &response);
            }
            return Ok(());
        }
        let detail = format!("{status}: {}", snippet(&response));
        if retryable(status) {
            return Err(BatchError {
                delivered: Delivered::Leading(0),
                error: SinkError::Send(detail),
                retry_after: parts.headers.get(RETRY_AFTER).and_then(retry_after),
            });
        }
        // Refused for good: sending the same bytes again would be refused again.
        self.rejected.inc_by(records.len() as u64);
        self.skipped = records.len();
        self.refused = true;
        tracing::error!(
            url = %self.config.url,
            %status,
            count = records.len(),
            reason = "rejected",
            body = %snippet(&response),
            "Collector refused the batch; audit events dropped."
        );
        Ok(())
    }

    /// Reads `_bulk` item results: items failed with 429 or 5xx are retried, other failures
    /// are counted as rejected.
    fn bulk_items(&mut self, sent: usize, response: &[u8]) -> Result<(), BatchError> {
        let parsed: BulkResponse = match serde_json::from_slice(response) {
            Ok(parsed) => parsed,
            Err(e) => {
                // Ids make a full resend harmless.
                return Err(fail(SinkError::Send(format!(
                    "unreadable _bulk response: {e}"
                ))));
            }
        };
        if !parsed.errors {
            return Ok(());
        }
        let mut retry = Vec::new();
        let mut rejected = 0;
        for (index, item) in parsed.items.iter().enumerate().take(sent) {
            let Some(result) = item.values().next() else {
                continue;
            };
            let status = StatusCode::from_u16(result.status).unwrap_or(StatusCode::BAD_GATEWAY);
            if status.is_success() {
                continue;
            }
            if retryable(status) {
                retry.push(index);
            } else {
                rejected += 1;
                tracing::error!(
                    url = %self.config.url,
                    %status,
                    error = %result.error.as_ref().map(|e| e.to_string()).unwrap_or_default(),
                    "Elasticsearch refused an audit event; dropped."
                );
            }
        }
        // Items the response did not mention are sent again: with their ids, harmlessly.
        retry.extend(parsed.items.len()..sent);
        self.rejected.inc_by(rejected);
        self.skipped = rejected as usize;
        if retry.is_empty() {
            return Ok(());
        }
        let count = retry.len();
        Err(BatchError {
            delivered: Delivered::AllBut(retry),
            error: SinkError::Send(format!("{count} _bulk items failed and will be retried")),
            retry_after: None,
        })
    }

    /// The request body for `records` in the configured encoding, and its content type.
    fn body(&self, records: &[Record]) -> (Vec<u8>, &'static str) {
        let size: usize = records.iter().map(|r| r.line.len() + 128).sum();
        let mut body = Vec::with_capacity(size + 2);
        match self.config.encoding {
            HttpEncoding::Ndjson => {
                for record in records {
                    body.extend_from_slice(&record.line);
                }
                (body, "application/x-ndjson")
            }
            HttpEncoding::JsonArray => {
                body.push(b'[');
                for (i, record) in records.iter().enumerate() {
                    if i > 0 {
                        body.push(b',');
                    }
                    self.push_json(&mut body, record, false);
                }
                body.push(b']');
                (body, "application/json")
            }
            HttpEncoding::SplunkHec => {
                for record in records {
                    let envelope = HecEnvelope {
                        time: record.meta.time_millis as f64 / 1000.0,
                        host: &self.hostname,
                        source: &self.config.source,
                        sourcetype: &self.config.sourcetype,
                        index: self.config.index.as_deref(),
                    };
                    // `{...,"event":` + the event + `}`: the event bytes are used as they are.
                    let head = serde_json::to_vec(&envelope).unwrap_or_else(|_| b"{}".to_vec());
                    body.extend_from_slice(&head[..head.len() - 1]);
                    body.extend_from_slice(b",\"event\":");
                    self.push_json(&mut body, record, false);
                    body.extend_from_slice(b"}\n");
                }
                (body, "application/json")
            }
            HttpEncoding::ElasticsearchBulk => {
                for record in records {
                    let action = BulkAction {
                        index: BulkIndex {
                            index: self.config.index.as_deref(),
                            id: &record.meta.event_id,
                        },
                    };
                    if serde_json::to_writer(&mut body, &action).is_err() {
                        body.extend_from_slice(b"{\"index\":{}}");
                    }
                    body.push(b'\n');
                    self.push_json(&mut body, record, true);
                    body.push(b'\n');
                }
                (body, "application/x-ndjson")
            }
        }
    }

    /// The event as JSON: its line without the newline, or (CEF) a JSON string, wrapped in
    /// `{"message": ...}` where a document must be an object.
    fn push_json(&self, body: &mut Vec<u8>, record: &Record, object: bool) {
        let line = record.line.strip_suffix(b"\n").unwrap_or(&record.line);
        if !self.text_events {
            body.extend_from_slice(line);
            return;
        }
        let text = String::from_utf8_lossy(line);
        let value = if object {
            serde_json::json!({ "message": text })
        } else {
            serde_json::Value::String(text.into_owned())
        };
        if serde_json::to_writer(&mut *body, &value).is_err() {
            body.extend_from_slice(b"null");
        }
    }
}

/// A whole-batch failure: nothing delivered, retry it all.
fn fail(error: SinkError) -> BatchError {
    BatchError::leading(0, error)
}

/// Whether a status says "try again later" (RFC 9110 408, 429, 5xx); the alert webhook's
/// rule too.
pub(crate) fn retryable(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110 §10.2.3).
fn retry_after(value: &http::HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The start of a response body, for a log line.
fn snippet(body: &[u8]) -> String {
    let end = body.len().min(300);
    String::from_utf8_lossy(&body[..end]).trim().to_owned()
}

#[derive(Deserialize)]
struct BulkResponse {
    #[serde(default)]
    errors: bool,
    #[serde(default)]
    items: Vec<std::collections::HashMap<String, BulkItem>>,
}

#[derive(Deserialize)]
struct BulkItem {
    status: u16,
    error: Option<serde_json::Value>,
}

/// A Splunk HEC event's envelope, in HEC's key order; the event itself is appended as is.
#[derive(serde::Serialize)]
struct HecEnvelope<'a> {
    time: f64,
    host: &'a str,
    source: &'a str,
    sourcetype: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<&'a str>,
}

/// An Elasticsearch `_bulk` action line: `{"index":{"_index":...,"_id":...}}`.
#[derive(serde::Serialize)]
struct BulkAction<'a> {
    index: BulkIndex<'a>,
}

#[derive(serde::Serialize)]
struct BulkIndex<'a> {
    #[serde(rename = "_index", skip_serializing_if = "Option::is_none")]
    index: Option<&'a str>,
    /// The event id, so a retried item is not indexed twice.
    #[serde(rename = "_id")]
    id: &'a str,
}

#[cfg(test)]
mod tests;
