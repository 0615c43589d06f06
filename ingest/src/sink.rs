//! Writing a sealed batch: dead letters to the dead-letter topic, then one
//! RowBinary INSERT per table, each retried with backoff until ClickHouse
//! acknowledges it. Only then is the batch acknowledged (and its offsets
//! become committable).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clickhouse::Client;
use common::backoff::Backoff;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use tracing::{info, warn};

use crate::batch::Batch;
use crate::metrics::Metrics;
use crate::recovery;
use crate::table::Table;

/// Why a batch was given up (it is then neither acknowledged nor committed, so
/// whoever reads the partition next will write it).
#[derive(Debug, PartialEq, Eq)]
pub enum Abandoned {
    /// The partition was revoked from this worker.
    Revoked,
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
    /// Set on SIGTERM; in-flight batches still get `shutdown_grace` to finish.
    pub shutdown: Arc<AtomicBool>,
    pub shutdown_grace: Duration,
}

/// Per-batch progress, so a retry redoes only what has not been acknowledged.
struct Progress {
    dead_letters_sent: bool,
    tables_done: [bool; 5],
}

impl Sink {
    /// Writes `batch` fully, or gives up only when the partition is revoked or
    /// the shutdown grace period is over.
    ///
    /// The tables' encoded rows are moved out of the batch (no copy); a retry
    /// resends the same bytes.
    pub async fn write(&self, batch: &mut Batch, revoked: &AtomicBool) -> Result<(), Abandoned> {
        let mut progress = Progress {
            dead_letters_sent: batch.dead_letters.is_empty(),
            tables_done: std::array::from_fn(|i| batch.tables[i].rows == 0),
        };
        let bodies: Vec<Bytes> = batch
            .tables
            .iter_mut()
            .map(|t| Bytes::from(std::mem::take(&mut t.bytes)))
            .collect();
        let batch: &Batch = batch;
        let mut backoff = Backoff::new(self.retry_min, self.retry_max);
        let mut shutdown_seen: Option<Instant> = None;
        let mut attempt = 0u32;
        loop {
            match self
                .try_write(batch, &bodies, &mut progress, attempt, revoked)
                .await
            {
                Ok(()) => {
                    if attempt > 0 {
                        info!(topic = %batch.topic, partition = batch.partition,
                              first_offset = batch.first_offset, attempts = attempt + 1,
                              "batch written after retries");
                    }
                    return Ok(());
                }
                Err(_) if revoked.load(Ordering::Acquire) => return Err(Abandoned::Revoked),
                Err(e) => {
                    let delay = backoff.next_delay();
                    warn!(topic = %batch.topic, partition = batch.partition,
                          first_offset = batch.first_offset, attempt, error = %format!("{e:#}"),
                          retry_in_ms = delay.as_millis() as u64, "batch write failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
            attempt += 1;
            // Before retrying, settle what the failed attempt may have stored,
            // and repeat the INSERT only once that is known: retrying after a
            // failed check stored batches twice when ClickHouse came back
            // between the check and the retry.
            loop {
                if revoked.load(Ordering::Acquire) {
                    return Err(Abandoned::Revoked);
                }
                if self.shutdown.load(Ordering::Acquire) {
                    let since = *shutdown_seen.get_or_insert_with(Instant::now);
                    if since.elapsed() > self.shutdown_grace {
                        return Err(Abandoned::Shutdown);
                    }
                }
                match self.settle(batch, &mut progress).await {
                    Ok(()) => break,
                    Err(e) => {
                        let delay = backoff.next_delay();
                        warn!(topic = %batch.topic, partition = batch.partition,
                              first_offset = batch.first_offset, error = %format!("{e:#}"),
                              retry_in_ms = delay.as_millis() as u64,
                              "could not check what a failed insert stored; checking again");
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
    }

    async fn try_write(
        &self,
        batch: &Batch,
        bodies: &[Bytes],
        progress: &mut Progress,
        attempt: u32,
        revoked: &AtomicBool,
    ) -> anyhow::Result<()> {
        if !progress.dead_letters_sent {
            self.send_dead_letters(batch).await?;
            progress.dead_letters_sent = true;
        }
        for t in Table::ALL {
            if progress.tables_done[t as usize] {
                continue;
            }
            // Revoked: no INSERT may start once the partition can be owned by
            // another worker, whose recovery waits only for INSERTs already
            // running. The tables written so far are in the ledger (per table),
            // so the next owner writes exactly the rest.
            if revoked.load(Ordering::Acquire) {
                anyhow::bail!("partition revoked before the {} INSERT", t.name());
            }
            let started = Instant::now();
            let res = self
                .insert(batch, t, bodies[t as usize].clone(), attempt)
                .await;
            let m = &self.metrics;
            match res {
                Ok(()) => {
                    m.insert_seconds
                        .with_label_values(&[t.name()])
                        .observe(started.elapsed().as_secs_f64());
                    m.inserted
                        .with_label_values(&[t.name()])
                        .inc_by(batch.tables[t as usize].rows as u64);
                    progress.tables_done[t as usize] = true;
                }
                Err(e) => {
                    m.insert_errors.with_label_values(&[t.name()]).inc();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    async fn insert(
        &self,
        batch: &Batch,
        t: Table,
        body: Bytes,
        attempt: u32,
    ) -> anyhow::Result<()> {
        let sql = format!(
            "INSERT INTO {}.{} ({}) FORMAT RowBinary",
            self.db,
            t.name(),
            t.columns()
        );
        let query_id = format!(
            "{}{}/{}/{}",
            recovery::query_id_prefix(&batch.topic, batch.partition),
            batch.first_offset,
            t.name(),
            attempt
        );
        let mut ins = self
            .ch
            .insert_formatted_with(sql)
            .with_setting("query_id", query_id);
        ins.send(body)
            .await
            .map_err(|e| anyhow::anyhow!("INSERT into {}: {e}", t.name()))?;
        ins.end()
            .await
            .map_err(|e| anyhow::anyhow!("INSERT into {}: {e}", t.name()))
    }

    /// After an attempt failed, find out which tables it nevertheless stored
    /// (e.g. the server finished an INSERT whose response was lost).
    async fn settle(&self, batch: &Batch, progress: &mut Progress) -> anyhow::Result<()> {
        if progress.tables_done.iter().all(|d| *d) {
            return Ok(());
        }
        let prefix = format!(
            "{}{}/",
            recovery::query_id_prefix(&batch.topic, batch.partition),
            batch.first_offset
        );
        recovery::wait_no_running_inserts(
            &self.ch,
            &self.processes,
            &prefix,
            Duration::from_secs(60),
        )
        .await?;
        for t in Table::ALL {
            if progress.tables_done[t as usize] {
                continue;
            }
            // The rows are asked, not the ledger: the ledger row is written
            // after the table's part (a server that dies in between leaves
            // rows without one, as a ClickHouse stopped under load and then
            // SIGKILLed does), and the ledger cannot tell this batch from an
            // earlier incarnation of the topic at the same offsets.
            let Some(ts) = batch.tables[t as usize].ts_range else {
                continue;
            };
            let n = recovery::table_rows_in_range(
                &self.ch,
                &self.db,
                t,
                &batch.topic,
                batch.partition,
                batch.first_offset,
                batch.last_offset,
                ts,
                batch.tables[t as usize].kafka_ts_range,
            )
            .await?;
            if n > 0 {
                let rows = batch.tables[t as usize].rows as u64;
                info!(table = t.name(), topic = %batch.topic, partition = batch.partition,
                      first_offset = batch.first_offset, stored = n, rows,
                      "a failed INSERT had been stored; not repeating it");
                progress.tables_done[t as usize] = true;
            }
        }
        Ok(())
    }

    /// Publishes the batch's dead letters (raw bytes as the value, the reason and
    /// source in headers) and waits for every delivery.
    async fn send_dead_letters(&self, batch: &Batch) -> anyhow::Result<()> {
        let partition = batch.partition.to_string();
        let keys: Vec<String> = batch
            .dead_letters
            .iter()
            .map(|d| format!("{}/{}/{}", batch.topic, batch.partition, d.offset))
            .collect();
        // Enqueue every message first (send_result does not wait), then await
        // the deliveries: one round trip per batch, not per dead letter.
        let mut futures = Vec::with_capacity(batch.dead_letters.len());
        for (d, key) in batch.dead_letters.iter().zip(&keys) {
            let offset = d.offset.to_string();
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
                    value: Some(&*batch.topic),
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
                .key(key)
                .payload(&d.payload)
                .headers(headers);
            loop {
                match self.dlq.send_result(rec) {
                    Ok(f) => {
                        futures.push(f);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        rec = r;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => {
                        anyhow::bail!("producing to dead-letter topic {}: {e}", self.dlq_topic)
                    }
                }
            }
        }
        for f in futures {
            match f.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    anyhow::bail!("producing to dead-letter topic {}: {e}", self.dlq_topic)
                }
                Err(_) => anyhow::bail!("dead-letter producer dropped a delivery"),
            }
        }
        Ok(())
    }
}
