//! The joiner's Prometheus metrics (SPEC §2.6), all in one registry served on
//! `joiner.metrics_listen`, names prefixed `adlog_joiner_`.

use prometheus::{
    exponential_buckets, Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry,
};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Messages read from Kafka, by topic.
    pub consumed: IntCounterVec,
    /// Messages skipped as malformed (ingest dead-letters them), by topic and reason.
    pub invalid: IntCounterVec,
    /// Joined events emitted (hits), by the side whose arrival completed the join.
    pub joined: IntCounterVec,
    /// Interactions that found no exposure (parked).
    pub misses: IntCounter,
    /// Interactions pushed to a park list (a replay of an already parked one is not counted).
    pub parked: IntCounter,
    /// Interactions dropped because their mark_id's park list was full.
    pub park_overflow: IntCounter,
    /// A partner existed but outside the window, by the side that arrived second.
    pub out_of_window: IntCounterVec,
    /// Events that found no partner within the window, counted by the sweeper, by side.
    pub unmatched: IntCounterVec,
    /// Due entries whose state had already expired when the sweeper looked
    /// (the sweeper was behind by more than the TTL slack), by side.
    pub unmatched_unknown: IntCounterVec,
    /// Exposures the sweeper had counted unmatched that an interaction within
    /// the window joined afterwards: the sweeper was early (must stay 0).
    pub unmatched_then_joined: IntCounterVec,
    /// Joined ids produced twice within one batch, dropped before producing.
    pub batch_duplicates: IntCounter,
    /// Stored values that could not be decoded (skipped).
    pub decode_errors: IntCounter,
    pub redis_roundtrip_seconds: Histogram,
    pub redis_commands_per_batch: Histogram,
    pub batch_messages: Histogram,
    /// Failed attempts of a batch stage (`redis` or `produce`), each retried with backoff.
    pub batch_retries: IntCounterVec,
    pub redis_errors: IntCounterVec,
    /// Redis Cluster redirections followed per command (ask, moved, tryagain).
    pub redis_redirects: IntCounterVec,
    pub produced: IntCounterVec,
    pub produce_errors: IntCounter,
    pub commits: IntCounter,
    /// Rejoins after owning nothing while the group stood still with lag.
    pub group_rejoins: IntCounter,
    pub commit_errors: IntCounter,
    /// high watermark − committed position, by topic and partition.
    pub consumer_lag: IntGaugeVec,
    /// 1 while a batch is being retried (Redis or Kafka down) and the assignment is paused.
    pub stalled: IntGauge,
    /// Keys in Redis (DBSIZE, summed over masters) and used_memory: state size.
    pub redis_keys: IntGauge,
    pub redis_used_memory_bytes: IntGauge,
    pub sweeps: IntCounter,
    pub sweep_seconds: Histogram,
    /// Redis losing the joiner's state, found by the guard, by reason
    /// (`epoch_missing`: came back empty; `writes_lost`: acknowledged writes
    /// gone; `epoch_missing_at_start`: no epoch at a thread's first batch).
    pub redis_state_losses: IntCounterVec,
    /// Partition windows re-read from Kafka into Redis (one per consumer thread and loss).
    pub rebuilds: IntCounter,
    /// Exposures and interactions re-read by rebuilds.
    pub rebuild_events: IntCounter,
    pub rebuild_seconds: Histogram,
}

impl Metrics {
    pub fn new() -> Self {
        let r = common::metrics::Registrar::new("adlog_joiner");
        let m = Metrics {
            consumed: r.counter_vec("consumed_total", "Messages read from Kafka", &["topic"]),
            invalid: r.counter_vec(
                "invalid_total",
                "Malformed messages skipped (ingest dead-letters them)",
                &["topic", "reason"],
            ),
            joined: r.counter_vec(
                "joined_total",
                "Joined events produced (hits), by the side that completed the join",
                &["side"],
            ),
            misses: r.counter(
                "misses_total",
                "Interactions that found no exposure in Redis (parked until it arrives)",
            ),
            parked: r.counter("parked_total", "Interactions pushed to a park list"),
            park_overflow: r.counter(
                "park_overflow_total",
                "Interactions dropped because the mark_id's park list was full",
            ),
            out_of_window: r.counter_vec(
                "out_of_window_total",
                "Partner found but outside the join window, by the side that arrived second",
                &["side"],
            ),
            unmatched: r.counter_vec(
                "unmatched_total",
                "Events without a partner within the window (counted by the sweeper)",
                &["side"],
            ),
            unmatched_unknown: r.counter_vec(
                "unmatched_unknown_total",
                "Due entries whose state had expired before the sweeper checked them",
                &["side"],
            ),
            unmatched_then_joined: r.counter_vec(
                "unmatched_then_joined_total",
                "Exposures counted unmatched by the sweeper that an interaction within the window joined later (the sweeper was early; should stay 0: raise joiner.unmatched_slack_ms)",
                &["side"],
            ),
            batch_duplicates: r.counter(
                "batch_duplicates_total",
                "Joined ids seen twice within one batch (produced once)",
            ),
            decode_errors: r.counter(
                "state_decode_errors_total",
                "Redis values that could not be decoded (skipped)",
            ),
            redis_roundtrip_seconds: r.histogram(
                "redis_roundtrip_seconds",
                "Duration of one Redis round trip of a batch (its pipeline on all nodes; naive: one command)",
                exponential_buckets(0.0001, 2.0, 18).expect("buckets"),
            ),
            redis_commands_per_batch: r.histogram(
                "redis_commands_per_batch",
                "Redis commands in one batch's pipeline",
                exponential_buckets(1.0, 4.0, 10).expect("buckets"),
            ),
            batch_messages: r.histogram(
                "batch_messages",
                "Kafka messages per batch",
                exponential_buckets(1.0, 4.0, 10).expect("buckets"),
            ),
            batch_retries: r.counter_vec(
                "batch_retries_total",
                "Failed attempts of a batch stage, retried with backoff",
                &["stage"],
            ),
            redis_errors: r.counter_vec(
                "redis_errors_total",
                "Redis errors by kind (io, timeout, noscript, moved, server, ...)",
                &["kind"],
            ),
            redis_redirects: r.counter_vec(
                "redis_redirects_total",
                "Commands redirected on Redis Cluster and sent again: ask (ASKING to the importing node), moved (to the new owner), tryagain (multi-key command during a slot migration, sent again after a pause)",
                &["kind"],
            ),
            produced: r.counter_vec(
                "produced_total",
                "Events acknowledged by Kafka, by topic",
                &["topic"],
            ),
            produce_errors: r.counter(
                "produce_errors_total",
                "Failed deliveries (retried with backoff)",
            ),
            commits: r.counter("commits_total", "Offset commits after acknowledged batches"),
            group_rejoins: r.counter(
                "group_rejoins_total",
                "Rejoins of the consumer group after owning no partition while the group stood still with lag",
            ),
            commit_errors: r.counter("commit_errors_total", "Failed offset commits"),
            consumer_lag: r.consumer_lag(),
            stalled: r.gauge(
                "stalled",
                "1 while a batch is retried (Redis/Kafka down) and consumption is paused",
            ),
            redis_keys: r.gauge("redis_keys", "Keys in Redis (DBSIZE over all masters)"),
            redis_used_memory_bytes: r.gauge(
                "redis_used_memory_bytes",
                "Redis used_memory (INFO memory, over all masters)",
            ),
            sweeps: r.counter("sweeps_total", "Sweeper passes"),
            sweep_seconds: r.histogram(
                "sweep_seconds",
                "Duration of one sweeper pass",
                exponential_buckets(0.001, 2.0, 14).expect("buckets"),
            ),
            redis_state_losses: r.counter_vec(
                "redis_state_losses_total",
                "Redis found to have lost the joiner's state (epoch_missing, writes_lost, epoch_missing_at_start)",
                &["reason"],
            ),
            rebuilds: r.counter(
                "rebuilds_total",
                "Rebuilds of partitions' join window from Kafka into Redis",
            ),
            rebuild_events: r.counter(
                "rebuild_events_total",
                "Exposures and interactions re-read from Kafka by rebuilds",
            ),
            rebuild_seconds: r.histogram(
                "rebuild_seconds",
                "Duration of one rebuild (Kafka re-read, Redis writes, joins produced)",
                exponential_buckets(0.01, 2.0, 16).expect("buckets"),
            ),
            registry: r.registry,
        };
        // Make the labelled series visible from the start (dashboards, alerts).
        for side in ["exposure", "interaction"] {
            m.joined.with_label_values(&[side]);
            m.out_of_window.with_label_values(&[side]);
            m.unmatched.with_label_values(&[side]);
            m.unmatched_unknown.with_label_values(&[side]);
        }
        // Only exposures carry a counted flag; an interaction counted unmatched
        // and joined later is not told apart from a replay.
        m.unmatched_then_joined.with_label_values(&["exposure"]);
        for kind in ["ask", "moved", "tryagain"] {
            m.redis_redirects.with_label_values(&[kind]);
        }
        for reason in ["epoch_missing", "epoch_missing_at_start", "writes_lost"] {
            m.redis_state_losses.with_label_values(&[reason]);
        }
        m
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
