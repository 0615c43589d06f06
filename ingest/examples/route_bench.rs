//! Micro-benchmark of the consumer thread's per-message path without Kafka
//! and ClickHouse: loadgen's realistic stream (every log type, its share of
//! bare lines and bad lines) run through what `Worker::handle` does for each
//! message — topic lookup, clock read, envelope + line parse and checks, the
//! ledger check, block append, RowBinary encoding, the per-message metric
//! updates and the commit bookkeeping. Prints ns and heap allocations per
//! message; under `valgrind --tool=callgrind` the instruction count of two
//! runs with different N, divided by ΔN, is the per-message cost, immune to
//! the noise of a shared machine (bench/README.md, "client hot path").
//!
//! `cargo run --release -p ingest --example route_bench [N]`

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use common::config::{Config, TopicsConfig};
use ingest::batching::{DeadLetter, Dest, Lanes, DESTS};
use ingest::commit::PartShared;
use ingest::metrics::Metrics;
use ingest::recovery::{Check, Stored};
use ingest::route::{self, Limits, MsgMeta};
use ingest::table::Table;
use ingest::worker::{now_ms, Worker};
use loadgen::{Generator, Params};
use schemas::LogType;

#[path = "../../schemas/examples/support/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static A: counting_alloc::Counting = counting_alloc::Counting;

/// A partition as the consumer thread keeps it (the fields the path uses).
struct Part {
    shared: Arc<PartShared>,
    stored: Stored,
    next_offset: i64,
    topic_type: Option<LogType>,
    slots: [Option<(u64, u32)>; DESTS],
    consumed: prometheus::IntCounter,
}

/// One Kafka message: what librdkafka hands the worker.
struct Msg {
    topic: String,
    offset: i64,
    ts_ms: i64,
    payload: Vec<u8>,
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(200_000, |a| a.parse().expect("N messages"));
    let cfg = Config::default();
    let topics = TopicsConfig::default();
    let metrics = Metrics::new();
    // Event times relative to now, so the time checks accept the good lines.
    let mut p = Params::from_config(&cfg.loadgen, now_ms() - 600_000);
    p.count = n;
    let mut offsets: HashMap<String, i64> = HashMap::new();
    let msgs: Vec<Msg> = Generator::new(&p)
        .expect("generator")
        .map(|m| {
            let topic = m.topic(&topics).to_string();
            let o = offsets.entry(topic.clone()).or_default();
            *o += 1;
            Msg {
                topic,
                offset: *o - 1,
                ts_ms: now_ms(),
                payload: m.value,
            }
        })
        .collect();
    let topic_names: Vec<Arc<str>> = offsets.keys().map(|t| Arc::from(t.as_str())).collect();
    let mut parts: HashMap<(Arc<str>, i32), Part> = topic_names
        .iter()
        .map(|t| {
            let part = Part {
                shared: Arc::new(PartShared::default()),
                stored: Stored::default(),
                next_offset: 0,
                topic_type: topics.log_type_of(t),
                slots: [None; DESTS],
                consumed: metrics.consumed.with_label_values(&[t]),
            };
            ((t.clone(), 0), part)
        })
        .collect();
    let i = &cfg.ingest;
    let limits = Limits {
        max_message_bytes: i.max_message_bytes,
        max_future_skew_ms: i.max_future_skew_s as i64 * 1000,
        max_past_age_ms: i.max_past_age_s as i64 * 1000,
    };
    let a0 = counting_alloc::allocs();
    let t0 = Instant::now();
    let rows = run(&cfg, &metrics, &limits, &topic_names, &mut parts, &msgs);
    let ns = t0.elapsed().as_nanos() as f64 / n as f64;
    let allocs = (counting_alloc::allocs() - a0) as f64 / n as f64;
    println!(
        "{n} messages ({rows} rows): {ns:.0} ns/msg  {allocs:.2} allocs/msg  ({:.0} B/msg)",
        msgs.iter().map(|m| m.payload.len()).sum::<usize>() as f64 / n as f64
    );
}

/// The measured loop (its own symbol, for `callgrind --toggle-collect=*route_bench::run*`:
/// only it is counted, not loadgen's generation of the messages).
#[inline(never)]
fn run(
    cfg: &Config,
    metrics: &Metrics,
    limits: &Limits,
    topic_names: &[Arc<str>],
    parts: &mut HashMap<(Arc<str>, i32), Part>,
    msgs: &[Msg],
) -> u64 {
    let i = &cfg.ingest;
    let mut lanes = Lanes::new(Worker::flush_policy(cfg), 0);
    let fetch = metrics.stage_fetch.local();
    let mut rows = 0u64;
    for msg in msgs {
        // --- Worker::handle, steady state (partition owned, recovered) ---
        let topic = match topic_names.iter().find(|t| ***t == *msg.topic) {
            Some(t) => t.clone(),
            None => Arc::from(msg.topic.as_str()),
        };
        let key = (topic, 0);
        let part = parts.get_mut(&key).expect("owned");
        let offset = msg.offset;
        if offset < part.next_offset {
            continue;
        }
        let meta = MsgMeta {
            topic: &msg.topic,
            partition: 0,
            offset,
            kafka_ts_ms: msg.ts_ms,
        };
        let now_ms = now_ms();
        let raw: &[u8] = &msg.payload;
        let (env, rejected) = match route::envelope(Some(raw), limits) {
            Ok(env) => (Some(env), None),
            Err(rej) => (None, Some(rej)),
        };
        let outcome = match (&env, rejected) {
            (Some(env), _) => route::parse(raw, env, part.topic_type, limits, now_ms),
            (None, rej) => Err(rej.expect("no envelope without a rejection")),
        };
        let table = match &outcome {
            Ok(rec) => rec.table(),
            Err(_) => Table::DeadLetter,
        };
        part.stored.forget_below(offset);
        assert!(matches!(part.stored.check(table, offset), Check::Store));
        part.next_offset = offset + 1;
        part.consumed.inc();
        fetch.observe((now_ms - meta.kafka_ts_ms).max(0) as f64 / 1000.0);
        match (outcome, &env) {
            (Ok(rec), Some(env)) => {
                if env.continuation.is_some() {
                    metrics
                        .multiline_rows
                        .with_label_values(&[&msg.topic])
                        .inc();
                }
                let dest = Dest::Table(table);
                let (b, pi) = lanes.open_for(dest, &mut part.slots, &key, &part.shared, offset);
                let buf = b.push_row(pi, offset, meta.kafka_ts_ms, rec.event_ts_ms());
                route::encode(&rec, env, &meta, now_ms, buf);
                lanes.seal_if_full(dest);
                rows += 1;
            }
            (Ok(_), None) => unreachable!("a record needs an envelope"),
            (Err(rej), _) => {
                metrics
                    .dead_letters
                    .with_label_values(&[&msg.topic, rej.reason])
                    .inc();
                let dest = Dest::Table(Table::DeadLetter);
                let (b, pi) = lanes.open_for(dest, &mut part.slots, &key, &part.shared, offset);
                let buf = b.push_row(pi, offset, meta.kafka_ts_ms, now_ms);
                route::encode_dead_letter(&rej, raw, &meta, now_ms, i.dead_letter_max_bytes, buf);
                lanes.seal_if_full(dest);
                let cap = if rej.reason == "too_large" {
                    i.dead_letter_max_bytes
                } else {
                    i.max_message_bytes
                };
                let dest = Dest::DeadLetterTopic;
                let (b, pi) = lanes.open_for(dest, &mut part.slots, &key, &part.shared, offset);
                b.push_row(pi, offset, meta.kafka_ts_ms, now_ms);
                b.push_letter(DeadLetter {
                    reason: rej.reason,
                    error: rej.error,
                    payload: raw[..raw.len().min(cap)].to_vec(),
                });
                lanes.seal_if_full(dest);
            }
        }
        part.shared.handled(offset + 1);
        // --- the sink takes sealed blocks (dropped here: no ClickHouse) ---
        for lane in &mut lanes.lanes {
            lane.queued.clear();
        }
    }
    fetch.flush();
    rows
}
