//! `ingest dead-letters list | replay`: after a fix (a parser change, a new
//! log type, a raised limit) the dead letters of a reason become rows.
//!
//! * `list`: per reason and topic, how many, when, how many were replayed and
//!   how many are capped, with examples.
//! * `replay`: runs the current parser (and the configured limits) over each
//!   stored raw message and stores it as a row of its table with its original
//!   Kafka coordinates (`_topic, _partition, _offset, _kafka_ts_ms`), then marks
//!   the dead letter in `dead_letter_replayed` (sql/0011). Exactly once: marked
//!   dead letters are skipped, and a row already in its table (a replay that
//!   died between its INSERT and its mark) is marked, not stored again. A dead
//!   letter whose raw bytes were capped (`ingest.dead_letter_max_bytes`) is
//!   refused: its message is not all there.
//! * Each INSERT holds one run of consecutive offsets of one partition: the
//!   ingest ledger's view records an INSERT's min..max offset per partition as
//!   stored (ARCHITECTURE.md, invariant 3), so a block with gaps would hide
//!   the messages in between from a worker's recovery. Its query id follows
//!   the worker's scheme, so a worker taking over the partition waits for it.
//! * The counts are printed and, with `--metrics-file`, written in Prometheus
//!   text format (`adlog_ingest_dead_letters_replayed_total{reason,outcome}`)
//!   for node_exporter's textfile collector.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use common::Config;
use ingest::route::{self, Limits, MsgMeta};
use ingest::table::Table;

#[derive(Debug, Subcommand)]
pub enum DeadLetters {
    /// Counts per reason and topic (first/last, replayed, capped) and examples.
    List {
        #[command(flatten)]
        filter: Filter,
        /// Examples shown per reason and topic.
        #[arg(long, default_value_t = 2)]
        examples: u64,
    },
    /// Parse the dead letters again with the current parser and limits and
    /// store those that pass as rows, exactly once.
    Replay {
        #[command(flatten)]
        filter: Filter,
        /// Show what would become which row or stay a dead letter, and why;
        /// store nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also write the counts to FILE in Prometheus text format.
        #[arg(long, value_name = "FILE")]
        metrics_file: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct Filter {
    /// Only this reason code (e.g. too_large, field_count, time_out_of_range).
    #[arg(long)]
    reason: Option<String>,
    /// Only dead letters of this Kafka topic.
    #[arg(long)]
    topic: Option<String>,
    /// How far back (by the time the message was dead-lettered): 30m, 6h, 2d.
    #[arg(long, default_value = "14d", value_name = "DURATION")]
    since: String,
}

/// `90s`, `30m`, `6h`, `2d`, `1w` → seconds (the one parser every command uses).
fn duration_s(s: &str) -> anyhow::Result<u64> {
    common::timerange::parse_duration(s).map_err(anyhow::Error::msg)
}

/// ClickHouse string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl Filter {
    fn sql(&self) -> anyhow::Result<String> {
        let mut w = format!("ts >= now() - {}", duration_s(&self.since)?);
        if let Some(r) = &self.reason {
            let _ = write!(w, " AND reason = {}", lit(r));
        }
        if let Some(t) = &self.topic {
            let _ = write!(w, " AND _topic = {}", lit(t));
        }
        Ok(w)
    }
}

pub async fn command(cfg: &Config, cmd: DeadLetters) -> anyhow::Result<()> {
    let ch = ingest::clickhouse::client(&cfg.clickhouse)?;
    match cmd {
        DeadLetters::List { filter, examples } => list(cfg, &ch, &filter, examples).await,
        DeadLetters::Replay {
            filter,
            dry_run,
            metrics_file,
        } => replay(cfg, &ch, &filter, dry_run, metrics_file).await,
    }
}

async fn fetch_json(ch: &clickhouse::Client, sql: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut cursor = ch.query_raw(sql).fetch_bytes("JSONEachRow")?;
    let bytes = cursor
        .collect()
        .await
        .with_context(|| format!("query failed: {sql}"))?;
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).context("a JSONEachRow line"))
        .collect()
}

fn u64_of(v: &serde_json::Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

async fn list(
    cfg: &Config,
    ch: &clickhouse::Client,
    f: &Filter,
    examples: u64,
) -> anyhow::Result<()> {
    let db = &cfg.clickhouse.database;
    let w = f.sql()?;
    let rows = fetch_json(
        ch,
        &format!(
            "SELECT reason, _topic AS topic, count() AS n, toString(min(ts)) AS first, toString(max(ts)) AS last, \
             countIf(raw_size > length(raw)) AS capped, \
             countIf((_topic, _partition, _offset) IN (SELECT _topic, _partition, _offset FROM {db}.dead_letter_replayed)) AS replayed \
             FROM {db}.dead_letter WHERE {w} GROUP BY reason, topic ORDER BY n DESC, reason, topic"
        ),
    )
    .await?;
    if rows.is_empty() {
        println!("no dead letters in {db}.dead_letter matching {w}");
        return Ok(());
    }
    println!(
        "{:<20} {:<24} {:>9} {:>9} {:>7}  FIRST .. LAST (dead-lettered, UTC)",
        "REASON", "TOPIC", "COUNT", "REPLAYED", "CAPPED"
    );
    for r in &rows {
        println!(
            "{:<20} {:<24} {:>9} {:>9} {:>7}  {} .. {}",
            r["reason"].as_str().unwrap_or(""),
            r["topic"].as_str().unwrap_or(""),
            u64_of(&r["n"]),
            u64_of(&r["replayed"]),
            u64_of(&r["capped"]),
            r["first"].as_str().unwrap_or(""),
            r["last"].as_str().unwrap_or("")
        );
    }
    if examples > 0 {
        let ex = fetch_json(
            ch,
            &format!(
                "SELECT reason, _topic AS topic, _partition AS partition, _offset AS offset, error, \
                 substring(raw, 1, 160) AS head, raw_size FROM {db}.dead_letter WHERE {w} \
                 ORDER BY reason, topic, ts LIMIT {examples} BY reason, topic"
            ),
        )
        .await?;
        println!("\nexamples:");
        for e in &ex {
            println!(
                "  {} {}:{}@{}: {}\n    raw ({} bytes): {}",
                e["reason"].as_str().unwrap_or(""),
                e["topic"].as_str().unwrap_or(""),
                u64_of(&e["partition"]),
                u64_of(&e["offset"]),
                e["error"].as_str().unwrap_or(""),
                u64_of(&e["raw_size"]),
                e["head"]
                    .as_str()
                    .unwrap_or("")
                    .replace(|c: char| c.is_control(), "·")
            );
        }
    }
    Ok(())
}

/// One dead letter as stored.
#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct Letter {
    reason: String,
    raw_hex: String,
    raw_size: u64,
    topic: String,
    partition: u32,
    offset: u64,
    kafka_ts_ms: u64,
}

/// What a replay does with one dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Parsed: a row of this table.
    Row(Table),
    /// Still rejected by the current parser: the new reason.
    Still(&'static str),
    /// Raw bytes capped when it was dead-lettered.
    Capped,
}

impl Outcome {
    fn label(&self) -> String {
        match self {
            Outcome::Row(t) => format!("stored in {}", t.name()),
            Outcome::Still(r) => format!("still a dead letter ({r})"),
            Outcome::Capped => "refused: raw bytes capped (ingest.dead_letter_max_bytes)".into(),
        }
    }
    fn metric(&self) -> &'static str {
        match self {
            Outcome::Row(_) => "stored",
            Outcome::Still(_) => "still_rejected",
            Outcome::Capped => "refused_capped",
        }
    }
}

fn unhex(s: &str) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).context("bad hex"))
        .collect()
}

/// A parsed dead letter, encoded as its table's row.
struct Row {
    table: Table,
    ts_s: u32,
    meta: (String, u32, u64),
    bytes: Vec<u8>,
}

async fn replay(
    cfg: &Config,
    ch: &clickhouse::Client,
    f: &Filter,
    dry_run: bool,
    metrics_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let db = &cfg.clickhouse.database;
    let w = f.sql()?;
    let letters: Vec<Letter> = ch
        .query(&format!(
            "SELECT reason, hex(raw) AS raw_hex, raw_size, _topic AS topic, _partition AS partition, \
             _offset AS offset, _kafka_ts_ms AS kafka_ts_ms FROM {db}.dead_letter \
             WHERE {w} AND (_topic, _partition, _offset) NOT IN \
             (SELECT _topic, _partition, _offset FROM {db}.dead_letter_replayed) \
             ORDER BY _topic, _partition, _offset LIMIT 1 BY _topic, _partition, _offset"
        ))
        .fetch_all()
        .await
        .context("reading the dead letters")?;
    let i = &cfg.ingest;
    let limits = Limits {
        max_message_bytes: i.max_message_bytes,
        max_future_skew_ms: i.max_future_skew_s as i64 * 1000,
        max_past_age_ms: i.max_past_age_s as i64 * 1000,
    };
    let now = ingest::worker::now_ms();
    let mut counts: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
    let mut rows: Vec<Row> = Vec::new();
    let mut refused: Vec<&Letter> = Vec::new();
    for l in &letters {
        let raw = unhex(&l.raw_hex)?;
        let outcome = if (raw.len() as u64) < l.raw_size {
            Outcome::Capped
        } else {
            let meta = MsgMeta {
                topic: &l.topic,
                partition: l.partition as i32,
                offset: l.offset as i64,
                kafka_ts_ms: l.kafka_ts_ms as i64,
            };
            match route::envelope(Some(&raw), &limits).and_then(|env| {
                let rec = route::parse(&raw, &env, cfg.topics.log_type_of(&l.topic), &limits, now)?;
                let mut bytes = Vec::new();
                route::encode(&rec, &env, &meta, now, &mut bytes);
                Ok((rec.table(), rec.event_ts_ms(), bytes))
            }) {
                Ok((table, ts_ms, bytes)) => {
                    rows.push(Row {
                        table,
                        ts_s: ingest::rowbinary::datetime_secs(ts_ms),
                        meta: (l.topic.clone(), l.partition, l.offset),
                        bytes,
                    });
                    Outcome::Row(table)
                }
                Err(rej) => Outcome::Still(rej.reason),
            }
        };
        if outcome == Outcome::Capped {
            refused.push(l);
        }
        if dry_run {
            println!(
                "{}:{}@{} ({}): {}",
                l.topic,
                l.partition,
                l.offset,
                l.reason,
                outcome.label()
            );
        }
        *counts
            .entry((l.reason.clone(), outcome.metric()))
            .or_default() += 1;
    }
    let mut stored = 0u64;
    let mut present = 0u64;
    if !dry_run {
        for (_, group) in by_table(rows) {
            let (s, p) = store(cfg, ch, group).await?;
            stored += s;
            present += p;
        }
    }
    println!(
        "{} dead letter(s) not replayed before: {} {}parse, {} still rejected, {} refused (capped){}",
        letters.len(),
        counts.iter().filter(|(k, _)| k.1 == "stored").map(|(_, n)| n).sum::<u64>(),
        if dry_run { "would " } else { "now " },
        counts.iter().filter(|(k, _)| k.1 == "still_rejected").map(|(_, n)| n).sum::<u64>(),
        refused.len(),
        if dry_run {
            " (dry run: nothing stored)".to_string()
        } else {
            format!("; {stored} row(s) stored, {present} already stored (marked only)")
        }
    );
    for ((reason, outcome), n) in &counts {
        println!("  {reason}: {outcome} {n}");
    }
    if let Some(path) = metrics_file {
        let mut text = String::from(
            "# HELP adlog_ingest_dead_letters_replayed_total Dead letters handled by `ingest dead-letters replay`, by their reason and what became of them.\n\
             # TYPE adlog_ingest_dead_letters_replayed_total counter\n",
        );
        for ((reason, outcome), n) in &counts {
            let _ = writeln!(
                text,
                "adlog_ingest_dead_letters_replayed_total{{reason=\"{reason}\",outcome=\"{outcome}\",dry_run=\"{dry_run}\"}} {n}"
            );
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn by_table(rows: Vec<Row>) -> BTreeMap<&'static str, (Table, Vec<Row>)> {
    let mut m: BTreeMap<&'static str, (Table, Vec<Row>)> = BTreeMap::new();
    for r in rows {
        m.entry(r.table.name())
            .or_insert_with(|| (r.table, Vec::new()))
            .1
            .push(r);
    }
    m
}

/// Stores the rows of one table not already there, one INSERT per run of
/// consecutive offsets of a partition, then marks all of them replayed.
/// Returns (stored, already present).
async fn store(
    cfg: &Config,
    ch: &clickhouse::Client,
    (table, mut rows): (Table, Vec<Row>),
) -> anyhow::Result<(u64, u64)> {
    let db = &cfg.clickhouse.database;
    let name = table.name();
    rows.sort_by(|a, b| a.meta.cmp(&b.meta));
    // Already stored (a replay that died after its INSERT): by time and coordinates.
    let (lo, hi) = rows.iter().fold((u32::MAX, 0), |(lo, hi), r| {
        (lo.min(r.ts_s), hi.max(r.ts_s))
    });
    let coords: Vec<String> = rows
        .iter()
        .map(|r| format!("({}, {}, {})", lit(&r.meta.0), r.meta.1, r.meta.2))
        .collect();
    let there: Vec<(String, u32, u64)> = ch
        .query(&format!(
            "SELECT _topic, _partition, _offset FROM {db}.{name} WHERE ts >= toDateTime({lo}) AND ts <= toDateTime({hi}) \
             AND (_topic, _partition, _offset) IN ({})",
            coords.join(", ")
        ))
        .fetch_all()
        .await
        .with_context(|| format!("looking up replayed rows in {name}"))?;
    let mut stored = 0u64;
    let mut run: Vec<&Row> = Vec::new();
    let there: std::collections::HashSet<(String, u32, u64)> = there.into_iter().collect();
    let todo: Vec<&Row> = rows.iter().filter(|r| !there.contains(&r.meta)).collect();
    for (k, r) in todo.iter().enumerate() {
        run.push(r);
        let next = todo.get(k + 1);
        let continues = next.is_some_and(|n| {
            n.meta.0 == r.meta.0 && n.meta.1 == r.meta.1 && n.meta.2 == r.meta.2 + 1
        });
        if !continues {
            insert_run(cfg, ch, table, &run).await?;
            stored += run.len() as u64;
            run.clear();
        }
    }
    // Mark every one of them (stored now or before).
    let marks: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "({}, {}, {}, {}, now())",
                lit(&r.meta.0),
                r.meta.1,
                r.meta.2,
                lit(name)
            )
        })
        .collect();
    ch.query_raw(&format!(
        "INSERT INTO {db}.dead_letter_replayed (_topic, _partition, _offset, tbl, replayed_at) VALUES {}",
        marks.join(", ")
    ))
    .execute()
    .await
    .context("marking the dead letters replayed")?;
    Ok((stored, rows.len() as u64 - stored))
}

async fn insert_run(
    cfg: &Config,
    ch: &clickhouse::Client,
    table: Table,
    run: &[&Row],
) -> anyhow::Result<()> {
    let (topic, partition, first) = &run[0].meta;
    let sql = format!(
        "INSERT INTO {}.{} ({}) FORMAT RowBinary",
        cfg.clickhouse.database,
        table.name(),
        table.columns()
    );
    let query_id = ingest::recovery::insert_query_id(
        table,
        &format!("replay-{}-{first}", std::process::id()),
        0,
        [(topic.as_str(), *partition as i32)],
    );
    let body: Vec<u8> = run.iter().flat_map(|r| r.bytes.iter().copied()).collect();
    let mut ins = ch
        .insert_formatted_with(sql)
        .with_setting("query_id", query_id);
    ins.send(body.into()).await?;
    ins.end()
        .await
        .with_context(|| format!("INSERT of replayed rows into {}", table.name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_hex_and_literals() {
        assert_eq!(duration_s("90s").unwrap(), 90);
        assert_eq!(duration_s("2d").unwrap(), 172_800);
        assert!(duration_s("1y").is_err() && duration_s("h").is_err());
        assert_eq!(unhex("00ff7B").unwrap(), vec![0, 255, 123]);
        assert!(unhex("abc").is_err());
        assert_eq!(lit(r"a'b\c"), r"'a\'b\\c'");
    }
}
