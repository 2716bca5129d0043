//! TLS client settings shared by every outbound connection (upstream, syslog, HTTP and Kafka
//! sinks): ring, TLS 1.2+, the web PKI roots plus the configured extra CA certificates.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;

/// A client configuration trusting the web roots and `extra_roots`.
///
/// # Errors
/// When a CA certificate cannot be used as a trust anchor.
pub fn client_config(
    extra_roots: &[CertificateDer<'static>],
) -> Result<rustls::ClientConfig, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra_roots {
        roots.add(cert.clone())?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// The HTTP/1.1 connector of every outbound HTTP client (the upstream, the HTTP sink): plain
/// `http` or TLS by the URI's scheme, Nagle off, connect attempts bounded by `connect_timeout`.
pub fn https_connector(
    tls: rustls::ClientConfig,
    connect_timeout: std::time::Duration,
) -> hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector> {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}

/// An error with its sources, `: `-joined, each cause once (the useful part, such as
/// "connection refused", is often a few levels down).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
