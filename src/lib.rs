//! scimtap: a transparent auditing reverse proxy for SCIM 2.0.
//!
//! An identity provider talks to scimtap instead of the SCIM service; scimtap forwards every
//! request and response unchanged and streaming, tees a copy of both bodies off the hot path,
//! and writes one structured audit event per exchange to its sinks.
//!
//! Stages, in the order data flows (one module each; docs/architecture.md draws them):
//!
//! | stage     | module        | role |
//! |-----------|---------------|------|
//! | config    | [`config`]    | parse, validate, resolve `proxy.toml`; every problem at once |
//! | accept    | [`listener`]  | TCP (+TLS) accept, HTTP/1.1 + HTTP/2, graceful drain |
//! | forward   | [`proxy`]     | named phases: request filter, upstream request, response; 502/504 |
//! | write-ahead | [`write_ahead`] | opt-in: a durable intent record before a SCIM write is forwarded |
//! | tee       | [`tee`]       | pass each frame through, keep a capped copy, report once |
//! | hand-off  | [`exchange`]  | both sides done → [`exchange::Exchange`] → the [`exchange::Auditor`] |
//! | audit     | [`pipeline`]  | hand-off queue → worker → one bounded queue per sink |
//! | classify  | [`scim`]      | SCIM meaning: operation, resource, target, actions, result |
//! | event     | [`event`]     | the JSON audit event(s) built from an exchange |
//! | format    | [`formats`]   | other line formats a sink may ask for (CEF, ECS, OCSF) |
//! | integrity | [`integrity`] | the hash chain sealed into native lines; `scimtap verify` |
//! | alerts    | [`alerts`]    | `[[alerts]]` rules over the events written; `alert.*` events, webhook |
//! | sinks     | [`sinks`]     | one folder per sink; dedicated threads, batches, retries, drops counted |
//! | buffer    | [`buffer`]    | a sink's optional crash-safe disk buffer |
//! | telemetry | [`telemetry`] | stderr logs and every Prometheus metric |
//! | admin     | [`admin`]     | `/healthz`, `/readyz`, `/metrics` |
//! | live view | [`ui`]        | `[ui]`: recent events (SSE), timelines, gaps, alerts, per hour |
//!
//! Shared by several stages: [`clients`] (who is calling: credentials reduced to a digest, the
//! matching `[[clients]]` entry), [`clock`] (timestamps and UUIDv7 ids), [`tls`] (outbound TLS).
//! Commands over audit files already written, outside the proxy's data flow: [`trail`] reads
//! native audit files back (for `state rebuild`, `trace` and `report`), [`trace`] tells one
//! user's story, [`report`] sums up a period for an auditor (HTML or JSON).
//! The request path (listener, proxy, write-ahead, tee, exchange) imports nothing from the audit
//! side: it reaches it only through [`exchange::Auditor`].
//!
//! The request path never waits on parsing, disk or a sink: audit work starts after the bytes
//! have been forwarded, behind bounded queues whose overflow is counted.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod admin;
pub mod alerts;
pub mod buffer;
pub mod clients;
pub mod clock;
pub mod config;
pub mod event;
pub mod exchange;
pub mod formats;
pub mod integrity;
pub mod listener;
pub mod pipeline;
pub mod proxy;
pub mod report;
pub mod scim;
pub mod sinks;
pub mod state;
pub mod tee;
pub mod telemetry;
pub mod tls;
pub mod trace;
pub mod trail;
pub mod ui;
pub mod write_ahead;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::sinks::{ReopenSignal, SinkThread};
use crate::telemetry::Metrics;

/// How often the audit worker looks for deprovisionings that became gaps (a gap is reported
/// at most this long after `confirm_within_secs` ran out) and at alert episodes (one resolves
/// at most this long after `resolve_after_secs` ran out, traffic or not).
const TICK: Duration = Duration::from_secs(1);

/// Why scimtap could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("sink `{sink}`: {source}")]
    Sink {
        sink: String,
        #[source]
        source: sinks::SinkError,
    },
    #[error("cannot start the {name} thread: {source}")]
    Thread {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(#[from] listener::TlsSetupError),
    #[error("upstream client: {0}")]
    Upstream(#[from] proxy::ProxyBuildError),
    #[error("[state]: {0}")]
    State(#[from] state::StateError),
}

/// A running scimtap: its bound addresses and the handles to stop it.
pub struct Running {
    /// Where the proxy accepts (the real port when the config asked for port 0).
    pub proxy_addr: SocketAddr,
    /// Every address it accepts on: `proxy_addr`, then `listen.extra_addresses`.
    pub proxy_addrs: Vec<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    /// Where the live view (`[ui]`) accepts.
    pub ui_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    serve: JoinHandle<()>,
    admin: Option<JoinHandle<()>>,
    ui: Option<JoinHandle<()>>,
    /// Asks for an `integrity.checkpoint` record every `checkpoint_interval_secs`.
    checkpoints: Option<JoinHandle<()>>,
    /// Asks the audit worker for due deprovisioning gaps and alert episodes every [`TICK`].
    ticks: Option<JoinHandle<()>>,
    pipeline: Pipeline,
    /// The alert webhook thread, to let it send what is queued at shutdown.
    webhook_drain: Option<alerts::WebhookDrain>,
    /// The request path's end of the hand-off (exchanges still in flight at shutdown).
    handoff: exchange::Handoff,
    sink_threads: Vec<SinkThread>,
    reopen: ReopenSignal,
    /// The request path, whose routes a reload replaces.
    proxy: Arc<proxy::Proxy>,
    shutdown_timeout: Duration,
    metrics: Arc<Metrics>,
    /// The configuration in force, to tell a reload what changed.
    config: std::sync::Mutex<Config>,
}

/// Builds every stage and starts serving. Sinks are opened first, so a bad sink path fails
/// before a port is bound.
///
/// # Errors
/// [`StartError`] naming the part that could not start.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let metrics = Metrics::new();
    let reopen = ReopenSignal::default();
    // Read where the chain left off before any sink writes.
    let (head, source) = integrity::resume_point(&config);
    let chain = integrity::Chain::resume(
        config.integrity.key.as_ref().map(|k| k.0.clone()),
        head.as_ref(),
    );
    tracing::info!(
        instance = chain.instance(),
        resumed_from_seq = head.as_ref().map(|h| h.seq),
        source,
        "Integrity chain ready."
    );
    // The live view follows the audit worker from its first event.
    let ui_setup = config.ui.as_ref().map(|c| ui::setup(c, &metrics));
    let chain_setup = pipeline::ChainSetup {
        chain,
        start: integrity::start_details(head.as_ref(), source),
        state_file: config.integrity.state_file.clone(),
        tap: ui_setup.as_ref().map(|s| s.tap.clone()),
    };

    let mut sink_handles = Vec::new();
    let mut sink_threads = Vec::new();
    for sink in &config.sinks {
        let (handle, thread) =
            sinks::start(sink, &metrics, reopen.clone()).map_err(|source| StartError::Sink {
                sink: sink.name.clone(),
                source,
            })?;
        sink_handles.push(handle);
        sink_threads.push(thread);
    }
    let sink_health: Vec<(String, Arc<AtomicBool>)> = sink_handles
        .iter()
        .map(|s| (s.name().to_owned(), s.health()))
        .collect();

    let tls = config
        .listen
        .tls
        .as_ref()
        .map(|tls| listener::tls_acceptor(tls, config.listen.tls_min_version))
        .transpose()?;
    let routes = pipeline::RouteStages::from_config(&config);
    // Opened here, once, so a bad state file or an unreachable state database fails startup
    // like a bad sink path; from then on only the audit worker's thread touches it. Opened on
    // a blocking thread: the PostgreSQL client runs a runtime of its own, which cannot start
    // on this one's threads.
    let state = match &config.state {
        Some(s) => {
            let (store, upstream) = (
                s.store.clone(),
                config.first_route().state_namespace.clone(),
            );
            let opened = tokio::task::spawn_blocking(move || {
                state::Store::open_configured(&store, &upstream)
            })
            .await
            .map_err(|_| StartError::Thread {
                name: "state-open",
                source: std::io::Error::other("the thread opening the state store panicked"),
            })?;
            Some(pipeline::StateStage {
                store: opened?,
                confirm_within: s.confirm_within,
                settle: s.settle,
                batched: 0,
            })
        }
        None => None,
    };
    let mut alerts = alerts::Alerts::start(&config.alerts, &routes.alert_routes(), &metrics)
        .map_err(|source| StartError::Thread {
            name: "alert-webhook",
            source,
        })?;
    let webhook_drain = alerts.as_mut().and_then(alerts::Alerts::webhook_drain);
    let (audit_queue, pipeline) = Pipeline::start(
        config.audit.queue_max_events,
        routes,
        sink_handles,
        chain_setup,
        state,
        alerts,
        &metrics,
    )
    .map_err(|source| StartError::Thread {
        name: "audit-worker",
        source,
    })?;
    let capture = tee::CaptureLimits {
        max_body_bytes: config.capture.max_body_bytes,
        budget: exchange::CaptureBudget::new(
            config.capture.max_pending_bytes,
            metrics.capture_budget_exhausted.clone(),
        ),
    };
    let handoff = exchange::Handoff::new(Arc::new(audit_queue.clone()));
    let proxy = Arc::new(proxy::Proxy::new(
        &config.routes,
        &config.scim,
        capture,
        handoff.clone(),
        proxy::RequestPolicy::from_config(&config),
        metrics.clone(),
    )?);

    let bind = |address: SocketAddr| async move {
        TcpListener::bind(address)
            .await
            .map_err(|source| StartError::Bind { address, source })
    };
    let mut tcp = Vec::new();
    let mut proxy_addrs = Vec::new();
    for address in config.listen.addresses() {
        let bound = bind(address).await?;
        proxy_addrs.push(
            bound
                .local_addr()
                .map_err(|source| StartError::Bind { address, source })?,
        );
        tcp.push(bound);
    }
    let proxy_addr = proxy_addrs[0];
    let (shutdown, shutdown_rx) = watch::channel(false);

    let listening = Arc::new(AtomicBool::new(false));
    let (admin, admin_addr) = match &config.admin {
        Some(admin) => {
            let tcp = bind(admin.address).await?;
            let addr = tcp.local_addr().map_err(|source| StartError::Bind {
                address: admin.address,
                source,
            })?;
            let readiness = admin::Readiness {
                listening: listening.clone(),
                sinks: sink_health,
                proxy: Some(proxy.clone()),
            };
            let task = tokio::spawn(admin::serve(
                tcp,
                metrics.clone(),
                readiness,
                shutdown_rx.clone(),
            ));
            tracing::info!(address = %addr, "Admin listening.");
            (Some(task), Some(addr))
        }
        None => (None, None),
    };
    let (ui_task, ui_addr) = match (&config.ui, ui_setup) {
        (Some(ui_config), Some(setup)) => {
            let tcp = bind(ui_config.address).await?;
            let addr = tcp.local_addr().map_err(|source| StartError::Bind {
                address: ui_config.address,
                source,
            })?;
            // The tap stays with the audit worker alone: when the worker ends, so does the feed.
            drop(setup.tap);
            let task = tokio::spawn(ui::serve(tcp, setup.ui, shutdown_rx.clone()));
            ui::log_listening(addr);
            (Some(task), Some(addr))
        }
        _ => (None, None),
    };

    let listener = listener::Listener {
        tcp,
        tls,
        proxy: proxy.clone(),
        config: config.listen.clone(),
        metrics: metrics.clone(),
    };
    // The drain gets the shutdown deadline minus a reserve for writing the events out.
    let flush_reserve = (config.shutdown_timeout / 3).min(Duration::from_secs(5));
    let drain = config.shutdown_timeout.saturating_sub(flush_reserve);
    // The deprovisioning tracker reports gaps when they fall due, and alert episodes resolve,
    // traffic or not.
    let ticks = (config.state.is_some() || !config.alerts.is_empty()).then(|| {
        let queue = audit_queue.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            loop {
                tick.tick().await;
                queue.tick();
            }
        })
    });
    let checkpoints = (!config.integrity.checkpoint_interval.is_zero()).then(|| {
        let queue = audit_queue;
        let every = config.integrity.checkpoint_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                queue.checkpoint();
            }
        })
    });
    let serve = tokio::spawn(listener.serve(shutdown_rx, drain));
    listening.store(true, Ordering::Relaxed);
    // One line per address, `listen.address` first (the line tools look for).
    for address in &proxy_addrs {
        tracing::info!(
            %address,
            tls = config.listen.tls.is_some(),
            routes = config.routes.len(),
            "Proxy listening."
        );
    }
    for route in &config.routes {
        let u = &route.upstream;
        tracing::info!(
            route = %route.name,
            listen = route.listen.map(|(a, _)| a.to_string()),
            host = route.host.as_deref(),
            path_prefix = route.path_prefix.as_deref(),
            upstream = %format_args!("{}://{}{}", u.scheme, u.authority, u.base_path),
            "Route ready."
        );
    }

    Ok(Running {
        proxy_addr,
        proxy_addrs,
        admin_addr,
        ui_addr,
        shutdown,
        serve,
        admin,
        ui: ui_task,
        checkpoints,
        ticks,
        pipeline,
        webhook_drain,
        handoff,
        sink_threads,
        reopen,
        proxy,
        shutdown_timeout: config.shutdown_timeout,
        metrics,
        config: std::sync::Mutex::new(config),
    })
}

impl Running {
    /// Asks every sink to reopen its output (SIGHUP, after external log rotation).
    pub fn reopen_sinks(&self) {
        self.reopen.trigger();
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// SIGHUP: reads and validates `path` again. A valid file's routes (`[[routes]]` or
    /// `[upstream]`, with the allow-list) take effect for the requests that start from then
    /// on, while requests in flight finish on the route they started on; its event settings
    /// (`[scim]`, `[[clients]]` naming, `[redact]`, `[privacy]`, `[capture] include_bodies`)
    /// take effect at once for every exchange not yet described, swapped in one step by the
    /// audit worker; sections that need a restart (listen, admin, ui, sinks, audit, integrity,
    /// state, alerts) are named in the log and keep their running values. An invalid file
    /// changes nothing. Either way file sinks reopen (log rotation). Counted in
    /// `scimtap_config_reloads_total{result}`.
    pub async fn reload(&self, path: &std::path::Path) -> bool {
        self.reopen.trigger();
        let count = |result| {
            self.metrics
                .config_reloads
                .get_or_create(&telemetry::ResultLabels { result })
                .inc();
        };
        let new = match Config::load(path) {
            Ok(new) => new,
            Err(error) => {
                count("failure");
                tracing::error!(%error, "Configuration reload refused; the running configuration stays.");
                return false;
            }
        };
        let (restart_needed, change) = {
            let old = self
                .config
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let restart_needed = changed_sections_needing_restart(&old, &new);
            let change = settings_change(&old, &new, path, &restart_needed);
            (restart_needed, change)
        };
        let routes = match self.proxy.prepare_routes(&new.routes, &new.scim) {
            Ok(routes) => routes,
            Err(error) => {
                count("failure");
                tracing::error!(%error, "Configuration reload refused; the running configuration stays.");
                return false;
            }
        };
        // The audit worker learns the new routes before the first request on them can end.
        if !self
            .pipeline
            .reconfigure(pipeline::RouteStages::from_config(&new), change)
            .await
        {
            count("failure");
            tracing::error!("Configuration reload could not reach the audit worker; the running configuration stays.");
            return false;
        }
        let changed_routes = self.proxy.install_routes(routes);
        if !changed_routes.is_empty() {
            tracing::info!(routes = %changed_routes.join(", "), "Routes added, changed or removed.");
        }
        count("success");
        if restart_needed.is_empty() {
            tracing::info!("Configuration reloaded.");
        } else {
            tracing::warn!(
                sections = %restart_needed.join(", "),
                "Configuration reloaded; changes to these sections take effect only after a restart."
            );
        }
        *self
            .config
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = new;
        true
    }

    /// Stops accepting, drains in-flight exchanges, writes out every queued event and closes
    /// the sinks, all within the configured `shutdown_timeout_secs`. Returns true when
    /// everything finished in time.
    pub async fn shutdown(self) -> bool {
        let deadline = Instant::now() + self.shutdown_timeout;
        let remaining = || deadline.saturating_duration_since(Instant::now());
        let _ = self.shutdown.send(true);
        if let Some(ticks) = &self.ticks {
            ticks.abort();
        }
        if let Some(checkpoints) = &self.checkpoints {
            checkpoints.abort();
        }
        // The listener drains within its share of the deadline (the rest is kept for writing
        // the events out), then closes what is left.
        let _ = self.serve.await;
        // Exchanges can still finish after their connection closed (the upstream side ends
        // in the upstream client's task); wait for them before closing the hand-off.
        let mut clean = self.handoff.wait_idle(remaining()).await;
        if !clean {
            tracing::warn!("Exchanges still in flight at the shutdown deadline.");
        }
        clean &= tokio::time::timeout(remaining(), self.pipeline.close())
            .await
            .is_ok();
        for thread in self.sink_threads {
            let name = thread.name.clone();
            if tokio::time::timeout(remaining(), thread.finished())
                .await
                .is_err()
            {
                tracing::error!(sink = %name, "Sink did not finish writing before the shutdown deadline.");
                clean = false;
            }
        }
        // The audit worker is done, so the webhook queue is closed: what is in it is sent for
        // up to WEBHOOK_DRAIN, within the deadline left. A notification, not an audit event:
        // what is not sent does not make the shutdown unclean.
        if let Some(drain) = self.webhook_drain {
            drain.wait(remaining().min(alerts::WEBHOOK_DRAIN)).await;
        }
        if let Some(admin) = self.admin {
            admin.abort();
        }
        if let Some(ui) = self.ui {
            ui.abort();
        }
        if clean {
            tracing::info!("Shutdown complete; every queued event was written.");
        } else {
            tracing::warn!("Shutdown deadline reached before every event was written.");
        }
        clean
    }
}

/// The event settings a reload swaps in that differ between `old` and `new`, by their
/// configuration names, in alphabetical order. Key material is compared, never shown.
fn changed_event_settings(old: &Config, new: &Config) -> Vec<&'static str> {
    event_settings(old, new)
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| name)
        .collect()
}

/// Every setting a reload swaps in (the `changed` names of `integrity.reload`), in
/// alphabetical order, and whether it differs between `old` and `new`.
fn event_settings(old: &Config, new: &Config) -> [(&'static str, bool); 8] {
    let debug = |v: &dyn std::fmt::Debug| format!("{v:?}");
    let (o, n) = (&old.scim, &new.scim);
    let key = |s: &config::ScimConfig| s.hash_key.as_ref().map(|k| k.0.clone());
    [
        (
            "capture.include_bodies",
            old.capture.include_bodies != new.capture.include_bodies,
        ),
        // Names, tokens' SHA-256, subjects, idps: compared, not shown.
        ("clients", debug(&o.clients) != debug(&n.clients)),
        (
            "privacy.hash_key_file",
            o.hash_key_file != n.hash_key_file || key(o) != key(n),
        ),
        (
            "redact.attributes",
            o.redact_attributes != n.redact_attributes,
        ),
        (
            "redact.query_params",
            o.redact_query_params != n.redact_query_params,
        ),
        ("routes", debug(&old.routes) != debug(&new.routes)),
        ("scim.base_path", o.base_path != n.base_path),
        ("scim.resource_types", o.resource_types != n.resource_types),
    ]
}

/// What the `integrity.reload` record says: the file, the event settings that changed, the
/// sections waiting for a restart, and, when the pseudonymisation key changed, the path of its
/// file (never its content).
fn settings_change(
    old: &Config,
    new: &Config,
    path: &std::path::Path,
    restart_needed: &[&'static str],
) -> pipeline::SettingsChange {
    let changed = changed_event_settings(old, new);
    let mut details = serde_json::json!({
        "config_file": path.display().to_string(),
        "changed": changed,
        "restart_required": restart_needed,
    });
    if changed.contains(&"privacy.hash_key_file") {
        details["key_files"] = serde_json::json!({
            "privacy.hash_key_file": new.scim.hash_key_file.as_ref().map(|p| p.display().to_string()),
        });
    }
    pipeline::SettingsChange { changed, details }
}

/// The sections of `new` that differ from `old` and are only read at startup. Compared by
/// their Debug form, which never shows key material (so a changed key file's content is not
/// seen; its path is).
fn changed_sections_needing_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let differs =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let sections: [(&'static str, &dyn std::fmt::Debug, &dyn std::fmt::Debug); 8] = [
        ("listen", &old.listen, &new.listen),
        ("admin", &old.admin, &new.admin),
        // The token is compared by length only (Debug): a new token needs a restart anyway.
        ("ui", &old.ui, &new.ui),
        ("sinks", &old.sinks, &new.sinks),
        ("audit", &old.audit, &new.audit),
        ("integrity", &old.integrity, &new.integrity),
        // The audit worker opens the store once; a reload keeps the one it has.
        ("state", &old.state, &new.state),
        // The audit worker builds the rules' windows once.
        ("alerts", &old.alerts, &new.alerts),
    ];
    let mut changed: Vec<&'static str> = sections
        .into_iter()
        .filter(|(_, a, b)| differs(*a, *b))
        .map(|(name, ..)| name)
        .collect();
    if old.capture.max_body_bytes != new.capture.max_body_bytes
        || old.capture.max_pending_bytes != new.capture.max_pending_bytes
        || old.shutdown_timeout != new.shutdown_timeout
    {
        changed.push("capture/shutdown_timeout_secs");
    }
    // Debug shows a key's length only: a rotated key of the same length is found here.
    let kafka_passwords = |c: &Config| -> Vec<config::SecretKey> {
        c.sinks
            .iter()
            .filter_map(|s| match &s.kind {
                config::SinkKind::Kafka(k) => k.sasl.as_ref().map(|sasl| sasl.password.clone()),
                _ => None,
            })
            .collect()
    };
    let rotated = [
        ("integrity", old.integrity.key != new.integrity.key),
        (
            "ui",
            old.ui.as_ref().map(|u| &u.token) != new.ui.as_ref().map(|u| &u.token),
        ),
        ("sinks", kafka_passwords(old) != kafka_passwords(new)),
    ];
    for (name, differs) in rotated {
        if differs && !changed.contains(&name) {
            changed.push(name);
        }
    }
    changed
}

/// Resolves once `shutdown` turns true (or its sender is gone). Kept as a function so no
/// watch guard lives across an await in the callers' `select!`.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    fn config(extra: &str) -> crate::config::Config {
        let text = format!(
            "[listen]\naddress = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:9\"\n[[sinks]]\ntype = \"stdout\"\n{extra}"
        );
        crate::config::Config::from_toml_str(&text, std::path::Path::new("proxy.toml")).unwrap()
    }

    #[test]
    fn every_setting_a_reload_names_is_in_the_record_schema() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(root.join("docs/integrity-record.schema.json")).unwrap();
        let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
        let documented: Vec<String> = schema
            .pointer("/oneOf/0/properties/details/properties/changed/items/enum")
            .and_then(|e| serde_json::from_value(e.clone()).ok())
            .expect("the integrity.reload record's details.changed enum in the schema");
        let c = config("");
        let named: Vec<&str> = crate::event_settings(&c, &c)
            .iter()
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(named, documented);
        assert!(crate::event_settings(&c, &c)
            .iter()
            .all(|(_, changed)| !changed));
    }

    #[test]
    fn a_reload_names_the_event_settings_that_changed_and_no_secret() {
        let old = config("");
        assert!(super::changed_event_settings(&old, &config("")).is_empty());
        let new = config(
            "[capture]\ninclude_bodies = \"redacted\"\n[redact]\nattributes = [\"ssn\"]\n\
             [[clients]]\nname = \"okta\"\ntoken_sha256 = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n",
        );
        assert_eq!(
            super::changed_event_settings(&old, &new),
            ["capture.include_bodies", "clients", "redact.attributes"]
        );
        let change = super::settings_change(&old, &new, std::path::Path::new("proxy.toml"), &[]);
        let details = change.details.to_string();
        assert!(!details.contains("aaaa"), "{details}");
        assert_eq!(change.details["config_file"], "proxy.toml");
    }

    #[test]
    fn a_reload_notices_a_key_rotated_to_one_of_the_same_length() {
        let dir = tempfile::tempdir().unwrap();
        let (token, key) = (dir.path().join("ui.token"), dir.path().join("chain.key"));
        // The same files each time, so only their content can tell the configs apart.
        let with = |content: &str| {
            std::fs::write(&token, content).unwrap();
            std::fs::write(&key, content).unwrap();
            config(&format!(
                "[ui]\ntoken_file = '{}'\n[integrity]\nkey_file = '{}'\n",
                token.display(),
                key.display()
            ))
        };
        let old = with(&"a".repeat(40));
        let same = with(&"a".repeat(40));
        assert!(super::changed_sections_needing_restart(&old, &same).is_empty());
        let rotated = with(&"b".repeat(40));
        assert_eq!(
            super::changed_sections_needing_restart(&old, &rotated),
            ["integrity", "ui"]
        );
    }

    /// The request path's modules: what forwards bytes and records the exchange.
    const REQUEST_PATH: &[&str] = &[
        "src/listener.rs",
        "src/proxy.rs",
        "src/proxy/route.rs",
        "src/proxy/tests.rs",
        "src/tee.rs",
        "src/tee/tests.rs",
        "src/exchange.rs",
        "src/write_ahead.rs",
    ];

    /// The audit side, which the request path reaches only through `exchange::Auditor`.
    const AUDIT_SIDE: &[&str] = &[
        "pipeline",
        "event",
        "formats",
        "integrity",
        "sinks",
        "state",
        "alerts",
        "ui",
    ];

    /// docs/architecture.md gives the same check as a command:
    /// `grep -nE 'crate::(\{[^}]*)?(pipeline|event|formats|integrity|sinks|state|alerts|ui)\b' src/{listener,proxy,tee,exchange,write_ahead}.rs src/{proxy,tee}/*.rs`
    #[test]
    fn the_request_path_imports_nothing_from_the_audit_side() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut found = Vec::new();
        for file in REQUEST_PATH {
            let text = std::fs::read_to_string(root.join(file)).unwrap();
            let code: String = text
                .lines()
                .map(|line| line.split("//").next().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n");
            // Every module named after `crate::`, alone or in a `crate::{a, b::c}` group.
            for (at, _) in code.match_indices("crate::") {
                let rest = &code[at + "crate::".len()..];
                let named: Vec<&str> = match rest.strip_prefix('{') {
                    Some(group) => group
                        .split('}')
                        .next()
                        .unwrap_or_default()
                        .split(',')
                        .map(str::trim)
                        .collect(),
                    None => vec![rest],
                };
                for name in named {
                    let module = name
                        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .next()
                        .unwrap_or_default();
                    if AUDIT_SIDE.contains(&module) {
                        let line = code[..at].matches('\n').count() + 1;
                        found.push(format!("{file}:{line}: crate::{module}"));
                    }
                }
            }
        }
        assert!(
            found.is_empty(),
            "request path imports the audit side:\n{}",
            found.join("\n")
        );
    }
}
