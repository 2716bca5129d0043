#!/usr/bin/env bash
# A/B: two scimtap builds side by side, to measure what one change buys.
#
# usage: benches/load/ab.sh BINARY_A BINARY_B [--rounds N] [--duration S] [--conns C]
#                           [--paced-rate R]
#
# Starts the canned-response nginx upstream (as run.sh does) and both binaries with the
# benchmark's default scimtap config on free loopback ports, then alternates wrk runs (the
# SCIM mix of lib/scim-mix.lua) between them for N rounds. Prints, per run, req/s, p50, p99
# and the proxy's CPU-seconds per 10k requests (from /proc), then the median of B/A over the
# rounds. Pinning as in run.sh (PIN=1: wrk on CPU 0, upstream and proxies on CPU 1).
# --paced-rate R: each connection pauses between requests (random pause, mean conns/R s).
#
# Build a baseline first, e.g.:
#   git stash; cargo build --release; cp target/release/scimtap /tmp/scimtap-a; git stash pop
#   cargo build --release; benches/load/ab.sh /tmp/scimtap-a target/release/scimtap
set -euo pipefail

LOAD_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() { echo "ab.sh: $*" >&2; exit 1; }
[ $# -ge 2 ] || die "usage: ab.sh BINARY_A BINARY_B [--rounds N] [--duration S] [--conns C] [--paced-rate R]"
A=$1 B=$2; shift 2
ROUNDS=3 DURATION=6 CONNS=64 PACED_RATE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --conns) CONNS=$2; shift ;;
        --paced-rate) PACED_RATE=$2; shift ;;
        *) die "unknown option $1" ;;
    esac
    shift
done
for b in "$A" "$B"; do [ -x "$b" ] || die "$b is not an executable"; done
for t in nginx wrk taskset python3; do command -v "$t" >/dev/null || PATH=$PATH:/usr/sbin; command -v "$t" >/dev/null || die "$t missing (scripts/setup.sh --bench)"; done
PIN=${PIN:-1}
if [ "$PIN" = 1 ]; then SRV=(taskset -c 1); GEN=(taskset -c 0); else SRV=(); GEN=(); fi

RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/scimtap-ab.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$RUN_DIR"
}
trap cleanup EXIT
mkdir -p "$RUN_DIR/logs" "$RUN_DIR/tmp"
read -r UPSTREAM_PORT PORT_A ADMIN_A PORT_B ADMIN_B < <(python3 "$LOAD_DIR/lib/bench.py" ports 5)
export UPSTREAM_PORT RUN_DIR LOG_DIR=$RUN_DIR/logs
render() { python3 "$LOAD_DIR/lib/render.py" "$LOAD_DIR/conf/$1" "$LOAD_DIR/responses" > "$RUN_DIR/$2"; }

render upstream-nginx.conf.in upstream.conf
"${SRV[@]}" nginx -c "$RUN_DIR/upstream.conf" -p "$RUN_DIR" >"$RUN_DIR/upstream.out" 2>&1 &
PIDS+=($!)
start() {  # name binary port admin_port
    SCIMTAP_PORT=$3 SCIMTAP_ADMIN_PORT=$4 AUDIT_PATH=$RUN_DIR/logs/$1.jsonl SCIMTAP_EXTRA="" \
        render scimtap.toml.in "$1.toml"
    "${SRV[@]}" "$2" --config "$RUN_DIR/$1.toml" >"$RUN_DIR/$1.out" 2>"$RUN_DIR/$1.err" &
    PIDS+=($!)
    echo $!
}
PID_A=$(start a "$A" "$PORT_A" "$ADMIN_A")
PID_B=$(start b "$B" "$PORT_B" "$ADMIN_B")
for port in "$UPSTREAM_PORT" "$PORT_A" "$PORT_B"; do
    for _ in $(seq 100); do
        curl -s -o /dev/null -m 1 "http://127.0.0.1:$port/scim/v2/Users/x" && break
        sleep 0.1
    done
    curl -s -o /dev/null -m 1 "http://127.0.0.1:$port/scim/v2/Users/x" || { tail -n 5 "$RUN_DIR"/*.err "$RUN_DIR"/*.out >&2; die "nothing answers on port $port"; }
done

DELAY_MS=0
[ "$PACED_RATE" -gt 0 ] && DELAY_MS=$(( (CONNS * 1000 + PACED_RATE / 2) / PACED_RATE ))
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)
RESULTS=$RUN_DIR/results
echo "round build req/s p50 p99 cpu_s_per_10k"
for r in $(seq "$ROUNDS"); do
    for x in a b; do
        if [ $x = a ]; then pid=$PID_A port=$PORT_A; else pid=$PID_B port=$PORT_B; fi
        c0=$(cpu_ticks "$pid")
        out=$(cd "$LOAD_DIR" && BENCH_DELAY_MS=$DELAY_MS BENCH_PAYLOAD_DIR=$LOAD_DIR/payloads \
            timeout $((DURATION + 30)) "${GEN[@]}" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency \
            -s lib/scim-mix.lua "http://127.0.0.1:$port" 2>/dev/null)
        c1=$(cpu_ticks "$pid")
        n=$(awk '/requests in/ {print $1}' <<<"$out")
        p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
        p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
        cpu=$(python3 -c "print(round(($c1 - $c0) / $TICK / $n * 10000, 3))")
        echo "$r $x $((n / DURATION)) $p50 $p99 $cpu" | tee -a "$RESULTS"
    done
done
python3 - "$RESULTS" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
by = {}
for r, x, rps, p50, p99, cpu in rows:
    by.setdefault(r, {})[x] = (float(rps), float(cpu))
rps = [v["b"][0] / v["a"][0] for v in by.values() if "a" in v and "b" in v]
cpu = [v["b"][1] / v["a"][1] for v in by.values() if "a" in v and "b" in v]
print(f"B/A medians over {len(rps)} rounds: req/s {statistics.median(rps):.3f}, CPU per request {statistics.median(cpu):.3f}")
EOF
