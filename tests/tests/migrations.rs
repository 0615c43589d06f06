//! The `sql/` migrations and `ingest migrate`, against
//! * the real ClickHouse server of the dev stack (Debian's 18.16; URL from
//!   `ADLOG_CLICKHOUSE__URL`, default http://127.0.0.1:8123), in a database of
//!   its own per test run, dropped at the end. An unreachable server FAILS the
//!   test (start it with `dev/stack up clickhouse`);
//! * chDB (ClickHouse 26.9 in-process, `pip install chdb-core`): the script
//!   rendered for 26.9 is piped into `tests/chdb/test_migrations.py`.
//!
//! The raw tables' columns are checked against `tests/chdb/expected_columns.json`,
//! the contract with the ingest worker's RowBinary rows.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use clickhouse::Client;
use common::config::ClickHouseConfig;
use ingest::migrate::{self, Migration, Options, Target};

fn config(test: &str) -> ClickHouseConfig {
    let mut cfg = common::Config::load(None)
        .expect("configuration from ADLOG_* env")
        .clickhouse;
    cfg.database = format!("adlog_test_mig_{}_{test}", std::process::id());
    cfg.cluster = String::new();
    cfg
}

/// A client for the server, or a panic that says how to get one.
async fn connect(cfg: &ClickHouseConfig) -> Client {
    let client = ingest::clickhouse::client(cfg).expect("client");
    if let Err(e) = ingest::clickhouse::server_version(&client, cfg, Duration::from_secs(10)).await
    {
        panic!(
            "ClickHouse is not reachable ({e:#}). These tests need the dev stack's server: \
             run `dev/stack up clickhouse`, or point ADLOG_CLICKHOUSE__URL at a running \
             ClickHouse (18.16 is what CI runs)."
        );
    }
    client
}

fn expected_columns() -> BTreeMap<String, Vec<(String, String)>> {
    let v: serde_json::Value =
        serde_json::from_str(include_str!("../chdb/expected_columns.json")).unwrap();
    v.as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| !k.starts_with('_'))
        .map(|(table, cols)| {
            let cols = cols
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    let (n, t) = c.as_str().unwrap().split_once(' ').unwrap();
                    (n.to_string(), t.to_string())
                })
                .collect();
            (table.clone(), cols)
        })
        .collect()
}

fn base_type(t: &str) -> &str {
    t.strip_prefix("LowCardinality(")
        .and_then(|t| t.strip_suffix(')'))
        .unwrap_or(t)
}

async fn run(
    client: &Client,
    cfg: &ClickHouseConfig,
    migrations: &[Migration],
    opts: &Options,
) -> anyhow::Result<(migrate::Outcome, Vec<String>)> {
    let mut lines = Vec::new();
    let outcome = migrate::run(client, cfg, migrations, opts, &mut |l| {
        println!("{l}");
        lines.push(l.to_string())
    })
    .await?;
    Ok((outcome, lines))
}

async fn tables(client: &Client, db: &str) -> anyhow::Result<Vec<(String, String)>> {
    Ok(client
        .query("SELECT name, engine FROM system.tables WHERE database = ? ORDER BY name")
        .bind(db)
        .fetch_all::<(String, String)>()
        .await?)
}

async fn show_create_all(client: &Client, db: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (t, _) in tables(client, db).await? {
        let ddl: String = client
            .query(&format!("SHOW CREATE TABLE {db}.{t}"))
            .fetch_one()
            .await
            .with_context(|| format!("SHOW CREATE TABLE {db}.{t}"))?;
        out.insert(t, ddl);
    }
    Ok(out)
}

fn copy_to_dir(migrations: &[Migration], dir: &Path) {
    for m in migrations {
        std::fs::write(dir.join(m.file_name()), &m.source).unwrap();
    }
}

async fn scenario(client: &Client, cfg: &ClickHouseConfig) -> anyhow::Result<()> {
    let db = cfg.database.as_str();
    let migrations = migrate::embedded()?;
    let n = migrations.len();
    let last = migrations.last().unwrap().version;

    // Dry run on a missing database: everything pending, nothing created.
    let (o, _) = run(
        client,
        cfg,
        &migrations,
        &Options {
            dry_run: true,
            ..Options::default()
        },
    )
    .await?;
    ensure!(
        o.pending.len() == n && o.applied.is_empty(),
        "dry run: {o:?}"
    );
    let dbs: u64 = client
        .query("SELECT count() FROM system.databases WHERE name = ?")
        .bind(db)
        .fetch_one()
        .await?;
    ensure!(dbs == 0, "a dry run created the database");

    // Apply everything.
    let t0 = Instant::now();
    let (o, lines) = run(client, cfg, &migrations, &Options::default()).await?;
    println!("first apply: {:?}", t0.elapsed());
    ensure!(o.applied.len() == n, "applied {:?}", o.applied);
    ensure!(o.at == last);
    ensure!(
        lines.last().unwrap() == &format!("schema up to date at {last:04} ({n} applied)"),
        "{lines:?}"
    );
    ensure!(
        lines
            .iter()
            .any(|l| l.starts_with("applied 0001_raw_tables (")),
        "{lines:?}"
    );

    // The raw tables have exactly the contracted columns.
    for (table, want) in expected_columns() {
        let got: Vec<(String, String)> = client
            .query(
                // 18.16's system.columns has no `position`; rows come in table order.
                "SELECT name, type FROM system.columns WHERE database = ? AND table = ?",
            )
            .bind(db)
            .bind(table.as_str())
            .fetch_all()
            .await?;
        let got_base: Vec<(String, String)> = got
            .iter()
            .map(|(n, t)| (n.clone(), base_type(t).to_string()))
            .collect();
        ensure!(
            got_base == want,
            "{db}.{table} columns:\n  got  {got:?}\n  want {want:?}"
        );
    }

    // The migrations are recorded with their checksums.
    let recorded: Vec<(u32, String, String)> = client
        .query(&format!(
            "SELECT version, name, checksum FROM {db}.schema_migrations ORDER BY version"
        ))
        .fetch_all()
        .await?;
    let want: Vec<(u32, String, String)> = migrations
        .iter()
        .map(|m| (m.version, m.name.clone(), m.checksum.clone()))
        .collect();
    ensure!(recorded == want, "schema_migrations: {recorded:?}");

    // Applying again changes nothing.
    let before = show_create_all(client, db).await?;
    let (o, lines) = run(client, cfg, &migrations, &Options::default()).await?;
    ensure!(o.applied.is_empty(), "second run applied {:?}", o.applied);
    ensure!(
        lines.last().unwrap() == &format!("schema up to date at {last:04} (0 applied)"),
        "{lines:?}"
    );
    ensure!(
        show_create_all(client, db).await? == before,
        "schema changed by a second run"
    );

    // Rows go into every raw table, and every materialized view feeds its target.
    for table in expected_columns().keys() {
        client
            .query_raw(&format!(
                "INSERT INTO {db}.{table} (ts, _topic, _partition, _offset) VALUES (now(), 'test', 0, 1)"
            ))
            .execute()
            .await
            .with_context(|| format!("inserting into {db}.{table}"))?;
    }
    // A request line below the edge too (non-empty caller), for the views that
    // only take those (agg_service_edges_1m_mv).
    client
        .query_raw(&format!(
            "INSERT INTO {db}.ods_request (ts, caller, _topic, _partition, _offset) \
             VALUES (now(), 'test-caller', 'test', 0, 2)"
        ))
        .execute()
        .await
        .context("inserting a hop into ods_request")?;
    for (view, engine) in tables(client, db).await? {
        if engine != "MaterializedView" {
            continue;
        }
        let ddl = &before[&view];
        let target = ddl
            .split_once(" TO ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .with_context(|| format!("{view} has no TO table: {ddl}"))?;
        let rows: u64 = client
            .query(&format!("SELECT count() FROM {target}"))
            .fetch_one()
            .await?;
        ensure!(
            rows > 0,
            "materialized view {view} wrote nothing into {target}"
        );
    }

    // A migration changed after it was applied is an error naming it ...
    let dir = tempfile::tempdir()?;
    copy_to_dir(&migrations, dir.path());
    let victim = &migrations[n - 1];
    let path = dir.path().join(victim.file_name());
    std::fs::write(&path, format!("{}\n-- an edit\n", victim.source))?;
    let edited = migrate::from_dir(dir.path())?;
    let err = run(client, cfg, &edited, &Options::default())
        .await
        .expect_err("a changed migration must be refused");
    let msg = format!("{err:#}");
    ensure!(
        msg.contains(&victim.file_name()) && msg.contains("--allow-changed"),
        "{msg}"
    );
    // ... unless allowed.
    let (o, _) = run(
        client,
        cfg,
        &edited,
        &Options {
            allow_changed: true,
            ..Options::default()
        },
    )
    .await?;
    ensure!(o.changed.len() == 1 && o.applied.is_empty(), "{o:?}");

    // Only the missing migration is applied.
    std::fs::write(&path, &victim.source)?;
    std::fs::write(
        dir.path().join("9999_test_extra.sql"),
        "CREATE TABLE IF NOT EXISTS {db}.test_extra{on_cluster} (x UInt8)\n\
         ENGINE = {engine:MergeTree} ORDER BY x;\n",
    )?;
    let (o, lines) = run(
        client,
        cfg,
        &migrate::from_dir(dir.path())?,
        &Options::default(),
    )
    .await?;
    ensure!(
        o.applied.len() == 1 && o.applied[0].name == "9999_test_extra" && o.at == 9999,
        "{o:?}"
    );
    ensure!(
        lines.last().unwrap() == "schema up to date at 9999 (1 applied)",
        "{lines:?}"
    );
    Ok(())
}

#[tokio::test]
async fn migrations_apply_idempotently_on_the_clickhouse_server() {
    let cfg = config("srv");
    let client = connect(&cfg).await;
    let result = scenario(&client, &cfg).await;
    let dropped = client
        .query_raw(&format!("DROP DATABASE IF EXISTS {}", cfg.database))
        .execute()
        .await;
    result.unwrap();
    dropped.expect("dropping the test database");
}

#[tokio::test]
async fn unreachable_server_fails_with_the_url() {
    let mut cfg = config("down");
    cfg.url = "http://127.0.0.1:1".into();
    cfg.password = "hunter2".into();
    let client = ingest::clickhouse::client(&cfg).unwrap();
    let err = run(
        &client,
        &cfg,
        &migrate::embedded().unwrap(),
        &Options::default(),
    )
    .await
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("http://127.0.0.1:1"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
}

/// Every migration on a current ClickHouse: the script rendered for 26.9 goes
/// to `tests/chdb/test_migrations.py` (see there for what it checks).
#[test]
fn migrations_apply_on_chdb() {
    let target = Target::new("adlog", "", "26.9".parse().unwrap(), &[]).unwrap();
    let script = migrate::render_script(&migrate::embedded().unwrap(), &target).unwrap();
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join("chdb/test_migrations.py");
    let t0 = Instant::now();
    let mut child = Command::new("python3")
        .arg(&py)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 must be installed (with `pip install chdb-core`)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}chDB test took {:?}", t0.elapsed());
    assert!(
        out.status.success(),
        "{} failed ({}):\n{stdout}{stderr}",
        py.display(),
        out.status
    );
}

/// A ledger row must mean "every view of this block ran" (sql/0012): 18.16
/// runs a table's views in the order of their names, after the table's own
/// parts, so each raw table's ledger view must sort after all its other views,
/// and a view that fails must leave the block without a ledger row.
async fn ledger_after_views(client: &Client, cfg: &ClickHouseConfig) -> anyhow::Result<()> {
    let db = cfg.database.as_str();
    run(client, cfg, &migrate::embedded()?, &Options::default()).await?;
    let deps: Vec<ingest::reconcile::Dependents> = client
        .query(
            "SELECT name, dependencies_table FROM system.tables \
             WHERE database = ? AND notEmpty(dependencies_table) ORDER BY name",
        )
        .bind(db)
        .fetch_all()
        .await?;
    for table in [
        "ods_request",
        "ods_exposure",
        "ods_interaction",
        "ods_joined",
        "dead_letter",
    ] {
        let mut views = deps
            .iter()
            .find(|d| d.name == table)
            .map(|d| d.dependencies_table.clone())
            .with_context(|| format!("{table} has no materialized views"))?;
        views.sort();
        ensure!(
            views.last() == Some(&format!("zz_ledger_{table}")),
            "{table}: its ledger view must run last (views run in name order): {views:?}"
        );
    }

    // A view that fails on one row, named to run after the agg_* views and
    // before the ledger view (trace_* views run there too).
    client
        .query(&format!(
            "CREATE TABLE {db}.test_sink (x UInt64) ENGINE = MergeTree ORDER BY x"
        ))
        .execute()
        .await?;
    client
        .query(&format!(
            "CREATE MATERIALIZED VIEW {db}.trace_zz_fails_mv TO {db}.test_sink AS \
             SELECT throwIf(_offset = 666) + _offset AS x FROM {db}.ods_request"
        ))
        .execute()
        .await?;
    let insert = |offset: u64| {
        client
            .query(&format!(
                "INSERT INTO {db}.ods_request (ts, uid, service, api, _topic, _partition, _offset) \
                 VALUES (now(), 7, 'svc', '/a', 'request', 0, {offset})"
            ))
            .execute()
    };
    insert(1).await.context("a row that no view refuses")?;
    let err = insert(666)
        .await
        .expect_err("the failing view refuses offset 666");
    ensure!(format!("{err:#}").contains("trace_zz_fails_mv"), "{err:#}");
    let count = |sql: String| async move { client.query(&sql).fetch_one::<u64>().await };
    ensure!(
        count(format!("SELECT count() FROM {db}.ods_request")).await? == 2,
        "both rows are in the raw table (its part is written before the views run)"
    );
    ensure!(
        count(format!(
            "SELECT toUInt64(sum(requests)) FROM (SELECT countMerge(requests) AS requests FROM {db}.agg_request_1s)"
        ))
        .await?
            == 2,
        "the agg_* views ran before the failing one"
    );
    let ledger: Vec<(u64, u64)> = client
        .query(&format!(
            "SELECT min_offset, max_offset FROM {db}.ingest_ledger WHERE tbl = 'ods_request' ORDER BY min_offset"
        ))
        .fetch_all()
        .await?;
    ensure!(
        ledger == vec![(1, 1)],
        "only the block whose views all ran has a ledger row: {ledger:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_ledger_row_means_every_view_of_its_block_ran() {
    let cfg = config("ledger_last");
    let client = connect(&cfg).await;
    let res = ledger_after_views(&client, &cfg).await;
    client
        .query(&format!("DROP DATABASE IF EXISTS {}", cfg.database))
        .execute()
        .await
        .unwrap();
    res.unwrap();
}
