use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod check_config;
mod dead_letters;

/// Kafka → ClickHouse ingest worker of the ad-log pipeline.
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
    /// Consume the input topics and load them into ClickHouse (the worker).
    Run(ingest::run::RunArgs),
    /// Check the configuration (file + ADLOG_* env), print the effective values,
    /// then reach every service it names (Kafka topics, ClickHouse, the metrics
    /// port); exits 1 if any is wrong. `--offline`: the configuration only.
    CheckConfig(check_config::CheckConfigArgs),
    /// Create or upgrade the ClickHouse schema (the sql/ migrations).
    Migrate(ingest::migrate::MigrateArgs),
    /// Drop day partitions older than the retention (for servers without TTL,
    /// i.e. before ClickHouse 20.3); run it daily.
    Retention(ingest::retention::RetentionArgs),
    /// List dead letters (by reason, topic, time), or replay them through the
    /// current parser into their tables, exactly once.
    #[command(subcommand)]
    DeadLetters(dead_letters::DeadLetters),
    /// Compare every agg_* rollup and trace lookup table with the raw rows,
    /// hour by hour; with --rebuild, derive the differing hours again.
    /// Exits 1 when a difference remains.
    Reconcile(ingest::reconcile::ReconcileArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = async {
        let cfg = common::Config::load(cli.config.as_deref())?;
        common::logging::init(&cfg.log);
        match cli.command {
            Command::Migrate(args) => ingest::migrate::command(&cfg, args).await,
            Command::Run(args) => ingest::run::command(&cfg, args).await,
            Command::Retention(args) => ingest::retention::command(&cfg, args).await,
            Command::Reconcile(args) => ingest::reconcile::command(&cfg, args).await,
            Command::CheckConfig(args) => check_config::command(&cfg, args).await,
            Command::DeadLetters(cmd) => dead_letters::command(&cfg, cmd).await,
        }
    }
    .await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Like `{e:#}`, minus causes already quoted by the message before them
            // (some errors print their source themselves).
            let mut msg = String::new();
            for cause in e.chain() {
                let c = cause.to_string();
                if !msg.contains(&c) {
                    if !msg.is_empty() {
                        msg.push_str(": ");
                    }
                    msg.push_str(&c);
                }
            }
            eprintln!("error: {msg}");
            std::process::ExitCode::FAILURE
        }
    }
}
