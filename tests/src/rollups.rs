//! Every table the materialized views of `sql/` feed from the raw tables —
//! the `agg_*` rollups and the trace lookup tables — compared with what the
//! raw rows (`ods_request`, `ods_exposure`, `ods_interaction`, `ods_joined`)
//! imply, grouped the way each table is keyed (its view's GROUP BY).
//!
//! [`rollup_mismatches`] returns one line per table that disagrees (how many
//! groups differ, one example group with raw vs. rollup values); empty = all
//! equal. It is synchronous (the tiny HTTP client of
//! [`crate::reliability::ch_query`]), so it runs from any thread.
//!
//! How a table is compared: the raw side (the view's SELECT over the whole raw
//! table) and the rollup side (the table read the way `sql/` says it must be
//! read: `-Merge` combinators for AggregatingMergeTree, `sum()` for
//! SummingMergeTree, both `GROUP BY` its key, since parts are merged only
//! eventually) are stacked with `UNION ALL` and summed per group, so a group on
//! one side only counts as 0 on the other — no JOIN, valid on 18.16. What is
//! compared and what is not, per table, is in [`checks`].

use anyhow::Context;

use crate::reliability::{ch_query, ch_u64};

/// How a measure's rollup value must relate to the raw one.
#[derive(Clone, Copy)]
enum Cmp {
    /// Integers: equal.
    Exact,
    /// Float64 sums: the raw rows and the rollup add the same values in a
    /// different order (per insert block, then per part, then per merge), so
    /// they may differ in the last bits (rounding: ~1e-16 relative per
    /// addition): equal up to a relative 1e-9, i.e. a lost or extra 1 ms
    /// latency shows in any sum below 1e9 ms (all summed values here are
    /// >= 0, so there is no cancellation). NaN on both sides counts as equal.
    Float,
    /// At-least-once rollup of a collapsing raw table: rollup >= raw, and no
    /// rollup value where the raw table has nothing.
    AtLeast,
    /// Equal, but only checked in the groups where the named (AtLeast) measure
    /// is equal on both sides (no copies beyond the stored rows there).
    ExactWhereEqual(&'static str),
}

struct Measure {
    name: &'static str,
    /// ClickHouse type both sides are cast to (`UInt64`, `Int64`, `Float64`).
    ty: &'static str,
    /// Aggregate over the raw rows (`raw_from`).
    raw: &'static str,
    /// Aggregate over the table's rows.
    rollup: &'static str,
    cmp: Cmp,
}

struct Check {
    table: &'static str,
    /// (the table's key column, the raw expression the view stores in it).
    keys: Vec<(&'static str, &'static str)>,
    /// `FROM … [WHERE …]` of the raw side (`{db}` is replaced).
    raw_from: String,
    measures: Vec<Measure>,
}

fn m(name: &'static str, ty: &'static str, raw: &'static str, rollup: &'static str) -> Measure {
    Measure {
        name,
        ty,
        raw,
        rollup,
        cmp: if ty == "Float64" {
            Cmp::Float
        } else {
            Cmp::Exact
        },
    }
}

/// One check per table fed by a view from the raw tables (sql/0004, 0005,
/// 0007, 0008). The raw side repeats each view's SELECT (its WHERE, its
/// bucketing, its measures) over the whole raw table.
///
/// Not compared: the `quantilesTDigest` columns (`latency`): a t-digest
/// merged from per-block states is an approximation that depends on how the
/// rows were split into blocks, so it has no exact raw value; its sibling
/// `latency_sum` and the counts are compared instead. `uniq` (users) IS
/// compared exactly: its state is a deterministic sample of value hashes, and
/// merging the states of parts gives the same state (so the same number) as
/// `uniq` over all the rows at once.
fn checks(db: &str) -> Vec<Check> {
    let errors = "sum(toUInt64(status >= 500))";
    vec![
        // 0004: per second × service × api, every request line.
        Check {
            table: "agg_request_1s",
            keys: vec![("ts", "ts"), ("service", "service"), ("api", "api")],
            raw_from: format!("FROM {db}.ods_request"),
            measures: vec![
                m("requests", "UInt64", "count()", "countMerge(requests)"),
                m("errors", "UInt64", errors, "sumMerge(errors)"),
                m(
                    "latency_sum",
                    "Float64",
                    "sum(latency_ms)",
                    "sumMerge(latency_sum)",
                ),
            ],
        },
        // 0004: per minute × psid, edge lines only (caller = '').
        Check {
            table: "agg_request_1m_psid",
            keys: vec![("ts", "toStartOfMinute(ts)"), ("psid", "psid")],
            raw_from: format!("FROM {db}.ods_request WHERE caller = ''"),
            measures: vec![
                m("requests", "UInt64", "count()", "countMerge(requests)"),
                m("errors", "UInt64", errors, "sumMerge(errors)"),
                m("users", "UInt64", "uniq(uid)", "uniqMerge(users)"),
                m(
                    "latency_sum",
                    "Float64",
                    "sum(latency_ms)",
                    "sumMerge(latency_sum)",
                ),
            ],
        },
        // 0004: per hour × uid; SummingMergeTree, read with sum().
        Check {
            table: "agg_user_visits_1h",
            keys: vec![("ts", "toStartOfHour(ts)"), ("uid", "uid")],
            raw_from: format!("FROM {db}.ods_request"),
            measures: vec![
                m("visits", "UInt64", "countIf(caller = '')", "sum(visits)"),
                m("hops", "UInt64", "count()", "sum(hops)"),
            ],
        },
        // 0005: three views into one SummingMergeTree keyed (ts, psid, action).
        // The raw side stacks the three sources row by row (a key of one
        // source may also occur in another: the table sums them, so do we).
        //
        // exposures, bid_sum, interactions: exactly-once (sql/0005). `joined`
        // is documented AT-LEAST-ONCE: the view counts every inserted copy
        // of a joined event (joiner replays give the same joined_id), while
        // ods_joined (ReplacingMergeTree by joined_id) drops copies when its
        // parts merge. So per group: rollup >= the rows ods_joined still holds
        // (>= its distinct joined_ids: a copy can only go away by a merge, and
        // every copy was counted by the view when it was inserted), and
        // nothing where ods_joined has nothing. The delay sum is exact where
        // no copy was merged away (rollup joined = stored rows); the grand
        // total of `joined` is checked exactly against the ingest ledger in
        // `joined_total_mismatch`.
        Check {
            table: "agg_ad_1m_psid",
            keys: vec![("ts", "t"), ("psid", "p"), ("action", "a")],
            raw_from: format!(
                "FROM (\
                 SELECT toStartOfMinute(ts) AS t, psid AS p, '' AS a, toUInt64(1) AS e, \
                        toFloat64(bid_price) AS b, toUInt64(0) AS i, toUInt64(0) AS j, toInt64(0) AS d \
                 FROM {db}.ods_exposure \
                 UNION ALL SELECT toStartOfMinute(ts), toUInt32(0), action, toUInt64(0), \
                        toFloat64(0), toUInt64(1), toUInt64(0), toInt64(0) \
                 FROM {db}.ods_interaction \
                 UNION ALL SELECT toStartOfMinute(ts), psid, action, toUInt64(0), \
                        toFloat64(0), toUInt64(0), toUInt64(1), toInt64(delay_ms) \
                 FROM {db}.ods_joined)"
            ),
            measures: vec![
                m("exposures", "UInt64", "sum(e)", "sum(exposures)"),
                m("bid_sum", "Float64", "sum(b)", "sum(bid_sum)"),
                m("interactions", "UInt64", "sum(i)", "sum(interactions)"),
                Measure {
                    cmp: Cmp::AtLeast,
                    ..m("joined", "UInt64", "sum(j)", "sum(joined)")
                },
                Measure {
                    cmp: Cmp::ExactWhereEqual("joined"),
                    ..m(
                        "joined_delay_ms_sum",
                        "Int64",
                        "sum(d)",
                        "sum(joined_delay_ms_sum)",
                    )
                },
            ],
        },
        // 0007: per minute × caller × service × api, non-edge lines only.
        Check {
            table: "agg_service_edges_1m",
            keys: vec![
                ("ts", "toStartOfMinute(ts)"),
                ("caller", "caller"),
                ("service", "service"),
                ("api", "api"),
            ],
            raw_from: format!("FROM {db}.ods_request WHERE caller != ''"),
            measures: vec![
                m("calls", "UInt64", "count()", "countMerge(calls)"),
                m("errors", "UInt64", errors, "sumMerge(errors)"),
                m(
                    "latency_sum",
                    "Float64",
                    "sum(latency_ms)",
                    "sumMerge(latency_sum)",
                ),
            ],
        },
        // 0008: one row per edge line, every column copied: per (uid, ts) the
        // number of rows and a wrapping sum of a hash of the other columns
        // (equal multisets of rows give equal sums).
        Check {
            table: "trace_by_uid",
            keys: vec![("uid", "uid"), ("ts", "ts")],
            raw_from: format!("FROM {db}.ods_request WHERE caller = ''"),
            measures: vec![
                m("rows", "UInt64", "count()", "count()"),
                m(
                    "row_hash_sum",
                    "UInt64",
                    "sum(cityHash64(ts_ms, trace_id, psid, service, api, status, latency_ms, host, idc))",
                    "sum(cityHash64(ts_ms, trace_id, psid, service, api, status, latency_ms, host, idc))",
                ),
            ],
        },
        // 0008: per day × trace_id: first/last second and line count.
        Check {
            table: "trace_index",
            keys: vec![("day", "toDate(ts)"), ("trace_id", "trace_id")],
            raw_from: format!("FROM {db}.ods_request"),
            measures: vec![
                m(
                    "ts_min",
                    "UInt64",
                    "toUInt32(min(ts))",
                    "toUInt32(minMerge(ts_min))",
                ),
                m(
                    "ts_max",
                    "UInt64",
                    "toUInt32(max(ts))",
                    "toUInt32(maxMerge(ts_max))",
                ),
                m("lines", "UInt64", "count()", "countMerge(lines)"),
            ],
        },
    ]
}

/// The SQL condition "this group differs" for measure `x` (`raw_x`, `agg_x`
/// are the group's sums).
fn differs(ms: &Measure) -> String {
    let (r, a) = (format!("raw_{}", ms.name), format!("agg_{}", ms.name));
    match ms.cmp {
        Cmp::Exact => format!("{r} != {a}"),
        Cmp::Float => format!(
            "NOT ({r} = {a} OR (isNaN({r}) AND isNaN({a})) \
             OR abs({r} - {a}) <= 1e-9 * greatest(abs({r}), abs({a})))"
        ),
        Cmp::AtLeast => format!("({a} < {r} OR ({r} = 0 AND {a} > 0))"),
        Cmp::ExactWhereEqual(other) => {
            format!("(raw_{other} = agg_{other} AND {r} != {a})")
        }
    }
}

/// `SELECT k_0…, raw_x, agg_x…, bad FROM … GROUP BY k_0…`: one row per group
/// of either side.
fn grouped_sql(db: &str, c: &Check) -> String {
    let ks: Vec<String> = (0..c.keys.len()).map(|i| format!("k_{i}")).collect();
    let keys = ks.join(", ");
    let raw_keys: Vec<String> = c
        .keys
        .iter()
        .enumerate()
        .map(|(i, (_, e))| format!("{e} AS k_{i}"))
        .collect();
    let agg_keys: Vec<String> = c
        .keys
        .iter()
        .enumerate()
        .map(|(i, (col, _))| format!("{col} AS k_{i}"))
        .collect();
    let vals = |f: &dyn Fn(&Measure) -> &str| -> String {
        c.measures
            .iter()
            .map(|ms| format!("to{}({}) AS v_{}", ms.ty, f(ms), ms.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let raw = format!(
        "SELECT {}, {} {} GROUP BY {keys}",
        raw_keys.join(", "),
        vals(&|ms| ms.raw),
        c.raw_from
    );
    let agg = format!(
        "SELECT {}, {} FROM {db}.{} GROUP BY {keys}",
        agg_keys.join(", "),
        vals(&|ms| ms.rollup),
        c.table
    );
    // Stacked: the raw side's values in r_*, the rollup's in a_*, zeros in the other.
    let side = |raw_side: bool| -> String {
        c.measures
            .iter()
            .flat_map(|ms| {
                let v = format!("v_{}", ms.name);
                let zero = format!("to{}(0)", ms.ty);
                let (r, a) = if raw_side { (v, zero) } else { (zero, v) };
                [
                    format!("{r} AS r_{}", ms.name),
                    format!("{a} AS a_{}", ms.name),
                ]
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let sums: Vec<String> = c
        .measures
        .iter()
        .flat_map(|ms| {
            [
                format!("sum(r_{0}) AS raw_{0}", ms.name),
                format!("sum(a_{0}) AS agg_{0}", ms.name),
            ]
        })
        .collect();
    let bad: Vec<String> = c.measures.iter().map(differs).collect();
    format!(
        "SELECT {keys}, {}, toUInt8({}) AS bad FROM (\
         SELECT {keys}, {} FROM ({raw}) \
         UNION ALL SELECT {keys}, {} FROM ({agg})) \
         GROUP BY {keys}",
        sums.join(", "),
        bad.join(" OR "),
        side(true),
        side(false)
    )
}

/// The mismatch line for `c`, or None when every group agrees.
fn compare(ch_url: &str, db: &str, c: &Check) -> anyhow::Result<Option<String>> {
    let grouped = grouped_sql(db, c);
    let body = ch_query(
        ch_url,
        &format!("SELECT count(), sum(bad) FROM ({grouped}) FORMAT TSV"),
    )
    .with_context(|| format!("comparing {} with the raw rows", c.table))?;
    let v: Vec<u64> = body
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let (groups, bad) = (
        v.first().copied().unwrap_or(0),
        v.get(1).copied().unwrap_or(0),
    );
    if bad == 0 {
        return Ok(None);
    }
    let ks: Vec<String> = (0..c.keys.len()).map(|i| format!("k_{i}")).collect();
    let example = ch_query(
        ch_url,
        &format!(
            "SELECT * FROM ({grouped}) WHERE bad ORDER BY {} LIMIT 1 FORMAT TSV",
            ks.join(", ")
        ),
    )?;
    let f: Vec<&str> = example.trim_end_matches('\n').split('\t').collect();
    let n = c.keys.len();
    let key = c
        .keys
        .iter()
        .enumerate()
        .map(|(i, (col, _))| format!("{col}={}", f.get(i).unwrap_or(&"?")))
        .collect::<Vec<_>>()
        .join(", ");
    let vals = c
        .measures
        .iter()
        .enumerate()
        .map(|(j, ms)| {
            let r = f.get(n + 2 * j).unwrap_or(&"?");
            let a = f.get(n + 2 * j + 1).unwrap_or(&"?");
            let rel = match ms.cmp {
                Cmp::AtLeast => " (rollup must be >=)",
                _ => "",
            };
            format!("{} raw {r} vs rollup {a}{rel}", ms.name)
        })
        .collect::<Vec<_>>()
        .join("; ");
    let by = c
        .keys
        .iter()
        .map(|(col, _)| *col)
        .collect::<Vec<_>>()
        .join(", ");
    Ok(Some(format!(
        "{}: {bad} of {groups} groups ({by}) differ from the raw rows; e.g. ({key}): {vals}",
        c.table
    )))
}

/// `agg_ad_1m_psid.joined` counts every row inserted into ods_joined (copies
/// included), and so does the ingest ledger (one row per INSERT block with its
/// row count, written by another view of the same INSERT): their totals must
/// be equal — the exact upper bound the per-group `>=` check cannot give.
fn joined_total_mismatch(ch_url: &str, db: &str) -> anyhow::Result<Option<String>> {
    let rollup = ch_u64(
        ch_url,
        &format!("SELECT toUInt64(sum(joined)) FROM {db}.agg_ad_1m_psid"),
    )?;
    let ledger = ch_u64(
        ch_url,
        &format!("SELECT toUInt64(sum(rows)) FROM {db}.ingest_ledger WHERE tbl = 'ods_joined'"),
    )?;
    Ok((rollup != ledger).then(|| {
        format!(
            "agg_ad_1m_psid: joined total {rollup}, but the ingest ledger says {ledger} rows \
             were inserted into ods_joined"
        )
    }))
}

/// Compares every `agg_*` and `trace_*` table of `db` with the raw rows: one
/// line per table that disagrees; empty = all equal. A table of that name
/// which has no check here (a new migration's rollup) is reported too, so it
/// cannot go unchecked. Errors only when ClickHouse cannot answer.
pub fn rollup_mismatches(ch_url: &str, db: &str) -> anyhow::Result<Vec<String>> {
    let present: Vec<String> = ch_query(
        ch_url,
        &format!(
            "SELECT name FROM system.tables WHERE database = '{db}' \
             AND (startsWith(name, 'agg_') OR startsWith(name, 'trace_')) \
             AND engine != 'MaterializedView' ORDER BY name FORMAT TSV"
        ),
    )?
    .lines()
    .map(str::to_string)
    .collect();
    let checks = checks(db);
    let mut out = Vec::new();
    for t in &present {
        if !checks.iter().any(|c| c.table == t) {
            out.push(format!(
                "{t}: a rollup/trace table with no check in tests/src/rollups.rs"
            ));
        }
    }
    for c in &checks {
        if !present.iter().any(|t| t == c.table) {
            out.push(format!("{}: table missing in {db}", c.table));
            continue;
        }
        if let Some(line) = compare(ch_url, db, c)? {
            out.push(line);
        }
    }
    if present.iter().any(|t| t == "agg_ad_1m_psid") {
        if let Some(line) = joined_total_mismatch(ch_url, db)? {
            out.push(line);
        }
    }
    Ok(out)
}
