#!/usr/bin/env bash
# Load benchmark: scimtap against direct, nginx, HAProxy and mitmproxy, side by side.
#
# usage: benches/load/run.sh [--quick] [--rounds N] [--duration S] [--conns "16 64"]
#                            [--warmup S] [--paced-rate R] [--no-mitm] [--no-build]
#                            [--no-install] [--out DIR] [--keep]
#        benches/load/run.sh --profile [--state] [--duration S]   (perf profile of scimtap under
#                                                  load; --state: with the shadow state on)
#
# Builds scimtap (cargo build --release --locked), starts a canned-response nginx as the SCIM
# upstream and every contender in front of it on free loopback ports, then runs wrk with a
# fixed SCIM request mix against each contender in interleaved rounds. Prints one markdown
# table (also written to benches/load/out/<timestamp>/summary.md). Each round also measures
# latency at a fixed offered load (--paced-rate, default 2000 req/s over the largest connection
# count; 0 turns it off). See docs/performance.md.
#
# Everything is loopback-only, every load run is bounded (wrk -d, under timeout), every wait
# is bounded, and every process started here is stopped by PID on exit.
set -euo pipefail

LOAD_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$LOAD_DIR/../.." && pwd)
ARGS_STR="$*"

# ---- options -----------------------------------------------------------------------------
ROUNDS=3; DURATION=10; CONNS="16 64"; WARMUP=3
WITH_MITM=1; BUILD=1; INSTALL=1; OUT_DIR=""; KEEP=0; PACED_RATE=2000; PROFILE=0; PROFILE_STATE=0
usage() { sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) ROUNDS=1; DURATION=3; WARMUP=1 ;;
        --rounds) ROUNDS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --conns) CONNS=${2//,/ }; shift ;;
        --warmup) WARMUP=$2; shift ;;
        --paced-rate) PACED_RATE=$2; shift ;;
        --profile) PROFILE=1 ;;
        --state) PROFILE_STATE=1 ;;
        --no-mitm) WITH_MITM=0 ;;
        --no-build) BUILD=0 ;;
        --no-install) INSTALL=0 ;;
        --out) OUT_DIR=$2; shift ;;
        --keep) KEEP=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
for v in "$ROUNDS" "$DURATION" "$WARMUP" "$PACED_RATE"; do
    [[ "$v" =~ ^[0-9]+$ ]] || { echo "run.sh: not a whole number: $v" >&2; exit 2; }
done
[ "$ROUNDS" -ge 1 ] && [ "$DURATION" -ge 1 ] || { echo "run.sh: --rounds and --duration must be >= 1" >&2; exit 2; }
for c in $CONNS; do [[ "$c" =~ ^[0-9]+$ ]] && [ "$c" -ge 1 ] || { echo "run.sh: bad connection count $c" >&2; exit 2; }; done

# Environment knobs (rarely needed): CPU pinning (see docs/performance.md).
PIN=${PIN:-1}                   # 1: wrk + this script on LOADGEN_CPU, upstream + proxy on SERVER_CPU
LOADGEN_CPU=${LOADGEN_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
WRK_THREADS=${WRK_THREADS:-$([ "$PIN" = 1 ] && echo 1 || echo 2)}
WRK_TIMEOUT=${WRK_TIMEOUT:-5s}
VENV=${BENCH_VENV:-$LOAD_DIR/.venv}   # mitmproxy (scripts/setup.sh --bench)

STAMP=$(date +%Y%m%d-%H%M%S)
OUT_DIR=${OUT_DIR:-$LOAD_DIR/out/$STAMP}
RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/scimtap-load.XXXXXX")   # configs, logs, the binary
LOG_DIR=$RUN_DIR/logs
mkdir -p "$OUT_DIR" "$LOG_DIR" "$RUN_DIR/tmp"
export RUN_DIR LOG_DIR

say() { printf '[load %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# ---- process bookkeeping (set up before anything is started) -----------------------------
declare -A PID_OF=()
STARTED=()
tree_of() {  # pid and all its descendants (by PPID), root first
    local out=("$1") i=0 kids k
    while [ $i -lt ${#out[@]} ]; do
        kids=$(ps -o pid= --ppid "${out[$i]}" 2>/dev/null || true)
        for k in $kids; do out+=("$k"); done
        i=$((i + 1))
    done
    echo "${out[@]}"
}
stop_pids() {  # TERM the trees of these PIDs, KILL what is left after 5 s
    local all=() p alive _
    for p in "$@"; do kill -0 "$p" 2>/dev/null && all+=($(tree_of "$p")); done
    [ ${#all[@]} -gt 0 ] || return 0
    kill -TERM "${all[@]}" 2>/dev/null || true
    for _ in $(seq 50); do
        alive=0
        for p in "${all[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break; sleep 0.1
    done
    for p in "${all[@]}"; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null; done
    wait "$@" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ ${#STARTED[@]} -gt 0 ]; then
        say "stopping PIDs ${STARTED[*]}"
        stop_pids "${STARTED[@]}"
    fi
    if [ "$KEEP" = 1 ]; then say "kept $RUN_DIR"; else rm -rf "$RUN_DIR"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- dependencies ------------------------------------------------------------------------
PATH=$PATH:/usr/sbin:/sbin
CARGO_BIN="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin"
[ -d "$CARGO_BIN" ] && PATH="$CARGO_BIN:$PATH"
have() { command -v "$1" >/dev/null 2>&1; }
deps_missing() {
    local m=""
    for b in nginx haproxy wrk taskset ss curl python3; do have "$b" || m="$m $b"; done
    [ "$WITH_MITM" = 1 ] && [ ! -x "$VENV/bin/mitmdump" ] && m="$m mitmdump"
    echo "$m"
}
if [ -n "$(deps_missing)" ]; then
    [ "$INSTALL" = 1 ] || die "missing:$(deps_missing) (run scripts/setup.sh --bench, or drop --no-install)"
    say "missing:$(deps_missing); running scripts/setup.sh --bench"
    BENCH_VENV=$VENV bash "$ROOT/scripts/setup.sh" --bench >&2
    [ -z "$(deps_missing)" ] || die "still missing after scripts/setup.sh --bench:$(deps_missing)"
fi
U="python3 $LOAD_DIR/lib/bench.py"

# ---- build -------------------------------------------------------------------------------
if [ "$BUILD" = 1 ]; then
    say "cargo build --release --locked"
    (cd "$ROOT" && cargo build --release --locked) >&2
fi
[ -x "$ROOT/target/release/scimtap" ] || die "target/release/scimtap missing (drop --no-build)"
# Our own copy: another build of the tree during the run cannot swap the binary under us.
cp "$ROOT/target/release/scimtap" "$RUN_DIR/scimtap"
SCIMTAP_BIN=$RUN_DIR/scimtap

# ---- ports and CPUs ----------------------------------------------------------------------
read -r UPSTREAM_PORT NGINX_PORT HAPROXY_PORT MITM_PORT SCIMTAP_PORT SCIMTAP_ADMIN_PORT \
        SCIMTAP_WA_PORT SCIMTAP_WA_ADMIN_PORT SCIMTAP_ST_PORT SCIMTAP_ST_ADMIN_PORT < <($U ports 10)
export UPSTREAM_PORT NGINX_PORT HAPROXY_PORT MITM_PORT
NPROC=$(nproc)
if [ "$PIN" = 1 ]; then
    [ "$NPROC" -ge 2 ] || die "PIN=1 needs 2 CPUs (set PIN=0)"
    SRV=(taskset -c "$SERVER_CPU"); GEN=(taskset -c "$LOADGEN_CPU")
    taskset -pc "$LOADGEN_CPU" $$ >/dev/null   # orchestration off the server core
else
    SRV=(); GEN=()
fi

port_listening() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }
port_owned_by() {  # port pid: the listener on port belongs to pid or one of its descendants
    local p owners
    owners=$(ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2)
    for p in $(tree_of "$2"); do
        grep -qx "$p" <<<"$owners" && return 0
    done
    return 1
}
wait_port() {  # port timeout_s pid: 0 once pid listens on port, 1 on timeout, exit or a foreign listener
    local i
    for i in $(seq $(($2 * 10))); do
        if port_listening "$1"; then
            port_owned_by "$1" "$3" && return 0
            sleep 0.3   # (a listener appears a moment before ss shows its owner)
            port_owned_by "$1" "$3" && return 0
            say "port $1 was taken by another program after it was picked (run again)"
            return 1
        fi
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
smoke() {  # port: one request of each kind must succeed; prints the problem
    local base="http://127.0.0.1:$1" c
    c=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/scim+json' \
        --data-binary @"$LOAD_DIR/payloads/user-create.json" "$base/scim/v2/Users") || true
    [ "$c" = 201 ] || { echo "POST /scim/v2/Users answered $c, want 201"; return 1; }
    c=$(curl -s -m 10 -o /dev/null -w '%{http_code}' "$base/scim/v2/Users?filter=userName%20eq%20%22a%22") || true
    [ "$c" = 200 ] || { echo "GET list answered $c, want 200"; return 1; }
    c=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -X DELETE "$base/scim/v2/Users/x") || true
    [ "$c" = 204 ] || { echo "DELETE answered $c, want 204"; return 1; }
}
render() { python3 "$LOAD_DIR/lib/render.py" "$LOAD_DIR/conf/$1" "$LOAD_DIR/responses" > "$RUN_DIR/$2"; }

# ---- contenders --------------------------------------------------------------------------
TARGETS=(direct scimtap scimtap-wa scimtap-state nginx haproxy)
[ "$WITH_MITM" = 1 ] && TARGETS+=(mitmproxy)
if [ "$PROFILE" = 1 ]; then
    have perf || die "--profile needs perf (apt-get install linux-perf)"
    TARGETS=(scimtap); WITH_MITM=0
fi
declare -A PORT_OF=([direct]=$UPSTREAM_PORT [nginx]=$NGINX_PORT [haproxy]=$HAPROXY_PORT
                    [mitmproxy]=$MITM_PORT [scimtap]=$SCIMTAP_PORT [scimtap-wa]=$SCIMTAP_WA_PORT
                    [scimtap-state]=$SCIMTAP_ST_PORT)
declare -A ADMIN_OF=([scimtap]=$SCIMTAP_ADMIN_PORT [scimtap-wa]=$SCIMTAP_WA_ADMIN_PORT
                     [scimtap-state]=$SCIMTAP_ST_ADMIN_PORT)
declare -A LOG_OF=([nginx]=$LOG_DIR/nginx.jsonl [haproxy]=$LOG_DIR/haproxy.jsonl
                   [mitmproxy]=$LOG_DIR/mitmproxy.jsonl [scimtap]=$LOG_DIR/scimtap.jsonl
                   [scimtap-wa]=$LOG_DIR/scimtap-wa.jsonl [scimtap-state]=$LOG_DIR/scimtap-state.jsonl)
declare -A UNAVAILABLE=()      # contender -> why it was not measured
NGINX_BIN=$(command -v nginx); HAPROXY_BIN=$(command -v haproxy)

say "run dir $RUN_DIR, results in $OUT_DIR"
render upstream-nginx.conf.in upstream-nginx.conf
"${SRV[@]}" "$NGINX_BIN" -c "$RUN_DIR/upstream-nginx.conf" -p "$RUN_DIR" >"$RUN_DIR/upstream.out" 2>&1 &
PID_OF[upstream]=$!; STARTED+=($!)
wait_port "$UPSTREAM_PORT" 10 "${PID_OF[upstream]}" || die "upstream nginx did not start: $(cat "$RUN_DIR"/upstream*)"
why=$(smoke "$UPSTREAM_PORT") || die "upstream: $why"

if [ "$PROFILE" = 0 ]; then
    render proxy-nginx.conf.in proxy-nginx.conf
    "${SRV[@]}" "$NGINX_BIN" -c "$RUN_DIR/proxy-nginx.conf" -p "$RUN_DIR" >"$RUN_DIR/nginx.out" 2>&1 &
    PID_OF[nginx]=$!; STARTED+=($!)

    render haproxy.cfg.in haproxy.cfg
    "${SRV[@]}" "$HAPROXY_BIN" -db -f "$RUN_DIR/haproxy.cfg" >>"${LOG_OF[haproxy]}" 2>"$RUN_DIR/haproxy.err" &
    PID_OF[haproxy]=$!; STARTED+=($!)
fi

if [ "$WITH_MITM" = 1 ]; then
    BENCH_MITM_LOG=${LOG_OF[mitmproxy]} "${SRV[@]}" "$VENV/bin/mitmdump" -q \
        --mode "reverse:http://127.0.0.1:$UPSTREAM_PORT" --listen-host 127.0.0.1 --listen-port "$MITM_PORT" \
        --set connection_strategy=lazy -s "$LOAD_DIR/lib/mitm_jsonlog.py" >"$RUN_DIR/mitmproxy.out" 2>&1 &
    PID_OF[mitmproxy]=$!; STARTED+=($!)
fi

start_scimtap() {  # name port admin_port extra_toml
    local name=$1 conf=$RUN_DIR/$1.toml out
    SCIMTAP_PORT=$2 SCIMTAP_ADMIN_PORT=$3 AUDIT_PATH=${LOG_OF[$1]} SCIMTAP_EXTRA=$4 \
        render scimtap.toml.in "$1.toml"
    if ! out=$("$SCIMTAP_BIN" check-config --config "$conf" 2>&1); then
        UNAVAILABLE[$name]="scimtap refuses the config ($(echo "$out" | grep -v '^scimtap:' | head -n 3 | sed 's/^ *//' | tr '\n' ' ' | sed 's/ *$//'))"
        say "$name: ${UNAVAILABLE[$name]}"
        return 0
    fi
    "${SRV[@]}" "$SCIMTAP_BIN" --config "$conf" >"$RUN_DIR/$name.out" 2>"$RUN_DIR/$name.err" &
    PID_OF[$name]=$!; STARTED+=($!)
}
STATE_TOML="[state]
path = \"$RUN_DIR/state.db\""
if [ "$PROFILE_STATE" = 1 ]; then
    start_scimtap scimtap "$SCIMTAP_PORT" "$SCIMTAP_ADMIN_PORT" "$STATE_TOML"
else
    start_scimtap scimtap "$SCIMTAP_PORT" "$SCIMTAP_ADMIN_PORT" ""
fi
[ "$PROFILE" = 1 ] || start_scimtap scimtap-wa "$SCIMTAP_WA_PORT" "$SCIMTAP_WA_ADMIN_PORT" $'[audit]\nmode = "write_ahead"'
# The shadow state on (SQLite, the bundled proxy.toml's setting), to state its cost.
[ "$PROFILE" = 1 ] || start_scimtap scimtap-state "$SCIMTAP_ST_PORT" "$SCIMTAP_ST_ADMIN_PORT" "$STATE_TOML"

for t in "${TARGETS[@]}"; do
    [ "$t" = direct ] && continue
    [ -n "${UNAVAILABLE[$t]:-}" ] && continue
    to=10; [ "$t" = mitmproxy ] && to=30
    if ! wait_port "${PORT_OF[$t]}" "$to" "${PID_OF[$t]}"; then
        tail -n 20 "$RUN_DIR"/*.err "$RUN_DIR"/*.out "$RUN_DIR"/*error.log 2>/dev/null >&2 || true
        why="did not listen on ${PORT_OF[$t]} within ${to}s"
    elif why=$(smoke "${PORT_OF[$t]}"); then
        continue
    fi
    case "$t" in
        scimtap-wa|scimtap-state) UNAVAILABLE[$t]="$why"; say "$t: not available: $why"; stop_pids "${PID_OF[$t]}" ;;
        *) die "$t: $why" ;;
    esac
done
MEASURED=()
for t in "${TARGETS[@]}"; do [ -z "${UNAVAILABLE[$t]:-}" ] && MEASURED+=("$t"); done
say "measuring: ${MEASURED[*]}"

# ---- metadata ----------------------------------------------------------------------------
GIT_REV=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ "$GIT_REV" != unknown ] && [ -n "$(cd "$ROOT" && git status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then
    GIT_REV="$GIT_REV (src/ modified)"
fi
{
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "- command: \`benches/load/run.sh${ARGS_STR:+ $ARGS_STR}\`"
    echo "- machine: $NPROC CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')," \
         "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)), kernel $(uname -r)," \
         "$(. /etc/os-release 2>/dev/null; echo "${PRETTY_NAME:-?}")"
    echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- scimtap: $("$SCIMTAP_BIN" --version 2>/dev/null | head -n 1), commit $GIT_REV, release build"
    echo "- nginx $("$NGINX_BIN" -v 2>&1 | sed 's/.*version: nginx\///'), HAProxy $("$HAPROXY_BIN" -v | head -n 1 | awk '{print $3}')," \
         "wrk $(wrk -v 2>&1 | head -n 1 | awk '{print $2}')$([ "$WITH_MITM" = 1 ] && echo ", mitmproxy $("$VENV/bin/mitmdump" --version 2>/dev/null | awk '/^Mitmproxy/ {print $2}')")"
    if [ "$PROFILE" = 1 ]; then
        echo "- settings: profile, one run of ${DURATION} s at $(echo $CONNS | tr ' ' '\n' | sort -n | tail -n 1) connections;" \
             "PIN=$PIN (wrk and this script on CPU $LOADGEN_CPU, upstream and proxy on CPU $SERVER_CPU), wrk threads $WRK_THREADS"
    else
        echo "- settings: ${ROUNDS} round(s) x ${DURATION} s per contender and connection count, connections \"$CONNS\"," \
             "${WARMUP} s warm-up, paced pass at ${PACED_RATE} req/s; PIN=$PIN (wrk and this script on CPU $LOADGEN_CPU, upstream and proxy on CPU $SERVER_CPU), wrk threads $WRK_THREADS"
    fi
} > "$OUT_DIR/meta.md"
cat "$OUT_DIR/meta.md" >&2

# ---- measurement -------------------------------------------------------------------------
RESULTS=$OUT_DIR/results.jsonl
: > "$RESULTS"
clear_log() {  # truncate an audit log and drop its rotations
    local f=$1
    [ -n "$f" ] || return 0
    [ -f "$f" ] && : > "$f"
    rm -f "$f".[0-9]*
}
log_size() { local s=0 f; for f in "$1" "$1".[0-9]*; do [ -f "$f" ] && s=$((s + $(stat -c %s "$f"))); done; echo "$s"; }
count_lines() {  # file [events]: wait until it stops growing (max ~5 s); print "<lines> <bad> <records> <intents>"
    local f=$1 prev=-1 n
    [ -f "$f" ] || { echo "-1 -1 -1 -1"; return; }
    for _ in $(seq 25); do
        n=$(log_size "$f")
        [ "$n" = "$prev" ] && break
        prev=$n; sleep 0.2
    done
    $U countlog "$f" ${2:-}
}
dropped() {  # t: scimtap's dropped-event counters, or -1
    [ -n "${ADMIN_OF[$1]:-}" ] || { echo -1; return; }
    $U metric "http://127.0.0.1:${ADMIN_OF[$1]}/metrics" \
        scimtap_audit_handoff_dropped_total scimtap_sink_events_dropped_total
}
run_wrk() {  # target conns seconds json_out [delay_ms]
    BENCH_PAYLOAD_DIR=$LOAD_DIR/payloads BENCH_WRK_JSON=$4 BENCH_DELAY_MS=${5:-0} timeout $(( $3 + 60 )) "${GEN[@]}" \
        wrk -t"$WRK_THREADS" -c"$2" -d"$3"s --timeout "$WRK_TIMEOUT" \
        -s "$LOAD_DIR/lib/scim-mix.lua" "http://127.0.0.1:${PORT_OF[$1]}" > "$RUN_DIR/wrk.out" 2>&1 \
        || { cat "$RUN_DIR/wrk.out" >&2; die "wrk failed against $1"; }
}
measure() {  # round conns target [delay_ms]
    local rd=$1 c=$2 t=$3 dl=${4:-0} logf=${LOG_OF[$3]:-} ppid=${PID_OF[$3]:-0} lines=-1 bad=-1 recs=-1 intents=-1
    local d0 d1 drop=-1 kind="" mode=saturated
    [ "$dl" -gt 0 ] && mode=paced
    case "$t" in scimtap*) kind=events ;; esac
    kill -0 "${PID_OF[upstream]}" 2>/dev/null || die "the upstream exited"
    [ "$ppid" = 0 ] || kill -0 "$ppid" 2>/dev/null || die "$t exited (see $RUN_DIR/$t.err)"
    clear_log "$logf"
    d0=$(dropped "$t")
    $U resetpeak "$ppid" >/dev/null
    $U snap proxy="$ppid" upstream="${PID_OF[upstream]}" self=$$ > "$RUN_DIR/before.json"
    run_wrk "$t" "$c" "$DURATION" "$RUN_DIR/wrk.json" "$dl"
    $U snap proxy="$ppid" upstream="${PID_OF[upstream]}" self=$$ > "$RUN_DIR/after.json"
    [ -n "$logf" ] && read -r lines bad recs intents < <(count_lines "$logf" "$kind")
    d1=$(dropped "$t")
    [ "$d0" -ge 0 ] && [ "$d1" -ge 0 ] && drop=$((d1 - d0))
    $U record "$RUN_DIR/before.json" "$RUN_DIR/after.json" "$RUN_DIR/wrk.json" \
        round="$rd" conc="$c" target="$t" log_lines="$lines" log_bad_json="$bad" log_records="$recs" \
        log_intents="$intents" dropped="$drop" mode="$mode" delay_ms="$dl" >> "$RESULTS"
    python3 - "$RESULTS" <<'EOF' >&2
import json, sys
r = json.loads(open(sys.argv[1]).readlines()[-1])
print("[load]   round %d c=%-3d %-10s%s %8.0f req/s  p50 %6.2f ms  p99 %7.2f ms  cpu/10k %-6s  rss %-5s MiB  lines %s/%d  err %d  other load %s" % (
    r["round"], r["conc"], r["target"], " paced" if r["mode"] == "paced" else "", r["rps"], r["lat_p50_us"] / 1e3, r["lat_p99_us"] / 1e3,
    r.get("proxy_cpu_s_per_10k", "-"), r.get("proxy_peak_rss_mib", "-"), r["log_lines"], r["requests"],
    r["errors"], r.get("other_load_cores")))
EOF
    clear_log "$logf"   # keep disk use bounded: logs are counted, then dropped
}

maxc=$(echo $CONNS | tr ' ' '\n' | sort -n | tail -n 1)
if [ "$WARMUP" -gt 0 ] && [ "$PROFILE" = 0 ]; then
    for t in "${MEASURED[@]}"; do
        say "warm-up $t (${WARMUP}s, c=$maxc)"
        run_wrk "$t" "$maxc" "$WARMUP" "$RUN_DIR/warm.json"
    done
fi

if [ "$PROFILE" = 1 ]; then
    # One run of scimtap at the largest connection count under perf's cpu-clock sampler (this VM
    # exposes no hardware counters), call graphs from DWARF debug info (the release profile keeps it).
    PERF_DATA=$RUN_DIR/perf.data
    say "profiling scimtap: perf record, ${DURATION}s, c=$maxc"
    timeout $(( DURATION + 30 )) perf record -q -e cpu-clock -F 499 --call-graph dwarf,16384 \
        -p "${PID_OF[scimtap]}" -o "$PERF_DATA" -- sleep $(( DURATION + 1 )) 2>"$RUN_DIR/perf.err" &
    perf_pid=$!
    sleep 0.5
    $U threads "${PID_OF[scimtap]}" > "$RUN_DIR/threads0.json"
    run_wrk scimtap "$maxc" "$DURATION" "$RUN_DIR/wrk.json"
    $U threads "${PID_OF[scimtap]}" > "$RUN_DIR/threads1.json"
    wait "$perf_pid" || true
    reqs=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["requests"])' "$RUN_DIR/wrk.json")
    say "$reqs requests in ${DURATION}s under perf"
    clean() { grep -v '^#' | sed 's/[[:space:]]*-[[:space:]]*-[[:space:]]*$//; s/[[:space:]]*$//' | sed '/^$/d' | cut -c1-200; }
    {
        echo "# scimtap profile $STAMP (perf record -e cpu-clock, c=$maxc, ${DURATION}s, $reqs requests)"
        echo; cat "$OUT_DIR/meta.md"; echo
        echo "## CPU and context switches by thread (from /proc, same run)"; echo
        $U threaddiff "$RUN_DIR/threads0.json" "$RUN_DIR/threads1.json" "$reqs"; echo
        echo "## Self time by thread and symbol (share of all samples)"; echo; echo '```'
        perf report -i "$PERF_DATA" --stdio --no-children --sort comm,symbol -g none --percent-limit 0.3 2>/dev/null | clean
        echo '```'; echo
        echo "## Inclusive time (children) by symbol"; echo; echo '```'
        perf report -i "$PERF_DATA" --stdio --children --sort symbol -g none --percent-limit 2 2>/dev/null | clean
        echo '```'
    } > "$OUT_DIR/profile.md"
    cp "$PERF_DATA" "$OUT_DIR/perf.data" 2>/dev/null || true
    say "done: $OUT_DIR/profile.md (perf report -i $OUT_DIR/perf.data for more)"
    exit 0
fi

# Latency at a fixed offered load: every connection pauses DELAY ms after each response, so
# contenders that keep up all see the same request rate (mitmproxy cannot, so it is left out).
PACED=()
if [ "$PACED_RATE" -gt 0 ]; then
    DELAY_MS=$(( (maxc * 1000 + PACED_RATE / 2) / PACED_RATE ))
    [ "$DELAY_MS" -ge 1 ] || DELAY_MS=1
    for t in "${MEASURED[@]}"; do [ "$t" = mitmproxy ] || PACED+=("$t"); done
fi

n=${#MEASURED[@]}
for rd in $(seq 1 "$ROUNDS"); do
    for c in $CONNS; do
        for i in $(seq 0 $((n - 1))); do
            measure "$rd" "$c" "${MEASURED[$(( (i + rd - 1) % n ))]}"   # the order rotates per round
        done
    done
    for i in $(seq 0 $(( ${#PACED[@]} - 1 ))); do
        measure "$rd" "$maxc" "${PACED[$(( (i + rd - 1) % ${#PACED[@]} ))]}" "$DELAY_MS"
    done
done

# ---- report ------------------------------------------------------------------------------
unavail_json=$(for t in "${!UNAVAILABLE[@]}"; do printf '%s\t%s\n' "$t" "${UNAVAILABLE[$t]}"; done |
    python3 -c 'import json, sys; print(json.dumps(dict(l.rstrip("\n").split("\t", 1) for l in sys.stdin if l.strip())))')
{
    echo "# scimtap load benchmark $STAMP"
    echo
    cat "$OUT_DIR/meta.md"
    echo
    $U summarize "$RESULTS" "$unavail_json"
} > "$OUT_DIR/summary.md"
for f in "$RUN_DIR"/*.err "$RUN_DIR"/*error.log "$RUN_DIR"/mitmproxy.out; do
    [ -s "$f" ] && cp "$f" "$OUT_DIR/" || true   # keep non-empty server diagnostics
done
cat "$OUT_DIR/summary.md"
say "done: $OUT_DIR/summary.md"
