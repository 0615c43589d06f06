//! What every table the materialized views feed from the raw tables — the
//! `agg_*` rollups and the trace lookup tables — must hold, given the raw rows
//! (`ods_request`, `ods_exposure`, `ods_interaction`, `ods_joined`), grouped
//! the way each table is keyed (its view's GROUP BY); and the SQL that
//! compares the two. Pure: [`super`] runs it against the server, and the
//! integration tests run it after every fault scenario.
//!
//! How a table is compared: the raw side (the view's SELECT over the raw
//! rows) and the rollup side (the table read the way `sql/` says it must be
//! read: `-Merge` combinators for AggregatingMergeTree, `sum()` for
//! SummingMergeTree, both `GROUP BY` its key, since parts are merged only
//! eventually) are stacked with `UNION ALL` and summed per group, so a group on
//! one side only counts as 0 on the other — no JOIN, valid on 18.16. What is
//! compared and what is not, per table, is in [`checks`].

/// How a measure's rollup value must relate to the raw one.
#[derive(Clone, Copy, Debug)]
pub enum Cmp {
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

pub struct Measure {
    pub name: &'static str,
    /// ClickHouse type both sides are cast to (`UInt64`, `Int64`, `Float64`).
    pub ty: &'static str,
    /// Aggregate over the raw rows (`raw_from`).
    pub raw: &'static str,
    /// Aggregate over the table's rows.
    pub rollup: &'static str,
    pub cmp: Cmp,
}

/// The time buckets a table's rows fall into: the unit `ingest reconcile`
/// reports and rebuilds (each rollup row comes from raw rows of one bucket).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bucket {
    Hour,
    /// `trace_index` is keyed by day.
    Day,
}

pub struct Check {
    pub table: &'static str,
    /// (the table's key column, the raw expression the view stores in it).
    pub keys: Vec<(&'static str, &'static str)>,
    /// Index in `keys` of the time key (a DateTime, or a Date for [`Bucket::Day`]).
    pub time: usize,
    pub bucket: Bucket,
    /// `FROM … WHERE …` of the raw side (`{db}` is replaced); `{range}` marks
    /// where the condition on the raw rows' `ts` goes.
    pub raw_from: String,
    pub measures: Vec<Measure>,
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
pub fn checks(db: &str) -> Vec<Check> {
    // The request rollups' shared measures (sql/0004, 0007).
    let errors = || {
        m(
            "errors",
            "UInt64",
            "sum(toUInt64(status >= 500))",
            "sumMerge(errors)",
        )
    };
    let latency_sum = || {
        m(
            "latency_sum",
            "Float64",
            "sum(latency_ms)",
            "sumMerge(latency_sum)",
        )
    };
    vec![
        // 0004: per second × service × api, every request line.
        Check {
            table: "agg_request_1s",
            keys: vec![("ts", "ts"), ("service", "service"), ("api", "api")],
            time: 0,
            bucket: Bucket::Hour,
            raw_from: format!("FROM {db}.ods_request WHERE {{range}}"),
            measures: vec![
                m("requests", "UInt64", "count()", "countMerge(requests)"),
                errors(),
                latency_sum(),
            ],
        },
        // 0004: per minute × psid, edge lines only (caller = '').
        Check {
            table: "agg_request_1m_psid",
            keys: vec![("ts", "toStartOfMinute(ts)"), ("psid", "psid")],
            time: 0,
            bucket: Bucket::Hour,
            raw_from: format!("FROM {db}.ods_request WHERE caller = '' AND {{range}}"),
            measures: vec![
                m("requests", "UInt64", "count()", "countMerge(requests)"),
                errors(),
                m("users", "UInt64", "uniq(uid)", "uniqMerge(users)"),
                latency_sum(),
            ],
        },
        // 0004: per hour × uid; SummingMergeTree, read with sum().
        Check {
            table: "agg_user_visits_1h",
            keys: vec![("ts", "toStartOfHour(ts)"), ("uid", "uid")],
            time: 0,
            bucket: Bucket::Hour,
            raw_from: format!("FROM {db}.ods_request WHERE {{range}}"),
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
        // total of `joined` is checked exactly against the ingest ledger by
        // the integration tests (tests/src/rollups.rs).
        Check {
            table: "agg_ad_1m_psid",
            keys: vec![("ts", "t"), ("psid", "p"), ("action", "a")],
            time: 0,
            bucket: Bucket::Hour,
            raw_from: format!(
                "FROM (\
                 SELECT toStartOfMinute(ts) AS t, psid AS p, '' AS a, toUInt64(1) AS e, \
                        toFloat64(bid_price) AS b, toUInt64(0) AS i, toUInt64(0) AS j, toInt64(0) AS d \
                 FROM {db}.ods_exposure WHERE {{range}} \
                 UNION ALL SELECT toStartOfMinute(ts), toUInt32(0), action, toUInt64(0), \
                        toFloat64(0), toUInt64(1), toUInt64(0), toInt64(0) \
                 FROM {db}.ods_interaction WHERE {{range}} \
                 UNION ALL SELECT toStartOfMinute(ts), psid, action, toUInt64(0), \
                        toFloat64(0), toUInt64(0), toUInt64(1), toInt64(delay_ms) \
                 FROM {db}.ods_joined WHERE {{range}})"
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
            time: 0,
            bucket: Bucket::Hour,
            raw_from: format!("FROM {db}.ods_request WHERE caller != '' AND {{range}}"),
            measures: vec![
                m("calls", "UInt64", "count()", "countMerge(calls)"),
                errors(),
                latency_sum(),
            ],
        },
        // 0008: one row per edge line, every column copied: per (uid, ts) the
        // number of rows and a wrapping sum of a hash of the other columns
        // (equal multisets of rows give equal sums).
        Check {
            table: "trace_by_uid",
            keys: vec![("uid", "uid"), ("ts", "ts")],
            time: 1,
            bucket: Bucket::Hour,
            raw_from: format!("FROM {db}.ods_request WHERE caller = '' AND {{range}}"),
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
            time: 0,
            bucket: Bucket::Day,
            raw_from: format!("FROM {db}.ods_request WHERE {{range}}"),
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
/// of either side, over the buckets `window` overlaps (every row if `None`).
pub fn grouped_sql(db: &str, c: &Check, window: Option<Window>) -> String {
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
    let (raw_cond, agg_cond) = match window {
        None => ("1".to_string(), "1".to_string()),
        Some(w) => (w.raw_condition(c.bucket), w.rollup_condition(c)),
    };
    let raw = format!(
        "SELECT {}, {} {} GROUP BY {keys}",
        raw_keys.join(", "),
        vals(&|ms| ms.raw),
        c.raw_from.replace("{range}", &raw_cond)
    );
    let agg = format!(
        "SELECT {}, {} FROM {db}.{} WHERE {agg_cond} GROUP BY {keys}",
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

/// Whole buckets of time: every bucket (hour, or day for [`Bucket::Day`])
/// that overlaps `from_s..to_s` (epoch seconds, end exclusive). The
/// alignment is the server's own (`toStartOfHour`, `toDate`), so it agrees
/// with the views' bucketing in any server time zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub from_s: u32,
    pub to_s: u32,
}

impl Window {
    /// The first bucket's start and the last bucket's end, as SQL DateTimes.
    fn bounds(&self, b: Bucket) -> (String, String) {
        let (lo, hi) = (self.from_s, self.to_s.max(self.from_s + 1) - 1);
        match b {
            Bucket::Hour => (
                format!("toStartOfHour(toDateTime({lo}))"),
                format!("(toStartOfHour(toDateTime({hi})) + 3600)"),
            ),
            Bucket::Day => (
                format!("toDateTime(toDate(toDateTime({lo})))"),
                format!("toDateTime(toDate(toDateTime({hi})) + 1)"),
            ),
        }
    }

    /// The condition on the raw rows' `ts` (the column every view buckets).
    pub fn raw_condition(&self, b: Bucket) -> String {
        let (lo, hi) = self.bounds(b);
        format!("(ts >= {lo} AND ts < {hi})")
    }

    /// The condition on the table's time key.
    pub fn rollup_condition(&self, c: &Check) -> String {
        let (lo, hi) = self.bounds(c.bucket);
        let col = c.keys[c.time].0;
        match c.bucket {
            Bucket::Hour => format!("({col} >= {lo} AND {col} < {hi})"),
            Bucket::Day => format!("({col} >= toDate({lo}) AND {col} < toDate({hi}))"),
        }
    }
}

/// Per bucket of `c`'s table that differs: `(bucket start (epoch s), groups,
/// groups that differ)`, ordered by bucket.
pub fn differing_buckets_sql(db: &str, c: &Check, window: Option<Window>) -> String {
    let k = format!("k_{}", c.time);
    let bucket = match c.bucket {
        Bucket::Hour => format!("toUInt32(toStartOfHour({k}))"),
        Bucket::Day => format!("toUInt32(toDateTime({k}))"),
    };
    format!(
        "SELECT {bucket} AS bucket, count() AS groups, sum(bad) AS bad FROM ({}) \
         GROUP BY bucket HAVING bad > 0 ORDER BY bucket",
        grouped_sql(db, c, window)
    )
}

/// The first differing group (TSV: keys, then raw and rollup value of each
/// measure) of the buckets `window` overlaps; describe it with [`describe`].
pub fn example_sql(db: &str, c: &Check, window: Option<Window>) -> String {
    let ks: Vec<String> = (0..c.keys.len()).map(|i| format!("k_{i}")).collect();
    format!(
        "SELECT * FROM ({}) WHERE bad ORDER BY {} LIMIT 1",
        grouped_sql(db, c, window),
        ks.join(", ")
    )
}

/// `(ts=…, service=…): requests raw 3 vs rollup 2; …` from a row of [`example_sql`].
pub fn describe(c: &Check, tsv_row: &str) -> String {
    let f: Vec<&str> = tsv_row.trim_end_matches('\n').split('\t').collect();
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
    format!("({key}): {vals}")
}

/// The key columns of `c`'s table, for messages.
pub fn key_names(c: &Check) -> String {
    c.keys
        .iter()
        .map(|(col, _)| *col)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Tables named `agg_*`/`trace_*` (not views) that no check covers: a new
/// migration's rollup must get a check here, or reconcile says so.
pub fn unchecked<'a>(present: &'a [String], checks: &[Check]) -> Vec<&'a str> {
    present
        .iter()
        .filter(|t| !checks.iter().any(|c| c.table == t.as_str()))
        .map(String::as_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_check_has_its_time_key_and_a_range_marker() {
        for c in checks("db") {
            assert!(c.time < c.keys.len(), "{}", c.table);
            let col = c.keys[c.time].0;
            assert!(col == "ts" || col == "day", "{}: time key {col}", c.table);
            assert_eq!(c.bucket == Bucket::Day, col == "day", "{}", c.table);
            assert!(c.raw_from.contains("{range}"), "{}", c.table);
            let sql = grouped_sql(
                "db",
                &c,
                Some(Window {
                    from_s: 7200,
                    to_s: 7201,
                }),
            );
            assert!(!sql.contains("{range}"), "{sql}");
        }
    }

    #[test]
    fn windows_cover_whole_buckets() {
        let w = Window {
            from_s: 3_700,
            to_s: 7_200,
        };
        assert_eq!(
            w.raw_condition(Bucket::Hour),
            "(ts >= toStartOfHour(toDateTime(3700)) AND ts < (toStartOfHour(toDateTime(7199)) + 3600))"
        );
        let day = checks("db")
            .into_iter()
            .find(|c| c.bucket == Bucket::Day)
            .unwrap();
        assert_eq!(
            w.rollup_condition(&day),
            "(day >= toDate(toDateTime(toDate(toDateTime(3700)))) AND day < toDate(toDateTime(toDate(toDateTime(7199)) + 1)))"
        );
    }

    #[test]
    fn describes_a_differing_group() {
        let c = &checks("db")[0];
        assert_eq!(
            describe(c, "2026-01-01 00:00:00\tsvc\t/a\t3\t2\t0\t0\t1.5\t1.5\t1\n"),
            "(ts=2026-01-01 00:00:00, service=svc, api=/a): requests raw 3 vs rollup 2; errors raw 0 vs rollup 0; latency_sum raw 1.5 vs rollup 1.5"
        );
    }
}
