//! librdkafka client configuration built from [`KafkaConfig`](crate::config::KafkaConfig).

use std::time::Duration;

use anyhow::Context;
use rdkafka::ClientConfig;

use crate::config::KafkaConfig;

/// Base client config: brokers plus every pass-through property (TLS/SASL/tuning).
pub fn client_config(k: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers);
    for (key, v) in &k.properties {
        c.set(key, v);
    }
    c
}

/// A producer config that waits for all in-sync replicas and never reorders.
pub fn producer_config(k: &KafkaConfig) -> ClientConfig {
    let mut c = client_config(k);
    c.set("acks", "all")
        .set("enable.idempotence", "false")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "200000");
    // Pass-through properties win over our defaults.
    for (key, v) in &k.properties {
        c.set(key, v);
    }
    c
}

/// [`producer_config`] with `linger.ms` = `linger_ms` unless the
/// pass-through properties set it: for producers that stand in for Filebeat.
pub fn batching_producer_config(k: &KafkaConfig, linger_ms: u64) -> ClientConfig {
    let mut c = producer_config(k);
    if !k.properties.contains_key("linger.ms") {
        c.set("linger.ms", linger_ms.to_string());
    }
    c
}

/// A consumer config for `group`: manual offset commits only.
pub fn consumer_config(k: &KafkaConfig, group: &str) -> ClientConfig {
    let mut c = client_config(k);
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", k.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", k.heartbeat_interval_ms.to_string())
        // librdkafka's default (1000 ms) stalls consumption for a second each
        // time the local queue fills; measured: steady ~220k msg/s with 20 ms.
        .set("fetch.queue.backoff.ms", "20")
        // How long a broker may hold a fetch that has no data yet (librdkafka
        // default 500 ms). A Kafka broker answers as soon as data arrives, so
        // on Kafka this only sets the idle fetch rate; the dev broker (tansu
        // 0.6) sleeps up to half of it after *every* fetch, data or not
        // (storage/src/service/fetch.rs), which put 0.25 s into every row's
        // freshness. Measured at 20k msg/s: append -> fetched p50 0.19 s with
        // 500, 0.10 s with 100.
        .set("fetch.wait.max.ms", "100")
        // A subscribed topic that disappears and comes back (recreated, or a
        // broker that lost its log) is only seen again on a metadata refresh:
        // librdkafka's default of 5 minutes left it unconsumed that long.
        .set("topic.metadata.refresh.interval.ms", "10000");
    for (key, v) in &k.properties {
        c.set(key, v);
    }
    c
}

/// Sets `gauge{topic,partition}` to each partition's consumer lag from
/// librdkafka's statistics (enable with `statistics.interval.ms`).
pub fn record_consumer_lag(
    stats: &rdkafka::statistics::Statistics,
    gauge: &prometheus::IntGaugeVec,
) {
    for (topic, t) in &stats.topics {
        for (p, ps) in &t.partitions {
            if *p >= 0 && ps.consumer_lag >= 0 {
                gauge
                    .with_label_values(&[topic, &p.to_string()])
                    .set(ps.consumer_lag);
            }
        }
    }
}

/// Creates the topics in `names` that do not exist yet (`k.partitions`
/// partitions, `replication` replicas). Returns the topics the broker refused
/// to create, with its reason (a topic that already exists is not refused):
/// callers decide whether that is fatal. Fails only when Kafka does not answer.
pub async fn create_topics(
    k: &KafkaConfig,
    names: &[&str],
    replication: i32,
) -> anyhow::Result<Vec<(String, rdkafka::types::RDKafkaErrorCode)>> {
    use rdkafka::admin::{AdminClient, NewTopic, TopicReplication};
    use rdkafka::types::RDKafkaErrorCode;

    // Nothing to ask: a CreateTopics call with no topic did not return here
    // (loadgen hung when ingest had created every topic first).
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = client_config(k)
        .create()
        .context("creating the Kafka admin client")?;
    let new: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic::new(n, k.partitions, TopicReplication::Fixed(replication)))
        .collect();
    let results = admin
        .create_topics(&new, &admin_options())
        .await
        .with_context(|| format!("Kafka at {} is not reachable (kafka.brokers)", k.brokers))?;
    let mut refused = Vec::new();
    for r in results {
        match r {
            Ok(name) => tracing::info!(topic = %name, partitions = k.partitions, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => refused.push((name, code)),
        }
    }
    Ok(refused)
}

/// Options for admin requests (create/delete topics): request_timeout bounds
/// the wait for an unreachable broker (librdkafka's default is
/// socket.timeout.ms, 60 s, before any error is reported).
pub fn admin_options() -> rdkafka::admin::AdminOptions {
    rdkafka::admin::AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(15)))
        .request_timeout(Some(Duration::from_secs(15)))
}

/// Notices a group member that owns no partition while its group stands still
/// with lag, so that it rejoins instead of waiting forever.
///
/// Seen on the dev broker after members crashed or overstayed
/// `max.poll.interval.ms`: a member stayed in the group with an empty
/// assignment, and the group's partitions went unconsumed. An idle member of a
/// healthy group (more members than partitions) is left alone: it rejoins only
/// when the group has lag and its committed offsets did not move over a whole
/// check interval.
pub struct StuckGroupWatch {
    every: Duration,
    idle_since: Option<std::time::Instant>,
    last_check: Option<std::time::Instant>,
    last_committed: Option<i64>,
}

impl StuckGroupWatch {
    /// Checks after several session timeouts, at least 30 s (a healthy
    /// rebalance on the dev broker takes ~3 s).
    pub fn for_config(k: &KafkaConfig) -> Self {
        Self::new(
            Duration::from_millis(5 * k.session_timeout_ms as u64).max(Duration::from_secs(30)),
        )
    }

    /// `every`: how long the member owns nothing before the first check, and
    /// the interval between checks.
    pub fn new(every: Duration) -> Self {
        StuckGroupWatch {
            every,
            idle_since: None,
            last_check: None,
            last_committed: None,
        }
    }

    /// Call from the poll loop when nothing is in flight: rejoins the group
    /// (unsubscribe, subscribe) when [`Self::should_rejoin`] says so, counting
    /// it in `rejoins`.
    pub fn rejoin_if_stuck<C: rdkafka::consumer::ConsumerContext>(
        &mut self,
        consumer: &rdkafka::consumer::BaseConsumer<C>,
        topics: &[&str],
        owns_any: bool,
        rejoins: &prometheus::IntCounter,
    ) -> anyhow::Result<()> {
        use rdkafka::consumer::Consumer;
        if !self.should_rejoin(consumer, topics, owns_any) {
            return Ok(());
        }
        tracing::warn!(
            ?topics,
            "no partition assigned while the group has lag and does not move: \
             leaving and rejoining the group"
        );
        rejoins.inc();
        consumer.unsubscribe();
        consumer
            .subscribe(topics)
            .with_context(|| format!("subscribing again to {topics:?}"))
    }

    /// True when the member should rejoin. Asks the broker (committed offsets
    /// and watermarks, a few round trips) at most once per interval and only
    /// while the member owns nothing.
    pub fn should_rejoin<C: rdkafka::consumer::ConsumerContext>(
        &mut self,
        consumer: &rdkafka::consumer::BaseConsumer<C>,
        topics: &[&str],
        owns_any: bool,
    ) -> bool {
        use std::time::Instant;
        if owns_any {
            *self = StuckGroupWatch::new(self.every);
            return false;
        }
        let since = *self.idle_since.get_or_insert_with(Instant::now);
        if since.elapsed() < self.every || self.last_check.is_some_and(|t| t.elapsed() < self.every)
        {
            return false;
        }
        self.last_check = Some(Instant::now());
        let Ok((lag, committed)) = group_lag(consumer, topics) else {
            return false; // the broker does not answer: nothing to rejoin to
        };
        let stuck = lag > 0 && self.last_committed == Some(committed);
        self.last_committed = Some(committed);
        if stuck {
            *self = StuckGroupWatch::new(self.every);
        }
        stuck
    }
}

/// The group's total lag over `topics` (high watermark − committed offset,
/// the low watermark where nothing is committed) and the sum of its committed
/// offsets (to tell whether anybody is consuming).
fn group_lag<C: rdkafka::consumer::ConsumerContext>(
    consumer: &rdkafka::consumer::BaseConsumer<C>,
    topics: &[&str],
) -> anyhow::Result<(i64, i64)> {
    use rdkafka::consumer::Consumer;
    use rdkafka::{Offset, TopicPartitionList};
    let timeout = Duration::from_secs(5);
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        let md = consumer.fetch_metadata(Some(t), timeout)?;
        for mt in md.topics() {
            for p in mt.partitions() {
                tpl.add_partition(mt.name(), p.id());
            }
        }
    }
    let committed = consumer.committed_offsets(tpl, timeout)?;
    let (mut lag, mut sum) = (0i64, 0i64);
    for e in committed.elements() {
        let (lo, hi) = consumer.fetch_watermarks(e.topic(), e.partition(), timeout)?;
        let c = match e.offset() {
            Offset::Offset(o) => o,
            _ => lo,
        };
        lag += (hi - c).max(0);
        sum += c;
    }
    Ok((lag, sum))
}
