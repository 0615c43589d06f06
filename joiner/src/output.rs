//! Producing joined (and unmatched) events: every record of a batch is
//! enqueued at once, then every delivery report is awaited; the caller retries
//! the failed ones with backoff before the batch's offsets are committed.

use std::time::Duration;

use anyhow::{bail, Context};
use common::Config;
use futures_util::future::join_all;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tracing::{info, warn};

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
        Ok(Output { producer, metrics })
    }

    /// Produces every record and waits for all delivery reports. Returns the
    /// records whose delivery failed (empty = all acknowledged).
    pub async fn send_all(&self, records: Vec<OutRecord>) -> Vec<OutRecord> {
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

/// Creates the topics in `names` that do not exist yet (`kafka.partitions`
/// partitions, replication factor `loadgen.replication_factor`).
pub async fn ensure_topics(cfg: &Config, names: &[&str]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = common::kafka::client_config(&cfg.kafka)
        .create()
        .context("creating the Kafka admin client")?;
    let new: Vec<NewTopic> = names
        .iter()
        .map(|n| {
            NewTopic::new(
                n,
                cfg.kafka.partitions,
                TopicReplication::Fixed(cfg.loadgen.replication_factor),
            )
        })
        .collect();
    // request_timeout bounds the wait for an unreachable broker (librdkafka's
    // default is socket.timeout.ms, 60 s, before any error is reported).
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(15)))
        .request_timeout(Some(Duration::from_secs(15)));
    let results = admin.create_topics(&new, &opts).await.with_context(|| {
        format!(
            "Kafka at {} is not reachable (kafka.brokers)",
            cfg.kafka.brokers
        )
    })?;
    for r in results {
        match r {
            Ok(name) => info!(topic = %name, partitions = cfg.kafka.partitions, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, e)) => bail!("creating topic {name}: {e}"),
        }
    }
    Ok(())
}
