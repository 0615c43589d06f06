//! The joiner: exposures × interactions by mark_id, through Redis, into the
//! `joined` topic (SPEC §2.3). See `joiner/README.md` for the design.
//!
//! Modules: [`state`] (keys, compact encoding, window rule, Lua scripts),
//! [`store`] (Redis / Redis Cluster, one round trip per node per batch),
//! [`join`] (a batch's commands and what the replies mean), [`worker`] (the
//! consumer thread: batches, retries, commits, rebalances), [`output`]
//! (producing joined events), [`sweeper`] (unmatched events after the window),
//! [`rebuild`] (Redis losing state: detection, and the window re-read from
//! Kafka), [`metrics`].

pub mod align;
pub mod join;
pub mod metrics;
pub mod output;
pub mod progress;
pub mod rebuild;
pub mod slice_sweeper;
pub mod slices;
pub mod state;
pub mod store;
pub mod sweeper;
pub mod worker;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use common::backoff::Backoff;
use common::Config;
use tracing::{info, warn};

use crate::join::JoinParams;
use crate::metrics::Metrics;
use crate::output::Output;
use crate::store::Store;

/// How long the joiner waits for Redis at start before it gives up (exit 1).
pub const STARTUP_REDIS_WAIT: Duration = Duration::from_secs(30);

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The Redis protocol (the default, or a benchmark baseline).
    pub protocol: join::Protocol,
    /// Install SIGTERM/SIGINT handlers that trigger the graceful shutdown.
    pub handle_signals: bool,
    /// Stop gracefully once no message arrived for this long (demos, tests).
    pub stop_after_idle: Option<Duration>,
}

/// A handle to stop a running joiner (graceful: the batch in flight finishes,
/// offsets are committed).
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
    at: Arc<AtomicU64>,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn trigger(&self) {
        let _ = self.at.compare_exchange(
            0,
            worker::now_ms().max(1) as u64,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.flag.store(true, Ordering::Release);
    }

    pub fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }
}

/// Runs the joiner until `shutdown` is triggered (or a signal, with
/// `handle_signals`). Blocks; builds its own tokio runtime.
pub fn run(cfg: Config, opts: Options, shutdown: Shutdown) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("joiner-rt")
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let metrics = Metrics::new();
    let join = Arc::new(JoinParams::from_config(&cfg, opts.protocol)?);

    if opts.handle_signals {
        let s = shutdown.clone();
        rt.spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                warn!("cannot install signal handlers");
                return;
            };
            tokio::select! {
                _ = term.recv() => info!("SIGTERM: shutting down"),
                _ = int.recv() => info!("SIGINT: shutting down"),
            }
            s.trigger();
        });
    }

    let (store, output) = rt.block_on(async {
        let (addr, _server) = common::metrics::serve(&cfg.joiner.metrics_listen, metrics.registry.clone()).await?;
        info!(%addr, "metrics on /metrics");
        let timeout = Duration::from_millis(cfg.joiner.redis_timeout_ms.max(100));
        let mut backoff = Backoff::new(
            Duration::from_millis(cfg.joiner.retry_min_ms),
            Duration::from_millis(cfg.joiner.retry_max_ms),
        );
        // A malformed redis.url can never connect: fail at once. An
        // unreachable Redis is retried for STARTUP_REDIS_WAIT (it may be
        // starting too), then the joiner exits non-zero naming it; once
        // running, Redis outages are retried without limit.
        store::check_url(&cfg.redis)?;
        let started = std::time::Instant::now();
        let store = loop {
            match Store::connect(&cfg.redis, timeout, metrics.clone()).await {
                Ok(s) => break s,
                Err(e) => {
                    if shutdown.is_triggered() {
                        return Err(e);
                    }
                    if started.elapsed() >= STARTUP_REDIS_WAIT {
                        return Err(e.context(format!(
                            "Redis (redis.url) did not answer within {STARTUP_REDIS_WAIT:?} of starting"
                        )));
                    }
                    let d = backoff.next_delay();
                    warn!(error = %format!("{e:#}"), retry_in_ms = d.as_millis() as u64, "Redis not ready; retrying");
                    tokio::time::sleep(d).await;
                }
            }
        };
        let output = Output::new(&cfg, metrics.clone())?;
        output.ensure_topics().await?;
        anyhow::Ok((Arc::new(store), Arc::new(output)))
    })?;
    info!(
        window_s = cfg.joiner.window_s,
        cluster = cfg.redis.cluster,
        redis = %store::redacted(&cfg.redis.url),
        protocol = ?opts.protocol,
        "joiner started"
    );

    let emit_topic = cfg
        .joiner
        .emit_unmatched
        .then(|| cfg.topics.unmatched.clone());
    let token = format!("{}-{}", std::process::id(), worker::now_ms());
    let interval = Duration::from_millis(cfg.joiner.sweep_interval_ms.max(100));
    let slack_ms = cfg.joiner.state_ttl_slack_s as i64 * 1000;
    let progress_keys = [
        progress::key(&cfg.joiner.key_prefix, &cfg.topics.exposure),
        progress::key(&cfg.joiner.key_prefix, &cfg.topics.interaction),
    ];
    let sweep_task = if opts.protocol == join::Protocol::Slices {
        let sweeper = slice_sweeper::SliceSweeper {
            store: store.clone(),
            output: output.clone(),
            metrics: metrics.clone(),
            layout: join.slices.layout.clone(),
            window_ms: join.window_ms,
            unmatched_slack_ms: cfg.joiner.unmatched_slack_ms as i64,
            progress_keys: progress_keys.clone(),
            interval,
            batch: cfg.joiner.sweep_batch.max(1),
            emit_topic,
            token: token.clone(),
        };
        rt.spawn(sweeper.run(shutdown.flag.clone()))
    } else {
        let sweeper = sweeper::Sweeper {
            store: store.clone(),
            output: output.clone(),
            metrics: metrics.clone(),
            keys: join.keys.clone(),
            window_ms: join.window_ms,
            slack_ms,
            unmatched_slack_ms: cfg.joiner.unmatched_slack_ms as i64,
            progress_keys,
            interval,
            batch: cfg.joiner.sweep_batch.max(1),
            emit_topic,
            token: token.clone(),
        };
        rt.spawn(sweeper.run(shutdown.flag.clone()))
    };
    if let Some(idle) = opts.stop_after_idle {
        let (s, m) = (shutdown.clone(), metrics.clone());
        rt.spawn(async move {
            let mut watch = common::metrics::IdleWatch::new(idle);
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            while !s.is_triggered() {
                tick.tick().await;
                let total = common::metrics::counter_vec_total(&m.consumed);
                if watch.is_idle(total) {
                    info!(messages = total, "idle: stopping");
                    s.trigger();
                }
            }
        });
    }
    let stats_task = rt.spawn(sweeper::sample_redis(
        store.clone(),
        metrics.clone(),
        Duration::from_secs(cfg.joiner.redis_stats_interval_s.max(1)),
        shutdown.flag.clone(),
    ));

    let mut threads = Vec::new();
    let frontier = Arc::new(align::Frontier::default());
    for id in 0..cfg.joiner.consumers.max(1) {
        let w = worker::Worker {
            cfg: cfg.clone(),
            id,
            join: join.clone(),
            store: store.clone(),
            output: output.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown.flag.clone(),
            shutdown_at: shutdown.at.clone(),
            rt: rt.handle().clone(),
            token: format!("{token}-{id}"),
            frontier: frontier.clone(),
        };
        threads.push(
            std::thread::Builder::new()
                .name(format!("joiner-consumer-{id}"))
                .spawn(move || w.run())
                .context("spawning a consumer thread")?,
        );
    }
    let mut result = Ok(());
    for t in threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                shutdown.trigger();
                result = Err(e);
            }
            Err(_) => {
                shutdown.trigger();
                result = Err(anyhow::anyhow!("a consumer thread panicked"));
            }
        }
    }
    shutdown.trigger();
    rt.block_on(async {
        let _ = sweep_task.await;
        let _ = stats_task.await;
    });
    output.flush(Duration::from_secs(5));
    info!("joiner stopped");
    result
}
