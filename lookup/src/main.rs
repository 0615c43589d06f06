//! `adlog-trace`: what happened to a user, or to one ad request, across every
//! service. See `adlog-trace --help` and the library docs ([`adlog_trace`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use adlog_trace::{format_tree_line, trace_report, uid_report, Lookup, Range};
use clap::{Args, Parser, Subcommand};

/// Trace lookup on the ad-log pipeline's ClickHouse tables.
///
/// Exit status: 0 found, 1 nothing found (the message says where it looked),
/// 2 any other error.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Configuration file (see adlog.toml); ADLOG_* environment variables
    /// override it (e.g. ADLOG_CLICKHOUSE__URL, ADLOG_CLICKHOUSE__DATABASE).
    #[arg(long, global = true, env = "ADLOG_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print JSON (one document) instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Afterwards, print each query's cost (rows read, ms) from
    /// system.query_log to stderr (needs a user allowed to set log_queries).
    #[arg(long, global = true)]
    stats: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A user's traces (time, trace id, psid, api, status, latency, host),
    /// oldest first; with --lines each trace's lines as a span tree.
    Uid {
        uid: u64,
        #[command(flatten)]
        range: RangeArgs,
        /// Also print every log line of each trace, as a tree by span.
        #[arg(long)]
        lines: bool,
        /// At most this many traces (the oldest ones in the range).
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Every log line of one trace, as a tree by span (parent_span_id → span_id);
    /// a multiline event's continuation (an error line's stack trace) is
    /// printed indented under its line (JSON: `continuation`).
    Trace {
        trace_id: String,
        /// Where to look (default: all of the retention).
        #[command(flatten)]
        range: RangeArgs,
        /// Print only the link that opens the trace in Grafana's trace
        /// dashboard (waterfall, log lines, call tree), under grafana.url of
        /// the config (ADLOG_GRAFANA__URL).
        #[arg(long, conflicts_with = "json")]
        grafana: bool,
    },
}

#[derive(Debug, Args)]
struct RangeArgs {
    /// How far back from now: 90s, 30m, 1h, 2d, 1w (uid default: 1h).
    #[arg(long, value_name = "DURATION")]
    since: Option<String>,
    /// Start (UTC): "YYYY-MM-DD HH:MM:SS", YYYY-MM-DD, epoch seconds, now.
    #[arg(long, value_name = "TIME")]
    from: Option<String>,
    /// End (UTC, inclusive), default now.
    #[arg(long, value_name = "TIME")]
    to: Option<String>,
}

impl RangeArgs {
    fn range(&self, default_since: Option<u64>) -> anyhow::Result<Option<Range>> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        Range::from_args(
            self.since.as_deref(),
            self.from.as_deref(),
            self.to.as_deref(),
            default_since,
            now,
        )
        .map_err(|e| anyhow::anyhow!(e))
    }
}

/// `writeln!` into the output buffer (a `String`: cannot fail).
macro_rules! wln {
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

enum Outcome {
    Found,
    NotFound(String),
}

async fn run(cli: Cli, out: &mut String, err: &mut String) -> anyhow::Result<Outcome> {
    let cfg = common::Config::load(cli.config.as_deref())?;
    let mut lk = Lookup::new(&cfg.clickhouse)?;
    if cli.stats {
        lk = lk.with_stats();
    }
    let outcome = lookup(&lk, cli.command, cli.json, &cfg.grafana.url, out).await;
    if cli.stats {
        match lk.stats(std::time::Duration::from_secs(15)).await {
            Ok(stats) => {
                for (what, s) in stats {
                    wln!(
                        err,
                        "stats: {what}: read {} rows ({} bytes) in {} ms, {} result rows",
                        s.read_rows,
                        s.read_bytes,
                        s.query_duration_ms,
                        s.result_rows
                    );
                }
            }
            Err(e) => wln!(err, "stats unavailable: {e:#}"),
        }
    }
    outcome
}

async fn lookup(
    lk: &Lookup,
    command: Command,
    json: bool,
    grafana_url: &str,
    out: &mut String,
) -> anyhow::Result<Outcome> {
    let cli_json = json;
    match command {
        Command::Uid {
            uid,
            range,
            lines,
            limit,
        } => {
            anyhow::ensure!(limit >= 1, "--limit must be at least 1");
            let range = range.range(Some(3600))?.expect("uid has a default range");
            let report = uid_report(lk, uid, &range, limit, lines).await?;
            if cli_json {
                wln!(out, "{}", serde_json::to_string_pretty(&report)?);
            } else if !report.traces.is_empty() {
                wln!(
                    out,
                    "uid {uid}: {} trace{}{} in {range}",
                    report.traces.len(),
                    if report.traces.len() == 1 { "" } else { "s" },
                    if report.truncated {
                        format!(" (the first {limit}; raise --limit for more)")
                    } else {
                        String::new()
                    }
                );
                wln!(
                    out,
                    "{:<23}  {:<32}  {:>6}  {:<16}  {:>6}  {:>10}  HOST",
                    "TIME",
                    "TRACE_ID",
                    "PSID",
                    "API",
                    "STATUS",
                    "LATENCY"
                );
                for t in &report.traces {
                    let h = &t.head;
                    wln!(
                        out,
                        "{:<23}  {:<32}  {:>6}  {:<16}  {:>6}  {:>7.1} ms  {}",
                        t.ts,
                        h.trace_id,
                        h.psid,
                        h.api,
                        h.status,
                        h.latency_ms,
                        h.host
                    );
                    if let Some(lines) = &t.lines {
                        for l in lines {
                            wln!(out, "{}", format_tree_line(l, h.ts_ms));
                        }
                        if lines.is_empty() {
                            wln!(out, "  (no lines found for this trace)");
                        }
                    }
                }
            }
            if report.traces.is_empty() {
                return Ok(Outcome::NotFound(format!(
                    "no traces for uid {uid} in {range}"
                )));
            }
            Ok(Outcome::Found)
        }
        Command::Trace {
            trace_id,
            range,
            grafana,
        } => {
            let range = range.range(None)?;
            let report = trace_report(lk, &trace_id, range.as_ref()).await?;
            let Some(report) = report else {
                if cli_json {
                    wln!(out, "null");
                }
                return Ok(Outcome::NotFound(match range {
                    Some(r) => format!("no trace {trace_id:?} in {r}"),
                    None => format!(
                        "no trace {trace_id:?} (looked through all of {}.trace_index)",
                        lk.db
                    ),
                }));
            };
            if grafana {
                wln!(out, "{}", grafana_link(grafana_url, &report)?);
            } else if cli_json {
                wln!(out, "{}", serde_json::to_string_pretty(&report)?);
            } else {
                wln!(
                    out,
                    "trace {}: {} line{} from {} to {} UTC",
                    report.trace_id,
                    report.lines.len(),
                    if report.lines.len() == 1 { "" } else { "s" },
                    report.first,
                    report.last
                );
                if report.indexed_lines != report.lines.len() as u64 {
                    wln!(
                        out,
                        "  (trace_index counts {} lines; some may still be arriving)",
                        report.indexed_lines
                    );
                }
                let t0 = report.lines.iter().map(|l| l.line.ts_ms).min().unwrap_or(0);
                for l in &report.lines {
                    wln!(out, "{}", format_tree_line(l, t0));
                }
            }
            Ok(Outcome::Found)
        }
    }
}

/// The trace dashboard (grafana/dashboards/trace.json, uid `adlog-trace`) at
/// this trace: its user (the edge line's uid, else the first line's) and a time
/// range of the trace's lines ± 1 minute, so that the panels' trace_index day
/// filter covers it.
fn grafana_link(base: &str, report: &adlog_trace::TraceReport) -> anyhow::Result<String> {
    let base = base.trim_end_matches('/');
    anyhow::ensure!(
        base.starts_with("http://") || base.starts_with("https://"),
        "grafana.url {base:?} is not an http(s) URL: set it in adlog.toml ([grafana] url) or ADLOG_GRAFANA__URL"
    );
    let lines = || report.lines.iter().map(|l| &l.line);
    let uid = lines()
        .find(|l| l.caller.is_empty())
        .or_else(|| lines().next())
        .map_or(0, |l| l.uid);
    let first = lines().map(|l| l.ts_ms).min().unwrap_or(0);
    let last = lines().map(|l| l.ts_ms).max().unwrap_or(first);
    Ok(format!(
        "{base}/d/adlog-trace?var-uid={uid}&var-trace_id={}&from={}&to={}",
        url_encode(&report.trace_id),
        first.saturating_sub(60_000),
        last + 60_000
    ))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let (mut out, mut err) = (String::new(), String::new());
    let result = run(cli, &mut out, &mut err).await;
    // Output goes out in one write; a closed pipe (`| head`) is not an error.
    {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        if let Err(e) = stdout
            .write_all(out.as_bytes())
            .and_then(|_| stdout.flush())
        {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                eprintln!("error: writing output: {e}");
                return ExitCode::from(2);
            }
        }
    }
    eprint!("{err}");
    match result {
        Ok(Outcome::Found) => ExitCode::SUCCESS,
        Ok(Outcome::NotFound(msg)) => {
            eprintln!("{msg}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encode_keeps_unreserved_only() {
        assert_eq!(url_encode("4f2a-9c_01.~"), "4f2a-9c_01.~");
        assert_eq!(url_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
