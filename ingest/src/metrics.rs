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
    /// Kafka append time → row acknowledged by ClickHouse.
    pub freshness_seconds: Histogram,
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
            freshness_seconds: r.histogram(
                "freshness_seconds",
                "Delay from Kafka append time to the row being acknowledged by ClickHouse",
                vec![
                    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
                ],
            ),
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
            m.freshness_seconds.observe(0.07); // bucket (0.05, 0.1]
        }
        for _ in 0..50 {
            m.freshness_seconds.observe(0.3); // bucket (0.25, 0.5]
        }
        let p50 = histogram_quantile(&m.freshness_seconds, 0.5).unwrap();
        assert!((p50 - 0.1).abs() < 1e-9, "{p50}");
        let p99 = histogram_quantile(&m.freshness_seconds, 0.99).unwrap();
        assert!(p99 > 0.25 && p99 <= 0.5, "{p99}");
    }
}
