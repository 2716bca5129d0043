//! `type = "http"` options: the collector's url, the batch encoding, headers and secrets, TLS
//! and timeouts.

use std::path::PathBuf;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use serde::Deserialize;

use crate::sinks::config::{sink_options, EventFormat, SinkKind, SinkTable};

sink_options! {
    /// `type = "http"`: batches POSTed to a collector.
    pub(crate) struct RawHttpSink {
        /// Where batches are POSTed (`http://` or `https://`). Required.
        url: Option<String>,
        #[serde(default)]
        encoding: HttpEncoding,
        /// Extra request headers, sent as written (nothing secret here: use `header_files`).
        #[serde(default)]
        headers: std::collections::BTreeMap<String, String>,
        /// Headers whose value is read from a file (a secret), trimmed of surrounding whitespace.
        #[serde(default)]
        header_files: std::collections::BTreeMap<String, PathBuf>,
        /// File holding a token: sent as `Authorization: Splunk <token>` for `splunk_hec`,
        /// `Authorization: Bearer <token>` otherwise.
        token_file: Option<PathBuf>,
        /// Extra PEM CA bundle trusted for an `https://` url, on top of the standard web roots.
        ca_file: Option<PathBuf>,
        /// Elasticsearch `_index` of each document (`elasticsearch_bulk`), or HEC `index`.
        index: Option<String>,
        /// HEC `source` (default `scimtap`).
        source: Option<String>,
        /// HEC `sourcetype` (default `scimtap:<format>`).
        sourcetype: Option<String>,
        /// HEC `host` (default: this machine's host name).
        host: Option<String>,
    }
    network_timeouts: "Time allowed for one batch's request and response.";
}

/// How an HTTP sink lays out a batch.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HttpEncoding {
    /// One event per line (`application/x-ndjson`).
    #[default]
    Ndjson,
    /// One JSON array of events (`application/json`).
    JsonArray,
    /// Splunk HTTP Event Collector envelopes (`/services/collector/event`).
    SplunkHec,
    /// Elasticsearch `_bulk` API: `index` actions with the event id as `_id`.
    ElasticsearchBulk,
}

#[derive(Debug, Clone)]
pub struct HttpSinkConfig {
    pub url: http::Uri,
    pub encoding: HttpEncoding,
    /// Plain headers and the ones read from files; values from files are marked sensitive
    /// (`HeaderValue::set_sensitive`), so hyper never logs them.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub extra_roots: Vec<CertificateDer<'static>>,
    pub index: Option<String>,
    pub source: String,
    pub sourcetype: String,
    pub host: Option<String>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl RawHttpSink {
    /// Checks and resolves the http sink's own options; `None` when the sink cannot be built.
    pub(crate) fn resolve(&self, t: &mut SinkTable<'_, '_>) -> Option<SinkKind> {
        let Some(url) = &self.url else {
            t.problem("url", "missing: an http sink needs a `url`");
            return None;
        };
        let url = match url.parse::<http::Uri>() {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() =>
            {
                uri
            }
            _ => {
                t.problem("url", format!("`{url}` is not an http:// or https:// URL"));
                return None;
            }
        };
        // Headers scimtap sets itself, or that would be sent twice (`request.header` appends).
        for name in self.headers.keys().chain(self.header_files.keys()) {
            let lower = name.to_ascii_lowercase();
            let field = if self.headers.contains_key(name) {
                "headers"
            } else {
                "header_files"
            };
            let k = format!("{field}.{name}");
            if matches!(
                lower.as_str(),
                "content-type" | "content-length" | "host" | "transfer-encoding"
            ) {
                t.problem(
                    &k,
                    format!("`{name}` is set by scimtap from the encoding and body"),
                );
            } else if lower == "authorization" && self.token_file.is_some() {
                t.problem(
                    &k,
                    "Authorization is already set by token_file: use one or the other",
                );
            } else if self.headers.keys().any(|h| h.eq_ignore_ascii_case(name))
                && self
                    .header_files
                    .keys()
                    .any(|h| h.eq_ignore_ascii_case(name))
            {
                t.problem(&k, "set in both headers and header_files: use one");
            }
        }
        if self.encoding == HttpEncoding::ElasticsearchBulk
            && self.index.is_none()
            && !bulk_path_names_an_index(url.path())
        {
            t.problem(
                "index",
                "missing: elasticsearch_bulk needs an `index`, or a url ending in /<index>/_bulk",
            );
        }
        let mut headers = Vec::new();
        for (name, value) in &self.headers {
            let header_key = format!("headers.{name}");
            match (
                http::HeaderName::try_from(name.as_str()),
                http::HeaderValue::try_from(value.as_str()),
            ) {
                (Ok(n), Ok(v)) => headers.push((n, v)),
                _ => t.problem(&header_key, "not a valid header name and value"),
            }
        }
        let mut secret_header = |t: &mut SinkTable<'_, '_>, k: &str, name: &str, value: Vec<u8>| {
            match (
                http::HeaderName::try_from(name),
                http::HeaderValue::try_from(value),
            ) {
                (Ok(n), Ok(mut v)) => {
                    v.set_sensitive(true);
                    headers.push((n, v));
                }
                // The value is a secret: never echo it.
                _ => t.problem(k, "not a valid header name and value"),
            }
        };
        for (name, path) in &self.header_files {
            let k = format!("header_files.{name}");
            if let Some(secret) = t.secret(&k, path) {
                secret_header(t, &k, name, secret.0);
            }
        }
        if let Some(path) = &self.token_file {
            let k = "token_file";
            if let Some(secret) = t.secret(k, path) {
                let scheme: &[u8] = if self.encoding == HttpEncoding::SplunkHec {
                    b"Splunk "
                } else {
                    b"Bearer "
                };
                let mut value = scheme.to_vec();
                value.extend_from_slice(&secret.0);
                secret_header(t, k, "authorization", value);
            }
        }
        let extra_roots = match &self.ca_file {
            Some(path) => t.certs("ca_file", path),
            None => Vec::new(),
        };
        if self.ca_file.is_some() && url.scheme_str() != Some("https") {
            t.problem("ca_file", "needs an https:// url");
        }
        if self.encoding != HttpEncoding::SplunkHec
            && (self.source.is_some() || self.sourcetype.is_some() || self.host.is_some())
        {
            t.problem("encoding", "source, sourcetype and host are Splunk HEC fields: they need encoding = \"splunk_hec\"",
            );
        }
        Some(SinkKind::Http(HttpSinkConfig {
            url,
            encoding: self.encoding,
            headers,
            extra_roots,
            index: self.index.clone(),
            source: self.source.clone().unwrap_or_else(|| "scimtap".to_owned()),
            sourcetype: self.sourcetype.clone().unwrap_or_else(|| {
                let format = match self.format {
                    EventFormat::Native => "native",
                    EventFormat::Cef => "cef",
                    EventFormat::Ecs => "ecs",
                    EventFormat::Ocsf => "ocsf",
                };
                format!("scimtap:{format}")
            }),
            host: self.host.clone(),
            connect_timeout: t.secs("connect_timeout_secs", self.connect_timeout_secs, false),
            request_timeout: t.secs("request_timeout_secs", self.request_timeout_secs, false),
        }))
    }
}

/// Whether an Elasticsearch `_bulk` URL path carries the index (`/<index>/_bulk`).
pub(crate) fn bulk_path_names_an_index(path: &str) -> bool {
    let mut segments = path.trim_end_matches('/').rsplit('/');
    segments.next() == Some("_bulk") && segments.next().is_some_and(|s| !s.is_empty())
}
