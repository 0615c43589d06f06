#!/usr/bin/env python3
"""Helpers of bench/ingest (standard library only).

  watch        poll ClickHouse until the stored rows reach the expected count;
               record when, and the CPU used meanwhile by given processes and by
               the whole machine
  proc-cpu     print utime+stime seconds of a pid
  cpu-rate     CPU cores a pid uses over a short interval (background load)
  free-port    print a free TCP port on 127.0.0.1
  render-sql   render bench/ingest.d/baseline.sql and run it statement by statement
  verify       compare the stored rows of a database with a loadgen manifest
  freshness    quantiles from a Prometheus histogram in a /metrics dump
  topics       create or delete Kafka topics (confluent-kafka's AdminClient)
  report       print the table (and write the JSON) from the phase results
"""

import argparse
import datetime
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ basics ---
def proc_cpu(pid):
    """utime + stime of a live process in seconds, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    # fields[0] is the state (field 3); utime/stime are fields 14/15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def alive(pid):
    """Is pid a running (not zombie) process?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rindex(")") + 2] not in "ZX"


def machine_busy_cpu():
    """CPU-seconds spent by the whole machine (all but idle + iowait)."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    v = [int(x) for x in parts]
    total = sum(v[:8])  # user nice system idle iowait irq softirq steal
    idle = v[3] + v[4]
    return (total - idle) / CLK_TCK


def ch_query(url, sql, timeout=30):
    req = urllib.request.Request(url, data=sql.encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read().decode()
    except urllib.error.HTTPError as e:
        body = e.read().decode(errors="replace").strip()
        raise RuntimeError(f"ClickHouse: {body[:2000]}\nquery: {sql[:500]}") from None


def metric_sum(text, name):
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
            seen = True
    return total if seen else None


def count_sql(db, tables):
    """Rows of `tables` that a query sees now: the rows of their active parts.

    Exactly count() (a part becomes active when its INSERT or merge commits,
    which is when SELECTs see it), but read from metadata: on 18.16 count()
    reads a column of every part, which at 10 polls/s over a million rows cost
    ~6 ms of server CPU per poll (~2.6 CPU-s per M events at 20 k/s, charged
    to the system under test); this costs ~0.3 ms."""
    names = ",".join(f"'{t}'" for t in tables)
    return (f"SELECT sum(rows) FROM system.parts WHERE database = '{db}' "
            f"AND table IN ({names}) AND active")


# ------------------------------------------------------------------- watch ---
def cmd_watch(a):
    pids = {}
    for item in a.pid or []:
        name, _, pid = item.partition("=")
        pids[name] = int(pid)
    t0 = time.time()
    cpu0 = {n: proc_cpu(p) for n, p in pids.items()}
    busy0 = machine_busy_cpu()
    sql = count_sql(a.db, a.tables.split(","))
    t_first = None
    rows = 0
    deadline = time.monotonic() + a.timeout
    status = "timeout"
    while time.monotonic() < deadline:
        if a.metrics and t_first is None:
            # Until the first message is consumed, only poll /metrics (every
            # 20 ms: t_first is the start of the processing window).
            try:
                with urllib.request.urlopen(a.metrics, timeout=1) as r:
                    c = metric_sum(r.read().decode(), "adlog_ingest_consumed_total")
                if c and c > 0:
                    t_first = time.time()
            except (OSError, urllib.error.URLError):
                pass
            if t_first is None:
                if a.worker_pid and not alive(a.worker_pid):
                    status = "worker-exited"
                    break
                time.sleep(0.02)
                continue
        rows = int(ch_query(a.ch_url, sql).strip())
        if rows >= a.expect:
            status = "done"
            break
        if a.worker_pid and not alive(a.worker_pid):
            # The worker is gone; one last look (its final batches may just have landed).
            rows = int(ch_query(a.ch_url, sql).strip())
            status = "done" if rows >= a.expect else "worker-exited"
            break
        time.sleep(a.interval)
    t_done = time.time()
    cpu1 = {n: proc_cpu(p) for n, p in pids.items()}
    busy1 = machine_busy_cpu()
    if a.metrics and a.metrics_dump:
        try:  # the worker's own view at t_done (insert durations, batch sizes, ...)
            with urllib.request.urlopen(a.metrics, timeout=2) as r, open(a.metrics_dump, "wb") as f:
                f.write(r.read())
        except (OSError, urllib.error.URLError):
            pass
    out = {
        "status": status, "rows": rows, "expect": a.expect,
        "t_watch_start": t0, "t_first": t_first, "t_done": t_done,
        "cpu_s": {n: (None if cpu0[n] is None or cpu1[n] is None else cpu1[n] - cpu0[n])
                  for n in pids},
        "machine_busy_cpu_s": busy1 - busy0,
    }
    with open(a.out, "w") as f:
        json.dump(out, f)
    if status != "done":
        print(f"watch: {status}: {rows} of {a.expect} rows in {a.db} after "
              f"{t_done - t0:.1f}s", file=sys.stderr)
        sys.exit(2)


def cmd_proc_cpu(a):
    v = proc_cpu(a.pid)
    if v is None:
        sys.exit(f"no process {a.pid}")
    print(f"{v:.2f}")


def cmd_cpu_rate(a):
    c0, t0 = proc_cpu(a.pid), time.monotonic()
    time.sleep(a.seconds)
    c1, t1 = proc_cpu(a.pid), time.monotonic()
    print(f"{(c1 - c0) / (t1 - t0):.3f}" if c0 is not None and c1 is not None else "0")


def cmd_free_port(a):
    socks = []
    for _ in range(a.n):  # held open together, so the ports are distinct
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))
    for s in socks:
        s.close()


# -------------------------------------------------------------- render-sql ---
def cmd_render_sql(a):
    sql = open(a.file).read()
    sql = re.sub(r"(?m)^--.*\n", "", sql)
    subst = {"{db}": a.db, "{request_topic}": a.request_topic,
             "{exposure_topic}": a.exposure_topic, "{interaction_topic}": a.interaction_topic}
    for k, v in subst.items():
        sql = sql.replace(k, v)
    for stmt in re.split(r"(?m)^;[ \t]*$", sql):
        if stmt.strip():
            ch_query(a.ch_url, stmt)


# ------------------------------------------------------------------ verify ---
RAW_TABLE = {"request": "ods_request", "exposure": "ods_exposure",
             "interaction": "ods_interaction"}


def cmd_verify(a):
    m = json.load(open(a.manifest))
    checks = []
    for topic, tc in sorted(m["per_topic"].items()):
        table = RAW_TABLE[tc["log_type"]]
        want = tc["messages"] if a.baseline else tc["good"]
        got, uniq = ch_query(a.ch_url, f"SELECT count(), uniqExact(_topic, _partition, _offset) "
                                       f"FROM {a.db}.{table} WHERE _topic = '{topic}'").split()
        checks.append({"table": table, "want": want, "rows": int(got), "distinct": int(uniq)})
    if not a.baseline:
        want = m["totals"]["bad"]
        got, uniq = ch_query(a.ch_url, f"SELECT count(), uniqExact(_topic, _partition, _offset) "
                                       f"FROM {a.db}.dead_letter").split()
        checks.append({"table": "dead_letter", "want": want, "rows": int(got), "distinct": int(uniq)})
        reasons = dict(
            (r, int(n)) for r, n in (line.split("\t") for line in ch_query(
                a.ch_url, f"SELECT reason, count() FROM {a.db}.dead_letter GROUP BY reason"
            ).splitlines() if line))
        reasons_ok = reasons == m["bad_by_reason"]
    else:
        reasons, reasons_ok = None, None
    exact = all(c["rows"] == c["want"] == c["distinct"] for c in checks) and reasons_ok is not False
    out = {"exact": exact, "checks": checks, "dead_letter_reasons": reasons,
           "dead_letter_reasons_match": reasons_ok,
           "rows": sum(c["rows"] for c in checks), "want": sum(c["want"] for c in checks)}
    json.dump(out, open(a.out, "w"))
    for c in checks:
        flag = "ok" if c["rows"] == c["want"] == c["distinct"] else "MISMATCH"
        print(f"  {c['table']:<16} rows {c['rows']:>10,}  expected {c['want']:>10,}  "
              f"distinct offsets {c['distinct']:>10,}  {flag}")
    if reasons_ok is not None:
        print(f"  dead_letter reasons {'match' if reasons_ok else 'DIFFER from'} the manifest")


# --------------------------------------------------------------- freshness ---
def hist_quantile(buckets, q):
    """Quantile from cumulative Prometheus buckets [(le, count)], interpolating
    linearly within the bucket (from the previous bound, 0 for the first)."""
    total = buckets[-1][1]
    if total == 0:
        return None
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if le == float("inf"):
                return prev_le  # beyond the last finite bound: report that bound
            if c == prev_c:
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return buckets[-1][0]


def parse_hist(text, name):
    buckets = []
    for line in text.splitlines():
        mm = re.match(rf'{re.escape(name)}_bucket\{{.*?le="([^"]+)".*\}} (\S+)$', line)
        if mm:
            buckets.append((float(mm.group(1)), float(mm.group(2))))
    buckets.sort()
    return buckets


def cmd_freshness(a):
    text = open(a.metrics_file).read()
    b = parse_hist(text, "adlog_ingest_freshness_seconds")
    if not b:
        sys.exit("freshness: no adlog_ingest_freshness_seconds histogram in the /metrics dump")
    events = metric_sum(text, "adlog_ingest_freshness_events_total") or 0
    within = metric_sum(text, "adlog_ingest_freshness_within_target_total") or 0
    out = {"p50_s": hist_quantile(b, 0.50), "p99_s": hist_quantile(b, 0.99),
           "events": events, "within_target": within,
           "within_target_ratio": (within / events) if events else None,
           "buckets": [[("+Inf" if le == float("inf") else le), c] for le, c in b]}
    json.dump(out, open(a.out, "w"))


# ------------------------------------------------------------------ topics ---
def cmd_topics(a):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": a.brokers})
    names = [t for t in a.names.split(",") if t]
    if a.action == "create":
        futs = admin.create_topics([NewTopic(t, a.partitions, 1) for t in names],
                                   operation_timeout=10)
    else:
        existing = set(admin.list_topics(timeout=10).topics)
        names = [t for t in names if t in existing]
        if not names:
            return
        futs = admin.delete_topics(names, operation_timeout=10)
    for t, f in futs.items():
        try:
            f.result()
        except Exception as e:  # noqa: BLE001 -- report and go on
            if "already exists" not in str(e).lower():
                print(f"warning: {a.action} topic {t}: {e}", file=sys.stderr)


# ------------------------------------------------------------------ report ---
def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fmt_int(v):
    return "—" if v is None else f"{v:,.0f}"


def fmt_f(v, d=1):
    return "—" if v is None else f"{v:,.{d}f}"


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def fmt_ratio(r, better_low=False):
    if r is None:
        return ""
    return f"{r:.2f}x"


def cmd_report(a):
    d = a.dir
    meta = load(f"{d}/meta.json")
    man = load(f"{d}/manifest.json")
    n = man["totals"]["messages"]
    ours = phase_ours(d, n)
    base = phase_base(d, n) if os.path.exists(f"{d}/baseline.summary.json") else None
    fresh = load(f"{d}/freshness.json")
    fresh_meta = load(f"{d}/freshness.meta.json")

    result = {"meta": meta, "events": n, "manifest_totals": man["totals"],
              "load": man.get("delivery"), "ours": ours, "baseline": base,
              "freshness": None}
    if fresh:
        result["freshness"] = {**fresh_meta, **{k: v for k, v in fresh.items() if k != "buckets"},
                               "buckets": fresh["buckets"],
                               "quantile_method": "linear interpolation within histogram buckets"}
    if base:
        result["ratios"] = {
            "events_per_s": ratio(ours["events_per_s"], base["events_per_s"]),
            "cpu_s_per_m_total": ratio(ours["cpu_s_per_m_total"], base["cpu_s_per_m_total"]),
            "cpu_s_per_m_client": ratio(ours["cpu_s_per_m_client"], base["cpu_s_per_m_client"]),
            "cpu_s_per_m_server": ratio(ours["cpu_s_per_m_server"], base["cpu_s_per_m_server"]),
            "peak_rss_mib": ratio(ours["peak_rss_mib"], base["peak_rss_mib"]),
        }
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)

    W1, W2, W3 = 28, 21, 44
    lines = []
    lines.append(f"ingest benchmark — {n:,} events, {meta['cores']} cores, {meta['date']}, "
                 f"git {meta['git']}")
    head = f"{'':<{W1}}{'adlog ingest':<{W2}}"
    if base:
        head += f"{'baseline (py consumer → clickhouse-client':<{W3}}  ratio"
        lines.append(head)
        lines.append(f"{'':<{W1}}{'(Rust worker)':<{W2}}{' JSONEachRow + MV)':<{W3}}  ours/baseline")
    else:
        lines.append(head + "(baseline skipped)")

    def row(label, o, b=None, r=None):
        s = f"{label:<{W1}}{o:<{W2}}"
        if base:
            s += f"{b:<{W3}}  {r or ''}"
        lines.append(s.rstrip())

    R = result.get("ratios", {})
    row("events/s", fmt_int(ours["events_per_s"]), base and fmt_int(base["events_per_s"]),
        fmt_ratio(R.get("events_per_s")))
    row("wall: 1st msg → all rows", f"{ours['processing_s']:.2f} s",
        base and f"{base['processing_s']:.2f} s")
    row("wall: launch → all rows", f"{ours['launch_to_done_s']:.2f} s",
        base and f"{base['launch_to_done_s']:.2f} s")
    row("CPU-s / M events (client)", fmt_f(ours["cpu_s_per_m_client"], 2),
        base and f"{fmt_f(base['cpu_s_per_m_client'], 2)} (py {fmt_f(base['cpu_s_per_m_py'], 2)}"
                 f" + ch-client {fmt_f(base['cpu_s_per_m_chclient'], 2)})",
        fmt_ratio(R.get("cpu_s_per_m_client")))
    row("CPU-s / M events (server)", fmt_f(ours["cpu_s_per_m_server"], 2),
        base and fmt_f(base["cpu_s_per_m_server"], 2), fmt_ratio(R.get("cpu_s_per_m_server")))
    row("CPU-s / M events (total)", fmt_f(ours["cpu_s_per_m_total"], 2),
        base and fmt_f(base["cpu_s_per_m_total"], 2), fmt_ratio(R.get("cpu_s_per_m_total")))
    row("  broker CPU-s / M (info)", fmt_f(ours["cpu_s_per_m_broker"], 2),
        base and fmt_f(base["cpu_s_per_m_broker"], 2))
    row("peak RSS (MiB)", fmt_f(ours["peak_rss_mib"], 0),
        base and f"{fmt_f(base['peak_rss_mib'], 0)} (py {fmt_f(base['py_rss_mib'], 0)}"
                 f" + ch-client {fmt_f(base['chclient_rss_mib'], 0)})",
        fmt_ratio(R.get("peak_rss_mib")))
    v = ours["verify"]
    row("exact counts", "yes" if v["exact"] else "NO",
        base and ("n/a (no validation)" if base["verify"]["exact"] else "MISSING ROWS"))
    row("rows stored / expected", f"{v['rows']:,}/{v['want']:,}",
        base and f"{base['verify']['rows']:,}/{base['verify']['want']:,} (bad lines kept as rows)")
    row("other processes' CPU", f"{ours['other_cores']:.2f} cores",
        base and f"{base['other_cores']:.2f} cores")
    if fresh:
        ratio_s = ("—" if fresh["within_target_ratio"] is None
                   else f"{100 * fresh['within_target_ratio']:.2f}%")
        lines.append(
            f"freshness p50 / p99 at {fresh_meta['rate']:,}/s for {fresh_meta['seconds']} s: "
            f"{fmt_f(fresh['p50_s'], 2)} / {fmt_f(fresh['p99_s'], 2)} s "
            f"(within {fresh_meta['target_s']:g} s target: {ratio_s})")
        lines.append(
            f"  (linear interpolation within the histogram's buckets: p50 in "
            f"{bucket_of(fresh['buckets'], 0.5)} s, p99 in {bucket_of(fresh['buckets'], 0.99)} s; "
            f"{fresh_meta['delivered_rate']:,.0f}/s delivered)")
        lines.append(
            f"  at that rate: worker {fresh_meta['ingest_cores']:.2f} cores = "
            f"{fresh_meta['ingest_cpu_s_per_m']:.2f} CPU-s/M events, ClickHouse server "
            f"{fresh_meta['server_cores']:.2f} cores = {fresh_meta['server_cpu_s_per_m']:.2f} CPU-s/M events")
    lines.append(f"load: {n:,} msgs ({man['totals']['bad']:,} malformed, {man['totals']['bare']:,} bare "
                 f"lines, {man['totals']['bytes'] / 1e6:,.0f} MB) pre-loaded at "
                 f"{fmt_int((man.get('delivery') or {}).get('msgs_per_s'))} msg/s; "
                 f"ClickHouse idle CPU before the runs: {meta.get('server_bg_cores', 0):.2f} cores")
    lines.append(f"command: {meta['command']}")
    print("\n".join(lines))


def bucket_of(buckets, q):
    """The histogram bucket '(lo, hi]' that holds quantile q."""
    total = buckets[-1][1]
    prev = 0
    for le, c in buckets:
        if total and c >= q * total:
            return f"({prev:g}, {le}]" if le == "+Inf" else f"({prev:g}, {le:g}]"
        prev = le
    return "?"


def _cpu_common(w, n):
    first = w["t_first"] or w["t_watch_start"]
    proc_s = w["t_done"] - first
    return proc_s, w["t_done"] - w["t_watch_start"]


def other_cpu(w, server, broker, client):
    """CPU-s the rest of the machine used during the window (noise indicator):
    all busy CPU minus server, broker and the measured client (whose CPU also
    covers its start-up and idle exit, so this slightly underestimates)."""
    return max(0.0, w["machine_busy_cpu_s"] - server - broker - client)


def phase_ours(d, n):
    w = load(f"{d}/ours.watch.json")
    t = open(f"{d}/ours.time").read().split()
    wall, ut, st, rss_kib = float(t[0]), float(t[1]), float(t[2]), int(t[3])
    proc_s, launch_s = _cpu_common(w, n)
    client = ut + st
    server = w["cpu_s"].get("server") or 0.0
    broker = w["cpu_s"].get("broker") or 0.0
    per_m = 1e6 / n
    # The ingest process's CPU up to t_done is client - (its CPU while idling
    # before exit), which is negligible; all of it is counted.
    return {
        "events_per_s": n / proc_s, "processing_s": proc_s, "launch_to_done_s": launch_s,
        "process_wall_s": wall,
        "cpu_s_client": client, "cpu_s_server": server, "cpu_s_broker": broker,
        "cpu_s_per_m_client": client * per_m, "cpu_s_per_m_server": server * per_m,
        "cpu_s_per_m_total": (client + server) * per_m, "cpu_s_per_m_broker": broker * per_m,
        "peak_rss_mib": rss_kib / 1024,
        "other_cpu_s": other_cpu(w, server, broker, client),
        "other_cores": other_cpu(w, server, broker, client) / launch_s,
        "verify": load(f"{d}/ours.verify.json"), "watch": w,
    }


def phase_base(d, n):
    w = load(f"{d}/baseline.watch.json")
    s = load(f"{d}/baseline.summary.json")
    w = dict(w, t_first=s["t_first"])
    proc_s, launch_s = _cpu_common(w, n)
    clients = [line.split() for line in open(f"{d}/baseline.clients").read().splitlines() if line]
    ch_cpu = sum(float(c[1]) + float(c[2]) for c in clients)
    ch_rss = max((int(c[0]) for c in clients), default=0) / 1024
    py = s["py_cpu_s"]
    client = py + ch_cpu
    server = w["cpu_s"].get("server") or 0.0
    broker = w["cpu_s"].get("broker") or 0.0
    per_m = 1e6 / n
    return {
        "events_per_s": n / proc_s, "processing_s": proc_s, "launch_to_done_s": launch_s,
        "cpu_s_py": py, "cpu_s_chclient": ch_cpu, "clickhouse_client_invocations": len(clients),
        "cpu_s_client": client, "cpu_s_server": server, "cpu_s_broker": broker,
        "cpu_s_per_m_py": py * per_m, "cpu_s_per_m_chclient": ch_cpu * per_m,
        "cpu_s_per_m_client": client * per_m, "cpu_s_per_m_server": server * per_m,
        "cpu_s_per_m_total": (client + server) * per_m, "cpu_s_per_m_broker": broker * per_m,
        "py_rss_mib": s["py_maxrss_kib"] / 1024, "chclient_rss_mib": ch_rss,
        "peak_rss_mib": s["py_maxrss_kib"] / 1024 + ch_rss,
        "other_cpu_s": other_cpu(w, server, broker, client),
        "other_cores": other_cpu(w, server, broker, client) / launch_s,
        "verify": load(f"{d}/baseline.verify.json"), "watch": w, "consumer": s,
    }


# -------------------------------------------------------------------- main ---
def main():
    ap = argparse.ArgumentParser(description="helpers of bench/ingest")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("watch")
    p.add_argument("--ch-url", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--tables", required=True)
    p.add_argument("--expect", type=int, required=True)
    p.add_argument("--metrics")
    p.add_argument("--metrics-dump", help="save /metrics here when done")
    p.add_argument("--pid", action="append", help="NAME=PID whose CPU to measure")
    p.add_argument("--worker-pid", type=int)
    p.add_argument("--interval", type=float, default=0.1)
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_watch)

    p = sub.add_parser("proc-cpu")
    p.add_argument("pid", type=int)
    p.set_defaults(fn=cmd_proc_cpu)

    p = sub.add_parser("cpu-rate")
    p.add_argument("pid", type=int)
    p.add_argument("--seconds", type=float, default=3)
    p.set_defaults(fn=cmd_cpu_rate)

    p = sub.add_parser("free-port")
    p.add_argument("n", type=int, nargs="?", default=1)
    p.set_defaults(fn=cmd_free_port)

    p = sub.add_parser("render-sql")
    p.add_argument("--ch-url", required=True)
    p.add_argument("--file", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--request-topic", required=True)
    p.add_argument("--exposure-topic", required=True)
    p.add_argument("--interaction-topic", required=True)
    p.set_defaults(fn=cmd_render_sql)

    p = sub.add_parser("verify")
    p.add_argument("--ch-url", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--baseline", action="store_true",
                   help="every message must have landed as a row (no dead letters)")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_verify)

    p = sub.add_parser("freshness")
    p.add_argument("--metrics-file", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_freshness)

    p = sub.add_parser("topics")
    p.add_argument("action", choices=["create", "delete"])
    p.add_argument("--brokers", required=True)
    p.add_argument("--names", required=True)
    p.add_argument("--partitions", type=int, default=4)
    p.set_defaults(fn=cmd_topics)

    p = sub.add_parser("report")
    p.add_argument("--dir", required=True)
    p.add_argument("--json")
    p.set_defaults(fn=cmd_report)

    a = ap.parse_args()
    try:
        a.fn(a)
    except RuntimeError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
