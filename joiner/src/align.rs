//! Catch-up alignment: interactions do not run ahead of exposures.
//!
//! In a bulk catch-up (a backlog, a restart after an outage, the benchmark's
//! pre-loaded topics) the two topics are fetched independently, and the
//! interaction topic, which is smaller, runs ahead of the exposure topic: an
//! interaction whose exposure is still unread parks (two slices, several
//! commands and two stored copies) instead of finding it (one `HGET`). The
//! join is symmetric, so either order is *correct*; this only saves work.
//!
//! Each consumer thread pauses an interaction partition whose last Kafka
//! timestamp is ahead of the *exposure frontier* and resumes it once the
//! frontier is [`RESUME_LEAD_MS`] past it (or there is no frontier). The
//! frontier ([`Frontier::get`]) is the smallest Kafka timestamp *written to
//! Redis* (its batch done: an exposure still in a batch in flight is not
//! there for an interaction yet) over the process's exposure partitions that
//! hold it: with messages taken but not written (at most [`PENDING_FOR`]);
//! or behind their (cached) high watermark with a message taken within
//! [`ACTIVE_FOR`]; or newly assigned and not fetched yet (at most
//! [`FIRST_FETCH_HOLD`]). A caught-up
//! (live), idle or stalled exposure partition never holds interactions back,
//! so live traffic is not delayed and nothing waits for long. Exposures are
//! never paused.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::rebuild::Tp;

/// An exposure partition that delivered nothing for this long does not hold
/// the frontier.
pub const ACTIVE_FOR: Duration = Duration::from_millis(500);
/// A paused interaction partition resumes once the exposure frontier is this
/// far past its last message (hysteresis: fewer pause/resume cycles).
pub const RESUME_LEAD_MS: i64 = 300;
/// Messages taken but not written hold the frontier at most this long after
/// the last one was taken (a batch given up, e.g. on shutdown, is never
/// written; a stalled one pauses everything anyway).
pub const PENDING_FOR: Duration = Duration::from_secs(10);
/// A newly assigned exposure partition holds interactions back until its
/// first message, for at most this long (its first fetch; an empty or
/// caught-up partition then stops holding).
pub const FIRST_FETCH_HOLD: Duration = Duration::from_secs(2);
/// How often a thread re-evaluates its pauses.
pub const TICK: Duration = Duration::from_millis(5);

/// The process's exposure partitions' read positions (shared by threads).
#[derive(Default)]
pub struct Frontier {
    parts: Mutex<HashMap<Tp, Pos>>,
}

#[derive(Debug, Clone, Copy)]
struct Pos {
    /// Kafka timestamp of the last message taken (ms).
    ts: i64,
    /// When it was taken.
    at: Instant,
    /// More messages in the partition than written (below the high watermark).
    behind: bool,
    /// Messages taken into a batch but not written yet: holds the frontier
    /// however long the batch takes.
    pending: bool,
    /// Assigned, nothing taken yet: holds the frontier until then.
    hold_until: Option<Instant>,
}

impl Frontier {
    /// Records an exposure partition's last message.
    pub fn update(&self, tp: &Tp, ts: i64, at: Instant, behind: bool, pending: bool) {
        self.parts.lock().expect("frontier lock").insert(
            tp.clone(),
            Pos {
                ts,
                at,
                behind,
                pending,
                hold_until: None,
            },
        );
    }

    /// A newly assigned exposure partition: holds the frontier (at the
    /// beginning of time) until its first message is taken, at most
    /// [`FIRST_FETCH_HOLD`].
    pub fn assigned(&self, tp: &Tp, now: Instant) {
        self.parts.lock().expect("frontier lock").insert(
            tp.clone(),
            Pos {
                ts: i64::MIN,
                at: now,
                behind: true,
                pending: false,
                hold_until: Some(now + FIRST_FETCH_HOLD),
            },
        );
    }

    /// Forgets a partition (revoked).
    pub fn remove(&self, tp: &Tp) {
        self.parts.lock().expect("frontier lock").remove(tp);
    }

    /// The smallest last timestamp of the exposure partitions reading a
    /// backlog, if any.
    pub fn get(&self, now: Instant) -> Option<i64> {
        self.parts
            .lock()
            .expect("frontier lock")
            .values()
            .filter(|p| {
                (p.pending && now.saturating_duration_since(p.at) < PENDING_FOR)
                    || p.hold_until.is_some_and(|t| now < t)
                    || (p.behind && now.saturating_duration_since(p.at) < ACTIVE_FOR)
            })
            .map(|p| p.ts)
            .min()
    }
}

/// What to do with an interaction partition whose last message has Kafka
/// timestamp `ts`, given the exposure frontier: `Some(true)` pause,
/// `Some(false)` resume, `None` leave as is.
pub fn decide(paused: bool, ts: i64, frontier: Option<i64>) -> Option<bool> {
    match (paused, frontier) {
        (false, Some(f)) if ts > f => Some(true),
        (true, None) => Some(false),
        (true, Some(f)) if f >= ts + RESUME_LEAD_MS => Some(false),
        _ => None,
    }
}

/// One consumer thread's view: its partitions' last timestamps and what it
/// paused.
pub struct Local {
    /// Per owned partition: last Kafka timestamp taken, when, exposure side.
    pub last: HashMap<Tp, (i64, Instant, bool)>,
    /// Per exposure partition: the last Kafka timestamp *written to Redis*
    /// (its batch done). The frontier is made of these: an exposure taken
    /// into a batch still in flight (this thread's or another's) is not
    /// there for an interaction yet.
    pub written: HashMap<Tp, i64>,
    /// The exposure partitions' last timestamps in the batch in flight.
    inflight: HashMap<Tp, i64>,
    pub paused: HashSet<Tp>,
    pub last_tick: Instant,
}

impl Default for Local {
    fn default() -> Self {
        Local {
            last: HashMap::new(),
            written: HashMap::new(),
            inflight: HashMap::new(),
            paused: HashSet::new(),
            last_tick: Instant::now(),
        }
    }
}

impl Local {
    /// A batch was sealed (holding every message taken so far).
    pub fn sealed(&mut self) {
        self.inflight = self
            .last
            .iter()
            .filter(|(_, (_, _, exposure))| *exposure)
            .map(|(tp, (ts, _, _))| (tp.clone(), *ts))
            .collect();
    }

    /// The batch in flight finished (its writes are in Redis when `ok`).
    pub fn batch_done(&mut self, ok: bool) {
        let done = std::mem::take(&mut self.inflight);
        if ok {
            self.written.extend(done);
        }
    }

    /// A message of `tp` was taken.
    pub fn saw(&mut self, tp: Tp, ts: i64, exposure: bool) {
        self.last.insert(tp, (ts, Instant::now(), exposure));
    }

    /// A partition was revoked or (re)assigned (and resumed).
    pub fn forget(&mut self, tp: &Tp, frontier: &Frontier) {
        self.last.remove(tp);
        self.written.remove(tp);
        self.inflight.remove(tp);
        self.paused.remove(tp);
        frontier.remove(tp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn interactions_wait_for_exposures_with_hysteresis() {
        assert_eq!(decide(false, 1_000, Some(999)), Some(true));
        assert_eq!(decide(false, 1_000, Some(1_000)), None);
        assert_eq!(decide(false, 1_000, None), None);
        assert_eq!(decide(true, 1_000, Some(1_200)), None);
        assert_eq!(
            decide(true, 1_000, Some(1_000 + RESUME_LEAD_MS)),
            Some(false)
        );
        assert_eq!(decide(true, 1_000, None), Some(false));
    }

    #[test]
    fn only_active_partitions_behind_hold_the_frontier() {
        let f = Frontier::default();
        let now = Instant::now();
        let a: Tp = (Arc::from("x"), 0);
        let b: Tp = (Arc::from("x"), 1);
        let c: Tp = (Arc::from("x"), 2);
        f.update(&a, 500, now, true, false);
        f.update(&b, 100, now, false, false); // caught up: live, never holds back
        f.update(&c, 50, now - ACTIVE_FOR * 2, true, false); // idle
        assert_eq!(f.get(now), Some(500));
        f.remove(&a);
        assert_eq!(f.get(now), None);
        // Taken, not written yet (a slow batch): holds however long.
        f.update(&c, 50, now - ACTIVE_FOR * 2, true, true);
        assert_eq!(f.get(now), Some(50));
        assert_eq!(f.get(now + PENDING_FOR), None);
        // Assigned, no message yet: holds until the first fetch, bounded.
        f.remove(&c);
        f.assigned(&a, now - ACTIVE_FOR * 2);
        assert_eq!(f.get(now), Some(i64::MIN));
        assert_eq!(f.get(now + FIRST_FETCH_HOLD), None);
    }
}
