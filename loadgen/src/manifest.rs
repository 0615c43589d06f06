//! The manifest: exactly what a run sent, and what the pipeline must make of it.
//!
//! [`ManifestBuilder::observe`] sees every message in stream order. From the
//! typed records it derives the expected join: every (exposure, interaction)
//! with the same mark_id and `0 <= interaction_ts - exposure_ts <= window_ms`,
//! with its deterministic `joined_id` ([`schemas::Joined::from_pair`]) and
//! whether the interaction was sent before its exposure. Everything else is
//! counted: orphans (no exposure was sent), out-of-window and skewed
//! (negative delay) interactions, exposures that join nothing.
//!
//! The delivery section is filled in by the producer from the broker's
//! acknowledgements; [`Manifest::ensure_delivered`] fails unless every message
//! was acknowledged.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use schemas::{Exposure, Interaction, Joined, LogType};
use serde::{Deserialize, Serialize};

use crate::generator::{Kind, Message};
use crate::model::Line;
use crate::params::Params;

/// Message counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub messages: u64,
    pub good: u64,
    pub bad: u64,
    /// Sent as the bare line rather than the Filebeat document.
    pub bare: u64,
    /// Sum of value sizes.
    pub bytes: u64,
}

/// Counts for one topic (each topic carries one log type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicCounts {
    pub log_type: LogType,
    #[serde(flatten)]
    pub counts: Counts,
    /// Bad messages by the reason the pipeline must report.
    pub bad_by_reason: BTreeMap<String, u64>,
}

/// One joined event the joiner must produce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedPair {
    pub joined_id: u64,
    pub mark_id: String,
    pub exposure_ts_ms: i64,
    pub interaction_ts_ms: i64,
    pub action: String,
    pub delay_ms: i64,
    /// The interaction was sent before its exposure.
    pub out_of_order: bool,
}

/// What the traffic contained.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Request traces (edge hops sent).
    pub traces: u64,
    pub request_lines: u64,
    pub exposures: u64,
    pub interactions: u64,
    /// Distinct uids over all good lines.
    pub distinct_uids: u64,
    /// Length of `expected_pairs`.
    pub joined_pairs: u64,
    /// Pairs whose interaction was sent before the exposure.
    pub out_of_order_pairs: u64,
    /// Exposures with at least one expected pair.
    pub exposures_joined: u64,
    /// Exposures with no expected pair (the joiner's unmatched exposures).
    pub exposures_unmatched: u64,
    /// Exposures with no interaction line at all (a subset of the unmatched).
    pub exposures_without_interaction: u64,
    /// Interactions whose mark_id no exposure has.
    pub orphan_interactions: u64,
    /// Interactions more than `window_ms` after their exposure.
    pub out_of_window_interactions: u64,
    /// Interactions stamped before their exposure (clock skew).
    pub skewed_interactions: u64,
    /// Interactions that join nothing: orphan + out of window + skewed.
    pub interactions_unmatched: u64,
    /// Interactions sent before their exposure (joinable or not).
    pub interactions_before_exposure: u64,
    /// Event-time range of the good lines.
    pub first_event_ts_ms: Option<i64>,
    pub last_event_ts_ms: Option<i64>,
}

/// What the broker acknowledged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Messages were written to stdout, not Kafka.
    pub dry_run: bool,
    /// Send-rate target (messages/s, 0 = unlimited).
    pub rate: u64,
    pub acked: u64,
    /// Messages given up on after retries (a run with failures is incomplete).
    pub failed: u64,
    /// Re-sends after a failed delivery report.
    pub retried: u64,
    pub first_error: Option<String>,
    pub elapsed_s: f64,
    pub msgs_per_s: f64,
    pub mb_per_s: f64,
    /// Acknowledged messages per topic and partition.
    pub partitions: BTreeMap<String, BTreeMap<i32, u64>>,
}

/// Everything a run sent. Serialized as the `--manifest` JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub params: Params,
    /// Log type → topic name.
    pub topics: BTreeMap<String, String>,
    pub totals: Counts,
    /// By topic name.
    pub per_topic: BTreeMap<String, TopicCounts>,
    pub bad_by_reason: BTreeMap<String, u64>,
    pub bad_by_kind: BTreeMap<String, u64>,
    pub stats: Stats,
    /// Sorted by (interaction_ts_ms, joined_id).
    pub expected_pairs: Vec<ExpectedPair>,
    pub delivery: Option<Delivery>,
}

impl Manifest {
    /// Counts of the topic carrying log type `t`.
    pub fn topic(&self, t: LogType) -> Option<&TopicCounts> {
        self.per_topic.values().find(|c| c.log_type == t)
    }

    /// Ok when a delivery section says every message was acknowledged.
    pub fn ensure_delivered(&self) -> anyhow::Result<()> {
        let d = self
            .delivery
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("run has no delivery report"))?;
        if d.dry_run {
            return Ok(());
        }
        anyhow::ensure!(
            d.failed == 0 && d.acked == self.totals.messages,
            "{} of {} messages were not delivered (acked {}); first error: {}",
            d.failed.max(self.totals.messages.saturating_sub(d.acked)),
            self.totals.messages,
            d.acked,
            d.first_error.as_deref().unwrap_or("none")
        );
        Ok(())
    }
}

/// The log types the generator writes, in a fixed order.
pub const TYPES: [LogType; 3] = [LogType::Request, LogType::Exposure, LogType::Interaction];

/// Index of `t` in [`TYPES`].
pub fn type_index(t: LogType) -> usize {
    TYPES
        .iter()
        .position(|x| *x == t)
        .expect("the generator only writes request, exposure and interaction")
}

struct ExposureState {
    exposure: Exposure<'static>,
    seq: u64,
    any_interaction: bool,
    joined: bool,
}

/// Accumulates the manifest while the stream is generated.
pub struct ManifestBuilder {
    params: Params,
    topics: [String; 3],
    totals: Counts,
    per_type: [TopicCounts; 3],
    bad_by_reason: BTreeMap<String, u64>,
    bad_by_kind: BTreeMap<String, u64>,
    stats: Stats,
    uids: HashSet<u64>,
    exposures: HashMap<String, ExposureState>,
    /// Interactions seen before any exposure with their mark_id.
    waiting: HashMap<String, Vec<(Interaction<'static>, u64)>>,
    pairs: Vec<ExpectedPair>,
}

impl ManifestBuilder {
    pub fn new(params: &Params, topics: &common::config::TopicsConfig) -> ManifestBuilder {
        ManifestBuilder {
            params: params.clone(),
            topics: TYPES.map(|t| topics.topic_for(t).to_owned()),
            totals: Counts::default(),
            per_type: TYPES.map(|t| TopicCounts {
                log_type: t,
                counts: Counts::default(),
                bad_by_reason: BTreeMap::new(),
            }),
            bad_by_reason: BTreeMap::new(),
            bad_by_kind: BTreeMap::new(),
            stats: Stats::default(),
            uids: HashSet::new(),
            exposures: HashMap::new(),
            waiting: HashMap::new(),
            pairs: Vec::new(),
        }
    }

    /// Records one message (call in stream order).
    pub fn observe(&mut self, m: &Message) {
        match &m.kind {
            Kind::Bad(kind) => self.observe_bad(
                m.log_type,
                m.value.len(),
                m.bare,
                kind.reason(),
                Some(kind.name()),
            ),
            Kind::Good(line) => self.observe_good(m.seq, m.log_type, m.value.len(), m.bare, line),
        }
    }

    fn count(&mut self, topic_type: LogType, bytes: usize, bare: bool) -> usize {
        let i = type_index(topic_type);
        let tc = &mut self.per_type[i];
        for c in [&mut self.totals, &mut tc.counts] {
            c.messages += 1;
            c.bytes += bytes as u64;
            c.bare += u64::from(bare);
        }
        i
    }

    /// Records a bad message of `bytes` sent to the topic of `topic_type`, by
    /// the reason the pipeline must report (a replayed one has a reason but
    /// no generator [`crate::BadKind`]: `kind` is `None`).
    pub fn observe_bad(
        &mut self,
        topic_type: LogType,
        bytes: usize,
        bare: bool,
        reason: &str,
        kind: Option<&str>,
    ) {
        let i = self.count(topic_type, bytes, bare);
        let tc = &mut self.per_type[i];
        self.totals.bad += 1;
        tc.counts.bad += 1;
        *tc.bad_by_reason.entry(reason.into()).or_default() += 1;
        *self.bad_by_reason.entry(reason.into()).or_default() += 1;
        if let Some(kind) = kind {
            *self.bad_by_kind.entry(kind.into()).or_default() += 1;
        }
    }

    /// Records a good message carrying `line`, the `seq`-th of the stream.
    pub fn observe_good(
        &mut self,
        seq: u64,
        topic_type: LogType,
        bytes: usize,
        bare: bool,
        line: &Line,
    ) {
        let i = self.count(topic_type, bytes, bare);
        let tc = &mut self.per_type[i];
        self.totals.good += 1;
        tc.counts.good += 1;
        let ts = line.ts_ms();
        let s = &mut self.stats;
        s.first_event_ts_ms = Some(s.first_event_ts_ms.map_or(ts, |f| f.min(ts)));
        s.last_event_ts_ms = Some(s.last_event_ts_ms.map_or(ts, |l| l.max(ts)));
        match line {
            Line::Request(r) => {
                s.request_lines += 1;
                s.traces += u64::from(r.parent_span_id.is_empty());
                self.uids.insert(r.uid);
            }
            Line::Exposure(e) => {
                s.exposures += 1;
                self.uids.insert(e.uid);
                let mut st = ExposureState {
                    exposure: e.clone(),
                    seq,
                    any_interaction: false,
                    joined: false,
                };
                for (i, iseq) in self.waiting.remove(e.mark_id.as_ref()).unwrap_or_default() {
                    Self::pair(
                        &self.params,
                        &mut self.stats,
                        &mut self.pairs,
                        &mut st,
                        &i,
                        iseq,
                    );
                }
                self.exposures.insert(e.mark_id.to_string(), st);
            }
            Line::Interaction(i) => {
                s.interactions += 1;
                self.uids.insert(i.uid);
                match self.exposures.get_mut(i.mark_id.as_ref()) {
                    Some(st) => {
                        Self::pair(&self.params, &mut self.stats, &mut self.pairs, st, i, seq)
                    }
                    None => self
                        .waiting
                        .entry(i.mark_id.to_string())
                        .or_default()
                        .push((i.clone(), seq)),
                }
            }
        }
    }

    fn pair(
        p: &Params,
        stats: &mut Stats,
        pairs: &mut Vec<ExpectedPair>,
        st: &mut ExposureState,
        i: &Interaction<'static>,
        iseq: u64,
    ) {
        st.any_interaction = true;
        let out_of_order = iseq < st.seq;
        stats.interactions_before_exposure += u64::from(out_of_order);
        let delay = i.ts_ms - st.exposure.ts_ms;
        if delay < 0 {
            stats.skewed_interactions += 1;
        } else if delay > p.window_ms {
            stats.out_of_window_interactions += 1;
        } else {
            st.joined = true;
            stats.out_of_order_pairs += u64::from(out_of_order);
            pairs.push(ExpectedPair {
                joined_id: Joined::from_pair(&st.exposure, i).joined_id,
                mark_id: i.mark_id.to_string(),
                exposure_ts_ms: st.exposure.ts_ms,
                interaction_ts_ms: i.ts_ms,
                action: i.action.to_string(),
                delay_ms: delay,
                out_of_order,
            });
        }
    }

    /// The manifest of everything observed (no delivery section yet).
    pub fn finish(mut self) -> Manifest {
        let s = &mut self.stats;
        s.orphan_interactions = self.waiting.values().map(|v| v.len() as u64).sum();
        s.distinct_uids = self.uids.len() as u64;
        s.joined_pairs = self.pairs.len() as u64;
        s.exposures_joined = self.exposures.values().filter(|e| e.joined).count() as u64;
        s.exposures_unmatched = s.exposures - s.exposures_joined;
        s.exposures_without_interaction = self
            .exposures
            .values()
            .filter(|e| !e.any_interaction)
            .count() as u64;
        s.interactions_unmatched =
            s.orphan_interactions + s.out_of_window_interactions + s.skewed_interactions;
        self.pairs
            .sort_by_key(|p| (p.interaction_ts_ms, p.joined_id, p.mark_id.clone()));
        Manifest {
            params: self.params,
            topics: TYPES
                .iter()
                .zip(&self.topics)
                .map(|(t, n)| (t.as_str().to_owned(), n.clone()))
                .collect(),
            totals: self.totals,
            per_topic: self
                .per_type
                .into_iter()
                .zip(self.topics)
                .map(|(c, n)| (n, c))
                .collect(),
            bad_by_reason: self.bad_by_reason,
            bad_by_kind: self.bad_by_kind,
            stats: self.stats,
            expected_pairs: self.pairs,
            delivery: None,
        }
    }
}

fn pct(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        100.0 * a as f64 / b as f64
    }
}

fn fmt_ts(ms: Option<i64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) => {
            let mut s = String::new();
            schemas::time::format_ms(ms, &mut s);
            s
        }
    }
}

impl fmt::Display for Manifest {
    /// The human summary printed at the end of a run.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.params;
        let t = &self.totals;
        let s = &self.stats;
        writeln!(
            f,
            "loadgen: seed {} · {} messages ({} good, {} bad = {:.2}%, {} bare = {:.1}%) · {:.1} MB",
            p.seed,
            t.messages,
            t.good,
            t.bad,
            pct(t.bad, t.messages),
            t.bare,
            pct(t.bare, t.messages),
            t.bytes as f64 / 1e6
        )?;
        writeln!(
            f,
            "  event time {} .. {} (start_ms {}, {} events/s of event time)",
            fmt_ts(s.first_event_ts_ms),
            fmt_ts(s.last_event_ts_ms),
            p.start_ms,
            p.event_rate
        )?;
        for (topic, c) in &self.per_topic {
            writeln!(
                f,
                "  topic {:<24} {:>11} {:>10} messages  {:>10} good  {:>8} bad",
                topic,
                format!("({})", c.log_type),
                c.counts.messages,
                c.counts.good,
                c.counts.bad
            )?;
        }
        if !self.bad_by_reason.is_empty() {
            let reasons: Vec<String> = self
                .bad_by_reason
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect();
            writeln!(f, "  bad by reason: {}", reasons.join(", "))?;
        }
        writeln!(
            f,
            "  {} traces, {} distinct uids, {} exposures, {} interactions",
            s.traces, s.distinct_uids, s.exposures, s.interactions
        )?;
        writeln!(
            f,
            "  join (window {} s): {} expected pairs ({} out of order) on {} exposures; \
             {} exposures unmatched ({} without any interaction)",
            p.window_ms / 1000,
            s.joined_pairs,
            s.out_of_order_pairs,
            s.exposures_joined,
            s.exposures_unmatched,
            s.exposures_without_interaction
        )?;
        writeln!(
            f,
            "  unmatched interactions: {} orphans, {} out of window, {} skewed (before exposure)",
            s.orphan_interactions, s.out_of_window_interactions, s.skewed_interactions
        )?;
        if let Some(d) = &self.delivery {
            if d.dry_run {
                writeln!(f, "  dry run: messages written to stdout")?;
            } else {
                writeln!(
                    f,
                    "  delivered: {} acked, {} failed, {} retried in {:.2} s = {:.0} msg/s ({:.1} MB/s)",
                    d.acked, d.failed, d.retried, d.elapsed_s, d.msgs_per_s, d.mb_per_s
                )?;
                if let Some(e) = &d.first_error {
                    writeln!(f, "  first delivery error: {e}")?;
                }
            }
        }
        Ok(())
    }
}
