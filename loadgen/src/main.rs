//! `loadgen`: sends deterministic, Filebeat-wrapped ad-log traffic to Kafka
//! and reports exactly what was sent. See the library docs for the model.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
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
loadgen --count 50000 --event-rate 10         # spread over ~83 min of event time\n  \
loadgen replay --copies 3                     # real traffic ×3 into the shadow topics (see replay --help)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    args: Args,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    Replay(ReplayArgs),
    ShadowConfig(ShadowConfigArgs),
    ShadowDrop(ShadowDropArgs),
}

/// Read a sample of the configured input topics and write it amplified ×K to
/// the shadow topics, each copy a distinct event.
#[derive(clap::Args, Debug)]
#[command(
    long_about = "Read a sample of the configured input topics ([topics] request, exposure, \
interaction: real traffic) and write it amplified by --copies to the shadow topics (the same \
names with --suffix). Each copy is a distinct event: trace, span and mark ids are rewritten by a \
pure function of (copy, id), event times shifted by --shift-ms, so traces stay whole and every \
exposure→interaction pair stays a pair with its delay. The Filebeat document is kept as it was \
(host, file, offset, fields), bare lines stay bare, bad lines stay bad with the same reason. \
Every copy, copy 0 included, gets new ids. Sampling (--sample) keeps a trace (request lines, by \
trace id) or a mark (exposure and its interactions, by mark id) whole. The source is read up to \
its end offsets at the start; the same command over the same source writes the same bytes in the \
same order to each shadow partition. Refuses to write to any configured (production) topic unless \
--allow-production-topics (with --dest-config naming the destination). Prints (and with --manifest writes) what it wrote: counts per topic \
and per table, bad lines by reason, the expected joined pairs (the source's × copies).",
    after_help = "Examples:\n  \
loadgen shadow-config --out shadow.toml       # then: ingest run --config shadow.toml; joiner run --config shadow.toml\n  \
loadgen replay --copies 3 --manifest replay.json\n  \
loadgen replay --copies 10 --sample 0.1 --rate 20000     # 10% of the traffic ×10, 20k msg/s\n  \
loadgen replay --copies 2 --speed 4 --from now-1h --to now   # the last hour at 4× its pace\n  \
loadgen replay --copies 5 --first-copy 5      # five more copies with other ids\n  \
loadgen shadow-drop --yes                     # delete the shadow topics and database"
)]
struct ReplayArgs {
    /// Configuration file of production (its [topics] are the source).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Shadow names are production's with this suffix.
    #[arg(long, default_value = loadgen::shadow::DEFAULT_SUFFIX)]
    suffix: String,
    /// Copies of each sampled message (the amplification factor K).
    #[arg(long, default_value_t = 1)]
    copies: u32,
    /// Index of the first copy (ids depend on it: continue a replay with new ids).
    #[arg(long, default_value_t = 0)]
    first_copy: u32,
    /// Share of the source to replay, by trace id / mark id, in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    sample: f64,
    /// Only source messages with a Kafka timestamp at or after this (epoch ms, `now`, `now-1h`).
    #[arg(long, value_name = "TIME", value_parser = time_arg)]
    from: Option<i64>,
    /// Only source messages with a Kafka timestamp before this.
    #[arg(long, value_name = "TIME", value_parser = time_arg)]
    to: Option<i64>,
    /// Add this to every event time (ms; negative moves back).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    shift_ms: i64,
    /// Map uids per copy too (by default a copy keeps its user).
    #[arg(long)]
    rewrite_uid: bool,
    /// Send rate in messages per second, all copies counted (default: as fast as possible).
    #[arg(long, conflicts_with = "speed")]
    rate: Option<u64>,
    /// Send at the recorded pace (Kafka timestamps) times this factor.
    #[arg(long)]
    speed: Option<f64>,
    /// Write to the [topics] of this file instead of the suffixed names
    /// (another cluster's shadow, a hand-named set).
    #[arg(long, value_name = "FILE")]
    dest_config: Option<PathBuf>,
    /// Let --dest-config name a topic of the production configuration.
    #[arg(long)]
    allow_production_topics: bool,
    /// Also write the manifest as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// Seconds between progress lines (0 = none).
    #[arg(long, default_value_t = 5)]
    progress_s: u64,
}

/// Write the shadow pipeline's configuration (production's with shadow
/// topics, database, consumer groups and Redis key prefix) as TOML.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
loadgen shadow-config --config adlog.toml --out shadow.toml\n  \
ingest migrate --config shadow.toml && ingest run --config shadow.toml\n  \
joiner run --config shadow.toml\n\n\
ADLOG_* environment variables still override the file: unset ADLOG_TOPICS__*, \
ADLOG_CLICKHOUSE__DATABASE and ADLOG_KAFKA__*_GROUP for the shadow workers.")]
struct ShadowConfigArgs {
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[arg(long, default_value = loadgen::shadow::DEFAULT_SUFFIX)]
    suffix: String,
    /// Write to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// Delete the shadow topics and drop the shadow database (never production's).
#[derive(clap::Args, Debug)]
#[command(after_help = "Example:\n  loadgen shadow-drop --config adlog.toml --yes")]
struct ShadowDropArgs {
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[arg(long, default_value = loadgen::shadow::DEFAULT_SUFFIX)]
    suffix: String,
    /// Really delete (without it, only list what would go).
    #[arg(long)]
    yes: bool,
}

#[derive(clap::Args, Debug)]
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

/// Epoch ms, `now`, or `now-<N>(s|m|h|d)`.
fn time_arg(s: &str) -> Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let Some(rest) = s.strip_prefix("now") else {
        return Err(format!("`{s}` is neither epoch ms nor now[-N(s|m|h|d)]"));
    };
    if rest.is_empty() {
        return Ok(now_ms());
    }
    let n = rest
        .strip_prefix('-')
        .filter(|r| r.len() > 1)
        .ok_or_else(|| format!("`{s}`: expected now-N(s|m|h|d)"))?;
    let (num, unit) = n.split_at(n.len() - 1);
    let num: i64 = num
        .parse()
        .map_err(|_| format!("`{s}`: {num} is not a number"))?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("`{s}`: unit must be s, m, h or d")),
    };
    Ok(now_ms() - num * ms)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        None => run(cli.args),
        Some(Cmd::Replay(a)) => run_replay(a),
        Some(Cmd::ShadowConfig(a)) => run_shadow_config(a),
        Some(Cmd::ShadowDrop(a)) => run_shadow_drop(a),
    };
    match res {
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

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn run_replay(a: ReplayArgs) -> Result<ExitCode> {
    let cfg = common::Config::load(a.config.as_deref())?;
    common::logging::init(&cfg.log);
    let shadow = loadgen::shadow::shadow_config(&cfg, &a.suffix)?;
    let dest = match &a.dest_config {
        Some(p) => common::Config::load(Some(p))?.topics,
        None => shadow.topics.clone(),
    };
    let mut opts = loadgen::ReplayOptions::new(a.copies);
    opts.first_copy = a.first_copy;
    opts.sample = a.sample;
    opts.from_ms = a.from;
    opts.to_ms = a.to;
    opts.shift_ms = a.shift_ms;
    opts.rewrite_uid = a.rewrite_uid;
    opts.pace = match (a.rate, a.speed) {
        (Some(r), _) => loadgen::Pace::Rate(r),
        (None, Some(s)) => loadgen::Pace::Recorded(s),
        (None, None) => loadgen::Pace::Unlimited,
    };
    opts.max_in_flight = cfg.loadgen.max_in_flight.max(1);
    opts.replication_factor = cfg.loadgen.replication_factor;
    opts.progress_s = a.progress_s;
    let m = runtime()?.block_on(loadgen::replay(
        &cfg,
        &dest,
        &cfg.topics,
        a.allow_production_topics,
        &opts,
    ))?;
    if let Some(path) = &a.manifest {
        std::fs::write(path, serde_json::to_vec_pretty(&m)?)
            .with_context(|| format!("writing the manifest to {}", path.display()))?;
    }
    print!("{m}");
    std::io::stdout().flush()?;
    m.ensure_complete()?;
    Ok(ExitCode::SUCCESS)
}

fn run_shadow_config(a: ShadowConfigArgs) -> Result<ExitCode> {
    let cfg = common::Config::load(a.config.as_deref())?;
    let shadow = loadgen::shadow::shadow_config(&cfg, &a.suffix)?;
    let text = format!(
        "# The shadow pipeline of {} (loadgen shadow-config --suffix {}).\n{}",
        a.config
            .as_deref()
            .map_or("the default configuration".into(), |p| p
                .display()
                .to_string()),
        a.suffix,
        toml::to_string(&shadow).context("writing the configuration as TOML")?
    );
    match &a.out {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn run_shadow_drop(a: ShadowDropArgs) -> Result<ExitCode> {
    let cfg = common::Config::load(a.config.as_deref())?;
    common::logging::init(&cfg.log);
    let shadow = loadgen::shadow::shadow_config(&cfg, &a.suffix)?;
    if !a.yes {
        println!(
            "would delete topics {} and drop database {} (add --yes)",
            loadgen::replay::all_topics(&shadow.topics).join(", "),
            shadow.clickhouse.database
        );
        return Ok(ExitCode::SUCCESS);
    }
    let d = runtime()?.block_on(loadgen::shadow::drop_shadow(&cfg, &shadow))?;
    println!(
        "deleted topics: {}; absent: {}; dropped database {}",
        d.topics_deleted.join(", "),
        d.topics_absent.join(", "),
        d.database
    );
    Ok(ExitCode::SUCCESS)
}
