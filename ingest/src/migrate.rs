//! `ingest migrate`: applies the `sql/NNNN_name.sql` migrations, in order, each
//! at most once, recording them in `{db}.schema_migrations`.
//!
//! * Migrations are embedded in the binary at build time (`build.rs`);
//!   `--sql-dir DIR` reads them from a directory instead.
//! * Each file is rendered for the target (database, single server or cluster,
//!   server version, variables) by the template language in [`template`]
//!   (documented in `sql/README.md`), split into statements, and applied.
//! * A migration is recorded with the SHA-256 of its file *contents* (not of
//!   the rendered SQL, so the same file is the same migration everywhere). A
//!   file that changed after it was applied is an error naming it, unless
//!   `--allow-changed`: migrations are immutable; add a new one instead.
//! * Every statement must be idempotent (`IF NOT EXISTS`, …): a migration that
//!   failed half-way is simply re-run, and two concurrent runs do no harm
//!   (the record may then appear twice, which is tolerated).
//! * Retrofitting is not automatic: tables created on an old server keep
//!   their old form (no TTL, no codecs) after a server upgrade; a later
//!   migration can add them with `/*@since …*/`-gated `ALTER TABLE`s.

pub mod template;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use common::config::ClickHouseConfig;
use sha2::{Digest, Sha256};

pub use template::{storage_database, ServerVersion, Target, TemplateError, DEFAULT_VARS};

/// `(file name, contents)` of `sql/*.sql` at build time, sorted by name.
static EMBEDDED: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// Run before any migration: the database(s) and the table recording migrations.
/// Rendered with the same template language. On a cluster, schema_migrations is
/// one replicated table shared by *all* nodes (not one per shard), so a later
/// run through any node sees what was applied; it lives in the database users
/// query (`{dist_db}`), and the shard-local database `{db}` is created too.
pub const BOOTSTRAP: &str = "\
CREATE DATABASE IF NOT EXISTS {dist_db}{on_cluster};

CREATE TABLE IF NOT EXISTS {dist_db}.schema_migrations{on_cluster}
(
    version     UInt32,
    name        String,
    checksum    String,
    applied_at  DateTime
)
ENGINE = /*@single: MergeTree() */
    /*@cluster: ReplicatedMergeTree('/clickhouse/tables/all/{dist_db}/schema_migrations', '{{shard}}-{{replica}}') */
ORDER BY version;

/*@cluster: CREATE DATABASE IF NOT EXISTS {db}{on_cluster} */;
";

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{file}: bad migration file name (expected NNNN_name.sql with name in [a-z0-9_], e.g. 0003_rollups.sql)")]
    BadName { file: String },
    #[error("{a} and {b} have the same version")]
    DuplicateVersion { a: String, b: String },
    #[error("{file}: {err}")]
    Template { file: String, err: TemplateError },
    #[error("{}", changed_message(.0))]
    Changed(Vec<Changed>),
}

/// An applied migration whose file is no longer what was applied.
#[derive(Debug, Clone)]
pub struct Changed {
    pub file: String,
    pub applied_name: String,
    pub applied_checksum: String,
    pub checksum: String,
}

fn changed_message(c: &[Changed]) -> String {
    format!(
        "migration changed after it was applied: {}. Applied migrations are immutable: revert \
         the change and add a new migration, or pass --allow-changed if the change is harmless \
         (e.g. a comment)",
        changed_list(c)
    )
}

fn changed_list(c: &[Changed]) -> String {
    let list: Vec<String> = c
        .iter()
        .map(|c| {
            let was = if c.applied_name != c.file.trim_end_matches(".sql") {
                format!(" (applied as {})", c.applied_name)
            } else {
                String::new()
            };
            format!(
                "{}{was}: applied with checksum {}, the file now has {}",
                c.file,
                short(&c.applied_checksum),
                short(&c.checksum)
            )
        })
        .collect();
    list.join("; ")
}

fn short(checksum: &str) -> &str {
    &checksum[..checksum.len().min(12)]
}

/// One migration file.
#[derive(Debug, Clone, PartialEq)]
pub struct Migration {
    pub version: u32,
    /// File name without `.sql`, e.g. `0001_raw_tables`.
    pub name: String,
    pub source: String,
    /// Hex SHA-256 of `source`.
    pub checksum: String,
}

impl Migration {
    pub fn new(file_name: &str, source: String) -> Result<Migration, MigrateError> {
        let bad = || MigrateError::BadName {
            file: file_name.to_string(),
        };
        let name = file_name.strip_suffix(".sql").ok_or_else(bad)?;
        let (num, rest) = name.split_at_checked(4).ok_or_else(bad)?;
        let rest = rest.strip_prefix('_').ok_or_else(bad)?;
        if !num.bytes().all(|b| b.is_ascii_digit())
            || rest.is_empty()
            || !rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(bad());
        }
        let version: u32 = num.parse().map_err(|_| bad())?;
        if version == 0 {
            return Err(bad());
        }
        let checksum = Sha256::digest(source.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Migration {
            version,
            name: name.to_string(),
            source,
            checksum,
        })
    }

    pub fn file_name(&self) -> String {
        format!("{}.sql", self.name)
    }

    /// The statements to run for `target` (gated-off statements left out).
    pub fn render(&self, target: &Target) -> Result<Vec<String>, MigrateError> {
        render_source(&self.file_name(), &self.source, target)
    }
}

fn render_source(file: &str, src: &str, target: &Target) -> Result<Vec<String>, MigrateError> {
    let err = |err| MigrateError::Template {
        file: file.to_string(),
        err,
    };
    let mut out = Vec::new();
    for s in template::split_statements(src).map_err(err)? {
        if let Some(sql) = template::render(&s, target).map_err(err)? {
            out.push(sql);
        }
    }
    Ok(out)
}

fn sorted_checked(mut v: Vec<Migration>) -> Result<Vec<Migration>, MigrateError> {
    v.sort_by_key(|m| m.version);
    for w in v.windows(2) {
        if w[0].version == w[1].version {
            return Err(MigrateError::DuplicateVersion {
                a: w[0].file_name(),
                b: w[1].file_name(),
            });
        }
    }
    Ok(v)
}

/// The migrations built into this binary.
pub fn embedded() -> Result<Vec<Migration>, MigrateError> {
    sorted_checked(
        EMBEDDED
            .iter()
            .map(|(f, s)| Migration::new(f, s.to_string()))
            .collect::<Result<_, _>>()?,
    )
}

/// The `*.sql` files of `dir` (other files, such as README.md, are ignored).
pub fn from_dir(dir: &Path) -> anyhow::Result<Vec<Migration>> {
    let mut v = Vec::new();
    let rd = std::fs::read_dir(dir)
        .with_context(|| format!("reading migrations directory {}", dir.display()))?;
    for e in rd {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        let file = e.file_name().to_string_lossy().into_owned();
        if !file.ends_with(".sql") {
            continue;
        }
        let src = std::fs::read_to_string(e.path())
            .with_context(|| format!("reading {}", e.path().display()))?;
        v.push(Migration::new(&file, src)?);
    }
    Ok(sorted_checked(v)?)
}

/// The whole script for `target` as `--print` shows it: the bootstrap, then each
/// migration under a `-- NNNN_name.sql` comment; every statement ends with `;`
/// at the end of its line (so it splits exactly like a migration file).
pub fn render_script(migrations: &[Migration], target: &Target) -> Result<String, MigrateError> {
    let mut out = format!(
        "-- ingest migrate --print: database {}, {}, ClickHouse {}\n",
        target.db,
        if target.cluster.is_empty() {
            "single server".to_string()
        } else {
            format!("cluster {}", target.cluster)
        },
        target.version
    );
    let mut section = |title: String, stmts: Vec<String>| {
        out.push_str(&format!("\n-- {title}\n"));
        for s in stmts {
            out.push_str(&s);
            out.push_str(";\n\n");
        }
    };
    section(
        "bootstrap".into(),
        render_source("bootstrap", BOOTSTRAP, target)?,
    );
    for m in migrations {
        section(
            format!("{} (sha256 {})", m.file_name(), short(&m.checksum)),
            m.render(target)?,
        );
    }
    Ok(out)
}

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Connect, read, compare, report what would be applied; change nothing.
    pub dry_run: bool,
    /// Warn instead of failing on applied migrations whose file changed.
    pub allow_changed: bool,
    /// Variable overrides (`--var name=value`).
    pub vars: Vec<(String, String)>,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub server_version: String,
    /// Migrations applied by this run (in a dry run: none).
    pub applied: Vec<Applied>,
    /// In a dry run: the migrations that would be applied.
    pub pending: Vec<String>,
    /// Highest applied version afterwards (0 = none).
    pub at: u32,
    /// Applied migrations whose file changed (only non-empty with `allow_changed`).
    pub changed: Vec<Changed>,
}

#[derive(Debug, Clone)]
pub struct Applied {
    pub name: String,
    pub statements: usize,
    pub elapsed: Duration,
}

/// Applies the missing `migrations` to the server of `client`, printing progress
/// lines through `progress`.
pub async fn run(
    client: &::clickhouse::Client,
    cfg: &ClickHouseConfig,
    migrations: &[Migration],
    opts: &Options,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Outcome> {
    let server_version =
        crate::clickhouse::server_version(client, cfg, Duration::from_secs(15)).await?;
    let version: ServerVersion = server_version
        .parse()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("parsing the server's version()")?;
    let target = Target::new(&cfg.database, &cfg.cluster, version, &opts.vars)?;
    let db = &target.db;
    progress(&format!(
        "ClickHouse {server_version} at {}, database {db}{}",
        crate::clickhouse::redacted_url(&cfg.url),
        if target.cluster.is_empty() {
            String::new()
        } else {
            format!(
                ", cluster {} (shard-local tables in {})",
                target.cluster,
                target.storage_db()
            )
        }
    ));

    // Render everything first: a template error must not leave half a run behind.
    let bootstrap = render_source("bootstrap", BOOTSTRAP, &target)?;
    let rendered: Vec<Vec<String>> = migrations
        .iter()
        .map(|m| m.render(&target))
        .collect::<Result<_, _>>()?;

    let exists: u64 = client
        .query(
            "SELECT count() FROM system.tables WHERE database = ? AND name = 'schema_migrations'",
        )
        .bind(db.as_str())
        .fetch_one()
        .await
        .with_context(|| format!("checking for {db}.schema_migrations"))?;
    if !opts.dry_run {
        for sql in &bootstrap {
            exec(client, sql)
                .await
                .with_context(|| format!("creating {db} / {db}.schema_migrations"))?;
        }
    }

    // version → (name, checksum) of the latest record.
    let mut applied: BTreeMap<u32, (String, String)> = BTreeMap::new();
    if exists > 0 || !opts.dry_run {
        let rows: Vec<(u32, String, String)> = client
            .query(&format!(
                "SELECT version, name, checksum FROM {db}.schema_migrations ORDER BY version, applied_at"
            ))
            .fetch_all()
            .await
            .with_context(|| format!("reading {db}.schema_migrations"))?;
        for (v, name, sum) in rows {
            applied.insert(v, (name, sum));
        }
    }

    let mut changed = Vec::new();
    for m in migrations {
        if let Some((name, sum)) = applied.get(&m.version) {
            if *sum != m.checksum || *name != m.name {
                changed.push(Changed {
                    file: m.file_name(),
                    applied_name: name.clone(),
                    applied_checksum: sum.clone(),
                    checksum: m.checksum.clone(),
                });
            }
        }
    }
    if !changed.is_empty() {
        if !opts.allow_changed {
            return Err(MigrateError::Changed(changed).into());
        }
        progress(&format!(
            "warning: changed after it was applied (allowed by --allow-changed): {}",
            changed_list(&changed)
        ));
    }
    for (v, (name, _)) in &applied {
        if !migrations.iter().any(|m| m.version == *v) {
            progress(&format!(
                "warning: {db}.schema_migrations has {name} (version {v}), which these migrations \
                 do not include (written by a newer ingest?)"
            ));
        }
    }

    let mut outcome = Outcome {
        server_version,
        applied: Vec::new(),
        pending: Vec::new(),
        at: applied.keys().next_back().copied().unwrap_or(0),
        changed,
    };
    for (m, stmts) in migrations.iter().zip(&rendered) {
        if applied.contains_key(&m.version) {
            continue;
        }
        if opts.dry_run {
            progress(&format!(
                "would apply {} ({})",
                m.name,
                statements(stmts.len())
            ));
            outcome.pending.push(m.name.clone());
            continue;
        }
        let t0 = Instant::now();
        for (i, sql) in stmts.iter().enumerate() {
            exec(client, sql).await.with_context(|| {
                format!(
                    "migration {} failed at statement {} of {} ({}); it is safe to re-run once fixed",
                    m.file_name(),
                    i + 1,
                    stmts.len(),
                    first_line(sql)
                )
            })?;
        }
        client
            .query(&format!(
                "INSERT INTO {db}.schema_migrations (version, name, checksum, applied_at) \
                 SELECT toUInt32(?), ?, ?, now()"
            ))
            .bind(m.version)
            .bind(m.name.as_str())
            .bind(m.checksum.as_str())
            .execute()
            .await
            .with_context(|| format!("recording {} in {db}.schema_migrations", m.name))?;
        let elapsed = t0.elapsed();
        progress(&format!(
            "applied {} ({}, {} ms)",
            m.name,
            statements(stmts.len()),
            elapsed.as_millis()
        ));
        outcome.at = outcome.at.max(m.version);
        outcome.applied.push(Applied {
            name: m.name.clone(),
            statements: stmts.len(),
            elapsed,
        });
    }
    if opts.dry_run {
        progress(&format!(
            "dry run: schema at {:04}, {} to apply",
            outcome.at,
            outcome.pending.len()
        ));
    } else {
        progress(&format!(
            "schema up to date at {:04} ({} applied)",
            outcome.at,
            outcome.applied.len()
        ));
    }
    Ok(outcome)
}

async fn exec(client: &::clickhouse::Client, sql: &str) -> Result<(), ::clickhouse::error::Error> {
    // `query_raw`: DDL is sent verbatim (no `?` bind placeholders).
    client.query_raw(sql).execute().await
}

fn statements(n: usize) -> String {
    format!("{n} statement{}", if n == 1 { "" } else { "s" })
}

fn first_line(sql: &str) -> String {
    let l = sql.lines().next().unwrap_or("").trim();
    if l.chars().count() > 100 {
        format!("{}…", l.chars().take(100).collect::<String>())
    } else {
        l.to_string()
    }
}

/// `ingest migrate` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct MigrateArgs {
    /// Show what would be applied; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the rendered statements for --server-version without connecting.
    #[arg(long, requires = "server_version")]
    pub print: bool,
    /// Server version to render for with --print, e.g. 18.16 or 26.9.
    #[arg(long, value_name = "X.Y", requires = "print")]
    pub server_version: Option<String>,
    /// Read migrations from this directory instead of the ones built into the binary.
    #[arg(long, value_name = "DIR")]
    pub sql_dir: Option<PathBuf>,
    /// Warn instead of failing when an applied migration's file has changed.
    #[arg(long)]
    pub allow_changed: bool,
    /// Set a template variable, e.g. --var raw_ttl_days=90 (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

/// The `ingest migrate` command.
pub async fn command(cfg: &common::Config, args: MigrateArgs) -> anyhow::Result<()> {
    let migrations = match &args.sql_dir {
        Some(dir) => from_dir(dir)?,
        None => embedded()?,
    };
    if args.print {
        let version: ServerVersion = args
            .server_version
            .as_deref()
            .unwrap_or_default()
            .parse()
            .map_err(|e| anyhow::anyhow!("--server-version: {e}"))?;
        let target = Target::new(
            &cfg.clickhouse.database,
            &cfg.clickhouse.cluster,
            version,
            &args.vars,
        )?;
        print!("{}", render_script(&migrations, &target)?);
        return Ok(());
    }
    let client = crate::clickhouse::client(&cfg.clickhouse)?;
    let opts = Options {
        dry_run: args.dry_run,
        allow_changed: args.allow_changed,
        vars: args.vars,
    };
    run(&client, &cfg.clickhouse, &migrations, &opts, &mut |line| {
        println!("{line}")
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        let m = Migration::new("0001_raw_tables.sql", "SELECT 1;\n".into()).unwrap();
        assert_eq!(m.version, 1);
        assert_eq!(m.name, "0001_raw_tables");
        assert_eq!(m.checksum.len(), 64);
        for bad in [
            "1_x.sql",
            "0001-x.sql",
            "0001_.sql",
            "0001_X.sql",
            "0000_zero.sql",
            "0001_x.txt",
            "abcd_x.sql",
        ] {
            assert!(Migration::new(bad, String::new()).is_err(), "{bad}");
        }
        let dup = sorted_checked(vec![
            Migration::new("0002_b.sql", String::new()).unwrap(),
            Migration::new("0002_a.sql", String::new()).unwrap(),
        ]);
        assert!(matches!(dup, Err(MigrateError::DuplicateVersion { .. })));
    }

    fn targets() -> Vec<Target> {
        let mut v = Vec::new();
        for version in ["18.16.1", "20.3", "26.9"] {
            for cluster in ["", "adlog_cluster"] {
                v.push(Target::new("adlog", cluster, version.parse().unwrap(), &[]).unwrap());
            }
        }
        v
    }

    #[test]
    fn embedded_migrations_render_for_every_target() {
        let ms = embedded().unwrap();
        assert!(ms.len() >= 2, "sql/ migrations are embedded");
        assert_eq!(ms[0].name, "0001_raw_tables");
        for t in targets() {
            let script = render_script(&ms, &t).unwrap();
            assert!(!script.contains("{db}"), "{script}");
            for m in &ms {
                let stmts = m.render(&t).unwrap();
                // Only a migration whose every statement is gated (cluster-only
                // like 0006, version-gated like 0010) may render to nothing.
                let all_gated = template::split_statements(&m.source)
                    .unwrap()
                    .iter()
                    .all(|s| {
                        let code: String = s
                            .text
                            .lines()
                            .filter(|l| !l.trim_start().starts_with("--"))
                            .collect();
                        code.trim_start().starts_with("/*@")
                    });
                assert!(
                    !stmts.is_empty() || all_gated,
                    "{} renders to nothing",
                    m.name
                );
                for s in &stmts {
                    // Idempotent DDL only.
                    assert!(
                        s.contains("IF NOT EXISTS") || s.contains("IF EXISTS"),
                        "{}: not idempotent: {s}",
                        m.name
                    );
                    assert_eq!(s.contains("ON CLUSTER"), !t.cluster.is_empty(), "{s}");
                    if t.version < template::MODERN {
                        for modern in ["TTL", "CODEC", "LowCardinality"] {
                            assert!(!s.contains(modern), "{s}");
                        }
                    }
                    assert!(!s.contains("/*") && !s.contains("--"), "{s}");
                }
            }
        }
    }

    #[test]
    fn script_splits_back_into_its_statements() {
        let ms = embedded().unwrap();
        let t = Target::new("adlog", "", "26.9".parse().unwrap(), &[]).unwrap();
        let script = render_script(&ms, &t).unwrap();
        let split: Vec<String> = template::split_statements(&script)
            .unwrap()
            .iter()
            .filter_map(|s| template::render(s, &t).unwrap())
            .collect();
        let mut expected = render_source("bootstrap", BOOTSTRAP, &t).unwrap();
        for m in &ms {
            expected.extend(m.render(&t).unwrap());
        }
        assert_eq!(split, expected);
    }

    #[test]
    fn from_dir_reads_sql_files_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("README.md"), "x").unwrap();
        std::fs::write(dir.path().join("0002_b.sql"), "SELECT 2;\n").unwrap();
        std::fs::write(dir.path().join("0001_a.sql"), "SELECT 1;\n").unwrap();
        let ms = from_dir(dir.path()).unwrap();
        assert_eq!(
            ms.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["0001_a", "0002_b"]
        );
        std::fs::write(dir.path().join("bad.sql"), "").unwrap();
        let err = from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("bad.sql"), "{err}");
    }

    #[test]
    fn bootstrap_is_shared_by_all_nodes_of_a_cluster() {
        let c = Target::new("adlog", "c1", "18.16".parse().unwrap(), &[]).unwrap();
        let b = render_source("bootstrap", BOOTSTRAP, &c).unwrap();
        assert_eq!(b[0], "CREATE DATABASE IF NOT EXISTS adlog ON CLUSTER c1");
        assert!(
            b[1].contains(
                "ENGINE =\n    ReplicatedMergeTree('/clickhouse/tables/all/adlog/schema_migrations', '{shard}-{replica}')"
            ),
            "{}",
            b[1]
        );
        assert_eq!(
            b[2],
            "CREATE DATABASE IF NOT EXISTS adlog_local ON CLUSTER c1"
        );
        let s = Target::new("adlog", "", "18.16".parse().unwrap(), &[]).unwrap();
        let b = render_source("bootstrap", BOOTSTRAP, &s).unwrap();
        assert_eq!(b.len(), 2, "{b:?}");
        assert!(
            b[1].contains("ENGINE = MergeTree()\nORDER BY version"),
            "{}",
            b[1]
        );
    }

    #[test]
    fn changed_message_names_the_file() {
        let msg = changed_message(&[Changed {
            file: "0001_raw_tables.sql".into(),
            applied_name: "0001_raw_tables".into(),
            applied_checksum: "a".repeat(64),
            checksum: "b".repeat(64),
        }]);
        assert!(msg.contains("0001_raw_tables.sql: applied with checksum aaaaaaaaaaaa, the file now has bbbbbbbbbbbb"), "{msg}");
        assert!(msg.contains("--allow-changed"), "{msg}");
    }
}
