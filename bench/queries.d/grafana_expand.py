#!/usr/bin/env python3
"""Expands the ClickHouse panel queries of grafana/dashboards/*.json the way
Grafana + the official ClickHouse plugin (grafana-clickhouse-datasource) do,
so they can be run without a Grafana server.

The same rules are implemented in Rust in tests/tests/dashboards.rs (the test
compares both expanders on every query), in this order:

 1. Grafana front end, `$__conditionalAll(cond, $var)`: `1=1` when the variable's
    current value is All (`$__all`) or empty, else `cond`.
 2. Grafana template variables: `$var`, `${var}`, `${var:fmt}`, `[[var]]`; a
    multi-value (or All = every option) is joined as `'a','b'` (the plugin's
    default format); formats `singlequote`, `sqlstring`, `csv`, `raw`, `text`,
    `pipe`. Built-ins `$__from`/`$__to` (epoch ms), `$__interval` (`30s`),
    `$__interval_ms`, `$__range_s`. Unknown names stay as they are.
 3. Plugin macros (backend, pkg/macros/macros.go): `$__timeFilter(c)` →
    `c >= toDateTime(from) AND c <= toDateTime(to)` (seconds), `$__fromTime`,
    `$__toTime` → `toDateTime(s)`, `$__interval_s` → integer seconds (>= 1),
    `$__timeInterval(c)` → `toStartOfInterval(toDateTime(c), INTERVAL n second)`,
    `$__timeFilter_ms(c)`, `$__fromTime_ms`, `$__toTime_ms` →
    `fromUnixTimestamp64Milli(ms)`, `$__dateFilter(c)` → `toDate('YYYY-MM-DD')`.

The interval is Grafana's: range / max data points (panel `maxDataPoints`, else
1000), rounded to a "nice" interval, never below the panel's `interval`
(min interval, e.g. "1m").

Library use: `expand(sql, variables, from_ms, to_ms, interval_ms)`; CLI:
  grafana_expand.py DASHBOARD.json --from MS --to MS [--var name=value]...
prints one JSON object per ClickHouse target: dashboard, panel, refId, format,
sql (expanded).
  grafana_expand.py --batch
reads a JSON list of {"sql", "variables", "from_ms", "to_ms", "interval_ms"} on
stdin and prints the list of expanded queries (tests/tests/dashboards.rs uses it
to check that this expander and the Rust one agree).
"""

import argparse
import datetime
import json
import re
import sys

CH_TYPE = "grafana-clickhouse-datasource"

NICE_MS = [
    10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 15000, 20000, 30000,
    60000, 120000, 300000, 600000, 900000, 1200000, 1800000, 3600000,
    7200000, 10800000, 21600000, 43200000, 86400000, 604800000,
]


def parse_duration_ms(s):
    """'1m' → 60000, '30s' → 30000, '' → 0."""
    if not s:
        return 0
    m = re.fullmatch(r"\s*>?\s*(\d+)(ms|s|m|h|d|w)\s*", s)
    if not m:
        raise ValueError(f"bad interval {s!r}")
    mult = {"ms": 1, "s": 1000, "m": 60000, "h": 3600000, "d": 86400000, "w": 604800000}
    return int(m.group(1)) * mult[m.group(2)]


def grafana_interval_ms(from_ms, to_ms, max_points=1000, min_interval=""):
    raw = max((to_ms - from_ms) / max(max_points, 1), 1)
    nice = next((n for n in NICE_MS if n >= raw), NICE_MS[-1])
    return max(nice, parse_duration_ms(min_interval))


def format_interval(ms):
    for unit, size in (("d", 86400000), ("h", 3600000), ("m", 60000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def macro_args(sql, open_idx):
    """Arguments of the call whose '(' is at open_idx; (args, index after ')')."""
    depth, args, cur, i = 0, [], "", open_idx
    quote = None
    while i < len(sql):
        c = sql[i]
        if quote:
            cur += c
            if c == "\\" and i + 1 < len(sql):
                cur += sql[i + 1]
                i += 1
            elif c == quote:
                quote = None
        elif c in "'\"`":
            quote = c
            cur += c
        elif c == "(":
            depth += 1
            if depth > 1:
                cur += c
        elif c == ")":
            depth -= 1
            if depth == 0:
                args.append(cur)
                return args, i + 1
            cur += c
        elif c == "," and depth == 1:
            args.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    raise ValueError(f"unclosed macro call at {open_idx}: {sql[open_idx:open_idx + 60]!r}")


def is_all(value):
    return value in ("$__all", "") or value == ["$__all"] or value == []


def apply_conditional_all(sql, variables):
    macro = "$__conditionalAll("
    while True:
        i = sql.rfind(macro)
        if i < 0:
            return sql
        args, end = macro_args(sql, i + len(macro) - 1)
        if len(args) != 2:
            raise ValueError(f"$__conditionalAll needs 2 arguments: {sql[i:end]}")
        name = args[1].strip().lstrip("$").strip("{}")
        value = variables.get(name, {}).get("value", "")
        phrase = "1=1" if is_all(value) else args[0]
        sql = sql[:i] + phrase + sql[end:]


def sqlstring(v):
    return "'" + str(v).replace("'", "''") + "'"


def format_value(value, fmt):
    """Grafana's formatting of a variable value (a list for multi-value)."""
    values = value if isinstance(value, list) else None
    if fmt is None:  # the plugin's default format function
        return "'" + "','".join(map(str, values)) + "'" if values is not None else str(value)
    items = values if values is not None else [value]
    if fmt == "singlequote":
        return ",".join("'" + str(v).replace("'", "\\'") + "'" for v in items)
    if fmt == "sqlstring":
        return ",".join(sqlstring(v) for v in items)
    if fmt == "csv":
        return ",".join(map(str, items))
    if fmt == "pipe":
        return "|".join(map(str, items))
    if fmt in ("raw", "text"):
        return ",".join(map(str, items))
    raise ValueError(f"unsupported variable format :{fmt}")


VAR_RE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?::([^}]+))?\}")


def replace_variables(sql, variables, builtins):
    def sub(m):
        name = m.group(1) or m.group(2) or m.group(4)
        fmt = m.group(3) or m.group(5)
        if name in builtins:
            return str(builtins[name])
        if name not in variables:
            return m.group(0)
        v = variables[name]
        value = v["value"]
        if is_all(value) and v.get("all_values") is not None:
            value = v.get("all_value") or list(v["all_values"])
        return format_value(value, fmt)

    return VAR_RE.sub(sub, sql)


def to_datetime(ms):
    return f"toDateTime({ms // 1000})"


def apply_macros(sql, from_ms, to_ms, interval_ms):
    interval_s = max(interval_ms // 1000, 1)

    out, i = "", 0
    pat = re.compile(r"\$__(\w+)")
    while True:
        m = pat.search(sql, i)
        if not m:
            return out + sql[i:]
        out += sql[i:m.start()]
        name = m.group(1)
        end = m.end()
        args = None
        if end < len(sql) and sql[end] == "(":
            args, end = macro_args(sql, end)
            args = [a.strip() for a in args]
        if name == "timeFilter":
            c = args[0]
            rep = f"{c} >= {to_datetime(from_ms)} AND {c} <= {to_datetime(to_ms)}"
        elif name == "timeFilter_ms":
            c = args[0]
            rep = f"{c} >= fromUnixTimestamp64Milli({from_ms}) AND {c} <= fromUnixTimestamp64Milli({to_ms})"
        elif name == "dateFilter":
            c = args[0]
            d = lambda ms: datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime("%Y-%m-%d")
            rep = f"{c} >= toDate('{d(from_ms)}') AND {c} <= toDate('{d(to_ms)}')"
        elif name == "fromTime":
            rep = to_datetime(from_ms)
        elif name == "toTime":
            rep = to_datetime(to_ms)
        elif name == "fromTime_ms":
            rep = f"fromUnixTimestamp64Milli({from_ms})"
        elif name == "toTime_ms":
            rep = f"fromUnixTimestamp64Milli({to_ms})"
        elif name == "interval_s":
            rep = str(interval_s)
        elif name == "timeInterval":
            rep = f"toStartOfInterval(toDateTime({args[0]}), INTERVAL {interval_s} second)"
        else:
            raise ValueError(f"unknown macro $__{name}")
        if name not in ("fromTime", "toTime", "fromTime_ms", "toTime_ms", "interval_s") and args is None:
            raise ValueError(f"$__{name} needs an argument")
        out += rep
        i = end


def expand(sql, variables, from_ms, to_ms, interval_ms):
    """variables: name → {"value": str | [str], "all_values": [str] | None}."""
    sql = apply_conditional_all(sql, variables)
    builtins = {
        "__from": from_ms, "__to": to_ms,
        "__interval": format_interval(interval_ms), "__interval_ms": interval_ms,
        "__range_s": (to_ms - from_ms) // 1000, "__range_ms": to_ms - from_ms,
    }
    sql = replace_variables(sql, variables, builtins)
    return apply_macros(sql, from_ms, to_ms, interval_ms)


def ch_targets(dashboard):
    """(panel, target) for every ClickHouse query of a dashboard (rows included)."""
    def walk(panels):
        for p in panels:
            yield p
            yield from walk(p.get("panels", []))

    for p in walk(dashboard.get("panels", [])):
        for t in p.get("targets", []):
            ds = t.get("datasource") or p.get("datasource") or {}
            if ds.get("type") == CH_TYPE:
                yield p, t


def main():
    if sys.argv[1:] == ["--batch"]:
        items = json.load(sys.stdin)
        json.dump([expand(i["sql"], i["variables"], i["from_ms"], i["to_ms"], i["interval_ms"]) for i in items],
                  sys.stdout)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dashboard")
    ap.add_argument("--from", dest="from_ms", type=int, required=True)
    ap.add_argument("--to", dest="to_ms", type=int, required=True)
    ap.add_argument("--var", action="append", default=[], help="name=value (value $__all for All; a,b for several)")
    a = ap.parse_args()
    d = json.load(open(a.dashboard))
    variables = {}
    for v in d.get("templating", {}).get("list", []):
        cur = (v.get("current") or {}).get("value", "")
        variables[v["name"]] = {"value": cur, "all_values": None}
    for kv in a.var:
        name, _, value = kv.partition("=")
        variables.setdefault(name, {"all_values": None})["value"] = value.split(",") if "," in value else value
    for p, t in ch_targets(d):
        ms = grafana_interval_ms(a.from_ms, a.to_ms, p.get("maxDataPoints") or 1000, p.get("interval", ""))
        print(json.dumps({
            "dashboard": d.get("uid"), "panel": p.get("title"), "refId": t.get("refId"),
            "format": t.get("format"), "sql": expand(t["rawSql"], variables, a.from_ms, a.to_ms, ms),
        }))


if __name__ == "__main__":
    sys.exit(main())
