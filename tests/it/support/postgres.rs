//! A real PostgreSQL for the shared state store's tests (`[state] url`): a throwaway cluster
//! made with Debian's PostgreSQL 15 (`initdb`, `pg_ctl` from /usr/lib/postgresql/15/bin,
//! installed by scripts/setup.sh --test-peers) in a temp dir, listening on 127.0.0.1 at a
//! port picked at run time and on a unix socket inside the temp dir. Stopped (`pg_ctl stop -m
//! fast`) and removed on drop.
//!
//! TCP connections need the superuser's password (scram-sha-256), so scimtap's
//! `password_file` is exercised for real; the harness itself talks to the cluster with `psql`
//! over the socket (trust). initdb refuses to run as root: as root, the temp dir is given to
//! the `postgres` OS user and every server program runs as that user (`runuser`).
//!
//! A test gets one with [`Postgres::require`], which follows `peers::require`: skipped with a
//! message when PostgreSQL is not installed, a failure when `SCIMTAP_REQUIRE_PEERS` is set.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::closed_port;
use super::peers;
use super::process::{report, run};

/// The superuser's password for TCP connections (a test cluster on 127.0.0.1 only).
const PASSWORD: &str = "scimtap-test-password";

/// A running throwaway cluster.
pub struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    /// Run the server programs as the `postgres` OS user (we are root).
    as_postgres: bool,
}

impl Postgres {
    /// A fresh cluster, or `None` (the test returns) when PostgreSQL is not installed and
    /// `SCIMTAP_REQUIRE_PEERS` is not set.
    pub fn require() -> Option<Postgres> {
        let pg_ctl = peers::require("pg_ctl")?;
        // A symlink on PATH (/usr/local/bin/pg_ctl) leads to the directory with psql.
        let pg_ctl = std::fs::canonicalize(&pg_ctl).unwrap_or(pg_ctl);
        let bin = pg_ctl
            .parent()
            .expect("pg_ctl is in a directory")
            .to_owned();
        Some(Postgres::start(&bin))
    }

    fn start(bin: &Path) -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = is_root();
        std::fs::create_dir(dir.path().join("socket")).unwrap();
        std::fs::write(dir.path().join("pwfile"), PASSWORD).unwrap();
        if as_postgres {
            let out = run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path()));
            assert!(out.status.success(), "chown: {}", report(&out));
        }
        let mut cluster = Postgres {
            bin: bin.to_owned(),
            dir,
            port: 0,
            as_postgres,
        };
        let data = cluster.data();
        cluster.server_program(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--pwfile",
                &cluster.path("pwfile"),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
        );
        // The port is picked now and written into the configuration, so a restart (`start`
        // after `stop`) listens where the URLs given out point; another program may take it
        // between the pick and the bind: then try another.
        for attempt in 1..=5 {
            cluster.port = closed_port();
            let conf = format!(
                "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
                 fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
                 max_connections = 50\n",
                cluster.port,
                cluster.path("socket")
            );
            std::fs::write(Path::new(&data).join("postgresql.auto.conf"), conf).unwrap();
            if cluster.try_start() {
                return cluster;
            }
            eprintln!(
                "postgres did not start on port {} (attempt {attempt}); log:\n{}",
                cluster.port,
                cluster.log()
            );
        }
        panic!(
            "postgres did not start in 5 attempts; log:\n{}",
            cluster.log()
        );
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn data(&self) -> String {
        self.path("data")
    }

    /// The server's log (pg_ctl -l).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Runs a program of PostgreSQL's bin directory (as `postgres` when we are root); returns
    /// whether it succeeded, with its output.
    fn server_program_status(&self, program: &str, args: &[&str]) -> (bool, String) {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        command.args(args).current_dir(self.dir.path());
        let out = run(&mut command);
        (out.status.success(), report(&out))
    }

    fn server_program(&self, program: &str, args: &[&str]) {
        let (ok, output) = self.server_program_status(program, args);
        assert!(
            ok,
            "{program} {args:?} failed:\n{output}\nlog:\n{}",
            self.log()
        );
    }

    fn try_start(&self) -> bool {
        let (data, log) = (self.data(), self.path("server.log"));
        let args = ["-D", &data, "-l", &log, "-w", "-t", "30", "start"];
        self.server_program_status("pg_ctl", &args).0
    }

    /// Starts the cluster again after [`Postgres::stop`], on the same port.
    pub fn start_again(&self) {
        assert!(
            self.try_start(),
            "postgres did not start again on {}; log:\n{}",
            self.port,
            self.log()
        );
    }

    /// Stops the cluster (fast: open connections are ended), waiting up to 30 s.
    pub fn stop(&self) {
        let data = self.data();
        self.server_program(
            "pg_ctl",
            &["-D", &data, "-m", "fast", "-w", "-t", "30", "stop"],
        );
    }

    /// Creates database `name`; returns its URL (the superuser over TCP, no password in it:
    /// give scimtap [`Postgres::password_file`]).
    pub fn create_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.url(name)
    }

    /// `postgres://postgres@127.0.0.1:<port>/<db>`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A file holding the superuser's password (for `[state] password_file`).
    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("pwfile")
    }

    /// The password itself, for clients other than scimtap.
    pub fn password(&self) -> &'static str {
        PASSWORD
    }

    /// Runs `sql` in database `db` with psql over the unix socket; returns its unaligned,
    /// tuples-only output. Panics with psql's output and the server log when it fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = run(Command::new(self.bin.join("psql"))
            .args(["-h", &self.path("socket")])
            .args(["-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", db])
            .args(["-v", "ON_ERROR_STOP=1", "-X", "-A", "-t", "-c", sql]));
        assert!(
            out.status.success(),
            "psql {sql:?}: {}\nlog:\n{}",
            report(&out),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        let (ok, output) = self.server_program_status(
            "pg_ctl",
            &["-D", &data, "-m", "fast", "-w", "-t", "30", "stop"],
        );
        // Already stopped by the test is fine; anything else is worth a line.
        if !ok && !output.contains("Is server running?") {
            eprintln!("pg_ctl stop failed:\n{output}");
        }
    }
}

fn is_root() -> bool {
    let out = run(Command::new("id").arg("-u"));
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}
