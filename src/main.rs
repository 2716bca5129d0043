//! The `scimtap` command: parse the command line, load the configuration, run.
//!
//! Exit codes: 0 clean stop (every event written), 1 runtime failure or events left unwritten
//! at the shutdown deadline, 2 command-line usage error (clap), 64 bad configuration;
//! `verify`: 10-14 for a broken chain, 66 for unreadable files; `trace`: 1 when nothing names
//! the user (as grep: 0 found, 1 not found), 66 for an unreadable audit or state file;
//! `report`: verify's 10-14 when the chain is broken (the report is written all the same).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use scimtap::config::Config;

/// mimalloc: the audit side allocates and frees many small objects per exchange (parsed
/// bodies, event fields); glibc malloc was a fifth of scimtap's CPU under load
/// (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for a configuration the user must fix (EX_USAGE, as linkerd2-proxy).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(version, about = "Transparent auditing reverse proxy for SCIM 2.0")]
struct Cli {
    /// Configuration file [default: proxy.toml]. `verify` reads it only when given (here or
    /// in `SCIMTAP_CONFIG`), for the chain's key.
    #[arg(long, short, env = "SCIMTAP_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Validate the configuration and exit, binding nothing.
    CheckConfig,
    /// Probe the admin listener (for container health checks): exit 0 on 200, else 1.
    Healthcheck(HealthcheckArgs),
    /// Check the hash chain of audit files: OK with the count, or the first broken seq and
    /// what broke (exit 10 edited, 11 deleted, 12 inserted, 13 reordered, 14 truncated).
    Verify(VerifyArgs),
    /// The shadow state (`[state]`).
    #[command(subcommand)]
    State(StateCommand),
    /// Everything that happened to one user, oldest first: created, changed before → after,
    /// groups gained and lost, deactivated, deprovisioning confirmed; failed attempts and
    /// retries included. From native audit files, and the state file when one is at hand.
    /// Exit 0 when an event names the user, 1 when none does.
    Trace(TraceArgs),
    /// An auditor's report of audit files over a period, as one self-contained HTML page (or
    /// JSON): counts by action and outcome, a chart, every deprovisioning with its
    /// confirmation and latency, failures by reason, alerts, and the chain's verification.
    /// Exit 0, or verify's 10-14 when the chain is broken (the report is written either way).
    Report(ReportArgs),
}

#[derive(Subcommand)]
enum StateCommand {
    /// Rebuild the state file from native audit files (integrity records skipped; events
    /// replayed in timestamp order). Attribute values come back only from events written with
    /// `include_bodies = "redacted"`; otherwise ids, names, `active` and memberships.
    Rebuild(RebuildArgs),
}

#[derive(clap::Args)]
struct RebuildArgs {
    /// Native audit files (`*.jsonl`), rotated ones included, or directories of them, in any
    /// order.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// A SQLite state file to write instead of the configuration's `[state]` store.
    #[arg(long, value_name = "PATH")]
    state_file: Option<PathBuf>,
    /// Replace the state when it exists (a SQLite file is removed first, with its -wal/-shm
    /// files; in PostgreSQL, this upstream's rows are deleted).
    #[arg(long)]
    replace: bool,
}

#[derive(clap::Args)]
struct TraceArgs {
    /// The user: an id, a userName (any case; its pseudonym too when the configuration has
    /// `[privacy] hash_key_file`) or an externalId.
    #[arg(long, value_name = "USER")]
    user: String,
    /// One JSON object per entry and line, for scripts (fields: docs/answers.md).
    #[arg(long)]
    json: bool,
    /// A state file to find the user and name groups in, instead of the configuration's
    /// `[state] path`. Opened read-only: a running scimtap may be writing it.
    #[arg(long, value_name = "PATH")]
    state_file: Option<PathBuf>,
    /// With `[[routes]]`: whose shadow state to read (the route's `state_namespace`; default
    /// the first route). The audit files are read whole, every route's events included.
    #[arg(long, value_name = "NAME")]
    route: Option<String>,
    /// Native audit files (rotated ones too: audit.jsonl*), or directories of them, in any
    /// order. May be left out with a state file: the trace is then what the state holds.
    files: Vec<PathBuf>,
}

#[derive(clap::Args)]
struct ReportArgs {
    /// Start of the period (inclusive): RFC 3339 (`2026-11-22T09:00:00Z`, offsets too) or a
    /// UTC date (`2026-11-22`, its midnight). Default: the first event.
    #[arg(long, value_name = "TIME", value_parser = scimtap::report::parse_from)]
    from: Option<std::time::SystemTime>,
    /// End of the period (exclusive): RFC 3339, or a UTC date standing for the end of that
    /// day (`--from 2026-11-01 --to 2026-11-30` is all of November). Default: the last event.
    #[arg(long, value_name = "TIME", value_parser = scimtap::report::parse_to)]
    to: Option<std::time::SystemTime>,
    /// Only the events of this route (`[[routes]]` name; `default` without routes), for one
    /// app's report. The integrity check still reads every line.
    #[arg(long, value_name = "NAME")]
    route: Option<String>,
    /// `html` (one self-contained page) or `json` (the same numbers; fields: docs/report.md).
    #[arg(long, value_enum, default_value = "html")]
    format: ReportFormat,
    /// Write the report to FILE instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    out: Option<PathBuf>,
    /// The chain's HMAC key (the file `integrity.key_file` names), as for `verify`.
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,
    /// Accept a chain that does not end with a clean stop (a running instance's file).
    #[arg(long)]
    allow_open: bool,
    /// Native audit files in chain order (rotated files oldest first), or directories of
    /// them, as for `verify`.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ReportFormat {
    Html,
    Json,
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// Audit files in chain order (rotated files oldest first: audit.jsonl.2 audit.jsonl.1
    /// audit.jsonl), or a directory (its files are put in that order).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Accept a chain that does not end with a clean stop (a running instance's file).
    #[arg(long)]
    allow_open: bool,
    /// Start at the record whose prev_hash is HASH (when only later rotated files are at
    /// hand: HASH is the last hash of the file before, e.g. from a checkpoint you kept).
    #[arg(long, value_name = "HASH", conflicts_with = "start_anywhere")]
    start_hash: Option<String>,
    /// Start at whatever record comes first, trusting it; checks only the rest.
    #[arg(long)]
    start_anywhere: bool,
    /// The chain's HMAC key (the file `integrity.key_file` names). Without it, and without
    /// `--config`, the chain is checked as plain SHA-256 (no `integrity.key_file`).
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,
}

#[derive(clap::Args)]
struct HealthcheckArgs {
    /// Admin listener to probe (`http://HOST:PORT`, or a full URL) instead of the config's
    /// `[admin] address`.
    #[arg(long)]
    url: Option<String>,
    /// Probe `/healthz` (the process is up) instead of `/readyz` (listening, sinks writing).
    #[arg(long)]
    liveness: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 5.0)]
    timeout_secs: f64,
}

/// Used when neither `--config` nor `SCIMTAP_CONFIG` names the file.
const DEFAULT_CONFIG: &str = "proxy.toml";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config_path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    match &cli.command {
        Some(Command::Healthcheck(args)) => return healthcheck(&config_path, args),
        // Needs only the key: no configuration unless one was named.
        Some(Command::Verify(args)) => return verify(cli.config.as_deref(), args),
        // The same: a configuration only when named, for the state file and privacy key.
        Some(Command::Trace(args)) => return trace(cli.config.as_deref(), args),
        // The same as verify: a configuration only when named, for the chain's key.
        Some(Command::Report(args)) => return report(cli.config.as_deref(), args),
        _ => {}
    }
    scimtap::telemetry::init_logging();
    let config = match Config::load(&config_path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("scimtap: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => {
            println!(
                "{}: OK (listen {}, {}, {} sink{})",
                config_path.display(),
                config.listen.address,
                describe_routes(&config),
                config.sinks.len(),
                if config.sinks.len() == 1 { "" } else { "s" }
            );
            ExitCode::SUCCESS
        }
        // Both handled above, before the configuration is loaded; kept for completeness.
        Command::Healthcheck(args) => healthcheck(&config_path, &args),
        Command::Verify(args) => verify(cli.config.as_deref(), &args),
        Command::Trace(args) => trace(cli.config.as_deref(), &args),
        Command::Report(args) => report(cli.config.as_deref(), &args),
        Command::State(StateCommand::Rebuild(args)) => rebuild_state(&config, &args),
        Command::Run => match run(config, &config_path) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("scimtap: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `upstream URL` for the implicit route, else `N routes: name → URL, ...`.
fn describe_routes(config: &Config) -> String {
    let url = |u: &scimtap::config::UpstreamConfig| {
        format!("{}://{}{}", u.scheme, u.authority, u.base_path)
    };
    match &config.routes[..] {
        [only] if only.name == scimtap::config::DEFAULT_ROUTE => {
            format!("upstream {}", url(&only.upstream))
        }
        routes => format!(
            "{} route{}: {}",
            routes.len(),
            if routes.len() == 1 { "" } else { "s" },
            routes
                .iter()
                .map(|r| format!("{} -> {}", r.name, url(&r.upstream)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `scimtap state rebuild`: 0 with the counts, 64 without a state file to write (no
/// `[state]`, no `--state-file`) or when it exists without `--replace`, 1 when a file cannot
/// be read or the store fails.
fn rebuild_state(config: &Config, args: &RebuildArgs) -> ExitCode {
    use scimtap::config::StateStore;
    let namespaces = scimtap::state::rebuild::Namespaces {
        routes: config
            .routes
            .iter()
            .map(|r| (r.name.clone(), r.state_namespace.clone()))
            .collect(),
    };
    let upstream = config.first_route().state_namespace.as_str();
    let target = match (&args.state_file, config.state.as_ref().map(|s| &s.store)) {
        (Some(path), _) => StateStore::Sqlite(path.clone()),
        (None, Some(store)) => store.clone(),
        (None, None) => {
            eprintln!("scimtap: no state file: add a [state] section or pass --state-file");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let shown = match &target {
        StateStore::Sqlite(path) => path.display().to_string(),
        StateStore::Postgres(pg) => pg.to_string(),
    };
    if let StateStore::Sqlite(path) = &target {
        if path.exists() {
            if !args.replace {
                eprintln!(
                    "scimtap: {} exists; pass --replace to rebuild it from the audit files",
                    path.display()
                );
                return ExitCode::from(EXIT_CONFIG);
            }
            for suffix in ["", "-wal", "-shm"] {
                let mut file = path.clone().into_os_string();
                file.push(suffix);
                let _ = std::fs::remove_file(file);
            }
        }
    }
    let mut store = match scimtap::state::Store::open_configured(&target, upstream) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("scimtap: {error}");
            return ExitCode::FAILURE;
        }
    };
    // A shared database keeps other upstreams' rows: only the routes' namespaces are replaced.
    if matches!(target, StateStore::Postgres(_)) {
        let mut seen: Vec<&str> = Vec::new();
        for (_, namespace) in &namespaces.routes {
            if seen.contains(&namespace.as_str()) {
                continue;
            }
            seen.push(namespace);
            store.use_namespace(namespace);
            let emptied = match store.count() {
                Ok(0) => Ok(()),
                Ok(_) if args.replace => store.clear(),
                Ok(known) => {
                    eprintln!(
                        "scimtap: {shown} already holds {known} resources of {namespace}; pass \
                         --replace to rebuild them from the audit files"
                    );
                    return ExitCode::from(EXIT_CONFIG);
                }
                Err(error) => Err(error),
            };
            if let Err(error) = emptied {
                eprintln!("scimtap: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    let files = match scimtap::trail::expand(&args.files) {
        Ok(files) => files,
        Err(error) => {
            eprintln!("scimtap: {error}");
            return ExitCode::FAILURE;
        }
    };
    let files: Vec<&std::path::Path> = files.iter().map(PathBuf::as_path).collect();
    let confirm_within = config
        .state
        .as_ref()
        .map_or(scimtap::config::DEFAULT_CONFIRM_WITHIN, |s| {
            s.confirm_within
        });
    match scimtap::state::rebuild::rebuild(&mut store, &files, confirm_within, &namespaces) {
        Ok(report) => {
            println!(
                "{shown}: rebuilt from {} events ({} lines skipped)",
                report.events, report.skipped
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("scimtap: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Exit code for an audit or state file that cannot be read (EX_NOINPUT, as `verify`).
const EXIT_NO_INPUT: u8 = 66;

/// `scimtap trace`: 0 when an event (or the state) names the user, 1 when none does, 2 for
/// nothing to read or stdout failing, 64 for a configuration that cannot be read, 66 for an audit or state
/// file that cannot be read. The configuration is read only when named (`--config`,
/// `SCIMTAP_CONFIG`): for `[state] path`, the upstream whose state to read and the
/// `[privacy]` key.
fn trace(config: Option<&std::path::Path>, args: &TraceArgs) -> ExitCode {
    use scimtap::trace::{Lookup, TraceError};
    let config = match config.map(Config::load).transpose() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("scimtap: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // A state file named on the command line must open; the configuration's is used when
    // it is there (the trace may run on another machine than the proxy).
    let state_path = match (
        &args.state_file,
        config
            .as_ref()
            .and_then(|c| c.state.as_ref())
            .map(|s| &s.store),
    ) {
        (Some(path), _) => Some(path.clone()),
        (None, Some(scimtap::config::StateStore::Sqlite(path))) if path.exists() => {
            Some(path.clone())
        }
        (None, Some(scimtap::config::StateStore::Sqlite(path))) => {
            eprintln!(
                "scimtap: note: the state file {} does not exist; tracing from the audit files alone",
                path.display()
            );
            None
        }
        (None, Some(scimtap::config::StateStore::Postgres(_))) => {
            eprintln!(
                "scimtap: note: trace reads a SQLite state file only; tracing from the audit files alone"
            );
            None
        }
        (None, None) => None,
    };
    if args.files.is_empty() && state_path.is_none() {
        eprintln!("scimtap: trace needs audit files (or a state file) to read");
        return ExitCode::from(2);
    }
    let upstream = match (&config, &args.route) {
        (Some(c), Some(name)) => match c.routes.iter().find(|r| &r.name == name) {
            Some(route) => Some(route.state_namespace.clone()),
            None => {
                eprintln!("scimtap: no route named {name} in {}", c.origin.display());
                return ExitCode::from(2);
            }
        },
        (None, Some(_)) => {
            eprintln!("scimtap: --route needs the configuration (--config) that names it");
            return ExitCode::from(2);
        }
        (Some(c), None) => Some(c.first_route().state_namespace.clone()),
        (None, None) => None,
    };
    let store = match state_path
        .as_deref()
        .map(|path| scimtap::state::Store::open_read_only(path, upstream.as_deref()))
        .transpose()
    {
        Ok(store) => store,
        Err(error @ scimtap::state::StateError::SeveralUpstreams { .. }) => {
            eprintln!("scimtap: {error}; name the upstream's configuration with --config");
            return ExitCode::from(2);
        }
        Err(error) => {
            eprintln!("scimtap: {error}");
            return ExitCode::from(EXIT_NO_INPUT);
        }
    };
    let pseudonymizer = config
        .as_ref()
        .and_then(|c| c.scim.hash_key.as_ref())
        .map(|key| scimtap::scim::Pseudonymizer::new(key.0.clone()));
    let lookup = Lookup {
        user: &args.user,
        pseudonymizer: pseudonymizer.as_ref(),
        state: store.as_ref(),
    };
    let traced = scimtap::trail::expand(&args.files)
        .map_err(TraceError::from)
        .and_then(|files| {
            let files: Vec<&std::path::Path> = files.iter().map(PathBuf::as_path).collect();
            scimtap::trace::trace(&files, &lookup)
        });
    let trace = match traced {
        Ok(trace) => trace,
        Err(error) => {
            eprintln!("scimtap: {error}");
            return ExitCode::from(EXIT_NO_INPUT);
        }
    };
    if !trace.found() {
        eprintln!(
            "scimtap: no event names {:?} (as id, userName or externalId) in {} event{} read",
            args.user,
            trace.events_read,
            if trace.events_read == 1 { "" } else { "s" }
        );
        if trace.pseudonyms_unmatched {
            eprintln!(
                "scimtap: the files hold pseudonymised userNames: pass --config with the [privacy] hash_key_file they were written with, or look for the id or externalId"
            );
        }
        return ExitCode::FAILURE;
    }
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        scimtap::trace::write_json(&trace, &mut out)
    } else {
        scimtap::trace::write_text(&trace, &args.user, &mut out)
    };
    match written.and_then(|()| std::io::Write::flush(&mut out)) {
        Ok(()) => ExitCode::SUCCESS,
        // `scimtap trace ... | head`: the reader had enough.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        // Not 1: that says "not found".
        Err(error) => {
            eprintln!("scimtap: cannot write the trace: {error}");
            ExitCode::from(2)
        }
    }
}

/// `scimtap report`: writes the report, then exits 0 for an intact chain (or none to check)
/// or verify's 10-14 for a broken one; 2 for a period that ends before it starts, 64 for a key
/// or configuration that cannot be read, 66 for an audit file that cannot be read, 1 when the
/// report cannot be written.
fn report(config: Option<&std::path::Path>, args: &ReportArgs) -> ExitCode {
    if let (Some(from), Some(to)) = (args.from, args.to) {
        if from >= to {
            eprintln!("scimtap: --from must be before --to (the end is exclusive)");
            return ExitCode::from(2);
        }
    }
    let key = match chain_key(config, args.key_file.as_deref()) {
        Ok(key) => key,
        Err(code) => return code,
    };
    let options = scimtap::report::Options {
        from: args.from,
        to: args.to,
        key: key.as_ref().map(|k| k.0.as_slice()),
        allow_open: args.allow_open,
        route: args.route.as_deref(),
    };
    let report = match scimtap::report::report(&args.files, &options) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("scimtap: {error}");
            return ExitCode::from(EXIT_NO_INPUT);
        }
    };
    let write = |out: &mut dyn std::io::Write| -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(out);
        match args.format {
            ReportFormat::Html => scimtap::report::write_html(&report, &mut out)?,
            ReportFormat::Json => scimtap::report::write_json(&report, &mut out)?,
        }
        std::io::Write::flush(&mut out)
    };
    let written = match &args.out {
        Some(path) => std::fs::File::create(path).and_then(|mut file| write(&mut file)),
        None => write(&mut std::io::stdout().lock()),
    };
    match written {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(error) => {
            eprintln!("scimtap: cannot write the report: {error}");
            return ExitCode::FAILURE;
        }
    }
    if let Some(broken) = &report.integrity.broken {
        eprintln!(
            "scimtap: the audit trail's hash chain is BROKEN at seq {} ({}:{}): {}: {}",
            broken.seq, broken.file, broken.line, broken.kind, broken.detail
        );
        if key.is_none() && broken.kind == "edited" {
            eprintln!(
                "scimtap: checked without a key; if the trail is keyed (integrity.key_file), pass --key-file PATH or --config FILE"
            );
        }
    }
    ExitCode::from(report.integrity.exit_code())
}

/// The chain's key for `verify` and `report`: `--key-file`, else the named configuration's
/// `integrity.key_file`, else none (a plain SHA-256 chain). Exit 64 when it cannot be read.
fn chain_key(
    config: Option<&std::path::Path>,
    key_file: Option<&std::path::Path>,
) -> Result<Option<scimtap::config::SecretKey>, ExitCode> {
    match (key_file, config) {
        (Some(path), _) => match scimtap::config::read_key_file(path) {
            Ok(key) => Ok(Some(key)),
            Err(message) => {
                eprintln!("scimtap: --key-file: {message}");
                Err(ExitCode::from(EXIT_CONFIG))
            }
        },
        (None, Some(path)) => match Config::load(path) {
            Ok(config) => Ok(config.integrity.key),
            Err(error) => {
                eprintln!("scimtap: {error}");
                Err(ExitCode::from(EXIT_CONFIG))
            }
        },
        (None, None) => Ok(None),
    }
}

/// `scimtap verify`: exit 0 for an intact chain, 10-14 for what broke (see
/// [`scimtap::integrity::Breakage::exit_code`]), 66 for a file that cannot be read, 64 for a
/// key or configuration that cannot be read. The key comes from `--key-file`, else from the
/// configuration when one was named; with neither the chain is checked as plain SHA-256.
fn verify(config: Option<&std::path::Path>, args: &VerifyArgs) -> ExitCode {
    use scimtap::integrity::{chain_files, ChainFiles, StartAt, VerifyOptions};
    let key = match chain_key(config, args.key_file.as_deref()) {
        Ok(key) => key,
        Err(code) => return code,
    };
    // Files named are checked as given; a directory's files only when they carry the chain
    // (the output of OCSF, ECS or CEF sinks beside the trail is listed as skipped).
    let ChainFiles { files, skipped } = match chain_files(&args.files) {
        Ok(found) => found,
        Err(error) => {
            eprintln!("scimtap: {error}");
            return ExitCode::from(EXIT_NO_INPUT);
        }
    };
    let options = VerifyOptions {
        start: match (&args.start_hash, args.start_anywhere) {
            (Some(hash), _) => StartAt::PrevHash(hash.to_ascii_lowercase()),
            (None, true) => StartAt::Anywhere,
            (None, false) => StartAt::Genesis,
        },
        allow_open: args.allow_open,
    };
    let print_skipped = || {
        for file in &skipped {
            println!(
                "skipped {}: no hash-chain fields (another format's output, not the trail)",
                file.display()
            );
        }
    };
    let result = scimtap::integrity::verify(&files, key.as_ref().map(|k| k.0.as_slice()), &options);
    match result {
        Ok(ok) => {
            println!(
                "OK: {} records (seq {}..{}) in {} file{}, instance {}{}{}",
                ok.records,
                ok.first_seq,
                ok.last_seq,
                files.len(),
                if files.len() == 1 { "" } else { "s" },
                ok.instances.join(", "),
                if ok.closed {
                    ", closed cleanly"
                } else {
                    ", open (no closing record yet)"
                },
                if ok.unclean_restarts > 0 {
                    format!(
                        "; {} restart{} after an unclean stop (events queued at that moment may be missing)",
                        ok.unclean_restarts,
                        if ok.unclean_restarts == 1 { "" } else { "s" }
                    )
                } else {
                    String::new()
                }
            );
            print_skipped();
            ExitCode::SUCCESS
        }
        Err(Ok(broken)) => {
            println!("{broken}");
            print_skipped();
            if key.is_none() && broken.kind == scimtap::integrity::Breakage::Edited {
                eprintln!(
                    "scimtap: checked without a key; if the trail is keyed (integrity.key_file), pass --key-file PATH or --config FILE"
                );
            }
            ExitCode::from(broken.kind.exit_code())
        }
        Err(Err(error)) => {
            eprintln!("scimtap: cannot read the audit files: {error}");
            ExitCode::from(66)
        }
    }
}

fn run(config: Config, path: &std::path::Path) -> anyhow::Result<()> {
    // Sized from the CPUs this process may run on (its affinity mask, not the machine): on one
    // CPU a current-thread runtime forwards with less scheduling work than a one-worker pool.
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let runtime = if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
    .enable_all()
    .thread_name("scimtap-worker")
    .build()
    .context("cannot start the async runtime")?;
    let clean = runtime.block_on(async move {
        // Watched before anything listens: once "Proxy listening." is logged, a SIGTERM is a
        // drain, never the default kill.
        let signals = Signals::install()?;
        let running = scimtap::start(config).await.context("cannot start")?;
        wait_for_stop(&running, path, signals).await?;
        sd_notify("STOPPING=1");
        anyhow::Ok(running.shutdown().await)
    })?;
    // A sink thread stuck in a write (a pipe nobody reads) is abandoned, not waited for: the
    // deadline in `shutdown_timeout_secs` is a promise to the service manager.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    if clean {
        Ok(())
    } else {
        anyhow::bail!(
            "shutdown deadline reached before every audit event was written (see the log above)"
        )
    }
}

/// The signals scimtap handles, watched from before it starts listening.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
            hup: signal(SignalKind::hangup()).context("cannot watch SIGHUP")?,
        })
    }
}

/// Tells the service manager it is ready, then waits for SIGTERM or SIGINT; SIGHUP reloads
/// the configuration, reopens the sinks' outputs and keeps running.
async fn wait_for_stop(
    running: &scimtap::Running,
    config: &std::path::Path,
    signals: Signals,
) -> anyhow::Result<()> {
    let Signals {
        mut term,
        mut int,
        mut hup,
    } = signals;
    sd_notify("READY=1");
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM received; shutting down."); return Ok(()); }
            _ = int.recv() => { tracing::info!("SIGINT received; shutting down."); return Ok(()); }
            _ = hup.recv() => {
                tracing::info!("SIGHUP received; reloading the configuration and reopening sink outputs.");
                running.reload(config).await;
            }
        }
    }
}

/// `scimtap healthcheck`: reads only `[admin] address` from the file (no key or certificate is
/// loaded), so it works wherever the config is readable. Exit 0 on 200, 1 with a reason.
fn healthcheck(config: &std::path::Path, args: &HealthcheckArgs) -> ExitCode {
    let path = if args.liveness { "/healthz" } else { "/readyz" };
    let timeout = match std::time::Duration::try_from_secs_f64(args.timeout_secs) {
        Ok(timeout) if !timeout.is_zero() => timeout,
        _ => {
            eprintln!("scimtap healthcheck: --timeout-secs must be a positive number");
            return ExitCode::FAILURE;
        }
    };
    let url = match &args.url {
        Some(url) => scimtap::admin::probe_url(url, path),
        None => scimtap::admin::probe_url_from_config(config, path),
    };
    match url.and_then(|url| scimtap::admin::probe(&url, timeout).map(|body| (url, body))) {
        Ok((url, body)) => {
            println!("{url}: {body}");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("scimtap healthcheck: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// Tells systemd about the service's state (`Type=notify`): one datagram to `$NOTIFY_SOCKET`,
/// the protocol of sd_notify(3). Does nothing when not started by systemd.
fn sd_notify(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty()) else {
        return;
    };
    let send = || -> std::io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let datagram = std::os::unix::net::UnixDatagram::unbound()?;
        #[cfg(target_os = "linux")]
        if let Some(name) = socket.as_bytes().strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            datagram.send_to_addr(state.as_bytes(), &address)?;
            return Ok(());
        }
        datagram.send_to(state.as_bytes(), &socket)?;
        Ok(())
    };
    if let Err(error) = send() {
        tracing::warn!(%error, state, "Cannot notify the service manager.");
    }
}
