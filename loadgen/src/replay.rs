//! `loadgen replay`: real traffic, sampled and amplified into shadow topics.
//!
//! A reader takes a snapshot of the source topics' end offsets, reads every
//! partition from the start (or from the first offset at `from_ms`) to that
//! end, keeps the messages whose Kafka timestamp is in `[from_ms, to_ms)` and
//! whose sample key falls in the `sample` ratio, and writes `copies` copies of
//! each ([`crate::rewrite`]: new ids per copy, times shifted, everything else
//! as it was) to the shadow topics.
//!
//! * Sampling keeps units whole: a request line is sampled by its trace id, an
//!   exposure or interaction by its mark id (so a pair is kept or dropped
//!   together), a bad line by its bytes. An exposure whose trace was not
//!   sampled loses the link to its request lines.
//! * Deterministic: copy `c` of source partition `p` goes to shadow partition
//!   `p mod n`, in source order, copies of one message in copy order. The same
//!   command over the same source writes the same bytes in the same order to
//!   each shadow partition (the Kafka timestamps are the send times).
//! * The manifest counts what was written like the generator's (per topic,
//!   bad by reason, the expected joined pairs with their ids), the rows each
//!   table must end up with, and what was read from the source: its pairs ×
//!   copies must equal the written pairs.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::config::TopicsConfig;
use common::Config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};
use schemas::LogType;
use serde::{Deserialize, Serialize};

use crate::manifest::{Counts, Manifest, ManifestBuilder, Stats, TYPES};
use crate::model::{mix64, Line};
use crate::params::Params;
use crate::producer::Sender;
use crate::rewrite::{map_id, Rewrite};
use crate::verify::{self, Parsed};

/// How fast to send.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pace {
    /// As fast as the broker takes it.
    Unlimited,
    /// Messages per second (all copies counted).
    Rate(u64),
    /// The recorded pace (Kafka timestamps) × this speed factor.
    Recorded(f64),
}

/// What to replay and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayOptions {
    /// Copies of each sampled message (the amplification factor K).
    pub copies: u32,
    /// Index of the first copy: a later run with `first_copy` past an
    /// earlier one's copies writes other ids.
    pub first_copy: u32,
    /// Share of the source kept, by sample key, in (0, 1].
    pub sample: f64,
    /// Kafka timestamp range of the source, ms, `[from, to)`.
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// Added to every event time.
    pub shift_ms: i64,
    /// Map uids per copy too (by default a copy keeps its user).
    pub rewrite_uid: bool,
    pub pace: Pace,
    /// Upper bound on unacknowledged messages.
    #[serde(skip)]
    pub max_in_flight: usize,
    /// Structured progress lines about every `progress_s` seconds (0 = none).
    #[serde(skip)]
    pub progress_s: u64,
    /// Replication factor of shadow topics that have to be created.
    #[serde(skip)]
    pub replication_factor: i32,
}

impl ReplayOptions {
    pub fn new(copies: u32) -> ReplayOptions {
        ReplayOptions {
            copies,
            first_copy: 0,
            sample: 1.0,
            from_ms: None,
            to_ms: None,
            shift_ms: 0,
            rewrite_uid: false,
            pace: Pace::Unlimited,
            max_in_flight: 100_000,
            progress_s: 5,
            replication_factor: 1,
        }
    }

    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(self.copies >= 1, "--copies must be at least 1");
        anyhow::ensure!(
            self.sample > 0.0 && self.sample <= 1.0,
            "--sample must be in (0, 1], got {}",
            self.sample
        );
        if let (Some(f), Some(t)) = (self.from_ms, self.to_ms) {
            anyhow::ensure!(f < t, "--from ({f}) must be before --to ({t})");
        }
        match self.pace {
            Pace::Rate(0) => bail!("--rate must be positive"),
            Pace::Recorded(s) if !(s > 0.0 && s.is_finite()) => {
                bail!("--speed must be a positive number, got {s}")
            }
            _ => Ok(()),
        }
    }
}

/// What the source gave (the sampled messages, before amplification).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceSummary {
    /// Source topic by log type.
    pub topics: BTreeMap<String, String>,
    /// Messages read up to the end offsets snapshot.
    pub read: u64,
    /// Of those, outside `[from_ms, to_ms)`.
    pub out_of_range: u64,
    /// Of those in range, not in the sample.
    pub not_sampled: u64,
    /// Counts of the sampled messages.
    pub totals: Counts,
    pub bad_by_reason: BTreeMap<String, u64>,
    pub stats: Stats,
}

/// A replay's manifest: what was written, as the generator's [`Manifest`]
/// (`manifest`; its helpers and tests apply unchanged), and what it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayManifest {
    pub manifest: Manifest,
    pub options: ReplayOptions,
    pub source: SourceSummary,
    /// Rows each ClickHouse table must end up with once ingest and the joiner
    /// have read the shadow topics (ods_joined: the expected pairs).
    pub tables: BTreeMap<String, u64>,
    /// Good messages sent with their original bytes because a rewrite would
    /// have changed how they read (should be 0: such a copy repeats ids).
    pub verbatim_good: u64,
    /// Bad messages sent with their original bytes (e.g. invalid UTF-8).
    pub verbatim_bad: u64,
}

impl ReplayManifest {
    /// Ok when every message was acknowledged and the written pairs are the
    /// source's × copies.
    pub fn ensure_complete(&self) -> Result<()> {
        self.manifest.ensure_delivered()?;
        let want = self.source.stats.joined_pairs * u64::from(self.options.copies);
        anyhow::ensure!(
            self.manifest.stats.joined_pairs == want,
            "{} joined pairs written, {} expected ({} source pairs × {} copies)",
            self.manifest.stats.joined_pairs,
            want,
            self.source.stats.joined_pairs,
            self.options.copies
        );
        Ok(())
    }
}

impl fmt::Display for ReplayManifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.source;
        let o = &self.options;
        writeln!(
            f,
            "replay: {} source messages read, {} out of the time range, {} not sampled, \
             {} replayed × {} copies (first copy {}), event times shifted {} ms",
            s.read,
            s.out_of_range,
            s.not_sampled,
            s.totals.messages,
            o.copies,
            o.first_copy,
            o.shift_ms
        )?;
        writeln!(
            f,
            "  source: {} good, {} bad, {} joined pairs → expected {} pairs written",
            s.totals.good,
            s.totals.bad,
            s.stats.joined_pairs,
            s.stats.joined_pairs * u64::from(o.copies)
        )?;
        let tables: Vec<String> = self
            .tables
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect();
        writeln!(f, "  tables: {}", tables.join(", "))?;
        if self.verbatim_good + self.verbatim_bad > 0 {
            writeln!(
                f,
                "  sent unchanged (could not be rewritten): {} good, {} bad",
                self.verbatim_good, self.verbatim_bad
            )?;
        }
        write!(f, "{}", self.manifest)
    }
}

/// Refuses a destination that shares a topic with production.
pub fn guard(production: &TopicsConfig, dest: &TopicsConfig) -> Result<()> {
    let prod = all_topics(production);
    for d in all_topics(dest) {
        if prod.contains(&d) {
            bail!(
                "refusing to write to production topic {d:?} (the shadow topics must differ \
                 from the configured ones; --allow-production-topics overrides)"
            );
        }
    }
    Ok(())
}

/// Every topic of a topics section.
pub fn all_topics(t: &TopicsConfig) -> [String; 6] {
    [
        t.request.clone(),
        t.exposure.clone(),
        t.interaction.clone(),
        t.joined.clone(),
        t.dead_letter.clone(),
        t.unmatched.clone(),
    ]
}

/// Which sample bucket a message falls in: its trace id (request) or mark
/// id (exposure, interaction), else its bytes.
fn sample_hash(t: LogType, value: &[u8]) -> u64 {
    let key = verify::parse_value(t, value, |_, p| {
        fnv(match &p {
            Parsed::Request(r) => r.trace_id.as_bytes(),
            Parsed::Exposure(e) => e.mark_id.as_bytes(),
            Parsed::Interaction(i) => i.mark_id.as_bytes(),
            Parsed::Joined(j) => j.mark_id.as_bytes(),
        })
    });
    mix64(key.unwrap_or_else(|_| fnv(value)))
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ u64::from(*x)).wrapping_mul(0x100_0000_01b3)
    })
}

fn sampled(t: LogType, value: &[u8], ratio: f64) -> bool {
    ratio >= 1.0 || (sample_hash(t, value) as f64) < ratio * u64::MAX as f64
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One message read from a source partition.
struct Read {
    idx: usize,
    partition: i32,
    ts_ms: i64,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
}

/// One message to send.
struct Out {
    idx: usize,
    partition: i32,
    ts_ms: i64,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
}

/// Partition counts of `topics` (0 when a topic does not exist).
fn partition_counts(c: &BaseConsumer, topics: &[String]) -> Result<Vec<usize>> {
    let md = c
        .fetch_metadata(None, Duration::from_secs(10))
        .context("fetching Kafka metadata")?;
    Ok(topics
        .iter()
        .map(|n| {
            md.topics()
                .iter()
                .find(|t| t.name() == n && t.error().is_none())
                .map_or(0, |t| t.partitions().len())
        })
        .collect())
}

/// Reads the source from `from_ms` (or the start) to its end as of now: a
/// partition is done at its end (partition EOF) or at its first message
/// stamped at or after `until_ms`. The end offsets are not taken from the
/// watermarks: the dev broker (tansu) reports high watermarks below the last
/// offset while its log is being written.
fn read_source(
    cfg: &Config,
    topics: [String; 3],
    from_ms: Option<i64>,
    until_ms: i64,
    read: &AtomicU64,
    mut each: impl FnMut(Read) -> Result<()>,
) -> Result<()> {
    // One consumer per topic: a partition EOF names the partition, not the topic.
    let mut consumers = Vec::with_capacity(3);
    let mut open: std::collections::BTreeSet<(usize, i32)> = Default::default();
    for (idx, topic) in topics.iter().enumerate() {
        let c: BaseConsumer = common::kafka::consumer_config(&cfg.kafka, "loadgen-replay")
            .set("enable.partition.eof", "true")
            .create()
            .context("creating the Kafka consumer")?;
        let n = partition_counts(&c, std::slice::from_ref(topic))?[0];
        anyhow::ensure!(n > 0, "source topic {topic:?} does not exist");
        let mut tpl = TopicPartitionList::new();
        for p in 0..n as i32 {
            let start = match from_ms {
                None => Offset::Beginning,
                Some(ms) => {
                    let mut q = TopicPartitionList::new();
                    q.add_partition_offset(topic, p, Offset::Offset(ms))?;
                    let r = c.offsets_for_times(q, Duration::from_secs(10))?;
                    match r.find_partition(topic, p).map(|e| e.offset()) {
                        Some(Offset::Offset(o)) if o >= 0 => Offset::Offset(o),
                        Some(Offset::End) => Offset::End,
                        _ => Offset::Beginning,
                    }
                }
            };
            tpl.add_partition_offset(topic, p, start)?;
            open.insert((idx, p));
        }
        c.assign(&tpl).context("assigning the source partitions")?;
        consumers.push(c);
    }
    let mut idle_since = Instant::now();
    while !open.is_empty() {
        let mut got = false;
        for (idx, c) in consumers.iter().enumerate() {
            // Up to a batch from each topic in turn.
            for _ in 0..256 {
                let m = match c.poll(Duration::from_millis(if got { 0 } else { 20 })) {
                    None => break,
                    Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                        open.remove(&(idx, p));
                        continue;
                    }
                    Some(m) => m.context("reading the source")?,
                };
                got = true;
                if !open.contains(&(idx, m.partition())) {
                    continue;
                }
                let ts_ms = m.timestamp().to_millis().unwrap_or(0);
                if ts_ms >= until_ms {
                    open.remove(&(idx, m.partition()));
                    continue;
                }
                read.fetch_add(1, Ordering::Relaxed);
                each(Read {
                    idx,
                    partition: m.partition(),
                    ts_ms,
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().unwrap_or_default().to_vec(),
                })?;
            }
        }
        if got {
            idle_since = Instant::now();
        } else {
            anyhow::ensure!(
                idle_since.elapsed() < Duration::from_secs(60),
                "no source message for 60 s with {} partitions unfinished",
                open.len()
            );
        }
    }
    Ok(())
}

/// Whether the pipeline reads `value` as a bare line (not a Filebeat document).
fn is_bare(value: &[u8]) -> bool {
    match schemas::Envelope::parse(value) {
        Ok(e) => e.bare,
        Err(_) => value.first() != Some(&b'{'),
    }
}

/// Counts one message into `b`; the table its row goes to, if any.
fn observe(
    b: &mut ManifestBuilder,
    seq: u64,
    t: LogType,
    value: &[u8],
    class: Result<LogType, &'static str>,
) -> Option<&'static str> {
    let bare = is_bare(value);
    match class {
        Err(reason) => {
            b.observe_bad(t, value.len(), bare, reason, None);
            Some("dead_letter")
        }
        Ok(_) => {
            let line = verify::parse_value(t, value, |_, p| match p {
                Parsed::Request(r) => Some(Line::Request(r.into_owned())),
                Parsed::Exposure(e) => Some(Line::Exposure(e.into_owned())),
                Parsed::Interaction(i) => Some(Line::Interaction(i.into_owned())),
                Parsed::Joined(_) => None,
            })
            .ok()
            .flatten()?;
            b.observe_good(seq, t, value.len(), bare, &line);
            Some(match line {
                Line::Request(_) => "ods_request",
                Line::Exposure(_) => "ods_exposure",
                Line::Interaction(_) => "ods_interaction",
            })
        }
    }
}

/// What the rewriting thread hands back.
struct Rewritten {
    source: ManifestBuilder,
    dest: ManifestBuilder,
    summary: SourceSummary,
    tables: BTreeMap<String, u64>,
    verbatim_good: u64,
    verbatim_bad: u64,
}

/// Replays `cfg.topics` (the source) into `dest`: see the module docs.
/// Refuses a `dest` that shares a topic with `production` unless
/// `allow_production`. Creates missing shadow topics with the source topics'
/// partition counts. Delivery failures are not an `Err`: check
/// [`ReplayManifest::ensure_complete`].
pub async fn replay(
    cfg: &Config,
    dest: &TopicsConfig,
    production: &TopicsConfig,
    allow_production: bool,
    opts: &ReplayOptions,
) -> Result<ReplayManifest> {
    opts.validate()?;
    if !allow_production {
        guard(production, dest)?;
    }
    let src_topics = TYPES.map(|t| cfg.topics.topic_for(t).to_owned());
    let dst_topics = TYPES.map(|t| dest.topic_for(t).to_owned());
    for (s, d) in src_topics.iter().zip(&dst_topics) {
        anyhow::ensure!(s != d, "source and destination are the same topic {s:?}");
    }
    crate::producer::check_reachable(cfg, Duration::from_secs(10)).await?;
    let dest_parts = ensure_dest_topics(cfg, &src_topics, &dst_topics, opts).await?;

    let params = Params {
        count: 0,
        ..Params::from_config(&cfg.loadgen, 0)
    };
    let read = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Out>>(16);
    let reader = {
        let cfg = cfg.clone();
        let dest = dest.clone();
        let opts = opts.clone();
        let read = read.clone();
        let src_topics = src_topics.clone();
        tokio::task::spawn_blocking(move || -> Result<Rewritten> {
            let mut r = Rewritten {
                source: ManifestBuilder::new(&params, &cfg.topics),
                dest: ManifestBuilder::new(&params, &dest),
                summary: SourceSummary {
                    topics: TYPES
                        .iter()
                        .zip(&src_topics)
                        .map(|(t, n)| (t.as_str().to_owned(), n.clone()))
                        .collect(),
                    ..SourceSummary::default()
                },
                tables: BTreeMap::new(),
                verbatim_good: 0,
                verbatim_bad: 0,
            };
            let (mut src_seq, mut dst_seq) = (0u64, 0u64);
            let mut batch = Vec::with_capacity(1024);
            let until_ms = opts.to_ms.unwrap_or_else(now_ms);
            read_source(&cfg, src_topics, opts.from_ms, until_ms, &read, |m| {
                let t = TYPES[m.idx];
                r.summary.read += 1;
                if opts.from_ms.is_some_and(|f| m.ts_ms < f)
                    || opts.to_ms.is_some_and(|to| m.ts_ms >= to)
                {
                    r.summary.out_of_range += 1;
                    return Ok(());
                }
                if !sampled(t, &m.value, opts.sample) {
                    r.summary.not_sampled += 1;
                    return Ok(());
                }
                observe(
                    &mut r.source,
                    src_seq,
                    t,
                    &m.value,
                    verify::classify(t, &m.value),
                );
                src_seq += 1;
                for copy in opts.first_copy..opts.first_copy + opts.copies {
                    let rw = Rewrite {
                        copy,
                        shift_ms: opts.shift_ms,
                        rewrite_uid: opts.rewrite_uid,
                    }
                    .value(t, &m.value);
                    if rw.verbatim {
                        match rw.class {
                            Ok(_) => r.verbatim_good += 1,
                            Err(_) => r.verbatim_bad += 1,
                        }
                    }
                    if let Some(table) = observe(&mut r.dest, dst_seq, t, &rw.value, rw.class) {
                        *r.tables.entry(table.to_owned()).or_default() += 1;
                    }
                    dst_seq += 1;
                    let key = m.key.as_deref().map(|k| match std::str::from_utf8(k) {
                        Ok(k) => map_id(copy, k).into_bytes(),
                        Err(_) => k.to_vec(),
                    });
                    batch.push(Out {
                        idx: m.idx,
                        partition: m.partition,
                        ts_ms: m.ts_ms,
                        key,
                        value: rw.value,
                    });
                }
                if batch.len() >= 1024 {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(1024));
                    if tx.blocking_send(full).is_err() {
                        bail!("the sender stopped");
                    }
                }
                Ok(())
            })?;
            if !batch.is_empty() && tx.blocking_send(batch).is_err() {
                bail!("the sender stopped");
            }
            Ok(r)
        })
    };

    let producer: FutureProducer =
        common::kafka::batching_producer_config(&cfg.kafka, cfg.loadgen.linger_ms)
            .create()
            .context("creating the Kafka producer")?;
    let mut s = Sender::new(producer.clone(), dst_topics.clone());
    let start = Instant::now();
    let mut progress = Progress {
        every: Duration::from_secs(opts.progress_s),
        last: start,
        last_acked: 0,
        start,
    };
    let mut sent: u64 = 0;
    let mut base_ts: Option<i64> = None;
    while let Some(batch) = rx.recv().await {
        for m in batch {
            let due = match opts.pace {
                Pace::Unlimited => None,
                Pace::Rate(r) => Some(start + Duration::from_secs_f64(sent as f64 / r as f64)),
                Pace::Recorded(speed) => {
                    let base = *base_ts.get_or_insert(m.ts_ms);
                    let after = (m.ts_ms - base).max(0) as f64 / 1000.0 / speed;
                    Some(start + Duration::from_secs_f64(after))
                }
            };
            if let Some(due) = due.filter(|d| *d > Instant::now()) {
                s.complete_ready();
                progress.tick(&s, sent, read.load(Ordering::Relaxed));
                tokio::time::sleep_until(due.into()).await;
            }
            let n = dest_parts[m.idx].max(1) as i32;
            s.send(m.idx, m.key.as_deref(), &m.value, Some(m.partition % n), 0)
                .await;
            sent += 1;
            s.throttle(opts.max_in_flight).await;
        }
        s.complete_ready();
        progress.tick(&s, sent, read.load(Ordering::Relaxed));
    }
    s.drain(|s| progress.tick(s, sent, read.load(Ordering::Relaxed)))
        .await;
    let elapsed = start.elapsed().as_secs_f64();
    let r = reader.await.context("the replay reader panicked")??;
    let mut manifest = r.dest.finish();
    let source = r.source.finish();
    let mut tables = r.tables;
    tables.insert("ods_joined".into(), manifest.stats.joined_pairs);
    for t in [
        "ods_request",
        "ods_exposure",
        "ods_interaction",
        "dead_letter",
    ] {
        tables.entry(t.into()).or_default();
    }
    let rate = match opts.pace {
        Pace::Rate(r) => r,
        _ => 0,
    };
    manifest.delivery = Some(s.delivery(rate, elapsed, manifest.totals.bytes));
    manifest.params.count = manifest.totals.messages;
    if opts.progress_s > 0 {
        tracing::info!(
            sent,
            acked = s.acked,
            failed = s.failed,
            elapsed_s = elapsed,
            rate = s.acked as f64 / elapsed.max(1e-9),
            "replay finished"
        );
    }
    let _ = producer.flush(Duration::from_secs(5));
    Ok(ReplayManifest {
        manifest,
        options: opts.clone(),
        source: SourceSummary {
            totals: source.totals,
            bad_by_reason: source.bad_by_reason,
            stats: source.stats,
            ..r.summary
        },
        tables,
        verbatim_good: r.verbatim_good,
        verbatim_bad: r.verbatim_bad,
    })
}

/// Creates missing shadow topics with their source's partition count;
/// returns the shadow topics' partition counts.
async fn ensure_dest_topics(
    cfg: &Config,
    src: &[String; 3],
    dst: &[String; 3],
    opts: &ReplayOptions,
) -> Result<[usize; 3]> {
    let probe: BaseConsumer = common::kafka::client_config(&cfg.kafka)
        .create()
        .context("creating a Kafka client")?;
    let names: Vec<String> = src.iter().chain(dst).cloned().collect();
    let counts = tokio::task::block_in_place(|| partition_counts(&probe, &names))?;
    for i in 0..3 {
        anyhow::ensure!(counts[i] > 0, "source topic {:?} does not exist", src[i]);
        if counts[3 + i] == 0 {
            let mut k = cfg.kafka.clone();
            k.partitions = counts[i] as i32;
            let refused =
                common::kafka::create_topics(&k, &[dst[i].as_str()], opts.replication_factor)
                    .await?;
            if let Some((name, e)) = refused.first() {
                bail!("creating topic {name}: {e}");
            }
        } else if counts[3 + i] < counts[i] {
            tracing::warn!(
                topic = %dst[i],
                partitions = counts[3 + i],
                source_partitions = counts[i],
                "the shadow topic has fewer partitions than its source: several source \
                 partitions share one, and their interleaving is not deterministic"
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = tokio::task::block_in_place(|| partition_counts(&probe, dst.as_slice()))?;
        if now.iter().all(|n| *n > 0) {
            return Ok([now[0], now[1], now[2]]);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "shadow topics {dst:?} did not appear in the broker's metadata within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Progress {
    every: Duration,
    start: Instant,
    last: Instant,
    last_acked: u64,
}

impl Progress {
    /// A structured progress line (target `loadgen::replay`) with the rate.
    fn tick(&mut self, s: &Sender, sent: u64, read: u64) {
        if self.every.is_zero() || self.last.elapsed() < self.every {
            return;
        }
        let now = Instant::now();
        let rate = (s.acked - self.last_acked) as f64 / (now - self.last).as_secs_f64();
        let avg = s.acked as f64 / (now - self.start).as_secs_f64().max(1e-9);
        tracing::info!(
            read,
            sent,
            acked = s.acked,
            failed = s.failed,
            rate = rate.round(),
            avg_rate = avg.round(),
            "replay progress"
        );
        self.last = now;
        self.last_acked = s.acked;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Generator;

    /// The replay's rewrite and accounting over a generated stream, without
    /// a broker: K copies hold K × the source's pairs, each with the source
    /// pair's delay and action, K × its bad lines by reason, and traces whole.
    #[test]
    fn copies_keep_pairs_delays_reasons_and_traces() {
        let cfg = Config::default();
        let mut p = Params::from_config(&cfg.loadgen, 1_000_000_000_000);
        p.count = 6000;
        p.bad_ratio = 0.05;
        let src = crate::manifest_only(&p, &cfg).unwrap();
        let k = 3u32;
        let mut b = ManifestBuilder::new(&p, &cfg.topics);
        let mut seq = 0;
        for m in Generator::new(&p).unwrap() {
            for copy in 0..k {
                let rw = Rewrite {
                    copy,
                    shift_ms: 0,
                    rewrite_uid: false,
                }
                .value(m.log_type, &m.value);
                assert!(!rw.verbatim || rw.class.is_err());
                observe(&mut b, seq, m.log_type, &rw.value, rw.class);
                seq += 1;
            }
        }
        let out = b.finish();
        let kk = u64::from(k);
        assert_eq!(out.stats.joined_pairs, src.stats.joined_pairs * kk);
        assert_eq!(out.stats.traces, src.stats.traces * kk);
        assert_eq!(out.stats.request_lines, src.stats.request_lines * kk);
        assert_eq!(
            out.stats.orphan_interactions,
            src.stats.orphan_interactions * kk
        );
        for (r, n) in &src.bad_by_reason {
            assert_eq!(out.bad_by_reason[r], n * kk, "{r}");
        }
        let delays = |m: &Manifest| {
            let mut v: Vec<(i64, String)> = m
                .expected_pairs
                .iter()
                .map(|p| (p.delay_ms, p.action.clone()))
                .collect();
            v.sort();
            v
        };
        let want: Vec<(i64, String)> = delays(&src)
            .into_iter()
            .flat_map(|d| std::iter::repeat_n(d, k as usize))
            .collect();
        assert_eq!(delays(&out), want);
        let ids: std::collections::HashSet<u64> =
            out.expected_pairs.iter().map(|p| p.joined_id).collect();
        assert_eq!(
            ids.len() as u64,
            out.stats.joined_pairs,
            "joined ids distinct"
        );
    }

    #[test]
    fn sampling_keeps_a_mark_whole() {
        let cfg = Config::default();
        let mut p = Params::from_config(&cfg.loadgen, 1_000_000_000_000);
        p.count = 4000;
        let src = crate::manifest_only(&p, &cfg).unwrap();
        let mut b = ManifestBuilder::new(&p, &cfg.topics);
        for (seq, m) in Generator::new(&p).unwrap().enumerate() {
            if sampled(m.log_type, &m.value, 0.5) {
                observe(
                    &mut b,
                    seq as u64,
                    m.log_type,
                    &m.value,
                    verify::classify(m.log_type, &m.value),
                );
            }
        }
        let half = b.finish();
        // A mark's exposure and interactions are sampled together: the pairs
        // kept are exactly the source pairs of the kept marks.
        let kept: std::collections::HashSet<&str> = half
            .expected_pairs
            .iter()
            .map(|p| p.mark_id.as_str())
            .collect();
        let want = src
            .expected_pairs
            .iter()
            .filter(|p| kept.contains(p.mark_id.as_str()))
            .count();
        assert_eq!(half.expected_pairs.len(), want);
        let share = half.stats.joined_pairs as f64 / src.stats.joined_pairs as f64;
        assert!((0.35..0.65).contains(&share), "{share}");
    }
}
