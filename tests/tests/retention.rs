//! `ingest retention` on the dev stack's ClickHouse 18.16 (no TTL there): day
//! partitions made by inserting rows with old timestamps are dropped exactly
//! when older than each table's retention (raw/rollups/trace tables,
//! dead_letter, ingest_ledger); `--dry-run` drops nothing; a second run finds
//! nothing to do.

use std::process::Command;

use common::Config;
use integration_tests::{bin, clickhouse, count, drop_database, env_of, migrate, test_config};

fn retention(cfg: &Config, args: &[&str]) -> String {
    let out = Command::new(bin("ingest"))
        .arg("retention")
        .args(args)
        .envs(env_of(cfg))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ingest retention {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    print!("{stdout}");
    stdout
}

#[tokio::test]
async fn retention_drops_only_partitions_older_than_each_tables_retention() {
    let cfg = test_config("retention");
    migrate(&cfg).unwrap();
    let ch = clickhouse(&cfg);
    let db = &cfg.clickhouse.database;

    // One INSERT per row, so that each ingest_ledger row is dated like its row.
    let day = |ago: u32| format!("toDateTime(today() - {ago}) + 43200");
    for (i, ago) in [40u32, 31, 30, 29, 0].into_iter().enumerate() {
        ch.query_raw(&format!(
            "INSERT INTO {db}.ods_request (ts, ts_ms, trace_id, span_id, service, api, uid, \
             _topic, _partition, _offset, _ingested_at) \
             SELECT {t}, toUInt64({t}) * 1000, 'trace-{ago}', 's0', 'ad-gateway', '/v1/feed', 7, \
             'request', 0, {i}, {t}",
            t = day(ago)
        ))
        .execute()
        .await
        .unwrap();
    }
    for (i, ago) in [20u32, 15, 14, 0].into_iter().enumerate() {
        ch.query_raw(&format!(
            "INSERT INTO {db}.dead_letter (ts, log_type, reason, error, raw, raw_size, _topic, \
             _partition, _offset, _kafka_ts_ms) \
             SELECT {t}, 'request', 'bad_field', 'test', 'x', 1, 'request', 1, {i}, 0",
            t = day(ago)
        ))
        .execute()
        .await
        .unwrap();
    }
    let partition = |ago: u32| {
        let ch = ch.clone();
        async move {
            ch.query(&format!("SELECT toString(toYYYYMMDD(today() - {ago}))"))
                .fetch_one::<String>()
                .await
                .unwrap()
        }
    };
    let (p40, p31, p30) = (
        partition(40).await,
        partition(31).await,
        partition(30).await,
    );
    let (p15, p14) = (partition(15).await, partition(14).await);

    // Dry run: says what it would drop, drops nothing.
    let out = retention(&cfg, &["--dry-run"]);
    for (table, p) in [
        ("ods_request", &p40),
        ("ods_request", &p31),
        ("agg_request_1s", &p31),
        ("trace_by_uid", &p40),
        ("trace_index", &p31),
        ("dead_letter", &p15),
    ] {
        assert!(
            out.contains(&format!("would drop {db}.{table} partition {p} (")),
            "{table} {p}: {out}"
        );
    }
    for (table, p) in [("ods_request", &p30), ("dead_letter", &p14)] {
        assert!(
            !out.contains(&format!("{db}.{table} partition {p} (")),
            "{table} {p} must be kept: {out}"
        );
    }
    assert_eq!(count(&ch, &cfg, "ods_request", "").await, 5);
    assert_eq!(count(&ch, &cfg, "dead_letter", "").await, 4);

    // A narrower retention for raw data shows one more day.
    let out = retention(&cfg, &["--dry-run", "--days-raw", "29"]);
    assert!(
        out.contains(&format!("would drop {db}.ods_request partition {p30} (")),
        "{out}"
    );

    // The real run.
    let out = retention(&cfg, &[]);
    assert!(
        out.contains(&format!("dropped {db}.ods_request partition {p40} (1 rows")),
        "{out}"
    );
    let days = |table: &'static str, col: &'static str| {
        let ch = ch.clone();
        let db = db.clone();
        async move {
            ch.query(&format!(
                "SELECT toUInt32(today() - toDate({col})) AS ago FROM {db}.{table} \
                 GROUP BY ago ORDER BY ago DESC"
            ))
            .fetch_all::<u32>()
            .await
            .unwrap()
        }
    };
    assert_eq!(days("ods_request", "ts").await, [30, 29, 0]);
    assert_eq!(days("trace_by_uid", "ts").await, [30, 29, 0]);
    assert_eq!(days("agg_request_1s", "ts").await, [30, 29, 0]);
    assert_eq!(days("agg_user_visits_1h", "ts").await, [30, 29, 0]);
    assert_eq!(days("trace_index", "day").await, [30, 29, 0]);
    assert_eq!(days("dead_letter", "ts").await, [14, 0]);
    assert_eq!(days("ingest_ledger", "ingested_at").await, [0]);

    // Nothing left to do.
    let out = retention(&cfg, &[]);
    assert!(out.contains("retention: dropped 0 partitions"), "{out}");

    // Refuses a zero retention.
    let bad = Command::new(bin("ingest"))
        .args(["retention", "--days-raw", "0"])
        .envs(env_of(&cfg))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--days-raw must be at least 1"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    drop_database(&cfg).await;
}
