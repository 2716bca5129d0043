//! `[upstream]`: the SCIM service every request is forwarded to, and only it.

use std::path::PathBuf;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::Uri;
use rustls_pki_types::CertificateDer;
use serde::Deserialize;
use toml::Spanned;

use super::validate::Checker;

/// `[upstream]`: the SCIM service every request is forwarded to, and only it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    /// `http://` or `https://` base URL. The request's path and query are appended unchanged.
    url: Option<Spanned<String>>,
    /// Extra PEM CA bundle trusted for an `https` upstream, on top of the standard web roots.
    ca_file: Option<Spanned<PathBuf>>,
    /// Seconds to establish the TCP connection to the upstream (the TLS handshake counts
    /// against `response_timeout_secs`); then 504 with failure kind `connect_timeout`.
    #[serde(default = "default_connect_timeout_secs")]
    connect_timeout_secs: Spanned<f64>,
    /// Seconds from the start of forwarding (connecting, sending the head and streaming the
    /// request body) until the upstream's response head arrives; then 504 with failure kind
    /// `response_timeout`. A client that uploads slower than this also ends here.
    #[serde(default = "default_response_timeout_secs")]
    response_timeout_secs: Spanned<f64>,
    /// Seconds the upstream may stop sending its response body while the client is ready
    /// for more; then the response is cut, failure kind `response_body_timeout`.
    #[serde(default = "default_upstream_body_idle_timeout_secs")]
    body_idle_timeout_secs: Spanned<f64>,
    /// Forward the client's Host header instead of the upstream's authority.
    #[serde(default)]
    preserve_host: bool,
    /// Seconds an idle pooled upstream connection is kept.
    #[serde(default = "default_pool_idle_timeout_secs")]
    pool_idle_timeout_secs: Spanned<f64>,
}

defaults! {
    spanned {
        default_connect_timeout_secs: f64 = 5.0;
        default_response_timeout_secs: f64 = 30.0;
        default_upstream_body_idle_timeout_secs: f64 = 30.0;
        default_pool_idle_timeout_secs: f64 = 90.0;
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Path prefix of the upstream URL without a trailing slash ("" for none).
    pub base_path: String,
    pub extra_roots: Vec<CertificateDer<'static>>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// `body_idle_timeout_secs`: how long the response body may stall mid-stream.
    pub body_idle_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub preserve_host: bool,
}

impl UpstreamConfig {
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }
}

/// An upstream table (`[upstream]`, or a route's `upstream`, named by `section` in messages):
/// `None` when its url is unusable.
pub(super) fn validate_upstream(
    c: &mut Checker<'_>,
    upstream: &Spanned<RawUpstream>,
    section: &str,
) -> Option<UpstreamConfig> {
    let raw = upstream.get_ref();
    let key = |field: &str| format!("{section}.{field}");
    let connect_timeout = c.secs(&raw.connect_timeout_secs, &key("connect_timeout_secs"));
    let response_timeout = c.secs(&raw.response_timeout_secs, &key("response_timeout_secs"));
    let body_idle_timeout = c.secs(&raw.body_idle_timeout_secs, &key("body_idle_timeout_secs"));
    let pool_idle_timeout = c.secs(&raw.pool_idle_timeout_secs, &key("pool_idle_timeout_secs"));
    let Some(url) = &raw.url else {
        c.at(
            upstream.span(),
            &key("url"),
            format!("missing: [{section}] needs a `url`"),
        );
        return None;
    };
    let parsed = match url.get_ref().parse::<Uri>() {
        Ok(uri) => uri,
        Err(e) => {
            c.at(url.span(), &key("url"), format!("not a URL: {e}"));
            return None;
        }
    };
    let scheme = match parsed.scheme() {
        Some(s) if *s == Scheme::HTTP || *s == Scheme::HTTPS => s.clone(),
        _ => {
            c.at(
                url.span(),
                &key("url"),
                "must start with http:// or https://",
            );
            return None;
        }
    };
    let Some(authority) = parsed.authority().cloned() else {
        c.at(url.span(), &key("url"), "needs a host");
        return None;
    };
    if authority.as_str().contains('@') {
        c.at(
            url.span(),
            &key("url"),
            "must not carry credentials; scimtap forwards the client's own Authorization",
        );
        return None;
    }
    if parsed.query().is_some() {
        c.at(url.span(), &key("url"), "must not have a query string");
        return None;
    }
    let extra_roots = match &raw.ca_file {
        Some(ca) => {
            if scheme != Scheme::HTTPS {
                c.at(
                    ca.span(),
                    &key("ca_file"),
                    "only used with an https:// upstream url",
                );
            }
            c.certs(ca, &key("ca_file"))
        }
        None => Vec::new(),
    };
    Some(UpstreamConfig {
        scheme,
        authority,
        base_path: parsed.path().trim_end_matches('/').to_owned(),
        extra_roots,
        connect_timeout,
        response_timeout,
        body_idle_timeout,
        pool_idle_timeout,
        preserve_host: raw.preserve_host,
    })
}
