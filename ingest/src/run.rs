//! `ingest run`: wires the consumer threads, the ClickHouse sink, the
//! dead-letter producer, `/metrics` and signal handling together.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use common::Config;
use rdkafka::producer::FutureProducer;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::sink::Sink;
use crate::worker::Worker;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Consumer threads (overrides ingest.consumers).
    #[arg(long)]
    pub consumers: Option<usize>,
    /// Prometheus endpoint address (overrides ingest.metrics_listen).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Exit (gracefully, after committing) once no message arrived for this many
    /// seconds and everything read is stored. For demos, tests and backfills.
    #[arg(long, value_name = "SECS")]
    pub stop_after_idle: Option<u64>,
}

/// Creates `topics` that do not exist yet (other errors are reported, not fatal:
/// the broker may not allow topic creation, and the topics may be managed elsewhere).
pub async fn ensure_topics(cfg: &Config, topics: &[&str]) -> anyhow::Result<()> {
    for (t, code) in common::kafka::create_topics(&cfg.kafka, topics, 1).await? {
        warn!(topic = %t, error = %code, "could not create topic");
    }
    Ok(())
}

/// Names this process in query ids: the pid and the start time's low bits
/// (two processes with one pid, a restart in a container, still differ).
fn process_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(0);
    format!("{}-{:06x}", std::process::id(), nanos & 0xff_ffff)
}

pub async fn command(cfg: &Config, args: RunArgs) -> anyhow::Result<()> {
    let mut cfg = cfg.clone();
    if let Some(n) = args.consumers {
        cfg.ingest.consumers = n;
    }
    if let Some(l) = args.metrics_listen {
        cfg.ingest.metrics_listen = l;
    }
    anyhow::ensure!(
        cfg.ingest.consumers >= 1,
        "ingest.consumers must be at least 1"
    );

    let metrics = Metrics::new();
    let (addr, _server) =
        common::metrics::serve(&cfg.ingest.metrics_listen, metrics.registry.clone()).await?;
    info!(%addr, "metrics on http://{addr}/metrics");

    let ch = crate::clickhouse::client(&cfg.clickhouse)?;
    let version =
        crate::clickhouse::server_version(&ch, &cfg.clickhouse, Duration::from_secs(10)).await?;
    info!(url = %crate::clickhouse::redacted_url(&cfg.clickhouse.url), %version, database = %cfg.clickhouse.database, "ClickHouse reachable");

    let mut topics: Vec<String> = Worker::input_topics(&cfg);
    topics.push(cfg.topics.dead_letter.clone());
    ensure_topics(&cfg, &topics.iter().map(String::as_str).collect::<Vec<_>>()).await?;

    // Dead letters carry messages up to ingest.max_message_bytes plus key and
    // headers: librdkafka's default message.max.bytes (1,000,000) refused
    // them, and a refused dead letter is retried forever (the partition
    // stalls). Pass-through kafka.properties still win.
    let mut dlq_config = common::kafka::producer_config(&cfg.kafka);
    if !cfg.kafka.properties.contains_key("message.max.bytes") {
        let max = (cfg.ingest.max_message_bytes + (64 << 10)).max(1_000_000);
        dlq_config.set("message.max.bytes", max.to_string());
    }
    let dlq: FutureProducer = dlq_config
        .create()
        .with_context(|| format!("creating Kafka producer for {}", cfg.kafka.brokers))?;
    let shutdown = Arc::new(AtomicBool::new(false));
    let sink = Arc::new(Sink {
        ch,
        db: cfg.clickhouse.database.clone(),
        processes: crate::clickhouse::processes_source(&cfg.clickhouse),
        dlq,
        dlq_topic: cfg.topics.dead_letter.clone(),
        metrics: metrics.clone(),
        retry_min: Duration::from_millis(cfg.ingest.retry_min_ms),
        retry_max: Duration::from_millis(cfg.ingest.retry_max_ms),
        shutdown: shutdown.clone(),
        shutdown_grace: Duration::from_secs(30),
        insert_timeout: Duration::from_millis(cfg.ingest.insert_timeout_ms.max(1)),
        tag: process_tag(),
        freshness_target_ms: cfg.ingest.freshness_target_ms,
    });

    let mut threads = Vec::new();
    for id in 0..cfg.ingest.consumers {
        let w = Worker {
            topic_names: Worker::input_topics(&cfg)
                .into_iter()
                .map(Into::into)
                .collect(),
            cfg: cfg.clone(),
            sink: sink.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
            rt: tokio::runtime::Handle::current(),
            id,
        };
        threads.push(
            std::thread::Builder::new()
                .name(format!("consumer-{id}"))
                .spawn(move || w.run())
                .context("spawning consumer thread")?,
        );
    }

    let idle = args.stop_after_idle.map(Duration::from_secs);
    let watcher = {
        let shutdown = shutdown.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut sigterm =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            let mut watch = idle.map(common::metrics::IdleWatch::new);
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tokio::select! {
                    _ = sigterm.recv() => { info!("SIGTERM: finishing in-flight batches"); break; }
                    _ = tokio::signal::ctrl_c() => { info!("SIGINT: finishing in-flight batches"); break; }
                    _ = tick.tick() => {
                        let Some(watch) = watch.as_mut() else { continue };
                        let total = common::metrics::counter_vec_total(&metrics.consumed);
                        let busy = metrics.pending_batches.get() > 0
                            || metrics.buffered_bytes.get() > 0
                            || metrics.paused_partitions.get() > 0;
                        if busy {
                            watch.busy(total);
                        } else if watch.is_idle(total) {
                            info!(messages = total, "idle: stopping");
                            break;
                        }
                    }
                }
            }
            shutdown.store(true, Ordering::Release);
        })
    };

    let mut result = Ok(());
    for t in threads {
        let r = tokio::task::spawn_blocking(move || t.join())
            .await
            .context("joining consumer thread")?;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(_) => result = Err(anyhow::anyhow!("a consumer thread panicked")),
        }
    }
    watcher.abort();
    print_summary(&metrics);
    result
}

fn print_summary(m: &Metrics) {
    use prometheus::core::Collector;
    let by_label = |c: &prometheus::IntCounterVec| -> Vec<(String, u64)> {
        c.collect()
            .iter()
            .flat_map(|f| {
                f.get_metric().iter().map(|m| {
                    let labels: Vec<String> = m
                        .get_label()
                        .iter()
                        .map(|l| l.value().to_string())
                        .collect();
                    (labels.join(" "), m.get_counter().value() as u64)
                })
            })
            .collect()
    };
    let q = |x| {
        crate::metrics::histogram_quantile(&m.freshness_seconds, x)
            .map_or("-".to_string(), |v| format!("{v:.2}s"))
    };
    let events = m.freshness_events.get();
    let within = if events > 0 {
        format!(
            "{:.1}%",
            100.0 * m.freshness_within_target.get() as f64 / events as f64
        )
    } else {
        "-".into()
    };
    let mut inserted = by_label(&m.inserted);
    inserted.sort();
    let mut dead = by_label(&m.dead_letters);
    dead.sort();
    info!(
        consumed = common::metrics::counter_vec_total(&m.consumed),
        inserted = ?inserted,
        dead_letters = dead.iter().map(|(_, n)| n).sum::<u64>(),
        skipped_recovered = ?by_label(&m.skipped_recovered),
        freshness_p50 = %q(0.5),
        freshness_p99 = %q(0.99),
        freshness_within_target = %within,
        "ingest stopped"
    );
}
