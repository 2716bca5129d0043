#!/usr/bin/env bash
# Run scimtap in front of a real SCIM server, as README shows:
#   installs what is missing to run (scripts/setup.sh: toolchain check, curl, scim2-server;
#   nothing test-only), builds the release binary, starts scim2-server on
#   127.0.0.1:9000 (the upstream of the bundled proxy.toml), then runs scimtap in the
#   foreground. Ctrl-C stops scimtap; the SCIM server is stopped on exit.
# Usage: scripts/run.sh [CONFIG]      (default: proxy.toml)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CONFIG="${1:-proxy.toml}"
SCIM_PORT=9000
[ -f "$CONFIG" ] || { echo "run.sh: config file '$CONFIG' not found" >&2; exit 1; }

# Succeeds when something already accepts connections on 127.0.0.1:$1.
port_busy() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# Fail fast, before a long build, if the SCIM server's port is taken.
if port_busy "$SCIM_PORT"; then
  echo "run.sh: port 127.0.0.1:$SCIM_PORT is busy; proxy.toml's upstream SCIM server goes there." >&2
  echo "run.sh: stop whatever listens on it (e.g. 'ss -ltnp | grep :$SCIM_PORT') and re-run." >&2
  exit 1
fi

bash scripts/setup.sh
# rustup's cargo may not be on PATH in a non-login shell (setup.sh checked it exists).
CARGO_BIN="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin"
if ! command -v cargo >/dev/null 2>&1 && [ -d "$CARGO_BIN" ]; then PATH="$CARGO_BIN:$PATH"; fi

cargo build --release --locked

# start_server.sh prints the server's PID, or exits 1 if the port became busy meanwhile.
SCIM_PID="$(bash tests/peer/start_server.sh "$SCIM_PORT")"
trap 'bash tests/peer/stop_server.sh "$SCIM_PID" || true' EXIT

cat <<EOF
run.sh: SCIM server (scim2-server) at http://127.0.0.1:$SCIM_PORT/v2, log tests/peer/run/server-$SCIM_PORT.log
run.sh: starting scimtap --config $CONFIG (Ctrl-C to stop). With the bundled proxy.toml, try in another terminal:
  curl -s http://127.0.0.1:8080/v2/Users
  tail -f audit.jsonl
  curl -s http://127.0.0.1:9090/metrics
EOF
./target/release/scimtap --config "$CONFIG" &
SCIMTAP_PID=$!
# Pass SIGTERM/SIGINT on, so scimtap drains and flushes before the SCIM server stops.
trap 'kill -TERM "$SCIMTAP_PID" 2>/dev/null || true' TERM INT
# `wait` returns early (>128) when a trapped signal arrives; wait again for scimtap's own
# exit status once it has drained.
status=0
while kill -0 "$SCIMTAP_PID" 2>/dev/null; do
  if wait "$SCIMTAP_PID"; then status=0; else status=$?; fi
done
exit "$status"
