//! An INSERT that fails ambiguously after the server stored part of it.
//!
//! ClickHouse writes an INSERT's parts one day partition at a time (and a
//! distributed INSERT one shard at a time), and runs the materialized views
//! (the ledger's among them) after the parts. A block whose rows span
//! midnight UTC — every night — can therefore be half stored with no ledger
//! row when the server dies between its two parts. If the worker's INSERT
//! then fails without an answer, only the rows themselves can say what is
//! missing: counting "some rows are there" as "the INSERT went through" lost
//! the second day (and committed past it).
//!
//! The test builds exactly that state: the first day's rows of the block are
//! stored (copied from a scratch ingest of the same messages, without their
//! ledger row), and a proxy drops the worker's first INSERT into
//! `ods_request` unanswered. Every row must end up stored exactly once.

use std::net::ToSocketAddrs;
use std::time::Duration;

use integration_tests::reliability::{ch_query, ch_u64, http_host_port, DropProxy};
use integration_tests::{drop_database, migrate, test_config, unique, Proc};
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::time::format_ms;

const DAY_MS: i64 = 86_400_000;
const PER_DAY: i64 = 6;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A request line of the README's format at `ts_ms`, in a Filebeat envelope.
fn request_line(ts_ms: i64, span: usize) -> Vec<u8> {
    let mut ts = String::new();
    format_ms(ts_ms, &mut ts);
    let line = [
        ts.as_str(),
        "4bf92f3577b34da6a3ce929d0e0e4736",
        &format!("span-{span}"),
        "",
        "ad-gateway",
        "",
        "/v1/feed",
        "123456",
        "1001",
        "200",
        "12.75",
        "ad-web-017",
        "yf",
        "region=cn-north",
    ]
    .join("\t");
    let mut read_at = String::new();
    format_ms(now_ms(), &mut read_at);
    let read_at = read_at.replacen(' ', "T", 1) + "Z";
    let msg = serde_json::to_string(&line).unwrap();
    format!(
        r#"{{"@timestamp":"{read_at}","message":{msg},"log":{{"offset":{span},"file":{{"path":"/data/logs/adserver/trace.log"}}}},"host":{{"name":"ad-web-017"}}}}"#
    )
    .into_bytes()
}

fn run_ingest(cfg: &common::Config) {
    let mut p = Proc::start("ingest", &["run", "--stop-after-idle", "3"], cfg).unwrap();
    assert_eq!(
        p.wait(Duration::from_secs(120)).unwrap(),
        0,
        "ingest exit ({})",
        p.name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_across_midnight_half_stored_then_unanswered_is_completed_exactly() {
    let mut cfg = test_config("midnight");
    cfg.kafka.partitions = 1;
    cfg.ingest.flush_interval_ms = 1_000;
    cfg.ingest.flush_age_ms = 0;
    migrate(&cfg).unwrap();
    ingest::run::ensure_topics(&cfg, &[&cfg.topics.request, &cfg.topics.dead_letter])
        .await
        .unwrap();
    let db = cfg.clickhouse.database.clone();
    let url = cfg.clickhouse.url.clone();

    // PER_DAY lines in the last seconds of yesterday (UTC), PER_DAY in the
    // first of today: one partition, consecutive offsets, one block.
    let midnight = now_ms().div_euclid(DAY_MS) * DAY_MS;
    let producer: FutureProducer = common::kafka::producer_config(&cfg.kafka).create().unwrap();
    for i in 0..2 * PER_DAY {
        let ts = if i < PER_DAY {
            midnight - 3_000 + i * 100
        } else {
            midnight + 500 + i * 100
        };
        let payload = request_line(ts, i as usize);
        producer
            .send(
                FutureRecord::<(), _>::to(&cfg.topics.request).payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    // The same messages ingested into a scratch database give the exact rows
    // (topic, partition, offset, Kafka timestamp) the worker will write.
    let mut scratch = cfg.clone();
    scratch.clickhouse.database = unique("midnight_scratch");
    scratch.kafka.ingest_group = unique("midnight_scratch");
    migrate(&scratch).unwrap();
    run_ingest(&scratch);
    let sdb = &scratch.clickhouse.database;
    assert_eq!(
        ch_u64(&url, &format!("SELECT count() FROM {sdb}.ods_request")).unwrap(),
        2 * PER_DAY as u64,
        "scratch ingest"
    );

    // The state a server that died between the block's two parts leaves:
    // yesterday's rows stored, no ledger row (the view runs after the parts).
    let cut = midnight / 1000;
    ch_query(&url, &format!("DETACH TABLE {db}.zz_ledger_ods_request")).unwrap();
    ch_query(
        &url,
        &format!(
            "INSERT INTO {db}.ods_request SELECT * FROM {sdb}.ods_request WHERE ts < toDateTime({cut})"
        ),
    )
    .unwrap();
    ch_query(&url, &format!("ATTACH TABLE {db}.zz_ledger_ods_request")).unwrap();
    assert_eq!(
        ch_u64(&url, &format!("SELECT count() FROM {db}.ods_request")).unwrap(),
        PER_DAY as u64
    );
    assert_eq!(
        ch_u64(&url, &format!("SELECT count() FROM {db}.ingest_ledger")).unwrap(),
        0,
        "no ledger row for the half-stored block"
    );

    // The worker's first INSERT into ods_request is dropped unanswered.
    let target = http_host_port(&url)
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap();
    let proxy = DropProxy::start(
        target,
        vec![b"query=INSERT".to_vec(), b"ods_request".to_vec()],
    );
    let mut via = cfg.clone();
    via.clickhouse.url = proxy.url();
    run_ingest(&via);
    assert!(
        !proxy.armed(),
        "the INSERT was dropped (the failure happened)"
    );

    let rows = |w: &str| {
        ch_u64(
            &url,
            &format!("SELECT count() FROM {db}.ods_request WHERE {w}"),
        )
        .unwrap()
    };
    assert_eq!(
        rows(&format!("ts < toDateTime({cut})")),
        PER_DAY as u64,
        "yesterday, once"
    );
    assert_eq!(
        rows(&format!("ts >= toDateTime({cut})")),
        PER_DAY as u64,
        "today: not lost"
    );
    assert_eq!(
        ch_u64(
            &url,
            &format!("SELECT uniqExact(_offset) FROM {db}.ods_request")
        )
        .unwrap(),
        2 * PER_DAY as u64,
        "every offset once"
    );
    assert_eq!(rows("1"), 2 * PER_DAY as u64, "nothing twice");
    drop_database(&scratch).await;
    drop_database(&cfg).await;
}
