//! `loadgen replay` into a shadow pipeline on the dev stack: a generated
//! topic set replayed ×3 into shadow topics, read by ingest and the joiner
//! configured by the shadow config file alone, holds exactly 3× the source's
//! rows in every table, 3× its dead letters by reason and 3× its joined
//! pairs (the manifest's ids); the same command again writes byte-identical
//! messages; `shadow-drop` removes the shadow topics and database.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::Config;
use integration_tests::{clickhouse, count, drop_database, generate, migrate, test_config, Proc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

const K: u32 = 3;

fn options() -> loadgen::ReplayOptions {
    let mut o = loadgen::ReplayOptions::new(K);
    o.progress_s = 0;
    o
}

/// A message's key and value.
type KeyValue = (Vec<u8>, Vec<u8>);

/// Every (key, value) of `topic`, per partition in offset order (read to
/// each partition's end: the dev broker's listed high watermarks lag).
fn read_topic(cfg: &Config, topic: &str) -> BTreeMap<i32, Vec<KeyValue>> {
    let c: BaseConsumer = common::kafka::consumer_config(&cfg.kafka, "unused-manual-assign")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let parts = md.topics()[0].partitions().len() as i32;
    let mut out = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts {
        out.insert(p, Vec::new());
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut open: std::collections::BTreeSet<i32> = (0..parts).collect();
    let start = Instant::now();
    while !open.is_empty() {
        assert!(start.elapsed() < Duration::from_secs(60), "reading {topic}");
        match c.poll(Duration::from_millis(200)) {
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(m) => {
                let m = m.unwrap();
                out.get_mut(&m.partition()).unwrap().push((
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().unwrap_or_default().to_vec(),
                ));
            }
            None => {}
        }
    }
    out
}

async fn dead_letters_by_reason(ch: &::clickhouse::Client, db: &str) -> BTreeMap<String, u64> {
    ch.query(&format!(
        "SELECT reason, count() FROM {db}.dead_letter GROUP BY reason"
    ))
    .fetch_all::<(String, u64)>()
    .await
    .unwrap()
    .into_iter()
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_x3_into_a_shadow_pipeline_is_exact_and_deterministic() {
    let cfg = test_config("replay");
    let src = generate(&cfg, 3000, 0).await.expect("source traffic");
    assert!(src.totals.bad > 0 && src.stats.joined_pairs > 0);

    // The guard: production's own topics are refused.
    let refused = loadgen::replay(&cfg, &cfg.topics, &cfg.topics, false, &options()).await;
    assert!(
        format!("{:#}", refused.unwrap_err()).contains("refusing"),
        "replaying into production must be refused"
    );

    let shadow = loadgen::shadow::shadow_config(&cfg, "_sh1").unwrap();
    let r = loadgen::replay(&cfg, &shadow.topics, &cfg.topics, false, &options())
        .await
        .expect("replay");
    r.ensure_complete()
        .expect("every copy acknowledged, pairs = source × K");
    let k = u64::from(K);
    // (`bare` differs: the generator counts how it wrapped a line, the
    // replay how the pipeline reads it — a truncated document reads bare.)
    let t = |c: &loadgen::manifest::Counts| (c.messages, c.good, c.bad, c.bytes);
    assert_eq!(
        t(&r.source.totals),
        t(&src.totals),
        "the whole source was read"
    );
    assert_eq!(r.manifest.totals.messages, src.totals.messages * k);
    assert_eq!(r.manifest.stats.joined_pairs, src.stats.joined_pairs * k);
    assert_eq!(r.verbatim_good, 0, "every good copy has new ids");
    for (reason, n) in &src.bad_by_reason {
        assert_eq!(r.manifest.bad_by_reason[reason], n * k, "{reason}");
    }

    // The shadow pipeline, configured by its file alone.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shadow.toml");
    std::fs::write(&path, toml::to_string(&shadow).unwrap()).unwrap();
    let path = path.to_str().unwrap();
    migrate(&shadow).expect("migrating the shadow database");
    let _joiner = Proc::start("joiner", &["run", "--config", path], &shadow).unwrap();
    let mut ingest = Proc::start("ingest", &["run", "--config", path], &shadow).unwrap();
    let ch = clickhouse(&shadow);
    let db = shadow.clickhouse.database.clone();
    let want_rows: u64 = r.tables.values().sum();
    let start = Instant::now();
    let (mut rows, mut pairs) = (0, 0);
    // Typically 20-60 s; the bound is for a loaded machine.
    while start.elapsed() < Duration::from_secs(240) {
        rows = 0;
        for t in r.tables.keys() {
            rows += count(&ch, &shadow, t, "").await;
        }
        pairs = ch
            .query(&format!("SELECT uniqExact(joined_id) FROM {db}.ods_joined"))
            .fetch_one::<u64>()
            .await
            .unwrap();
        if rows >= want_rows && pairs >= r.manifest.stats.joined_pairs {
            break;
        }
        if let Ok(Some(st)) = ingest.child.try_wait() {
            panic!("ingest exited ({st}); log {}", ingest.name);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        rows >= want_rows && pairs >= r.manifest.stats.joined_pairs,
        "{rows}/{want_rows} rows, {pairs}/{} pairs after {:?} (log {})",
        r.manifest.stats.joined_pairs,
        start.elapsed(),
        ingest.name
    );
    tokio::time::sleep(Duration::from_secs(2)).await; // nothing more may arrive

    let source_rows = BTreeMap::from([
        (
            "ods_request",
            src.topic(schemas::LogType::Request).unwrap().counts.good,
        ),
        (
            "ods_exposure",
            src.topic(schemas::LogType::Exposure).unwrap().counts.good,
        ),
        (
            "ods_interaction",
            src.topic(schemas::LogType::Interaction)
                .unwrap()
                .counts
                .good,
        ),
        ("dead_letter", src.totals.bad),
    ]);
    for (t, n) in &source_rows {
        assert_eq!(r.tables[*t], n * k, "manifest rows of {t}");
        assert_eq!(count(&ch, &shadow, t, "").await, n * k, "rows of {t}");
    }
    let want_reasons: BTreeMap<String, u64> = src
        .bad_by_reason
        .iter()
        .map(|(r, n)| (r.clone(), n * k))
        .collect();
    assert_eq!(dead_letters_by_reason(&ch, &db).await, want_reasons);
    let got: std::collections::BTreeSet<u64> = ch
        .query(&format!("SELECT DISTINCT joined_id FROM {db}.ods_joined"))
        .fetch_all::<u64>()
        .await
        .unwrap()
        .into_iter()
        .collect();
    let want: std::collections::BTreeSet<u64> = r
        .manifest
        .expected_pairs
        .iter()
        .map(|p| p.joined_id)
        .collect();
    assert_eq!(want.len() as u64, src.stats.joined_pairs * k);
    assert_eq!(got, want, "joined ids are exactly the manifest's");
    ingest.term();
    let _ = ingest.wait(Duration::from_secs(30));

    // The same command again (to other shadow topics): the same bytes in the
    // same order in every partition.
    let shadow2 = loadgen::shadow::shadow_config(&cfg, "_sh2").unwrap();
    let r2 = loadgen::replay(&cfg, &shadow2.topics, &cfg.topics, false, &options())
        .await
        .expect("second replay");
    r2.ensure_complete().unwrap();
    // (The pairs' `out_of_order` flags may differ: the topics are read
    // concurrently, so which of a pair's lines came first varies.)
    let ids = |m: &loadgen::ReplayManifest| -> Vec<(u64, i64)> {
        let mut v: Vec<_> = m
            .manifest
            .expected_pairs
            .iter()
            .map(|p| (p.joined_id, p.delay_ms))
            .collect();
        v.sort();
        v
    };
    assert!(ids(&r2) == ids(&r), "the second replay expects other pairs");
    for t in [
        schemas::LogType::Request,
        schemas::LogType::Exposure,
        schemas::LogType::Interaction,
    ] {
        let a = read_topic(&cfg, shadow.topics.topic_for(t));
        let b = read_topic(&cfg, shadow2.topics.topic_for(t));
        let n: usize = a.values().map(Vec::len).sum();
        assert_eq!(n as u64, r.manifest.topic(t).unwrap().counts.messages);
        assert!(a == b, "{t}: the two replays differ");
    }

    // shadow-drop: the shadow topics and database go, production's stay.
    for s in [&shadow, &shadow2] {
        let d = loadgen::shadow::drop_shadow(&cfg, s)
            .await
            .expect("shadow-drop");
        assert!(d.topics_deleted.contains(&s.topics.request), "{d:?}");
    }
    let dbs: Vec<String> = ch
        .query("SELECT name FROM system.databases")
        .fetch_all()
        .await
        .unwrap();
    assert!(!dbs.contains(&db), "shadow database dropped");
    assert!(
        loadgen::shadow::drop_shadow(&cfg, &cfg).await.is_err(),
        "production is refused"
    );
    drop_database(&cfg).await;
}
