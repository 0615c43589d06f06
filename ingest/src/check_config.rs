//! `ingest check-config`: the configuration (file + `ADLOG_*` env, printed
//! with secrets redacted), then, unless `--offline`, every service it names:
//! Kafka (metadata of every topic ingest reads or writes), ClickHouse (server
//! version, the database and its migrations, the cluster) and the metrics
//! port. All probes run at once, each within `common::probe::TIMEOUT`.

use clap::Args;
use common::probe::{self, Check};
use common::Config;

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// Only check the configuration itself; reach no service.
    #[arg(long)]
    pub offline: bool,
}

pub async fn command(cfg: &Config, args: CheckConfigArgs) -> anyhow::Result<()> {
    common::config::print_checked(cfg)?;
    if args.offline {
        return Ok(());
    }
    let mut topics = ingest::worker::Worker::input_topics(cfg);
    topics.push(cfg.topics.dead_letter.clone());
    let kafka = probe::kafka_topics_async(&cfg.kafka, topics, "ingest run");
    let ch_target = ingest::clickhouse::redacted_url(&cfg.clickhouse.url);
    let (kafka, clickhouse) = tokio::join!(
        kafka,
        probe::within(
            "clickhouse",
            ch_target.clone(),
            clickhouse(cfg, ch_target.clone())
        )
    );
    let mut checks = kafka;
    checks.push(clickhouse);
    checks.push(probe::metrics_port(
        "ingest.metrics_listen",
        &cfg.ingest.metrics_listen,
    ));
    probe::report(&checks)
}

/// The server's version, then the database, its migrations and the cluster.
async fn clickhouse(cfg: &Config, target: String) -> Check {
    let c = &cfg.clickhouse;
    let fail = |d: String| Check::fail("clickhouse", target.clone(), d);
    let ch = match ingest::clickhouse::client(c) {
        Ok(ch) => ch,
        Err(e) => return fail(format!("{e:#}")),
    };
    let version = match ingest::clickhouse::server_version(&ch, c, probe::TIMEOUT).await {
        Ok(v) => v,
        Err(e) => return fail(format!("{e:#}")),
    };
    let db = &c.database;
    let count = |sql: &'static str, arg: String| {
        let ch = ch.clone();
        async move { ch.query(sql).bind(arg).fetch_one::<u64>().await }
    };
    match count(
        "SELECT count() FROM system.databases WHERE name = ?",
        db.clone(),
    )
    .await
    {
        Ok(0) => {
            return fail(format!(
                "ClickHouse {version}; database {db} does not exist: run `ingest migrate`"
            ))
        }
        Ok(_) => {}
        Err(e) => return fail(format!("ClickHouse {version}; listing databases: {e}")),
    }
    if !c.cluster.is_empty() {
        match count(
            "SELECT count() FROM system.clusters WHERE cluster = ?",
            c.cluster.clone(),
        )
        .await
        {
            Ok(0) => {
                return fail(format!(
                    "ClickHouse {version}; cluster {} is not in system.clusters",
                    c.cluster
                ))
            }
            Ok(_) => {}
            Err(e) => return fail(format!("ClickHouse {version}; listing clusters: {e}")),
        }
    }
    let applied: Result<Vec<u32>, _> = ch
        .query(&format!(
            "SELECT DISTINCT version FROM {db}.schema_migrations ORDER BY version"
        ))
        .fetch_all()
        .await;
    let applied = match applied {
        Ok(v) => v,
        Err(e) => return fail(format!("ClickHouse {version}; database {db} has no readable schema_migrations ({e}): run `ingest migrate`")),
    };
    let missing: Vec<String> = match ingest::migrate::embedded() {
        Ok(ms) => ms
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .map(|m| m.file_name())
            .collect(),
        Err(e) => return fail(format!("the built-in migrations: {e}")),
    };
    let at = applied
        .last()
        .map_or("none".to_string(), |v| format!("{v:04}"));
    if missing.is_empty() {
        Check::ok(
            "clickhouse",
            target,
            format!("ClickHouse {version}; database {db}, migrations up to {at}"),
        )
    } else {
        fail(format!(
            "ClickHouse {version}; database {db} lacks migration(s) {}: run `ingest migrate`",
            missing.join(", ")
        ))
    }
}
