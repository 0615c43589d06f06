//! The Kafka side of a consumer thread: the consumer, its rebalance callbacks
//! and pausing.
//!
//! Rebalances are recorded for the consumer loop. On revocation the revoked
//! partitions are marked (no INSERT holding their rows starts afterwards),
//! the INSERTs already sending their rows get a bounded grace, the
//! acknowledged offsets are committed, then the partitions are released.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use common::Config;
use rdkafka::consumer::{BaseConsumer, CommitMode, ConsumerContext, Rebalance};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::ClientContext;
use tracing::info;

use crate::commit::{self, PartShared};
use crate::metrics::Metrics;

/// A Kafka partition: (topic, partition).
pub type Tp = (Arc<str>, i32);

pub enum Event {
    Assigned(Vec<Tp>),
    Revoked(Vec<Tp>),
}

/// librdkafka callbacks of one consumer.
pub struct Ctx {
    pub parts: Mutex<HashMap<Tp, Arc<PartShared>>>,
    pub events: Mutex<Vec<Event>>,
    metrics: Metrics,
    /// How long a revocation waits for the INSERTs in flight ([`revoke_grace`]).
    revoke_grace: Duration,
}

/// A quarter of `max.poll.interval.ms` (librdkafka's default 300 s, or the
/// `[kafka.properties]` value), at most 30 s.
pub fn revoke_grace(cfg: &Config) -> Duration {
    let max_poll_ms = cfg
        .kafka
        .properties
        .get("max.poll.interval.ms")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(300_000);
    Duration::from_millis(max_poll_ms / 4).min(Duration::from_secs(30))
}

/// The consumer of worker `id`, subscribed to nothing yet.
pub fn consumer(cfg: &Config, id: usize, metrics: &Metrics) -> anyhow::Result<BaseConsumer<Ctx>> {
    let ctx = Ctx {
        parts: Mutex::new(HashMap::new()),
        events: Mutex::new(Vec::new()),
        metrics: metrics.clone(),
        revoke_grace: revoke_grace(cfg),
    };
    let mut cc = common::kafka::consumer_config(&cfg.kafka, &cfg.kafka.ingest_group);
    cc.set("statistics.interval.ms", "5000")
        .set("queued.max.messages.kbytes", "32768")
        .set("client.id", format!("adlog-ingest-{id}"));
    cc.create_with_context(ctx)
        .with_context(|| format!("creating Kafka consumer for {}", cfg.kafka.brokers))
}

fn tps(tpl: &TopicPartitionList) -> Vec<Tp> {
    tpl.elements()
        .iter()
        .map(|e| (Arc::<str>::from(e.topic()), e.partition()))
        .collect()
}

fn names(tps: &[Tp]) -> Vec<String> {
    tps.iter().map(|(t, p)| format!("{t}/{p}")).collect()
}

impl ClientContext for Ctx {
    fn stats(&self, stats: Statistics) {
        common::kafka::record_consumer_lag(&stats, &self.metrics.consumer_lag);
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let revoked = tps(tpl);
        let shared: Vec<(Tp, Arc<PartShared>)> = {
            let parts = self.parts.lock().expect("parts lock");
            revoked
                .iter()
                .filter_map(|tp| parts.get(tp).map(|s| (tp.clone(), s.clone())))
                .collect()
        };
        for (_, s) in &shared {
            s.revoke();
        }
        // Let the INSERTs sending these partitions' rows finish (no further
        // one includes them), so the next owner cannot race with them.
        // Bounded well below max.poll.interval.ms: this runs inside poll, and
        // a member that overstays it is expelled from the group (a frozen
        // ClickHouse made the whole group stall that way). An INSERT still
        // running after the grace is waited for by the next owner's recovery.
        let deadline = Instant::now() + self.revoke_grace;
        while shared.iter().any(|(_, s)| s.is_writing()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let list: Vec<(&str, i32, &Arc<PartShared>, i64)> =
            shared.iter().map(|((t, p), s)| (&**t, *p, s, -1)).collect();
        commit::commit(consumer, &list, &self.metrics, CommitMode::Sync);
        {
            let mut parts = self.parts.lock().expect("parts lock");
            for tp in &revoked {
                parts.remove(tp);
            }
        }
        info!(partitions = ?names(&revoked), "partitions revoked");
        self.events
            .lock()
            .expect("events lock")
            .push(Event::Revoked(revoked));
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let assigned = tps(tpl);
            info!(partitions = ?names(&assigned), "partitions assigned");
            self.events
                .lock()
                .expect("events lock")
                .push(Event::Assigned(assigned));
        }
    }
}
