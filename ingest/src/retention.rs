//! `ingest retention`: drops day partitions older than the retention, for
//! servers without TTL (ClickHouse < 20.3, e.g. Debian's 18.16).
//!
//! On servers ≥ 20.3 the migrations give every table a TTL
//! (`ttl_only_drop_parts`, so whole days go), and this command is not needed
//! (running it anyway is harmless: it drops the same days earlier or finds
//! nothing). It applies the same retention as those TTLs:
//!
//! | tables | kept | flag |
//! |---|---|---|
//! | `dead_letter` | `dead_letter_ttl_days` (14) | `--days-dead-letter` |
//! | `ingest_ledger` | 7 days | `--days-ledger` |
//! | every other day-partitioned table (raw `ods_*`, rollups `agg_*`, trace lookup tables) | `raw_ttl_days` (30) | `--days-raw` |
//!
//! A partition (day `D`, from `PARTITION BY toYYYYMMDD(…)`) is dropped when
//! `D < today() - N` in the server's time zone: today and the N days before it
//! are kept. Partitions are listed from `system.parts` (on a cluster from every
//! node: `cluster('<cluster>', system, parts)`, and dropped with
//! `ALTER TABLE … ON CLUSTER … DROP PARTITION ID '…'` on the shard-local
//! tables). Tables whose partitions are not days (e.g. `schema_migrations`)
//! are left alone. Run it daily (cron, a Kubernetes CronJob); `--dry-run`
//! shows what it would drop.
//!
//! ClickHouse refuses to drop a partition larger than `max_partition_size_to_drop`
//! (50 GB by default); the error says how to allow it.

use std::collections::BTreeMap;

use anyhow::Context;
use clickhouse::Client;
use common::config::ClickHouseConfig;

use crate::migrate::storage_database;

/// Default days kept, matching the TTLs of the migrations (`raw_ttl_days`,
/// `dead_letter_ttl_days` and the ledger's 7 days).
pub const DEFAULT_DAYS_RAW: u32 = 30;
pub const DEFAULT_DAYS_DEAD_LETTER: u32 = 14;
pub const DEFAULT_DAYS_LEDGER: u32 = 7;

/// `ingest retention` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct RetentionArgs {
    /// Show what would be dropped; drop nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Days kept of the raw tables, rollups and trace lookup tables.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_DAYS_RAW)]
    pub days_raw: u32,
    /// Days kept of dead_letter.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_DAYS_DEAD_LETTER)]
    pub days_dead_letter: u32,
    /// Days kept of ingest_ledger (exactly-once recovery reads it from the
    /// committed offsets on: keep it longer than any consumer lag).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_DAYS_LEDGER)]
    pub days_ledger: u32,
}

/// Which retention a table gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    Raw,
    DeadLetter,
    Ledger,
}

impl Class {
    pub fn of(table: &str) -> Class {
        match table {
            "dead_letter" => Class::DeadLetter,
            "ingest_ledger" => Class::Ledger,
            _ => Class::Raw,
        }
    }

    fn days(self, a: &RetentionArgs) -> u32 {
        match self {
            Class::Raw => a.days_raw,
            Class::DeadLetter => a.days_dead_letter,
            Class::Ledger => a.days_ledger,
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Class::Raw => "--days-raw",
            Class::DeadLetter => "--days-dead-letter",
            Class::Ledger => "--days-ledger",
        }
    }
}

/// A day partition of one table (summed over the nodes of a cluster).
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Deserialize)]
pub struct Partition {
    pub table: String,
    pub partition_id: String,
    pub rows: u64,
    pub bytes: u64,
}

/// `YYYYMMDD` partition ids as numbers; anything else is not a day partition.
pub fn day_of(partition_id: &str) -> Option<u32> {
    if partition_id.len() != 8 || !partition_id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let d: u32 = partition_id.parse().ok()?;
    let (m, dd) = (d / 100 % 100, d % 100);
    ((19_700_101..=29_991_231).contains(&d) && (1..=12).contains(&m) && (1..=31).contains(&dd))
        .then_some(d)
}

/// The partitions to drop, given each class's cutoff day (`YYYYMMDD`, kept from there on).
pub fn plan(parts: &[Partition], cutoffs: &BTreeMap<Class, u32>) -> Vec<Partition> {
    parts
        .iter()
        .filter(|p| p.table != "schema_migrations")
        .filter(|p| match day_of(&p.partition_id) {
            Some(day) => day < cutoffs[&Class::of(&p.table)],
            None => false,
        })
        .cloned()
        .collect()
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// What a run did (or would do, in a dry run).
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub dropped: Vec<Partition>,
    /// Class → first kept day (`YYYYMMDD`).
    pub cutoffs: BTreeMap<Class, u32>,
}

/// Runs the retention for `cfg`'s database, printing a line per partition.
pub async fn run(
    ch: &Client,
    cfg: &ClickHouseConfig,
    args: &RetentionArgs,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Outcome> {
    for class in [Class::Raw, Class::DeadLetter, Class::Ledger] {
        anyhow::ensure!(
            class.days(args) >= 1,
            "{} must be at least 1 (today is always kept)",
            class.flag()
        );
    }
    let db = storage_database(&cfg.database, &cfg.cluster);
    let on_cluster = if cfg.cluster.is_empty() {
        String::new()
    } else {
        format!(" ON CLUSTER {}", cfg.cluster)
    };
    let parts_source = if cfg.cluster.is_empty() {
        "system.parts".to_string()
    } else {
        format!("cluster('{}', system, parts)", cfg.cluster)
    };

    let (raw, dl, ledger): (u32, u32, u32) = ch
        .query(&format!(
            "SELECT toYYYYMMDD(today() - {}), toYYYYMMDD(today() - {}), toYYYYMMDD(today() - {})",
            args.days_raw, args.days_dead_letter, args.days_ledger
        ))
        .fetch_one()
        .await
        .context("asking the server for today's date")?;
    let cutoffs = BTreeMap::from([
        (Class::Raw, raw),
        (Class::DeadLetter, dl),
        (Class::Ledger, ledger),
    ]);

    let parts: Vec<Partition> = ch
        .query(&format!(
            "SELECT table, partition_id, sum(rows) AS rows, sum(bytes_on_disk) AS bytes \
             FROM {parts_source} WHERE database = ? AND active \
             GROUP BY table, partition_id ORDER BY table, partition_id"
        ))
        .bind(db.as_str())
        .fetch_all()
        .await
        .with_context(|| format!("listing the partitions of {db} ({parts_source})"))?;
    let todo = plan(&parts, &cutoffs);
    let verb = if args.dry_run {
        "would drop"
    } else {
        "dropped"
    };
    for p in &todo {
        if !args.dry_run {
            let sql = format!(
                "ALTER TABLE {db}.{}{on_cluster} DROP PARTITION ID '{}'",
                p.table, p.partition_id
            );
            ch.query_raw(&sql).execute().await.with_context(|| {
                format!("dropping partition {} of {db}.{}", p.partition_id, p.table)
            })?;
        }
        let class = Class::of(&p.table);
        progress(&format!(
            "{verb} {db}.{} partition {} ({} rows, {}; {} keeps {} days)",
            p.table,
            p.partition_id,
            p.rows,
            human_bytes(p.bytes),
            class.flag(),
            class.days(args)
        ));
    }
    let tables: std::collections::BTreeSet<&str> = todo.iter().map(|p| p.table.as_str()).collect();
    let rows: u64 = todo.iter().map(|p| p.rows).sum();
    progress(&format!(
        "retention{}: {} {} partition{} ({rows} rows) of {} table{} in {db}; kept from raw {raw}, dead_letter {dl}, ingest_ledger {ledger}",
        if args.dry_run { " (dry run)" } else { "" },
        verb,
        todo.len(),
        if todo.len() == 1 { "" } else { "s" },
        tables.len(),
        if tables.len() == 1 { "" } else { "s" },
    ));
    Ok(Outcome {
        dropped: todo,
        cutoffs,
    })
}

/// The `ingest retention` command.
pub async fn command(cfg: &common::Config, args: RetentionArgs) -> anyhow::Result<()> {
    let ch = crate::clickhouse::client(&cfg.clickhouse)?;
    crate::clickhouse::server_version(&ch, &cfg.clickhouse, std::time::Duration::from_secs(15))
        .await?;
    run(&ch, &cfg.clickhouse, &args, &mut |l| println!("{l}")).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::DEFAULT_VARS;

    #[test]
    fn defaults_match_the_ttls_of_the_migrations() {
        let var = |n: &str| -> u32 {
            DEFAULT_VARS
                .iter()
                .find(|(k, _, _)| *k == n)
                .unwrap()
                .1
                .parse()
                .unwrap()
        };
        assert_eq!(DEFAULT_DAYS_RAW, var("raw_ttl_days"));
        assert_eq!(DEFAULT_DAYS_DEAD_LETTER, var("dead_letter_ttl_days"));
        assert!(include_str!("../../sql/0003_ingest_ledger.sql")
            .contains("TTL ingested_at + INTERVAL 7 DAY"));
    }

    #[test]
    fn day_partitions_only() {
        assert_eq!(day_of("20261121"), Some(20_261_121));
        assert_eq!(day_of("all"), None);
        assert_eq!(day_of("202611"), None);
        assert_eq!(day_of("20261321"), None);
        assert_eq!(day_of("00000000"), None);
    }

    #[test]
    fn plans_by_class_and_cutoff() {
        let p = |t: &str, id: &str| Partition {
            table: t.into(),
            partition_id: id.into(),
            rows: 1,
            bytes: 1,
        };
        let parts = vec![
            p("ods_request", "20261020"),
            p("ods_request", "20261021"),
            p("agg_request_1s", "20261001"),
            p("dead_letter", "20261106"),
            p("dead_letter", "20261107"),
            p("ingest_ledger", "20261113"),
            p("schema_migrations", "all"),
            p("odd", "tuple"),
        ];
        let cutoffs = BTreeMap::from([
            (Class::Raw, 20_261_021),
            (Class::DeadLetter, 20_261_107),
            (Class::Ledger, 20_261_114),
        ]);
        let got: Vec<(String, String)> = plan(&parts, &cutoffs)
            .into_iter()
            .map(|p| (p.table, p.partition_id))
            .collect();
        assert_eq!(
            got,
            [
                ("ods_request".into(), "20261020".into()),
                ("agg_request_1s".into(), "20261001".into()),
                ("dead_letter".into(), "20261106".into()),
                ("ingest_ledger".into(), "20261113".into()),
            ]
        );
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
