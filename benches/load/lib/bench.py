#!/usr/bin/env python3
"""Helpers for benches/load/run.sh (Python standard library only).

  ports N                      N free loopback TCP ports (bound to port 0 together, then released)
  snap NAME=PID ...            JSON snapshot: CPU seconds and memory of each process tree
                               (utime+stime of every live process under PID, plus cutime+cstime
                               of reaped children; VmRSS and VmHWM summed over the tree) and
                               the /proc/stat counters
  resetpeak PID ...            reset VmHWM of every process in these trees (clear_refs 5), so the
                               next snapshot's VmHWM is the peak during one measurement
  record BEFORE AFTER WRK_JSON key=value ...
                               one JSONL record for a measurement
  countlog FILE [events]       '<lines> <bad> <records> <intents>' over FILE and its rotations
                               FILE.1, FILE.2, ...: newline count (skipping a sparse hole), how
                               many of the first/last 200 lines are not JSON objects, and, with
                               'events', how many lines are scimtap records (a top-level
                               "record" member: integrity.*, audit.intent), which are not
                               counted as lines, and how many of those are audit.intent
  threads PID                  JSON: per thread of PID, its name, CPU ticks and context switches
  threaddiff BEFORE AFTER REQUESTS
                               markdown: CPU share and context switches per request, per thread name
  metric URL NAME...           sum of the samples of these Prometheus counters at URL, or -1
  summarize RESULTS.jsonl [UNAVAILABLE_JSON]
                               the markdown report: table, targets, per-run records
"""
import json
import os
import re
import socket
import statistics
import sys
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- ports -------------------------------------------------------------------------------
def cmd_ports(args):
    n = int(args[0])
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        print(" ".join(str(s.getsockname()[1]) for s in socks))
    finally:
        for s in socks:
            s.close()


# ---- /proc -------------------------------------------------------------------------------
def _stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    rest = s[s.rindex(")") + 2:].split()
    # rest[0] is field 3 (state); field N is rest[N-3]
    ppid = int(rest[1])
    ut, st, cut, cst = (int(rest[i]) for i in (11, 12, 13, 14))
    return ppid, ut + st + cut + cst


def _all_procs():
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                out[int(d)] = _stat(d)
            except (OSError, ValueError, IndexError):
                pass
    return out


def _tree(root, procs):
    children = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    stack, seen = [root], []
    while stack:
        p = stack.pop()
        if p in seen or p not in procs:
            continue
        seen.append(p)
        stack.extend(children.get(p, []))
    return seen


def _mem_kb(pid):
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def proc_stat():
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu"):
                parts = line.split()
                out[parts[0]] = [int(x) for x in parts[1:]]
    return out


def cmd_snap(args):
    procs = _all_procs()
    snap = {"t": time.monotonic(), "cpu": {}, "nprocs": {}, "rss_kb": {}, "hwm_kb": {}, "stat": proc_stat()}
    for a in args:
        name, pid = a.split("=", 1)
        if pid and pid != "0":
            tree = _tree(int(pid), procs)
            snap["cpu"][name] = sum(procs[p][1] for p in tree) / CLK_TCK
            snap["nprocs"][name] = len(tree)
            mem = [_mem_kb(p) for p in tree]
            snap["rss_kb"][name] = sum(m[0] for m in mem)
            snap["hwm_kb"][name] = sum(m[1] for m in mem)
    json.dump(snap, sys.stdout)
    sys.stdout.write("\n")


def cmd_resetpeak(args):
    procs = _all_procs()
    ok = True
    for pid in args:
        if not pid or pid == "0":
            continue
        for p in _tree(int(pid), procs):
            try:
                with open(f"/proc/{p}/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                ok = False
    print("ok" if ok else "failed")


def _busy(before, after, key):
    # fields: user nice system idle iowait irq softirq steal guest guest_nice
    b, a = before.get(key), after.get(key)
    if not b or not a:
        return None, None
    d = [y - x for x, y in zip(b, a)]
    total = sum(d[:8]) or 1
    idle = d[3] + d[4]
    return 100.0 * (total - idle) / total, 100.0 * d[7] / total


def _num(v):
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return v


def cmd_record(args):
    before = json.load(open(args[0]))
    after = json.load(open(args[1]))
    wrk = json.load(open(args[2]))
    rec = {}
    for kv in args[3:]:
        k, v = kv.split("=", 1)
        rec[k] = _num(v)
    rec.update(wrk)
    dur = wrk["duration_us"] / 1e6
    rec["rps"] = wrk["requests"] / dur if dur else 0.0
    rec["errors"] = sum(wrk[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
    for name in after["cpu"]:
        if name in before["cpu"]:
            cpu = after["cpu"][name] - before["cpu"][name]
            rec[f"{name}_cpu_s"] = round(cpu, 3)
            rec[f"{name}_cpu_s_per_10k"] = round(cpu / wrk["requests"] * 1e4, 4) if wrk["requests"] else None
            rec[f"{name}_peak_rss_mib"] = round(after["hwm_kb"][name] / 1024, 1)
            rec[f"{name}_end_rss_mib"] = round(after["rss_kb"][name] / 1024, 1)
    rec["window_s"] = round(after["t"] - before["t"], 3)
    if "self" in after["cpu"] and "self" in before["cpu"]:
        # CPU used on the host by anything this benchmark did not start (other builds, tests):
        # busy time from /proc/stat minus the CPU of this script's own process tree.
        b, a = before["stat"]["cpu"], after["stat"]["cpu"]
        d = [y - x for x, y in zip(b, a)]
        busy_s = (sum(d[:8]) - d[3] - d[4]) / CLK_TCK
        own_s = after["cpu"]["self"] - before["cpu"]["self"]
        rec["other_load_cores"] = round(max(0.0, busy_s - own_s) / rec["window_s"], 2) if rec["window_s"] else None
    busy_all, steal_all = _busy(before["stat"], after["stat"], "cpu")
    rec["host_busy_pct"] = round(busy_all, 1)
    rec["steal_pct"] = round(steal_all, 2)
    for k in sorted(after["stat"]):
        if k != "cpu":
            b, _ = _busy(before["stat"], after["stat"], k)
            rec[f"{k}_busy_pct"] = round(b, 1)
    json.dump(rec, sys.stdout)
    sys.stdout.write("\n")


# ---- audit logs --------------------------------------------------------------------------
def _rotations(path):
    """path, then path.1, path.2, ... that exist (rotated by scimtap's file sink)."""
    out = [path] if os.path.exists(path) else []
    i = 1
    while os.path.exists(f"{path}.{i}"):
        out.append(f"{path}.{i}")
        i += 1
    return out


def _count_one(path, events_only, sample):
    """(lines, records, intents, head, tail) of one file. A writer that does not use O_APPEND (HAProxy
    resets the fd flags of its stdout) keeps its offset after run.sh truncates the file, which
    leaves a sparse hole of NULs in front: skip it with SEEK_DATA and strip NULs."""
    with open(path, "rb") as fh:
        fd = fh.fileno()
        size = os.fstat(fd).st_size
        try:
            start = os.lseek(fd, 0, os.SEEK_DATA)
        except OSError:  # ENXIO: no data at all
            return 0, 0, 0, [], []
        fh.seek(start)
        lines = records = intents = 0
        head, first, carry = [], True, b""
        while True:
            chunk = fh.read(1 << 22)
            if not chunk:
                break
            if first:
                chunk = chunk.lstrip(b"\0")
                first = False
            data = carry + chunk
            cut = data.rfind(b"\n") + 1
            whole, carry = data[:cut], data[cut:]
            n = whole.count(b"\n")
            lines += n
            if events_only and b'"record":' in whole:
                for line in whole.split(b"\n"):
                    kind = _record_kind(line) if b'"record":' in line else None
                    if kind is not None:
                        records += 1
                        intents += kind == "audit.intent"
            if sample and len(head) < 200:
                head.extend(whole.split(b"\n")[:-1][: 200 - len(head)])
        tail = []
        if sample and lines > 200:
            fh.seek(max(start, size - (1 << 20)))
            tail = fh.read().split(b"\n")[:-1][-200:]
            if size - (1 << 20) > start:
                tail = tail[1:]  # the first one may be cut
    return lines, records, intents, head, tail


def _record_kind(line):
    """The "record" member of a scimtap record line (integrity.*, audit.intent), else None."""
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return str(obj["record"]) if isinstance(obj, dict) and "record" in obj else None


def cmd_countlog(args):
    path = args[0]
    events_only = len(args) > 1 and args[1] == "events"
    files = _rotations(path)
    lines = records = intents = 0
    sample = []
    for i, p in enumerate(files):
        n, r, k, head, tail = _count_one(p, events_only, sample=(i == 0))
        lines += n
        records += r
        intents += k
        sample += head + tail
    bad = 0
    for line in sample:
        try:
            ok = isinstance(json.loads(line), dict)
        except ValueError:
            ok = False
        if not ok:
            bad += 1
            if bad <= 3:
                sys.stderr.write("[bench]   bad log line in %s: %r\n" % (path, line[:160]))
    if events_only:
        print(lines - records, bad, records, intents)
    else:
        print(lines, bad, -1, -1)


def cmd_threads(args):
    pid = int(args[0])
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                st = fh.read()
            comm = st[st.index("(") + 1:st.rindex(")")]
            rest = st[st.rindex(")") + 2:].split()
            ticks = int(rest[11]) + int(rest[12])
            vcs = nvcs = 0
            with open(f"/proc/{pid}/task/{tid}/status") as fh:
                for line in fh:
                    if line.startswith("voluntary_ctxt_switches:"):
                        vcs = int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        nvcs = int(line.split()[1])
            out[tid] = [comm, ticks, vcs, nvcs]
        except OSError:
            pass
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


def cmd_threaddiff(args):
    before, after = json.load(open(args[0])), json.load(open(args[1]))
    reqs = int(args[2]) or 1
    agg = {}
    for tid, (comm, ticks, vcs, nvcs) in after.items():
        b = before.get(tid, [comm, 0, 0, 0])
        a = agg.setdefault(comm, [0, 0, 0, 0])
        a[0] += 1
        a[1] += ticks - b[1]
        a[2] += vcs - b[2]
        a[3] += nvcs - b[3]
    total = sum(a[1] for a in agg.values()) or 1
    print("| thread | threads | CPU s | share | CPU µs / request | voluntary switches / request | involuntary switches / request |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for comm, (n, ticks, vcs, nvcs) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        print(f"| {comm} | {n} | {ticks / CLK_TCK:.2f} | {100 * ticks / total:.1f}% | {ticks / CLK_TCK / reqs * 1e6:.1f} "
              f"| {vcs / reqs:.2f} | {nvcs / reqs:.2f} |")


def cmd_metric(args):
    url, names = args[0], set(args[1:])
    try:
        text = urllib.request.urlopen(url, timeout=3).read().decode()
    except OSError:
        print(-1)
        return
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if m and m.group(1) in names:
            total += float(m.group(3))
    print(int(total))


# ---- report ------------------------------------------------------------------------------
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def spread(xs):
    xs = [x for x in xs if x is not None]
    if len(xs) < 2:
        return None
    m = statistics.median(xs)
    return (max(xs) - min(xs)) / m * 100 if m else None


def f(x, fmt="{:.0f}", none="-"):
    return none if x is None else fmt.format(x)


SCIMTAP = "scimtap"            # default config: the targets apply to this contender
SCIMTAP_WA = "scimtap-wa"      # audit.mode = "write_ahead"
SCIMTAP_STATE = "scimtap-state"  # [state] on (SQLite shadow state)
RSS_LIMIT_MIB = 64
ADDED_P99_LIMIT_MS = 1.0


def cmd_summarize(args):
    all_recs = [json.loads(line) for line in open(args[0]) if line.strip()]
    recs = [r for r in all_recs if r.get("mode", "saturated") != "paced"]
    paced_recs = [r for r in all_recs if r.get("mode") == "paced"]
    unavailable = json.loads(args[1]) if len(args) > 1 and args[1] else {}
    targets = []
    for r in recs:
        if r["target"] not in targets:
            targets.append(r["target"])
    concs = sorted({r["conc"] for r in recs})
    by = {}
    for r in recs:
        by.setdefault((r["conc"], r["target"], r["round"]), r)
    rounds = sorted({r["round"] for r in recs})

    def paired(conc, t, ref, fn, by=by):
        xs = []
        for rd in rounds:
            a, b = by.get((conc, t, rd)), by.get((conc, ref, rd))
            if a and b:
                v = fn(a, b)
                if v is not None:
                    xs.append(v)
        return med(xs)

    def ratio(key):
        return lambda a, b: a[key] / b[key] if a.get(key) and b.get(key) else None

    def added_p99(a, b):
        return (a["lat_p99_us"] - b["lat_p99_us"]) / 1000

    def runs(c, t):
        return [by[(c, t, rd)] for rd in rounds if (c, t, rd) in by]

    def missing(rs):
        ls = [r.get("log_lines") for r in rs]
        if any(x is None or x < 0 for x in ls):
            return None
        return sum(max(0, r["requests"] - r["log_lines"]) for r in rs)

    out = []
    out.append("| conn | contender | req/s | p50 ms | p99 ms | p99 added vs direct, ms | proxy CPU s / 10k req "
               "| peak RSS MiB | audit lines / requests completed | missing lines "
               "| req/s vs direct | req/s vs nginx | CPU vs nginx | p99 vs nginx | wrk errors "
               "| spread req/s | spread CPU |")
    out.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    order = targets + [t for t in unavailable if t not in targets]
    for c in concs:
        for t in order:
            if t in unavailable:
                out.append(f"| {c} | {t} | not available: {unavailable[t]} |" + " |" * 14)
                continue
            rs = runs(c, t)
            if not rs:
                continue
            rps = [r["rps"] for r in rs]
            cpu = [r.get("proxy_cpu_s_per_10k") for r in rs]
            rss = [r.get("proxy_peak_rss_mib") for r in rs if r.get("proxy_peak_rss_mib") is not None]
            reqs = sum(r["requests"] for r in rs)
            miss = missing(rs)
            if miss is None:
                lines_s = "-"
            else:
                lines_s = f"{sum(r['log_lines'] for r in rs)} / {reqs}"
            out.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                c, t, f(med(rps)),
                f(med([r["lat_p50_us"] / 1000 for r in rs]), "{:.2f}"),
                f(med([r["lat_p99_us"] / 1000 for r in rs]), "{:.2f}"),
                "-" if t == "direct" else f(paired(c, t, "direct", added_p99), "{:+.2f}"),
                f(med(cpu), "{:.3f}"),
                f(max(rss) if rss else None, "{:.1f}"),
                lines_s, f(miss, "{}"),
                f(paired(c, t, "direct", ratio("rps")), "{:.3f}"),
                f(paired(c, t, "nginx", ratio("rps")), "{:.3f}"),
                f(paired(c, t, "nginx", ratio("proxy_cpu_s_per_10k")), "{:.2f}"),
                f(paired(c, t, "nginx", ratio("lat_p99_us")), "{:.2f}"),
                sum(r["errors"] for r in rs),
                f(spread(rps), "{:.0f}%"), f(spread(cpu), "{:.0f}%")))
    print("\n".join(out))
    print()
    print(f"Medians over {len(rounds)} interleaved round(s); ratios and 'p99 added' are medians of per-round "
          "figures (each contender against the reference measured in the same round at the same connection "
          "count). 'proxy CPU' = utime+stime of the proxy's process tree during the measurement, read from "
          "/proc; 'direct' has no proxy. Peak RSS = VmHWM summed over the proxy's processes, reset before each "
          "measurement, the highest of the rounds. 'audit lines' = lines the proxy wrote during the "
          "measurement (for scimtap: events only, not integrity/intent records) vs requests wrk completed; "
          "'missing' = requests completed without a line, summed over the rounds (more lines than requests "
          "is expected: requests in flight when wrk stops are logged but not counted). Spread = (max - min) "
          "/ median across rounds.")
    print()
    steal = [r.get("steal_pct") for r in all_recs]
    busy = [r.get("host_busy_pct") for r in all_recs]
    other = [r.get("other_load_cores") for r in all_recs if r.get("other_load_cores") is not None]
    print(f"Host during the measurements: median busy {f(med(busy), '{:.1f}')}% "
          f"(max {f(max(busy) if busy else None, '{:.1f}')}%), "
          f"median steal {f(med(steal), '{:.2f}')}% (max {f(max(steal) if steal else None, '{:.2f}')}%)"
          + (f"; CPU used by other programs (not started by this benchmark): median {med(other):.2f} cores, "
             f"max {max(other):.2f}, of {os.cpu_count()} CPUs" if other else "") + ".")
    print()
    wa = [r for r in recs if r["target"] == SCIMTAP_WA]
    if wa:
        intents = sum(max(0, r.get("log_intents", -1)) for r in wa)
        reqs = sum(r["requests"] for r in wa)
        if intents == 0:
            print(f"**{SCIMTAP_WA}**: `audit.mode = \"write_ahead\"` was accepted, but it wrote no `audit.intent` "
                  "record in any measurement: write-ahead is not in effect in this build, so these figures are "
                  "those of the default (async) path with a different config line.")
        else:
            print(f"**{SCIMTAP_WA}**: {intents} `audit.intent` records for {reqs} requests completed "
                  f"({intents / reqs:.2f} per request; 6 of every 10 requests in the mix are SCIM writes).")
        print()

    # ---- latency at a fixed offered load
    pby = {}
    for r in paced_recs:
        pby.setdefault((r["conc"], r["target"], r["round"]), r)
    if paced_recs:
        ptargets = []
        for r in paced_recs:
            if r["target"] not in ptargets:
                ptargets.append(r["target"])
        pc = paced_recs[0]["conc"]
        offered = pc * 1000 / paced_recs[0]["delay_ms"]
        print(f"### Latency at a fixed offered load ({pc} connections, each pausing "
              f"0-{2 * paced_recs[0]['delay_ms']} ms at random, {paced_recs[0]['delay_ms']} ms on "
              f"average, after every response: at most {offered:.0f} req/s)")
        print()
        print("| conn | contender | req/s | p50 ms | p99 ms | p99.9 ms | p99 added vs direct, ms | proxy CPU s / 10k req "
              "| peak RSS MiB | missing lines | wrk errors |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for t in ptargets:
            rs = [pby[(pc, t, rd)] for rd in rounds if (pc, t, rd) in pby]
            rss = [r.get("proxy_peak_rss_mib") for r in rs if r.get("proxy_peak_rss_mib") is not None]
            print("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                pc, t, f(med([r["rps"] for r in rs])),
                f(med([r["lat_p50_us"] / 1000 for r in rs]), "{:.2f}"),
                f(med([r["lat_p99_us"] / 1000 for r in rs]), "{:.2f}"),
                f(med([r["lat_p999_us"] / 1000 for r in rs]), "{:.2f}"),
                "-" if t == "direct" else f(paired(pc, t, "direct", added_p99, by=pby), "{:+.2f}"),
                f(med([r.get("proxy_cpu_s_per_10k") for r in rs]), "{:.3f}"),
                f(max(rss) if rss else None, "{:.1f}"),
                f(missing(rs), "{}"), sum(r["errors"] for r in rs)))
        print()
        print("Unlike the saturated runs above, every contender here serves (nearly) the same request rate, "
              "so the latency it adds to direct is comparable; latency is measured from sending a request "
              "to its response, the pause excluded.")
        print()

    # ---- targets (issue 6): scimtap default config, figures from this run
    print("### Targets (scimtap, default config; write_ahead and [state] shown for information)")
    print()
    print("| target | scimtap | met? | scimtap write_ahead | scimtap with [state] |")
    print("|---|---|---|---|---|")

    def target_rows():
        for c in (16, 64):
            if c not in concs:
                continue
            yield (f"req/s ≥ nginx's at {c} connections (ratio ≥ 1.00)",
                   lambda t, c=c: paired(c, t, "nginx", ratio("rps")), lambda v: v >= 1.0, "{:.2f}x")
        for c in (16, 64):
            if c not in concs:
                continue
            yield (f"CPU per request ≤ nginx's at {c} connections (ratio ≤ 1.00)",
                   lambda t, c=c: paired(c, t, "nginx", ratio("proxy_cpu_s_per_10k")), lambda v: v <= 1.0, "{:.2f}x")
        if 64 in concs:
            yield (f"p99 added vs direct ≤ {ADDED_P99_LIMIT_MS:g} ms at 64 connections, saturated "
                   "(closed loop: each at its own maximum rate)",
                   lambda t: paired(64, t, "direct", added_p99), lambda v: v <= ADDED_P99_LIMIT_MS, "{:+.2f} ms")
        if paced_recs and paced_recs[0]["conc"] == 64:
            yield (f"p99 added vs direct ≤ {ADDED_P99_LIMIT_MS:g} ms at 64 connections, fixed offered load "
                   f"({64000 / paced_recs[0]['delay_ms']:.0f} req/s)",
                   lambda t: paired(64, t, "direct", added_p99, by=pby), lambda v: v <= ADDED_P99_LIMIT_MS,
                   "{:+.2f} ms")
        yield (f"peak RSS ≤ {RSS_LIMIT_MIB} MiB under load",
               lambda t: max([r["proxy_peak_rss_mib"] for r in all_recs
                              if r["target"] == t and r.get("proxy_peak_rss_mib") is not None] or [None]) or None,
               lambda v: v <= RSS_LIMIT_MIB, "{:.1f} MiB")
        yield ("0 audit lines missing (all runs)",
               lambda t: (lambda ms: None if any(m is None for m in ms) else sum(ms))(
                   [missing(runs(c, t)) for c in concs if runs(c, t)]
                   + [missing([r for r in paced_recs if r["target"] == t])] or [None]),
               lambda v: v == 0, "{} missing")

    for name, value, ok, fmt in target_rows():
        v = value(SCIMTAP) if SCIMTAP not in unavailable else None
        met = "-" if v is None else ("**met**" if ok(v) else "**not met**")
        if SCIMTAP_WA in unavailable:
            wa = "not available"
        else:
            w = value(SCIMTAP_WA)
            wa = "-" if w is None else fmt.format(w) + (" (met)" if ok(w) else " (not met)")
        if SCIMTAP_STATE in unavailable:
            st = "not available"
        else:
            x = value(SCIMTAP_STATE)
            st = "-" if x is None else fmt.format(x) + (" (met)" if ok(x) else " (not met)")
        print(f"| {name} | {f(v, fmt)} | {met} | {wa} | {st} |")
    print()

    print("<details><summary>Per-run records</summary>\n")
    print("| round | conn | contender | pass | req/s | p50 ms | p99 ms | proxy CPU s/10k | upstream CPU s/10k "
          "| peak RSS MiB | audit lines | records | requests | dropped (metrics) | errors | cpu0 busy % | cpu1 busy % | other load, cores |")
    print("|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in all_recs:
        print("| {} | {} | {} | {} | {} | {:.2f} | {:.2f} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            r["round"], r["conc"], r["target"], r.get("mode", "saturated"), f(r["rps"]), r["lat_p50_us"] / 1000, r["lat_p99_us"] / 1000,
            f(r.get("proxy_cpu_s_per_10k"), "{:.3f}"), f(r.get("upstream_cpu_s_per_10k"), "{:.3f}"),
            f(r.get("proxy_peak_rss_mib"), "{:.1f}"),
            r.get("log_lines") if r.get("log_lines", -1) >= 0 else "-",
            r.get("log_records") if r.get("log_records", -1) >= 0 else "-",
            r["requests"],
            r.get("dropped") if r.get("dropped", -1) >= 0 else "-",
            r["errors"],
            f(r.get("cpu0_busy_pct"), "{:.0f}"), f(r.get("cpu1_busy_pct"), "{:.0f}"), f(r.get("other_load_cores"), "{:.2f}")))
    print("\n</details>")


if __name__ == "__main__":
    cmd, rest = sys.argv[1], sys.argv[2:]
    {"ports": cmd_ports, "snap": cmd_snap, "resetpeak": cmd_resetpeak, "record": cmd_record,
     "countlog": cmd_countlog, "metric": cmd_metric,
     "threads": cmd_threads, "threaddiff": cmd_threaddiff, "summarize": cmd_summarize}[cmd](rest)
