//! `rollup_mismatches` can fail: a fresh database gets a few raw rows by plain
//! SQL INSERTs (the materialized views fill the rollups and trace tables), is
//! reported consistent, and then each kind of damage — a rollup row with no
//! raw row behind it, a raw row the rollups still count, a table nobody
//! checks — is reported for exactly the tables it affects. The at-least-once
//! `joined` rollup accepts a replayed copy, also after ods_joined collapsed it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use integration_tests::reliability::{ch_query, ch_u64};
use integration_tests::rollups::{rollup_mismatches, run_reconcile};
use integration_tests::{migrate, test_config};

const SRC: &str = "'rollups_test' AS _topic, toUInt32(0) AS _partition";
const SRC_TAIL: &str =
    "'' AS _src_host, 'f.log' AS _src_file, toUInt64(0) AS _src_file_offset, now() AS _ingested_at";

fn run(url: &str, sql: &str) {
    ch_query(url, sql).unwrap_or_else(|e| panic!("{e:#}"));
}

/// The tables `rollup_mismatches` reports (each line starts with `table:`).
fn reported(url: &str, db: &str) -> (BTreeSet<String>, Vec<String>) {
    let lines = rollup_mismatches(url, db).expect("rollup check runs");
    let tables = lines
        .iter()
        .map(|l| l.split(':').next().unwrap().to_string())
        .collect();
    (tables, lines)
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// `n` joined events starting at id `first` (ids, times and fields derived
/// from the id, as the joiner's are from the pair), at offsets from `offset`.
fn insert_joined(url: &str, db: &str, first: u64, n: u64, offset: u64) {
    run(
        url,
        &format!(
            "INSERT INTO {db}.ods_joined SELECT \
             toUInt64(1000 + id) AS joined_id, concat('m', toString(id)) AS mark_id, \
             toDateTime(toStartOfMinute(now()) - 60 * (id % 3)) AS ts, \
             toUInt64(toUInt32(ts)) * 1000 AS ts_ms, 'tx' AS exposure_trace_id, \
             toUInt64(id % 4) AS uid, toUInt32(10 + id % 2) AS psid, toUInt64(5) AS ad_id, \
             toUInt64(6) AS creative_id, toUInt16(1) AS position, 'ios' AS platform, \
             toFloat64(0.5) AS bid_price, ts + 2 AS interaction_ts, ts_ms + 2000 AS interaction_ts_ms, \
             'ti' AS interaction_trace_id, if(id % 2 = 0, 'click', 'like') AS action, \
             toInt64(2000 + id) AS delay_ms, 'rollups_joined' AS _topic, toUInt32(0) AS _partition, \
             toUInt64({offset} + number) AS _offset, ts_ms AS _kafka_ts_ms, {SRC_TAIL} \
             FROM (SELECT number, {first} + number AS id FROM system.numbers LIMIT {n})"
        ),
    );
}

#[test]
fn rollup_mismatches_reports_each_damaged_table() {
    let cfg = test_config("rollups");
    migrate(&cfg).unwrap();
    let (url, db) = (
        cfg.clickhouse.url.as_str(),
        cfg.clickhouse.database.as_str(),
    );

    // 40 request lines: 14 traces of an edge line (caller '') and downstream
    // hops, some errors, over the last few minutes (and hours: trace_index,
    // agg_user_visits_1h), 30 exposures, 20 interactions, 6 joined events.
    run(
        url,
        &format!(
            "INSERT INTO {db}.ods_request SELECT \
             toDateTime(now() - 37 * number) AS ts, toUInt64(toUInt32(ts)) * 1000 + number AS ts_ms, \
             concat('trace', toString(intDiv(number, 3))) AS trace_id, toString(number) AS span_id, \
             if(number % 3 = 0, '', toString(number - 1)) AS parent_span_id, \
             ['gw', 'ads', 'rank'][number % 3 + 1] AS service, \
             ['', 'gw', 'ads'][number % 3 + 1] AS caller, \
             if(number % 2 = 0, '/ad', '/feed') AS api, toUInt64(intDiv(number, 3) % 5) AS uid, \
             toUInt32(10 + number % 2) AS psid, toUInt16(if(number % 7 = 0, 503, 200)) AS status, \
             number * 1.25 AS latency_ms, concat('h', toString(number % 2)) AS host, 'idc1' AS idc, \
             ['k'] AS extra_keys, ['v'] AS extra_values, {SRC}, number AS _offset, \
             ts_ms AS _kafka_ts_ms, {SRC_TAIL} FROM system.numbers LIMIT 40"
        ),
    );
    run(
        url,
        &format!(
            "INSERT INTO {db}.ods_exposure SELECT \
             toDateTime(now() - 11 * number) AS ts, toUInt64(toUInt32(ts)) * 1000 AS ts_ms, \
             concat('m', toString(number)) AS mark_id, 'tx' AS trace_id, toUInt64(number % 4) AS uid, \
             toUInt32(10 + number % 2) AS psid, toUInt64(5) AS ad_id, toUInt64(6) AS creative_id, \
             toUInt16(1) AS position, 'ios' AS platform, number * 0.1 AS bid_price, {SRC}, \
             toUInt64(100 + number) AS _offset, ts_ms AS _kafka_ts_ms, {SRC_TAIL} \
             FROM system.numbers LIMIT 30"
        ),
    );
    run(
        url,
        &format!(
            "INSERT INTO {db}.ods_interaction SELECT \
             toDateTime(now() - 13 * number) AS ts, toUInt64(toUInt32(ts)) * 1000 AS ts_ms, \
             concat('m', toString(number)) AS mark_id, 'ti' AS trace_id, toUInt64(number % 4) AS uid, \
             if(number % 3 = 0, 'click', 'like') AS action, [] AS extra_keys, [] AS extra_values, {SRC}, \
             toUInt64(200 + number) AS _offset, ts_ms AS _kafka_ts_ms, {SRC_TAIL} \
             FROM system.numbers LIMIT 20"
        ),
    );
    insert_joined(url, db, 0, 6, 0);
    assert!(ch_u64(url, &format!("SELECT count() FROM {db}.trace_by_uid")).unwrap() > 0);
    let (tables, lines) = reported(url, db);
    assert!(tables.is_empty(), "consistent rows reported: {lines:#?}");

    // A replayed joined event (same joined_id and fields, a new Kafka offset):
    // the rollup counts both copies, ods_joined keeps both until a merge.
    insert_joined(url, db, 2, 1, 6);
    let (tables, lines) = reported(url, db);
    assert!(tables.is_empty(), "an at-least-once copy: {lines:#?}");
    run(url, &format!("OPTIMIZE TABLE {db}.ods_joined FINAL"));
    assert_eq!(
        ch_u64(url, &format!("SELECT count() FROM {db}.ods_joined")).unwrap(),
        6,
        "the copy collapsed"
    );
    let (tables, lines) = reported(url, db);
    assert!(
        tables.is_empty(),
        "a copy collapsed by the merge: {lines:#?}"
    );

    // One extra rollup row that no raw row implies.
    run(
        url,
        &format!(
            "INSERT INTO {db}.agg_user_visits_1h SELECT toStartOfHour(now()), toUInt64(3), \
             toUInt64(0), toUInt64(1)"
        ),
    );
    let (tables, lines) = reported(url, db);
    assert_eq!(tables, set(&["agg_user_visits_1h"]), "{lines:#?}");
    assert!(
        lines[0].contains("1 of ") && lines[0].contains("hops raw"),
        "{}",
        lines[0]
    );
    eprintln!("reported: {}", lines[0]);

    // A joined rollup row without any joined event: the at-least-once check
    // still fails it (per group, and the total against the ingest ledger).
    run(
        url,
        &format!(
            "INSERT INTO {db}.agg_ad_1m_psid SELECT toStartOfMinute(now()), toUInt32(99), 'click', \
             toUInt64(0), toFloat64(0), toUInt64(0), toUInt64(1), toInt64(5)"
        ),
    );
    let (tables, lines) = reported(url, db);
    assert_eq!(
        tables,
        set(&["agg_user_visits_1h", "agg_ad_1m_psid"]),
        "{lines:#?}"
    );
    assert_eq!(lines.len(), 3, "group line + ledger total line: {lines:#?}");

    // One edge request line deleted from the raw table: every table built
    // from edge lines (or from all lines) still counts it.
    run(
        url,
        &format!("ALTER TABLE {db}.ods_request DELETE WHERE _offset = 3"),
    );
    let start = Instant::now();
    while ch_u64(url, &format!("SELECT count() FROM {db}.ods_request")).unwrap() != 39 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "mutation not done"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (tables, lines) = reported(url, db);
    assert_eq!(
        tables,
        set(&[
            "agg_ad_1m_psid",
            "agg_request_1m_psid",
            "agg_request_1s",
            "agg_user_visits_1h",
            "trace_by_uid",
            "trace_index",
        ]),
        "agg_service_edges_1m has no edge lines; {lines:#?}"
    );
    for l in &lines {
        eprintln!("reported: {l}");
    }

    // A rollup table the check does not know is reported, not skipped.
    run(
        url,
        &format!("CREATE TABLE {db}.agg_new_rollup (x UInt8) ENGINE = Memory"),
    );
    let (tables, _) = reported(url, db);
    assert!(tables.contains("agg_new_rollup"), "{tables:?}");

    run(url, &format!("DROP DATABASE IF EXISTS {db}"));
}

/// The state a server that died between an INSERT's raw part and its views
/// leaves: raw rows whose rollup and trace rows were never written. `ingest
/// reconcile` names exactly the tables and the hour, exits 1; `--rebuild`
/// derives that hour again from the raw rows, and everything is equal.
#[test]
fn ingest_reconcile_finds_and_rebuilds_an_hour_whose_views_did_not_run() {
    let cfg = test_config("reconcile");
    migrate(&cfg).unwrap();
    let (url, db) = (
        cfg.clickhouse.url.as_str(),
        cfg.clickhouse.database.as_str(),
    );
    // 30 request lines three hours ago (one hour's bucket, old enough to
    // rebuild), 10 of them stored as if the views never ran.
    let insert = |first: u64, n: u64| {
        run(
            url,
            &format!(
                "INSERT INTO {db}.ods_request SELECT \
                 toDateTime(toStartOfHour(now() - 3 * 3600) + 60 * number) AS ts, \
                 toUInt64(toUInt32(ts)) * 1000 + number AS ts_ms, \
                 concat('trace', toString(intDiv(number, 3))) AS trace_id, toString(number) AS span_id, \
                 if(number % 3 = 0, '', toString(number - 1)) AS parent_span_id, \
                 ['gw', 'ads', 'rank'][number % 3 + 1] AS service, \
                 ['', 'gw', 'ads'][number % 3 + 1] AS caller, '/ad' AS api, \
                 toUInt64(number % 5) AS uid, toUInt32(10) AS psid, \
                 toUInt16(if(number % 7 = 0, 503, 200)) AS status, number * 1.5 AS latency_ms, \
                 'h0' AS host, 'idc1' AS idc, ['k'] AS extra_keys, ['v'] AS extra_values, {SRC}, \
                 number AS _offset, ts_ms AS _kafka_ts_ms, {SRC_TAIL} \
                 FROM (SELECT {first} + number AS number FROM system.numbers LIMIT {n})"
            ),
        )
    };
    insert(0, 20);
    let hourly_views = [
        "agg_request_1s_mv",
        "agg_service_edges_1m_mv",
        "trace_by_uid_mv",
    ];
    for v in hourly_views {
        run(url, &format!("DETACH TABLE {db}.{v}"));
    }
    insert(20, 10);
    for v in hourly_views {
        run(url, &format!("ATTACH TABLE {db}.{v}"));
    }
    let (tables, lines) = reported(url, db);
    assert_eq!(
        tables,
        set(&["agg_request_1s", "agg_service_edges_1m", "trace_by_uid"]),
        "{lines:#?}"
    );

    let reconcile = |extra: &[&str]| {
        let args: Vec<&str> = ["--since", "6h"].iter().chain(extra).copied().collect();
        let (code, text) = run_reconcile(&cfg, &args);
        println!("{text}");
        (code, text)
    };
    let (code, text) = reconcile(&[]);
    assert_eq!(code, Some(1), "differences exit 1:\n{text}");
    let differing: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" groups (") && l.contains(" differ; e.g."))
        .collect();
    assert_eq!(
        differing.len(),
        3,
        "one hour of each damaged table:\n{text}"
    );
    for t in ["agg_request_1s ", "agg_service_edges_1m ", "trace_by_uid "] {
        assert!(
            differing.iter().any(|l| l.trim_start().starts_with(t)),
            "{t} reported:\n{text}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("agg_request_1m_psid ")
                && l.contains("equal to the raw rows")),
        "an undamaged table is equal:\n{text}"
    );

    let (code, text) = reconcile(&["--rebuild"]);
    assert_eq!(code, Some(0), "rebuilt:\n{text}");
    assert_eq!(
        text.matches("rebuilt: now equal to the raw rows").count(),
        3,
        "{text}"
    );
    let (tables, lines) = reported(url, db);
    assert!(tables.is_empty(), "after the rebuild: {lines:#?}");
    assert_eq!(
        ch_u64(url, &format!("SELECT count() FROM {db}.trace_by_uid")).unwrap(),
        10,
        "one trace_by_uid row per edge line, none twice"
    );
    run(url, &format!("DROP DATABASE {db}"));
}
