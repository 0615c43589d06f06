//! One consumer thread: a Kafka group member that parses its partitions'
//! messages straight into the open blocks of their destinations
//! ([`crate::batching`]) and hands due blocks to the sink (tasks on the tokio
//! runtime), so parsing overlaps writing and every destination is written
//! beside the others.
//!
//! Invariants:
//! - an offset is committed only after every message below it was
//!   acknowledged by every destination it went to ([`crate::commit`]);
//! - the blocks of one destination hold increasing offsets of each
//!   partition; several may be written at once (recovery checks each
//!   message against the ledger ranges, so their order does not matter);
//! - at most `max_pending_batches` full blocks per destination wait for a
//!   free INSERT slot; beyond that every partition is paused (bounded memory);
//! - on revocation, no INSERT holding the revoked partitions' rows starts,
//!   the ones sending them get a bounded grace, acknowledged offsets are
//!   committed, then the partitions are released ([`crate::source`]);
//! - the poll loop never waits for ClickHouse: recovery and ledger checks run
//!   as tasks while their partition is paused and its delivered messages are
//!   held (see [`Blocked`]), so a slow or frozen ClickHouse cannot push the
//!   member past `max.poll.interval.ms` or stall the other partitions.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use common::Config;
use prometheus::local::LocalHistogram;
use prometheus::IntCounter;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message, OwnedMessage};
use rdkafka::topic_partition_list::TopicPartitionList;
use schemas::LogType;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use crate::batching::{DeadLetter, Dest, FlushPolicy, Lanes, DESTS};
use crate::commit::{self, PartShared};
use crate::metrics::Metrics;
use crate::recovery::{self, Check, Running, Stored};
use crate::route::{self, Limits, MsgMeta};
use crate::rowbinary::datetime_secs;
use crate::sink::{Abandoned, Sink, Written};
use crate::source::{self, Ctx, Event, Tp};
use crate::table::Table;

/// What the consumer thread keeps per owned partition.
struct PartState {
    shared: Arc<PartShared>,
    paused: bool,
    /// None until the first message: then recovery reads what is already stored.
    stored: Option<Stored>,
    /// Waiting for ClickHouse (recovery or a ledger check); paused meanwhile.
    blocked: Option<Blocked>,
    /// Messages below this offset were already handled (guards redelivery).
    next_offset: i64,
    committed_next: i64,
    topic_type: Option<LogType>,
    /// (block id, part index) of this partition in each destination's open
    /// block: no lookup per row.
    slots: [Option<(u64, u32)>; DESTS],
    /// `consumed_total{topic}` of this partition's topic (no label lookup per message).
    consumed: IntCounter,
}

/// A block the sink finished.
struct Done {
    dest: Dest,
    opened_at: Instant,
    result: Result<Written, Abandoned>,
}

/// The consumer loop's own state.
struct Loop {
    lanes: Lanes,
    limits: Limits,
    done_tx: std_mpsc::Sender<Done>,
    done_rx: std_mpsc::Receiver<Done>,
    /// Kafka append → fetched, per message (flushed to the registry in housekeeping).
    fetch: LocalHistogram,
    /// When blocks acknowledged since the last commit were acknowledged.
    acked: Vec<Instant>,
    /// What this thread last added to the shared gauges.
    gauges: (i64, i64),
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
    /// The input topic names, shared by every block and lookup key.
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

    /// The flush policy of `[ingest]`.
    pub fn flush_policy(cfg: &Config) -> FlushPolicy {
        let i = &cfg.ingest;
        FlushPolicy {
            max_rows: i.batch_max_rows.max(1),
            max_bytes: i.batch_max_bytes.max(1),
            flush_interval: Duration::from_millis(i.flush_interval_ms),
            flush_age_ms: i.flush_age_ms as i64,
            late_ms: i.freshness_target_ms as i64,
            max_inflight: i.max_inflight_inserts.max(1),
            max_queued: i.max_pending_batches,
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
        let consumer = source::consumer(&self.cfg, self.id, &self.metrics)?;
        let topics = Self::input_topics(&self.cfg);
        let topic_refs: Vec<&str> = topics.iter().map(|s| s.as_str()).collect();
        consumer
            .subscribe(&topic_refs)
            .with_context(|| format!("subscribing to {topics:?}"))?;
        info!(worker = self.id, topics = ?topics, "consuming");

        let (done_tx, done_rx) = std_mpsc::channel();
        let mut st = Loop {
            lanes: Lanes::new(Self::flush_policy(&self.cfg), (self.id as u64) << 48),
            limits: self.limits(),
            done_tx,
            done_rx,
            fetch: self.metrics.stage_fetch.local(),
            acked: Vec::new(),
            gauges: (0, 0),
        };
        let mut parts: HashMap<Tp, PartState> = HashMap::new();
        let mut last_commit = Instant::now();
        let mut last_housekeeping = Instant::now();
        let mut last_recreate: Option<Instant> = None;
        let mut watch = common::kafka::StuckGroupWatch::for_config(&self.cfg.kafka);

        while !self.shutdown.load(Ordering::Acquire) {
            let polled = consumer.poll(Duration::from_millis(20));
            self.apply_events(&consumer, &mut parts);
            let idle = polled.is_none();
            match polled {
                Some(Ok(msg)) => self.handle(&consumer, &msg, &mut parts, &mut st),
                Some(Err(e)) => {
                    warn!(error = %e, "Kafka consumer error");
                    self.recreate_missing_topics(&e, &mut last_recreate);
                }
                None => {}
            }
            // Flushing due blocks, taking finished ones and pausing are cheap
            // but not per message: at most every 5 ms, or when the poll was idle.
            // One clock read per message serves both timers (a clock read is
            // ~2 % of the worker's CPU in bulk: perf, bench/README.md).
            let now = Instant::now();
            if idle || now.duration_since(last_housekeeping) >= Duration::from_millis(5) {
                self.take_answers(&consumer, &mut parts, &mut st);
                self.take_done(&mut st);
                self.flush(&mut st, false);
                self.housekeeping(&consumer, &mut parts, &mut st);
                last_housekeeping = Instant::now();
            }
            if now.duration_since(last_commit) >= Duration::from_millis(100) {
                self.commit(&consumer, &mut parts, &mut st, CommitMode::Async);
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

        info!(worker = self.id, "shutting down: writing open blocks");
        let deadline = Instant::now() + self.sink.shutdown_grace + Duration::from_secs(5);
        loop {
            self.take_done(&mut st);
            self.flush(&mut st, true);
            self.housekeeping(&consumer, &mut parts, &mut st);
            if st.lanes.is_idle() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.commit(&consumer, &mut parts, &mut st, CommitMode::Sync);
        consumer.unsubscribe();
        info!(worker = self.id, "stopped");
        Ok(())
    }

    fn apply_events(&self, consumer: &BaseConsumer<Ctx>, parts: &mut HashMap<Tp, PartState>) {
        let events = std::mem::take(&mut *consumer.context().events.lock().expect("events lock"));
        for ev in events {
            match ev {
                Event::Revoked(tps) => {
                    // Their rows still in blocks are left out of every write
                    // (the partition's PartShared is marked revoked).
                    for tp in tps {
                        if let Some(p) = parts.remove(&tp) {
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
                        let shared = Arc::new(PartShared::default());
                        consumer
                            .context()
                            .parts
                            .lock()
                            .expect("parts lock")
                            .insert(tp.clone(), shared.clone());
                        let topic_type = self.cfg.topics.log_type_of(&tp.0);
                        let consumed = self.metrics.consumed.with_label_values(&[&tp.0]);
                        parts.insert(
                            tp,
                            PartState {
                                shared,
                                paused: false,
                                stored: None,
                                blocked: None,
                                next_offset: -1,
                                committed_next: -1,
                                topic_type,
                                slots: [None; DESTS],
                                consumed,
                            },
                        );
                    }
                }
            }
        }
    }

    /// Parses one message into its destinations' open blocks (or holds it
    /// while its partition waits for ClickHouse).
    fn handle<M: Hold>(
        &self,
        consumer: &BaseConsumer<Ctx>,
        msg: &M,
        parts: &mut HashMap<Tp, PartState>,
        st: &mut Loop,
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
        let limits = &st.limits;
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
        part.consumed.inc();
        st.fetch
            .observe((now_ms - meta.kafka_ts_ms).max(0) as f64 / 1000.0);
        match (outcome, &env) {
            (Ok(_), _) if skip => {
                self.metrics
                    .skipped_recovered
                    .with_label_values(&[msg.topic()])
                    .inc();
            }
            (Ok(rec), Some(env)) => {
                if env.continuation.is_some() {
                    self.metrics
                        .multiline_rows
                        .with_label_values(&[msg.topic()])
                        .inc();
                }
                let dest = Dest::Table(table);
                let (b, pi) = st
                    .lanes
                    .open_for(dest, &mut part.slots, &key, &part.shared, offset);
                let buf = b.push_row(pi, offset, meta.kafka_ts_ms, rec.event_ts_ms());
                route::encode(&rec, env, &meta, now_ms, buf);
                st.lanes.seal_if_full(dest);
            }
            (Ok(_), None) => unreachable!("a record needs an envelope"),
            (Err(rej), _) => {
                self.metrics
                    .dead_letters
                    .with_label_values(&[msg.topic(), rej.reason])
                    .inc();
                if skip {
                    self.metrics
                        .skipped_recovered
                        .with_label_values(&[msg.topic()])
                        .inc();
                } else {
                    let raw = payload.unwrap_or_default();
                    let dest = Dest::Table(Table::DeadLetter);
                    let (b, pi) =
                        st.lanes
                            .open_for(dest, &mut part.slots, &key, &part.shared, offset);
                    let buf = b.push_row(pi, offset, meta.kafka_ts_ms, now_ms);
                    route::encode_dead_letter(
                        &rej,
                        raw,
                        &meta,
                        now_ms,
                        self.cfg.ingest.dead_letter_max_bytes,
                        buf,
                    );
                    st.lanes.seal_if_full(dest);
                    // A too_large message cannot go to the DLQ topic whole (it is
                    // over the limit by definition; the producer refused 10 MB and
                    // the partition stalled): like the table, keep its head.
                    let cap = if rej.reason == "too_large" {
                        self.cfg.ingest.dead_letter_max_bytes
                    } else {
                        self.cfg.ingest.max_message_bytes
                    };
                    let dest = Dest::DeadLetterTopic;
                    let (b, pi) =
                        st.lanes
                            .open_for(dest, &mut part.slots, &key, &part.shared, offset);
                    b.push_row(pi, offset, meta.kafka_ts_ms, now_ms);
                    b.push_letter(DeadLetter {
                        reason: rej.reason,
                        error: rej.error,
                        payload: raw[..raw.len().min(cap)].to_vec(),
                    });
                    st.lanes.seal_if_full(dest);
                }
            }
        }
        part.shared.handled(offset + 1);
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
        st: &mut Loop,
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
                self.handle(consumer, msg, parts, st);
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
                        let running = Running::Partition {
                            topic: topic.to_string(),
                            partition,
                        };
                        let wait = recovery::wait_no_running_inserts(
                            &sink.ch,
                            &sink.processes,
                            &running,
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

    /// Hands the blocks that are due (all, when `flush_all`) to the sink.
    fn flush(&self, st: &mut Loop, flush_all: bool) {
        for mut block in st.lanes.take_ready(Instant::now(), now_ms(), flush_all) {
            let sink = self.sink.clone();
            let tx = st.done_tx.clone();
            self.rt.spawn(async move {
                let result = sink.write(&mut block).await;
                let _ = tx.send(Done {
                    dest: block.dest,
                    opened_at: block.opened_at,
                    result,
                });
            });
        }
    }

    /// Takes the blocks the sink finished: frees their slots, records the stages.
    fn take_done(&self, st: &mut Loop) {
        while let Ok(done) = st.done_rx.try_recv() {
            st.lanes.finished(done.dest);
            match done.result {
                Ok(w) => {
                    let m = &self.metrics;
                    m.stage_wait
                        .observe(w.sent_at.duration_since(done.opened_at).as_secs_f64());
                    m.stage_insert
                        .observe(w.acked_at.duration_since(w.sent_at).as_secs_f64());
                    st.acked.push(w.acked_at);
                }
                Err(why) => {
                    info!(dest = done.dest.name(), reason = ?why,
                          "block abandoned; its partitions' next reader will write it");
                }
            }
        }
    }

    fn housekeeping(
        &self,
        consumer: &BaseConsumer<Ctx>,
        parts: &mut HashMap<Tp, PartState>,
        st: &mut Loop,
    ) {
        let backpressure = st.lanes.backpressure();
        for ((topic, p), part) in parts.iter_mut() {
            let want_pause = backpressure || part.blocked.is_some();
            self.set_paused(consumer, topic, *p, part, want_pause);
        }
        st.fetch.flush();
        // Gauges are shared by the consumer threads: add this one's change.
        let now = (
            st.lanes.pending_blocks() as i64,
            st.lanes.buffered_bytes() as i64,
        );
        self.metrics.pending_batches.add(now.0 - st.gauges.0);
        self.metrics.buffered_bytes.add(now.1 - st.gauges.1);
        st.gauges = now;
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
        st: &mut Loop,
        mode: CommitMode,
    ) {
        let list: Vec<(&str, i32, &Arc<PartShared>, i64)> = parts
            .iter()
            .map(|((t, p), s)| (&**t, *p, &s.shared, s.committed_next))
            .collect();
        let next = commit::commit(consumer, &list, &self.metrics, mode);
        let moved = list.iter().zip(&next).any(|(l, n)| *n > l.3);
        drop(list);
        for (s, n) in parts.values_mut().zip(next) {
            s.committed_next = n;
        }
        if moved || st.lanes.is_idle() {
            let now = Instant::now();
            for a in st.acked.drain(..) {
                self.metrics
                    .stage_commit
                    .observe(now.duration_since(a).as_secs_f64());
            }
        }
    }
}

/// The open block of `dest`, with `part` added to it if this is its first row there.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
