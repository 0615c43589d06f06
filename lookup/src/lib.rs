//! Trace lookups on the pipeline's ClickHouse tables (the library behind the
//! `adlog-trace` command).
//!
//! Two point lookups, both fast at hundreds of millions of rows (the tables and
//! the measured costs are in `sql/0008_trace_lookup.sql` and `sql/README.md`):
//!
//! 1. **uid → traces**: `trace_by_uid` (ORDER BY uid, ts; one row per trace,
//!    from its edge line) for a uid and a time range.
//! 2. **trace → lines**: `trace_index` (ORDER BY trace_id) gives each trace's
//!    time range (min/max ts of its lines), then `ods_request` is read with
//!    `ts BETWEEN min AND max AND trace_id = …` — its ORDER BY starts with the
//!    hour and its partitions are days, so only a few granules are read.
//!
//! The lines of a trace are returned as a tree by span (`parent_span_id` →
//! `span_id`), in depth-first order: every parent before its children,
//! siblings by time then span id ([`span_tree`]).
//!
//! The same queries work on a single server and on a cluster: there the
//! tables named here are Distributed tables over the shards' local tables.

pub use common::timerange as range;
pub mod tree;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use clickhouse::Client;
use serde::{Deserialize, Serialize};

pub use range::Range;
pub use tree::{span_tree, TreeLine};

/// How many traces one lines query covers (an OR of per-trace conditions).
const TRACES_PER_QUERY: usize = 32;

/// A trace as `trace_by_uid` has it: its edge line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct TraceHead {
    pub ts_ms: u64,
    pub trace_id: String,
    pub uid: u64,
    pub psid: u32,
    pub service: String,
    pub api: String,
    pub status: u16,
    pub latency_ms: f64,
    pub host: String,
    pub idc: String,
}

/// One log line (service hop) of a trace, from `ods_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct Line {
    pub ts_ms: u64,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub service: String,
    pub caller: String,
    pub api: String,
    pub uid: u64,
    pub psid: u32,
    pub status: u16,
    pub latency_ms: f64,
    pub host: String,
    pub idc: String,
    /// The lines after the first of a multiline event (a stack trace after an
    /// error line): ingest keeps them in the extra `_continuation`; empty for a
    /// one-line event.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub continuation: String,
}

/// A trace's time range and line count, from `trace_index`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct TraceSpan {
    pub trace_id: String,
    /// First and last line time, whole seconds (the `ts` column).
    pub first_s: u32,
    pub last_s: u32,
    pub lines: u64,
}

/// Runs the lookups against `db` (the database users query: the tables or,
/// on a cluster, the Distributed tables).
pub struct Lookup {
    pub ch: Client,
    pub db: String,
    stats: Option<StatsLog>,
}

/// The queries sent, when their costs are wanted ([`Lookup::with_stats`]).
struct StatsLog {
    prefix: String,
    ids: Mutex<Vec<(String, String)>>,
}

/// What ClickHouse reports for one query (`system.query_log`).
#[derive(Debug, Clone, Serialize, Deserialize, clickhouse::Row)]
pub struct QueryStat {
    pub query_id: String,
    pub read_rows: u64,
    pub read_bytes: u64,
    pub result_rows: u64,
    pub query_duration_ms: u64,
}

/// A ClickHouse string literal.
pub fn sql_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            _ => out.push(c),
        }
    }
    out.push('\'');
    out
}

impl Lookup {
    /// A client for the `[clickhouse]` config section (password resolved).
    pub fn new(cfg: &common::config::ClickHouseConfig) -> anyhow::Result<Lookup> {
        let password = cfg.resolved_password()?;
        let mut ch = Client::default()
            .with_url(cfg.url.trim_end_matches('/'))
            .with_user(&cfg.user)
            // ClickHouse 18.16 has no RowBinaryWithNamesAndTypes.
            .with_validation(false);
        if !password.is_empty() {
            ch = ch.with_password(password);
        }
        anyhow::ensure!(
            !cfg.database.is_empty()
                && cfg
                    .database
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "bad database name {:?}",
            cfg.database
        );
        Ok(Lookup {
            ch,
            db: cfg.database.clone(),
            stats: None,
        })
    }

    /// A lookup on `ch` and `db` (no config).
    pub fn with_client(ch: Client, db: &str) -> Lookup {
        Lookup {
            ch,
            db: db.to_string(),
            stats: None,
        }
    }

    /// Log every query (`log_queries = 1`, query ids `adlog-trace/<pid>-<time>/<n>-<what>`)
    /// so that [`Lookup::stats`] can report rows read and time taken. Needs a
    /// user allowed to change settings (`readonly` 0 or 2) and the server's
    /// `query_log` enabled (the default).
    pub fn with_stats(mut self) -> Lookup {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        self.stats = Some(StatsLog {
            prefix: format!("adlog-trace/{}-{t}/", std::process::id()),
            ids: Mutex::new(Vec::new()),
        });
        self
    }

    /// A query (sent verbatim: no `?` binding), logged with `--stats`.
    fn query(&self, what: &str, sql: &str) -> clickhouse::query::Query {
        let q = self.ch.query_raw(sql);
        match &self.stats {
            None => q,
            Some(s) => {
                let mut ids = s.ids.lock().expect("stats lock");
                let id = format!("{}{}-{what}", s.prefix, ids.len() + 1);
                ids.push((what.to_string(), id.clone()));
                q.with_setting("log_queries", "1")
                    .with_setting("query_id", id)
            }
        }
    }

    /// `(what, stats)` of every query sent so far, from `system.query_log`
    /// (which the server flushes every few seconds: waits up to `wait`).
    pub async fn stats(&self, wait: Duration) -> anyhow::Result<Vec<(String, QueryStat)>> {
        let Some(s) = &self.stats else {
            return Ok(Vec::new());
        };
        let ids: Vec<(String, String)> = s.ids.lock().expect("stats lock").clone();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Allowed for admins only; otherwise wait for the periodic flush.
        let _ = self.ch.query_raw("SYSTEM FLUSH LOGS").execute().await;
        let list: Vec<String> = ids.iter().map(|(_, id)| sql_str(id)).collect();
        let sql = format!(
            "SELECT query_id, read_rows, read_bytes, result_rows, query_duration_ms              FROM system.query_log WHERE type = 2 AND query_id IN ({})",
            list.join(", ")
        );
        let start = Instant::now();
        loop {
            let rows: Vec<QueryStat> = self
                .ch
                .query_raw(&sql)
                .fetch_all()
                .await
                .context("reading system.query_log")?;
            if rows.len() >= ids.len() || start.elapsed() >= wait {
                return Ok(ids
                    .into_iter()
                    .filter_map(|(what, id)| {
                        rows.iter()
                            .find(|r| r.query_id == id)
                            .map(|r| (what, r.clone()))
                    })
                    .collect());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The query of lookup 1 (uid → traces), for docs and `--explain`.
    pub fn traces_sql(&self, uid: u64, range: &Range, limit: u64) -> String {
        format!(
            "SELECT ts_ms, trace_id, uid, psid, service, api, status, latency_ms, host, idc \
             FROM {db}.trace_by_uid \
             WHERE uid = {uid} AND ts >= toDateTime({from}) AND ts <= toDateTime({to}) \
             ORDER BY ts_ms, trace_id LIMIT {limit}",
            db = self.db,
            from = range.from_s,
            to = range.to_s,
        )
    }

    /// The traces of `uid` whose edge line is in `range`, oldest first (at most `limit`).
    pub async fn traces_of_uid(
        &self,
        uid: u64,
        range: &Range,
        limit: u64,
    ) -> anyhow::Result<Vec<TraceHead>> {
        self.query("trace_by_uid", &self.traces_sql(uid, range, limit))
            .fetch_all()
            .await
            .with_context(|| format!("reading {}.trace_by_uid", self.db))
    }

    /// The query of lookup 2a (trace ids → time ranges).
    pub fn spans_sql(&self, trace_ids: &[&str], days: Option<&Range>) -> String {
        let ids: Vec<String> = trace_ids.iter().map(|t| sql_str(t)).collect();
        // A trace's lines can straddle midnight: one day of slack each side.
        let day_filter = match days {
            Some(r) => format!(
                " AND day >= toDate(toDateTime({})) - 1 AND day <= toDate(toDateTime({})) + 1",
                r.from_s, r.to_s
            ),
            None => String::new(),
        };
        format!(
            "SELECT trace_id, toUInt32(minMerge(ts_min)) AS first_s, \
             toUInt32(maxMerge(ts_max)) AS last_s, countMerge(lines) AS lines \
             FROM {db}.trace_index WHERE trace_id IN ({ids}){day_filter} \
             GROUP BY trace_id",
            db = self.db,
            ids = ids.join(", "),
        )
    }

    /// The time range of each of `trace_ids` that is known (absent ones are left out).
    pub async fn trace_spans(
        &self,
        trace_ids: &[&str],
        days: Option<&Range>,
    ) -> anyhow::Result<BTreeMap<String, TraceSpan>> {
        let mut out = BTreeMap::new();
        for chunk in trace_ids.chunks(256) {
            let rows: Vec<TraceSpan> = self
                .query("trace_index", &self.spans_sql(chunk, days))
                .fetch_all()
                .await
                .with_context(|| format!("reading {}.trace_index", self.db))?;
            out.extend(rows.into_iter().map(|r| (r.trace_id.clone(), r)));
        }
        Ok(out)
    }

    /// The query of lookup 2b (the lines of traces with known time ranges).
    pub fn lines_sql(&self, spans: &[&TraceSpan]) -> String {
        let conds: Vec<String> = spans
            .iter()
            .map(|s| {
                format!(
                    "(ts >= toDateTime({}) AND ts <= toDateTime({}) AND trace_id = {})",
                    s.first_s,
                    s.last_s,
                    sql_str(&s.trace_id)
                )
            })
            .collect();
        format!(
            "SELECT ts_ms, trace_id, span_id, parent_span_id, service, caller, api, uid, psid, \
             status, latency_ms, host, idc, \
             extra_values[indexOf(extra_keys, '_continuation')] AS continuation \
             FROM {db}.ods_request WHERE {conds}",
            db = self.db,
            conds = conds.join(" OR "),
        )
    }

    /// Every line of each trace in `spans`, by trace id (unordered within a trace).
    pub async fn lines(&self, spans: &[&TraceSpan]) -> anyhow::Result<BTreeMap<String, Vec<Line>>> {
        let mut out: BTreeMap<String, Vec<Line>> = BTreeMap::new();
        for chunk in spans.chunks(TRACES_PER_QUERY) {
            let rows: Vec<Line> = self
                .query("ods_request", &self.lines_sql(chunk))
                .fetch_all()
                .await
                .with_context(|| format!("reading {}.ods_request", self.db))?;
            for l in rows {
                out.entry(l.trace_id.clone()).or_default().push(l);
            }
        }
        Ok(out)
    }
}

/// A trace with its lines in tree order, as printed and as `--json` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TraceReport {
    pub trace_id: String,
    /// First and last line time (`YYYY-MM-DD HH:MM:SS.mmm`, UTC; whole
    /// seconds from `trace_index` if no line was found).
    pub first: String,
    pub last: String,
    /// Lines counted by `trace_index` (may briefly exceed `lines.len()` while
    /// rows are being inserted).
    pub indexed_lines: u64,
    pub lines: Vec<TreeLine>,
}

/// One trace of a uid lookup.
#[derive(Debug, Clone, Serialize)]
pub struct UidTrace {
    pub ts: String,
    #[serde(flatten)]
    pub head: TraceHead,
    /// With `--lines`: the trace's lines in tree order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines: Option<Vec<TreeLine>>,
}

/// The answer to `adlog-trace uid`.
#[derive(Debug, Clone, Serialize)]
pub struct UidReport {
    pub uid: u64,
    pub from: String,
    pub to: String,
    /// True when `limit` cut the list.
    pub truncated: bool,
    pub traces: Vec<UidTrace>,
}

/// `YYYY-MM-DD HH:MM:SS.mmm` (UTC).
pub fn fmt_ms(ms: u64) -> String {
    let mut s = String::with_capacity(23);
    schemas::time::format_ms(ms as i64, &mut s);
    s
}

/// Lookup 1, and with `with_lines` lookup 2 for each trace found.
pub async fn uid_report(
    lk: &Lookup,
    uid: u64,
    range: &Range,
    limit: u64,
    with_lines: bool,
) -> anyhow::Result<UidReport> {
    let heads = lk.traces_of_uid(uid, range, limit + 1).await?;
    let truncated = heads.len() as u64 > limit;
    let heads: Vec<TraceHead> = heads.into_iter().take(limit as usize).collect();
    let mut lines_by_trace = BTreeMap::new();
    if with_lines && !heads.is_empty() {
        let ids: Vec<&str> = heads.iter().map(|h| h.trace_id.as_str()).collect();
        let spans = lk.trace_spans(&ids, Some(range)).await?;
        let spans: Vec<&TraceSpan> = spans.values().collect();
        lines_by_trace = lk.lines(&spans).await?;
    }
    let traces = heads
        .into_iter()
        .map(|head| {
            let lines = with_lines.then(|| {
                span_tree(
                    lines_by_trace
                        .get(&head.trace_id)
                        .cloned()
                        .unwrap_or_default(),
                )
            });
            UidTrace {
                ts: fmt_ms(head.ts_ms),
                head,
                lines,
            }
        })
        .collect();
    Ok(UidReport {
        uid,
        from: range.from_text(),
        to: range.to_text(),
        truncated,
        traces,
    })
}

/// Lookup 2 for one trace id; `None` when the trace is unknown (in `days`).
pub async fn trace_report(
    lk: &Lookup,
    trace_id: &str,
    days: Option<&Range>,
) -> anyhow::Result<Option<TraceReport>> {
    let spans = lk.trace_spans(&[trace_id], days).await?;
    let Some(span) = spans.get(trace_id) else {
        return Ok(None);
    };
    let mut lines = lk.lines(&[span]).await?;
    let lines = lines.remove(trace_id).unwrap_or_default();
    let first = lines.iter().map(|l| l.ts_ms).min();
    let last = lines.iter().map(|l| l.ts_ms).max();
    Ok(Some(TraceReport {
        trace_id: trace_id.to_string(),
        first: fmt_ms(first.unwrap_or(u64::from(span.first_s) * 1000)),
        last: fmt_ms(last.unwrap_or(u64::from(span.last_s) * 1000)),
        indexed_lines: span.lines,
        lines: span_tree(lines),
    }))
}

/// Text form of one line of a tree: indented by depth, time relative to `t0_ms`;
/// a multiline event's continuation (its stack trace) follows on its own
/// lines, indented under it, so an error is read with its cause.
pub fn format_tree_line(l: &TreeLine, t0_ms: u64) -> String {
    let rel = l.line.ts_ms as i64 - t0_ms as i64;
    let mut text = format!(
        "{:indent$}{sign}{:.3}s  {}  {}  {}  {:.1} ms  {}  span={}{}",
        "",
        (rel.unsigned_abs() as f64) / 1000.0,
        l.line.service,
        l.line.api,
        l.line.status,
        l.line.latency_ms,
        l.line.host,
        l.line.span_id,
        if l.orphan {
            format!(" (parent {} not found)", l.line.parent_span_id)
        } else {
            String::new()
        },
        indent = 2 + 2 * l.depth,
        sign = if rel < 0 { "-" } else { "+" },
    );
    for cont in l.line.continuation.lines() {
        let _ = write!(text, "\n{:w$}{cont}", "", w = 6 + 2 * l.depth);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_literals_are_escaped() {
        assert_eq!(sql_str("ab"), "'ab'");
        assert_eq!(sql_str("a'b\\c"), "'a\\'b\\\\c'");
    }

    #[test]
    fn queries_name_the_lookup_tables() {
        let lk = Lookup::with_client(Client::default(), "adlog");
        let r = Range {
            from_s: 100,
            to_s: 200,
        };
        let q = lk.traces_sql(7, &r, 10);
        assert!(q.contains("FROM adlog.trace_by_uid WHERE uid = 7 AND ts >= toDateTime(100) AND ts <= toDateTime(200)"), "{q}");
        let q = lk.spans_sql(&["t1", "t'2"], None);
        assert!(q.contains("trace_id IN ('t1', 't\\'2') GROUP BY"), "{q}");
        let s = TraceSpan {
            trace_id: "t1".into(),
            first_s: 5,
            last_s: 6,
            lines: 3,
        };
        let q = lk.lines_sql(&[&s, &s]);
        assert!(
            q.contains("extra_values[indexOf(extra_keys, '_continuation')] AS continuation"),
            "{q}"
        );
        assert!(q.ends_with("WHERE (ts >= toDateTime(5) AND ts <= toDateTime(6) AND trace_id = 't1') OR (ts >= toDateTime(5) AND ts <= toDateTime(6) AND trace_id = 't1')"), "{q}");
    }

    #[test]
    fn a_stack_trace_is_printed_under_its_line() {
        let line = |continuation: &str| TreeLine {
            depth: 1,
            orphan: false,
            ts: fmt_ms(1_500),
            line: Line {
                ts_ms: 1_500,
                trace_id: "t".into(),
                span_id: "s2".into(),
                parent_span_id: "s1".into(),
                service: "ad-bidder".into(),
                caller: "ad-gateway".into(),
                api: "/bid".into(),
                uid: 1,
                psid: 2,
                status: 500,
                latency_ms: 12.5,
                host: "ad-web-017".into(),
                idc: "yf".into(),
                continuation: continuation.into(),
            },
        };
        let head = "    +0.500s  ad-bidder  /bid  500  12.5 ms  ad-web-017  span=s2";
        assert_eq!(format_tree_line(&line(""), 1_000), head);
        assert_eq!(
            format_tree_line(
                &line("java.lang.IllegalStateException: x\n\tat A.b(A.java:1)"),
                1_000
            ),
            format!(
                "{head}\n        java.lang.IllegalStateException: x\n        \tat A.b(A.java:1)"
            )
        );
    }
}
