//! loadgen → the real broker → read everything back.
//!
//! Sends 50,000 messages to three fresh topics, consumes all partitions from
//! the beginning and checks, against the manifest and the in-process stream:
//! exact message counts per topic and partition, good/bad per log type, bad
//! lines by reason (each consumed message parsed with `schemas` as the
//! pipeline does), the exact set of exposure mark_ids, and byte-identical
//! values. Needs the broker (`dev/stack up`); fails, never skips, without it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::config::TopicsConfig;
use common::Config;
use loadgen::verify::{self, Parsed};
use loadgen::{Generator, Kind, Params, SendOptions};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use schemas::LogType;

const COUNT: u64 = 50_000;
const TYPES: [LogType; 3] = [LogType::Request, LogType::Exposure, LogType::Interaction];

/// Topic names no other test (or earlier run against the same broker) uses.
fn unique_topics() -> TopicsConfig {
    static N: AtomicU32 = AtomicU32::new(0);
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let prefix = format!(
        "lgtest-{}-{}-{ms}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    TopicsConfig {
        request: format!("{prefix}-request"),
        exposure: format!("{prefix}-exposure"),
        interaction: format!("{prefix}-interaction"),
        joined: format!("{prefix}-joined"),
        dead_letter: format!("{prefix}-dead-letter"),
        unmatched: format!("{prefix}-unmatched"),
    }
}

/// What was read back from one topic.
#[derive(Default)]
struct Seen {
    messages: u64,
    good: u64,
    bad: u64,
    bad_by_reason: BTreeMap<String, u64>,
    per_partition: BTreeMap<i32, u64>,
    values: Vec<Vec<u8>>,
}

#[test]
fn loadgen_round_trip_through_the_broker() {
    let mut cfg = Config::load(None).expect("config");
    cfg.topics = unique_topics();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    if let Err(e) = rt.block_on(loadgen::producer::check_reachable(
        &cfg,
        Duration::from_secs(10),
    )) {
        panic!(
            "{e:#}\nThis test needs the local Kafka-protocol broker: run `dev/stack up` first \
             (or point ADLOG_KAFKA__BROKERS at a broker)."
        );
    }

    // calendar-ok: the messages are only read back from Kafka and compared
    // with the manifest, never stored; a fixed start keeps them byte-identical.
    let mut params = Params::from_config(&cfg.loadgen, 1_763_719_200_000);
    params.count = COUNT;
    params.seed = 7;
    params.bad_ratio = 0.02;
    params.bare_ratio = 0.15;
    params.out_of_order_ratio = 0.1;
    let mut opts = SendOptions::from_config(&cfg);
    opts.progress = false;
    opts.rate = 0;
    let manifest = rt
        .block_on(loadgen::produce(&cfg, &params, &opts))
        .expect("produce");
    manifest
        .ensure_delivered()
        .expect("every message acknowledged");
    assert_eq!(manifest.totals.messages, COUNT);
    assert_eq!(manifest.totals.bad, 1_000);

    // The in-process stream: the reference for values and mark_ids.
    let mut want_values: HashMap<LogType, Vec<Vec<u8>>> = HashMap::new();
    let mut want_marks = HashSet::new();
    for m in Generator::new(&params).unwrap() {
        if let Kind::Good(loadgen::model::Line::Exposure(e)) = &m.kind {
            want_marks.insert(e.mark_id.to_string());
        }
        want_values.entry(m.log_type).or_default().push(m.value);
    }

    // Consume every partition of the three topics from the beginning.
    let consumer: BaseConsumer =
        common::kafka::consumer_config(&cfg.kafka, &format!("{}-check", cfg.topics.request))
            .set("fetch.wait.max.ms", "100")
            .set("enable.partition.eof", "false")
            .create()
            .expect("consumer");
    let acked = &manifest.delivery.as_ref().unwrap().partitions;
    let mut tpl = TopicPartitionList::new();
    // Messages still to read per partition, from the broker's acknowledgements.
    // (Not from the high watermark: tansu's ListOffsets(latest) can lag the
    // real log end by a few records, which would make an exact check flaky.)
    let mut left: HashMap<(String, i32), u64> = HashMap::new();
    for t in TYPES {
        let topic = cfg.topics.topic_for(t);
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let parts = md.topics()[0].partitions();
        assert_eq!(
            parts.len() as i32,
            cfg.kafka.partitions,
            "{topic} was created with kafka.partitions partitions"
        );
        for p in parts {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .unwrap();
            let n = acked
                .get(topic)
                .and_then(|m| m.get(&p.id()))
                .copied()
                .unwrap_or(0);
            if n > 0 {
                left.insert((topic.to_owned(), p.id()), n);
            }
        }
    }
    consumer.assign(&tpl).expect("assign");

    let mut seen: HashMap<LogType, Seen> = HashMap::new();
    let mut offsets: HashMap<(String, i32), HashSet<i64>> = HashMap::new();
    let mut marks = HashSet::new();
    let mut keys_ok = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    // Read until every acknowledged message is back, then 1 s more for extras.
    let mut quiet_until: Option<Instant> = None;
    loop {
        if left.is_empty() && quiet_until.is_none() {
            quiet_until = Some(Instant::now() + Duration::from_secs(1));
        }
        if quiet_until.is_some_and(|q| Instant::now() >= q) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timed out reading back; messages still missing per partition: {left:?}"
        );
        let Some(r) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = r.expect("consume");
        let topic = msg.topic().to_owned();
        let t = cfg.topics.log_type_of(&topic).expect("one of our topics");
        let value = msg.payload().unwrap_or_default().to_vec();
        let key = std::str::from_utf8(msg.key().expect("every message has a key"))
            .unwrap()
            .to_owned();
        assert!(
            offsets
                .entry((topic.clone(), msg.partition()))
                .or_default()
                .insert(msg.offset()),
            "offset {} of {topic}[{}] read twice",
            msg.offset(),
            msg.partition()
        );
        let s = seen.entry(t).or_default();
        s.messages += 1;
        *s.per_partition.entry(msg.partition()).or_default() += 1;
        match verify::parse_value(t, &value, |_, parsed| match parsed {
            Parsed::Exposure(e) => {
                assert_eq!(key, e.mark_id);
                marks.insert(e.mark_id.to_string());
            }
            Parsed::Interaction(i) => assert_eq!(key, i.mark_id),
            Parsed::Request(r) => assert_eq!(key, r.trace_id),
            Parsed::Joined(_) => panic!("no joined lines are generated"),
        }) {
            Ok(()) => {
                s.good += 1;
                keys_ok += 1;
            }
            Err(e) => {
                s.bad += 1;
                *s.bad_by_reason.entry(e.reason().to_owned()).or_default() += 1;
            }
        }
        s.values.push(value);
        let k = (topic, msg.partition());
        if let Some(n) = left.get_mut(&k) {
            *n -= 1;
            if *n == 0 {
                left.remove(&k);
            }
        }
    }

    let mut total = 0;
    for t in TYPES {
        let topic = cfg.topics.topic_for(t);
        let want = &manifest.per_topic[topic];
        let got = seen.remove(&t).unwrap_or_default();
        assert_eq!(want.log_type, t);
        assert_eq!(got.messages, want.counts.messages, "{topic}: messages");
        assert_eq!(got.good, want.counts.good, "{topic}: good");
        assert_eq!(got.bad, want.counts.bad, "{topic}: bad");
        assert_eq!(
            got.bad_by_reason, want.bad_by_reason,
            "{topic}: bad by reason"
        );
        assert_eq!(got.per_partition, acked[topic], "{topic}: per partition");
        let mut a = got.values;
        let mut b = want_values.remove(&t).unwrap_or_default();
        a.sort_unstable();
        b.sort_unstable();
        assert!(
            a == b,
            "{topic}: the values read back differ from the generated ones"
        );
        total += got.messages;
    }
    assert_eq!(total, COUNT);
    assert_eq!(keys_ok, manifest.totals.good);
    assert_eq!(marks.len() as u64, manifest.stats.exposures);
    assert_eq!(marks, want_marks, "exposure mark_ids");
    for p in &manifest.expected_pairs {
        assert!(marks.contains(&p.mark_id), "pair on an unknown exposure");
    }
    // The run exercised what the join tests need.
    let s = &manifest.stats;
    assert!(s.joined_pairs > 0 && s.out_of_order_pairs > 0);
    assert!(s.orphan_interactions > 0 && s.out_of_window_interactions > 0);
}
