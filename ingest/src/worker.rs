//! One consumer thread: a Kafka group member that parses its partitions'
//! messages into per-partition batches and hands sealed batches to one inserter
//! task per partition (async, on the tokio runtime), so parsing overlaps
//! inserting and partitions are written in parallel.
//!
//! Invariants:
//! - an offset is committed only after every batch up to it was acknowledged
//!   by ClickHouse (and its dead letters by Kafka);
//! - a partition's batches are written in order, one at a time;
//! - at most `max_pending_batches` sealed batches per partition wait for
//!   ClickHouse; beyond that the partition is paused (bounded memory);
//! - on revocation, queued batches are dropped, the one being written is
//!   finished, acknowledged offsets are committed, then the partition is released;
//! - the poll loop never waits for ClickHouse: recovery and ledger checks run
//!   as tasks while their partition is paused and its delivered messages are
//!   held (see [`Blocked`]), so a slow or frozen ClickHouse cannot push the
//!   member past `max.poll.interval.ms` or stall the other partitions.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use common::Config;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message, OwnedMessage};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use schemas::LogType;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::batch::{Batch, BatchLimits, DeadLetter};
use crate::metrics::Metrics;
use crate::recovery::{self, Check, Stored};
use crate::route::{self, Limits, MsgMeta};
use crate::rowbinary::datetime_secs;
use crate::sink::Sink;
use crate::table::Table;

type Tp = (Arc<str>, i32);

/// State of a partition shared between the consumer thread, its inserter task
/// and the rebalance callback.
pub struct PartShared {
    /// Next offset to commit (everything below it is acknowledged); -1 = none yet.
    pub acked_next: AtomicI64,
    /// Sealed batches handed to the inserter and not yet finished.
    pub pending: AtomicUsize,
    pub revoked: AtomicBool,
}

/// librdkafka callbacks: rebalances are recorded for the consumer loop, and
/// on revocation the in-flight work of the revoked partitions is finished and
/// committed before the partitions are released.
pub struct Ctx {
    parts: Mutex<HashMap<Tp, Arc<PartShared>>>,
    events: Mutex<Vec<Event>>,
    metrics: Metrics,
    /// How long a revocation waits for the INSERT in flight ([`revoke_grace`]).
    revoke_grace: Duration,
}

/// A quarter of `max.poll.interval.ms` (librdkafka's default 300 s, or the
/// `[kafka.properties]` value), at most 30 s.
fn revoke_grace(cfg: &Config) -> Duration {
    let max_poll_ms = cfg
        .kafka
        .properties
        .get("max.poll.interval.ms")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(300_000);
    Duration::from_millis(max_poll_ms / 4).min(Duration::from_secs(30))
}

enum Event {
    Assigned(Vec<Tp>),
    Revoked(Vec<Tp>),
}

fn tps(tpl: &TopicPartitionList) -> Vec<Tp> {
    tpl.elements()
        .iter()
        .map(|e| (Arc::<str>::from(e.topic()), e.partition()))
        .collect()
}

impl ClientContext for Ctx {
    fn stats(&self, stats: Statistics) {
        common::kafka::record_consumer_lag(&stats, &self.metrics.consumer_lag);
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let revoked = tps(tpl);
        let shared: Vec<(Tp, Arc<PartShared>)> = {
            let parts = self.parts.lock().expect("parts lock");
            revoked
                .iter()
                .filter_map(|tp| parts.get(tp).map(|s| (tp.clone(), s.clone())))
                .collect()
        };
        for (_, s) in &shared {
            s.revoked.store(true, Ordering::Release);
        }
        // Let the INSERT being written finish (queued batches are dropped and
        // no further INSERT starts once revoked), so the next owner cannot race
        // with it. Bounded well below max.poll.interval.ms: this runs inside
        // poll, and a member that overstays it is expelled from the group (a
        // frozen ClickHouse made the whole group stall that way).
        let deadline = Instant::now() + self.revoke_grace;
        while shared
            .iter()
            .any(|(_, s)| s.pending.load(Ordering::Acquire) > 0)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        commit_acked(consumer, &shared, &self.metrics, CommitMode::Sync);
        {
            let mut parts = self.parts.lock().expect("parts lock");
            for tp in &revoked {
                parts.remove(tp);
            }
        }
        info!(partitions = ?revoked.iter().map(|(t, p)| format!("{t}/{p}")).collect::<Vec<_>>(),
              "partitions revoked");
        self.events
            .lock()
            .expect("events lock")
            .push(Event::Revoked(revoked));
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let assigned = tps(tpl);
            info!(partitions = ?assigned.iter().map(|(t, p)| format!("{t}/{p}")).collect::<Vec<_>>(),
                  "partitions assigned");
            self.events
                .lock()
                .expect("events lock")
                .push(Event::Assigned(assigned));
        }
    }
}

/// Commits `acked_next` of every given partition that has one.
fn commit_acked(
    consumer: &BaseConsumer<Ctx>,
    parts: &[(Tp, Arc<PartShared>)],
    metrics: &Metrics,
    mode: CommitMode,
) -> bool {
    let mut tpl = TopicPartitionList::new();
    for ((topic, p), s) in parts {
        let next = s.acked_next.load(Ordering::Acquire);
        if next >= 0 {
            let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(next));
        }
    }
    if tpl.count() == 0 {
        return true;
    }
    match consumer.commit(&tpl, mode) {
        Ok(()) => {
            metrics.commits.inc();
            true
        }
        Err(e) => {
            metrics.commit_errors.inc();
            warn!(error = %e, "offset commit failed; will retry");
            false
        }
    }
}

/// What the consumer thread keeps per owned partition.
struct PartState {
    shared: Arc<PartShared>,
    tx: mpsc::Sender<Batch>,
    open: Option<Batch>,
    /// Sealed batches the inserter's queue had no room for (partition is paused).
    waiting: VecDeque<Batch>,
    paused: bool,
    /// None until the first message: then recovery reads what is already stored.
    stored: Option<Stored>,
    /// Waiting for ClickHouse (recovery or a ledger check); paused meanwhile.
    blocked: Option<Blocked>,
    /// Messages below this offset were already handled (guards redelivery).
    next_offset: i64,
    committed_next: i64,
    topic_type: Option<LogType>,
    generation: u64,
}

/// A question to ClickHouse about one partition, answered by a task.
#[derive(Debug, Clone)]
enum Question {
    /// What is already stored from this offset on (`recovery::stored_since`,
    /// after in-flight INSERTs of the partition finished).
    Recover { from_offset: i64 },
    /// Whether one message a ledger range claims is stored (`recovery::row_stored`).
    Verify {
        range: usize,
        table: Table,
        offset: i64,
        kafka_ts_ms: i64,
        ts_secs: (u32, u32),
    },
}

enum Answer {
    Recovered(Stored),
    Verified { range: usize, found: bool },
}

/// A partition waiting for an [`Answer`]: it is paused, and the messages
/// librdkafka delivered meanwhile (the one that raised the question first)
/// are held, in offset order, to be handled once the answer is in.
struct Blocked {
    rx: oneshot::Receiver<Answer>,
    question: Question,
    held: VecDeque<OwnedMessage>,
}

/// A message that can be kept past the poll that delivered it.
trait Hold: Message {
    fn hold(&self) -> OwnedMessage;
}

impl Hold for BorrowedMessage<'_> {
    fn hold(&self) -> OwnedMessage {
        self.detach()
    }
}

impl Hold for OwnedMessage {
    fn hold(&self) -> OwnedMessage {
        self.clone()
    }
}

/// Everything a consumer thread needs.
pub struct Worker {
    /// The input topic names, shared by every batch and lookup key.
    pub topic_names: Vec<Arc<str>>,
    pub cfg: Config,
    pub sink: Arc<Sink>,
    pub metrics: Metrics,
    pub shutdown: Arc<AtomicBool>,
    pub rt: Handle,
    pub id: usize,
}

impl Worker {
    fn limits(&self) -> Limits {
        let i = &self.cfg.ingest;
        Limits {
            max_message_bytes: i.max_message_bytes,
            max_future_skew_ms: i.max_future_skew_s as i64 * 1000,
            max_past_age_ms: i.max_past_age_s as i64 * 1000,
        }
    }

    fn batch_limits(&self) -> BatchLimits {
        let i = &self.cfg.ingest;
        BatchLimits {
            max_rows: i.batch_max_rows,
            max_bytes: i.batch_max_bytes,
            max_wait: Duration::from_millis(i.batch_max_wait_ms),
        }
    }

    /// The input topics: request, exposure, interaction, joined.
    pub fn input_topics(cfg: &Config) -> Vec<String> {
        LogType::ALL
            .iter()
            .map(|t| cfg.topics.topic_for(*t).to_string())
            .collect()
    }

    /// Runs until shutdown; returns after the last acknowledged offsets are committed.
    pub fn run(self) -> anyhow::Result<()> {
        let ctx = Ctx {
            parts: Mutex::new(HashMap::new()),
            events: Mutex::new(Vec::new()),
            metrics: self.metrics.clone(),
            revoke_grace: revoke_grace(&self.cfg),
        };
        let mut cc = common::kafka::consumer_config(&self.cfg.kafka, &self.cfg.kafka.ingest_group);
        cc.set("statistics.interval.ms", "5000")
            .set("queued.max.messages.kbytes", "32768")
            .set("client.id", format!("adlog-ingest-{}", self.id));
        let consumer: BaseConsumer<Ctx> = cc
            .create_with_context(ctx)
            .with_context(|| format!("creating Kafka consumer for {}", self.cfg.kafka.brokers))?;
        let topics = Self::input_topics(&self.cfg);
        let topic_refs: Vec<&str> = topics.iter().map(|s| s.as_str()).collect();
        consumer
            .subscribe(&topic_refs)
            .with_context(|| format!("subscribing to {topics:?}"))?;
        info!(worker = self.id, topics = ?topics, "consuming");

        let limits = self.limits();
        let blimits = self.batch_limits();
        let mut parts: HashMap<Tp, PartState> = HashMap::new();
        let mut generation = 0u64;
        let mut last_commit = Instant::now();
        let mut last_housekeeping = Instant::now();
        let mut last_recreate: Option<Instant> = None;
        let mut watch = common::kafka::StuckGroupWatch::for_config(&self.cfg.kafka);

        while !self.shutdown.load(Ordering::Acquire) {
            let polled = consumer.poll(Duration::from_millis(100));
            self.apply_events(&consumer, &mut parts, &mut generation);
            let idle = polled.is_none();
            match polled {
                Some(Ok(msg)) => self.handle(&consumer, &msg, &mut parts, &limits, &blimits),
                Some(Err(e)) => {
                    warn!(error = %e, "Kafka consumer error");
                    self.recreate_missing_topics(&e, &mut last_recreate);
                }
                None => {}
            }
            // Sealing due batches, draining queues and pausing are cheap but
            // not per message: at most every 10 ms, or when the poll was idle.
            if idle || last_housekeeping.elapsed() >= Duration::from_millis(10) {
                self.take_answers(&consumer, &mut parts, &limits, &blimits);
                self.housekeeping(&consumer, &mut parts, &blimits);
                last_housekeeping = Instant::now();
            }
            if last_commit.elapsed() >= Duration::from_millis(200) {
                self.commit(&consumer, &mut parts, CommitMode::Async);
                last_commit = Instant::now();
            }
            if idle {
                watch.rejoin_if_stuck(
                    &consumer,
                    &topic_refs,
                    !parts.is_empty(),
                    &self.metrics.group_rejoins,
                )?;
            }
        }

        info!(worker = self.id, "shutting down: writing open batches");
        for part in parts.values_mut() {
            if let Some(b) = part.open.take() {
                if b.messages() > 0 {
                    part.waiting.push_back(b);
                }
            }
        }
        let deadline = Instant::now() + self.sink.shutdown_grace + Duration::from_secs(5);
        loop {
            self.housekeeping(&consumer, &mut parts, &blimits);
            let busy = parts
                .values()
                .any(|p| !p.waiting.is_empty() || p.shared.pending.load(Ordering::Acquire) > 0);
            if !busy || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.commit(&consumer, &mut parts, CommitMode::Sync);
        consumer.unsubscribe();
        info!(worker = self.id, "stopped");
        Ok(())
    }

    fn apply_events(
        &self,
        consumer: &BaseConsumer<Ctx>,
        parts: &mut HashMap<Tp, PartState>,
        generation: &mut u64,
    ) {
        let events = std::mem::take(&mut *consumer.context().events.lock().expect("events lock"));
        for ev in events {
            match ev {
                Event::Revoked(tps) => {
                    for tp in tps {
                        if let Some(p) = parts.remove(&tp) {
                            self.metrics.pending_batches.sub(p.waiting.len() as i64);
                            if p.paused {
                                self.metrics.paused_partitions.dec();
                            }
                        }
                    }
                }
                Event::Assigned(tps) => {
                    // librdkafka keeps a partition's pause across a revoke and a
                    // re-assignment to the same member, while its new PartState
                    // starts unpaused: a partition paused (backpressure, or
                    // waiting for ClickHouse) when revoked came back paused and
                    // was never fetched again, and the group stalled with lag
                    // (the rebalance_mid_batch and clickhouse_frozen_during_rebalance
                    // scenarios). Every assigned partition starts fetching.
                    let mut tpl = TopicPartitionList::new();
                    for (t, p) in &tps {
                        tpl.add_partition(t, *p);
                    }
                    if let Err(e) = consumer.resume(&tpl) {
                        warn!(error = %e, "resuming newly assigned partitions failed");
                    }
                    for tp in tps {
                        *generation += 1;
                        let shared = Arc::new(PartShared {
                            acked_next: AtomicI64::new(-1),
                            pending: AtomicUsize::new(0),
                            revoked: AtomicBool::new(false),
                        });
                        consumer
                            .context()
                            .parts
                            .lock()
                            .expect("parts lock")
                            .insert(tp.clone(), shared.clone());
                        let (tx, rx) = mpsc::channel(self.cfg.ingest.max_pending_batches.max(1));
                        self.rt.spawn(run_inserter(
                            rx,
                            self.sink.clone(),
                            shared.clone(),
                            self.metrics.clone(),
                            self.cfg.ingest.freshness_target_ms,
                        ));
                        let topic_type = self.cfg.topics.log_type_of(&tp.0);
                        parts.insert(
                            tp,
                            PartState {
                                shared,
                                tx,
                                open: None,
                                waiting: VecDeque::new(),
                                paused: false,
                                stored: None,
                                blocked: None,
                                next_offset: -1,
                                committed_next: -1,
                                topic_type,
                                generation: *generation,
                            },
                        );
                    }
                }
            }
        }
    }

    /// Parses one message into its partition's open batch (or holds it while
    /// its partition waits for ClickHouse).
    fn handle<M: Hold>(
        &self,
        consumer: &BaseConsumer<Ctx>,
        msg: &M,
        parts: &mut HashMap<Tp, PartState>,
        limits: &Limits,
        blimits: &BatchLimits,
    ) {
        // Topic names are interned: no allocation per message for the lookup key.
        let topic = match self.topic_names.iter().find(|t| ***t == *msg.topic()) {
            Some(t) => t.clone(),
            None => Arc::from(msg.topic()),
        };
        let key: Tp = (topic, msg.partition());
        let Some(part) = parts.get_mut(&key) else {
            debug!(
                topic = msg.topic(),
                partition = msg.partition(),
                "message for a partition not owned; ignored"
            );
            return;
        };
        let offset = msg.offset();
        if offset < part.next_offset {
            return; // redelivered after pause/resume
        }
        if let Some(b) = part.blocked.as_mut() {
            if b.held.back().is_none_or(|m| m.offset() < offset) {
                b.held.push_back(msg.hold());
            }
            return;
        }
        if part.stored.is_none() {
            self.block(
                consumer,
                &key,
                part,
                Question::Recover {
                    from_offset: offset,
                },
                msg,
            );
            return;
        }
        let meta = MsgMeta {
            topic: msg.topic(),
            partition: msg.partition(),
            offset,
            kafka_ts_ms: msg.timestamp().to_millis().unwrap_or(0),
        };
        let now_ms = now_ms();
        let payload = msg.payload();
        let (env, rejected) = match route::envelope(payload, limits) {
            Ok(env) => (Some(env), None),
            Err(rej) => (None, Some(rej)),
        };
        let outcome = match (&env, rejected) {
            (Some(env), _) => route::parse(
                payload.unwrap_or_default(),
                env,
                part.topic_type,
                limits,
                now_ms,
            ),
            (None, rej) => Err(rej.expect("no envelope without a rejection")),
        };
        let (table, event_ts_ms) = match &outcome {
            Ok(rec) => (rec.table(), Some(rec.event_ts_ms())),
            Err(_) => (Table::DeadLetter, None),
        };
        let stored = part.stored.as_mut().expect("checked above");
        stored.forget_below(offset);
        let skip = match stored.check(table, offset) {
            Check::Store => false,
            Check::Skip => true,
            Check::Verify(range) => {
                // The first message of an unverified ledger range: ask
                // ClickHouse whether it is this message that is stored.
                let (_, ingested_at) = stored.range(range);
                let ts_secs = match event_ts_ms {
                    Some(ts) => (datetime_secs(ts), datetime_secs(ts)),
                    None => (ingested_at.saturating_sub(86_400), ingested_at),
                };
                let q = Question::Verify {
                    range,
                    table,
                    offset,
                    kafka_ts_ms: meta.kafka_ts_ms,
                    ts_secs,
                };
                self.block(consumer, &key, part, q, msg);
                return;
            }
        };
        part.next_offset = offset + 1;
        self.metrics
            .consumed
            .with_label_values(&[msg.topic()])
            .inc();
        let batch = part
            .open
            .get_or_insert_with(|| Batch::new(key.0.clone(), key.1, offset, part.generation));
        batch.last_offset = offset;
        batch.kafka_ts_ms.push(meta.kafka_ts_ms);
        match (outcome, &env) {
            (Ok(rec), Some(env)) => {
                if skip {
                    batch.skipped += 1;
                } else {
                    let tr = batch.table(table);
                    route::encode(&rec, env, &meta, now_ms, &mut tr.bytes);
                    tr.rows += 1;
                    tr.note_ts(rec.event_ts_ms(), meta.kafka_ts_ms);
                }
            }
            (Ok(_), None) => unreachable!("a record needs an envelope"),
            (Err(rej), _) => {
                self.metrics
                    .dead_letters
                    .with_label_values(&[msg.topic(), rej.reason])
                    .inc();
                if skip {
                    batch.skipped += 1;
                } else {
                    let raw = payload.unwrap_or_default();
                    let tr = batch.table(Table::DeadLetter);
                    route::encode_dead_letter(
                        &rej,
                        raw,
                        &meta,
                        now_ms,
                        self.cfg.ingest.dead_letter_max_bytes,
                        &mut tr.bytes,
                    );
                    tr.rows += 1;
                    tr.note_ts(now_ms, meta.kafka_ts_ms);
                    batch.push_dead_letter(DeadLetter {
                        offset,
                        reason: rej.reason,
                        error: rej.error,
                        // A too_large message cannot go to the DLQ topic whole (it is
                        // over the limit by definition; the producer refused 10 MB and
                        // the partition stalled): like the table, keep its head.
                        payload: raw[..raw.len().min(if rej.reason == "too_large" {
                            self.cfg.ingest.dead_letter_max_bytes
                        } else {
                            self.cfg.ingest.max_message_bytes
                        })]
                            .to_vec(),
                    });
                }
            }
        }
        if batch.is_full(blimits) {
            let b = part.open.take().expect("open batch");
            self.seal(part, b);
        }
    }

    /// Pauses the partition, holds `msg` and asks `q` on the runtime.
    fn block<M: Hold>(
        &self,
        consumer: &BaseConsumer<Ctx>,
        (topic, partition): &Tp,
        part: &mut PartState,
        q: Question,
        msg: &M,
    ) {
        let rx = self.ask(topic.clone(), *partition, q.clone());
        part.blocked = Some(Blocked {
            rx,
            question: q,
            held: VecDeque::from([msg.hold()]),
        });
        self.set_paused(consumer, topic, *partition, part, true);
    }

    /// Applies the answers that came in, then handles the held messages of
    /// those partitions (a message may raise the next question).
    fn take_answers(
        &self,
        consumer: &BaseConsumer<Ctx>,
        parts: &mut HashMap<Tp, PartState>,
        limits: &Limits,
        blimits: &BatchLimits,
    ) {
        let mut ready = Vec::new();
        for (tp, part) in parts.iter_mut() {
            let Some(b) = part.blocked.as_mut() else {
                continue;
            };
            let answer = match b.rx.try_recv() {
                Ok(a) => a,
                Err(oneshot::error::TryRecvError::Empty) => continue,
                // The task gave up (shutdown): ask again.
                Err(oneshot::error::TryRecvError::Closed) => {
                    if !self.shutdown.load(Ordering::Acquire) {
                        b.rx = self.ask(tp.0.clone(), tp.1, b.question.clone());
                    }
                    continue;
                }
            };
            let b = part.blocked.take().expect("blocked");
            match answer {
                Answer::Recovered(stored) => {
                    if !stored.is_empty() {
                        info!(topic = %tp.0, partition = tp.1, from_offset = b.held.front().map(|m| m.offset()),
                              ranges = stored.len(), "recovery: skipping offsets ClickHouse already stored");
                    }
                    part.stored = Some(stored);
                }
                Answer::Verified { range, found } => {
                    let stored = part.stored.as_mut().expect("verified after recovery");
                    if found {
                        stored.verified(range);
                    } else {
                        let dropped = stored.stale(range);
                        warn!(topic = %tp.0, partition = tp.1, offset = b.held.front().map(|m| m.offset()),
                              ranges = dropped,
                              "recovery: the ledger's ranges at this offset hold other messages (the \
                               topic was recreated or the broker lost its log); storing these messages");
                        self.metrics
                            .stale_ledger_ranges
                            .with_label_values(&[&tp.0])
                            .inc_by(dropped as u64);
                    }
                }
            }
            ready.push((tp.clone(), b.held));
        }
        for (_, held) in ready {
            for msg in &held {
                self.handle(consumer, msg, parts, limits, blimits);
            }
        }
    }

    /// Asks `q` about `topic`/`partition` in a task that retries until
    /// ClickHouse answers, the asker is gone (revoked) or shutdown.
    fn ask(&self, topic: Arc<str>, partition: i32, q: Question) -> oneshot::Receiver<Answer> {
        let (tx, rx) = oneshot::channel();
        let sink = self.sink.clone();
        let shutdown = self.shutdown.clone();
        let mut backoff = common::backoff::Backoff::new(
            Duration::from_millis(self.cfg.ingest.retry_min_ms),
            Duration::from_millis(self.cfg.ingest.retry_max_ms),
        );
        self.rt.spawn(async move {
            let what = match q {
                Question::Recover { .. } => "recovery",
                Question::Verify { .. } => "recovery check",
            };
            loop {
                if tx.is_closed() || shutdown.load(Ordering::Acquire) {
                    return;
                }
                let answer = match &q {
                    Question::Recover { from_offset } => {
                        let prefix = recovery::query_id_prefix(&topic, partition);
                        let wait = recovery::wait_no_running_inserts(
                            &sink.ch,
                            &sink.processes,
                            &prefix,
                            Duration::from_secs(120),
                        );
                        match wait.await {
                            Ok(()) => recovery::stored_since(
                                &sink.ch,
                                &sink.db,
                                &topic,
                                partition,
                                *from_offset,
                            )
                            .await
                            .map(Answer::Recovered),
                            Err(e) => Err(e),
                        }
                    }
                    Question::Verify {
                        range,
                        table,
                        offset,
                        kafka_ts_ms,
                        ts_secs,
                    } => recovery::row_stored(
                        &sink.ch,
                        &sink.db,
                        *table,
                        &topic,
                        partition,
                        *offset,
                        *kafka_ts_ms,
                        *ts_secs,
                    )
                    .await
                    .map(|found| Answer::Verified {
                        range: *range,
                        found,
                    }),
                };
                match answer {
                    Ok(a) => {
                        let _ = tx.send(a);
                        return;
                    }
                    Err(e) => {
                        let d = backoff.next_delay();
                        warn!(topic = %topic, partition, error = %format!("{e:#}"),
                              retry_in_ms = d.as_millis() as u64,
                              "{what}: ClickHouse not answering; retrying");
                        tokio::time::sleep(d).await;
                    }
                }
            }
        });
        rx
    }

    /// A subscribed topic that vanished (deleted, or a broker that lost its
    /// log) is created again, as at start (`run::ensure_topics`; at most every
    /// 10 s, in the background): the joined topic, for one, is otherwise only
    /// recreated by whatever a broker makes of the joiner's next produce.
    fn recreate_missing_topics(&self, e: &KafkaError, last: &mut Option<Instant>) {
        let missing = matches!(
            e.rdkafka_error_code(),
            Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic)
        );
        if !missing || last.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
            return;
        }
        *last = Some(Instant::now());
        let cfg = self.cfg.clone();
        let topics: Vec<String> = self.topic_names.iter().map(|t| t.to_string()).collect();
        self.rt.spawn(async move {
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            if let Err(e) = crate::run::ensure_topics(&cfg, &names).await {
                warn!(error = %format!("{e:#}"), "recreating missing topics failed");
            }
        });
    }

    fn seal(&self, part: &mut PartState, b: Batch) {
        self.metrics.pending_batches.inc();
        part.waiting.push_back(b);
        self.drain_waiting(part);
    }

    /// Moves waiting batches into the inserter's queue; pauses the partition
    /// while the queue is full.
    fn drain_waiting(&self, part: &mut PartState) {
        while let Some(b) = part.waiting.pop_front() {
            part.shared.pending.fetch_add(1, Ordering::AcqRel);
            match part.tx.try_send(b) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(b))
                | Err(mpsc::error::TrySendError::Closed(b)) => {
                    part.shared.pending.fetch_sub(1, Ordering::AcqRel);
                    part.waiting.push_front(b);
                    break;
                }
            }
        }
    }

    fn housekeeping(
        &self,
        consumer: &BaseConsumer<Ctx>,
        parts: &mut HashMap<Tp, PartState>,
        blimits: &BatchLimits,
    ) {
        let mut buffered = 0usize;
        for ((topic, p), part) in parts.iter_mut() {
            if part.open.as_ref().is_some_and(|b| b.is_due(blimits)) {
                let b = part.open.take().expect("open batch");
                self.seal(part, b);
            }
            self.drain_waiting(part);
            let want_pause = !part.waiting.is_empty() || part.blocked.is_some();
            self.set_paused(consumer, topic, *p, part, want_pause);
            buffered += part.open.as_ref().map_or(0, |b| b.bytes());
            buffered += part.waiting.iter().map(|b| b.bytes()).sum::<usize>();
        }
        self.metrics.buffered_bytes.set(buffered as i64);
    }

    /// Pauses or resumes fetching one partition (no-op when already so).
    fn set_paused(
        &self,
        consumer: &BaseConsumer<Ctx>,
        topic: &str,
        p: i32,
        part: &mut PartState,
        want_pause: bool,
    ) {
        if want_pause == part.paused {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, p);
        let res = if want_pause {
            consumer.pause(&tpl)
        } else {
            consumer.resume(&tpl)
        };
        match res {
            Ok(()) => {
                part.paused = want_pause;
                if want_pause {
                    self.metrics.paused_partitions.inc();
                    debug!(topic = %topic, partition = p, "paused: waiting for ClickHouse");
                } else {
                    self.metrics.paused_partitions.dec();
                }
            }
            Err(e) => warn!(error = %e, "pause/resume failed"),
        }
    }

    fn commit(
        &self,
        consumer: &BaseConsumer<Ctx>,
        parts: &mut HashMap<Tp, PartState>,
        mode: CommitMode,
    ) {
        let due: Vec<(Tp, Arc<PartShared>)> = parts
            .iter()
            .filter(|(_, p)| p.shared.acked_next.load(Ordering::Acquire) > p.committed_next)
            .map(|(tp, p)| (tp.clone(), p.shared.clone()))
            .collect();
        if due.is_empty() {
            return;
        }
        if commit_acked(consumer, &due, &self.metrics, mode) {
            for (tp, s) in due {
                if let Some(p) = parts.get_mut(&tp) {
                    p.committed_next = s.acked_next.load(Ordering::Acquire).max(p.committed_next);
                }
            }
        }
    }
}

/// Writes one partition's batches in order; acknowledges each by advancing
/// `acked_next`. Gives up (without acknowledging) on revocation or shutdown.
async fn run_inserter(
    mut rx: mpsc::Receiver<Batch>,
    sink: Arc<Sink>,
    shared: Arc<PartShared>,
    metrics: Metrics,
    freshness_target_ms: u64,
) {
    let mut abandoned = false;
    while let Some(mut batch) = rx.recv().await {
        if !abandoned && !shared.revoked.load(Ordering::Acquire) {
            let (rows, bytes) = (batch.rows(), batch.bytes());
            match sink.write(&mut batch, &shared.revoked).await {
                Ok(()) => {
                    let now = now_ms();
                    for ts in &batch.kafka_ts_ms {
                        let lag_ms = (now - ts).max(0);
                        metrics.freshness_seconds.observe(lag_ms as f64 / 1000.0);
                        if lag_ms as u64 <= freshness_target_ms {
                            metrics.freshness_within_target.inc();
                        }
                    }
                    metrics
                        .freshness_events
                        .inc_by(batch.kafka_ts_ms.len() as u64);
                    metrics.batch_rows.observe(rows as f64);
                    metrics.batch_bytes.observe(bytes as f64);
                    if batch.skipped > 0 {
                        metrics
                            .skipped_recovered
                            .with_label_values(&[&batch.topic])
                            .inc_by(batch.skipped as u64);
                    }
                    shared
                        .acked_next
                        .store(batch.last_offset + 1, Ordering::Release);
                }
                Err(why) => {
                    info!(topic = %batch.topic, partition = batch.partition, first_offset = batch.first_offset,
                          reason = ?why, "batch abandoned; the partition's next reader will write it");
                    abandoned = true;
                }
            }
        }
        metrics.pending_batches.dec();
        shared.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
