//! The `scimtap` command: parse the command line, load the configuration, run.
//!
//! Exit codes: 0 clean stop (every event written), 1 runtime failure or events left unwritten
//! at the shutdown deadline, 2 command-line usage error (clap), 64 bad configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use scimtap::config::Config;

/// Exit code for a configuration the user must fix (EX_USAGE, as linkerd2-proxy).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(version, about = "Transparent auditing reverse proxy for SCIM 2.0")]
struct Cli {
    /// Configuration file.
    #[arg(
        long,
        short,
        env = "SCIMTAP_CONFIG",
        default_value = "proxy.toml",
        global = true
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Validate the configuration and exit, binding nothing.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    scimtap::telemetry::init_logging();
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("scimtap: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => {
            println!(
                "{}: OK (listen {}, upstream {}://{}{}, {} sink{})",
                cli.config.display(),
                config.listen.address,
                config.upstream.scheme,
                config.upstream.authority,
                config.upstream.base_path,
                config.sinks.len(),
                if config.sinks.len() == 1 { "" } else { "s" }
            );
            ExitCode::SUCCESS
        }
        Command::Run => match run(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("scimtap: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("scimtap-worker")
        .build()
        .context("cannot start the async runtime")?;
    let clean = runtime.block_on(async move {
        let running = scimtap::start(config).await.context("cannot start")?;
        wait_for_stop(&running).await?;
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

/// Waits for SIGTERM or SIGINT; SIGHUP reopens the sinks' outputs and keeps running.
async fn wait_for_stop(running: &scimtap::Running) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM received; shutting down."); return Ok(()); }
            _ = int.recv() => { tracing::info!("SIGINT received; shutting down."); return Ok(()); }
            _ = hup.recv() => { tracing::info!("SIGHUP received; reopening sink outputs."); running.reopen_sinks(); }
        }
    }
}
