//! The cluster variant of the schema against a real two-shard ClickHouse 18.16
//! cluster (`dev/stack up ch-cluster`: ZooKeeper + two servers, one shard
//! each): `ingest migrate` creates the replicated shard-local tables and the
//! Distributed tables ON CLUSTER (a second run applies nothing), `ingest run`
//! loads generator traffic through the Distributed tables (killed with -9
//! mid-stream once, then restarted), every count is exact through them, both
//! shards hold rows, and `ingest retention` drops old day partitions on every
//! shard.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Config;
use integration_tests::{bin, env_of, generate, test_config, Proc};
use schemas::LogType;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The cluster as `dev/stack env --ch-cluster` describes it.
struct Cluster {
    url: String,
    name: String,
    node_urls: Vec<String>,
}

/// `dev/stack up ch-cluster` (a no-op when it runs), then its coordinates.
fn up() -> Cluster {
    let t0 = Instant::now();
    let out = Command::new(root().join("dev/stack"))
        .args(["up", "ch-cluster"])
        .output()
        .expect("running dev/stack");
    assert!(
        out.status.success(),
        "dev/stack up ch-cluster failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "{}(dev/stack up ch-cluster: {:?})",
        String::from_utf8_lossy(&out.stdout),
        t0.elapsed()
    );
    let out = Command::new(root().join("dev/stack"))
        .args(["env", "--ch-cluster"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let env = String::from_utf8_lossy(&out.stdout);
    let mut c = Cluster {
        url: String::new(),
        name: String::new(),
        node_urls: Vec::new(),
    };
    for line in env.lines() {
        let Some((k, v)) = line.trim_start_matches("export ").split_once('=') else {
            continue;
        };
        match k {
            // The last URL line is the cluster's (the first is the single server's).
            "ADLOG_CLICKHOUSE__URL" => c.url = v.to_string(),
            "ADLOG_CLICKHOUSE__CLUSTER" => c.name = v.to_string(),
            "ADLOG_CHC_HTTP_PORTS" => {
                c.node_urls = v
                    .split(',')
                    .map(|p| format!("http://127.0.0.1:{}", p.trim()))
                    .collect()
            }
            _ => {}
        }
    }
    assert!(
        !c.name.is_empty() && c.node_urls.len() >= 2,
        "dev/stack env --ch-cluster: {env}"
    );
    c
}

/// The environment of a pipeline binary for `cfg`, cluster included.
fn env(cfg: &Config) -> Vec<(String, String)> {
    let mut v = env_of(cfg);
    v.push((
        "ADLOG_CLICKHOUSE__CLUSTER".into(),
        cfg.clickhouse.cluster.clone(),
    ));
    v
}

/// Runs `ingest ARGS…` to completion; its stdout, or a panic with its output.
fn ingest(cfg: &Config, args: &[&str]) -> String {
    let out = Command::new(bin("ingest"))
        .args(args)
        .envs(env(cfg))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ingest {args:?} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    print!("{stdout}");
    stdout
}

fn client(url: &str) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(url)
        .with_validation(false)
}

async fn one(ch: &clickhouse::Client, sql: &str) -> u64 {
    ch.query(sql)
        .fetch_one::<u64>()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn drop_databases(c: &Cluster, cfg: &Config) {
    let ch = client(&c.url);
    for db in [
        cfg.clickhouse.database.clone(),
        format!("{}_local", cfg.clickhouse.database),
    ] {
        let _ = ch
            .query(&format!(
                "DROP DATABASE IF EXISTS {db} ON CLUSTER {}",
                c.name
            ))
            .execute()
            .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_migrate_ingest_kill9_exact_counts_on_both_shards_and_retention() {
    let t0 = Instant::now();
    let c = up();
    let mut cfg = test_config("cluster");
    cfg.clickhouse.url = c.url.clone();
    cfg.clickhouse.cluster = c.name.clone();
    let db = cfg.clickhouse.database.clone();
    let local = format!("{db}_local");

    // Migrations ON CLUSTER; a second run applies nothing.
    let first = ingest(&cfg, &["migrate"]);
    assert!(first.contains(&format!("cluster {}", c.name)), "{first}");
    assert!(first.contains("applied 0006_cluster_tables ("), "{first}");
    let second = ingest(&cfg, &["migrate"]);
    assert!(
        second.trim_end().ends_with("(0 applied)"),
        "second migrate: {second}"
    );

    // Every node has the Distributed tables over its replicated local tables.
    for url in &c.node_urls {
        let ch = client(url);
        let engines: Vec<(String, String, String)> = ch
            .query(
                "SELECT database, name, engine FROM system.tables \
                 WHERE database IN (?, ?) ORDER BY database, name",
            )
            .bind(db.as_str())
            .bind(local.as_str())
            .fetch_all()
            .await
            .unwrap();
        for t in [
            "ods_request",
            "dead_letter",
            "ingest_ledger",
            "agg_request_1s",
            "agg_service_edges_1m",
            "trace_by_uid",
            "trace_index",
        ] {
            let engine = |d: &str| {
                engines
                    .iter()
                    .find(|(dd, n, _)| dd == d && n == t)
                    .map(|(_, _, e)| e.clone())
                    .unwrap_or_else(|| panic!("{url}: {d}.{t} missing: {engines:?}"))
            };
            assert_eq!(engine(&db), "Distributed", "{url}: {db}.{t}");
            assert!(
                engine(&local).starts_with("Replicated"),
                "{url}: {local}.{t} is {}",
                engine(&local)
            );
        }
    }

    // Traffic through `ingest run` into the Distributed tables, with a
    // kill -9 of the worker mid-stream: recovery reads the ledger through the
    // Distributed ingest_ledger and every node's running INSERTs.
    cfg.ingest.batch_max_rows = 2_000;
    cfg.ingest.flush_interval_ms = 200;
    let gen = {
        let cfg = cfg.clone();
        tokio::spawn(async move { generate(&cfg, 30_000, 10_000).await })
    };
    let log_path = root()
        .join("target")
        .join("test-logs")
        .join(format!("{db}-ingest.log"));
    std::fs::create_dir_all(log_path.parent().unwrap()).unwrap();
    let start_ingest = |args: &[&str]| {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        Proc {
            child: Command::new(bin("ingest"))
                .args(args)
                .envs(env(&cfg))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
            name: log_path.display().to_string(),
        }
    };
    let ch = client(&c.url);
    let mut first = start_ingest(&["run"]);
    let t = Instant::now();
    while one(&ch, &format!("SELECT count() FROM {db}.ods_request")).await == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no rows 60 s after starting ingest"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    first.kill9();
    let before_kill = one(&ch, &format!("SELECT count() FROM {db}.ods_request")).await;
    let m = gen.await.unwrap().unwrap();
    println!(
        "killed ingest with {before_kill} of {} request rows stored",
        m.topic(LogType::Request).unwrap().counts.good
    );
    let mut run = start_ingest(&["run", "--stop-after-idle", "4"]);
    let code = run.wait(Duration::from_secs(120)).unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert_eq!(
        code,
        0,
        "ingest run exited {code} (log: {})",
        log_path.display()
    );
    if let Some(summary) = log.lines().rev().find(|l| l.contains("ingest stopped")) {
        println!("{summary}");
    }

    // Exact counts through the Distributed tables.
    for (t, table) in [
        (LogType::Request, "ods_request"),
        (LogType::Exposure, "ods_exposure"),
        (LogType::Interaction, "ods_interaction"),
    ] {
        let want = m.topic(t).unwrap().counts.good;
        let got = one(&ch, &format!("SELECT count() FROM {db}.{table}")).await;
        assert_eq!(got, want, "{table} rows vs. good lines sent");
        let distinct = one(
            &ch,
            &format!("SELECT uniqExact(_topic, _partition, _offset) FROM {db}.{table}"),
        )
        .await;
        assert_eq!(distinct, got, "{table}: duplicated offsets");
    }
    let dl = one(&ch, &format!("SELECT count() FROM {db}.dead_letter")).await;
    assert_eq!(dl, m.totals.bad, "dead letters vs. bad lines sent");
    let raw = one(&ch, &format!("SELECT count() FROM {db}.ods_request")).await;
    let edge = one(
        &ch,
        &format!("SELECT count() FROM {db}.ods_request WHERE caller = ''"),
    )
    .await;
    let hops = raw - edge;
    for (what, sql, want) in [
        (
            "agg_request_1s",
            format!("SELECT countMerge(requests) FROM {db}.agg_request_1s"),
            raw,
        ),
        (
            "agg_service_edges_1m",
            format!("SELECT countMerge(calls) FROM {db}.agg_service_edges_1m"),
            hops,
        ),
        (
            "trace_by_uid",
            format!("SELECT count() FROM {db}.trace_by_uid"),
            edge,
        ),
        (
            "trace_index",
            format!("SELECT countMerge(lines) FROM {db}.trace_index"),
            raw,
        ),
        (
            "ingest_ledger",
            format!(
                "SELECT sum(rows) FROM {db}.ingest_ledger WHERE tbl IN ('ods_request', \
                 'ods_exposure', 'ods_interaction', 'dead_letter')"
            ),
            raw + m.topic(LogType::Exposure).unwrap().counts.good
                + m.topic(LogType::Interaction).unwrap().counts.good
                + dl,
        ),
    ] {
        assert_eq!(one(&ch, &sql).await, want, "{what} through Distributed");
    }

    // Both shards hold rows, and together exactly the total.
    let mut per_shard = Vec::new();
    for url in &c.node_urls {
        per_shard.push(
            one(
                &client(url),
                &format!("SELECT count() FROM {local}.ods_request"),
            )
            .await,
        );
    }
    println!("ods_request rows per shard: {per_shard:?}");
    assert!(
        per_shard.iter().all(|&n| n > 0),
        "a shard is empty: {per_shard:?}"
    );
    assert_eq!(per_shard.iter().sum::<u64>(), raw);

    // Retention drops old day partitions on every shard (Kafka partitions 0
    // and 1 go to different shards).
    let old_day: String = ch
        .query("SELECT toString(today() - 40)")
        .fetch_one()
        .await
        .unwrap();
    ch.query_raw(&format!(
        "INSERT INTO {db}.ods_request (ts, ts_ms, trace_id, span_id, service, api, uid, \
         _topic, _partition, _offset, _ingested_at) VALUES \
         ('{old_day} 12:00:00', 0, 'old-1', 's', 'svc', '/x', 1, 'old', 0, 1, '{old_day} 12:00:00'), \
         ('{old_day} 12:00:00', 0, 'old-2', 's', 'svc', '/x', 1, 'old', 1, 1, '{old_day} 12:00:00')"
    ))
    .with_setting("insert_distributed_sync", "1")
    .execute()
    .await
    .unwrap();
    for url in &c.node_urls {
        let n = one(
            &client(url),
            &format!("SELECT count() FROM {local}.ods_request WHERE _topic = 'old'"),
        )
        .await;
        assert_eq!(n, 1, "{url}: one old row per shard");
    }
    let out = ingest(&cfg, &["retention"]);
    assert!(
        out.contains(&format!("dropped {local}.ods_request partition")),
        "{out}"
    );
    assert_eq!(
        one(
            &ch,
            &format!("SELECT count() FROM {db}.ods_request WHERE _topic = 'old'")
        )
        .await,
        0,
        "old rows dropped on every shard"
    );
    assert_eq!(
        one(&ch, &format!("SELECT count() FROM {db}.ods_request")).await,
        raw,
        "today's rows kept"
    );

    drop_databases(&c, &cfg).await;
    println!("cluster test took {:?}", t0.elapsed());
}
