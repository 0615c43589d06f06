#!/usr/bin/env python3
"""Runs expanded Grafana panel queries on a current ClickHouse (chDB), for
tests/tests/dashboards.rs.

Input (JSON on stdin):
  {"script": "<ingest migrate --print output rendered for chDB's version>",
   "db": "<database the script creates; queries run with it as the current database>",
   "timezone": "UTC",                      # the 18.16 server's, so DateTimes read alike
   "tables": [{"name": "ods_request", "path": "/tmp/…/ods_request.tsv",
               "structure": "ts DateTime, …"}],   # TabSeparated exports, loaded in order
   "queries": [{"id": "…", "sql": "…"}]}

The raw tables are loaded with INSERT … SELECT FROM file(), so the materialized
views build every rollup inside chDB, exactly as the server built its own.

Output (JSON on stdout):
  {"version": "26.9.…", "load_s": 1.2,
   "results": [{"id": "…", "error": null | "<chDB's message>", "meta": [{"name","type"}],
                "rows": N, "data": [[…], …] (at most 10000 rows), "ms": 3.1}]}
Exit status 0 unless the setup (migrations, loading) fails; query errors are
reported per query.
"""

import json
import os
import re
import shutil
import sys
import tempfile
import time


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


try:
    import chdb
except ImportError:
    fail("python module chdb is missing: pip install chdb-core")


def split(script):
    """Statements end with ';' at a line end (comment lines dropped)."""
    out = []
    for chunk in re.split(r";[ \t]*(?:\n|$)", script):
        body = "\n".join(l for l in chunk.splitlines() if not l.lstrip().startswith("--")).strip()
        if body:
            out.append(body)
    return out


def main():
    req = json.load(sys.stdin)
    tmp = tempfile.mkdtemp(prefix="adlog-chdb-panels-")
    try:
        conn = chdb.connect(tmp)

        def q(sql, fmt="TSVRaw"):
            return str(conn.query(sql, fmt))

        version = q("SELECT version()").strip()
        t0 = time.time()
        for i, s in enumerate(split(req["script"])):
            try:
                q(s)
            except Exception as e:  # chdb raises its own error types
                fail(f"migration statement {i + 1} failed on chDB {version}: {e}\n--- in:\n{s}")
        tz = req.get("timezone") or "UTC"
        q(f"SET session_timezone = '{tz}'")
        db = req["db"]
        for t in req["tables"]:
            path = t["path"].replace("'", "\\'")
            try:
                q(f"INSERT INTO {db}.{t['name']} SELECT * FROM file('{path}', 'TabSeparated', "
                  f"'{t['structure']}')")
            except Exception as e:
                fail(f"loading {t['name']} into chDB failed: {e}")
        load_s = time.time() - t0
        q(f"USE {db}")
        results = []
        for item in req["queries"]:
            r = {"id": item["id"], "error": None, "meta": [], "rows": 0, "data": []}
            t1 = time.time()
            try:
                out = json.loads(q(item["sql"], "JSONCompact") or "{}")
                r["meta"] = out.get("meta", [])
                r["rows"] = out.get("rows", 0)
                r["data"] = out.get("data", [])[:10000]
            except Exception as e:
                r["error"] = str(e).strip()
            r["ms"] = round((time.time() - t1) * 1000, 1)
            results.append(r)
        json.dump({"version": version, "load_s": round(load_s, 2), "results": results}, sys.stdout)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
