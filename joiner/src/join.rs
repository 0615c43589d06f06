//! One batch's join: the Redis commands for its events and what their replies
//! mean (joined events to produce, metrics). No I/O here.
//!
//! Per event, one `EVALSHA` of the side's script (see [`crate::state`]). Per
//! batch, one `RPUSH` per side, shard and due bucket with every mark_id of the
//! batch (the sweeper's schedule: due = now + window), and one `PEXPIRE` per
//! such list (a safety net when no sweeper runs). These are separate commands,
//! not in the scripts, because in Redis Cluster their keys are in other
//! slots. In the naive baseline every command is its own round trip and every
//! event has its own `RPUSH`.

use std::collections::{HashMap, HashSet};

use redis::Value;
use schemas::{Exposure, Interaction, Joined};
use tracing::warn;

use crate::metrics::Metrics;
use crate::output::OutRecord;
use crate::slices::{Layout, SliceJoin};
use crate::state::{self, due_shard, Encoding, Keys, Scripts, Side, DUE_BUCKET_MS};
use crate::store::{bulk, Commands};

/// A parsed event of the batch.
#[derive(Debug, Clone)]
pub enum Event {
    Exposure(Exposure<'static>),
    Interaction(Interaction<'static>),
}

impl Event {
    pub fn mark_id(&self) -> &str {
        match self {
            Event::Exposure(e) => &e.mark_id,
            Event::Interaction(i) => &i.mark_id,
        }
    }
}

/// Which Redis protocol the joiner speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// Plain pipelined hash commands on bucketed, time-sliced hashes
    /// ([`crate::slices`]): the default (`joiner.protocol = "slices"`).
    #[default]
    Slices,
    /// One Lua script call per event, a key per exposure and per park list,
    /// due lists for the sweeper, all in one pipeline per batch
    /// (`joiner.protocol = "lua"`): the previous default, kept as the
    /// benchmark baseline.
    Lua,
    /// The Lua scripts one round trip per command, JSON state (the first baseline).
    Naive,
}

impl From<common::config::JoinProtocol> for Protocol {
    fn from(p: common::config::JoinProtocol) -> Protocol {
        match p {
            common::config::JoinProtocol::Slices => Protocol::Slices,
            common::config::JoinProtocol::Lua => Protocol::Lua,
        }
    }
}

impl Protocol {
    /// Namespace of the Redis-loss guard's keys. Each protocol has its own:
    /// a joiner switched to another protocol finds no epoch of its own and
    /// rebuilds the window from Kafka into the state it reads.
    pub fn guard_namespace(self) -> &'static str {
        match self {
            Protocol::Lua => "jg",
            Protocol::Slices => "jgs",
            Protocol::Naive => "jgn",
        }
    }
}

/// The join's parameters.
#[derive(Debug, Clone)]
pub struct JoinParams {
    pub protocol: Protocol,
    /// The default protocol's layout (used when `protocol` is `Slices`).
    pub slices: SliceJoin,
    pub keys: Keys,
    pub scripts: Scripts,
    pub window_ms: i64,
    /// TTL of the state and of the park lists (window + slack).
    pub ttl_ms: i64,
    pub slack_ms: i64,
    pub max_parked: usize,
    pub encoding: Encoding,
    /// One command per event (and no per-shard grouping of the due ZADDs).
    pub naive: bool,
    pub joined_topic: String,
}

impl JoinParams {
    pub fn from_config(cfg: &common::Config, protocol: Protocol) -> anyhow::Result<JoinParams> {
        let j = &cfg.joiner;
        let naive = protocol == Protocol::Naive;
        anyhow::ensure!(j.window_s > 0, "joiner.window_s must be positive");
        anyhow::ensure!(
            (1..=256).contains(&j.max_parked_per_mark),
            "joiner.max_parked_per_mark must be within 1..=256"
        );
        anyhow::ensure!(j.state_buckets > 0, "joiner.state_buckets must be positive");
        let keys = Keys::new(&j.key_prefix)?;
        let window_ms = j.window_s as i64 * 1000;
        Ok(JoinParams {
            protocol,
            slices: SliceJoin {
                layout: Layout::new(&keys, j.state_buckets, window_ms),
                window_ms,
                max_parked: j.max_parked_per_mark,
            },
            keys,
            scripts: Scripts::new(),
            window_ms: j.window_s as i64 * 1000,
            ttl_ms: (j.window_s + j.state_ttl_slack_s) as i64 * 1000,
            slack_ms: j.state_ttl_slack_s as i64 * 1000,
            max_parked: j.max_parked_per_mark,
            encoding: if naive {
                Encoding::Verbose
            } else {
                Encoding::Compact
            },
            naive,
            joined_topic: cfg.topics.joined.clone(),
        })
    }

    /// The commands for `events`, as one pipeline (or, naive, one per command).
    pub fn commands(&self, events: &[Event], now_ms: i64) -> Vec<Commands> {
        let mut out = vec![Commands::new()];
        let bucket = (now_ms + self.window_ms).div_euclid(DUE_BUCKET_MS);
        let due_ttl = ((bucket + 1) * DUE_BUCKET_MS - now_ms + self.slack_ms).max(1);
        let mut dues: HashMap<(Side, u32), Vec<&str>> = HashMap::new();
        let mut buf = Vec::with_capacity(128);
        let ttl = self.ttl_ms.to_string();
        let window = self.window_ms.to_string();
        let max_parked = self.max_parked.to_string();
        for ev in events {
            let m = ev.mark_id();
            let (kx, kp) = (self.keys.exposure(m), self.keys.parked(m));
            let (cmd, side) = match ev {
                Event::Exposure(e) => {
                    state::encode_exposure(e, self.encoding, &mut buf);
                    let c = state::evalsha(
                        &self.scripts.exposure,
                        &[kx.as_bytes(), kp.as_bytes()],
                        &[&buf, ttl.as_bytes(), window.as_bytes()],
                    );
                    (c, Side::Exposure)
                }
                Event::Interaction(i) => {
                    state::encode_interaction(i, self.encoding, &mut buf);
                    let c = state::evalsha(
                        &self.scripts.interaction,
                        &[kx.as_bytes(), kp.as_bytes()],
                        &[
                            &buf,
                            ttl.as_bytes(),
                            window.as_bytes(),
                            max_parked.as_bytes(),
                        ],
                    );
                    (c, Side::Interaction)
                }
            };
            if self.naive {
                let mut c = Commands::new();
                c.push(kx.as_bytes(), cmd);
                out.push(c);
                let key = self.keys.due(side, due_shard(m), bucket);
                let mut push = redis::cmd("RPUSH");
                push.arg(&key).arg(m);
                let mut c = Commands::new();
                c.push(key.as_bytes(), push);
                out.push(c);
            } else {
                out[0].push(kx.as_bytes(), cmd);
            }
            dues.entry((side, due_shard(m))).or_default().push(m);
        }
        let mut dues: Vec<_> = dues.into_iter().collect();
        dues.sort_by_key(|((side, shard), _)| (side.tag(), *shard));
        let mut tail = if self.naive {
            Commands::new()
        } else {
            std::mem::take(&mut out[0])
        };
        for ((side, shard), members) in dues {
            let key = self.keys.due(side, shard, bucket);
            if !self.naive {
                let mut push = redis::cmd("RPUSH");
                push.arg(&key);
                for m in members {
                    push.arg(m);
                }
                tail.push(key.as_bytes(), push);
            }
            let mut exp = redis::cmd("PEXPIRE");
            exp.arg(&key).arg(due_ttl);
            tail.push(key.as_bytes(), exp);
        }
        if self.naive {
            out.push(tail);
        } else {
            out[0] = tail;
        }
        out.retain(|c| !c.is_empty());
        out
    }

    /// Interprets the replies (one per command, in the order of
    /// [`commands`](Self::commands), concatenated) into the joined events to
    /// produce, deduplicated by joined_id, and counts the outcome.
    pub fn outcome(
        &self,
        events: &[Event],
        replies: &[Value],
        metrics: &Metrics,
    ) -> Vec<OutRecord> {
        let mut out = Emitter::new(&self.joined_topic);
        let stride = if self.naive { 2 } else { 1 };
        let emit = |j: Joined<'_>, side: Side, out: &mut Emitter| out.emit(j, side, metrics);
        for (n, ev) in events.iter().enumerate() {
            let Some(reply) = replies.get(n * stride) else {
                break;
            };
            if let Value::ServerError(e) = reply {
                metrics.redis_errors.with_label_values(&["command"]).inc();
                warn!(mark_id = ev.mark_id(), error = ?e, "Redis rejected a join script; event skipped");
                continue;
            }
            match ev {
                Event::Exposure(e) => {
                    let Value::Array(parked) = reply else {
                        metrics.decode_errors.inc();
                        continue;
                    };
                    for p in parked {
                        if bulk(p).is_some_and(|b| b.is_empty()) {
                            continue; // the sweeper's "counted up to here" marker
                        }
                        let Some(i) =
                            bulk(p).and_then(|b| state::decode_interaction(&e.mark_id, b).ok())
                        else {
                            metrics.decode_errors.inc();
                            continue;
                        };
                        if state::in_window(e.ts_ms, i.ts_ms, self.window_ms) {
                            emit(Joined::from_pair(e, &i), Side::Exposure, &mut out);
                        } else {
                            metrics.out_of_window.with_label_values(&["exposure"]).inc();
                        }
                    }
                }
                Event::Interaction(i) => match reply {
                    Value::BulkString(b) => match state::decode_exposure(&i.mark_id, b) {
                        Ok(st) => {
                            if state::in_window(st.exposure.ts_ms, i.ts_ms, self.window_ms) {
                                // The script returns the state as it was: a
                                // counted exposure joins now (flag '2' → '1').
                                if st.flag == state::FLAG_COUNTED {
                                    metrics
                                        .unmatched_then_joined
                                        .with_label_values(&["exposure"])
                                        .inc();
                                }
                                emit(
                                    Joined::from_pair(&st.exposure, i),
                                    Side::Interaction,
                                    &mut out,
                                );
                            } else {
                                metrics
                                    .out_of_window
                                    .with_label_values(&["interaction"])
                                    .inc();
                            }
                        }
                        Err(_) => metrics.decode_errors.inc(),
                    },
                    Value::Int(code) => {
                        metrics.misses.inc();
                        match code {
                            0 => metrics.parked.inc(),
                            2 => metrics.park_overflow.inc(),
                            _ => {}
                        }
                    }
                    _ => metrics.decode_errors.inc(),
                },
            }
        }
        out.into_records()
    }
}

/// Joined events of one batch, deduplicated by joined_id (both sides of a
/// race may see each other: the second copy is dropped here).
pub struct Emitter {
    topic: String,
    seen: HashSet<u64>,
    out: Vec<OutRecord>,
}

impl Emitter {
    pub fn new(topic: &str) -> Emitter {
        Emitter {
            topic: topic.to_owned(),
            seen: HashSet::new(),
            out: Vec::new(),
        }
    }

    /// Adds `j` unless its joined_id is already there; counts it by `side`.
    pub fn emit(&mut self, j: Joined<'_>, side: Side, metrics: &Metrics) {
        if !self.seen.insert(j.joined_id) {
            metrics.batch_duplicates.inc();
            return;
        }
        metrics.joined.with_label_values(&[side.as_str()]).inc();
        let mut payload = String::with_capacity(400);
        j.write_json(&mut payload);
        self.out.push(OutRecord {
            topic: self.topic.clone(),
            key: j.mark_id.to_string(),
            payload,
        });
    }

    pub fn into_records(self) -> Vec<OutRecord> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(naive: bool) -> JoinParams {
        let protocol = if naive {
            Protocol::Naive
        } else {
            Protocol::Lua
        };
        JoinParams::from_config(&common::Config::default(), protocol).unwrap()
    }

    fn ev_x(m: &str, ts: i64) -> Event {
        let line = format!("{ts}\t{m}\tt1\t1\t2\t3\t4\t5\tios\t1.5");
        Event::Exposure(Exposure::parse(&line).unwrap().into_owned())
    }

    fn ev_i(m: &str, ts: i64, action: &str) -> Event {
        let line = format!("{ts}\t{m}\tt2\t1\t{action}\t");
        Event::Interaction(Interaction::parse(&line).unwrap().into_owned())
    }

    #[test]
    fn one_pipeline_with_grouped_due_pushes() {
        let p = params(false);
        let evs = vec![ev_x("a", 1000), ev_i("a", 2000, "click"), ev_x("b", 1000)];
        let cmds = p.commands(&evs, 0);
        assert_eq!(cmds.len(), 1);
        // 3 scripts + RPUSH and PEXPIRE per (side, shard) used.
        let shards: HashSet<(u32, &str)> = [
            (due_shard("a"), "x"),
            (due_shard("a"), "i"),
            (due_shard("b"), "x"),
        ]
        .into_iter()
        .collect();
        assert_eq!(cmds[0].len(), 3 + 2 * shards.len());
        let naive = params(true).commands(&evs, 0);
        assert_eq!(
            naive.len(),
            7,
            "naive: script + RPUSH per event, each alone, then the PEXPIREs"
        );
        assert_eq!(naive[6].len(), shards.len());
    }

    #[test]
    fn replies_become_joined_events_deduplicated() {
        let p = params(false);
        let metrics = Metrics::new();
        let x = ev_x("a", 1_000);
        let Event::Exposure(xe) = &x else {
            unreachable!()
        };
        let mut state = Vec::new();
        state::encode_exposure(xe, Encoding::Compact, &mut state);
        let i1 = ev_i("a", 2_000, "click");
        let Event::Interaction(ie) = &i1 else {
            unreachable!()
        };
        let mut parked = Vec::new();
        state::encode_interaction(ie, Encoding::Compact, &mut parked);
        let late = ev_i("a", 1_000 + 3_600_001, "like");
        let evs = vec![x.clone(), i1.clone(), late, ev_i("z", 5, "click")];
        let replies = vec![
            // The exposure found the click parked; the click itself (replayed
            // in the same batch) found the exposure: one joined event.
            Value::Array(vec![Value::BulkString(parked)]),
            Value::BulkString(state.clone()),
            Value::BulkString(state),
            Value::Int(0),
        ];
        let out = p.outcome(&evs, &replies, &metrics);
        assert_eq!(out.len(), 1);
        let j = Joined::parse(&out[0].payload).unwrap();
        assert_eq!(j.joined_id, Joined::from_pair(xe, ie).joined_id);
        assert_eq!(out[0].key, "a");
        assert_eq!(metrics.batch_duplicates.get(), 1);
        assert_eq!(
            metrics
                .out_of_window
                .with_label_values(&["interaction"])
                .get(),
            1
        );
        assert_eq!(metrics.misses.get(), 1);
        assert_eq!(metrics.parked.get(), 1);
    }
}
