//! The ingest worker's Prometheus metrics (SPEC §2.6). All live in one registry
//! served on `ingest.metrics_listen`.

use prometheus::{
    exponential_buckets, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Registry,
};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Messages read from Kafka, by topic.
    pub consumed: IntCounterVec,
    /// Rows acknowledged by ClickHouse, by table.
    pub inserted: IntCounterVec,
    /// Malformed messages, by topic and reason.
    pub dead_letters: IntCounterVec,
    /// Rows of multiline events (their continuation kept in the extra
    /// `_continuation`), by topic.
    pub multiline_rows: IntCounterVec,
    /// Messages skipped after a restart because ClickHouse already had them.
    pub skipped_recovered: IntCounterVec,
    /// Ledger ranges found to describe an earlier incarnation of a topic
    /// (recreated, or a broker that lost its log) and ignored.
    pub stale_ledger_ranges: IntCounterVec,
    pub batch_rows: Histogram,
    pub batch_bytes: Histogram,
    /// Duration of one table's INSERT, by table.
    pub insert_seconds: HistogramVec,
    /// Failed INSERT attempts (each is retried), by table.
    pub insert_errors: IntCounterVec,
    /// Rows a failed INSERT stored without its ledger row: some of their
    /// views may not have run (`ingest reconcile` finds and rebuilds the hour).
    pub views_incomplete_rows: IntCounterVec,
    /// Kafka append time → row acknowledged by ClickHouse.
    pub freshness_seconds: Histogram,
    /// Where the time goes (`stage_seconds{stage}`): Kafka append → fetched
    /// (per message), block opened → INSERT sent, INSERT sent →
    /// acknowledged, acknowledged → offset committed (per block).
    pub stage_fetch: Histogram,
    pub stage_wait: Histogram,
    pub stage_insert: Histogram,
    pub stage_commit: Histogram,
    pub freshness_events: IntCounter,
    pub freshness_within_target: IntCounter,
    /// high watermark − committed position, by topic and partition.
    pub consumer_lag: IntGaugeVec,
    pub paused_partitions: IntGauge,
    /// Sealed batches waiting for, or being written to, ClickHouse.
    pub pending_batches: IntGauge,
    /// Bytes held in open and pending batches (bounded by configuration).
    pub buffered_bytes: IntGauge,
    pub commits: IntCounter,
    /// Rejoins after owning nothing while the group stood still with lag.
    pub group_rejoins: IntCounter,
    pub commit_errors: IntCounter,
}

impl Metrics {
    pub fn new() -> Self {
        let r = common::metrics::Registrar::new("adlog_ingest");
        let stages = r.histogram_vec(
            "stage_seconds",
            "Time per pipeline stage: fetch (Kafka append to fetched), wait (block opened to INSERT sent), insert (sent to acknowledged), commit (acknowledged to offset committed)",
            latency_buckets(),
            &["stage"],
        );
        Metrics {
            consumed: r.counter_vec("consumed_total", "Messages read from Kafka", &["topic"]),
            inserted: r.counter_vec(
                "rows_inserted_total",
                "Rows acknowledged by ClickHouse",
                &["table"],
            ),
            dead_letters: r.counter_vec(
                "dead_letters_total",
                "Malformed messages sent to the dead-letter topic and table",
                &["topic", "reason"],
            ),
            multiline_rows: r.counter_vec(
                "multiline_rows_total",
                "Rows of multiline events (Filebeat multiline: a line and e.g. its stack trace), the lines after the first kept in the extra _continuation",
                &["topic"],
            ),
            skipped_recovered: r.counter_vec(
                "skipped_recovered_total",
                "Messages skipped after a restart because ClickHouse already stored them",
                &["topic"],
            ),
            stale_ledger_ranges: r.counter_vec(
                "stale_ledger_ranges_total",
                "Ledger ranges of an earlier incarnation of the topic (recreated, or its broker lost the log), ignored by recovery",
                &["topic"],
            ),
            batch_rows: r.histogram(
                "batch_rows",
                "Rows per inserted batch",
                exponential_buckets(1.0, 4.0, 10).expect("buckets"),
            ),
            batch_bytes: r.histogram(
                "batch_bytes",
                "Encoded bytes per inserted batch",
                exponential_buckets(1024.0, 4.0, 10).expect("buckets"),
            ),
            insert_seconds: r.histogram_vec(
                "insert_seconds",
                "ClickHouse INSERT duration by table",
                exponential_buckets(0.001, 2.0, 16).expect("buckets"),
                &["table"],
            ),
            insert_errors: r.counter_vec(
                "insert_errors_total",
                "Failed INSERT attempts (retried with backoff)",
                &["table"],
            ),
            views_incomplete_rows: r.counter_vec(
                "views_incomplete_rows_total",
                "Rows a failed INSERT stored without a ledger row (its views may not all have run; run `ingest reconcile`)",
                &["table"],
            ),
            freshness_seconds: r.histogram(
                "freshness_seconds",
                "Delay from Kafka append time to the row being acknowledged by ClickHouse",
                latency_buckets(),
            ),
            stage_fetch: stages.with_label_values(&["fetch"]),
            stage_wait: stages.with_label_values(&["wait"]),
            stage_insert: stages.with_label_values(&["insert"]),
            stage_commit: stages.with_label_values(&["commit"]),
            freshness_events: r.counter(
                "freshness_events_total",
                "Events whose freshness was measured",
            ),
            freshness_within_target: r.counter(
                "freshness_within_target_total",
                "Events queryable within freshness_target_ms of their Kafka append time",
            ),
            consumer_lag: r.consumer_lag(),
            paused_partitions: r.gauge("paused_partitions", "Partitions paused by backpressure"),
            pending_batches: r.gauge("pending_batches", "Sealed batches not yet acknowledged"),
            buffered_bytes: r.gauge("buffered_bytes", "Bytes held in open and pending batches"),
            commits: r.counter("commits_total", "Offset commits after acknowledged inserts"),
            group_rejoins: r.counter(
                "group_rejoins_total",
                "Rejoins of the consumer group after owning no partition while the group stood still with lag",
            ),
            commit_errors: r.counter("commit_errors_total", "Failed offset commits (retried)"),
            registry: r.registry,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Latency buckets fine enough for p50/p99/p99.9 below 2 s: 10 ms steps to
/// 100 ms, 50 ms steps to 1 s, 250 ms steps to 3 s, then coarse to 30 min.
pub fn latency_buckets() -> Vec<f64> {
    // Whole milliseconds divided once, so the bounds print as 0.15, not 0.15000000000000002.
    let mut ms: Vec<u32> = (1..=10).map(|i| i * 10).collect();
    ms.extend((3..=20).map(|i| i * 50));
    ms.extend((5..=12).map(|i| i * 250));
    ms.extend([
        4_000, 5_000, 7_500, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 1_800_000,
    ]);
    ms.into_iter().map(|m| m as f64 / 1000.0).collect()
}

/// Estimates quantile `q` of a histogram the way Prometheus'
/// `histogram_quantile` does: linear interpolation inside the bucket that
/// holds the rank. `None` when the histogram is empty.
pub fn histogram_quantile(h: &Histogram, q: f64) -> Option<f64> {
    use prometheus::core::Collector;
    let fam = h.collect();
    let m = fam.first()?.get_metric().first()?;
    let hist = m.get_histogram();
    let total = hist.get_sample_count();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let (mut prev_bound, mut prev_count) = (0.0, 0u64);
    for b in hist.get_bucket() {
        let (bound, count) = (b.upper_bound(), b.cumulative_count());
        if count as f64 >= rank {
            let in_bucket = (count - prev_count) as f64;
            let frac = if in_bucket > 0.0 {
                (rank - prev_count as f64) / in_bucket
            } else {
                0.0
            };
            return Some(prev_bound + (bound - prev_bound) * frac);
        }
        prev_bound = bound;
        prev_count = count;
    }
    // Above the largest finite bucket: report that bound (a lower bound).
    Some(prev_bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_within_buckets() {
        let m = Metrics::new();
        assert_eq!(histogram_quantile(&m.freshness_seconds, 0.5), None);
        for _ in 0..50 {
            m.freshness_seconds.observe(0.065); // bucket (0.06, 0.07]
        }
        for _ in 0..50 {
            m.freshness_seconds.observe(0.32); // bucket (0.3, 0.35]
        }
        let p50 = histogram_quantile(&m.freshness_seconds, 0.5).unwrap();
        assert!((p50 - 0.07).abs() < 1e-9, "{p50}");
        let p99 = histogram_quantile(&m.freshness_seconds, 0.99).unwrap();
        assert!(p99 > 0.3 && p99 <= 0.35, "{p99}");
    }

    #[test]
    fn latency_buckets_increase_and_resolve_below_two_seconds() {
        let b = latency_buckets();
        assert!(b.windows(2).all(|w| w[0] < w[1]), "{b:?}");
        let below_2s = b.iter().filter(|x| **x <= 2.0).count();
        assert!(below_2s >= 30, "{below_2s} buckets up to 2 s");
        assert!(b
            .windows(2)
            .filter(|w| w[1] <= 1.0)
            .all(|w| w[1] - w[0] <= 0.05 + 1e-9));
    }
}
