//! Counting (and optionally emitting) events that found no partner within the
//! window.
//!
//! Every batch schedules its mark_ids in the due zsets (`jd:x:<shard>` for
//! exposures, `jd:i:<shard>` for interactions; score = processing time + window).
//! Every `sweep_interval_ms` each worker tries, per side and shard, to take a
//! short lock (`SET NX PX`); the holder reads due members (`ZRANGEBYSCORE …
//! LIMIT`), checks their state in one pipelined round trip, and removes them
//! (only if not rescheduled meanwhile):
//!
//! * exposure: state without the joined flag → `unmatched_total{side="exposure"}`;
//!   state already expired → `unmatched_unknown_total` (the sweeper was late by
//!   more than the TTL slack);
//! * interactions: each parked interaction that does not fall within the window
//!   of a stored exposure → `unmatched_total{side="interaction"}`. A park list
//!   that was extended after the first interaction (its TTL is still longer
//!   than the slack) is rescheduled to when its last push is due.
//!
//! With `emit_unmatched`, each such event is produced to `topics.unmatched`
//! (at least once: produced before the member is removed). Counts are
//! best-effort: a crash between counting and removal counts again, and a
//! mark_id whose park list keeps receiving orphans for longer than the window
//! can have its earlier entries counted twice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Value;
use tracing::{debug, warn};

use crate::metrics::Metrics;
use crate::output::{OutRecord, Output};
use crate::state::{self, Keys, Side, DUE_SHARDS};
use crate::store::{bulk, Commands, Store, StoreError};
use crate::worker::now_ms;

pub struct Sweeper {
    pub store: Arc<Store>,
    pub output: Arc<Output>,
    pub metrics: Metrics,
    pub keys: Keys,
    pub window_ms: i64,
    pub slack_ms: i64,
    pub interval: Duration,
    pub batch: usize,
    pub emit_topic: Option<String>,
    /// Identifies this process's locks.
    pub token: String,
}

/// An unmatched event found by a sweep step.
#[derive(Debug, Clone, PartialEq)]
pub struct Unmatched {
    pub side: Side,
    pub mark_id: String,
    pub reason: &'static str,
    /// The record's JSON line (when decodable).
    pub record: Option<String>,
}

impl Sweeper {
    /// Sweeps every `interval` until `shutdown`.
    pub async fn run(self, shutdown: Arc<AtomicBool>) {
        let mut next = Instant::now() + self.interval;
        while !shutdown.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if Instant::now() < next {
                continue;
            }
            next = Instant::now() + self.interval;
            let t0 = Instant::now();
            if let Err(e) = self.pass(&shutdown).await {
                debug!(error = %e, "sweep pass failed; next pass retries");
            }
            self.metrics.sweeps.inc();
            self.metrics
                .sweep_seconds
                .observe(t0.elapsed().as_secs_f64());
        }
    }

    /// One pass over every side and shard whose lock we get.
    pub async fn pass(&self, shutdown: &AtomicBool) -> Result<Vec<Unmatched>, StoreError> {
        let lock_ms = (self.interval.as_millis() as u64 * 3).max(30_000);
        let mut found = Vec::new();
        for side in [Side::Exposure, Side::Interaction] {
            for shard in 0..DUE_SHARDS {
                if shutdown.load(Ordering::Acquire) {
                    return Ok(found);
                }
                let lock = self.keys.lock(side, shard);
                let mut c = Commands::new();
                let mut set = redis::cmd("SET");
                set.arg(&lock)
                    .arg(&self.token)
                    .arg("NX")
                    .arg("PX")
                    .arg(lock_ms);
                c.push(lock.as_bytes(), set);
                if !matches!(self.store.exec(&c).await?.first(), Some(Value::Okay)) {
                    continue;
                }
                let res = self.sweep_shard(side, shard, shutdown, &mut found).await;
                let mut c = Commands::new();
                c.push(
                    lock.as_bytes(),
                    state::evalsha(
                        &self.store.scripts.unlock,
                        &[lock.as_bytes()],
                        &[self.token.as_bytes()],
                    ),
                );
                let _ = self.store.exec(&c).await;
                res?;
            }
        }
        Ok(found)
    }

    async fn sweep_shard(
        &self,
        side: Side,
        shard: u32,
        shutdown: &AtomicBool,
        found: &mut Vec<Unmatched>,
    ) -> Result<(), StoreError> {
        let key = self.keys.due(side, shard);
        let started = Instant::now();
        loop {
            let now = now_ms();
            let mut c = Commands::new();
            let mut z = redis::cmd("ZRANGEBYSCORE");
            z.arg(&key)
                .arg("-inf")
                .arg(now)
                .arg("LIMIT")
                .arg(0)
                .arg(self.batch);
            c.push(key.as_bytes(), z);
            let members: Vec<String> = match self.store.exec(&c).await?.pop() {
                Some(Value::Array(v)) => v
                    .iter()
                    .filter_map(|m| bulk(m).map(|b| String::from_utf8_lossy(b).into_owned()))
                    .collect(),
                _ => Vec::new(),
            };
            if members.is_empty() {
                return Ok(());
            }
            let (unmatched, reschedule) = self.check(side, &members, now).await?;
            if let Some(topic) = &self.emit_topic {
                let records: Vec<OutRecord> = unmatched
                    .iter()
                    .map(|u| OutRecord {
                        topic: topic.clone(),
                        key: u.mark_id.clone(),
                        payload: unmatched_json(u),
                    })
                    .collect();
                if !records.is_empty() && !self.output.send_all(records).await.is_empty() {
                    // Not removed: the next pass emits them again.
                    return Err(StoreError {
                        kind: "produce",
                        detail: "producing unmatched events failed".into(),
                    });
                }
            }
            let mut c = Commands::new();
            for (m, due) in &reschedule {
                let mut z = redis::cmd("ZADD");
                z.arg(&key).arg("XX").arg(*due).arg(m);
                c.push(key.as_bytes(), z);
            }
            let mut args: Vec<Vec<u8>> = vec![now.to_string().into_bytes()];
            args.extend(
                members
                    .iter()
                    .filter(|m| !reschedule.iter().any(|(r, _)| r == *m))
                    .map(|m| m.as_bytes().to_vec()),
            );
            let arg_refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
            c.push(
                key.as_bytes(),
                state::evalsha(&self.store.scripts.zrem_due, &[key.as_bytes()], &arg_refs),
            );
            self.store.exec(&c).await?;
            for u in &unmatched {
                self.metrics
                    .unmatched
                    .with_label_values(&[u.side.as_str()])
                    .inc();
            }
            found.extend(unmatched);
            if members.len() < self.batch
                || shutdown.load(Ordering::Acquire)
                || started.elapsed() > self.interval
            {
                return Ok(());
            }
        }
    }

    /// Reads the state of due members (one round trip) and decides.
    /// Returns the unmatched events and the members to reschedule (with their due time).
    async fn check(
        &self,
        side: Side,
        members: &[String],
        now: i64,
    ) -> Result<(Vec<Unmatched>, Vec<(String, i64)>), StoreError> {
        let mut c = Commands::new();
        for m in members {
            let kx = self.keys.exposure(m);
            let mut get = redis::cmd("GET");
            get.arg(&kx);
            c.push(kx.as_bytes(), get);
            if side == Side::Interaction {
                let kp = self.keys.parked(m);
                let mut lr = redis::cmd("LRANGE");
                lr.arg(&kp).arg(0).arg(-1);
                c.push(kp.as_bytes(), lr);
                let mut pt = redis::cmd("PTTL");
                pt.arg(&kp);
                c.push(kp.as_bytes(), pt);
            }
        }
        let replies = self.store.exec(&c).await?;
        let mut unmatched = Vec::new();
        let mut reschedule = Vec::new();
        let per = if side == Side::Exposure { 1 } else { 3 };
        for (n, m) in members.iter().enumerate() {
            let st = match replies.get(n * per) {
                Some(Value::BulkString(b)) => match state::decode_exposure(m, b) {
                    Ok(st) => Some(st),
                    Err(_) => {
                        self.metrics.decode_errors.inc();
                        None
                    }
                },
                _ => None,
            };
            match side {
                Side::Exposure => match st {
                    None => {
                        self.metrics
                            .unmatched_unknown
                            .with_label_values(&["exposure"])
                            .inc();
                    }
                    Some(st) if !st.joined => {
                        let mut line = String::new();
                        st.exposure.write_json(&mut line);
                        unmatched.push(Unmatched {
                            side,
                            mark_id: m.clone(),
                            reason: "no_interaction_in_window",
                            record: Some(line),
                        });
                    }
                    Some(_) => {}
                },
                Side::Interaction => {
                    let parked = match replies.get(n * per + 1) {
                        Some(Value::Array(v)) => v.clone(),
                        _ => Vec::new(),
                    };
                    if parked.is_empty() {
                        continue;
                    }
                    let pttl = match replies.get(n * per + 2) {
                        Some(Value::Int(t)) => *t,
                        _ => -1,
                    };
                    if pttl > self.slack_ms + 1_000 {
                        // Extended since it was scheduled: check when its last push is due.
                        reschedule.push((m.clone(), now + pttl - self.slack_ms));
                        continue;
                    }
                    for p in &parked {
                        let Some(i) = bulk(p).and_then(|b| state::decode_interaction(m, b).ok())
                        else {
                            self.metrics.decode_errors.inc();
                            continue;
                        };
                        let reason = match &st {
                            Some(st)
                                if state::in_window(st.exposure.ts_ms, i.ts_ms, self.window_ms) =>
                            {
                                continue;
                            }
                            Some(_) => "out_of_window",
                            None => "no_exposure",
                        };
                        let mut line = String::new();
                        i.write_json(&mut line);
                        unmatched.push(Unmatched {
                            side,
                            mark_id: m.clone(),
                            reason,
                            record: Some(line),
                        });
                    }
                }
            }
        }
        if !unmatched.is_empty() {
            debug!(
                side = side.as_str(),
                n = unmatched.len(),
                "unmatched events"
            );
        }
        Ok((unmatched, reschedule))
    }
}

/// `{"side":"exposure","reason":"…","mark_id":"…","record":{…}}`: the wrapper
/// written to `topics.unmatched` (the record is the exposure's or the
/// interaction's JSON line; a parked interaction's extras are not kept).
pub fn unmatched_json(u: &Unmatched) -> String {
    let record: serde_json::Value = u
        .record
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "side": u.side.as_str(),
        "reason": u.reason,
        "mark_id": u.mark_id,
        "record": record,
    })
    .to_string()
}

/// Periodically samples DBSIZE and used_memory into the state-size gauges.
pub async fn sample_redis(
    store: Arc<Store>,
    metrics: Metrics,
    every: Duration,
    shutdown: Arc<AtomicBool>,
) {
    let mut next = Instant::now();
    while !shutdown.load(Ordering::Acquire) {
        if Instant::now() >= next {
            next = Instant::now() + every;
            match store.stats().await {
                Ok((keys, mem)) => {
                    metrics.redis_keys.set(keys as i64);
                    metrics.redis_used_memory_bytes.set(mem as i64);
                }
                Err(e) => warn!(error = %e, "sampling Redis size failed"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
