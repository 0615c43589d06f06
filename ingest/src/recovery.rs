//! Exactly-once across crashes: finding what ClickHouse already stored.
//!
//! Every raw table has a materialized view that writes one `ingest_ledger` row
//! per inserted block: (table, topic, partition, min/max offset, rows). The view
//! runs inside the same server-side INSERT, so a worker killed at any moment
//! leaves either the rows and their ledger entry, or neither.
//!
//! When a worker (re)gains a partition it resumes from the committed offset,
//! but batches after that offset may already be stored (inserted, not yet
//! committed). Before reading the ledger it waits until no INSERT of that
//! partition is still running on the server (query ids are
//! `adlog-ingest/<topic>/<partition>/...`), so an insert that a dead worker had
//! fully sent cannot land after the check. Messages whose offset falls in a
//! stored range of their destination table are then skipped.

use std::time::{Duration, Instant};

use anyhow::Context;
use clickhouse::Client;

use crate::table::Table;

/// The `query_id` prefix of every INSERT for one Kafka partition.
pub fn query_id_prefix(topic: &str, partition: i32) -> String {
    format!("adlog-ingest/{topic}/{partition}/")
}

/// Offset ranges of one partition already stored, per table.
#[derive(Debug, Default, Clone)]
pub struct Stored {
    ranges: Vec<(Table, u64, u64)>,
}

impl Stored {
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// True when `offset` routed to `table` is already in ClickHouse.
    pub fn contains(&self, table: Table, offset: i64) -> bool {
        let o = offset as u64;
        self.ranges
            .iter()
            .any(|&(t, lo, hi)| t == table && lo <= o && o <= hi)
    }

    /// Forgets ranges entirely below `offset` (they can no longer match).
    pub fn forget_below(&mut self, offset: i64) {
        if !self.ranges.is_empty() {
            self.ranges.retain(|&(_, _, hi)| hi >= offset as u64);
        }
    }
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct LedgerRow {
    tbl: String,
    min_offset: u64,
    max_offset: u64,
}

/// Waits (up to `max_wait`) until no INSERT whose query id starts with `prefix`
/// is running on the server (`processes`: `system.processes`, or on a cluster
/// the cluster-wide listing of [`crate::clickhouse::processes_source`]).
pub async fn wait_no_running_inserts(
    ch: &Client,
    processes: &str,
    prefix: &str,
    max_wait: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let n: u64 = ch
            .query(&format!(
                "SELECT count() FROM {processes} WHERE startsWith(query_id, ?)"
            ))
            .bind(prefix)
            .fetch_one()
            .await
            .context("querying system.processes")?;
        if n == 0 {
            return Ok(());
        }
        if start.elapsed() > max_wait {
            anyhow::bail!("{n} inserts with query id {prefix}* still running after {max_wait:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The stored ranges of `topic`/`partition` that end at or after `from_offset`.
pub async fn stored_since(
    ch: &Client,
    db: &str,
    topic: &str,
    partition: i32,
    from_offset: i64,
) -> anyhow::Result<Stored> {
    let rows: Vec<LedgerRow> = ch
        .query(&format!(
            "SELECT tbl, min_offset, max_offset FROM {db}.ingest_ledger \
             WHERE topic = ? AND partition = ? AND max_offset >= ?"
        ))
        .bind(topic)
        .bind(partition as u32)
        .bind(from_offset.max(0) as u64)
        .fetch_all()
        .await
        .context("reading ingest_ledger")?;
    let ranges = rows
        .into_iter()
        .filter_map(|r| {
            Table::ALL
                .into_iter()
                .find(|t| t.name() == r.tbl)
                .map(|t| (t, r.min_offset, r.max_offset))
        })
        .collect();
    Ok(Stored { ranges })
}

/// Whether any row of `table` for offsets `first..=last` is already stored
/// (used after an INSERT whose outcome is unknown, e.g. a timeout).
pub async fn table_has_range(
    ch: &Client,
    db: &str,
    table: Table,
    topic: &str,
    partition: i32,
    first: i64,
    last: i64,
) -> anyhow::Result<bool> {
    let n: u64 = ch
        .query(&format!(
            "SELECT count() FROM {db}.ingest_ledger WHERE tbl = ? AND topic = ? AND partition = ? \
             AND max_offset >= ? AND min_offset <= ?"
        ))
        .bind(table.name())
        .bind(topic)
        .bind(partition as u32)
        .bind(first.max(0) as u64)
        .bind(last.max(0) as u64)
        .fetch_one()
        .await
        .context("reading ingest_ledger")?;
    Ok(n > 0)
}

/// Rows of `table` for offsets `first..=last` of `topic`/`partition` whose
/// `ts` lies in `ts_ms` (the batch's range: a primary-key and partition
/// filter, so this reads a few granules, not the table). The ledger row of an
/// INSERT is written by a materialized view after the table's part: a server
/// that dies in between leaves rows without a ledger entry, which only this
/// finds.
#[allow(clippy::too_many_arguments)]
pub async fn table_rows_in_range(
    ch: &Client,
    db: &str,
    table: Table,
    topic: &str,
    partition: i32,
    first: i64,
    last: i64,
    ts_ms: (i64, i64),
) -> anyhow::Result<u64> {
    let n: u64 = ch
        .query(&format!(
            "SELECT count() FROM {db}.{} WHERE ts >= toDateTime(?) AND ts <= toDateTime(?) \
             AND _topic = ? AND _partition = ? AND _offset >= ? AND _offset <= ?",
            table.name()
        ))
        .bind(ts_ms.0.div_euclid(1000).max(0) as u64)
        .bind(ts_ms.1.div_euclid(1000).max(0) as u64)
        .bind(topic)
        .bind(partition as u32)
        .bind(first.max(0) as u64)
        .bind(last.max(0) as u64)
        .fetch_one()
        .await
        .with_context(|| format!("reading {db}.{}", table.name()))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_is_per_table_and_inclusive() {
        let mut s = Stored {
            ranges: vec![(Table::Request, 10, 20), (Table::DeadLetter, 15, 15)],
        };
        assert!(s.contains(Table::Request, 10));
        assert!(s.contains(Table::Request, 20));
        assert!(!s.contains(Table::Request, 21));
        assert!(!s.contains(Table::Exposure, 12));
        assert!(s.contains(Table::DeadLetter, 15));
        s.forget_below(16);
        assert_eq!(s.len(), 1);
        s.forget_below(21);
        assert!(s.is_empty());
    }
}
