//! `loadgen`: sends deterministic, Filebeat-wrapped ad-log traffic to Kafka
//! and reports exactly what was sent. See the library docs for the model.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    about = "Send realistic, deterministic ad-log traffic (request traces, exposures, \
             interactions, bad lines) to Kafka, wrapped as Filebeat does, and report \
             exactly what was sent.",
    long_about = "Send realistic, deterministic ad-log traffic to the request, exposure and \
interaction topics, wrapped as Filebeat's Kafka output does (or as the bare line), with a \
share of malformed messages, and report exactly what was sent: counts per topic, bad lines by \
the reason the pipeline must report, and every exposure/interaction pair the joiner must \
produce. The same seed, parameters and --start-ms give byte-identical messages in the same \
order.\n\nDefaults come from the [loadgen] section of the config file (and ADLOG_LOADGEN__* \
environment variables); flags override them. Kafka settings come from [kafka] and topic names \
from [topics].",
    after_help = "Examples:\n  loadgen --count 1000000                       # as fast as possible\n  \
loadgen --count 50000 --rate 5000 --manifest run.json\n  \
loadgen --count 20 --dry-run                  # print the messages, no broker needed\n  \
loadgen --count 50000 --event-rate 10         # spread over ~83 min of event time"
)]
struct Args {
    /// Configuration file (TOML); defaults target the local dev stack.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Seed of the generator.
    #[arg(long)]
    seed: Option<u64>,
    /// Total messages to send, bad lines included.
    #[arg(long)]
    count: Option<u64>,
    /// Send rate in messages per second; 0 = as fast as possible.
    #[arg(long)]
    rate: Option<u64>,
    /// Share of messages that are malformed, 0–1 (extra messages; no good event is replaced).
    #[arg(long, value_parser = ratio)]
    bad_ratio: Option<f64>,
    /// Share of interactions sent before their exposure, 0–1.
    #[arg(long, value_parser = ratio)]
    out_of_order_ratio: Option<f64>,
    /// Share of messages sent as the bare line (Filebeat codec.format) instead of the JSON document, 0–1.
    #[arg(long, value_parser = ratio)]
    bare_ratio: Option<f64>,
    /// Share of interactions with no exposure at all (orphans), 0–0.9.
    #[arg(long, value_parser = ratio)]
    orphan_ratio: Option<f64>,
    /// Events per second of event time (the virtual clock; independent of --rate).
    #[arg(long, value_name = "EVENTS_PER_S")]
    event_rate: Option<f64>,
    /// Event time of the first trace, epoch ms, or `now`. Default: early enough
    /// that the run's last event (late interactions included) is at the current time.
    #[arg(long, value_name = "MS|now", value_parser = start_ms)]
    start_ms: Option<StartMs>,
    /// Also write the manifest as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// Write the messages to stdout (`topic TAB key TAB value` per line) instead of Kafka.
    #[arg(long)]
    dry_run: bool,
    /// No progress lines on stderr.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, Clone, Copy)]
enum StartMs {
    Now,
    At(i64),
}

fn ratio(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number (expected a ratio between 0 and 1)"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{v} is not between 0 and 1"));
    }
    Ok(v)
}

fn start_ms(s: &str) -> Result<StartMs, String> {
    if s == "now" {
        return Ok(StartMs::Now);
    }
    s.parse::<i64>()
        .map(StartMs::At)
        .map_err(|_| format!("`{s}` is neither epoch milliseconds nor `now`"))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<ExitCode> {
    let mut cfg = common::Config::load(args.config.as_deref())?;
    common::logging::init(&cfg.log);
    let l = &mut cfg.loadgen;
    if let Some(v) = args.seed {
        l.seed = v;
    }
    if let Some(v) = args.count {
        l.count = v;
    }
    if let Some(v) = args.rate {
        l.rate = v;
    }
    if let Some(v) = args.bad_ratio {
        l.bad_ratio = v;
    }
    if let Some(v) = args.out_of_order_ratio {
        l.out_of_order_ratio = v;
    }
    if let Some(v) = args.bare_ratio {
        l.bare_ratio = v;
    }
    if let Some(v) = args.orphan_ratio {
        l.orphan_ratio = v;
    }
    if let Some(v) = args.event_rate {
        l.event_rate = v;
    }
    let mut params = loadgen::Params::from_config(&cfg.loadgen, 0);
    params.start_ms = match args.start_ms {
        Some(StartMs::At(ms)) => ms,
        Some(StartMs::Now) => now_ms(),
        None => params.start_ending_at(now_ms()),
    };
    params.validate()?;

    let manifest = if args.dry_run {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
        loadgen::dry_run(&params, &cfg, &mut out)?
    } else {
        let mut opts = loadgen::SendOptions::from_config(&cfg);
        opts.progress = !args.quiet;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(loadgen::produce(&cfg, &params, &opts))?
    };

    if let Some(path) = &args.manifest {
        let json = serde_json::to_vec_pretty(&manifest)?;
        std::fs::write(path, json)
            .with_context(|| format!("writing the manifest to {}", path.display()))?;
    }
    let summary = manifest.to_string();
    if args.dry_run {
        eprint!("{summary}");
    } else {
        print!("{summary}");
        std::io::stdout().flush()?;
    }
    manifest.ensure_delivered()?;
    Ok(ExitCode::SUCCESS)
}
