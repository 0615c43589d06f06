#!/usr/bin/env python3
"""The freshness curve of bench/ingest (standard library only).

  poll    the outside reader: polls the tables' row count (active parts'
          rows: what count() sees, from metadata) every --interval
          seconds until --expect rows are there, then reads every stored row's
          Kafka timestamp and says how long after it the row was queryable
  run     one point's JSON from the poll result, the worker's /metrics dump
          (its own freshness and stage histograms) and the CPU figures
  report  the curve table (median of the runs per point, with min-max) and
          bench/ingest's curve JSON

How the outside reader attributes times: rows are ranked by Kafka timestamp;
the k-th row is taken to have become queryable between the last poll that
counted fewer than k rows and the first that counted k or more (the middle of
that interval). The resolution is therefore +-(interval/2 + one count()
query), and the attribution is by rank: with several INSERTs in flight a row
may land before an older one, which this reads as the older row being on
time and the newer late by the same amount (quantiles are close, single rows
are not).
"""

import argparse
import bisect
import json
import math
import os
import statistics
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402


def quantile(sorted_vals, q):
    if not sorted_vals:
        return None
    i = min(len(sorted_vals) - 1, max(0, math.ceil(q * len(sorted_vals)) - 1))
    return sorted_vals[i]


def cmd_poll(a):
    tables = a.tables.split(",")
    sql = benchlib.count_sql(a.db, tables)
    series = []  # (t, count)
    deadline = time.monotonic() + a.timeout
    prev_t = time.time()
    status = "timeout"
    expect = a.expect
    while time.monotonic() < deadline:
        if expect is None:
            # The load generator writes its manifest (what it sent) when done.
            try:
                expect = json.load(open(a.manifest))["totals"]["messages"]
            except (OSError, ValueError, KeyError):
                pass
        n = int(benchlib.ch_query(a.ch_url, sql).strip())
        t = time.time()
        series.append(((prev_t + t) / 2, n))
        prev_t = t
        if expect is not None and n >= expect:
            status = "done"
            break
        time.sleep(a.interval)
    union = " UNION ALL ".join(f"SELECT _kafka_ts_ms AS k FROM {a.db}.{t}" for t in tables)
    body = benchlib.ch_query(a.ch_url, f"SELECT k FROM ({union}) ORDER BY k FORMAT TSV", timeout=300)
    ts = [int(x) / 1000.0 for x in body.split()]
    counts = [c for _, c in series]
    lat = []
    for k, t_kafka in enumerate(ts):
        i = bisect.bisect_left(counts, k + 1)
        if i < len(series):
            lat.append(max(0.0, series[i][0] - t_kafka))
    lat.sort()
    out = {
        "status": status, "rows": counts[-1] if counts else 0, "expect": expect,
        "polls": len(series), "interval_s": a.interval,
        "p50_s": quantile(lat, 0.50), "p99_s": quantile(lat, 0.99), "p999_s": quantile(lat, 0.999),
        "within_1s": sum(1 for x in lat if x <= 1.0) / len(lat) if lat else None,
        "within_2s": sum(1 for x in lat if x <= 2.0) / len(lat) if lat else None,
        "max_s": lat[-1] if lat else None,
    }
    json.dump(out, open(a.out, "w"))
    if status != "done":
        sys.exit(f"poll: {status}: {out['rows']} of {expect} rows in {a.db}")


def hist_summary(text, name, label=None):
    buckets = []
    for line in text.splitlines():
        if not line.startswith(name + "_bucket{"):
            continue
        if label and label not in line:
            continue
        le = line.split('le="', 1)[1].split('"', 1)[0]
        buckets.append((float(le), float(line.rsplit(" ", 1)[1])))
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]

    def within(s):
        # The share at a bucket bound that is exactly s (1 s and 2 s are bounds).
        for le, c in buckets:
            if abs(le - s) < 1e-9:
                return c / total
        return None

    return {"p50_s": benchlib.hist_quantile(buckets, 0.50),
            "p99_s": benchlib.hist_quantile(buckets, 0.99),
            "p999_s": benchlib.hist_quantile(buckets, 0.999),
            "within_1s": within(1.0), "within_2s": within(2.0), "n": total}


def cmd_run(a):
    poll = json.load(open(a.poll))
    man = json.load(open(a.manifest))
    n = man["totals"]["messages"]
    out = {"system": a.system, "rate": a.rate, "seconds": a.seconds, "repeat": a.repeat,
           "messages": n, "delivered_rate": (man.get("delivery") or {}).get("msgs_per_s"),
           "outside": poll,
           "worker_cpu_s_per_m": a.worker_cpu * 1e6 / n,
           "server_cpu_s_per_m": a.server_cpu * 1e6 / n,
           "broker_cpu_s_per_m": a.broker_cpu * 1e6 / n if a.broker_cpu is not None else None}
    if a.metrics:
        text = open(a.metrics).read()
        out["own"] = hist_summary(text, "adlog_ingest_freshness_seconds")
        out["stages"] = {s: hist_summary(text, "adlog_ingest_stage_seconds", f'stage="{s}"')
                         for s in ("fetch", "wait", "insert", "commit")}
        out["inserts"] = benchlib.metric_sum(text, "adlog_ingest_insert_seconds_count")
    json.dump(out, open(a.out, "w"))
    own = out.get("own") or {}
    print(f"    {a.system:8} {a.rate:>7}/s run {a.repeat}: outside p50 {poll['p50_s']:.2f} s, "
          f"p99 {poll['p99_s']:.2f} s, p99.9 {poll['p999_s']:.2f} s, within 2 s "
          f"{100 * poll['within_2s']:.1f} %"
          + (f"; own p99 {own['p99_s']:.2f} s" if own.get("p99_s") is not None else ""),
          file=sys.stderr)


def spread(vals, fmt):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    med = statistics.median(vals)
    if len(vals) == 1:
        return fmt(med)
    return f"{fmt(med)} [{fmt(min(vals))}-{fmt(max(vals))}]"


def cmd_report(a):
    runs = [json.load(open(os.path.join(a.dir, f))) for f in sorted(os.listdir(a.dir))
            if f.endswith(".run.json")]
    points = {}
    for r in runs:
        points.setdefault((r["system"], r["rate"]), []).append(r)
    s = lambda v: f"{v:.2f}"  # noqa: E731
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    one = lambda v: f"{v:.1f}"  # noqa: E731
    print("Freshness curve: median of the runs [min-max]; 'outside' = a reader polling the row count "
          f"every {runs[0]['outside']['interval_s'] if runs else 0.1:.1f} s (resolution about "
          "+-0.1 s), 'own' = the worker's histogram (buckets 10 ms to 100 ms, 50 ms to 1 s, "
          "250 ms to 3 s)")
    hdr = ("system", "rate/s", "runs", "delivered/s", "p50 s", "p99 s", "p99.9 s", "<=1 s", "<=2 s",
           "own p50", "own p99", "own p99.9", "worker CPU-s/M", "server CPU-s/M", "broker CPU-s/M", "INSERTs/s")
    rows = []
    for (system, rate), rs in sorted(points.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        o = [r["outside"] for r in rs]
        own = [r.get("own") or {} for r in rs]
        ins = [r["inserts"] / r["seconds"] if r.get("inserts") else None for r in rs]
        rows.append((system, str(rate), str(len(rs)),
                     spread([r["delivered_rate"] for r in rs], lambda v: f"{v:,.0f}"),
                     spread([x["p50_s"] for x in o], s), spread([x["p99_s"] for x in o], s),
                     spread([x["p999_s"] for x in o], s),
                     spread([x["within_1s"] for x in o], pct), spread([x["within_2s"] for x in o], pct),
                     spread([x.get("p50_s") for x in own], s), spread([x.get("p99_s") for x in own], s),
                     spread([x.get("p999_s") for x in own], s),
                     spread([r["worker_cpu_s_per_m"] for r in rs], one),
                     spread([r["server_cpu_s_per_m"] for r in rs], one),
                     spread([r.get("broker_cpu_s_per_m") for r in rs], one),
                     spread(ins, one)))
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(hdr)]
    for r in [hdr] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    stages = [(r["rate"], r["stages"]) for r in runs if r.get("stages")]
    if stages:
        print("\nWhere the time goes (adlog, median p50 / p99 of the runs, s): fetch = Kafka append to "
              "fetched, wait = block opened to INSERT sent, insert = sent to acknowledged, "
              "commit = acknowledged to offset committed")
        for rate in sorted({r for r, _ in stages}):
            cells = []
            for st in ("fetch", "wait", "insert", "commit"):
                xs = [x[st] for r, x in stages if r == rate and x.get(st)]
                p50 = statistics.median([x["p50_s"] for x in xs]) if xs else None
                p99 = statistics.median([x["p99_s"] for x in xs]) if xs else None
                cells.append(f"{st} {p50:.3f} / {p99:.3f}" if xs else f"{st} -")
            print(f"  {rate:>7}/s  " + "   ".join(cells))
    if a.json:
        json.dump({"runs": runs}, open(a.json, "w"), indent=1)
    if a.png:
        plot(points, a.png)


def plot(points, path):
    """freshness p50/p99/p99.9 (outside) and CPU per event against the rate."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401 (matplotlib.ticker below)
    fig, (lat, cpu) = plt.subplots(1, 2, figsize=(12, 4.8))
    colors = {"adlog": "tab:blue", "baseline": "tab:orange"}
    for system in sorted({s for s, _ in points}):
        rates = sorted(r for s, r in points if s == system)
        col = colors.get(system, None)

        def med(key, sub="outside"):
            return [statistics.median([x[sub][key] for x in points[(system, r)]
                                       if (x.get(sub) or {}).get(key) is not None] or [float("nan")])
                    for r in rates]

        for q, style in (("p50_s", "-"), ("p99_s", "--"), ("p999_s", ":")):
            lat.plot(rates, med(q), style, marker="o", color=col,
                     label=f"{system} {q[:-2].replace('p999', 'p99.9')}")
        p99 = [[x["outside"]["p99_s"] for x in points[(system, r)]] for r in rates]
        lat.fill_between(rates, [min(v) for v in p99], [max(v) for v in p99], color=col, alpha=0.15)
        cpu.plot(rates, [statistics.median([x["server_cpu_s_per_m"] for x in points[(system, r)]])
                         for r in rates], "-", marker="o", color=col, label=f"{system} server (ClickHouse)")
        cpu.plot(rates, [statistics.median([x["worker_cpu_s_per_m"] for x in points[(system, r)]])
                         for r in rates], "--", marker="s", color=col, label=f"{system} worker")
    lat.axhline(2.0, color="gray", linestyle=":", linewidth=1)
    lat.text(lat.get_xlim()[0], 2.05, " 2 s target", color="gray", va="bottom")
    lat.set_yscale("log")
    lat.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    lat.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    lat.set_xlabel("steady rate (events/s)")
    lat.set_ylabel("Kafka append → queryable (s), outside reader")
    lat.set_title("Freshness (median of runs; band = p99 min–max)")
    lat.legend(fontsize=7, ncol=2)
    cpu.set_xlabel("steady rate (events/s)")
    cpu.set_ylabel("CPU-s per M events")
    cpu.set_title("CPU per event")
    cpu.set_ylim(bottom=0)
    cpu.legend(fontsize=7)
    for ax in (lat, cpu):
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description="bench/ingest freshness curve")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("poll")
    p.add_argument("--ch-url", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--tables", required=True)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--expect", type=int)
    g.add_argument("--manifest", help="expect the messages of this loadgen manifest (once written)")
    p.add_argument("--interval", type=float, default=0.1)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_poll)
    p = sub.add_parser("run")
    p.add_argument("--system", required=True)
    p.add_argument("--rate", type=int, required=True)
    p.add_argument("--seconds", type=int, required=True)
    p.add_argument("--repeat", type=int, required=True)
    p.add_argument("--poll", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--metrics")
    p.add_argument("--worker-cpu", type=float, required=True)
    p.add_argument("--server-cpu", type=float, required=True)
    p.add_argument("--broker-cpu", type=float,
                   help="CPU-s of the Kafka broker over the run (the generator's produce included)")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("report")
    p.add_argument("--dir", required=True)
    p.add_argument("--json")
    p.add_argument("--png", help="also plot the curve into this PNG (needs matplotlib)")
    p.set_defaults(fn=cmd_report)
    a = ap.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
