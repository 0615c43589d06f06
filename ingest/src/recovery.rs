//! Exactly-once across crashes: finding what ClickHouse already stored.
//!
//! Every raw table has a materialized view that writes one `ingest_ledger` row
//! per inserted block: (table, topic, partition, min/max offset, rows). The view
//! runs inside the same server-side INSERT, so a worker killed at any moment
//! leaves either the rows and their ledger entry, or neither.
//!
//! When a worker (re)gains a partition it resumes from the committed offset,
//! but batches after that offset may already be stored (inserted, not yet
//! committed). Before reading the ledger it waits until no INSERT holding
//! rows of that partition is still running on the server (an INSERT's query
//! id lists its partitions, [`Running::Partition`]), so an insert that a dead
//! worker had fully sent cannot land after the check. Messages whose offset falls in a
//! stored range of their destination table are then skipped.

use std::time::{Duration, Instant};

use anyhow::Context;
use clickhouse::Client;

use crate::table::Table;

/// Every INSERT of the worker has a query id starting with this.
pub const QUERY_ID_PREFIX: &str = "adlog-ingest/";

/// The query id of an INSERT attempt: `adlog-ingest/<table>/<who>/<attempt>/`,
/// then every partition it holds as `<topic>:<partition>/`, which a new
/// owner's recovery looks for ([`Running::Partition`]). `<who>` names the
/// process and the block; [`Running::Prefix`] of the id up to it matches
/// every attempt of that block.
pub fn insert_query_id<'a>(
    table: Table,
    who: &str,
    attempt: u32,
    parts: impl IntoIterator<Item = (&'a str, i32)>,
) -> String {
    let mut id = format!("{}{attempt}/", insert_query_prefix(table, who));
    for (topic, partition) in parts {
        id.push_str(topic);
        id.push(':');
        id.push_str(&partition.to_string());
        id.push('/');
    }
    id
}

/// The part of [`insert_query_id`] that every attempt of one block shares.
pub fn insert_query_prefix(table: Table, who: &str) -> String {
    format!("{QUERY_ID_PREFIX}{}/{who}/", table.name())
}

/// Which running INSERTs to wait for.
#[derive(Debug, Clone)]
pub enum Running {
    /// Those whose query id starts with this (one block's attempts).
    Prefix(String),
    /// Those holding rows of this Kafka partition: an INSERT's query id lists
    /// every partition it holds as `/<topic>:<partition>/` (`Sink::query_id`).
    Partition { topic: String, partition: i32 },
}

impl Running {
    /// The SQL condition on `query_id` and `initial_query_id` (on a cluster a
    /// shard's part of a distributed INSERT runs under the entry node's id).
    fn condition(&self) -> (String, String) {
        match self {
            Running::Prefix(p) => (
                "(startsWith(query_id, ?) OR startsWith(initial_query_id, ?))".into(),
                p.clone(),
            ),
            Running::Partition { topic, partition } => (
                format!(
                    "((startsWith(query_id, '{QUERY_ID_PREFIX}') AND position(query_id, ?) > 0) \
                     OR (startsWith(initial_query_id, '{QUERY_ID_PREFIX}') AND position(initial_query_id, ?) > 0))"
                ),
                format!("/{topic}:{partition}/"),
            ),
        }
    }
}

/// One ledger row: offsets `lo..=hi` of one partition stored in `table` by one
/// INSERT at `ingested_at` (seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Range {
    table: Table,
    lo: u64,
    hi: u64,
    ingested_at: u32,
    /// A message of this very partition incarnation was found stored in
    /// ClickHouse under this range (see [`Stored::check`]).
    verified: bool,
}

/// What to do with a message, given the stored ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Not stored: write it.
    Store,
    /// In a range already verified for this incarnation: skip it.
    Skip,
    /// Only in a range not yet verified: look the message up in ClickHouse
    /// ([`row_stored`]), then [`Stored::verified`] or [`Stored::stale`].
    Verify(usize),
}

/// Offset ranges of one partition already stored, per table.
///
/// Offsets alone do not identify a message: a topic deleted and recreated, or
/// a broker that lost its log, hands out offsets 0.. again, and the ledger
/// still holds the earlier incarnation's ranges. Skipping on those would drop
/// new data. So a range is trusted only after one message it claims was found
/// stored with the same Kafka timestamp and event time ([`row_stored`]); a
/// range whose message is not there is stale, and so is every range ingested
/// before it. A message in a verified range is skipped without a lookup, so
/// recovery costs one point query per stored range, not per message.
#[derive(Debug, Default, Clone)]
pub struct Stored {
    ranges: Vec<Range>,
}

impl Stored {
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether `offset` routed to `table` is stored (as far as the ledger can
    /// tell without a lookup).
    pub fn check(&self, table: Table, offset: i64) -> Check {
        let o = offset as u64;
        let mut newest: Option<usize> = None;
        for (i, r) in self.ranges.iter().enumerate() {
            if r.table != table || o < r.lo || o > r.hi {
                continue;
            }
            if r.verified {
                return Check::Skip;
            }
            if newest.is_none_or(|n| self.ranges[n].ingested_at < r.ingested_at) {
                newest = Some(i);
            }
        }
        newest.map_or(Check::Store, Check::Verify)
    }

    /// The range `i` (from [`Check::Verify`]) holds this incarnation's data.
    pub fn verified(&mut self, i: usize) {
        self.ranges[i].verified = true;
    }

    /// The range `i` belongs to an earlier incarnation of the partition:
    /// forgets it and every unverified range ingested no later than it.
    /// Returns how many ranges were dropped.
    pub fn stale(&mut self, i: usize) -> usize {
        let at = self.ranges[i].ingested_at;
        let before = self.ranges.len();
        self.ranges.swap_remove(i);
        self.ranges.retain(|r| r.verified || r.ingested_at > at);
        before - self.ranges.len()
    }

    /// The table and ingestion time (seconds) of range `i`.
    pub fn range(&self, i: usize) -> (Table, u32) {
        (self.ranges[i].table, self.ranges[i].ingested_at)
    }

    /// Forgets ranges entirely below `offset` (they can no longer match).
    pub fn forget_below(&mut self, offset: i64) {
        if !self.ranges.is_empty() {
            self.ranges.retain(|r| r.hi >= offset as u64);
        }
    }
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct LedgerRow {
    tbl: String,
    min_offset: u64,
    max_offset: u64,
    ingested_at: u32,
}

/// Waits (up to `max_wait`) until no INSERT `which` selects is running on the server (`processes`: `system.processes`, or on a cluster
/// the cluster-wide listing of [`crate::clickhouse::processes_source`]), seen
/// twice [`SETTLE`] apart.
///
/// Why twice: the previous owner may have sent an INSERT the server has not
/// registered yet — a server that was frozen (SIGSTOP, a long GC, a stalled
/// VM) holds it unread in a socket while it answers this query first (seen:
/// 15 rows stored twice after ClickHouse resumed mid-rebalance). A server that
/// answers at all reads its pending requests within milliseconds, so an
/// INSERT sent before this check is listed by the second look. The previous
/// owner starts no INSERT once revoked (`Sink::write`).
pub async fn wait_no_running_inserts(
    ch: &Client,
    processes: &str,
    which: &Running,
    max_wait: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut clear_since: Option<Instant> = None;
    let (cond, arg) = which.condition();
    loop {
        let n: u64 = ch
            .query(&format!("SELECT count() FROM {processes} WHERE {cond}"))
            .bind(&arg)
            .bind(&arg)
            .fetch_one()
            .await
            .context("querying system.processes")?;
        if n == 0 {
            match clear_since {
                Some(t) if t.elapsed() >= SETTLE => return Ok(()),
                Some(_) => {}
                None => clear_since = Some(Instant::now()),
            }
        } else {
            clear_since = None;
            if start.elapsed() > max_wait {
                anyhow::bail!("{n} inserts ({which:?}) still running after {max_wait:?}");
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// See [`wait_no_running_inserts`].
pub const SETTLE: Duration = Duration::from_millis(1000);

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
            "SELECT tbl, min_offset, max_offset, toUInt32(ingested_at) AS ingested_at FROM {db}.ingest_ledger \
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
                .map(|table| Range {
                    table,
                    lo: r.min_offset,
                    hi: r.max_offset,
                    ingested_at: r.ingested_at,
                    verified: false,
                })
        })
        .collect();
    Ok(Stored { ranges })
}

/// Whether the message at `offset` of `topic`/`partition` with Kafka
/// timestamp `kafka_ts_ms` is stored in `table` with `ts` within `ts_secs`
/// (inclusive; a raw table's row has the event time, a dead letter the time
/// it was written): a primary-key lookup of a few granules.
#[allow(clippy::too_many_arguments)]
pub async fn row_stored(
    ch: &Client,
    db: &str,
    table: Table,
    topic: &str,
    partition: i32,
    offset: i64,
    kafka_ts_ms: i64,
    ts_secs: (u32, u32),
) -> anyhow::Result<bool> {
    let n: u64 = ch
        .query(&format!(
            "SELECT count() FROM {db}.{} WHERE ts >= toDateTime(?) AND ts <= toDateTime(?) \
             AND _topic = ? AND _partition = ? AND _offset = ? AND _kafka_ts_ms = ?",
            table.name()
        ))
        .bind(ts_secs.0)
        .bind(ts_secs.1)
        .bind(topic)
        .bind(partition as u32)
        .bind(offset.max(0) as u64)
        .bind(kafka_ts_ms.max(0) as u64)
        .fetch_one()
        .await
        .with_context(|| format!("reading {db}.{}", table.name()))?;
    Ok(n > 0)
}

/// (offset, Kafka timestamp) of every row of `table` stored for offsets
/// `offsets` (inclusive) of `topic`/`partition` with `ts` within `ts_secs`
/// (a primary-key and partition filter: a few granules, not the table).
/// Used to settle an INSERT whose outcome is unknown, row by row.
pub async fn stored_rows(
    ch: &Client,
    db: &str,
    table: Table,
    topic: &str,
    partition: i32,
    offsets: (i64, i64),
    ts_secs: (u32, u32),
) -> anyhow::Result<Vec<(i64, i64)>> {
    let rows: Vec<(u64, u64)> = ch
        .query(&format!(
            "SELECT _offset, _kafka_ts_ms FROM {db}.{} WHERE ts >= toDateTime(?) AND ts <= toDateTime(?) \
             AND _topic = ? AND _partition = ? AND _offset >= ? AND _offset <= ?",
            table.name()
        ))
        .bind(ts_secs.0)
        .bind(ts_secs.1)
        .bind(topic)
        .bind(partition as u32)
        .bind(offsets.0.max(0) as u64)
        .bind(offsets.1.max(0) as u64)
        .fetch_all()
        .await
        .with_context(|| format!("reading {db}.{}", table.name()))?;
    Ok(rows
        .into_iter()
        .map(|(o, k)| (o as i64, k as i64))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(table: Table, lo: u64, hi: u64, ingested_at: u32) -> Range {
        Range {
            table,
            lo,
            hi,
            ingested_at,
            verified: false,
        }
    }

    #[test]
    fn check_is_per_table_and_inclusive() {
        let mut s = Stored {
            ranges: vec![
                range(Table::Request, 10, 20, 100),
                range(Table::DeadLetter, 15, 15, 100),
            ],
        };
        assert_eq!(s.check(Table::Request, 10), Check::Verify(0));
        assert_eq!(s.check(Table::Request, 20), Check::Verify(0));
        assert_eq!(s.check(Table::Request, 21), Check::Store);
        assert_eq!(s.check(Table::Exposure, 12), Check::Store);
        assert_eq!(s.check(Table::DeadLetter, 15), Check::Verify(1));
        s.verified(0);
        assert_eq!(s.check(Table::Request, 11), Check::Skip);
        s.forget_below(16);
        assert_eq!(s.len(), 1);
        s.forget_below(21);
        assert!(s.is_empty());
    }

    #[test]
    fn a_stale_range_drops_older_unverified_ones_only() {
        // Offsets 0..=99 of an earlier incarnation (ingested at 100 and 110),
        // then 0..=49 of the current one (ingested at 500, verified).
        let mut s = Stored {
            ranges: vec![
                range(Table::Request, 0, 49, 100),
                range(Table::Request, 50, 99, 110),
                range(Table::Request, 0, 49, 500),
                range(Table::Exposure, 0, 99, 520),
            ],
        };
        // The newest unverified range holding the offset is asked first.
        assert_eq!(s.check(Table::Request, 10), Check::Verify(2));
        s.verified(2);
        assert_eq!(s.check(Table::Request, 10), Check::Skip);
        let Check::Verify(i) = s.check(Table::Request, 60) else {
            panic!("60 is only in the old range")
        };
        assert_eq!(s.range(i), (Table::Request, 110));
        assert_eq!(s.stale(i), 2, "the range and the older one");
        assert_eq!(s.check(Table::Request, 60), Check::Store);
        assert_eq!(s.check(Table::Request, 10), Check::Skip);
        // A newer unverified range survives.
        assert!(matches!(s.check(Table::Exposure, 5), Check::Verify(_)));
    }
}
