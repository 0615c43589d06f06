//! `ingest reconcile`: do the rollups (`agg_*`) and the trace lookup tables
//! hold what the raw rows imply, hour by hour — and rebuild the hours where
//! they do not.
//!
//! Why this exists: ClickHouse runs the views of an INSERT one after another,
//! after the table's own parts. A server that dies in between leaves raw rows
//! without some of their rollup rows; the block then has no ledger row
//! (sql/0012 runs the ledger view last), and the worker that retries it
//! finds its rows stored and counts `ingest_views_incomplete_rows_total`.
//! Nothing can re-run only the views that did not run, so the repair is per
//! bucket: delete the table's rows of the hour and derive them again from the
//! raw rows with the table's own views.
//!
//! A rebuild is exact when no row of that hour arrives while it runs, so it
//! only touches buckets that ended at least `--min-age` ago and checks each
//! one again afterwards (a late row that raced it shows up as a difference).

mod checks;

pub use checks::{checks, describe, differing_buckets_sql, example_sql, grouped_sql, key_names};
pub use checks::{unchecked, Bucket, Check, Cmp, Measure, Window};

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clickhouse::Client;
use common::timerange::Range;
use tracing::info;

#[derive(Debug, clap::Args)]
pub struct ReconcileArgs {
    /// How far back to check (e.g. 90m, 6h, 2d); whole hours are checked
    /// (whole days for trace_index). Default 24h.
    #[arg(long, value_name = "DURATION", conflicts_with_all = ["from", "to"])]
    pub since: Option<String>,
    /// Start of the range instead of --since (`YYYY-MM-DD[ HH:MM:SS]`, epoch
    /// seconds, `now`; UTC).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// End of the range (default now).
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// Only this table (repeatable); default every agg_* and trace_* table.
    #[arg(long = "table", value_name = "TABLE")]
    pub tables: Vec<String>,
    /// Rebuild every bucket that differs: delete the table's rows of it and
    /// derive them again from the raw rows with the table's views, then check
    /// it again. Single server only.
    #[arg(long)]
    pub rebuild: bool,
    /// Rebuild only buckets that ended at least this long ago (rows of an
    /// hour still arriving would race the rebuild); 0: any bucket, for when
    /// nothing is writing.
    #[arg(long, value_name = "DURATION", default_value = "15m")]
    pub min_age: String,
}

/// One bucket of one table that differs from the raw rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub table: &'static str,
    /// Bucket start, epoch seconds.
    pub bucket_s: u32,
    pub bucket: Bucket,
    pub groups: u64,
    pub differing: u64,
    /// The first differing group, described.
    pub example: String,
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct BucketRow {
    bucket: u32,
    groups: u64,
    bad: u64,
}

/// The differing buckets of `c` within `window`.
pub async fn differences(
    ch: &Client,
    db: &str,
    c: &Check,
    window: Window,
) -> anyhow::Result<Vec<Difference>> {
    let rows: Vec<BucketRow> = ch
        .query(&differing_buckets_sql(db, c, Some(window)))
        .fetch_all()
        .await
        .with_context(|| format!("comparing {db}.{} with the raw rows", c.table))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let one = Window {
            from_s: r.bucket,
            to_s: r.bucket + 1,
        };
        let ex = ch
            .query(&example_sql(db, c, Some(one)))
            .fetch_bytes("TSV")?
            .collect()
            .await
            .with_context(|| format!("an example of {db}.{}", c.table))?;
        out.push(Difference {
            table: c.table,
            bucket_s: r.bucket,
            bucket: c.bucket,
            groups: r.groups,
            differing: r.bad,
            example: describe(c, &String::from_utf8_lossy(&ex)),
        });
    }
    Ok(out)
}

/// Every agg_*/trace_* table of `db` (not the views).
async fn rollup_tables(ch: &Client, db: &str) -> anyhow::Result<Vec<String>> {
    ch.query(
        "SELECT name FROM system.tables WHERE database = ? \
         AND (startsWith(name, 'agg_') OR startsWith(name, 'trace_')) \
         AND engine != 'MaterializedView' ORDER BY name",
    )
    .bind(db)
    .fetch_all()
    .await
    .with_context(|| format!("listing the rollup tables of {db}"))
}

/// A view that feeds `target`: its name, its source table and its SELECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feeder {
    pub view: String,
    pub source: String,
    pub select: String,
}

/// A table and the views that read from it (`system.tables`).
#[derive(Debug, clickhouse::Row, serde::Deserialize)]
pub struct Dependents {
    pub name: String,
    pub dependencies_table: Vec<String>,
}

/// The views of `db` that write into `target`, read from the server (what
/// actually runs there): the raw tables' `dependencies_table` name the views,
/// each view's `create_table_query` its target and SELECT.
pub async fn feeders(ch: &Client, db: &str, target: &str) -> anyhow::Result<Vec<Feeder>> {
    let deps: Vec<Dependents> = ch
        .query(
            "SELECT name, dependencies_table FROM system.tables \
             WHERE database = ? AND notEmpty(dependencies_table)",
        )
        .bind(db)
        .fetch_all()
        .await
        .context("reading the views' sources")?;
    let views: Vec<(String, String)> = ch
        .query(
            "SELECT name, create_table_query FROM system.tables \
             WHERE database = ? AND engine = 'MaterializedView' ORDER BY name",
        )
        .bind(db)
        .fetch_all()
        .await
        .context("reading the views")?;
    let mut out = Vec::new();
    for (view, ddl) in views {
        let Some(source) = deps
            .iter()
            .find(|d| d.dependencies_table.contains(&view))
            .map(|d| d.name.clone())
        else {
            continue;
        };
        let Some((to, select)) = parse_view(&ddl, db) else {
            bail!("cannot read the definition of view {db}.{view}: {ddl}");
        };
        if to == target {
            out.push(Feeder {
                view,
                source,
                select: select.to_string(),
            });
        }
    }
    Ok(out)
}

/// `(target table, SELECT …)` of a `CREATE MATERIALIZED VIEW db.v TO db.t
/// (columns) AS SELECT …` as 18.16 and current servers print it.
fn parse_view<'a>(ddl: &'a str, db: &str) -> Option<(String, &'a str)> {
    let unq = |s: &str| s.trim_matches('`').to_string();
    let after_to = &ddl[find_word(ddl, "TO", 0)? + 2..];
    let name = after_to.split_whitespace().next()?;
    let (d, t) = name.split_once('.')?;
    if unq(d) != db {
        return None;
    }
    // The SELECT: the first `SELECT` whose previous word is `AS`.
    let mut from = 0;
    while let Some(p) = find_word(ddl, "SELECT", from) {
        if ddl[..p].trim_end().ends_with("AS") {
            return Some((unq(t.trim_end_matches('(')), &ddl[p..]));
        }
        from = p + 6;
    }
    None
}

/// Byte offset of `word` (delimited by whitespace or string ends) at or after `from`.
fn find_word(s: &str, word: &str, from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(p) = s[at..].find(word) {
        let i = at + p;
        let before = i == 0 || s[..i].ends_with(char::is_whitespace);
        let end = i + word.len();
        let after = end == s.len() || s[end..].starts_with(char::is_whitespace);
        if before && after {
            return Some(i);
        }
        at = i + word.len();
    }
    None
}

/// `select` reading only the raw rows `cond` selects: its `FROM db.source`
/// becomes `FROM (SELECT * FROM db.source WHERE cond)`.
fn restricted(select: &str, db: &str, source: &str, cond: &str) -> Option<String> {
    for name in [format!("{db}.{source}"), format!("`{db}`.`{source}`")] {
        let pat = format!("FROM {name}");
        let mut at = 0;
        while let Some(p) = select[at..].find(&pat) {
            let i = at + p;
            let end = i + pat.len();
            if end == select.len() || select[end..].starts_with(char::is_whitespace) {
                return Some(format!(
                    "{}FROM (SELECT * FROM {db}.{source} WHERE {cond}){}",
                    &select[..i],
                    &select[end..]
                ));
            }
            at = end;
        }
    }
    None
}

/// Deletes `c`'s rows of the bucket at `bucket_s` and derives them again from
/// the raw rows through `feeders`, the views that feed the table ([`feeders`]).
pub async fn rebuild(
    ch: &Client,
    db: &str,
    c: &Check,
    feeders: &[Feeder],
    bucket_s: u32,
) -> anyhow::Result<()> {
    let w = Window {
        from_s: bucket_s,
        to_s: bucket_s + 1,
    };
    anyhow::ensure!(
        !feeders.is_empty(),
        "no materialized view writes into {db}.{}",
        c.table
    );
    let raw_cond = w.raw_condition(c.bucket);
    let inserts = feeders
        .iter()
        .map(|f| {
            restricted(&f.select, db, &f.source, &raw_cond)
                .map(|sel| format!("INSERT INTO {db}.{} {sel}", c.table))
                .with_context(|| {
                    format!("view {db}.{} does not read FROM {db}.{}", f.view, f.source)
                })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    ch.query(&format!(
        "ALTER TABLE {db}.{} DELETE WHERE {}",
        c.table,
        w.rollup_condition(c)
    ))
    .execute()
    .await
    .with_context(|| format!("deleting the bucket's rows of {db}.{}", c.table))?;
    wait_mutations(ch, db, c.table, Duration::from_secs(600)).await?;
    for sql in inserts {
        ch.query(&sql)
            .execute()
            .await
            .with_context(|| format!("re-deriving {db}.{}", c.table))?;
    }
    Ok(())
}

/// Waits until no mutation of `db.table` is pending (18.16 runs them in the
/// background and has no `mutations_sync`).
async fn wait_mutations(ch: &Client, db: &str, table: &str, max: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let pending: u64 = ch
            .query("SELECT count() FROM system.mutations WHERE database = ? AND table = ? AND is_done = 0")
            .bind(db)
            .bind(table)
            .fetch_one()
            .await
            .context("reading system.mutations")?;
        if pending == 0 {
            return Ok(());
        }
        if start.elapsed() > max {
            bail!(
                "the DELETE of {db}.{table} is still running after {max:?} (see system.mutations)"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn bucket_text(d: &Difference) -> String {
    let mut t = String::new();
    schemas::time::format_ms(i64::from(d.bucket_s) * 1000, &mut t);
    match d.bucket {
        Bucket::Hour => format!("{} hour", &t[..16.min(t.len())]),
        Bucket::Day => format!("{} day", &t[..10.min(t.len())]),
    }
}

pub async fn command(cfg: &common::Config, args: ReconcileArgs) -> anyhow::Result<()> {
    let now = (crate::worker::now_ms() / 1000).max(0) as u64;
    let range = Range::from_args(
        args.since.as_deref(),
        args.from.as_deref(),
        args.to.as_deref(),
        Some(86_400),
        now,
    )
    .map_err(anyhow::Error::msg)?
    .context("a time range is required")?;
    // `0`: no guard (every differing bucket, the current one too), for when
    // nothing writes the tables, e.g. after a backfill has finished.
    let min_age = match args.min_age.trim() {
        "0" => None,
        s => Some(
            common::timerange::parse_duration(s).map_err(|e| anyhow::anyhow!("--min-age: {e}"))?,
        ),
    };
    if args.rebuild && !cfg.clickhouse.cluster.is_empty() {
        bail!(
            "--rebuild is for a single server: on a cluster run it against each shard's \
             local database ({}_local) with clickhouse.cluster unset",
            cfg.clickhouse.database
        );
    }
    let ch = crate::clickhouse::client(&cfg.clickhouse)?;
    crate::clickhouse::server_version(&ch, &cfg.clickhouse, Duration::from_secs(10)).await?;
    let db = cfg.clickhouse.database.as_str();
    let present = rollup_tables(&ch, db).await?;
    let all = checks(db);
    for t in &args.tables {
        anyhow::ensure!(
            all.iter().any(|c| c.table == t),
            "--table {t}: not a table reconcile knows (one of: {})",
            all.iter().map(|c| c.table).collect::<Vec<_>>().join(", ")
        );
    }
    let window = Window {
        from_s: range.from_s,
        to_s: range.to_s.max(range.from_s + 1),
    };
    println!("reconcile {db}: {range} (whole hours; whole days for trace_index)");
    let mut unfixed = 0usize;
    for t in unchecked(&present, &all) {
        println!("  {t}: a rollup/trace table reconcile has no check for (ingest/src/reconcile/checks.rs)");
        unfixed += 1;
    }
    for c in all
        .iter()
        .filter(|c| args.tables.is_empty() || args.tables.iter().any(|t| t == c.table))
    {
        if !present.iter().any(|t| t == c.table) {
            println!("  {:<22} missing in {db}", c.table);
            unfixed += 1;
            continue;
        }
        let started = Instant::now();
        let diffs = differences(&ch, db, c, window).await?;
        if diffs.is_empty() {
            println!(
                "  {:<22} equal to the raw rows ({:.1} s)",
                c.table,
                started.elapsed().as_secs_f64()
            );
            continue;
        }
        // The views feeding the table, read once it needs a rebuild.
        let mut views: Option<Vec<Feeder>> = None;
        for d in &diffs {
            println!(
                "  {:<22} {}: {} of {} groups ({}) differ; e.g. {}",
                c.table,
                bucket_text(d),
                d.differing,
                d.groups,
                key_names(c),
                d.example
            );
            if !args.rebuild {
                unfixed += 1;
                continue;
            }
            let width = if d.bucket == Bucket::Day {
                86_400
            } else {
                3_600
            };
            if min_age.is_some_and(|age| u64::from(d.bucket_s) + width + age > now) {
                println!(
                    "    not rebuilt: it ended less than --min-age {} ago (rows may still arrive)",
                    args.min_age
                );
                unfixed += 1;
                continue;
            }
            info!(table = c.table, bucket = d.bucket_s, "rebuilding");
            if views.is_none() {
                views = Some(feeders(&ch, db, c.table).await?);
            }
            rebuild(&ch, db, c, views.as_deref().unwrap_or_default(), d.bucket_s).await?;
            let one = Window {
                from_s: d.bucket_s,
                to_s: d.bucket_s + 1,
            };
            let again = differences(&ch, db, c, one).await?;
            match again.first() {
                None => println!("    rebuilt: now equal to the raw rows"),
                Some(a) => {
                    println!(
                        "    rebuilt, but {} groups still differ (rows arriving meanwhile?); e.g. {}",
                        a.differing, a.example
                    );
                    unfixed += 1;
                }
            }
        }
    }
    if unfixed > 0 {
        bail!("{unfixed} table bucket(s) differ from the raw rows");
    }
    println!("all equal");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_view_definitions_of_both_servers() {
        let old = "CREATE MATERIALIZED VIEW adlog.agg_request_1s_mv TO adlog.agg_request_1s ( ts DateTime('Etc/UTC'),  c AggregateFunction(count)) AS SELECT toStartOfMinute(ts) AS ts, countState() AS c FROM adlog.ods_request  WHERE caller = '' GROUP BY ts";
        let (t, sel) = parse_view(old, "adlog").unwrap();
        assert_eq!(t, "agg_request_1s");
        assert!(sel.starts_with("SELECT toStartOfMinute(ts) AS ts"), "{sel}");
        let new = "CREATE MATERIALIZED VIEW adlog.v TO adlog.t\n(\n    `ts` DateTime\n)\nAS SELECT ts AS ts\nFROM adlog.ods_request\nGROUP BY ts";
        let (t, sel) = parse_view(new, "adlog").unwrap();
        assert_eq!(
            (t.as_str(), sel),
            ("t", "SELECT ts AS ts\nFROM adlog.ods_request\nGROUP BY ts")
        );
        assert_eq!(parse_view(new, "other"), None);
        assert_eq!(
            restricted(sel, "adlog", "ods_request", "ts > 1").unwrap(),
            "SELECT ts AS ts\nFROM (SELECT * FROM adlog.ods_request WHERE ts > 1)\nGROUP BY ts"
        );
        // Another table whose name starts like the source is not it.
        assert_eq!(
            restricted(
                "SELECT 1 FROM adlog.ods_request_x",
                "adlog",
                "ods_request",
                "1"
            ),
            None
        );
    }
}
