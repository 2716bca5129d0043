#!/usr/bin/env bash
# Install what scimtap needs on Debian 12, and only what is missing. Safe to re-run.
#
#   scripts/setup.sh               to build and run the proxy (scripts/run.sh): apt packages
#                                  python3, python3-venv, curl, ca-certificates, build-essential,
#                                  pkg-config; a check that the Rust toolchain is new enough; and
#                                  tests/peer/.venv with scim2-server only (the upstream).
#   scripts/setup.sh --test-peers  the above, plus what the tests need (scripts/test.sh):
#                                  openssl, rsyslog, rsyslog-gnutls, systemd (systemd-analyze),
#                                  procps, jq, postgresql-15 (initdb/pg_ctl for a throwaway
#                                  cluster; the Debian service is not started or used), chromium
#                                  (headless, to render scimtap report's page); every
#                                  pinned peer of tests/peer/requirements.txt; and
#                                  the Kafka broker tansu (cargo install, ~17 minutes the first time).
#   scripts/setup.sh --bench       the apt packages and toolchain for running, plus the load
#                                  benchmark's tools (benches/load/run.sh); no peer venv.
set -euo pipefail
MODE="${1:-run}"
case "$MODE" in
  run|--test-peers|--bench) ;;
  *) echo "usage: scripts/setup.sh [--test-peers | --bench]" >&2; exit 2 ;;
esac
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say() { echo "setup.sh: $*"; }
die() { echo "setup.sh: ERROR: $*" >&2; exit 1; }

# rustup installs into ~/.cargo/bin, which a non-login shell may not have on PATH.
CARGO_BIN="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin"
if ! command -v cargo >/dev/null 2>&1 && [ -d "$CARGO_BIN" ]; then PATH="$CARGO_BIN:$PATH"; fi

# Root runs apt-get directly; anyone else needs sudo.
SUDO=()
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO=(sudo); fi

APT_UPDATED=0
apt_install() {  # apt_install PKG...: install with apt-get, running 'apt-get update' once
  command -v apt-get >/dev/null 2>&1 || die "missing $*, and no apt-get to install it: install it by hand"
  if [ "$(id -u)" -ne 0 ] && [ ${#SUDO[@]} -eq 0 ]; then
    die "missing $*: run as root, or install sudo"
  fi
  if [ "$APT_UPDATED" -eq 0 ]; then
    say "apt-get update"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  say "apt-get install $*"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "$@"
}

have() { command -v "$1" >/dev/null 2>&1; }

# --- 1. System packages -------------------------------------------------------------
# To build and run: python3 + venv (scim2-server, the SCIM server scripts/run.sh puts behind
# the proxy), curl (README's requests), a C toolchain and pkg-config (lz4/zstd in the build).
missing=()
have python3 || missing+=(python3 python3-venv python3-pip)
have curl || missing+=(curl)
[ -s /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
{ have cc || have gcc; } || missing+=(build-essential)
have pkg-config || missing+=(pkg-config)
present="python3, curl, ca-certificates, gcc, pkg-config"
if [ "$MODE" = "--test-peers" ]; then
  have openssl || missing+=(openssl)
  # A real syslog receiver for the syslog sink's tests (UDP, TCP and TLS via gnutls).
  [ -x /usr/sbin/rsyslogd ] || missing+=(rsyslog)
  [ -e /usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so ] || [ -n "$(find /usr/lib -name lmnsd_gtls.so 2>/dev/null | head -n 1)" ] || missing+=(rsyslog-gnutls)
  # systemd-analyze checks deploy/systemd/scimtap.service (tests/it/deploy.rs); nothing is started.
  # The unit's ExecReload runs kill(1), which verify wants to find (the shell's builtin is not it).
  have systemd-analyze || missing+=(systemd)
  [ -x /bin/kill ] || [ -x /usr/bin/kill ] || missing+=(procps)
  # docs/answers.md's jq expressions are run by tests/it/state.rs as written.
  have jq || missing+=(jq)
  # The shared state store's tests (tests/it/state_pg.rs) start their own cluster from
  # PostgreSQL's server programs, which Debian keeps in /usr/lib/postgresql/<major>/bin.
  compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || missing+=(postgresql-15)
  # Debian's Chromium, driven by Playwright from the venv with executable_path (Playwright's
  # own browser download is never used): the live view's browser test (tests/it/ui.rs) and
  # the report rendered to PNG (tests/it/report.rs).
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  present="$present, openssl, rsyslog, rsyslog-gnutls, systemd, procps, jq, postgresql, chromium"
fi
if [ ${#missing[@]} -gt 0 ]; then
  apt_install "${missing[@]}"
else
  say "system packages: all present ($present)"
fi

# 'python3 -m venv' needs Debian's python3-venv (ensurepip); test it unless the venv exists.
venv_works() {
  if "$ROOT/tests/peer/.venv/bin/python" -c '' >/dev/null 2>&1; then return 0; fi
  local tmp rc=0
  tmp="$(mktemp -d)"
  python3 -m venv "$tmp/v" >/dev/null 2>&1 || rc=1
  rm -rf "$tmp"
  return "$rc"
}
if ! venv_works; then
  say "'python3 -m venv' does not work"
  apt_install python3-venv python3-pip
  venv_works || die "'python3 -m venv' still fails ($(command -v python3)): fix that Python, or put Debian's /usr/bin/python3 first on PATH"
fi

# --- 2. Rust toolchain --------------------------------------------------------------
MIN_RUST="$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$ROOT/Cargo.toml" | head -n 1)"
MIN_RUST="${MIN_RUST:-1.85}"
if ! have cargo || ! have rustc; then
  # No rustup here (only package registries are reachable): fall back to Debian's rust.
  echo "setup.sh: WARNING: cargo not found; trying Debian's cargo/rustc. scimtap needs rust >= $MIN_RUST," \
       "newer than Debian 12's own (1.63): if the check below fails, install a rustup toolchain." >&2
  apt_install cargo rustc
fi
RUSTC_VERSION="$(rustc --version | awk '{print $2}')" \
  || die "'rustc --version' failed ($(command -v rustc)): the Rust toolchain is broken or not installed"
RUSTC_VERSION="${RUSTC_VERSION%%-*}"  # drop a -nightly/-beta suffix
if [ "$(printf '%s\n%s\n' "$MIN_RUST" "$RUSTC_VERSION" | sort -V | head -n 1)" != "$MIN_RUST" ]; then
  die "rustc $RUSTC_VERSION ($(command -v rustc)) is too old: scimtap needs rust >= $MIN_RUST (Cargo.toml rust-version). Install a newer toolchain with rustup and put it first on PATH."
fi
say "rust: rustc $RUSTC_VERSION >= $MIN_RUST ($(command -v cargo))"

# --- Opt-in: the load benchmark's tools (scripts/setup.sh --bench, run by benches/load/run.sh)
# nginx (upstream and contender), HAProxy, wrk, taskset, ss; mitmproxy from PyPI into its own
# venv (benches/load/.venv, or $BENCH_VENV). Nothing else below runs with --bench.
if [ "$MODE" = "--bench" ]; then
  bench_missing=()
  { have nginx || [ -x /usr/sbin/nginx ]; } || bench_missing+=(nginx)
  { have haproxy || [ -x /usr/sbin/haproxy ]; } || bench_missing+=(haproxy)
  have wrk || bench_missing+=(wrk)
  have taskset || bench_missing+=(util-linux)
  { have ss || [ -x /usr/sbin/ss ] || [ -x /usr/bin/ss ]; } || bench_missing+=(iproute2)
  if [ ${#bench_missing[@]} -gt 0 ]; then apt_install "${bench_missing[@]}"; fi
  BENCH_VENV="${BENCH_VENV:-$ROOT/benches/load/.venv}"
  if [ ! -x "$BENCH_VENV/bin/mitmdump" ]; then
    say "pip install mitmproxy==11.0.2 into $BENCH_VENV"
    python3 -m venv "$BENCH_VENV"
    "$BENCH_VENV/bin/pip" install -q --disable-pip-version-check 'mitmproxy==11.0.2'
  fi
  say "bench tools: nginx, haproxy, wrk, taskset, ss, $BENCH_VENV/bin/mitmdump present"
  exit 0
fi

# A real Kafka-protocol broker for the kafka sink's tests (tests/it/sink_kafka.rs): tansu, built
# from crates.io into ~/.cargo/bin. Slow the first time (~17 minutes on 2 cores), so only
# when it is missing.
# Only the tests need it (scripts/test.sh passes --test-peers); running the proxy does not.
if [ "$MODE" != "--test-peers" ]; then
  say "tansu: not needed to run the proxy (scripts/test.sh installs it)"
elif have tansu || [ -x "$CARGO_BIN/tansu" ]; then
  say "tansu: present ($(command -v tansu || echo "$CARGO_BIN/tansu"))"
else
  say "cargo install tansu 0.6.0 --locked --features dynostore (takes a while the first time)"
  cargo install tansu --version 0.6.0 --locked --features dynostore
  [ -x "$CARGO_BIN/tansu" ] || have tansu || die "tansu missing after 'cargo install tansu'"
fi

# --- 3. Python venv: scim2-server to run; every pinned SCIM peer and test tool for the tests
if [ "$MODE" = "--test-peers" ]; then
  say "python peers: tests/peer/setup.sh (every package of tests/peer/requirements.txt)"
  bash "$ROOT/tests/peer/setup.sh"
else
  say "python: tests/peer/setup.sh --server-only (scim2-server, the upstream of proxy.toml)"
  bash "$ROOT/tests/peer/setup.sh" --server-only
fi
[ -x "$ROOT/tests/peer/.venv/bin/scim2-server" ] || die "tests/peer/.venv/bin/scim2-server missing after tests/peer/setup.sh"
say "done: tests/peer/.venv/bin/scim2-server ready"
