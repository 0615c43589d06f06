//! Producing joined (and unmatched) events: every record of a batch is
//! enqueued at once, then every delivery report is awaited; the caller retries
//! the failed ones with backoff before the batch's offsets are committed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context};
use common::Config;
use futures_util::future::join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tracing::warn;

use crate::metrics::Metrics;

/// One event to produce.
#[derive(Debug, Clone, PartialEq)]
pub struct OutRecord {
    pub topic: String,
    pub key: String,
    pub payload: String,
}

pub struct Output {
    producer: FutureProducer,
    metrics: Metrics,
    cfg: Config,
    /// Set on every partition assignment: the next [`Output::send_all`]
    /// first creates the topics again if they are gone (see [`Output::recheck_topics`]).
    recheck: AtomicBool,
}

impl Output {
    pub fn new(cfg: &Config, metrics: Metrics) -> anyhow::Result<Output> {
        let mut pc = common::kafka::producer_config(&cfg.kafka);
        pc.set(
            "message.timeout.ms",
            cfg.joiner.produce_timeout_ms.max(1000).to_string(),
        );
        // Pass-through properties still win.
        for (k, v) in &cfg.kafka.properties {
            pc.set(k, v);
        }
        let producer: FutureProducer = pc
            .create()
            .with_context(|| format!("creating the Kafka producer for {}", cfg.kafka.brokers))?;
        Ok(Output {
            producer,
            metrics,
            cfg: cfg.clone(),
            recheck: AtomicBool::new(false),
        })
    }

    /// The joiner's topics: what it writes and (so that a consumer subscribed
    /// before they exist need not wait for a metadata refresh) what it reads.
    fn topics(&self) -> Vec<&str> {
        let t = &self.cfg.topics;
        let mut v = vec![
            t.joined.as_str(),
            t.exposure.as_str(),
            t.interaction.as_str(),
        ];
        if self.cfg.joiner.emit_unmatched {
            v.push(t.unmatched.as_str());
        }
        v
    }

    /// Creates the joiner's topics that do not exist.
    pub async fn ensure_topics(&self) -> anyhow::Result<()> {
        let replication = self.cfg.loadgen.replication_factor;
        let refused =
            common::kafka::create_topics(&self.cfg.kafka, &self.topics(), replication).await?;
        if let Some((name, e)) = refused.first() {
            bail!("creating topic {name}: {e}");
        }
        Ok(())
    }

    /// Called on every partition assignment. A rebalance is what a broker
    /// that lost its log (or topics deleted under the joiner) looks like from
    /// here; producing into a topic that no longer exists leaves its creation
    /// to the broker's auto-create (tansu acknowledged such records and then
    /// lost them when the topic was created properly), so the topics are
    /// created again before the next batch is produced.
    pub fn recheck_topics(&self) {
        self.recheck.store(true, Ordering::Release);
    }

    /// Produces every record and waits for all delivery reports. Returns the
    /// records whose delivery failed (empty = all acknowledged).
    pub async fn send_all(&self, records: Vec<OutRecord>) -> Vec<OutRecord> {
        if self.recheck.swap(false, Ordering::AcqRel) {
            if let Err(e) = self.ensure_topics().await {
                warn!(error = %format!("{e:#}"), "checking the output topics failed; producing anyway");
                self.recheck.store(true, Ordering::Release);
            }
        }
        let mut futures = Vec::with_capacity(records.len());
        let mut failed = Vec::new();
        let mut i = 0;
        while i < records.len() {
            let r = &records[i];
            let fr = FutureRecord::to(&r.topic).key(&r.key).payload(&r.payload);
            match self.producer.send_result(fr) {
                Ok(f) => {
                    futures.push((i, f));
                    i += 1;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // librdkafka's queue is full: let some deliveries finish.
                    let pending = std::mem::take(&mut futures);
                    self.collect(pending, &records, &mut failed).await;
                }
                Err((e, _)) => {
                    warn!(error = %e, topic = %r.topic, "enqueueing an event failed; will retry");
                    self.metrics.produce_errors.inc();
                    failed.push(r.clone());
                    i += 1;
                }
            }
        }
        self.collect(futures, &records, &mut failed).await;
        failed
    }

    async fn collect(
        &self,
        futures: Vec<(usize, rdkafka::producer::DeliveryFuture)>,
        records: &[OutRecord],
        failed: &mut Vec<OutRecord>,
    ) {
        let (idx, futs): (Vec<usize>, Vec<_>) = futures.into_iter().unzip();
        for (i, res) in idx.into_iter().zip(join_all(futs).await) {
            let r = &records[i];
            match res {
                Ok(Ok(_)) => {
                    self.metrics.produced.with_label_values(&[&r.topic]).inc();
                }
                Ok(Err((e, _))) => {
                    if failed.is_empty() {
                        warn!(error = %e, topic = %r.topic, "delivery failed; will retry");
                    }
                    self.metrics.produce_errors.inc();
                    failed.push(r.clone());
                }
                Err(_) => {
                    self.metrics.produce_errors.inc();
                    failed.push(r.clone());
                }
            }
        }
    }

    pub fn flush(&self, timeout: Duration) {
        let _ = self.producer.flush(timeout);
    }
}
