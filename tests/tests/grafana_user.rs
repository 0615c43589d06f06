//! The read-only `grafana` user of `dev/clickhouse/users.d/grafana.xml`, on the
//! dev stack's ClickHouse (dev/stack installs the file; `dev/stack up
//! clickhouse` also copies it into a server that already runs): it can SELECT
//! the pipeline's tables and the system tables the Grafana plugin reads, with
//! the settings the plugin sends; INSERT, ALTER, DROP, CREATE, changing
//! `readonly` and other databases are refused with ClickHouse's error.

use std::time::{Duration, Instant};

use clickhouse::Client;
use integration_tests::{clickhouse, test_config};

/// The user and password as the repository's users.d file defines them.
fn credentials() -> (String, String) {
    let xml = include_str!("../../dev/clickhouse/users.d/grafana.xml");
    let users = &xml[xml.find("<users>").expect("<users> in grafana.xml")..];
    let user = "grafana".to_string();
    assert!(
        users.contains(&format!("<{user}>")),
        "grafana.xml defines user {user}"
    );
    let pw = users
        .split_once("<password>")
        .and_then(|(_, r)| r.split_once("</password>"))
        .map(|(p, _)| p.to_string())
        .expect("<password> in grafana.xml");
    (user, pw)
}

fn as_grafana(admin_url: &str) -> Client {
    let (user, pw) = credentials();
    Client::default()
        .with_url(admin_url)
        .with_user(user)
        .with_password(pw)
        .with_validation(false)
}

/// The error of `sql` run as grafana, which must fail with ClickHouse's `code`.
async fn refused(g: &Client, sql: &str, code: u32, words: &str) {
    let err = match g.query_raw(sql).execute().await {
        Ok(()) => panic!("grafana may run: {sql}"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&format!("Code: {code}")) && err.contains(words),
        "{sql}: expected Code: {code} ({words}), got: {err}"
    );
}

#[tokio::test]
async fn grafana_user_reads_and_cannot_write_or_change_readonly() {
    let cfg = test_config("grafana_user");
    let admin = clickhouse(&cfg);
    let g = as_grafana(&cfg.clickhouse.url);

    // The server knows the user (users files are reloaded within seconds).
    let start = Instant::now();
    loop {
        match g.query("SELECT 1").fetch_one::<u8>().await {
            Ok(1) => break,
            Ok(n) => panic!("SELECT 1 returned {n}"),
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(15),
                    "the server lacks the grafana user of dev/clickhouse/users.d/grafana.xml \
                     ({e}); run `dev/stack up clickhouse` (it copies users.d into a running \
                     server) or point ADLOG_CLICKHOUSE__URL at a server with that file"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    // A table in the pipeline's database (adlog) and one in another database.
    let table = format!("adlog.{}", cfg.clickhouse.database);
    let other = cfg.clickhouse.database.clone();
    for sql in [
        "CREATE DATABASE IF NOT EXISTS adlog".to_string(),
        format!("CREATE TABLE {table} (ts DateTime, n UInt64) ENGINE = MergeTree() ORDER BY ts"),
        format!("INSERT INTO {table} VALUES (now(), 42)"),
        format!("CREATE DATABASE {other}"),
        format!("CREATE TABLE {other}.t (n UInt64) ENGINE = Memory"),
    ] {
        admin.query_raw(&sql).execute().await.unwrap();
    }

    let result = {
        let (admin, g, table, other) = (admin.clone(), g.clone(), table.clone(), other.clone());
        async move {
            // SELECT on adlog, with the setting the Grafana plugin sends.
            let n: u64 = g
                .query(&format!("SELECT sum(n) FROM {table}"))
                .with_setting("max_execution_time", "30")
                .fetch_one()
                .await
                .unwrap();
            assert_eq!(n, 42);
            // The system tables the plugin reads for its database/table/column pickers.
            for sql in [
                "SELECT count() FROM system.databases WHERE name = 'adlog'",
                "SELECT count() FROM system.tables WHERE database = 'adlog'",
                "SELECT count() FROM system.columns WHERE database = 'adlog'",
            ] {
                let n: u64 = g.query(sql).fetch_one().await.unwrap();
                assert!(n >= 1, "{sql}");
            }

            // Dashboards' IN/JOIN subqueries also work over Distributed tables.
            let mode: String = g
                .query("SELECT value FROM system.settings WHERE name = 'distributed_product_mode'")
                .fetch_one()
                .await
                .unwrap();
            assert_eq!(mode, "global");

            // Writes and DDL are refused (Code 164: READONLY).
            refused(
                &g,
                &format!("INSERT INTO {table} VALUES (now(), 1)"),
                164,
                "readonly",
            )
            .await;
            refused(
                &g,
                &format!("ALTER TABLE {table} ADD COLUMN x UInt8"),
                164,
                "readonly",
            )
            .await;
            refused(
                &g,
                &format!("ALTER TABLE {table} DELETE WHERE 1"),
                164,
                "readonly",
            )
            .await;
            refused(
                &g,
                &format!("ALTER TABLE {table} DROP PARTITION tuple()"),
                164,
                "readonly",
            )
            .await;
            refused(&g, &format!("DROP TABLE {table}"), 164, "readonly").await;
            refused(&g, &format!("TRUNCATE TABLE {table}"), 164, "readonly").await;
            refused(
                &g,
                "CREATE TABLE adlog.grafana_made (n UInt8) ENGINE = Memory",
                164,
                "readonly",
            )
            .await;
            refused(&g, "CREATE DATABASE grafana_made", 164, "readonly").await;
            refused(
                &g,
                &format!("OPTIMIZE TABLE {table} FINAL"),
                164,
                "readonly",
            )
            .await;

            // `readonly` cannot be lifted, per query or per session.
            let err = g
                .query("SELECT 1")
                .with_setting("readonly", "0")
                .fetch_one::<u8>()
                .await
                .expect_err("readonly=0 must be refused")
                .to_string();
            assert!(
                err.contains("Code: 164") && err.contains("readonly"),
                "{err}"
            );

            // Other databases are off limits (Code 291: DATABASE_ACCESS_DENIED).
            let err = g
                .query(&format!("SELECT count() FROM {other}.t"))
                .fetch_one::<u64>()
                .await
                .expect_err("other databases must be refused")
                .to_string();
            assert!(
                err.contains("Code: 291") && err.contains("Access denied"),
                "{err}"
            );

            // Nothing changed.
            let n: u64 = admin
                .query(&format!("SELECT count() FROM {table}"))
                .fetch_one()
                .await
                .unwrap();
            assert_eq!(n, 1);
        }
    };
    let outcome = tokio::spawn(result).await;
    for sql in [
        format!("DROP TABLE IF EXISTS {table}"),
        format!("DROP DATABASE IF EXISTS {other}"),
    ] {
        let _ = admin.query_raw(&sql).execute().await;
    }
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
