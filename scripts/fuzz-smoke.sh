#!/usr/bin/env bash
# Fuzz smoke run: builds every cargo-fuzz target in fuzz/ and runs each for SECONDS
# (default 60, or $SCIMTAP_FUZZ_SECONDS; 0 skips), starting from the committed seeds in
# fuzz/corpus/<target>. Fails if any target crashes, panics, times out or runs out of memory,
# and prints the reproducer's path (fuzz/artifacts/<target>/...).
#
#   scripts/fuzz-smoke.sh [SECONDS]
#
# Installs cargo-fuzz (cargo install --locked) only when it is missing. Builds without a
# sanitizer by default, which the stable toolchain does (scimtap forbids unsafe code);
# SCIMTAP_FUZZ_SANITIZER=address uses ASan, through the nightly toolchain when one is
# installed, else stable with RUSTC_BOOTSTRAP=1. New inputs a run finds go to
# fuzz/target/corpus/<target> (not committed); SCIMTAP_FUZZ_SKIP is passed through to
# redaction_invariant (see fuzz/artifacts/README.md).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SECS="${1:-${SCIMTAP_FUZZ_SECONDS:-60}}"
case "$SECS" in
  '' | *[!0-9]*) echo "fuzz-smoke: SECONDS must be a whole number, not '$SECS'" >&2; exit 64 ;;
esac
if [ "$SECS" -eq 0 ]; then
  echo "fuzz-smoke: skipped (0 seconds)"
  exit 0
fi

CARGO_BIN="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin"
if ! command -v cargo >/dev/null 2>&1 && [ -d "$CARGO_BIN" ]; then PATH="$CARGO_BIN:$PATH"; fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz-smoke: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

SANITIZER="${SCIMTAP_FUZZ_SANITIZER:-none}"
TOOLCHAIN=()
if [ "$SANITIZER" != none ]; then
  if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    TOOLCHAIN=(+nightly)
  else
    export RUSTC_BOOTSTRAP=1
  fi
fi
fuzz() { cargo ${TOOLCHAIN[@]+"${TOOLCHAIN[@]}"} fuzz "$@"; }

echo "fuzz-smoke: building the targets (sanitizer: $SANITIZER)"
fuzz build -s "$SANITIZER"

failed=()
for target in $(fuzz list); do
  scratch="fuzz/target/corpus/$target"
  log="fuzz/target/smoke-$target.log"
  mkdir -p "$scratch" "fuzz/corpus/$target"
  args=(-max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
  case "$target" in
    config_load) args+=(-dict=fuzz/config.dict) ;;
    classify_exchange | encoders | scim_patch_filter) args+=(-dict=fuzz/scim.dict) ;;
  esac
  if fuzz run -s "$SANITIZER" "$target" "$scratch" "fuzz/corpus/$target" -- "${args[@]}" >"$log" 2>&1; then
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    echo "fuzz-smoke: $target: ok, ${runs:-?} executions in ${SECS}s"
  else
    failed+=("$target")
    echo "fuzz-smoke: $target: FAILED (log: $log)" >&2
    grep -E -A6 "panicked at|ERROR: libFuzzer|SUMMARY" "$log" | head -n 40 >&2 || tail -n 40 "$log" >&2
    artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)"
    if [ -n "$artifact" ]; then
      echo "fuzz-smoke: reproducer: $artifact (run: cargo fuzz run -s $SANITIZER $target $artifact)" >&2
    fi
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz-smoke: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz-smoke: every target ran ${SECS}s without a finding"
