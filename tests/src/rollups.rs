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
//! compared and what is not, per table, is in `ingest::reconcile::checks`
//! (the same checks `ingest reconcile` runs), over every row here.

use anyhow::Context;
use ingest::reconcile::{checks, describe, example_sql, grouped_sql, key_names, unchecked, Check};

use crate::reliability::{ch_query, ch_u64};

/// The mismatch line for `c`, or None when every group agrees.
fn compare(ch_url: &str, db: &str, c: &Check) -> anyhow::Result<Option<String>> {
    let grouped = grouped_sql(db, c, None);
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
    let example = ch_query(ch_url, &format!("{} FORMAT TSV", example_sql(db, c, None)))?;
    Ok(Some(format!(
        "{}: {bad} of {groups} groups ({}) differ from the raw rows; e.g. {}",
        c.table,
        key_names(c),
        describe(c, &example)
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
    for t in unchecked(&present, &checks) {
        out.push(format!(
            "{t}: a rollup/trace table with no check in ingest/src/reconcile/checks.rs"
        ));
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

/// Runs `ingest reconcile ARGS` against `cfg`'s database: (exit code, output).
pub fn run_reconcile(cfg: &common::Config, args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(crate::bin("ingest"))
        .arg("reconcile")
        .args(args)
        .envs(crate::env_of(cfg))
        .output()
        .expect("running ingest reconcile");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// The tables an `ingest reconcile` report says differ (its `<table> <bucket>:
/// … differ; e.g. …` lines), once each.
pub fn differing_tables(report: &str) -> Vec<String> {
    let mut out: Vec<String> = report
        .lines()
        .filter(|l| l.contains(" groups (") && l.contains(" differ; e.g."))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    out.dedup();
    out
}

/// `ingest reconcile --rebuild --min-age 0` over the last day of `cfg`'s
/// database: after a ClickHouse server was stopped mid-INSERT (its raw part
/// written, some views not: ARCHITECTURE.md, invariant 3, limits) this is the
/// documented repair. Panics unless it ends with every table equal to the raw
/// rows; returns its report.
pub fn reconcile_rebuild(cfg: &common::Config) -> String {
    let (code, text) = run_reconcile(cfg, &["--since", "1d", "--rebuild", "--min-age", "0"]);
    assert_eq!(code, Some(0), "ingest reconcile --rebuild:\n{text}");
    text
}
