//! Writing one block: a RowBinary INSERT into its table, or the dead letters
//! to the dead-letter topic, retried with backoff until acknowledged.
//!
//! A retry sends exactly the rows not yet stored: after an ambiguous failure
//! (a timeout, a dropped response, a server that died mid-INSERT) the rows
//! themselves are looked up by (partition, offset, Kafka timestamp), so an
//! INSERT that stored some of its parts (one per day partition, one per
//! shard) is completed, never repeated. Rows of a partition this worker lost
//! are left out of every attempt that starts after the loss.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clickhouse::Client;
use common::backoff::Backoff;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use tracing::{info, warn};

use crate::batching::{Block, Dest};
use crate::metrics::Metrics;
use crate::recovery::{self, Running};
use crate::rowbinary::datetime_secs;
use crate::table::Table;

/// Why a block was given up (its partitions' offsets then stay below it, so
/// whoever reads them next writes it).
#[derive(Debug, PartialEq, Eq)]
pub enum Abandoned {
    /// Shutting down and the grace period ran out.
    Shutdown,
}

pub struct Sink {
    pub ch: Client,
    pub db: String,
    /// Where running INSERTs are listed (see [`crate::clickhouse::processes_source`]).
    pub processes: String,
    pub dlq: FutureProducer,
    pub dlq_topic: String,
    pub metrics: Metrics,
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// Set on SIGTERM; blocks being written still get `shutdown_grace` to finish.
    pub shutdown: Arc<AtomicBool>,
    pub shutdown_grace: Duration,
    /// Client-side deadline of one INSERT: a frozen server fails it instead of
    /// holding the block (and a revoked partition's rows) forever.
    pub insert_timeout: Duration,
    /// Names this process in query ids (`<pid>-<random>`).
    pub tag: String,
    pub freshness_target_ms: u64,
}

/// What writing a block took.
#[derive(Debug)]
pub struct Written {
    /// When the first attempt was sent, and when the last was acknowledged.
    pub sent_at: Instant,
    pub acked_at: Instant,
}

impl Sink {
    /// Writes `block` fully (every row of every partition still owned), or
    /// gives up only when the shutdown grace period is over. Releases the
    /// block from each written partition's outstanding list.
    pub async fn write(&self, block: &mut Block) -> Result<Written, Abandoned> {
        block.freeze();
        let n = block.rows.len();
        let mut stored = vec![false; n];
        let mut left_out = vec![false; block.parts.len()];
        let mut backoff = Backoff::new(self.retry_min, self.retry_max);
        let mut shutdown_seen: Option<Instant> = None;
        let mut attempt = 0u32;
        let mut sent_at = None;
        loop {
            // Mark the partitions this attempt writes; a revoked one is left
            // out from now on (its next owner writes its rows).
            let mut writing = Vec::with_capacity(block.parts.len());
            for (i, p) in block.parts.iter().enumerate() {
                if !left_out[i] {
                    if p.shared.start_writing() {
                        writing.push(i);
                    } else {
                        left_out[i] = true;
                    }
                }
            }
            let keep: Vec<usize> = (0..n)
                .filter(|&r| !stored[r] && !left_out[block.rows[r].part as usize])
                .collect();
            if keep.is_empty() {
                stop_writing(block, &writing);
                break;
            }
            sent_at.get_or_insert_with(Instant::now);
            let started = Instant::now();
            let res = match block.dest {
                Dest::Table(t) => self.insert(block, t, &keep, &writing, attempt).await,
                Dest::DeadLetterTopic => self.send_letters(block, &keep, &mut stored).await,
            };
            stop_writing(block, &writing);
            let label = block.dest.name();
            match res {
                Ok(()) => {
                    self.metrics
                        .insert_seconds
                        .with_label_values(&[label])
                        .observe(started.elapsed().as_secs_f64());
                    for r in keep {
                        stored[r] = true;
                    }
                    if attempt > 0 {
                        info!(
                            dest = label,
                            block = block.id,
                            attempts = attempt + 1,
                            "block written after retries"
                        );
                    }
                    break;
                }
                Err(e) => {
                    self.metrics.insert_errors.with_label_values(&[label]).inc();
                    let delay = backoff.next_delay();
                    warn!(dest = label, block = block.id, rows = keep.len(), attempt,
                          error = %format!("{e:#}"), retry_in_ms = delay.as_millis() as u64,
                          "block write failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
            attempt += 1;
            // Before retrying an INSERT, find out which rows the failed
            // attempt stored anyway, and repeat only once that is known:
            // retrying after a failed check stored rows twice when ClickHouse
            // came back between the check and the retry.
            loop {
                if self.shutdown.load(Ordering::Acquire) {
                    let since = *shutdown_seen.get_or_insert_with(Instant::now);
                    if since.elapsed() > self.shutdown_grace {
                        return Err(Abandoned::Shutdown);
                    }
                }
                let Dest::Table(t) = block.dest else { break };
                match self.settle(block, t, &mut stored, &left_out).await {
                    Ok(()) => break,
                    Err(e) => {
                        let delay = backoff.next_delay();
                        warn!(table = t.name(), block = block.id, error = %format!("{e:#}"),
                              retry_in_ms = delay.as_millis() as u64,
                              "could not check what a failed insert stored; checking again");
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
        let acked_at = Instant::now();
        for (i, p) in block.parts.iter().enumerate() {
            if !left_out[i] {
                p.shared.release(block.id);
            }
        }
        if let Dest::Table(t) = block.dest {
            self.observe_freshness(block, t, &stored);
        }
        Ok(Written {
            sent_at: sent_at.unwrap_or(acked_at),
            acked_at,
        })
    }

    /// Freshness of every row this block stored: Kafka append → acknowledged.
    fn observe_freshness(&self, block: &Block, t: Table, stored: &[bool]) {
        let now = crate::worker::now_ms();
        let m = &self.metrics;
        let h = m.freshness_seconds.local();
        let (mut n, mut within) = (0u64, 0u64);
        for (r, _) in block.rows.iter().zip(stored).filter(|(_, s)| **s) {
            let lag_ms = (now - r.kafka_ts_ms).max(0);
            h.observe(lag_ms as f64 / 1000.0);
            n += 1;
            within += (lag_ms as u64 <= self.freshness_target_ms) as u64;
        }
        h.flush();
        m.freshness_events.inc_by(n);
        m.freshness_within_target.inc_by(within);
        m.inserted.with_label_values(&[t.name()]).inc_by(n);
        m.batch_rows.observe(n as f64);
        m.batch_bytes.observe(block.bytes() as f64);
    }

    /// The query id of one attempt ([`recovery::insert_query_id`]).
    fn query_id(&self, block: &Block, t: Table, parts: &[usize], attempt: u32) -> String {
        recovery::insert_query_id(
            t,
            &self.who(block),
            attempt,
            parts
                .iter()
                .map(|&i| (&*block.parts[i].topic, block.parts[i].partition)),
        )
    }

    fn block_prefix(&self, block: &Block, t: Table) -> String {
        recovery::insert_query_prefix(t, &self.who(block))
    }

    /// This process and block, in query ids.
    fn who(&self, block: &Block) -> String {
        format!("{}-{}", self.tag, block.id)
    }

    async fn insert(
        &self,
        block: &Block,
        t: Table,
        keep: &[usize],
        parts: &[usize],
        attempt: u32,
    ) -> anyhow::Result<()> {
        let sql = format!(
            "INSERT INTO {}.{} ({}) FORMAT RowBinary",
            self.db,
            t.name(),
            t.columns()
        );
        let body = if keep.len() == block.rows.len() {
            block.body(|_| true)
        } else {
            let mut mask = vec![false; block.rows.len()];
            for &r in keep {
                mask[r] = true;
            }
            block.body(|r| mask[r])
        };
        let mut ins = self
            .ch
            .insert_formatted_with(sql)
            .with_setting("query_id", self.query_id(block, t, parts, attempt))
            .with_timeouts(Some(self.insert_timeout), Some(self.insert_timeout));
        let work = async {
            ins.send(body).await?;
            ins.end().await
        };
        work.await
            .map_err(|e| anyhow::anyhow!("INSERT into {}: {e}", t.name()))
    }

    /// After an attempt failed, marks the rows it nevertheless stored (the
    /// server finished an INSERT whose response was lost, or stored some of
    /// its parts before it died). The rows are asked, not the ledger: a
    /// ledger row is written by a view after the table's parts, and cannot
    /// tell this block from an earlier incarnation of a topic.
    async fn settle(
        &self,
        block: &Block,
        t: Table,
        stored: &mut [bool],
        left_out: &[bool],
    ) -> anyhow::Result<()> {
        recovery::wait_no_running_inserts(
            &self.ch,
            &self.processes,
            &Running::Prefix(self.block_prefix(block, t)),
            Duration::from_secs(60),
        )
        .await?;
        let mut found = 0usize;
        for (i, p) in block.parts.iter().enumerate() {
            let missing = block
                .rows
                .iter()
                .zip(stored.iter())
                .any(|(r, s)| r.part as usize == i && !s);
            if left_out[i] || !missing {
                continue;
            }
            let have: HashSet<(i64, i64)> = recovery::stored_rows(
                &self.ch,
                &self.db,
                t,
                &p.topic,
                p.partition,
                (p.first_offset, p.last_offset),
                (datetime_secs(p.ts_range.0), datetime_secs(p.ts_range.1)),
            )
            .await?
            .into_iter()
            .collect();
            let mut found_here = Vec::new();
            for (r, s) in block.rows.iter().zip(stored.iter_mut()) {
                if r.part as usize == i && !*s && have.contains(&(r.offset, r.kafka_ts_ms)) {
                    *s = true;
                    found_here.push(r.offset);
                }
            }
            found += found_here.len();
            self.check_views_ran(t, &p.topic, p.partition, &found_here)
                .await?;
        }
        if found > 0 {
            let missing = stored.iter().filter(|s| !**s).count();
            info!(
                table = t.name(),
                block = block.id,
                stored = found,
                missing,
                "a failed INSERT had stored rows; sending only the missing ones"
            );
        }
        Ok(())
    }

    /// Rows found stored after a failed INSERT must have a ledger row: it is
    /// written by the last view of the INSERT (sql/0012), so without one some
    /// of the rows' views may not have run (a server that died part-way).
    /// The rows are not sent again (that would duplicate them); the hole is
    /// counted and logged for `ingest reconcile`.
    async fn check_views_ran(
        &self,
        t: Table,
        topic: &str,
        partition: i32,
        offsets: &[i64],
    ) -> anyhow::Result<()> {
        let (Some(&lo), Some(&hi)) = (offsets.iter().min(), offsets.iter().max()) else {
            return Ok(());
        };
        let ranges: Vec<(u64, u64)> = self
            .ch
            .query(&format!(
                "SELECT min_offset, max_offset FROM {}.ingest_ledger \
                 WHERE tbl = ? AND topic = ? AND partition = ? AND max_offset >= ? AND min_offset <= ?",
                self.db
            ))
            .bind(t.name())
            .bind(topic)
            .bind(partition as u32)
            .bind(lo as u64)
            .bind(hi as u64)
            .fetch_all()
            .await
            .context("reading the ledger rows of a failed INSERT's stored rows")?;
        let uncovered = offsets
            .iter()
            .filter(|&&o| !ranges.iter().any(|&(a, b)| (a..=b).contains(&(o as u64))))
            .count();
        if uncovered > 0 {
            self.metrics
                .views_incomplete_rows
                .with_label_values(&[t.name()])
                .inc_by(uncovered as u64);
            warn!(
                table = t.name(),
                topic,
                partition,
                rows = uncovered,
                first_offset = lo,
                "rows of a failed INSERT are stored without a ledger row: some of their \
                   rollup/trace rows may be missing; run `ingest reconcile` for their hours"
            );
        }
        Ok(())
    }

    /// Publishes the dead letters `keep` selects (raw bytes as the value, the
    /// reason and source in headers) and waits for every delivery; marks each
    /// delivered one in `stored`.
    async fn send_letters(
        &self,
        block: &Block,
        keep: &[usize],
        stored: &mut [bool],
    ) -> anyhow::Result<()> {
        // Enqueue every message first (send_result does not wait), then await
        // the deliveries: one round trip per block, not per dead letter.
        let mut futures = Vec::with_capacity(keep.len());
        for &r in keep {
            let row = &block.rows[r];
            let d = &block.letters[r];
            let p = &block.parts[row.part as usize];
            let key = format!("{}/{}/{}", p.topic, p.partition, row.offset);
            let partition = p.partition.to_string();
            let offset = row.offset.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "reason",
                    value: Some(d.reason),
                })
                .insert(Header {
                    key: "error",
                    value: Some(d.error.as_str()),
                })
                .insert(Header {
                    key: "source_topic",
                    value: Some(&*p.topic),
                })
                .insert(Header {
                    key: "source_partition",
                    value: Some(partition.as_str()),
                })
                .insert(Header {
                    key: "source_offset",
                    value: Some(offset.as_str()),
                });
            let mut rec = FutureRecord::to(&self.dlq_topic)
                .key(&key)
                .payload(&d.payload)
                .headers(headers);
            loop {
                match self.dlq.send_result(rec) {
                    Ok(f) => {
                        futures.push((r, f));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        rec = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => {
                        anyhow::bail!("producing to dead-letter topic {}: {e}", self.dlq_topic)
                    }
                }
            }
        }
        let mut failed = None;
        for (r, f) in futures {
            match f.await {
                Ok(Ok(_)) => stored[r] = true,
                Ok(Err((e, _))) => failed = Some(format!("{e}")),
                Err(_) => failed = Some("the producer dropped a delivery".into()),
            }
        }
        match failed {
            None => Ok(()),
            Some(e) => anyhow::bail!("producing to dead-letter topic {}: {e}", self.dlq_topic),
        }
    }
}

fn stop_writing(block: &Block, parts: &[usize]) {
    for &i in parts {
        block.parts[i].shared.stop_writing();
    }
}
