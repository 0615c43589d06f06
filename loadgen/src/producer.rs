//! Sending the stream to Kafka (or to stdout for a dry run).
//!
//! The generator runs on a blocking thread and hands batches to the sender,
//! which keeps up to `max_in_flight` messages unacknowledged (it never awaits
//! one send before the next), paces to `rate` messages/s when asked, retries a
//! failed delivery up to [`MAX_ATTEMPTS`] times and counts the rest as
//! failures: nothing is lost silently. The manifest's delivery section says
//! what the broker acknowledged, per topic and partition.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::Config;
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use rdkafka::admin::AdminClient;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::future_producer::{DeliveryFuture, OwnedDeliveryResult};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::generator::{Generator, Message};
use crate::manifest::{type_index, Delivery, Manifest, ManifestBuilder, TYPES};
use crate::params::Params;

/// Delivery attempts per message before it counts as failed (librdkafka
/// already retries internally within `delivery.timeout.ms` for each attempt).
pub const MAX_ATTEMPTS: u32 = 3;
const BATCH: usize = 1024;

/// How to send (does not change what is sent).
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Messages per second; 0 = as fast as possible.
    pub rate: u64,
    /// Upper bound on unacknowledged messages.
    pub max_in_flight: usize,
    /// Print progress to stderr about once per second.
    pub progress: bool,
    /// Replication factor for topics that have to be created.
    pub replication_factor: i32,
}

impl SendOptions {
    pub fn from_config(cfg: &Config) -> SendOptions {
        SendOptions {
            rate: cfg.loadgen.rate,
            max_in_flight: cfg.loadgen.max_in_flight.max(1),
            progress: true,
            replication_factor: cfg.loadgen.replication_factor,
        }
    }
}

/// A client context that keeps quiet: the reachability probe reports its one
/// clear error instead of librdkafka's stream of connection-refused lines.
struct Quiet;

impl ClientContext for Quiet {
    fn log(&self, _: RDKafkaLogLevel, _: &str, _: &str) {}
    fn error(&self, _: KafkaError, _: &str) {}
}

/// Fails with a clear message unless the brokers answer within `timeout`.
pub async fn check_reachable(cfg: &Config, timeout: Duration) -> Result<()> {
    let admin: AdminClient<Quiet> = common::kafka::client_config(&cfg.kafka)
        .create_with_context(Quiet)
        .context("creating the Kafka admin client")?;
    let brokers = cfg.kafka.brokers.clone();
    tokio::task::spawn_blocking(move || admin.inner().fetch_metadata(None, timeout))
        .await?
        .with_context(|| {
            format!(
                "Kafka broker at {brokers} is not reachable within {timeout:?} \
                 (is the stack up? `dev/stack up`)"
            )
        })?;
    Ok(())
}

/// Creates the request/exposure/interaction topics that do not exist yet, with
/// `kafka.partitions` partitions, and waits until their metadata is visible.
pub async fn ensure_topics(
    cfg: &Config,
    producer: &FutureProducer,
    replication_factor: i32,
) -> Result<()> {
    let names: Vec<String> = TYPES
        .iter()
        .map(|t| cfg.topics.topic_for(*t).to_owned())
        .collect();
    let existing = topic_partitions(producer, &cfg.kafka.brokers, Duration::from_secs(10)).await?;
    let missing: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| !existing.contains_key(*n))
        .collect();
    let refused = common::kafka::create_topics(&cfg.kafka, &missing, replication_factor).await?;
    if let Some((name, e)) = refused.first() {
        bail!("creating topic {name}: {e}");
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let known = topic_partitions(producer, &cfg.kafka.brokers, Duration::from_secs(10)).await?;
        if names.iter().all(|n| known.get(n).is_some_and(|p| *p > 0)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("topics {names:?} did not appear in the broker's metadata within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Topic name → partition count, from the broker's metadata.
async fn topic_partitions(
    producer: &FutureProducer,
    brokers: &str,
    timeout: Duration,
) -> Result<BTreeMap<String, usize>> {
    let p = producer.clone();
    let md = tokio::task::spawn_blocking(move || p.client().fetch_metadata(None, timeout))
        .await?
        .with_context(|| {
            format!("Kafka broker at {brokers} is not reachable (is the stack up? `dev/stack up`)")
        })?;
    Ok(md
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name().to_owned(), t.partitions().len()))
        .collect())
}

/// A finished delivery: topic index, attempt, the report (`Err(())` when the
/// producer went away before reporting).
type Done = (usize, Option<i32>, u32, Result<OwnedDeliveryResult, ()>);

/// A delivery future tagged with what is needed to count or retry it (no
/// boxing: one of these per message in flight).
struct Tagged {
    delivery: DeliveryFuture,
    idx: usize,
    partition: Option<i32>,
    attempt: u32,
}

impl Future for Tagged {
    type Output = Done;
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Done> {
        Pin::new(&mut self.delivery)
            .poll(cx)
            .map(|r| (self.idx, self.partition, self.attempt, r.map_err(|_| ())))
    }
}

/// A message to send again: topic index, key, payload, partition, attempt.
type Retry = (usize, Option<Vec<u8>>, Vec<u8>, Option<i32>, u32);

/// Sends to the three input topics with many deliveries in flight, counting
/// and retrying failures (shared by the generator and `replay`).
pub(crate) struct Sender {
    producer: FutureProducer,
    topics: [String; 3],
    inflight: FuturesUnordered<Tagged>,
    retries: VecDeque<Retry>,
    pub(crate) acked: u64,
    pub(crate) failed: u64,
    retried: u64,
    first_error: Option<String>,
    partitions: [BTreeMap<i32, u64>; 3],
}

impl Sender {
    pub(crate) fn new(producer: FutureProducer, topics: [String; 3]) -> Sender {
        Sender {
            producer,
            topics,
            inflight: FuturesUnordered::new(),
            retries: VecDeque::new(),
            acked: 0,
            failed: 0,
            retried: 0,
            first_error: None,
            partitions: Default::default(),
        }
    }

    /// Enqueues one message (to `partition`, or where the partitioner puts
    /// its key), waiting for room when librdkafka's queue is full.
    pub(crate) async fn send(
        &mut self,
        idx: usize,
        key: Option<&[u8]>,
        payload: &[u8],
        partition: Option<i32>,
        attempt: u32,
    ) {
        loop {
            let mut rec = FutureRecord::<[u8], [u8]>::to(&self.topics[idx]).payload(payload);
            if let Some(k) = key {
                rec = rec.key(k);
            }
            if let Some(p) = partition {
                rec = rec.partition(p);
            }
            match self.producer.send_result(rec) {
                Ok(f) => {
                    self.inflight.push(Tagged {
                        delivery: f,
                        idx,
                        partition,
                        attempt,
                    });
                    return;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    match self.inflight.next().await {
                        Some(d) => self.complete(d),
                        None => tokio::time::sleep(Duration::from_millis(1)).await,
                    }
                }
                Err((e, _)) => {
                    self.fail(format!("enqueueing to {}: {e}", self.topics[idx]));
                    return;
                }
            }
        }
    }

    fn fail(&mut self, e: String) {
        self.failed += 1;
        if self.first_error.is_none() {
            tracing::error!(error = %e, "delivery failed");
            self.first_error = Some(e);
        }
    }

    fn complete(&mut self, (idx, partition, attempt, r): Done) {
        match r {
            Ok(Ok(d)) => {
                self.acked += 1;
                *self.partitions[idx].entry(d.partition).or_default() += 1;
            }
            Ok(Err((e, msg))) => {
                if attempt + 1 < MAX_ATTEMPTS {
                    tracing::warn!(error = %e, topic = %self.topics[idx], attempt, "delivery failed, retrying");
                    self.retried += 1;
                    self.retries.push_back((
                        idx,
                        msg.key().map(<[u8]>::to_vec),
                        msg.payload().unwrap_or_default().to_vec(),
                        partition,
                        attempt + 1,
                    ));
                } else {
                    self.fail(format!(
                        "delivery to {} failed after {MAX_ATTEMPTS} attempts: {e}",
                        self.topics[idx]
                    ));
                }
            }
            Err(_) => self.fail("delivery report lost (producer shut down)".into()),
        }
    }

    pub(crate) fn complete_ready(&mut self) {
        while let Some(Some(d)) = self.inflight.next().now_or_never() {
            self.complete(d);
        }
    }

    async fn send_retries(&mut self) {
        while let Some((idx, key, payload, partition, attempt)) = self.retries.pop_front() {
            self.send(idx, key.as_deref(), &payload, partition, attempt)
                .await;
        }
    }

    /// After a send: waits while `max_in_flight` deliveries are outstanding
    /// and re-sends failed ones.
    pub(crate) async fn throttle(&mut self, max_in_flight: usize) {
        while self.inflight.len() >= max_in_flight.max(1) {
            if let Some(d) = self.inflight.next().await {
                self.complete(d);
            }
        }
        if !self.retries.is_empty() {
            self.send_retries().await;
        }
    }

    /// Waits for every outstanding delivery (and its retries); `tick` runs
    /// about every 500 ms meanwhile.
    pub(crate) async fn drain(&mut self, mut tick: impl FnMut(&Sender)) {
        while !self.inflight.is_empty() || !self.retries.is_empty() {
            self.send_retries().await;
            if let Ok(Some(d)) =
                tokio::time::timeout(Duration::from_millis(500), self.inflight.next()).await
            {
                self.complete(d);
                self.complete_ready();
            }
            tick(self);
        }
    }

    /// The delivery report of a run that sent `bytes` in `elapsed_s`.
    pub(crate) fn delivery(&self, rate: u64, elapsed_s: f64, bytes: u64) -> Delivery {
        Delivery {
            dry_run: false,
            rate,
            acked: self.acked,
            failed: self.failed,
            retried: self.retried,
            first_error: self.first_error.clone(),
            elapsed_s,
            msgs_per_s: self.acked as f64 / elapsed_s.max(1e-9),
            mb_per_s: bytes as f64 / 1e6 / elapsed_s.max(1e-9),
            // Acknowledged messages per topic and partition (topics with any).
            partitions: self
                .topics
                .iter()
                .cloned()
                .zip(self.partitions.iter().cloned())
                .filter(|(_, p)| !p.is_empty())
                .collect(),
        }
    }
}

struct Progress {
    on: bool,
    start: Instant,
    last: Instant,
    last_acked: u64,
    total: u64,
}

impl Progress {
    fn tick(&mut self, sent: u64, acked: u64) {
        if !self.on || self.last.elapsed() < Duration::from_secs(1) {
            return;
        }
        let now = Instant::now();
        let rate = (acked - self.last_acked) as f64 / (now - self.last).as_secs_f64();
        let avg = acked as f64 / (now - self.start).as_secs_f64().max(1e-9);
        let eta = if avg > 0.0 {
            format!("{:.0} s", (self.total - acked) as f64 / avg)
        } else {
            "?".into()
        };
        eprintln!(
            "loadgen: sent {sent}/{} ({:.1}%), acked {acked}, {rate:.0} msg/s, ETA {eta}",
            self.total,
            100.0 * sent as f64 / self.total.max(1) as f64
        );
        self.last = now;
        self.last_acked = acked;
    }
}

/// Generates the run described by `params` into the topics of `cfg` and
/// returns the manifest with its delivery section. Creates missing topics.
/// Delivery failures do not make this an `Err`: check
/// [`Manifest::ensure_delivered`] (so the manifest can still be written).
pub async fn produce(cfg: &Config, params: &Params, opts: &SendOptions) -> Result<Manifest> {
    params.validate()?;
    check_reachable(cfg, Duration::from_secs(10)).await?;
    let producer: FutureProducer =
        common::kafka::batching_producer_config(&cfg.kafka, cfg.loadgen.linger_ms)
            .create()
            .context("creating the Kafka producer")?;
    ensure_topics(cfg, &producer, opts.replication_factor).await?;

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Message>>(16);
    let gen_params = params.clone();
    let topics = cfg.topics.clone();
    let generator = tokio::task::spawn_blocking(move || -> Result<ManifestBuilder> {
        let mut b = ManifestBuilder::new(&gen_params, &topics);
        let mut batch = Vec::with_capacity(BATCH);
        for m in Generator::new(&gen_params)? {
            b.observe(&m);
            batch.push(m);
            if batch.len() == BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                if tx.blocking_send(full).is_err() {
                    bail!("the sender stopped");
                }
            }
        }
        if !batch.is_empty() && tx.blocking_send(batch).is_err() {
            bail!("the sender stopped");
        }
        Ok(b)
    });

    let mut s = Sender::new(
        producer.clone(),
        TYPES.map(|t| cfg.topics.topic_for(t).to_owned()),
    );
    let start = Instant::now();
    let mut progress = Progress {
        on: opts.progress,
        start,
        last: start,
        last_acked: 0,
        total: params.count,
    };
    let mut sent: u64 = 0;
    let max_in_flight = opts.max_in_flight.max(1);
    while let Some(batch) = rx.recv().await {
        for m in batch {
            if opts.rate > 0 {
                let due = start + Duration::from_secs_f64(sent as f64 / opts.rate as f64);
                if due > Instant::now() {
                    s.complete_ready();
                    progress.tick(sent, s.acked);
                    tokio::time::sleep_until(due.into()).await;
                }
            }
            s.send(
                type_index(m.log_type),
                Some(m.key.as_bytes()),
                &m.value,
                None,
                0,
            )
            .await;
            sent += 1;
            s.throttle(max_in_flight).await;
        }
        s.complete_ready();
        progress.tick(sent, s.acked);
    }
    s.drain(|s| progress.tick(sent, s.acked)).await;
    let elapsed = start.elapsed().as_secs_f64();
    let builder = generator.await.context("the generator thread panicked")??;
    let mut manifest = builder.finish();
    let bytes = manifest.totals.bytes;
    manifest.delivery = Some(s.delivery(opts.rate, elapsed, bytes));
    let _ = producer.flush(Duration::from_secs(5));
    Ok(manifest)
}

/// Writes the stream to `out` instead of Kafka, one message per line:
/// `topic TAB key TAB value` (the value is the raw bytes; it never contains a
/// newline except the bad `empty` kind's bare `\n`).
pub fn dry_run(params: &Params, cfg: &Config, out: &mut impl Write) -> Result<Manifest> {
    let start = Instant::now();
    let mut b = ManifestBuilder::new(params, &cfg.topics);
    for m in Generator::new(params)? {
        b.observe(&m);
        out.write_all(m.topic(&cfg.topics).as_bytes())?;
        out.write_all(b"\t")?;
        out.write_all(m.key.as_bytes())?;
        out.write_all(b"\t")?;
        out.write_all(&m.value)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    let mut manifest = b.finish();
    let elapsed = start.elapsed().as_secs_f64();
    manifest.delivery = Some(Delivery {
        dry_run: true,
        elapsed_s: elapsed,
        msgs_per_s: manifest.totals.messages as f64 / elapsed.max(1e-9),
        mb_per_s: manifest.totals.bytes as f64 / 1e6 / elapsed.max(1e-9),
        ..Delivery::default()
    });
    Ok(manifest)
}

/// The manifest of a run without sending anything.
pub fn manifest_only(params: &Params, cfg: &Config) -> Result<Manifest> {
    let mut b = ManifestBuilder::new(params, &cfg.topics);
    for m in Generator::new(params)? {
        b.observe(&m);
    }
    Ok(b.finish())
}
