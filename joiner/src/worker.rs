//! One consumer thread: a member of `kafka.joiner_group` over the exposure and
//! interaction topics. Any worker may own any partition: all state is in Redis.
//!
//! ```text
//! poll ─▶ parse (invalid: counted, skipped) ─▶ collecting batch (≤ batch_max, ≤ batch_max_wait_ms)
//!   sealed batch ─▶ task on the runtime: Redis pipeline (retried) ─▶ produce joined (retried)
//!                   ─▶ acked offsets ─▶ consumer thread commits
//! ```
//!
//! Invariants:
//! - an offset is committed only after the Redis pipeline of its batch
//!   succeeded and every joined event of the batch was acknowledged by Kafka;
//! - one batch in flight and one being collected (bounded memory); if the
//!   batch in flight takes longer than [`STALL_AFTER`] (Redis or Kafka down or
//!   slow), the assignment is paused and the thread keeps polling (group
//!   membership, rebalances) until the batch is done;
//! - batches run one after another, so two events of one partition reach
//!   Redis in partition order;
//! - on revocation the batch in flight may finish (bounded wait) and the
//!   acknowledged offsets are committed synchronously; messages of revoked
//!   partitions that were only collected are dropped (the next owner reads them).
//!   Re-running any batch is harmless: the scripts are idempotent and joined ids
//!   deterministic.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use common::backoff::Backoff;
use common::Config;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use schemas::{Envelope, Exposure, Interaction, LogType};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use crate::align;
use crate::join::{Event, JoinParams};
use crate::metrics::Metrics;
use crate::output::{OutRecord, Output};
use crate::progress;
use crate::rebuild::{self, Guard, GuardKeys, GuardReply, Loss};
use crate::store::{Commands, Store, StoreError};

type Tp = (Arc<str>, i32);

/// How long the consumer thread waits for the batch in flight before it
/// pauses its assignment and polls while waiting.
pub const STALL_AFTER: Duration = Duration::from_secs(2);
/// How long a revocation waits for the batch in flight.
const REVOKE_GRACE: Duration = Duration::from_secs(15);
/// A thread with nothing to do runs the Redis-loss guard alone this often,
/// so that partitions that get no messages are rebuilt after a loss too
/// (their lost exposures would leave other partitions' interactions parked).
const IDLE_GUARD_EVERY: Duration = Duration::from_secs(5);

/// State shared by the consumer thread, its rebalance callbacks and the batch task.
pub struct Shared {
    /// Owned partitions and the generation of their assignment.
    owned: Mutex<HashMap<Tp, u64>>,
    generation: AtomicU64,
    /// Next offset to commit per partition (work acknowledged), and whether committed.
    acked: Mutex<HashMap<Tp, (i64, bool)>>,
    inflight: AtomicBool,
    events: Mutex<Vec<Rebal>>,
    metrics: Metrics,
    /// This thread's Redis-loss guard (see [`crate::rebuild`]).
    guard: Guard,
    /// When a statistics sample last saw each partition's consumer lag at 0
    /// (ms; see [`crate::progress`]).
    caught_up: Mutex<HashMap<Tp, i64>>,
}

enum Rebal {
    Assigned(Vec<Tp>),
    Revoked(Vec<Tp>),
}

impl Shared {
    /// Records a finished batch's offsets for the partitions still owned by
    /// the same assignment.
    fn ack(&self, offsets: &HashMap<Tp, (i64, u64)>) {
        let owned = self.owned.lock().expect("owned lock");
        let mut acked = self.acked.lock().expect("acked lock");
        for (tp, (next, gen)) in offsets {
            if owned.get(tp) == Some(gen) {
                let e = acked.entry(tp.clone()).or_insert((-1, true));
                if *next > e.0 {
                    *e = (*next, false);
                }
            }
        }
    }

    /// The partitions owned now, sorted (the guard reads their markers).
    fn owned_tps(&self) -> Vec<Tp> {
        let mut v: Vec<Tp> = self
            .owned
            .lock()
            .expect("owned lock")
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// The caught-up samples of the partitions owned now.
    fn caught_up_owned(&self) -> HashMap<Tp, i64> {
        let owned = self.owned.lock().expect("owned lock");
        let caught = self.caught_up.lock().expect("caught_up lock");
        caught
            .iter()
            .filter(|(tp, _)| owned.contains_key(*tp))
            .map(|(tp, t)| (tp.clone(), *t))
            .collect()
    }

    /// The next offset known processed (acknowledged) of `tp`, if any.
    fn acked_next(&self, tp: &Tp) -> Option<i64> {
        self.acked
            .lock()
            .expect("acked lock")
            .get(tp)
            .map(|e| e.0)
            .filter(|n| *n >= 0)
    }

    fn still_owned(&self, offsets: &HashMap<Tp, (i64, u64)>) -> bool {
        let owned = self.owned.lock().expect("owned lock");
        offsets
            .iter()
            .any(|(tp, (_, gen))| owned.get(tp) == Some(gen))
    }
}

pub struct Ctx {
    shared: Arc<Shared>,
}

fn tps(tpl: &TopicPartitionList) -> Vec<Tp> {
    tpl.elements()
        .iter()
        .map(|e| (Arc::<str>::from(e.topic()), e.partition()))
        .collect()
}

fn fmt_tps(tps: &[Tp]) -> Vec<String> {
    tps.iter().map(|(t, p)| format!("{t}/{p}")).collect()
}

impl ClientContext for Ctx {
    fn stats(&self, stats: Statistics) {
        common::kafka::record_consumer_lag(&stats, &self.shared.metrics.consumer_lag);
        let now = now_ms();
        let owned = self.shared.owned.lock().expect("owned lock");
        let mut caught = self.shared.caught_up.lock().expect("caught_up lock");
        for tp in owned.keys() {
            let lag = stats
                .topics
                .get(&*tp.0)
                .and_then(|t| t.partitions.get(&tp.1))
                .filter(|p| p.hi_offset >= 0)
                .map(|p| p.consumer_lag);
            if lag == Some(0) {
                caught.insert(tp.clone(), now);
            }
        }
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let revoked = tps(tpl);
        // Let the batch in flight finish so that its offsets are committed
        // before the next owner starts (fewer replays); bounded.
        let deadline = Instant::now() + REVOKE_GRACE;
        while self.shared.inflight.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        commit_acked(consumer, &self.shared, Some(&revoked), CommitMode::Sync);
        {
            let mut owned = self.shared.owned.lock().expect("owned lock");
            let mut acked = self.shared.acked.lock().expect("acked lock");
            for tp in &revoked {
                owned.remove(tp);
                acked.remove(tp);
            }
        }
        info!(partitions = ?fmt_tps(&revoked), "partitions revoked");
        self.shared
            .events
            .lock()
            .expect("events lock")
            .push(Rebal::Revoked(revoked));
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let assigned = tps(tpl);
            let gen = self.shared.generation.fetch_add(1, Ordering::AcqRel) + 1;
            {
                let mut owned = self.shared.owned.lock().expect("owned lock");
                for tp in &assigned {
                    owned.insert(tp.clone(), gen);
                }
            }
            info!(partitions = ?fmt_tps(&assigned), "partitions assigned");
            self.shared
                .events
                .lock()
                .expect("events lock")
                .push(Rebal::Assigned(assigned));
        }
    }
}

/// The partition's high watermark as last seen in a fetch response
/// (librdkafka's cache: no request), if known.
fn cached_high_watermark(consumer: &BaseConsumer<Ctx>, tp: &Tp) -> Option<i64> {
    let topic = std::ffi::CString::new(&*tp.0).ok()?;
    let (mut lo, mut hi) = (-1i64, -1i64);
    // SAFETY: a live client handle, a NUL-terminated topic name and two
    // out-pointers valid for the call; librdkafka only reads its cache.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            tp.1,
            &mut lo,
            &mut hi,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && hi >= 0)
        .then_some(hi)
}

/// Commits the acknowledged offsets not yet committed (of `only`, if given).
fn commit_acked(
    consumer: &BaseConsumer<Ctx>,
    shared: &Shared,
    only: Option<&[Tp]>,
    mode: CommitMode,
) {
    let mut tpl = TopicPartitionList::new();
    let mut due = Vec::new();
    {
        let acked = shared.acked.lock().expect("acked lock");
        for (tp, (next, committed)) in acked.iter() {
            if *committed || *next < 0 || only.is_some_and(|o| !o.contains(tp)) {
                continue;
            }
            let _ = tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(*next));
            due.push((tp.clone(), *next));
        }
    }
    if due.is_empty() {
        return;
    }
    match consumer.commit(&tpl, mode) {
        Ok(()) => {
            shared.metrics.commits.inc();
            let mut acked = shared.acked.lock().expect("acked lock");
            for (tp, next) in due {
                if let Some(e) = acked.get_mut(&tp) {
                    if e.0 == next {
                        e.1 = true;
                    }
                }
            }
        }
        Err(e) => {
            shared.metrics.commit_errors.inc();
            warn!(error = %e, "offset commit failed; will retry");
        }
    }
}

/// A batch being collected: per partition its events, the next offset and
/// the assignment generation its messages were read under.
struct Batch {
    parts: HashMap<Tp, PartBatch>,
    messages: usize,
    started: Instant,
}

struct PartBatch {
    events: Vec<Event>,
    messages: usize,
    /// The batch's first offset of the partition (a rebuild re-reads up to it).
    first: i64,
    next: i64,
    gen: u64,
    /// Kafka timestamp of the partition's last message in the batch (ms; -1 none).
    last_ts: i64,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            parts: HashMap::new(),
            messages: 0,
            started: Instant::now(),
        }
    }

    /// Forgets the messages of revoked partitions (not processed, not
    /// committed: their next owner reads them).
    fn drop_partitions(&mut self, revoked: &[Tp]) {
        for tp in revoked {
            if let Some(p) = self.parts.remove(tp) {
                self.messages -= p.messages;
            }
        }
    }

    /// Seals the batch; `caught_up` is the thread's caught-up samples of the
    /// partitions it owns, taken now (see [`crate::progress`]).
    fn seal(self, caught_up: &HashMap<Tp, i64>) -> Sealed {
        let last_ts: HashMap<Tp, i64> = self
            .parts
            .iter()
            .map(|(tp, p)| (tp.clone(), p.last_ts))
            .collect();
        let progress = progress::merge(&last_ts, caught_up);
        let mut events = Vec::with_capacity(self.parts.values().map(|p| p.events.len()).sum());
        let mut offsets = HashMap::with_capacity(self.parts.len());
        let mut firsts = HashMap::with_capacity(self.parts.len());
        for (tp, p) in self.parts {
            events.extend(p.events);
            offsets.insert(tp.clone(), (p.next, p.gen));
            firsts.insert(tp, p.first);
        }
        // Exposures first: an interaction whose exposure is in the same batch
        // then finds it instead of being parked (the join is symmetric, so the
        // result is the same either way; this only saves park-list writes).
        // The sort is stable: each side keeps its partition order.
        exposures_first(&mut events);
        Sealed {
            events,
            offsets,
            firsts,
            messages: self.messages,
            progress,
        }
    }
}

/// A batch handed to the batch task.
struct Sealed {
    events: Vec<Event>,
    offsets: HashMap<Tp, (i64, u64)>,
    /// First offset per partition.
    firsts: HashMap<Tp, i64>,
    messages: usize,
    /// Progress of the owned partitions, published with the batch.
    progress: Vec<(Tp, i64)>,
}

/// Exposures first, each side in its order (stable sort).
fn exposures_first(events: &mut [Event]) {
    events.sort_by_key(|e| matches!(e, Event::Interaction(_)));
}

/// Everything a consumer thread needs.
pub struct Worker {
    pub cfg: Config,
    pub id: usize,
    pub join: Arc<JoinParams>,
    pub store: Arc<Store>,
    pub output: Arc<Output>,
    pub metrics: Metrics,
    pub shutdown: Arc<AtomicBool>,
    /// When the shutdown began (ms since the epoch; 0 = running).
    pub shutdown_at: Arc<AtomicU64>,
    pub rt: Handle,
    /// Names this thread's Redis-loss guard sequence (unique per process and thread).
    pub token: String,
    /// The process's exposure read positions (catch-up alignment, [`crate::align`]).
    pub frontier: Arc<align::Frontier>,
}

/// What the batch task reports.
struct Done {
    ok: bool,
}

impl Worker {
    pub fn run(self) -> anyhow::Result<()> {
        let shared = Arc::new(Shared {
            owned: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            acked: Mutex::new(HashMap::new()),
            inflight: AtomicBool::new(false),
            events: Mutex::new(Vec::new()),
            metrics: self.metrics.clone(),
            guard: Guard::new(
                GuardKeys::new(
                    &self.cfg.joiner.key_prefix,
                    self.join.protocol.guard_namespace(),
                ),
                self.token.clone(),
            ),
            caught_up: Mutex::new(HashMap::new()),
        });
        let cfg = Arc::new(self.cfg.clone());
        let mut cc = common::kafka::consumer_config(&self.cfg.kafka, &self.cfg.kafka.joiner_group);
        cc.set("statistics.interval.ms", "5000")
            .set("queued.max.messages.kbytes", "16384")
            // Smaller fetch chunks per partition (default 1 MiB): partitions
            // and the two topics interleave finely, so that catch-up
            // alignment ([`crate::align`]) pauses at a fine grain.
            .set("max.partition.fetch.bytes", "131072")
            .set("client.id", format!("adlog-joiner-{}", self.id))
            // librdkafka's default (5 min) is how long a subscription to a
            // topic created after the worker started goes unnoticed.
            .set("topic.metadata.refresh.interval.ms", "10000");
        for (k, v) in &self.cfg.kafka.properties {
            cc.set(k, v);
        }
        let consumer: BaseConsumer<Ctx> = cc
            .create_with_context(Ctx {
                shared: shared.clone(),
            })
            .with_context(|| format!("creating Kafka consumer for {}", self.cfg.kafka.brokers))?;
        let topics = [
            self.cfg.topics.exposure.as_str(),
            self.cfg.topics.interaction.as_str(),
        ];
        consumer
            .subscribe(&topics)
            .with_context(|| format!("subscribing to {topics:?}"))?;
        info!(worker = self.id, topics = ?topics, protocol = ?self.join.protocol, "joining");

        let batch_max = self.cfg.joiner.batch_max.max(1);
        let max_wait = Duration::from_millis(self.cfg.joiner.batch_max_wait_ms);
        // Messages below this offset were already taken into a batch (guards
        // redelivery after pause/resume).
        let mut next_offset: HashMap<Tp, i64> = HashMap::new();
        let mut collecting = Batch::new();
        let mut inflight: Option<oneshot::Receiver<Done>> = None;
        let mut last_commit = Instant::now();
        let mut last_guard = Instant::now();
        let mut watch = common::kafka::StuckGroupWatch::for_config(&self.cfg.kafka);
        let mut align = align::Local::default();

        while !self.shutdown.load(Ordering::Acquire) {
            if collecting.messages < batch_max {
                let wait = if collecting.messages == 0 {
                    Duration::from_millis(100)
                } else {
                    max_wait
                        .saturating_sub(collecting.started.elapsed())
                        .min(Duration::from_millis(100))
                };
                match consumer.poll(wait) {
                    Some(Ok(msg)) => {
                        let taken = self.take(&msg, &shared, &mut collecting, &mut next_offset);
                        if let (Some(tp), Some(ts)) = (taken, msg.timestamp().to_millis()) {
                            let exposure = *tp.0 == *self.cfg.topics.exposure;
                            align.saw(tp, ts, exposure);
                        }
                    }
                    Some(Err(e)) => warn!(error = %e, "Kafka consumer error"),
                    None => {}
                }
            }
            let (_, changed) =
                self.apply_rebalances(&consumer, &shared, &mut collecting, &mut next_offset);
            for tp in changed {
                align.forget(&tp, &self.frontier);
                if *tp.0 == *self.cfg.topics.exposure
                    && shared.owned.lock().expect("owned lock").contains_key(&tp)
                {
                    self.frontier.assigned(&tp, Instant::now());
                }
            }
            if align.last_tick.elapsed() >= align::TICK {
                self.align(&consumer, &mut align, &next_offset);
            }

            if let Some(rx) = inflight.as_mut() {
                if let Ok(done) = rx.try_recv() {
                    inflight = None;
                    align.batch_done(done.ok);
                    self.finished(&consumer, &shared, done);
                    last_commit = Instant::now();
                }
            }
            let due = collecting.messages >= batch_max
                || (collecting.messages > 0 && collecting.started.elapsed() >= max_wait);
            if due {
                if let Some(rx) = inflight.take() {
                    // The next batch is ready but the previous one is still
                    // running: wait for it (pausing consumption if it stalls).
                    let (done, stalled) = self.wait_stalled(
                        &consumer,
                        &shared,
                        rx,
                        &mut collecting,
                        &mut next_offset,
                    );
                    if stalled {
                        // The whole assignment was resumed.
                        align.paused.clear();
                    }
                    align.batch_done(done.ok);
                    self.finished(&consumer, &shared, done);
                }
                if self.shutdown.load(Ordering::Acquire) {
                    break;
                }
                if collecting.messages > 0 {
                    let batch = std::mem::replace(&mut collecting, Batch::new());
                    let sealed = batch.seal(&shared.caught_up_owned());
                    align.sealed();
                    inflight = Some(self.spawn_batch(sealed, &shared, &cfg));
                    last_guard = Instant::now();
                } else {
                    collecting = Batch::new();
                }
            }
            if last_commit.elapsed() >= Duration::from_millis(500) {
                commit_acked(&consumer, &shared, None, CommitMode::Async);
                last_commit = Instant::now();
            }
            if collecting.messages == 0 && inflight.is_none() {
                let owns_any = !shared.owned.lock().expect("owned lock").is_empty();
                if owns_any && last_guard.elapsed() >= IDLE_GUARD_EVERY {
                    // No events: the batch task runs only the guard (and a
                    // rebuild if Redis lost state).
                    let sealed = Batch::new().seal(&shared.caught_up_owned());
                    inflight = Some(self.spawn_batch(sealed, &shared, &cfg));
                    last_guard = Instant::now();
                }
                watch.rejoin_if_stuck(&consumer, &topics, owns_any, &self.metrics.group_rejoins)?;
            }
        }

        info!(
            worker = self.id,
            "shutting down: finishing the batch in flight"
        );
        if let Some(rx) = inflight.take() {
            if let Ok(done) = self.rt.block_on(rx) {
                if !done.ok {
                    warn!(
                        worker = self.id,
                        "the batch in flight was abandoned; it will be replayed"
                    );
                }
            }
        }
        commit_acked(&consumer, &shared, None, CommitMode::Sync);
        consumer.unsubscribe();
        info!(worker = self.id, "stopped");
        Ok(())
    }

    fn finished(&self, consumer: &BaseConsumer<Ctx>, shared: &Shared, done: Done) {
        if done.ok {
            commit_acked(consumer, shared, None, CommitMode::Async);
        }
    }

    /// Parses one message into the collecting batch; returns its partition
    /// when it was taken (owned, not a redelivery of an offset already taken).
    fn take(
        &self,
        msg: &BorrowedMessage<'_>,
        shared: &Shared,
        batch: &mut Batch,
        next_offset: &mut HashMap<Tp, i64>,
    ) -> Option<Tp> {
        let tp: Tp = (Arc::from(msg.topic()), msg.partition());
        let Some(gen) = shared.owned.lock().expect("owned lock").get(&tp).copied() else {
            debug!(
                topic = msg.topic(),
                partition = msg.partition(),
                "message of a partition not owned; ignored"
            );
            return None;
        };
        let offset = msg.offset();
        if offset < next_offset.get(&tp).copied().unwrap_or(-1) {
            return None;
        }
        next_offset.insert(tp.clone(), offset + 1);
        if batch.messages == 0 {
            batch.started = Instant::now();
        }
        batch.messages += 1;
        let part = batch.parts.entry(tp.clone()).or_insert_with(|| PartBatch {
            events: Vec::new(),
            messages: 0,
            first: offset,
            next: -1,
            gen,
            last_ts: -1,
        });
        part.messages += 1;
        if let Some(ts) = msg.timestamp().to_millis() {
            part.last_ts = part.last_ts.max(ts);
        }
        part.next = offset + 1;
        part.gen = gen;
        self.metrics
            .consumed
            .with_label_values(&[msg.topic()])
            .inc();
        match parse(&self.cfg, msg.topic(), msg.payload().unwrap_or_default()) {
            Ok(ev) => part.events.push(ev),
            Err(reason) => {
                self.metrics
                    .invalid
                    .with_label_values(&[msg.topic(), reason])
                    .inc();
            }
        }
        Some(tp)
    }

    /// Applies the rebalances the callbacks queued. Every newly assigned
    /// partition is resumed: librdkafka keeps a partition's pause across a
    /// revoke and a re-assignment to the same member, and [`Self::wait_stalled`]
    /// resumes only what is assigned when its batch finishes. A partition
    /// revoked while paused (a broker frozen past the session timeout) came
    /// back paused and was never fetched again: the joiner stopped joining
    /// (the kafka_broker_frozen_exact scenario). A stall still in progress
    /// pauses the new assignment again. Returns whether partitions were
    /// assigned, and every partition revoked or assigned.
    fn apply_rebalances(
        &self,
        consumer: &BaseConsumer<Ctx>,
        shared: &Shared,
        collecting: &mut Batch,
        next_offset: &mut HashMap<Tp, i64>,
    ) -> (bool, Vec<Tp>) {
        let events = std::mem::take(&mut *shared.events.lock().expect("events lock"));
        let mut assigned = false;
        let mut changed = Vec::new();
        for ev in events {
            let tps = match ev {
                Rebal::Revoked(tps) => {
                    collecting.drop_partitions(&tps);
                    tps
                }
                Rebal::Assigned(tps) => {
                    assigned = true;
                    self.output.recheck_topics();
                    let mut tpl = TopicPartitionList::new();
                    for (t, p) in &tps {
                        tpl.add_partition(t, *p);
                    }
                    if let Err(e) = consumer.resume(&tpl) {
                        warn!(error = %e, "resuming newly assigned partitions failed");
                    }
                    tps
                }
            };
            for tp in &tps {
                next_offset.remove(tp);
            }
            changed.extend(tps);
        }
        (assigned, changed)
    }

    /// Waits for the batch in flight; after [`STALL_AFTER`] pauses the
    /// assignment and keeps polling until it is done (on shutdown the batch
    /// task gives up after the grace period). True with it when it stalled
    /// (the whole assignment was paused, and is resumed now).
    fn wait_stalled(
        &self,
        consumer: &BaseConsumer<Ctx>,
        shared: &Shared,
        mut rx: oneshot::Receiver<Done>,
        collecting: &mut Batch,
        next_offset: &mut HashMap<Tp, i64>,
    ) -> (Done, bool) {
        let quick = self
            .rt
            .block_on(async { tokio::time::timeout(STALL_AFTER, &mut rx).await });
        match quick {
            Ok(Ok(done)) => return (done, false),
            Ok(Err(_)) => return (Done { ok: false }, false),
            Err(_) => {}
        }
        warn!(
            worker = self.id,
            "batch in flight is slow (Redis or Kafka down?): pausing consumption"
        );
        self.metrics.stalled.set(1);
        let mut paused = self.pause_all(consumer);
        let done = loop {
            match rx.try_recv() {
                Ok(done) => break done,
                Err(oneshot::error::TryRecvError::Closed) => break Done { ok: false },
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(msg)) => {
                    self.take(&msg, shared, collecting, next_offset);
                }
                Some(Err(e)) => debug!(error = %e, "Kafka consumer error while paused"),
                None => {}
            }
            // The rebalance callbacks run inside poll(): whether one assigned
            // partitions is known from the events applied, not from a
            // generation read after the poll.
            if self
                .apply_rebalances(consumer, shared, collecting, next_offset)
                .0
            {
                paused = self.pause_all(consumer);
            }
        };
        if let Ok(a) = consumer.assignment() {
            if let Err(e) = consumer.resume(&a) {
                warn!(error = %e, "resume failed");
            }
        } else if let Err(e) = consumer.resume(&paused) {
            warn!(error = %e, "resume failed");
        }
        self.metrics.stalled.set(0);
        info!(
            worker = self.id,
            ok = done.ok,
            "batch in flight done: consumption resumed"
        );
        (done, true)
    }

    /// Catch-up alignment ([`crate::align`]): publishes this thread's
    /// exposure partitions' positions and pauses (resumes) its interaction
    /// partitions that are ahead of (back behind) the exposure frontier.
    fn align(
        &self,
        consumer: &BaseConsumer<Ctx>,
        align: &mut align::Local,
        next_offset: &HashMap<Tp, i64>,
    ) {
        let now = Instant::now();
        align.last_tick = now;
        for (tp, (ts, at, exposure)) in &align.last {
            if !*exposure {
                continue;
            }
            let behind = match (next_offset.get(tp), cached_high_watermark(consumer, tp)) {
                (Some(next), Some(hi)) => *next < hi,
                _ => false,
            };
            let written = align.written.get(tp).copied().unwrap_or(i64::MIN);
            // Taken into a batch not written yet: behind too.
            let behind = behind || written < *ts;
            self.frontier
                .update(tp, written, *at, behind, written < *ts);
        }
        let frontier = self.frontier.get(now);
        let mut pause = TopicPartitionList::new();
        let mut resume = TopicPartitionList::new();
        for (tp, (ts, _, exposure)) in &align.last {
            if *exposure {
                continue;
            }
            match align::decide(align.paused.contains(tp), *ts, frontier) {
                Some(true) => {
                    let _ = pause.add_partition(&tp.0, tp.1);
                }
                Some(false) => {
                    let _ = resume.add_partition(&tp.0, tp.1);
                }
                None => {}
            }
        }
        if pause.count() > 0 || resume.count() > 0 {
            debug!(
                frontier = ?frontier,
                pause = pause.count(),
                resume = resume.count(),
                "catch-up alignment"
            );
        }
        if pause.count() > 0 {
            match consumer.pause(&pause) {
                Ok(()) => {
                    for e in pause.elements() {
                        align.paused.insert((Arc::from(e.topic()), e.partition()));
                    }
                }
                Err(e) => debug!(error = %e, "pausing for catch-up alignment failed"),
            }
        }
        if resume.count() > 0 {
            match consumer.resume(&resume) {
                Ok(()) => {
                    for e in resume.elements() {
                        align.paused.remove(&(Arc::from(e.topic()), e.partition()));
                    }
                }
                Err(e) => debug!(error = %e, "resuming after catch-up alignment failed"),
            }
        }
    }

    fn pause_all(&self, consumer: &BaseConsumer<Ctx>) -> TopicPartitionList {
        match consumer.assignment() {
            Ok(a) => {
                if a.count() > 0 {
                    if let Err(e) = consumer.pause(&a) {
                        warn!(error = %e, "pause failed");
                    }
                }
                a
            }
            Err(_) => TopicPartitionList::new(),
        }
    }

    fn spawn_batch(
        &self,
        batch: Sealed,
        shared: &Arc<Shared>,
        cfg: &Arc<Config>,
    ) -> oneshot::Receiver<Done> {
        let (tx, rx) = oneshot::channel();
        shared.inflight.store(true, Ordering::Release);
        if batch.messages > 0 {
            self.metrics.batch_messages.observe(batch.messages as f64);
        }
        let ctx = BatchCtx {
            join: self.join.clone(),
            store: self.store.clone(),
            output: self.output.clone(),
            metrics: self.metrics.clone(),
            shutdown_at: self.shutdown_at.clone(),
            grace: Duration::from_secs(self.cfg.joiner.shutdown_grace_s),
            retry_min: Duration::from_millis(self.cfg.joiner.retry_min_ms),
            retry_max: Duration::from_millis(self.cfg.joiner.retry_max_ms),
            cfg: cfg.clone(),
        };
        let shared = shared.clone();
        self.rt.spawn(async move {
            let ok = ctx.process(&batch, &shared).await;
            if ok {
                shared.ack(&batch.offsets);
            }
            shared.inflight.store(false, Ordering::Release);
            let _ = tx.send(Done { ok });
        });
        rx
    }
}

struct BatchCtx {
    join: Arc<JoinParams>,
    store: Arc<Store>,
    output: Arc<Output>,
    metrics: Metrics,
    shutdown_at: Arc<AtomicU64>,
    grace: Duration,
    retry_min: Duration,
    retry_max: Duration,
    cfg: Arc<Config>,
}

/// Partitions whose window must be written again, with the epoch per guard tag.
struct Stale {
    tps: Vec<Tp>,
    epochs: Vec<(String, Vec<u8>)>,
    /// The loss found by this thread (`None`: markers of another epoch,
    /// e.g. another joiner found the loss, or the first start on this Redis).
    loss: Option<Loss>,
}

impl BatchCtx {
    /// Give up retrying: the shutdown grace period is over, or every
    /// partition of the batch was revoked (its next owner replays it).
    fn give_up(&self, batch: &Sealed, shared: &Shared) -> bool {
        let at = self.shutdown_at.load(Ordering::Acquire);
        let expired = at > 0 && now_ms().saturating_sub(at as i64) > self.grace.as_millis() as i64;
        expired || (!batch.offsets.is_empty() && !shared.still_owned(&batch.offsets))
    }

    /// Redis pipeline (with the Redis-loss guard; a loss first rebuilds the
    /// window) then produce, each retried with backoff until it succeeds.
    /// `false` if abandoned (see [`give_up`](Self::give_up)).
    async fn process(&self, batch: &Sealed, shared: &Shared) -> bool {
        let mut backoff = Backoff::new(self.retry_min, self.retry_max);
        let records = loop {
            let tags = self.store.guard_tags().await;
            let tps = shared.owned_tps();
            let res = match self
                .redis_stage(&batch.events, shared, &tags, &tps, &batch.progress)
                .await
            {
                Ok((records, guard)) => match self.check_guard(shared, &tags, &tps, &guard).await {
                    Ok(None) => break records,
                    // Rebuilt: run the batch again on the rebuilt state.
                    Ok(Some(stale)) => self.rebuild(batch, shared, &tags, stale).await,
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            if let Err(e) = res {
                self.metrics
                    .batch_retries
                    .with_label_values(&["redis"])
                    .inc();
                if self.give_up(batch, shared) {
                    return false;
                }
                let d = backoff.next_delay();
                warn!(error = %e, retry_in_ms = d.as_millis() as u64, attempt = backoff.attempts(),
                      "Redis step of a batch failed; retrying the batch");
                tokio::time::sleep(d).await;
            }
        };
        self.produce(records, batch, shared).await
    }

    /// Produces `records`, retrying the failed ones with backoff; `false` if abandoned.
    async fn produce(&self, mut records: Vec<OutRecord>, batch: &Sealed, shared: &Shared) -> bool {
        let mut backoff = Backoff::new(self.retry_min, self.retry_max);
        while !records.is_empty() {
            records = self.output.send_all(records).await;
            if records.is_empty() {
                break;
            }
            self.metrics
                .batch_retries
                .with_label_values(&["produce"])
                .inc();
            if self.give_up(batch, shared) {
                return false;
            }
            let d = backoff.next_delay();
            warn!(
                failed = records.len(),
                retry_in_ms = d.as_millis() as u64,
                "producing joined events failed; retrying them"
            );
            tokio::time::sleep(d).await;
        }
        true
    }

    /// Judges the guard's replies: `Some` when partitions must be rebuilt
    /// (after setting a new epoch if this thread found the loss).
    async fn check_guard(
        &self,
        shared: &Shared,
        tags: &[String],
        tps: &[Tp],
        replies: &[GuardReply],
    ) -> Result<Option<Stale>, StoreError> {
        let losses = shared.guard.observe(tags, replies);
        let mut epochs = Vec::with_capacity(tags.len());
        let mut found = None;
        for ((tag, r), loss) in tags.iter().zip(replies).zip(losses) {
            let epoch = match (loss, &r.epoch) {
                (None, Some(e)) => e.clone(),
                (loss, seen) => {
                    let loss = loss.unwrap_or(Loss::EpochMissingAtStart);
                    found = Some(loss);
                    self.metrics
                        .redis_state_losses
                        .with_label_values(&[loss.as_str()])
                        .inc();
                    let key = shared.guard.keys.epoch(tag);
                    let mut cas = redis::cmd("EVAL");
                    cas.arg(rebuild::EPOCH_CAS_LUA)
                        .arg(1)
                        .arg(&key)
                        .arg(rebuild::new_epoch())
                        .arg(rebuild::cas_seen(
                            loss,
                            shared.guard.known_epoch(tag).as_deref(),
                            seen.as_deref(),
                        ));
                    let mut c = Commands::new();
                    c.push(key.as_bytes(), cas);
                    let epoch = match self.store.exec(&c).await?.pop() {
                        Some(redis::Value::BulkString(b)) => b,
                        other => {
                            return Err(StoreError {
                                kind: "redis",
                                detail: format!("epoch check-and-set returned {other:?}"),
                            })
                        }
                    };
                    let epoch_s = String::from_utf8_lossy(&epoch);
                    if loss == Loss::EpochMissingAtStart {
                        info!(tag = %tag, epoch = %epoch_s,
                              "no Redis epoch yet (first start on this Redis, or it lost its state while no joiner ran): rebuilding the window from Kafka");
                    } else {
                        warn!(reason = loss.as_str(), tag = %tag, epoch = %epoch_s,
                              "Redis lost the joiner's state: rebuilding the window from Kafka");
                    }
                    epoch
                }
            };
            shared.guard.set_known_epoch(tag, &epoch);
            epochs.push((tag.clone(), epoch));
        }
        let mut stale: Vec<usize> = Vec::new();
        for ((_, epoch), r) in epochs.iter().zip(replies) {
            stale.extend(rebuild::stale(epoch, &r.rebuilt));
        }
        stale.sort_unstable();
        stale.dedup();
        if stale.is_empty() {
            return Ok(None);
        }
        Ok(Some(Stale {
            tps: stale.into_iter().map(|i| tps[i].clone()).collect(),
            epochs,
            loss: found,
        }))
    }

    /// Re-reads the stale partitions' last window + slack from Kafka into
    /// Redis, producing the joins found, then marks them rebuilt under the
    /// epoch. An `Err` (Redis lost again, Kafka failing, abandoned) is
    /// retried by the caller, which finds the partitions still stale.
    async fn rebuild(
        &self,
        batch: &Sealed,
        shared: &Shared,
        tags: &[String],
        stale: Stale,
    ) -> Result<(), StoreError> {
        let t0 = Instant::now();
        let slack_ms = self.cfg.joiner.rebuild_slack_s as i64 * 1000;
        let from_ms = rebuild::rebuild_from_ms(now_ms(), self.join.window_ms, slack_ms);
        // Up to what this joiner processed: acknowledged batches and the
        // batch that found the loss (run again afterwards); the group's
        // committed offset is the floor (read by the reader).
        let upto: HashMap<Tp, i64> = stale
            .tps
            .iter()
            .map(|tp| {
                let a = shared.acked_next(tp).unwrap_or(-1);
                let f = batch.firsts.get(tp).copied().unwrap_or(-1);
                (tp.clone(), a.max(f))
            })
            .collect();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Event>>(2);
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (cfg, tps, stop) = (self.cfg.clone(), stale.tps.clone(), stop.clone());
            let chunk = self.cfg.joiner.batch_max.max(1);
            tokio::task::spawn_blocking(move || {
                rebuild::read_window(&cfg, &tps, &upto, from_ms, chunk, &tx, &stop)
            })
        };
        let abort = |stop: &AtomicBool, kind: &'static str, detail: String| {
            stop.store(true, Ordering::Release);
            StoreError { kind, detail }
        };
        let mut joined = 0usize;
        while let Some(mut events) = rx.recv().await {
            exposures_first(&mut events);
            let mut backoff = Backoff::new(self.retry_min, self.retry_max);
            let records = loop {
                match self.redis_stage(&events, shared, tags, &[], &[]).await {
                    Ok((records, guard)) => {
                        let losses = shared.guard.observe(tags, &guard);
                        let moved = stale
                            .epochs
                            .iter()
                            .zip(&guard)
                            .any(|((_, e), r)| r.epoch.as_deref() != Some(e.as_slice()));
                        if losses.iter().any(Option::is_some) || moved {
                            return Err(abort(
                                &stop,
                                "lost",
                                "Redis lost state again (or a new epoch) during the rebuild".into(),
                            ));
                        }
                        break records;
                    }
                    Err(e) => {
                        if self.give_up(batch, shared) {
                            return Err(abort(&stop, e.kind, e.detail));
                        }
                        let d = backoff.next_delay();
                        warn!(error = %e, retry_in_ms = d.as_millis() as u64, "Redis step of the rebuild failed; retrying");
                        tokio::time::sleep(d).await;
                    }
                }
            };
            joined += records.len();
            if !self.produce(records, batch, shared).await {
                return Err(abort(&stop, "abandoned", "rebuild abandoned".into()));
            }
        }
        let stats = match reader.await {
            Ok(Ok(stats)) => stats,
            Ok(Err(e)) => {
                return Err(StoreError {
                    kind: "kafka",
                    detail: format!("rebuild read: {e:#}"),
                })
            }
            Err(e) => {
                return Err(StoreError {
                    kind: "kafka",
                    detail: format!("rebuild reader: {e}"),
                })
            }
        };
        let mut marks = Commands::new();
        for (tag, epoch) in &stale.epochs {
            for tp in &stale.tps {
                let k = shared.guard.keys.rebuilt(tag, tp);
                let mut set = redis::cmd("SET");
                set.arg(&k).arg(epoch.as_slice());
                marks.push(k.as_bytes(), set);
            }
        }
        self.store.exec(&marks).await?;
        let secs = t0.elapsed().as_secs_f64();
        self.metrics.rebuilds.inc();
        self.metrics.rebuild_events.inc_by(stats.events);
        self.metrics.rebuild_seconds.observe(secs);
        info!(
            reason = stale.loss.map_or("stale_marker", Loss::as_str),
            partitions = ?fmt_tps(&stale.tps),
            from_ms,
            messages = stats.messages,
            events = stats.events,
            joined,
            by_time = stats.by_time,
            seconds = format!("{secs:.3}"),
            "Redis state rebuilt from Kafka"
        );
        Ok(())
    }

    /// The batch's Redis work, the Redis-loss guard and the partitions'
    /// progress (for the unmatched sweeper): appended to the pipeline (Lua
    /// protocol), or one round trip after the batch's own.
    async fn redis_stage(
        &self,
        events: &[Event],
        shared: &Shared,
        tags: &[String],
        tps: &[Tp],
        progress: &[(Tp, i64)],
    ) -> Result<(Vec<OutRecord>, Vec<GuardReply>), StoreError> {
        let mut guard = Commands::new();
        let n = rebuild::push_commands(
            &shared.guard.keys,
            tags,
            &shared.guard.token,
            tps,
            &mut guard,
        );
        // Progress goes after the guard: published only with the batch's writes.
        let np = progress::push_commands(&self.cfg.joiner.key_prefix, progress, &mut guard);
        let guarded = |replies: &[redis::Value]| {
            let (g, p) = replies.split_at(replies.len().saturating_sub(np));
            if let Some(redis::Value::ServerError(e)) =
                p.iter().find(|v| matches!(v, redis::Value::ServerError(_)))
            {
                warn!(error = ?e, "publishing partition progress failed");
            }
            rebuild::parse_replies(tags.len(), tps.len(), g)
        };
        if events.is_empty() {
            let r = self.store.exec(&guard).await?;
            return Ok((Vec::new(), guarded(&r)?));
        }
        if self.join.protocol == crate::join::Protocol::Slices {
            let records = self
                .join
                .slices
                .run(
                    &self.store,
                    events,
                    now_ms(),
                    &self.join.joined_topic,
                    &self.metrics,
                )
                .await?;
            let r = self.store.exec(&guard).await?;
            return Ok((records, guarded(&r)?));
        }
        let mut cmds = self.join.commands(events, now_ms());
        let piggyback = !self.join.naive;
        if piggyback {
            if let Some(last) = cmds.last_mut() {
                last.append(guard);
                guard = Commands::new();
            }
        }
        let mut replies = Vec::new();
        let mut total = 0;
        for c in &cmds {
            total += c.len();
            let t0 = Instant::now();
            let r = self.store.exec(c).await;
            self.metrics
                .redis_roundtrip_seconds
                .observe(t0.elapsed().as_secs_f64());
            replies.extend(r?);
        }
        if !guard.is_empty() {
            replies.extend(self.store.exec(&guard).await?);
        }
        self.metrics.redis_commands_per_batch.observe(total as f64);
        let g = replies.split_off(replies.len().saturating_sub(n + np));
        Ok((
            self.join.outcome(events, &replies, &self.metrics),
            guarded(&g)?,
        ))
    }
}

/// Envelope → log type (the topic's, overridden by `fields.log_type`) → the
/// exposure or interaction. Errors are the reason label.
pub fn parse(cfg: &Config, topic: &str, payload: &[u8]) -> Result<Event, &'static str> {
    if payload.len() > cfg.joiner.max_message_bytes {
        return Err("too_large");
    }
    let env = Envelope::parse(payload).map_err(|e| e.reason())?;
    let t = match &env.log_type {
        Some(name) => name.parse::<LogType>().map_err(|_| "unknown_log_type")?,
        None => cfg.topics.log_type_of(topic).ok_or("unknown_log_type")?,
    };
    let line: &str = &env.message;
    match t {
        // Ingest dead-letters a multiline exposure (`unexpected_continuation`:
        // exposure rows have no extra to keep the lines after the first in),
        // so joining it would emit a pair whose exposure is not stored.
        LogType::Exposure if env.continuation.is_some() => Err("unexpected_continuation"),
        LogType::Exposure => Exposure::parse(line)
            .map(|e| Event::Exposure(e.into_owned()))
            .map_err(|e| e.reason()),
        LogType::Interaction => Interaction::parse(line)
            .map(|i| Event::Interaction(i.into_owned()))
            .map_err(|e| e.reason()),
        LogType::Request | LogType::Joined => Err("other_log_type"),
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSURE: &str = "2026-11-21 10:00:00.456\tm-5f1c2d3e4a5b6c7d\t4bf92f3577b34da6a3ce929d0e0e4736\t123456\t1001\t880011\t990022\t3\tios\t1.85";
    const INTERACTION: &str =
        "2026-11-21 10:00:00.123\tm-1\t4bf92f3577b34da6a3ce929d0e0e4736\t123456\tclick\tdwell_ms=5300";

    fn multiline(first: &str) -> Vec<u8> {
        let msg = format!("{first}\njava.lang.IllegalStateException: boom\n\tat a.B.c(B.java:1)");
        format!(
            r#"{{"message":{},"log":{{"flags":["multiline"]}}}}"#,
            serde_json::to_string(&msg).unwrap()
        )
        .into_bytes()
    }

    /// Agrees with ingest's routing (ingest::route): a multiline exposure is a
    /// dead letter there, so the joiner must not join it; a multiline
    /// interaction is a row there (continuation kept), so it joins.
    #[test]
    fn multiline_exposures_are_refused_like_ingest_does_and_interactions_join() {
        let cfg = Config::default();
        let (xt, it) = (&cfg.topics.exposure, &cfg.topics.interaction);
        assert!(matches!(
            parse(&cfg, xt, EXPOSURE.as_bytes()),
            Ok(Event::Exposure(_))
        ));
        assert_eq!(
            parse(&cfg, xt, &multiline(EXPOSURE)).err(),
            Some("unexpected_continuation")
        );
        assert!(matches!(
            parse(&cfg, it, &multiline(INTERACTION)),
            Ok(Event::Interaction(_))
        ));
    }
}
