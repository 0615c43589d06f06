#!/usr/bin/env python3
"""Measures what the trace lookups cost on a few million rows.

Creates a scratch database with `ingest migrate`, fills ods_request with
synthetic traces (INSERT … SELECT FROM numbers(): the materialized views fill
trace_by_uid, trace_index and the rollups as for real traffic), then runs
`adlog-trace … --stats` and prints, per lookup, the rows ClickHouse read
(system.query_log) and the times.

Usage: lookup/measure.py [--lines 5000000] [--keep] [--db NAME]
  (ClickHouse from ADLOG_CLICKHOUSE__URL, default http://127.0.0.1:8123;
   binaries from target/debug, built if missing.)

Synthetic traffic: traces of 3–8 hops (one service each, as in the load
generator's model) spread evenly over the last 24 h; 10% of traces belong to
100 heavy users, the rest to ~1M users.
"""

import argparse
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVICES = ["ad-gateway", "ad-server", "user-profile", "ad-retrieval", "ad-ranker", "ctr-predictor", "bidder", "ad-retrieval"]
APIS = ["/v1/feed", "/serve", "/profile/get", "/retrieve", "/rank", "/predict", "/bid", "/retrieve"]


def q(url, sql):
    r = urllib.request.urlopen(url + "/?" + urllib.parse.urlencode({"wait_end_of_query": "1"}), sql.encode(), timeout=600)
    return r.read().decode()


def binary(name):
    path = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "debug", name)
    if not os.path.exists(path):
        subprocess.run(["cargo", "build", "--quiet", "-p", name, "--bin", name], cwd=ROOT, check=True)
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=5_000_000)
    ap.add_argument("--db", default="adlog_lookup_measure")
    ap.add_argument("--keep", action="store_true", help="keep the database afterwards")
    a = ap.parse_args()
    url = os.environ.get("ADLOG_CLICKHOUSE__URL", "http://127.0.0.1:8123").rstrip("/")
    env = dict(os.environ, ADLOG_CLICKHOUSE__DATABASE=a.db, ADLOG_CLICKHOUSE__URL=url, ADLOG_CLICKHOUSE__CLUSTER="")
    ingest, trace = binary("ingest"), binary("adlog-trace")

    q(url, f"DROP DATABASE IF EXISTS {a.db}")
    subprocess.run([ingest, "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    now = int(time.time())
    # Trace t has 3 + t % 6 hops; lines are numbered densely: trace t starts at
    # line 5.5 t on average, so derive (t, hop) from an over-allocated grid of
    # 8 slots per trace and keep the slots below the hop count.
    traces = a.lines * 2 // 11
    span_s = 86_400
    services = "[" + ", ".join(f"'{s}'" for s in SERVICES) + "]"
    apis = "[" + ", ".join(f"'{s}'" for s in APIS) + "]"
    t0 = time.time()
    q(url, f"""
INSERT INTO {a.db}.ods_request (ts, ts_ms, trace_id, span_id, parent_span_id, service, caller, api,
    uid, psid, status, latency_ms, host, idc, _topic, _partition, _offset, _kafka_ts_ms, _ingested_at)
SELECT toDateTime(intDiv(ms, 1000)), ms, lower(hex(cityHash64(t, 'trace'))), concat('s', toString(hop)),
    if(hop = 0, '', concat('s', toString(hop - 1))),
    arrayElement({services}, hop + 1), if(hop = 0, '', arrayElement({services}, hop)),
    arrayElement({apis}, hop + 1),
    if(t % 10 = 0, t % 100, 1000 + cityHash64(t, 'uid') % 1000000), toUInt32(t % 50),
    toUInt16(if(cityHash64(t, hop) % 100 = 0, 503, 200)), 50.0 / (hop + 1),
    concat('host-', toString(cityHash64(t, hop) % 200)), 'yf', 'request', toUInt32(t % 4), number, ms,
    toDateTime(intDiv(ms, 1000))
FROM (
    SELECT number, intDiv(number, 8) AS t, number % 8 AS hop,
        toUInt64(({now} - {span_s}) * 1000 + intDiv(t * {span_s} * 1000, {traces}) + hop * 7) AS ms
    FROM numbers({traces * 8})
)
WHERE hop < 3 + t % 6
""")
    n = int(q(url, f"SELECT count() FROM {a.db}.ods_request"))
    parts = q(url, f"SELECT table, count() FROM system.parts WHERE database = '{a.db}' AND active "
                   f"AND table IN ('ods_request', 'trace_by_uid', 'trace_index') GROUP BY table ORDER BY table").split()
    print(f"{n} lines, {traces} traces inserted in {time.time() - t0:.1f} s; active parts: {' '.join(parts)}")

    heavy = q(url, f"SELECT uid FROM {a.db}.trace_by_uid GROUP BY uid ORDER BY count() DESC, uid LIMIT 1").strip()
    typical = q(url, f"SELECT uid FROM {a.db}.trace_by_uid WHERE uid >= 1000 GROUP BY uid "
                     f"HAVING count() >= 2 ORDER BY uid LIMIT 1").strip()
    tid = q(url, f"SELECT trace_id FROM {a.db}.trace_by_uid WHERE uid = {typical} LIMIT 1").strip()

    runs = [
        (f"uid {typical} (typical user), last 24 h", ["uid", typical, "--since", "1d"]),
        (f"uid {typical} --lines", ["uid", typical, "--since", "1d", "--lines"]),
        (f"uid {heavy} (heavy user), last 1 h", ["uid", heavy, "--since", "1h"]),
        (f"uid {heavy} last 1 h --lines", ["uid", heavy, "--since", "1h", "--lines"]),
        (f"trace {tid} (no time range)", ["trace", tid]),
        (f"trace {tid} --since 1d", ["trace", tid, "--since", "1d"]),
    ]
    print(f"\n{'lookup':<48} {'query':<13} {'rows read':>10} {'server ms':>9} {'results':>8} {'wall ms':>8}")
    for what, args in runs:
        t = time.time()
        r = subprocess.run([trace, *args, "--stats"], env=env, capture_output=True, text=True)
        wall = (time.time() - t) * 1000
        if r.returncode != 0:
            print(f"{what}: exit {r.returncode}: {r.stderr.strip()}", file=sys.stderr)
            continue
        first = True
        for line in r.stderr.splitlines():
            m = re.match(r"stats: (\S+): read (\d+) rows \(\d+ bytes\) in (\d+) ms, (\d+) result rows", line)
            if m:
                # Wall time includes the wait for system.query_log to be flushed.
                print(f"{what if first else '':<48} {m[1]:<13} {int(m[2]):>10} {int(m[3]):>9} {int(m[4]):>8}")
                first = False
        print(f"{'':<48} {'(total)':<13} {'':>10} {'':>9} {'':>8} {wall:>8.0f}")
    if not a.keep:
        q(url, f"DROP DATABASE IF EXISTS {a.db}")


if __name__ == "__main__":
    main()
