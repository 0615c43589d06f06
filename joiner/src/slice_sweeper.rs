//! Unmatched events of the default protocol ([`crate::slices`]), and the
//! expiry of its state: both work on whole slices, so there is no per-event
//! bookkeeping (no due lists, no TTLs).
//!
//! **When a slice is final.** Slice `s` holds event times `[s·W, (s+1)·W)`
//! (W = the window). An exposure of `s` joins interactions up to one window
//! later, so before `(s+2)·W`; an interaction of `s` joins exposures of `s`
//! or `s−1`, all before `(s+1)·W`. Every event reaches Kafka within
//! `unmatched_slack_ms` of its event time, and each side's topic publishes how
//! far all its partitions have been processed ([`crate::progress`]). So:
//!
//! * the **exposures** of `s` are final once the interaction topic's horizon
//!   (least progress, never after now, minus the slack) reached `(s+2)·W`:
//!   those never flagged joined are counted (`no_interaction_in_window`),
//!   emitted with `emit_unmatched`, then flagged *counted* (a later join,
//!   which the horizon rules out unless the slack is exceeded, is counted in
//!   `unmatched_then_joined_total`);
//! * the **parked interactions** of `s` (those whose own slice is `s`) are
//!   final once the exposure topic's horizon reached `(s+1)·W`: those whose
//!   exposure is neither in `s` nor in `s−1` are counted
//!   (`no_exposure_in_window`: there is none, or it is more than a window
//!   older), and those whose exposure is there but not in the window
//!   (`out_of_window`; such an interaction parks although it found its
//!   exposure, so that every interaction that joins nothing is reported).
//!
//! Event times may be far behind Kafka's (a backfill, a replay of old
//! traffic): each phase also waits until the partner's horizon passed the
//! phase's last write into the slice (processing time; `<p>jslx` exposures,
//! `<p>jsli` interactions parked at home) — plus a window for exposures — as
//! the Lua protocol's due lists do. A lagging, stopped or rebuilding side
//! holds the sweep back instead of letting it count an event whose partner
//! is still coming. Each phase is recorded per slice (`<p>jsw` exposures,
//! `<p>jswi` interactions, with the last write it covered; a later write
//! reopens it) after its events were produced: a worker dying in between
//! makes the next one sweep the phase again (unmatched events at least once).
//!
//! A slice is dropped whole (`UNLINK` of its hashes) once both its phases and
//! the next slice's interaction phase are done (those interactions look for
//! their exposures in it) and both topics' horizons are a window past the
//! slice's last write of its own events (a late exposure of a lagging
//! consumer needs the interactions parked there), and only if nothing was
//! written into it since the pass read the registries (a replay of a
//! revoked partition's batches, say): state lives about two windows plus the
//! slack.
//!
//! Every `sweep_interval_ms` the worker holding `<p>jsl:lock` (`SET NX PX`,
//! renewed after each phase; a sweep that lost it stops) sweeps, oldest slice
//! first, every phase that is due.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tracing::{debug, info};

use crate::metrics::Metrics;
use crate::output::Output;
use crate::progress;
use crate::slices::{exposure_field, Layout, SliceContent, REG_EXPOSURES, REG_INTERACTIONS};
use crate::state::{self, Side, FLAG_COUNTED, FLAG_OPEN};
use crate::store::{bulk, Commands, Store, StoreError};
use crate::sweeper::{one, produce_unmatched, run_passes, Unmatched};

pub struct SliceSweeper {
    pub store: Arc<Store>,
    pub output: Arc<Output>,
    pub metrics: Metrics,
    pub layout: Layout,
    pub window_ms: i64,
    /// Allowance for events reaching Kafka after their event time
    /// (`joiner.unmatched_slack_ms`).
    pub unmatched_slack_ms: i64,
    /// Progress hashes ([`crate::progress`]) of the exposure and the
    /// interaction topic.
    pub progress_keys: [String; 2],
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

/// What the registries say about the slices.
#[derive(Debug, Default, Clone)]
pub struct Slices {
    /// Every slice written (park copies included) → its last write.
    pub written: BTreeMap<i64, i64>,
    /// Slice → last exposure write / last interaction parked in its own slice.
    pub last_x: BTreeMap<i64, i64>,
    pub last_i: BTreeMap<i64, i64>,
    /// Slice → the last write each phase's sweep covered.
    pub swept_x: BTreeMap<i64, i64>,
    pub swept_i: BTreeMap<i64, i64>,
}

/// What a pass may do with each slice, given the two horizons.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// (slice, last write covered) whose parked interactions are final.
    pub interactions: Vec<(i64, i64)>,
    /// (slice, last write covered) whose exposures are final.
    pub exposures: Vec<(i64, i64)>,
    /// Slices to drop (after the sweeps above).
    pub drop: Vec<i64>,
}

/// Whether a phase still has writes its sweeps did not cover.
fn open(last: &BTreeMap<i64, i64>, swept: &BTreeMap<i64, i64>, s: i64) -> Option<i64> {
    let l = *last.get(&s)?;
    (swept.get(&s).is_none_or(|c| *c < l)).then_some(l)
}

/// The pure part of a pass, from the registries and the horizons of the
/// exposure (`hx`) and interaction (`hi`) topics. A phase is due when both its
/// event-time bound (the slice's events can no longer gain a partner) and
/// its processing-time bound (every partner of its last write was processed:
/// event times far behind Kafka's, as in a backfill, do not make it early)
/// are behind the partner's horizon.
pub fn plan(r: &Slices, hx: i64, hi: i64, window_ms: i64) -> Plan {
    let mut p = Plan::default();
    let mut swept_x = r.swept_x.clone();
    let mut swept_i = r.swept_i.clone();
    for &s in r.written.keys() {
        if let Some(l) = open(&r.last_i, &swept_i, s) {
            if hx >= ((s + 1) * window_ms).max(l) {
                p.interactions.push((s, l));
                swept_i.insert(s, l);
            }
        }
        if let Some(l) = open(&r.last_x, &swept_x, s) {
            if hi >= ((s + 2) * window_ms).max(l + window_ms) {
                p.exposures.push((s, l));
                swept_x.insert(s, l);
            }
        }
    }
    let done_i = |s: i64| open(&r.last_i, &swept_i, s).is_none();
    let done_x = |s: i64| open(&r.last_x, &swept_x, s).is_none();
    for (&s, &any) in &r.written {
        // The slice's own events may still come while either side lags (an
        // exposure of a stopped consumer needs the interactions parked here):
        // both horizons must have passed a window beyond its last write of
        // them (of anything, for a slice of park copies only).
        let own = match (r.last_x.get(&s), r.last_i.get(&s)) {
            (None, None) => any,
            (x, i) => (*x.unwrap_or(&i64::MIN)).max(*i.unwrap_or(&i64::MIN)),
        };
        let quiet = hx >= own + window_ms && hi >= own + window_ms;
        // The next slice's interactions look for their exposures in this one.
        if quiet && done_x(s) && done_i(s) && done_i(s + 1) {
            p.drop.push(s);
        }
    }
    p
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
        let slack = self.unmatched_slack_ms;
        let hx = progress::read_horizon(&self.store, &self.progress_keys[0], slack).await?;
        let hi = progress::read_horizon(&self.store, &self.progress_keys[1], slack).await?;
        let l = &self.layout;
        let r = Slices {
            written: self.scores(&l.registry()).await?,
            last_x: self.scores(&l.registry_of(REG_EXPOSURES)).await?,
            last_i: self.scores(&l.registry_of(REG_INTERACTIONS)).await?,
            swept_x: self.scores(&l.swept()).await?,
            swept_i: self.scores(&l.swept_interactions()).await?,
        };
        let plan = plan(&r, hx, hi, self.window_ms);
        let mut found = 0;
        for &(s, covered) in &plan.interactions {
            if shutdown.load(Ordering::Acquire) {
                return Ok(found);
            }
            found += self.sweep_interactions(s, shutdown).await?;
            self.record(&l.swept_interactions(), s, covered).await?;
        }
        for &(s, covered) in &plan.exposures {
            if shutdown.load(Ordering::Acquire) {
                return Ok(found);
            }
            found += self.sweep_exposures(s, shutdown).await?;
            self.record(&l.swept(), s, covered).await?;
        }
        for &s in &plan.drop {
            // Written since the registries were read: its new entries were
            // in no sweep; a later pass decides.
            let reg = l.registry();
            let mut z = redis::cmd("ZSCORE");
            z.arg(&reg).arg(s);
            let now = self.store.exec(&one(&reg, z)).await?.pop();
            if now.as_ref().and_then(int_of) != r.written.get(&s).copied() {
                continue;
            }
            self.drop_slice(s).await?;
        }
        Ok(found)
    }

    /// Records a phase of slice `s` as done up to the write `covered`, then
    /// renews the lock: an error if it is no longer ours (the pass stops
    /// before writing more).
    async fn record(&self, key: &str, s: i64, covered: i64) -> Result<(), StoreError> {
        let mut c = redis::cmd("ZADD");
        c.arg(key).arg(covered).arg(s);
        self.store.exec(&one(key, c)).await?;
        let lock = self.layout.lock();
        let ms = self.lock_ms().to_string();
        let c = state::evalsha(
            &self.store.scripts.renew,
            &[lock.as_bytes()],
            &[self.token.as_bytes(), ms.as_bytes()],
        );
        match self.store.exec(&one(&lock, c)).await?.pop() {
            Some(Value::Int(1)) => Ok(()),
            other => Err(StoreError {
                kind: "lock_lost",
                detail: format!("sweep lock {lock} no longer ours ({other:?})"),
            }),
        }
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
        let l = &self.layout;
        for key in [
            l.registry(),
            l.registry_of(REG_EXPOSURES),
            l.registry_of(REG_INTERACTIONS),
            l.swept(),
            l.swept_interactions(),
        ] {
            let mut z = redis::cmd("ZREM");
            z.arg(&key).arg(s);
            c.push(key.as_bytes(), z);
        }
        self.store.exec(&c).await?;
        info!(slice = s, "join state slice swept and dropped");
        Ok(())
    }

    async fn content(&self, s: i64) -> Result<SliceContent, StoreError> {
        let mut content = SliceContent::default();
        self.per_bucket(s, "HGETALL", |v| content.add(v)).await?;
        Ok(content)
    }

    /// Produces (with `emit_unmatched`) and counts unmatched events.
    async fn report(
        &self,
        unmatched: &[Unmatched],
        shutdown: &AtomicBool,
    ) -> Result<usize, StoreError> {
        if let Some(topic) = &self.emit_topic {
            produce_unmatched(&self.output, topic, unmatched, shutdown).await?;
        }
        for u in unmatched {
            self.metrics
                .unmatched
                .with_label_values(&[u.side.as_str()])
                .inc();
        }
        Ok(unmatched.len())
    }

    /// The exposures of a final slice never flagged joined: reported, then
    /// flagged counted.
    async fn sweep_exposures(&self, s: i64, shutdown: &AtomicBool) -> Result<usize, StoreError> {
        let content = self.content(s).await?;
        let mut unmatched = Vec::new();
        let mut flags = vec![Commands::new()];
        for (m, st) in &content.exposures {
            if st.first() != Some(&FLAG_OPEN) {
                continue;
            }
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
            let key = self.layout.hash(self.layout.bucket_of(m), s);
            let mut f = Vec::new();
            exposure_field(m, &mut f);
            let mut v = st.clone();
            v[0] = FLAG_COUNTED;
            let mut c = redis::cmd("HSET");
            c.arg(&key).arg(f).arg(v);
            if flags.last().is_some_and(|l| l.len() >= self.batch.max(1)) {
                flags.push(Commands::new());
            }
            flags.last_mut().expect("one").push(key.as_bytes(), c);
        }
        let n = self.report(&unmatched, shutdown).await?;
        for c in flags.iter().filter(|c| !c.is_empty()) {
            self.store.exec(c).await?;
        }
        debug!(slice = s, unmatched = n, "slice's exposures swept");
        Ok(n)
    }

    /// The interactions parked in their own slice `s` that join nothing.
    async fn sweep_interactions(&self, s: i64, shutdown: &AtomicBool) -> Result<usize, StoreError> {
        let content = self.content(s).await?;
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
        let mut unmatched = Vec::new();
        for i in home {
            let st = content
                .exposures
                .get(i.mark_id.as_ref())
                .or_else(|| before.get(i.mark_id.as_ref()))
                .and_then(|b| state::decode_exposure(&i.mark_id, b).ok());
            let reason = match &st {
                Some(x) if state::in_window(x.exposure.ts_ms, i.ts_ms, self.window_ms) => continue,
                Some(_) => "out_of_window",
                None => "no_exposure_in_window",
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
        let n = self.report(&unmatched, shutdown).await?;
        debug!(slice = s, unmatched = n, "slice's interactions swept");
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: i64 = 1_000;

    fn map(v: &[(i64, i64)]) -> BTreeMap<i64, i64> {
        v.iter().copied().collect()
    }

    /// Live data: slice 5's exposures written until 5.9 W, its own
    /// interactions parked until 5.95 W; slice 6 begun.
    fn live() -> Slices {
        Slices {
            written: map(&[(5, 6_500), (6, 6_100)]),
            last_x: map(&[(5, 5_900), (6, 6_100)]),
            last_i: map(&[(5, 5_950), (6, 6_100)]),
            ..Slices::default()
        }
    }

    #[test]
    fn interactions_wait_for_the_exposure_side_and_exposures_for_the_interaction_side() {
        let r = live();
        // Exposure side processed to 6.5 W, interaction side to 6.9 W:
        // slice 5's interactions are final (their exposures are before 6 W),
        // slice 5's exposures are not (interactions up to 7 W may join them).
        let p = plan(&r, 6_500, 6_900, W);
        assert_eq!(p.interactions, vec![(5, 5_950)]);
        assert!(p.exposures.is_empty() && p.drop.is_empty());
        // A lagging interaction side holds the exposures back however late it is.
        assert!(plan(&r, 99_000, 6_999, W).exposures.is_empty());
        assert_eq!(plan(&r, 99_000, 7_000, W).exposures, vec![(5, 5_900)]);
    }

    #[test]
    fn event_times_far_behind_processing_time_wait_for_the_last_write() {
        // A backfill: slice 5 written now (at 50 W) with old event times. The
        // event-time bounds are long passed; the last write is not.
        let r = Slices {
            written: map(&[(5, 50_000)]),
            last_x: map(&[(5, 50_000)]),
            last_i: map(&[(5, 50_000)]),
            ..Slices::default()
        };
        let p = plan(&r, 50_000 - 1, 50_999, W);
        assert!(p.interactions.is_empty() && p.exposures.is_empty() && p.drop.is_empty());
        let p = plan(&r, 50_000, 51_000, W);
        assert_eq!(p.interactions, vec![(5, 50_000)]);
        assert_eq!(p.exposures, vec![(5, 50_000)]);
        // Kept until the exposure side, too, is a window past the last write:
        // an exposure of a lagging consumer may still need its parked partners.
        assert!(p.drop.is_empty());
        assert_eq!(plan(&r, 51_000, 51_000, W).drop, vec![5]);
    }

    #[test]
    fn a_slice_is_dropped_only_after_the_next_slices_interactions_were_swept() {
        let mut r = live();
        r.swept_x = map(&[(5, 5_900)]);
        r.swept_i = map(&[(5, 5_950)]);
        // Slice 5 done in both phases, slice 6's interactions not yet: keep 5
        // (they look for their exposures in it).
        assert!(plan(&r, 6_999, 7_000, W).drop.is_empty());
        let p = plan(&r, 7_000, 7_000, W);
        assert_eq!(p.interactions, vec![(6, 6_100)]);
        assert_eq!(p.drop, vec![5]);
        // Writes after a sweep reopen its phase; swept phases are not planned again.
        r.last_x.insert(5, 5_990);
        let p = plan(&r, 6_999, 7_000, W);
        assert_eq!(p.exposures, vec![(5, 5_990)]);
        r.swept_x.insert(5, 5_990);
        let p = plan(&r, 6_999, 7_000, W);
        assert!(p.interactions.is_empty() && p.exposures.is_empty() && p.drop.is_empty());
    }
}
