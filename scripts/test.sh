#!/usr/bin/env bash
# Run the test suite, as README shows: installs what is missing (scripts/setup.sh),
# then 'cargo test' with the integration tests pointed at the real SCIM server
# in tests/peer/.venv. Extra arguments go to cargo test (e.g. a test name filter).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh --test-peers
# rustup's cargo may not be on PATH in a non-login shell (setup.sh checked it exists).
CARGO_BIN="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin"
if ! command -v cargo >/dev/null 2>&1 && [ -d "$CARGO_BIN" ]; then PATH="$CARGO_BIN:$PATH"; fi

# The Rust integration tests start $SCIMTAP_PEER_VENV/bin/scim2-server as upstream.
export SCIMTAP_PEER_VENV="$ROOT/tests/peer/.venv"
# Tests that need a real peer (tansu, rsyslog, the Python venv) fail rather than skip.
export SCIMTAP_REQUIRE_PEERS=1
# Every event the integration tests make is kept here and checked against the published
# JSON Schema once the suite has run.
export SCIMTAP_EMITTED_EVENTS_DIR="$ROOT/target/emitted-events"
rm -rf "$SCIMTAP_EMITTED_EVENTS_DIR"
mkdir -p "$SCIMTAP_EMITTED_EVENTS_DIR"
cargo test --locked "$@"
if compgen -G "$SCIMTAP_EMITTED_EVENTS_DIR/*.jsonl" >/dev/null; then
  "$SCIMTAP_PEER_VENV/bin/python" tests/peer/validate_events.py docs/event.schema.json "$SCIMTAP_EMITTED_EVENTS_DIR"
fi
# Fuzz smoke: every cargo-fuzz target in fuzz/ for SCIMTAP_FUZZ_SECONDS each (default 60; 0 skips).
bash scripts/fuzz-smoke.sh "${SCIMTAP_FUZZ_SECONDS:-60}"
