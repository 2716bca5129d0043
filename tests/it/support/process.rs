//! The one process launcher: peers that run for the length of a test ([`Process`]: rsyslogd,
//! tansu, scim2-server, collector.py), and commands that run to completion ([`run`]: `scimtap
//! check-config`/`verify`, the Python validators, systemd-analyze). Every wait is bounded, and
//! every failure message carries the process's output.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use super::wait::until_blocking;

/// How long a command given to [`run`] may take before it is killed and the test fails.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// The scimtap binary cargo built for these tests.
pub fn scimtap_bin() -> &'static str {
    env!("CARGO_BIN_EXE_scimtap")
}

/// `scimtap <args>`, without a `SCIMTAP_CONFIG` inherited from the caller's environment.
pub fn scimtap(args: &[&str]) -> Command {
    let mut cmd = Command::new(scimtap_bin());
    cmd.args(args).env_remove("SCIMTAP_CONFIG");
    cmd
}

/// Runs `cmd` to completion (stdin closed, stdout and stderr captured); kills it and panics
/// with what it printed when it takes longer than [`RUN_TIMEOUT`].
pub fn run(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} does not start: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = Output {
                status: child.wait().unwrap(),
                stdout: stdout.join().unwrap(),
                stderr: stderr.join().unwrap(),
            };
            panic!("{cmd:?} ran longer than {RUN_TIMEOUT:?}:\n{}", report(&out));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Sends `sig` (`TERM`, `HUP`, `KILL`...) to process `pid`; panics unless `kill` succeeded.
pub fn signal(pid: u32, sig: &str) {
    let out = run(Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string()));
    assert!(out.status.success(), "kill -{sig} {pid}: {}", report(&out));
}

/// Exit status, stdout and stderr of a finished command, for a failure message.
pub fn report(out: &Output) -> String {
    format!(
        "status: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// stdout then stderr of a finished command, as text.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A peer process that lives as long as the test holds it: its stdout and stderr go to
/// `<dir>/<name>.log`, and it is killed and reaped on drop (also when the test panics).
pub struct Process {
    child: Child,
    name: String,
    log: PathBuf,
    /// The process's working files (config, logs, port file); removed on drop.
    pub dir: tempfile::TempDir,
}

impl Process {
    /// Starts `cmd` with stdin closed and its output in `<dir>/<name>.log`.
    pub fn spawn(name: &str, dir: tempfile::TempDir, cmd: &mut Command) -> Process {
        let log = dir.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} does not start ({cmd:?}): {e}"));
        Process {
            child,
            name: name.to_owned(),
            log,
            dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The exit status, once it exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Panics with the log when the process has exited (a peer that died is not waited for).
    pub fn assert_running(&mut self, waiting_for: &str) {
        if let Some(status) = self.exited() {
            panic!(
                "{} exited ({status}) while waiting for {waiting_for}; its log:\n{}",
                self.name,
                self.log()
            );
        }
    }

    /// Waits until 127.0.0.1:`port` accepts TCP connections.
    pub fn wait_listening(&mut self, port: u16) {
        let what = format!("{} to listen on 127.0.0.1:{port}", self.name);
        until_blocking(&what, super::WAIT, Duration::from_millis(50), || {
            self.assert_running(&what);
            std::net::TcpStream::connect(("127.0.0.1", port))
                .map(drop)
                .map_err(|e| format!("{e}; log:\n{}", self.log()))
        })
    }

    /// Waits until `file` exists (the process writes it atomically); returns it, trimmed.
    pub fn wait_for_file(&mut self, file: &Path) -> String {
        let what = format!("{} to write {}", self.name, file.display());
        until_blocking(&what, super::WAIT, Duration::from_millis(20), || {
            self.assert_running(&what);
            match std::fs::read_to_string(file) {
                Ok(text) => Ok(text.trim().to_owned()),
                _ => Err(format!("not yet; log:\n{}", self.log())),
            }
        })
    }

    /// Kills the process now (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `scimtap --config <config> verify <extra...> <files...>`: (exit code, stdout and stderr).
pub fn scimtap_verify(config: &Path, files: &[&Path], extra: &[&str]) -> (i32, String) {
    let out = run(Command::new(scimtap_bin())
        .env_remove("SCIMTAP_CONFIG")
        .arg("--config")
        .arg(config)
        .arg("verify")
        .args(extra)
        .args(files));
    (out.status.code().unwrap_or(-1), text(&out))
}
