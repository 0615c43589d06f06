#!/usr/bin/env python3
"""Proves that every migration in sql/ also runs on a current ClickHouse (chDB).

Usage:
  test_migrations.py -              rendered script on stdin (what
                                    `ingest migrate --print --server-version 26.9` prints;
                                    tests/tests/migrations.rs renders it via the library)
  test_migrations.py PATH/TO/ingest runs the binary with --print --server-version <chDB's version>
  test_migrations.py                the same with target/{debug,release}/ingest

Checks, on a fresh chDB session in a temporary directory:
  * every statement applies; applying everything a second time changes no
    table's SHOW CREATE TABLE (the migrations are idempotent);
  * the raw tables have exactly the columns of tests/chdb/expected_columns.json
    (the contract with the ingest worker), LowCardinality(T) counting as T;
  * rows inserted into each raw table read back equal, and each materialized
    view fed its target table;
  * the trace lookup queries (trace_by_uid, trace_index → ods_request) and the
    service-edge rollup return the right rows;
  * ods_joined collapses a replayed joined_id;
  * otel_logs shows a multiline event's continuation under its line;
  * a view that fails leaves its block without an ingest_ledger row.
Exits non-zero on the first failure. Needs `pip install chdb-core`.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


try:
    import chdb
except ImportError:
    fail("python module chdb is missing: pip install chdb-core")


def chdb_version():
    return str(chdb.query("SELECT version()", "TSVRaw")).strip()


def rendered_script(arg, version):
    if arg == "-":
        return sys.stdin.read()
    binary = arg
    if binary is None:
        for profile in ("debug", "release"):
            target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
            cand = os.path.join(target, profile, "ingest")
            if os.path.exists(cand):
                binary = cand
                break
        else:
            fail("no ingest binary found in target/; build it (cargo build -p ingest) or pass its path")
    env = dict(os.environ, ADLOG_CLICKHOUSE__DATABASE="adlog", ADLOG_CLICKHOUSE__CLUSTER="")
    r = subprocess.run(
        [binary, "migrate", "--print", "--server-version", version],
        capture_output=True, text=True, env=env,
    )
    if r.returncode != 0:
        fail(f"{binary} migrate --print failed: {r.stderr.strip()}")
    return r.stdout


def split(script):
    """Statements end with ';' at a line end (comment lines dropped)."""
    out = []
    for chunk in re.split(r";[ \t]*(?:\n|$)", script):
        body = "\n".join(l for l in chunk.splitlines() if not l.lstrip().startswith("--")).strip()
        if body:
            out.append(body)
    return out


class Db:
    def __init__(self, path):
        self.conn = chdb.connect(path)

    def q(self, sql, fmt="TSVRaw"):
        try:
            return str(self.conn.query(sql, fmt))
        except Exception as e:  # chdb raises its own error types
            raise RuntimeError(f"{e}\n--- in:\n{sql}") from None

    def rows(self, sql):
        return [json.loads(l) for l in self.q(sql, "JSONEachRow").splitlines() if l.strip()]


def base_type(t):
    m = re.fullmatch(r"LowCardinality\((.*)\)", t)
    return m.group(1) if m else t


def value(col, typ, i, times):
    """A plausible value of `typ` for row i (row 0 is an 'edge' request);
    DateTime values come from `times` (the engine's clock, see engine_times)."""
    t = base_type(typ)
    if t == "DateTime":
        return times[i]
    if t == "String":
        if col in ("caller", "parent_span_id") and i == 0:
            return ""
        return f"{col}-{i}"
    if t == "Array(String)":
        return [f"k{i}", "x"] if col.endswith("keys") else [f"v{i}", "y"]
    if t in ("Float64", "Float32"):
        return 1.25 + i
    if t == "UInt16" and col == "status":
        return 200 if i == 0 else 503
    if re.fullmatch(r"U?Int(8|16|32|64)", t):
        return 1000 + i
    fail(f"no test value for column {col} {typ}")


def same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) < 1e-9
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return str(a) == str(b)  # 64-bit integers come back quoted


def engine_now(d):
    """The engine's own clock, in epoch seconds. Test rows are stamped from it,
    never from a calendar date: the tables' TTLs drop expired rows at insert
    time, and chDB reads its clock its own way (faketime does not move it)."""
    return int(d.q("SELECT toUnixTimestamp(now())").strip())


def engine_times(d, n):
    """n consecutive DateTime strings, a minute ago, formatted by the engine."""
    base = engine_now(d) - 60
    return [d.q(f"SELECT toString(toDateTime({base + i}))").strip() for i in range(n)]


def check_lookups(d, db):
    """The trace lookup queries (as adlog-trace sends them, sql/README.md) and
    the service-edge rollup on a current ClickHouse."""
    # Three hours ago: recent enough for every TTL, and the lookups' ranges
    # (±1 h around it) do not reach the rows the raw-table check stamped a
    # minute ago.
    base = engine_now(d) - 3 * 3600
    lines = [  # (offset s, span, parent, service, caller, status)
        (0, "e0", "", "ad-gateway", "", 200),
        (0, "e1", "e0", "ad-server", "ad-gateway", 200),
        (1, "e2", "e1", "bidder", "ad-server", 503),
    ]
    rows = []
    for i, (off, span, parent, svc, caller, status) in enumerate(lines):
        t = base + off
        rows.append(json.dumps({
            "ts": t, "ts_ms": t * 1000 + i, "trace_id": "lookup-trace", "span_id": span,
            "parent_span_id": parent, "service": svc, "caller": caller, "api": "/x",
            "uid": 4242, "psid": 7, "status": status, "latency_ms": 5.0 - i, "host": "h1",
            "idc": "yf", "_topic": "request", "_partition": 0, "_offset": 9000 + i}))
    d.q(f"INSERT INTO {db}.ods_request (ts, ts_ms, trace_id, span_id, parent_span_id, service, "
        "caller, api, uid, psid, status, latency_ms, host, idc, _topic, _partition, _offset) "
        "FORMAT JSONEachRow\n" + "\n".join(rows))
    # 1. uid → traces.
    got = d.rows(f"SELECT ts_ms, trace_id, uid, psid, service, api, status, latency_ms, host, idc "
                 f"FROM {db}.trace_by_uid WHERE uid = 4242 AND ts >= toDateTime({base - 3600}) "
                 f"AND ts <= toDateTime({base + 3600}) ORDER BY ts_ms, trace_id LIMIT 101")
    if [(r["trace_id"], r["service"]) for r in got] != [("lookup-trace", "ad-gateway")]:
        fail(f"trace_by_uid lookup: {got}")
    # 2a. trace → time range.
    got = d.rows(f"SELECT trace_id, toUInt32(minMerge(ts_min)) AS first_s, "
                 f"toUInt32(maxMerge(ts_max)) AS last_s, countMerge(lines) AS lines "
                 f"FROM {db}.trace_index WHERE trace_id IN ('lookup-trace') "
                 f"AND day >= toDate(toDateTime({base - 3600})) - 1 "
                 f"AND day <= toDate(toDateTime({base + 3600})) + 1 GROUP BY trace_id")
    if len(got) != 1 or (int(got[0]["first_s"]), int(got[0]["last_s"]), int(got[0]["lines"])) != (base, base + 1, 3):
        fail(f"trace_index lookup: {got}")
    # 2b. the lines.
    got = d.rows(f"SELECT ts_ms, trace_id, span_id, parent_span_id, service, caller, api, uid, psid, "
                 f"status, latency_ms, host, idc FROM {db}.ods_request WHERE "
                 f"(ts >= toDateTime({base}) AND ts <= toDateTime({base + 1}) AND trace_id = 'lookup-trace')")
    if sorted(r["span_id"] for r in got) != ["e0", "e1", "e2"]:
        fail(f"ods_request lines lookup: {got}")
    # Service edges: caller → callee with calls and errors.
    got = d.rows(f"SELECT caller, service, countMerge(calls) AS calls, sumMerge(errors) AS errors "
                 f"FROM {db}.agg_service_edges_1m WHERE ts >= toDateTime({base - 60}) "
                 f"AND ts <= toDateTime({base + 60}) "
                 f"GROUP BY caller, service ORDER BY caller, service")
    if [(r["caller"], r["service"], int(r["calls"]), int(r["errors"])) for r in got] != [
            ("ad-gateway", "ad-server", 1, 0), ("ad-server", "bidder", 1, 1)]:
        fail(f"agg_service_edges_1m: {got}")
    print("trace lookups (trace_by_uid, trace_index, ods_request) and service edges: ok")


def check_logs_continuation(d, db):
    """The plugin's View logs (otel_logs, sql/0013) shows a multiline event's
    continuation (the extra _continuation) under the line, like the trace
    dashboard's Logs panel."""
    t = engine_now(d) - 2 * 3600
    stack = "java.lang.IllegalStateException: timed out\n\tat A.b(A.java:1)"
    rows = [json.dumps({
        "ts": t, "ts_ms": t * 1000 + i, "trace_id": "multiline-trace", "span_id": span,
        "service": "ad-gateway", "api": "/v1/feed", "uid": 7, "psid": 2, "status": 500,
        "latency_ms": 1.5, "host": "h1", "idc": "yf", "extra_keys": keys,
        "extra_values": values, "_topic": "request", "_partition": 0, "_offset": 9100 + i})
        for i, (span, keys, values) in enumerate([
            ("m0", ["region"], ["cn"]),
            ("m1", ["region", "_continuation"], ["cn", stack])])]
    d.q(f"INSERT INTO {db}.ods_request (ts, ts_ms, trace_id, span_id, service, api, uid, psid, "
        "status, latency_ms, host, idc, extra_keys, extra_values, _topic, _partition, _offset) "
        "FORMAT JSONEachRow\n" + "\n".join(rows))
    got = d.rows(f"SELECT SpanId, Body FROM {db}.otel_logs WHERE TraceId = 'multiline-trace' ORDER BY SpanId")
    line = "ad-gateway /v1/feed -> 500 in 1.5 ms (caller -, uid 7, psid 2, host h1)"
    want = [{"SpanId": "m0", "Body": line}, {"SpanId": "m1", "Body": line + "\n" + stack}]
    if got != want:
        fail(f"otel_logs Body of a multiline event:\n  got  {got}\n  want {want}")
    print("otel_logs: a multiline event's continuation follows its line")


def check_ledger_after_views(d, db):
    """A ledger row means every view of its block ran (sql/0012): a view that
    fails on one row leaves that block without a ledger row (a current
    engine writes no view's rows when any view of the INSERT fails)."""
    d.q(f"CREATE TABLE {db}.test_sink (x UInt64) ENGINE = MergeTree ORDER BY x")
    d.q(f"CREATE MATERIALIZED VIEW {db}.trace_zz_fails_mv TO {db}.test_sink AS "
        f"SELECT throwIf(_offset = 666) + _offset AS x FROM {db}.ods_request")
    before = d.q(f"SELECT count() FROM {db}.ingest_ledger WHERE tbl = 'ods_request'").strip()
    t = engine_now(d) - 60
    try:
        d.q(f"INSERT INTO {db}.ods_request (ts, uid, service, api, _topic, _partition, _offset) "
            f"VALUES (toDateTime({t}), 7, 'svc', '/a', 'ledger-test', 0, 666)")
        fail("the failing view did not refuse offset 666")
    except RuntimeError as e:
        if "trace_zz_fails_mv" not in str(e) and "throwIf" not in str(e):
            fail(f"unexpected error from the failing view: {e}")
    after = d.q(f"SELECT count() FROM {db}.ingest_ledger WHERE tbl = 'ods_request'").strip()
    if before != after:
        fail(f"a block whose view failed got a ledger row ({before} -> {after} ledger rows)")
    d.q(f"DROP TABLE {db}.trace_zz_fails_mv")
    d.q(f"DROP TABLE {db}.test_sink")
    print("ledger: a block whose view failed has no ledger row")


def main():
    arg = sys.argv[1] if len(sys.argv) > 1 else None
    version = chdb_version()
    script = rendered_script(arg, ".".join(version.split(".")[:2]))
    m = re.search(r"^-- ingest migrate --print: database (\w+)", script, re.M)
    if not m:
        fail("the input does not look like `ingest migrate --print` output")
    db = m.group(1)
    statements = split(script)
    expected = {k: v for k, v in json.load(open(os.path.join(HERE, "expected_columns.json"))).items()
                if not k.startswith("_")}

    tmp = tempfile.mkdtemp(prefix="adlog-chdb-")
    try:
        t0 = time.time()
        d = Db(tmp)
        for i, s in enumerate(statements):
            try:
                d.q(s)
            except RuntimeError as e:
                fail(f"statement {i + 1} of {len(statements)} failed on chDB {version}: {e}")

        def tables():
            return d.q(f"SELECT name FROM system.tables WHERE database = '{db}' ORDER BY name").split()

        def schema():
            return {t: d.q(f"SHOW CREATE TABLE {db}.{t}") for t in tables()}

        first = schema()
        for s in statements:
            try:
                d.q(s)
            except RuntimeError as e:
                fail(f"second apply is not idempotent: {e}")
        second = schema()
        if first != second:
            changed = sorted(set(first) ^ set(second) | {t for t in first if first.get(t) != second.get(t)})
            fail(f"schema changed by the second apply: {changed}")
        print(f"chDB {version}: {len(statements)} statements applied twice, {len(first)} tables, schema stable")

        for table, cols in expected.items():
            if table not in first:
                fail(f"table {db}.{table} is missing")
            got = [(r["name"], r["type"]) for r in d.rows(
                f"SELECT name, type FROM system.columns WHERE database = '{db}' AND table = '{table}' "
                "ORDER BY position")]
            want = [tuple(c.split(" ", 1)) for c in cols]
            if [(n, base_type(t)) for n, t in got] != want:
                fail(f"{table} columns differ from expected_columns.json:\n  got  {got}\n  want {want}")

            times = engine_times(d, 2)
            rows = [{n: value(n, t, i, times) for n, t in got} for i in range(2)]
            names = ", ".join(n for n, _ in got)
            d.q(f"INSERT INTO {db}.{table} ({names}) FORMAT JSONEachRow\n"
                + "\n".join(json.dumps(r) for r in rows))
            back = d.rows(f"SELECT {names} FROM {db}.{table} ORDER BY _offset")
            if len(back) != 2 or not all(same(r[n], b[n]) for r, b in zip(rows, back) for n in r):
                fail(f"{table}: rows did not read back equal:\n  wrote {rows}\n  read  {back}")
        print(f"raw tables: columns match expected_columns.json; rows read back: {', '.join(expected)}")

        # Every materialized view must have fed its target.
        views = d.rows(f"SELECT name, create_table_query FROM system.tables WHERE database = '{db}' "
                       "AND engine = 'MaterializedView' ORDER BY name")
        for v in views:
            m = re.search(r"\bTO\s+`?(\w+)`?\.`?(\w+)`?", v["create_table_query"])
            if not m:
                fail(f"materialized view {v['name']} has no TO table")
            n = int(d.q(f"SELECT count() FROM {m.group(1)}.{m.group(2)}").strip())
            if n == 0:
                fail(f"materialized view {v['name']} wrote nothing to {m.group(2)}")
        print(f"materialized views: {len(views)} fed their targets")

        check_lookups(d, db)
        check_logs_continuation(d, db)
        check_ledger_after_views(d, db)

        # A replayed joined event collapses (ReplacingMergeTree by joined_id).
        d.q(f"INSERT INTO {db}.ods_joined SELECT * FROM {db}.ods_joined WHERE joined_id = 1000")
        d.q(f"OPTIMIZE TABLE {db}.ods_joined FINAL")
        n = int(d.q(f"SELECT count() FROM {db}.ods_joined WHERE joined_id = 1000").strip())
        if n != 1:
            fail(f"ods_joined kept {n} copies of a replayed joined_id")
        print(f"ods_joined: replay collapsed; all checks passed in {time.time() - t0:.1f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
