//! Counting (and optionally emitting) events that found no partner within the
//! window.
//!
//! Every batch appends its mark_ids to the due lists of the bucket of
//! `now + window` (`jd:x:<shard>:<bucket>` for exposures, `jd:i:…` for
//! interactions). Every `sweep_interval_ms` each worker tries, per side and
//! shard, to take a short lock (`SET NX PX`, renewed by its holder before
//! every chunk; a holder that lost it stops before writing more); the holder
//! walks the buckets that end before the *horizon* — the other side's topic's
//! least partition progress, minus `unmatched_slack_ms` ([`crate::progress`]):
//! a lagging, restarting or rebuilding partner side delays the sweep instead
//! of letting it count an event whose partner is still coming —
//! from its cursor (`jd:cur:…`) on, reads each list
//! in chunks (`LRANGE`), checks each mark_id with one script call (pipelined:
//! one round trip per chunk), produces the unmatched events when
//! `emit_unmatched` is on, trims the chunk (`LTRIM`) and advances the cursor:
//!
//! * exposure ([`SWEEP_EXPOSURE_LUA`](crate::state::SWEEP_EXPOSURE_LUA)): a
//!   state still open (no interaction within the window) is marked *counted*
//!   and counted in `unmatched_total{side="exposure"}`; a state already expired
//!   counts in `unmatched_unknown_total` (the sweeper was late by more than the
//!   TTL slack);
//! * interactions ([`SWEEP_PARKED_LUA`](crate::state::SWEEP_PARKED_LUA)): once a
//!   park list got no push for a window (its TTL is down to the slack), every
//!   entry parked since the last marker that does not fall within the window
//!   of the stored exposure counts in `unmatched_total{side="interaction"}`
//!   (reason `no_exposure` or `out_of_window`), and a marker is appended. A
//!   list pushed to since is left to the due entry of that later push.
//!
//! The marks make the counts once-only (replays and repeated due entries are
//! not counted again). Emission is at most once: a worker killed between
//! marking and producing loses those unmatched events (Kafka being down is
//! retried). Interactions that found their exposure outside the window on
//! arrival are counted at once in `out_of_window_total{side="interaction"}`,
//! not here.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::backoff::Backoff;
use redis::Value;
use tracing::{debug, warn};

use crate::metrics::Metrics;
use crate::output::{OutRecord, Output};
use crate::progress;
use crate::state::{self, Keys, Side, DUE_BUCKET_MS, DUE_SHARDS};
use crate::store::{bulk, Commands, Store, StoreError};

pub struct Sweeper {
    pub store: Arc<Store>,
    pub output: Arc<Output>,
    pub metrics: Metrics,
    pub keys: Keys,
    pub window_ms: i64,
    pub slack_ms: i64,
    /// Allowance for events reaching Kafka after their event time
    /// (`joiner.unmatched_slack_ms`).
    pub unmatched_slack_ms: i64,
    /// Progress hashes ([`crate::progress`]) of the exposure and the
    /// interaction topic.
    pub progress_keys: [String; 2],
    pub interval: Duration,
    pub batch: usize,
    pub emit_topic: Option<String>,
    /// Identifies this process's locks.
    pub token: String,
}

/// An unmatched event found by a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Unmatched {
    pub side: Side,
    pub mark_id: String,
    pub reason: &'static str,
    /// The record's JSON line (when decodable).
    pub record: Option<String>,
}

/// One command as a round trip of its own.
pub fn one(key: &str, cmd: redis::Cmd) -> Commands {
    let mut c = Commands::new();
    c.push(key.as_bytes(), cmd);
    c
}

impl Sweeper {
    /// Sweeps every `interval` until `shutdown`.
    pub async fn run(self, shutdown: Arc<AtomicBool>) {
        let (metrics, interval) = (self.metrics.clone(), self.interval);
        run_passes(interval, &metrics, &shutdown, |sd| self.pass(sd)).await
    }

    fn lock_ms(&self) -> u64 {
        (self.interval.as_millis() as u64 * 3).max(30_000)
    }

    /// The horizon of `side`'s due entries: the partner topic's least
    /// progress (never after now) minus `unmatched_slack_ms`.
    async fn horizon(&self, side: Side) -> Result<i64, StoreError> {
        let key = &self.progress_keys[match side {
            Side::Exposure => 1,
            Side::Interaction => 0,
        }];
        progress::read_horizon(&self.store, key, self.unmatched_slack_ms).await
    }

    /// Extends our lock on `lock`; an error if it is no longer ours (another
    /// worker took it after it expired): the sweep stops before writing more.
    async fn renew(&self, lock: &str) -> Result<(), StoreError> {
        let ms = self.lock_ms().to_string();
        let c = state::evalsha(
            &self.store.scripts.renew,
            &[lock.as_bytes()],
            &[self.token.as_bytes(), ms.as_bytes()],
        );
        match self.store.exec(&one(lock, c)).await?.pop() {
            Some(Value::Int(1)) => Ok(()),
            other => Err(StoreError {
                kind: "lock_lost",
                detail: format!("sweep lock {lock} no longer ours ({other:?})"),
            }),
        }
    }

    /// One pass over every side and shard whose lock we get.
    pub async fn pass(&self, shutdown: &AtomicBool) -> Result<usize, StoreError> {
        let lock_ms = self.lock_ms();
        let mut found = 0;
        for side in [Side::Exposure, Side::Interaction] {
            let horizon = self.horizon(side).await?;
            for shard in 0..DUE_SHARDS {
                if shutdown.load(Ordering::Acquire) {
                    return Ok(found);
                }
                let lock = self.keys.lock(side, shard);
                let mut set = redis::cmd("SET");
                set.arg(&lock)
                    .arg(&self.token)
                    .arg("NX")
                    .arg("PX")
                    .arg(lock_ms);
                if !matches!(
                    self.store.exec(&one(&lock, set)).await?.first(),
                    Some(Value::Okay)
                ) {
                    continue;
                }
                let res = self
                    .sweep_shard(side, shard, horizon, &lock, shutdown)
                    .await;
                let unlock = state::evalsha(
                    &self.store.scripts.unlock,
                    &[lock.as_bytes()],
                    &[self.token.as_bytes()],
                );
                let _ = self.store.exec(&one(&lock, unlock)).await;
                found += res?;
            }
        }
        Ok(found)
    }

    /// Sweeps the due buckets of one side and shard that end before
    /// `horizon`, from the cursor on, holding `lock`.
    async fn sweep_shard(
        &self,
        side: Side,
        shard: u32,
        horizon: i64,
        lock: &str,
        shutdown: &AtomicBool,
    ) -> Result<usize, StoreError> {
        let last_due = progress::last_sweepable_bucket(horizon, DUE_BUCKET_MS);
        let oldest = last_due - (self.window_ms + self.slack_ms) / DUE_BUCKET_MS - 2;
        let cur_key = self.keys.cursor(side, shard);
        let mut get = redis::cmd("GET");
        get.arg(&cur_key);
        let cursor = match self.store.exec(&one(&cur_key, get)).await?.pop() {
            Some(Value::BulkString(b)) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse::<i64>().ok()),
            _ => None,
        };
        let first = cursor.map_or(oldest, |c| (c + 1).max(oldest));
        if first > last_due {
            return Ok(0);
        }
        // Which of the candidate buckets hold anything (one round trip).
        let mut c = Commands::new();
        for b in first..=last_due {
            let key = self.keys.due(side, shard, b);
            let mut llen = redis::cmd("LLEN");
            llen.arg(&key);
            c.push(key.as_bytes(), llen);
        }
        let lens = self.store.exec(&c).await?;
        let mut found = 0;
        for (b, len) in (first..=last_due).zip(lens) {
            if matches!(len, Value::Int(n) if n > 0) {
                found += self
                    .sweep_bucket(side, &self.keys.due(side, shard, b), lock, shutdown)
                    .await?;
            }
            if shutdown.load(Ordering::Acquire) {
                return Ok(found);
            }
        }
        self.renew(lock).await?;
        let mut set = redis::cmd("SET");
        set.arg(&cur_key)
            .arg(last_due)
            .arg("PX")
            .arg(2 * (self.window_ms + self.slack_ms));
        self.store.exec(&one(&cur_key, set)).await?;
        Ok(found)
    }

    async fn sweep_bucket(
        &self,
        side: Side,
        key: &str,
        lock: &str,
        shutdown: &AtomicBool,
    ) -> Result<usize, StoreError> {
        let mut found = 0;
        loop {
            let mut lr = redis::cmd("LRANGE");
            lr.arg(key).arg(0).arg(self.batch as i64 - 1);
            let chunk: Vec<String> = match self.store.exec(&one(key, lr)).await?.pop() {
                Some(Value::Array(v)) => v
                    .iter()
                    .filter_map(|m| bulk(m).map(|b| String::from_utf8_lossy(b).into_owned()))
                    .collect(),
                _ => Vec::new(),
            };
            if chunk.is_empty() {
                return Ok(found);
            }
            // Marks, produces and trims only while the lock is ours (a
            // chunk's produce retries can outlast it).
            self.renew(lock).await?;
            let mut seen = HashSet::new();
            let members: Vec<&str> = chunk
                .iter()
                .map(String::as_str)
                .filter(|m| seen.insert(*m))
                .collect();
            let unmatched = self.check(side, &members).await?;
            if let Some(topic) = &self.emit_topic {
                produce_unmatched(&self.output, topic, &unmatched, shutdown).await?;
            }
            let mut trim = redis::cmd("LTRIM");
            trim.arg(key).arg(chunk.len()).arg(-1);
            self.store.exec(&one(key, trim)).await?;
            for u in &unmatched {
                self.metrics
                    .unmatched
                    .with_label_values(&[u.side.as_str()])
                    .inc();
            }
            found += unmatched.len();
            if chunk.len() < self.batch || shutdown.load(Ordering::Acquire) {
                return Ok(found);
            }
        }
    }

    /// Checks and marks the due mark_ids (one round trip); returns the unmatched events.
    async fn check(&self, side: Side, members: &[&str]) -> Result<Vec<Unmatched>, StoreError> {
        let mut c = Commands::new();
        let slack = self.slack_ms.to_string();
        for m in members {
            let (kx, kp) = (self.keys.exposure(m), self.keys.parked(m));
            let cmd = match side {
                Side::Exposure => {
                    state::evalsha(&self.store.scripts.sweep_exposure, &[kx.as_bytes()], &[])
                }
                Side::Interaction => state::evalsha(
                    &self.store.scripts.sweep_parked,
                    &[kx.as_bytes(), kp.as_bytes()],
                    &[slack.as_bytes()],
                ),
            };
            c.push(kx.as_bytes(), cmd);
        }
        let replies = self.store.exec(&c).await?;
        let mut unmatched = Vec::new();
        for (m, reply) in members.iter().zip(&replies) {
            match (side, reply) {
                (_, Value::ServerError(e)) => {
                    self.metrics
                        .redis_errors
                        .with_label_values(&["command"])
                        .inc();
                    warn!(mark_id = m, error = ?e, "sweeper script failed");
                }
                (Side::Exposure, Value::BulkString(st)) => {
                    let record = state::decode_exposure(m, st).ok().map(|st| {
                        let mut line = String::new();
                        st.exposure.write_json(&mut line);
                        line
                    });
                    unmatched.push(Unmatched {
                        side,
                        mark_id: m.to_string(),
                        reason: "no_interaction_in_window",
                        record,
                    });
                }
                (Side::Exposure, Value::Int(0)) => {
                    self.metrics
                        .unmatched_unknown
                        .with_label_values(&["exposure"])
                        .inc();
                }
                (Side::Interaction, Value::Array(items))
                    if matches!(items.first(), Some(Value::Int(1))) =>
                {
                    let st = items
                        .get(1)
                        .and_then(bulk)
                        .filter(|b| !b.is_empty())
                        .and_then(|b| state::decode_exposure(m, b).ok());
                    for p in items.iter().skip(2).filter_map(bulk) {
                        let Ok(i) = state::decode_interaction(m, p) else {
                            self.metrics.decode_errors.inc();
                            continue;
                        };
                        let reason = match &st {
                            Some(st)
                                if state::in_window(st.exposure.ts_ms, i.ts_ms, self.window_ms) =>
                            {
                                continue
                            }
                            Some(_) => "out_of_window",
                            None => "no_exposure",
                        };
                        let mut line = String::new();
                        i.write_json(&mut line);
                        unmatched.push(Unmatched {
                            side,
                            mark_id: m.to_string(),
                            reason,
                            record: Some(line),
                        });
                    }
                }
                _ => {}
            }
        }
        if !unmatched.is_empty() {
            debug!(
                side = side.as_str(),
                n = unmatched.len(),
                "unmatched events"
            );
        }
        Ok(unmatched)
    }
}

/// Calls `pass` every `interval` until `shutdown`, timing and counting the
/// passes (a failed pass is retried by the next one).
pub async fn run_passes<'a, F, Fut>(
    interval: Duration,
    metrics: &Metrics,
    shutdown: &'a AtomicBool,
    pass: F,
) where
    F: Fn(&'a AtomicBool) -> Fut,
    Fut: std::future::Future<Output = Result<usize, StoreError>>,
{
    let mut next = Instant::now() + interval;
    while !shutdown.load(Ordering::Acquire) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if Instant::now() < next {
            continue;
        }
        let t0 = Instant::now();
        if let Err(e) = pass(shutdown).await {
            debug!(error = %e, "sweep pass failed; the next pass retries");
        }
        metrics.sweeps.inc();
        metrics.sweep_seconds.observe(t0.elapsed().as_secs_f64());
        next = Instant::now() + interval;
    }
}

/// Produces unmatched events to `topic`, retrying with backoff (until shutdown).
pub async fn produce_unmatched(
    output: &Output,
    topic: &str,
    unmatched: &[Unmatched],
    shutdown: &AtomicBool,
) -> Result<(), StoreError> {
    let mut records: Vec<OutRecord> = unmatched
        .iter()
        .map(|u| OutRecord {
            topic: topic.to_owned(),
            key: u.mark_id.clone(),
            payload: unmatched_json(u),
        })
        .collect();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    while !records.is_empty() {
        records = output.send_all(records).await;
        if records.is_empty() {
            break;
        }
        if shutdown.load(Ordering::Acquire) {
            warn!(
                lost = records.len(),
                "shutting down: unmatched events not produced"
            );
            return Err(StoreError {
                kind: "produce",
                detail: "producing unmatched events failed".into(),
            });
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
    Ok(())
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
