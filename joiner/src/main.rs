use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod check_config;

/// Exposure × interaction joiner of the ad-log pipeline (Kafka → Redis → Kafka).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (see adlog.toml); ADLOG_* environment variables override it.
    #[arg(long, global = true, env = "ADLOG_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Consume the exposure and interaction topics and produce joined events
    /// until SIGTERM/SIGINT (the batch in flight is finished and committed).
    Run {
        /// The Redis join protocol, overriding `joiner.protocol`: `slices`
        /// (the default) or `lua` (the previous one, a benchmark baseline).
        #[arg(long, value_name = "NAME", value_parser = ["slices", "lua"], conflicts_with = "naive")]
        protocol: Option<String>,
        /// Baseline for benchmarks: the Lua scripts with one Redis round trip
        /// per command, no pipelining, the record's JSON line as state.
        #[arg(long)]
        naive: bool,
        /// Exit (gracefully, after committing) once no message arrived for this
        /// many seconds. For demos, tests and backfills.
        #[arg(long, value_name = "SECS")]
        stop_after_idle: Option<u64>,
    },
    /// Check the configuration (file + ADLOG_* env), print the effective
    /// values, then reach every service it names (Kafka topics, Redis, the
    /// metrics port); exits 1 if any is wrong.
    CheckConfig {
        /// Only check the configuration itself; reach no service.
        #[arg(long)]
        offline: bool,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = (|| {
        let cfg = common::Config::load(cli.config.as_deref())?;
        common::logging::init(&cfg.log);
        match cli.command {
            Command::CheckConfig { offline } => check_config::command(&cfg, offline),
            Command::Run {
                protocol,
                naive,
                stop_after_idle,
            } => joiner::run(
                cfg.clone(),
                joiner::Options {
                    protocol: match (naive, protocol.as_deref()) {
                        (true, _) => joiner::join::Protocol::Naive,
                        (false, Some("lua")) => joiner::join::Protocol::Lua,
                        (false, Some(_)) => joiner::join::Protocol::Slices,
                        (false, None) => cfg.joiner.protocol.into(),
                    },
                    handle_signals: true,
                    stop_after_idle: stop_after_idle.map(std::time::Duration::from_secs),
                },
                joiner::Shutdown::new(),
            ),
        }
    })();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("joiner: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
