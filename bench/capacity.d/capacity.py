#!/usr/bin/env python3
"""bench/capacity: the offered rate stepped up against a shadow pipeline fed
by `loadgen replay`; freshness attainment, lag, per-stage latency and CPU per
component at each step; the highest rate within the freshness SLA, the stage
that breaks first, a sizing recommendation for --target by extrapolation
(every assumption printed), and a PNG plot. Driven by bench/capacity (which
sets up the stack, builds and installs matplotlib); see bench/README.md."""

import argparse
import json
import math
import os
import re
import resource
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ingest.d"))
import benchlib  # noqa: E402  (proc_cpu, ch_query: shared with bench/ingest)

STAGES = ["fetch", "wait", "insert", "commit"]


def log(msg):
    print(f"capacity: {msg}", file=sys.stderr, flush=True)


def proc_cpu(pid):
    """utime+stime seconds of pid and its threads (0 when gone)."""
    return benchlib.proc_cpu(pid) or 0.0


def scrape(port):
    """Prometheus text → {(name, frozenset(labels)): value}."""
    out = {}
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not m:
            continue
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        try:
            out[(m.group(1), labels)] = float(m.group(3))
        except ValueError:
            pass
    return out


def hist(snap, name, **want):
    """Cumulative buckets [(le, count)] of a histogram (labels filtered)."""
    b = []
    for (n, labels), v in snap.items():
        if n != name + "_bucket":
            continue
        d = dict(labels)
        if any(d.get(k) != val for k, val in want.items()):
            continue
        le = d.get("le")
        b.append((math.inf if le == "+Inf" else float(le), v))
    return sorted(b)


def quantile(before, after, q):
    """q-quantile (upper bucket bound) of the observations between two snapshots."""
    prev = dict(before)
    delta = [(le, c - prev.get(le, 0.0)) for le, c in after]
    total = delta[-1][1] if delta else 0
    if total <= 0:
        return None
    for le, c in delta:
        if c >= q * total:
            return le
    return math.inf


def metric(snap, name, **want):
    return sum(v for (n, labels), v in snap.items()
               if n == name and all(dict(labels).get(k) == val for k, val in want.items()))


def ch(url, sql):
    return benchlib.ch_query(url, sql, timeout=10).strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--loadgen", required=True)
    ap.add_argument("--ingest", required=True)
    ap.add_argument("--joiner", required=True)
    ap.add_argument("--prod-config", required=True)
    ap.add_argument("--shadow-config", required=True)
    ap.add_argument("--ch-url", required=True)
    ap.add_argument("--database", required=True)
    ap.add_argument("--ingest-port", type=int, required=True)
    ap.add_argument("--joiner-port", type=int, required=True)
    ap.add_argument("--pids", default="", help="name=pid,... of the stack's servers")
    ap.add_argument("--steps", required=True, help="offered rates, messages/s, comma-separated")
    ap.add_argument("--hold", type=float, default=60.0)
    ap.add_argument("--source-messages", type=int, required=True)
    ap.add_argument("--sla-ms", type=float, default=2000)
    ap.add_argument("--attainment", type=float, default=0.99)
    ap.add_argument("--target", type=float, default=1_250_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--consumers", type=int, default=1)
    ap.add_argument("--warmup", type=float, default=10.0,
                    help="seconds of unrecorded replay at the first rate before the steps")
    ap.add_argument("--stop-after", type=int, default=2,
                    help="stop after this many consecutive steps that break the SLA")
    ap.add_argument("--out", required=True)
    ap.add_argument("--png", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)

    env = {k: v for k, v in os.environ.items() if not (k.startswith("ADLOG_") and "__" in k)}
    env["ADLOG_LOG__FORMAT"] = "text"
    procs = {}
    servers = dict(p.split("=") for p in a.pids.split(",") if p)
    with open(f"{a.out}/migrate.log", "w") as f:
        subprocess.run([a.ingest, "migrate", "--config", a.shadow_config], env=env, stdout=f,
                       stderr=f, check=True)
    for name, cmd in [
        ("ingest", [a.ingest, "run", "--config", a.shadow_config]),
        ("joiner", [a.joiner, "run", "--config", a.shadow_config]),
    ]:
        f = open(f"{a.out}/{name}.log", "w")
        procs[name] = subprocess.Popen(cmd, env=env, stdout=f, stderr=f)
    time.sleep(5)
    for name, p in procs.items():
        if p.poll() is not None:
            sys.exit(f"{name} exited early (log {a.out}/{name}.log)")

    tables = "('ods_request','ods_exposure','ods_interaction','dead_letter')"

    def stored():
        try:
            return int(ch(a.ch_url, f"SELECT sum(rows) FROM system.parts WHERE active AND "
                          f"database = '{a.database}' AND table IN {tables}") or 0)
        except (OSError, ValueError):
            return -1

    def cpu_all():
        pids = {n: p.pid for n, p in procs.items()}
        pids.update({n: int(v) for n, v in servers.items()})
        return {n: proc_cpu(pid) for n, pid in pids.items()}

    steps = []
    broken = 0
    copy = 0
    offered_total = 0
    rates = [int(x) for x in a.steps.split(",")]
    if a.warmup > 0:
        # Not recorded: the group join, the first fetches and ClickHouse's
        # first parts would otherwise count against the first step.
        copies = max(1, math.ceil(rates[0] * a.warmup / a.source_messages))
        log(f"warm-up: {copies} copies at {rates[0]} msg/s")
        with open(f"{a.out}/replay-warmup.log", "w") as lf:
            subprocess.run([a.loadgen, "replay", "--config", a.prod_config, "--copies", str(copies),
                            "--rate", str(rates[0]), "--progress-s", "0"], env=env, stdout=lf,
                           stderr=lf, check=True)
        copy += copies
        offered_total += copies * a.source_messages
        time.sleep(3)
    for rate in rates:
        copies = max(1, math.ceil(rate * a.hold / a.source_messages))
        log(f"step {rate} msg/s: {copies} copies (first copy {copy}) of {a.source_messages} messages, "
            f"~{copies * a.source_messages / rate:.0f} s")
        m0, j0, c0, t0 = scrape(a.ingest_port), scrape(a.joiner_port), cpu_all(), time.time()
        man = f"{a.out}/step-{rate}.json"
        lf = open(f"{a.out}/replay-{rate}.log", "w")
        rp = subprocess.Popen([a.loadgen, "replay", "--config", a.prod_config, "--copies",
                               str(copies), "--first-copy", str(copy), "--rate", str(rate),
                               "--progress-s", "5", "--manifest", man], env=env, stdout=lf,
                              stderr=lf)
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        lags, backlog = [], []
        while rp.poll() is None:
            time.sleep(1)
            s = scrape(a.ingest_port)
            lags.append(metric(s, "adlog_ingest_consumer_lag"))
            n = stored()
            backlog.append(n)
        c1 = cpu_all()
        # loadgen's CPU: the rusage of reaped children (only it, since ru0).
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        c0["loadgen"] = 0.0
        c1["loadgen"] = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        m1, j1, t1 = scrape(a.ingest_port), scrape(a.joiner_port), time.time()
        if rp.returncode != 0:
            sys.exit(f"loadgen replay failed (log {a.out}/replay-{rate}.log)")
        r = json.load(open(man))
        sent = r["manifest"]["totals"]["messages"]
        d = r["manifest"]["delivery"]
        offered_total += sent
        copy += copies
        # Rows not stored at the end of the step (what the pipeline is behind).
        behind = max(0, offered_total - stored())
        dt = t1 - t0
        fresh_b = hist(m0, "adlog_ingest_freshness_seconds")
        fresh_a = hist(m1, "adlog_ingest_freshness_seconds")
        ev = metric(m1, "adlog_ingest_freshness_events_total") - metric(m0, "adlog_ingest_freshness_events_total")
        within = (metric(m1, "adlog_ingest_freshness_within_target_total")
                  - metric(m0, "adlog_ingest_freshness_within_target_total"))
        stage = {}
        for st in STAGES:
            b, e = hist(m0, "adlog_ingest_stage_seconds", stage=st), hist(m1, "adlog_ingest_stage_seconds", stage=st)
            stage[st] = {"p50": quantile(b, e, 0.5), "p99": quantile(b, e, 0.99)}
        cpu = {n: (c1.get(n, 0.0) - c0.get(n, 0.0)) / dt for n in c1}
        res = {
            "offered": rate, "achieved": d["msgs_per_s"], "messages": sent, "copies": copies,
            "seconds": dt, "freshness_events": ev,
            "attainment": within / ev if ev else None,
            "freshness_p50_s": quantile(fresh_b, fresh_a, 0.5),
            "freshness_p99_s": quantile(fresh_b, fresh_a, 0.99),
            "lag_max": max(lags) if lags else 0, "lag_end": lags[-1] if lags else 0,
            "behind_at_end": behind, "stages": stage, "cpu_cores": cpu,
            "joined_pairs_expected": r["manifest"]["stats"]["joined_pairs"],
            "joiner_joined": metric(j1, "adlog_joiner_joined_total") - metric(j0, "adlog_joiner_joined_total"),
        }
        classify(res, a.attainment)
        ok = res["within_sla"]
        steps.append(res)
        log(f"  achieved {res['achieved']:.0f} msg/s, attainment "
            f"{(res['attainment'] or 0) * 100:.2f}%, freshness p50 {res['freshness_p50_s']} s "
            f"p99 {res['freshness_p99_s']} s, lag max {res['lag_max']:.0f}, behind {behind}, "
            f"cpu {', '.join(f'{k} {v:.2f}' for k, v in sorted(cpu.items()))}")
        # Let the backlog drain before the next step (bounded).
        for _ in range(30):
            if max(0, offered_total - stored()) == 0:
                break
            time.sleep(1)
        if ok and not res["delivered"]:
            busiest = max(cpu, key=cpu.get) if cpu else "?"
            log(f"  the replay delivered {res['achieved']:.0f} of {rate} msg/s ({busiest} at "
                f"{cpu.get(busiest, 0):.2f} cores): this machine cannot offer more; stopping")
            break
        if not ok:
            broken += 1
            if broken >= a.stop_after:
                log(f"  SLA broken at {broken} consecutive steps: stopping")
                break
        else:
            broken = 0

    for p in procs.values():
        if p.poll() is None:
            p.terminate()
    for p in procs.values():
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()

    report = analyse(a, steps)
    json.dump({"steps": steps, "report": report}, open(f"{a.out}/capacity.json", "w"), indent=2,
              default=str)
    plot(a, steps)
    print(report["text"])


def classify(res, attainment):
    """within_sla: the pipeline kept the SLA for what it was offered;
    delivered: the replay offered ≥ 95 % of the step's rate (else the
    generator, not the pipeline, was the limit)."""
    res["within_sla"] = res["attainment"] is not None and res["attainment"] >= attainment
    res["delivered"] = res["achieved"] >= 0.95 * res["offered"]


def analyse(a, steps):
    lines = []
    ok = [s for s in steps if s["within_sla"]]
    best = max(ok, key=lambda s: s["achieved"]) if ok else None
    lines.append(f"Capacity on this machine ({os.cpu_count()} cores), freshness SLA: "
                 f"{a.attainment * 100:g}% of events queryable within {a.sla_ms:g} ms of Kafka append")
    lines.append("")
    lines.append(f"{'offered':>9} {'achieved':>9} {'attain%':>8} {'p50 s':>7} {'p99 s':>7} "
                 f"{'lag max':>8} {'behind':>7}  stage p99 s (fetch/wait/insert/commit)  cpu cores")
    for s in steps:
        st = "/".join(str(s["stages"][k]["p99"]) for k in STAGES)
        cpu = " ".join(f"{k}={v:.2f}" for k, v in sorted(s["cpu_cores"].items()))
        lines.append(f"{s['offered']:>9} {s['achieved']:>9.0f} {(s['attainment'] or 0) * 100:>8.2f} "
                     f"{str(s['freshness_p50_s']):>7} {str(s['freshness_p99_s']):>7} "
                     f"{s['lag_max']:>8.0f} {s['behind_at_end']:>7}  {st}  {cpu}")
    lines.append("")
    if best is None:
        best = min(steps, key=lambda s: s["offered"])
        lines.append(f"No step kept the SLA (start lower with --steps); the costs below are "
                     f"those of the lowest step ({best['offered']} msg/s).")
        broke = None
    else:
        lines.append(f"Highest rate within the SLA: {best['achieved']:.0f} msg/s (step {best['offered']}).")
        broke = next((s for s in steps if not s["within_sla"] and s["offered"] > best["offered"]), None)
        if not best.get("delivered", True):
            busiest = max(best["cpu_cores"], key=best["cpu_cores"].get)
            lines.append(f"At step {best['offered']} the replay delivered only {best['achieved']:.0f} "
                         f"msg/s ({busiest} at {best['cpu_cores'][busiest]:.2f} cores on "
                         f"{os.cpu_count()} shared cores): the generator, not the pipeline, was the "
                         f"limit. The pipeline kept the SLA at every rate it was offered, so its "
                         f"ceiling on this machine is above {best['achieved']:.0f} msg/s (a lower bound).")
    if broke:
        growth = {}
        for k in STAGES:
            p0, p1 = best["stages"][k]["p99"], broke["stages"][k]["p99"]
            if p0 and p1:
                growth[k] = p1 / p0
        first = max(growth, key=growth.get) if growth else "unknown"
        busiest = max(broke["cpu_cores"], key=broke["cpu_cores"].get)
        lines.append(f"Breaks first at {broke['offered']} msg/s: stage '{first}' "
                     f"(p99 ×{growth.get(first, float('nan')):.1f} from the last good step); "
                     f"busiest process {busiest} at {broke['cpu_cores'][busiest]:.2f} cores.")
    elif best["within_sla"] and best.get("delivered", True):
        lines.append("No step broke the SLA: the highest step is a lower bound (add higher --steps).")
    elif best["within_sla"]:
        pass
    else:
        worst = max(STAGES, key=lambda k: best["stages"][k]["p99"] or 0)
        busiest = max(best["cpu_cores"], key=best["cpu_cores"].get)
        lines.append(f"Already at {best['offered']} msg/s the slowest stage is '{worst}' "
                     f"(p99 {best['stages'][worst]['p99']} s); busiest process {busiest} "
                     f"at {best['cpu_cores'][busiest]:.2f} cores.")
    # Sizing by linear extrapolation of the per-message CPU at the best step.
    T = a.target
    per = {k: v / best["achieved"] for k, v in best["cpu_cores"].items() if best["achieved"] > 0}
    ingest_core_rate = best["achieved"] / max(best["cpu_cores"].get("ingest", 0.0), 1e-9)
    joiner_core_rate = best["achieved"] / max(best["cpu_cores"].get("joiner", 0.0), 1e-9)
    util = 0.6
    worker_cores = 4
    shard_cores = 16
    part_rate = 10_000  # msg/s one partition is planned for (an assumption, not measured here)
    ingest_w = math.ceil(T / (ingest_core_rate * worker_cores * util))
    joiner_w = math.ceil(T / (joiner_core_rate * worker_cores * util))
    ch_cores = T * per.get("clickhouse", 0.0)
    redis_cores = T * per.get("redis", 0.0)
    partitions = max(math.ceil(T / part_rate), ingest_w * worker_cores,
                     joiner_w * worker_cores)
    lines += [
        "",
        f"Sizing for {T:,.0f} msg/s (linear extrapolation from the best step):",
        f"  ingest workers   {ingest_w:>6}  ({ingest_core_rate:,.0f} msg/s per ingest core measured)",
        f"  joiner workers   {joiner_w:>6}  ({joiner_core_rate:,.0f} msg/s per joiner core measured; "
        f"it reads all input messages, joins exposures/interactions)",
        f"  ClickHouse shards{math.ceil(ch_cores / (shard_cores * util)):>6}  "
        f"({per.get('clickhouse', 0) * 1e6:.1f} server CPU-s per M msgs → {ch_cores:,.0f} cores)",
        f"  Redis masters    {max(1, math.ceil(redis_cores / util)):>6}  "
        f"({per.get('redis', 0) * 1e6:.2f} Redis CPU-s per M msgs → {redis_cores:,.1f} cores; one core per master)",
        f"  partitions       {partitions:>6}  per input topic set ({part_rate:,} msg/s per partition, "
        f"≥ one per consumer thread; this run used {a.partitions})",
        "Assumptions:",
        f"  - cost per message is constant (linear): CPU per message at the best step × target rate;",
        f"  - {util:.0%} target utilisation of every core (headroom for spikes, merges, rebalances);",
        f"  - {worker_cores} cores per ingest/joiner worker host, {shard_cores} cores per ClickHouse shard;",
        f"  - a partition is planned for {part_rate:,} msg/s (Kafka guidance; not measured on tansu);",
        f"  - Redis is single-threaded: one core per master;",
        f"  - the message mix (request/exposure/interaction share, bad ratio, size) of the sample;",
        f"  - the broker is sized separately (tansu here is a dev broker, not representative);",
        f"  - ClickHouse shards and Redis masters are sized for CPU only: storage (retention × "
        f"bytes per row), query load and Redis memory (window × exposures/s × bytes per entry, "
        f"bench/joiner) can need more;",
        f"  - this machine's measurements share {os.cpu_count()} cores between all components, so "
        f"contention inflates every cost (the figures are upper bounds).",
    ]
    return {"text": "\n".join(lines), "best": best["achieved"],
            "sizing": {"ingest_workers": ingest_w, "joiner_workers": joiner_w,
                       "clickhouse_shards": math.ceil(ch_cores / (shard_cores * util)),
                       "redis_masters": max(1, math.ceil(redis_cores / util)),
                       "partitions": partitions}}


def plot(a, steps):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    x = [s["offered"] for s in steps]
    fig, ax = plt.subplots(figsize=(8, 5))
    inf = lambda v: None if v in (None, math.inf) else v
    ax.plot(x, [inf(s["freshness_p50_s"]) for s in steps], "o-", label="freshness p50")
    ax.plot(x, [inf(s["freshness_p99_s"]) for s in steps], "s-", label="freshness p99")
    ax.axhline(a.sla_ms / 1000, color="grey", ls="--", label=f"SLA {a.sla_ms:g} ms")
    for s in steps:
        if not s.get("delivered", True) and inf(s["freshness_p99_s"]):
            ax.annotate(f"delivered {s['achieved'] / 1000:.0f}k\n(generator-bound)",
                        (s["offered"], s["freshness_p99_s"]), textcoords="offset points",
                        xytext=(-60, 12), fontsize=8)
    ax.set_xlabel("offered rate (messages/s)")
    ax.set_ylabel("freshness (s)")
    ax.set_yscale("log")
    ax2 = ax.twinx()
    ax2.plot(x, [s["lag_max"] for s in steps], "^:", color="tab:red", label="consumer lag (max)")
    ax2.set_ylabel("consumer lag (messages)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper left")
    ax.set_title("bench/capacity: freshness and lag vs offered rate")
    fig.tight_layout()
    fig.savefig(a.png, dpi=100)
    log(f"plot: {a.png}")


def report(argv):
    """`capacity.py report DIR [--attainment F] [--sla-ms MS] [--target RATE]`:
    the report and the plot again from DIR/capacity.json (no new measurement)."""
    ap = argparse.ArgumentParser(prog="capacity.py report")
    ap.add_argument("dir")
    ap.add_argument("--sla-ms", type=float, default=2000)
    ap.add_argument("--attainment", type=float, default=0.99)
    ap.add_argument("--target", type=float, default=1_250_000)
    ap.add_argument("--partitions", type=int, default=4)
    a = ap.parse_args(argv)
    a.out, a.png = a.dir, os.path.join(a.dir, "capacity.png")
    data = json.load(open(os.path.join(a.dir, "capacity.json")))
    steps = data["steps"]
    for s in steps:
        classify(s, a.attainment)
    rep = analyse(a, steps)
    json.dump({"steps": steps, "report": rep}, open(os.path.join(a.dir, "capacity.json"), "w"),
              indent=2, default=str)
    open(os.path.join(a.dir, "report.txt"), "w").write(rep["text"] + "\n")
    plot(a, steps)
    print(rep["text"])


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "report":
        report(sys.argv[2:])
    else:
        main()
