//! Unmatched events of the default protocol ([`crate::slices`]), and the
//! expiry of its state: both work on whole slices, so there is no per-event
//! bookkeeping (no due lists, no TTLs).
//!
//! A slice is **final** once nothing was written into it for window + slack
//! (`<p>jsl` holds each slice's last write, processing time): every
//! interaction that can still join one of its exposures, and every exposure
//! that can still join one of its parked interactions, arrives within
//! window + slack of its partner's write (the same assumption the previous
//! protocol's TTLs made; the slack covers lag between the two topics).
//!
//! Every `sweep_interval_ms` the worker holding `<p>jsl:lock` (`SET NX PX`,
//! renewed after each slice) sweeps each final slice not yet swept, oldest
//! first: it reads the slice's hashes (`HGETALL`, pipelined), counts
//! `unmatched_total{side="exposure"}` for exposures whose joined flag was never
//! set, and `unmatched_total{side="interaction"}` for interactions parked in
//! their own slice whose exposure is neither in this slice nor in the one
//! before (reason `no_exposure`) or outside the window (`out_of_window`); with
//! `emit_unmatched` it produces them; then it records the slice as swept
//! (`<p>jsw`). A swept slice is dropped whole (`UNLINK` of its hashes) once the
//! next slice is swept too (its parked interactions may have their exposure in
//! this one) or was never written. An event is declared unmatched only when
//! its slice is final, so a join can no longer change it: no event counted
//! unmatched later joins. A worker dying between producing and recording the
//! slice makes the next one sweep it again (unmatched events at least once).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tracing::{debug, info};

use crate::metrics::Metrics;
use crate::output::Output;
use crate::slices::{exposure_field, Layout, SliceContent};
use crate::state::{self, Side, FLAG_OPEN};
use crate::store::{bulk, Commands, Store, StoreError};
use crate::sweeper::{one, produce_unmatched, run_passes, Unmatched};
use crate::worker::now_ms;

pub struct SliceSweeper {
    pub store: Arc<Store>,
    pub output: Arc<Output>,
    pub metrics: Metrics,
    pub layout: Layout,
    pub window_ms: i64,
    /// Window + slack: how long after its last write a slice is final.
    pub final_after_ms: i64,
    pub interval: Duration,
    /// Commands per round trip.
    pub batch: usize,
    pub emit_topic: Option<String>,
    /// Identifies this process's lock.
    pub token: String,
}

fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::Double(d) => Some(*d as i64),
        _ => None,
    }
}

impl SliceSweeper {
    /// Sweeps every `interval` until `shutdown`.
    pub async fn run(self, shutdown: Arc<AtomicBool>) {
        let (metrics, interval) = (self.metrics.clone(), self.interval);
        run_passes(interval, &metrics, &shutdown, |sd| self.pass(sd)).await
    }

    fn lock_ms(&self) -> u64 {
        (self.interval.as_millis() as u64 * 3).max(30_000)
    }

    /// One pass, if this worker gets the lock; returns the unmatched events found.
    pub async fn pass(&self, shutdown: &AtomicBool) -> Result<usize, StoreError> {
        let lock = self.layout.lock();
        let mut set = redis::cmd("SET");
        set.arg(&lock)
            .arg(&self.token)
            .arg("NX")
            .arg("PX")
            .arg(self.lock_ms());
        if !matches!(
            self.store.exec(&one(&lock, set)).await?.first(),
            Some(Value::Okay)
        ) {
            return Ok(0);
        }
        let res = self.locked_pass(shutdown).await;
        let unlock = state::evalsha(
            &self.store.scripts.unlock,
            &[lock.as_bytes()],
            &[self.token.as_bytes()],
        );
        let _ = self.store.exec(&one(&lock, unlock)).await;
        res
    }

    /// Slice → score of a sorted set.
    async fn scores(&self, key: &str) -> Result<BTreeMap<i64, i64>, StoreError> {
        let mut c = redis::cmd("ZRANGE");
        c.arg(key).arg(0).arg(-1).arg("WITHSCORES");
        let mut out = BTreeMap::new();
        if let Some(Value::Array(items)) = self.store.exec(&one(key, c)).await?.pop() {
            for pair in items.chunks_exact(2) {
                if let (Some(s), Some(t)) = (int_of(&pair[0]), int_of(&pair[1])) {
                    out.insert(s, t);
                }
            }
        }
        Ok(out)
    }

    async fn locked_pass(&self, shutdown: &AtomicBool) -> Result<usize, StoreError> {
        let now = now_ms();
        let written = self.scores(&self.layout.registry()).await?;
        let mut swept: BTreeSet<i64> = self
            .scores(&self.layout.swept())
            .await?
            .into_keys()
            .collect();
        let mut found = 0;
        for (&s, &last) in &written {
            if shutdown.load(Ordering::Acquire) {
                return Ok(found);
            }
            if swept.contains(&s) || last + self.final_after_ms > now {
                continue;
            }
            found += self
                .sweep_slice(s, written.contains_key(&(s - 1)), shutdown)
                .await?;
            let key = self.layout.swept();
            let mut c = redis::cmd("ZADD");
            c.arg(&key).arg(now_ms()).arg(s);
            self.store.exec(&one(&key, c)).await?;
            swept.insert(s);
            self.renew().await?;
        }
        for &s in &swept {
            let next_open = written.contains_key(&(s + 1)) && !swept.contains(&(s + 1));
            if !next_open {
                self.drop_slice(s).await?;
            }
        }
        Ok(found)
    }

    /// Extends our lock (only if we still hold it).
    async fn renew(&self) -> Result<(), StoreError> {
        let lock = self.layout.lock();
        let ms = self.lock_ms().to_string();
        let c = state::evalsha(
            &self.store.scripts.renew,
            &[lock.as_bytes()],
            &[self.token.as_bytes(), ms.as_bytes()],
        );
        self.store.exec(&one(&lock, c)).await?;
        Ok(())
    }

    /// Runs one command per bucket of `slice`, `batch` per round trip.
    async fn per_bucket(
        &self,
        slice: i64,
        cmd: &str,
        mut each: impl FnMut(&Value),
    ) -> Result<(), StoreError> {
        let buckets: Vec<u32> = (0..self.layout.buckets()).collect();
        for chunk in buckets.chunks(self.batch.max(1)) {
            let mut c = Commands::new();
            for b in chunk {
                let key = self.layout.hash(*b, slice);
                let mut r = redis::cmd(cmd);
                r.arg(&key);
                c.push(key.as_bytes(), r);
            }
            for v in self.store.exec(&c).await? {
                each(&v);
            }
        }
        Ok(())
    }

    async fn drop_slice(&self, s: i64) -> Result<(), StoreError> {
        self.per_bucket(s, "UNLINK", |_| {}).await?;
        let mut c = Commands::new();
        for key in [self.layout.registry(), self.layout.swept()] {
            let mut z = redis::cmd("ZREM");
            z.arg(&key).arg(s);
            c.push(key.as_bytes(), z);
        }
        self.store.exec(&c).await?;
        info!(slice = s, "join state slice swept and dropped");
        Ok(())
    }

    /// Counts (and emits) the unmatched events of a final slice.
    async fn sweep_slice(
        &self,
        s: i64,
        previous_exists: bool,
        shutdown: &AtomicBool,
    ) -> Result<usize, StoreError> {
        let mut content = SliceContent::default();
        self.per_bucket(s, "HGETALL", |v| content.add(v)).await?;
        let mut unmatched = Vec::new();
        for (m, st) in &content.exposures {
            if st.first() == Some(&FLAG_OPEN) {
                let record = state::decode_exposure(m, st).ok().map(|x| {
                    let mut line = String::new();
                    x.exposure.write_json(&mut line);
                    line
                });
                unmatched.push(Unmatched {
                    side: Side::Exposure,
                    mark_id: m.clone(),
                    reason: "no_interaction_in_window",
                    record,
                });
            }
        }
        // Interactions parked in their own slice (the copy in the slice
        // before is the other one's business), each once.
        let mut seen = HashSet::new();
        let mut home = Vec::new();
        for (m, p) in &content.parked {
            match state::decode_interaction(m, p) {
                Ok(i) if self.layout.slice_of(i.ts_ms) == s => {
                    if seen.insert((m.clone(), p.clone())) {
                        home.push(i);
                    }
                }
                Ok(_) => {}
                Err(_) => self.metrics.decode_errors.inc(),
            }
        }
        // Their exposures: in this slice, else maybe in the one before.
        let missing: Vec<&str> = home
            .iter()
            .map(|i| i.mark_id.as_ref())
            .filter(|m| !content.exposures.contains_key(*m))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut before = std::collections::HashMap::new();
        if previous_exists {
            for chunk in missing.chunks(self.batch.max(1)) {
                let mut c = Commands::new();
                for m in chunk {
                    let key = self.layout.hash(self.layout.bucket_of(m), s - 1);
                    let mut f = Vec::new();
                    exposure_field(m, &mut f);
                    let mut g = redis::cmd("HGET");
                    g.arg(&key).arg(f);
                    c.push(key.as_bytes(), g);
                }
                for (m, v) in chunk.iter().zip(self.store.exec(&c).await?) {
                    if let Some(b) = bulk(&v) {
                        before.insert(m.to_string(), b.to_vec());
                    }
                }
            }
        }
        for i in home {
            let st = content
                .exposures
                .get(i.mark_id.as_ref())
                .or_else(|| before.get(i.mark_id.as_ref()))
                .and_then(|b| state::decode_exposure(&i.mark_id, b).ok());
            let reason = match &st {
                Some(x) if state::in_window(x.exposure.ts_ms, i.ts_ms, self.window_ms) => continue,
                Some(_) => "out_of_window",
                None => "no_exposure",
            };
            let mut line = String::new();
            i.write_json(&mut line);
            unmatched.push(Unmatched {
                side: Side::Interaction,
                mark_id: i.mark_id.to_string(),
                reason,
                record: Some(line),
            });
        }
        if let Some(topic) = &self.emit_topic {
            produce_unmatched(&self.output, topic, &unmatched, shutdown).await?;
        }
        for u in &unmatched {
            self.metrics
                .unmatched
                .with_label_values(&[u.side.as_str()])
                .inc();
        }
        debug!(slice = s, unmatched = unmatched.len(), "slice swept");
        Ok(unmatched.len())
    }
}
