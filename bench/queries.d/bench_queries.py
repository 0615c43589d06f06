#!/usr/bin/env python3
"""The query benchmark behind bench/queries (see bench/README.md).

  bench_queries.py free-port N
  bench_queries.py run --url URL --db DB --rows N [--runs 20] [--raw-runs 5] [--hours 6] [--json F]

`run` expects the migrated, empty database DB: it generates the data
(synth.sql), waits for background merges to settle, then times every ClickHouse
query of grafana/dashboards/*.json (panel targets and query variables; macros
expanded by grafana_expand.py) over the last 1 h and the last 6 h, and the
raw-table baseline of each rollup-based panel (RAW below), and prints a table.
"""

import argparse
import json
import os
import re
import socket
import statistics
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import grafana_expand as ge  # noqa: E402

ROLLUPS = ("agg_request_1s", "agg_request_1m_psid", "agg_user_visits_1h", "agg_ad_1m_psid",
           "agg_service_edges_1m", "trace_by_uid", "trace_index")

BUCKET = "toDateTime(intDiv(toUInt32(ts), $__interval_s) * $__interval_s)"
RANGE_S = "greatest(toUInt32($__toTime) - toUInt32($__fromTime), 1)"
SVC = "$__conditionalAll(service IN (${service:singlequote}), $service)"
API = "$__conditionalAll(api IN (${api:singlequote}), $api)"
PSID = "$__conditionalAll(psid IN (${psid:csv}), $psid)"
UID = "uid = toUInt64OrZero(${uid:sqlstring})"
# The raw tables are ORDER BY (toStartOfHour(ts), …); ClickHouse 18.16 does not
# derive a condition on toStartOfHour(ts) from one on ts, so the baseline queries
# (like the dashboards' raw-table panels) repeat the range on the hour: the
# baseline is the best raw query, not a naive one.
HOURS = "toStartOfHour(ts) >= toStartOfHour($__fromTime) AND toStartOfHour(ts) <= toStartOfHour($__toTime)"
# Raw quantiles use quantiles() (reservoir sampling), the natural raw query and much
# faster than quantilesTDigest() over tens of millions of rows on 18.16.
Q3 = "arrayElement(quantiles(0.5, 0.9, 0.99)(latency_ms), 3)"

# The same question as a rollup-based panel, asked of the raw tables:
# (dashboard uid, panel title, refId) → SQL with the same macros and variables.
RAW = {
    ("adlog-traffic", "Request lines/s", "A"):
        f"SELECT count() / {RANGE_S} AS qps FROM ods_request WHERE $__timeFilter(ts) AND {SVC} AND {API}",
    ("adlog-traffic", "p99 latency", "A"):
        f"SELECT {Q3} AS p99 FROM ods_request WHERE $__timeFilter(ts) AND {SVC} AND {API}",
    ("adlog-traffic", "QPS by service", "A"):
        f"SELECT {BUCKET} AS time, service, count() / $__interval_s AS qps FROM ods_request "
        f"WHERE $__timeFilter(ts) AND {SVC} AND {API} GROUP BY time, service ORDER BY time, service",
    ("adlog-traffic", "Latency p50 / p90 / p99", "A"):
        f"SELECT {BUCKET} AS time, arrayElement(quantiles(0.5, 0.9, 0.99)(latency_ms), 1) AS p50, "
        f"arrayElement(quantiles(0.5, 0.9, 0.99)(latency_ms), 2) AS p90, {Q3} AS p99 FROM ods_request "
        f"WHERE $__timeFilter(ts) AND {SVC} AND {API} GROUP BY time ORDER BY time",
    ("adlog-traffic", "Errors and latency by service and API", "A"):
        f"SELECT service, api, count() AS reqs, reqs / {RANGE_S} AS qps, countIf(status >= 500) AS errs, "
        f"errs / greatest(reqs, 1) AS error_rate, avg(latency_ms) AS avg_ms, "
        f"arrayElement(quantiles(0.5, 0.9, 0.99)(latency_ms), 1) AS p50_ms, "
        f"arrayElement(quantiles(0.5, 0.9, 0.99)(latency_ms), 2) AS p90_ms, {Q3} AS p99_ms "
        f"FROM ods_request WHERE $__timeFilter(ts) AND {SVC} AND {API} GROUP BY service, api "
        f"ORDER BY errs DESC, reqs DESC",
    ("adlog-psid", "Users", "A"):
        f"SELECT uniq(uid) AS uniq_users FROM ods_request WHERE $__timeFilter(ts) AND caller = '' AND {PSID}",
    ("adlog-psid", "Placements", "A"):
        f"SELECT psid, count() AS reqs, reqs / {RANGE_S} AS qps, uniq(uid) AS uniq_users, "
        f"countIf(status >= 500) AS errs, errs / greatest(reqs, 1) AS error_rate, avg(latency_ms) AS avg_ms, "
        f"arrayElement(quantiles(0.5, 0.9, 0.99)(latency_ms), 1) AS p50_ms, {Q3} AS p99_ms "
        f"FROM ods_request WHERE $__timeFilter(ts) AND caller = '' AND {PSID} GROUP BY psid ORDER BY reqs DESC",
    ("adlog-psid", "Ad requests/s, 10 busiest placements", "A"):
        f"SELECT {BUCKET} AS time, toString(psid) AS placement, count() / $__interval_s AS qps FROM ods_request "
        f"WHERE $__timeFilter(ts) AND caller = '' AND {PSID} AND psid IN (SELECT psid FROM ods_request "
        f"WHERE $__timeFilter(ts) AND caller = '' AND {PSID} GROUP BY psid ORDER BY count() DESC LIMIT 10) "
        f"GROUP BY time, placement ORDER BY time, placement",
    ("adlog-funnel", "CTR", "A"):
        f"SELECT (SELECT count() FROM ods_joined WHERE $__timeFilter(ts) AND action = 'click' AND {PSID}) "
        f"/ greatest((SELECT count() FROM ods_exposure WHERE $__timeFilter(ts) AND {PSID}), 1) AS ctr",
    ("adlog-funnel", "Exposures, interactions, joined (per minute)", "A"):
        f"SELECT time, sum(e) * 60 / $__interval_s AS exposures_per_min, sum(i) * 60 / $__interval_s AS "
        f"interactions_per_min, sum(j) * 60 / $__interval_s AS joined_per_min FROM ("
        f"SELECT {BUCKET} AS time, count() AS e, toUInt64(0) AS i, toUInt64(0) AS j FROM ods_exposure "
        f"WHERE $__timeFilter(ts) AND {PSID} GROUP BY time UNION ALL "
        f"SELECT {BUCKET} AS time, toUInt64(0) AS e, count() AS i, toUInt64(0) AS j FROM ods_interaction "
        f"WHERE $__timeFilter(ts) GROUP BY time UNION ALL "
        f"SELECT {BUCKET} AS time, toUInt64(0) AS e, toUInt64(0) AS i, count() AS j FROM ods_joined "
        f"WHERE $__timeFilter(ts) AND {PSID} GROUP BY time) GROUP BY time ORDER BY time",
    ("adlog-funnel", "Placements", "A"):
        f"SELECT psid, shown, clicks, likes, comments, reposts, follows, closes, clicks / greatest(shown, 1) AS ctr, "
        f"(clicks + likes + comments + reposts + follows) / greatest(shown, 1) AS engagement, "
        f"bids / greatest(shown, 1) AS avg_bid, click_delay_ms / greatest(clicks, 1) / 1000 AS avg_click_delay_s "
        f"FROM (SELECT psid, count() AS shown, sum(bid_price) AS bids FROM ods_exposure "
        f"WHERE $__timeFilter(ts) AND {PSID} GROUP BY psid) AS e ANY LEFT JOIN ("
        f"SELECT psid, countIf(action = 'click') AS clicks, countIf(action = 'like') AS likes, "
        f"countIf(action = 'comment') AS comments, countIf(action = 'repost') AS reposts, "
        f"countIf(action = 'follow') AS follows, countIf(action = 'close') AS closes, "
        f"sumIf(delay_ms, action = 'click') AS click_delay_ms FROM ods_joined WHERE $__timeFilter(ts) AND {PSID} "
        f"GROUP BY psid) AS j USING psid ORDER BY shown DESC",
    ("adlog-topology", "Service call graph", "edges"):
        f"SELECT concat(source, ' -> ', target) AS id, source, target, n_calls / {RANGE_S} AS mainstat, "
        f"p99 AS secondarystat, errs / greatest(n_calls, 1) AS detail__error_rate FROM ("
        f"SELECT if(caller = '', 'clients', caller) AS source, service AS target, count() AS n_calls, "
        f"countIf(status >= 500) AS errs, {Q3} AS p99 FROM ods_request WHERE $__timeFilter(ts) "
        f"GROUP BY source, target) ORDER BY id",
    ("adlog-topology", "Service call graph", "nodes"):
        f"SELECT id, id AS title, max(reqs) / {RANGE_S} AS mainstat, max(p99) AS secondarystat, "
        f"max(errs) / greatest(max(reqs), 1) AS arc__errors, 1 - arc__errors AS arc__ok FROM ("
        f"SELECT service AS id, count() AS reqs, countIf(status >= 500) AS errs, {Q3} AS p99 FROM ods_request "
        f"WHERE $__timeFilter(ts) GROUP BY service UNION ALL SELECT 'clients' AS id, toUInt64(0) AS reqs, "
        f"toUInt64(0) AS errs, toFloat64(0) AS p99) GROUP BY id ORDER BY id",
    ("adlog-trace", "variable trace_id", "var"):
        f"SELECT trace_id FROM ods_request WHERE $__timeFilter(ts) AND {UID} AND caller = '' "
        f"ORDER BY ts DESC LIMIT 200",
    ("adlog-trace", "Traces of user ${uid}", "A"):
        f"SELECT time, trace_id, psid, api, status, latency_ms, lines, service, host, idc FROM ("
        f"SELECT ts AS time, trace_id, psid, api, status, latency_ms, service, host, idc FROM ods_request "
        f"WHERE $__timeFilter(ts) AND {UID} AND caller = '') AS traces ANY LEFT JOIN ("
        f"SELECT trace_id, count() AS lines FROM ods_request WHERE $__timeFilter(ts) AND trace_id IN ("
        f"SELECT trace_id FROM ods_request WHERE $__timeFilter(ts) AND {UID} AND caller = '') GROUP BY trace_id"
        f") AS trace_lines USING trace_id ORDER BY time DESC, trace_id LIMIT 500",
    ("adlog-trace", "Ads shown in trace ${trace_id} and what the user did", "A"):
        "SELECT time, event, mark_id, psid, ad_id, position, bid_price, action, delay_s FROM ("
        "SELECT ts AS time, 'exposure' AS event, mark_id, psid, ad_id, position, bid_price, '' AS action, "
        "toFloat64(0) AS delay_s FROM ods_exposure WHERE trace_id = ${trace_id:sqlstring} AND $__timeFilter(ts) "
        "UNION ALL SELECT interaction_ts AS time, 'interaction' AS event, mark_id, psid, ad_id, position, "
        "bid_price, action, delay_ms / 1000 AS delay_s FROM ods_joined "
        "WHERE exposure_trace_id = ${trace_id:sqlstring} AND $__timeFilter(ts)) "
        "ORDER BY position, mark_id, time, event",
    ("adlog-trace", "Visits of user ${uid} per hour", "A"):
        f"SELECT toStartOfHour(ts) AS time, countIf(caller = '') AS visits, count() AS hops FROM ods_request "
        f"WHERE {UID} AND ts >= toStartOfHour($__fromTime) AND ts <= $__toTime AND {HOURS} GROUP BY time ORDER BY time",
}
RAW = {k: v.replace("$__timeFilter(ts)", f"$__timeFilter(ts) AND {HOURS}") for k, v in RAW.items()}


def raw_baseline(uid, title, ref, raw_sql):
    """The raw-table form of a panel query, or None."""
    if (uid, title, ref) in RAW:
        return RAW[(uid, title, ref)]
    if uid == "adlog-trace" and title == "Trace ${trace_id}":
        # The same call tree, without trace_index: the dashboard range instead of the trace's span.
        sql = re.sub(r"WITH\s*\(SELECT \(minMerge.*?AS bounds\s*", "", raw_sql, flags=re.S)
        sql = re.sub(r"AND ts >= bounds\.1.*?toStartOfHour\(bounds\.2\)", f"AND $__timeFilter(ts) AND {HOURS}",
                     sql, flags=re.S)
        return sql if "bounds" not in sql else None
    return None


def free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class CH:
    def __init__(self, url, db):
        self.url, self.db = url.rstrip("/") + "/", db

    def query(self, sql, fmt=None, db=True, settings=None):
        params = {"database": self.db} if db else {}
        params.update(settings or {})
        body = sql + (f"\nFORMAT {fmt}" if fmt else "")
        req = urllib.request.Request(self.url + "?" + urllib.parse.urlencode(params), data=body.encode())
        try:
            with urllib.request.urlopen(req, timeout=600) as r:
                return r.read().decode()
        except urllib.error.HTTPError as e:
            raise RuntimeError(e.read().decode().strip()[:2000]) from None

    def value(self, sql):
        return self.query(sql, "TSV").strip()


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def statements(path):
    text = "\n".join(l for l in open(path).read().splitlines() if not l.lstrip().startswith("--"))
    return [s.strip() for s in re.split(r";\s*(?:\n|$)", text) if s.strip()]


def generate(ch, rows, hours):
    """Loads `rows` request lines (+ ad events) spanning the last `hours` hours."""
    rows = -(-rows // 6) * 6
    chunk = 6 * 833_334  # ~5 M lines, whole traces
    now_ms = int(time.time() * 1000)
    span_ms = hours * 3_600_000
    start_ms = now_ms - span_ms
    stmts = statements(os.path.join(HERE, "synth.sql"))
    names = ["ods_request", "ods_exposure", "ods_interaction", "ods_joined"]
    spent = {n: 0.0 for n in names}
    t0 = time.time()
    n0 = 0
    while n0 < rows:
        n = min(chunk, rows - n0)
        for name, st in zip(names, stmts):
            sql = st.format(db=ch.db, n0=n0, rows=n, start_ms=start_ms, span_ms=span_ms, total=rows)
            t = time.time()
            ch.query(sql)
            spent[name] += time.time() - t
        n0 += n
        log(f"    {n0:,} / {rows:,} request lines ({time.time() - t0:.0f} s)")
    counts = {n: int(ch.value(f"SELECT count() FROM {ch.db}.{n}")) for n in names}
    return {"rows": counts, "seconds": spent, "total_s": time.time() - t0, "start_ms": start_ms, "end_ms": now_ms}


def wait_merges(ch, limit_s=600):
    t0 = time.time()
    while time.time() - t0 < limit_s:
        n = int(ch.value(f"SELECT count() FROM system.merges WHERE database = '{ch.db}'"))
        parts = int(ch.value(f"SELECT count() FROM system.parts WHERE database = '{ch.db}' AND active"))
        if n == 0:
            return time.time() - t0, parts
        time.sleep(2)
    return time.time() - t0, parts


def sizes(ch):
    out = {}
    for line in ch.query(
            f"SELECT table, sum(rows), sum(bytes_on_disk) FROM system.parts WHERE database = '{ch.db}' AND active "
            f"GROUP BY table ORDER BY table", "TSV").splitlines():
        t, r, b = line.split("\t")
        out[t] = (int(r), int(b))
    return out


def timed(ch, sql, runs):
    """1 warm-up + `runs` timed runs: (list of ms, result rows, rows_read of the last run)."""
    res = json.loads(ch.query(sql, "JSONCompact"))
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        res = json.loads(ch.query(sql, "JSONCompact"))
        times.append((time.perf_counter() - t) * 1000)
    return times, res.get("rows", 0), (res.get("statistics") or {}).get("rows_read", 0)


def pct(xs, q):
    xs = sorted(xs)
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * q
    f = int(k)
    return xs[f] + (xs[min(f + 1, len(xs) - 1)] - xs[f]) * (k - f)


def dashboards():
    d = os.path.join(ROOT, "grafana", "dashboards")
    return [json.load(open(os.path.join(d, f))) for f in sorted(os.listdir(d)) if f.endswith(".json")]


def queries_of(d):
    """(panel title, refId, rawSql, maxDataPoints, min interval) incl. query variables."""
    out = []
    for v in d.get("templating", {}).get("list", []):
        if (v.get("datasource") or {}).get("type") == ge.CH_TYPE:
            out.append((f"variable {v['name']}", "var", v["query"]["rawSql"], 1000, ""))
    for p, t in ge.ch_targets(d):
        out.append((p["title"], t["refId"], t["rawSql"], p.get("maxDataPoints") or 1000, p.get("interval", "")))
    return out


def run(a):
    ch = CH(a.url, a.db)
    version = ch.value("SELECT version()")
    if a.no_generate:
        names = ["ods_request", "ods_exposure", "ods_interaction", "ods_joined"]
        gen = {"rows": {n: int(ch.value(f"SELECT count() FROM {a.db}.{n}")) for n in names},
               "seconds": {n: float("nan") for n in names}, "total_s": float("nan")}
        log(f"==> measuring the existing data of {a.db}: {gen['rows']}")
    else:
        log(f"==> generating {a.rows:,} request lines over the last {a.hours} h in {a.db} (ClickHouse {version})")
        gen = generate(ch, a.rows, a.hours)
    total = sum(gen["rows"].values())
    log(f"    loaded in {gen['total_s']:.1f} s: " + ", ".join(
        f"{t} {n:,} ({n / max(gen['seconds'][t], 1e-9):,.0f} rows/s)" for t, n in gen["rows"].items()))
    merge_s, parts = wait_merges(ch)
    log(f"==> background merges settled after {merge_s:.0f} s ({parts} active parts)")
    tables = sizes(ch)

    now_ms = int(time.time() * 1000)
    heavy = ch.value(f"SELECT uid FROM trace_by_uid WHERE ts >= now() - 3600 GROUP BY uid ORDER BY count() DESC, uid LIMIT 1")
    heavy_n = ch.value(f"SELECT count() FROM trace_by_uid WHERE uid = {heavy} AND ts >= now() - 3600")
    typical = ch.value(f"SELECT uid FROM trace_by_uid WHERE ts >= now() - 3600 AND uid >= 1000 ORDER BY ts DESC LIMIT 1")
    users = {"heavy": heavy, "typical": typical}
    traces = {k: ch.value(f"SELECT trace_id FROM trace_by_uid WHERE uid = {u} AND ts >= now() - 3600 "
                          f"ORDER BY ts DESC LIMIT 1") for k, u in users.items()}
    log(f"==> trace lookups: heavy user {heavy} ({heavy_n} traces in the last hour), typical user {typical}")

    results = []
    ranges = [("1h", 3_600_000), (f"{a.hours}h", a.hours * 3_600_000)] if a.hours != 1 else [("1h", 3_600_000)]
    for d in dashboards():
        uid = d["uid"]
        if a.only and uid not in a.only.split(","):
            continue
        for title, ref, raw, max_points, min_interval in queries_of(d):
            is_trace = uid == "adlog-trace"
            for rname, rms in ranges:
                for who in (("heavy", "typical") if is_trace else (None,)):
                    variables = {v["name"]: {"value": ["$__all"] if v.get("includeAll") else "", "all_values": None}
                                 for v in d.get("templating", {}).get("list", [])}
                    if who:
                        variables["uid"] = {"value": users[who], "all_values": None}
                        variables["trace_id"] = {"value": traces[who], "all_values": None}
                    frm = now_ms - rms
                    ims = ge.grafana_interval_ms(frm, now_ms, max_points, min_interval)
                    sql = ge.expand(raw, variables, frm, now_ms, ims)
                    name = f"{uid.removeprefix('adlog-')} / {title} [{ref}]" + (f" ({who} user)" if who else "")
                    rollup = any(re.search(rf"\b{t}\b", raw) for t in ROLLUPS)
                    row = {"query": name, "range": rname, "interval_ms": ims, "rollup": rollup}
                    try:
                        ms, nrows, read = timed(ch, sql, a.runs)
                        row.update(p50=pct(ms, 0.5), p99=pct(ms, 0.99), rows=nrows, rows_read=read, runs=len(ms))
                    except RuntimeError as e:
                        row.update(error=str(e))
                    base = raw_baseline(uid, title, ref, raw)
                    if base:
                        bsql = ge.expand(base, variables, frm, now_ms, ims)
                        try:
                            bms, brows, bread = timed(ch, bsql, a.raw_runs)
                            row.update(raw_p50=pct(bms, 0.5), raw_p99=pct(bms, 0.99), raw_rows=brows,
                                       raw_rows_read=bread, raw_runs=len(bms))
                        except RuntimeError as e:
                            row.update(raw_error=str(e))
                    results.append(row)
                    log(f"    {name} {rname}: " + (f"p50 {row['p50']:.1f} ms" if "p50" in row else row.get("error", "")))

    print(f"\nbench/queries: ClickHouse {version}, database {a.db}")
    print(f"data: {gen['rows']['ods_request']:,} request lines, {gen['rows']['ods_exposure']:,} exposures, "
          f"{gen['rows']['ods_interaction']:,} interactions, {gen['rows']['ods_joined']:,} joined over "
          f"{a.hours} h, generated in-server in {gen['total_s']:.1f} s "
          f"({total / gen['total_s']:,.0f} rows/s incl. materialized views; ods_request alone "
          f"{gen['rows']['ods_request'] / max(gen['seconds']['ods_request'], 1e-9):,.0f} rows/s); "
          f"merges settled after {merge_s:.0f} s")
    print("tables: " + ", ".join(f"{t} {r:,} rows {b / 2**20:,.0f} MiB" for t, (r, b) in tables.items()
                                 if not t.startswith("schema")))
    print(f"latency: client wall time over HTTP (JSONCompact), {a.runs} runs after 1 warm-up per query "
          f"(raw baseline: {a.raw_runs}); p99 of {a.runs} runs is close to their max.\n")
    hdr = (f"{'query':<66} {'range':>5} {'rows':>6} {'p50 ms':>8} {'p99 ms':>8} {'read rows':>11} "
           f"{'raw p50':>9} {'raw p99':>9} {'raw read':>12} {'raw/rollup':>10}")
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        if "error" in r:
            print(f"{r['query'][:66]:<66} {r['range']:>5} ERROR {r['error'][:200]}")
            continue
        line = (f"{r['query'][:66]:<66} {r['range']:>5} {r['rows']:>6} {r['p50']:>8.1f} {r['p99']:>8.1f} "
                f"{r['rows_read']:>11,}")
        if "raw_p50" in r:
            line += (f" {r['raw_p50']:>9.1f} {r['raw_p99']:>9.1f} {r['raw_rows_read']:>12,}"
                     f" {r['raw_p50'] / max(r['p50'], 1e-9):>9.1f}x")
            if r["raw_rows"] != r["rows"]:
                line += f"  (raw rows {r['raw_rows']})"
        elif "raw_error" in r:
            line += f"  raw ERROR {r['raw_error'][:120]}"
        print(line)
    errors = [r for r in results if "error" in r or "raw_error" in r]
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"clickhouse": version, "database": a.db, "generate": gen, "merge_s": merge_s,
                       "tables": tables, "users": users, "traces": traces, "runs": a.runs,
                       "raw_runs": a.raw_runs, "results": results}, f, indent=1)
    if errors:
        log(f"{len(errors)} queries failed")
        return 1
    return 0


def main():
    if sys.argv[1:2] == ["free-port"]:
        print(" ".join(map(str, free_ports(int(sys.argv[2])))))
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["run"])
    ap.add_argument("--url", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--rows", type=int, default=50_000_000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--raw-runs", type=int, default=5)
    ap.add_argument("--hours", type=int, default=6)
    ap.add_argument("--json")
    ap.add_argument("--only", help="comma-separated dashboard uids to measure (default: all)")
    ap.add_argument("--no-generate", action="store_true",
                    help="measure the data already in --db (a run kept with bench/queries --keep)")
    return run(ap.parse_args())


if __name__ == "__main__":
    sys.exit(main())
