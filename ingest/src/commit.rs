//! Which offset of a partition may be committed, and committing it.
//!
//! A partition's messages go to several blocks (one per destination, and a
//! destination may have several blocks in flight), which finish in any
//! order. Each block that holds rows of the partition is *outstanding* for it
//! from its first row until it was written; the committable offset is the
//! smallest first offset among the outstanding blocks, or the next offset to
//! handle when none is. So an offset is committed only when every message
//! below it was acknowledged by every destination it went to (or skipped as
//! already stored).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tracing::warn;

use crate::metrics::Metrics;

/// A partition as seen by the consumer thread, the sink tasks and the
/// rebalance callback.
#[derive(Debug)]
pub struct PartShared {
    /// Set when the partition is revoked: no INSERT holding its rows starts
    /// afterwards (its rows are left out of every later attempt).
    pub revoked: AtomicBool,
    /// INSERTs holding rows of this partition being sent right now: a
    /// revocation waits for them (bounded) before releasing the partition.
    pub writing: AtomicUsize,
    /// Next offset to handle (every message below was handled); -1 = none yet.
    handled_next: AtomicI64,
    /// (block id, first offset of this partition in it) of every block not
    /// yet written.
    outstanding: Mutex<Vec<(u64, i64)>>,
}

impl Default for PartShared {
    fn default() -> Self {
        PartShared {
            revoked: AtomicBool::new(false),
            writing: AtomicUsize::new(0),
            handled_next: AtomicI64::new(-1),
            outstanding: Mutex::new(Vec::new()),
        }
    }
}

impl PartShared {
    /// Block `block` now holds rows of this partition, the first at `offset`.
    /// Called before the message is marked handled.
    pub fn hold(&self, block: u64, offset: i64) {
        self.outstanding
            .lock()
            .expect("outstanding lock")
            .push((block, offset));
    }

    /// Block `block` was written (every row of this partition in it is stored).
    pub fn release(&self, block: u64) {
        let mut o = self.outstanding.lock().expect("outstanding lock");
        if let Some(i) = o.iter().position(|(b, _)| *b == block) {
            o.swap_remove(i);
        }
    }

    /// Every message below `next` was handled.
    pub fn handled(&self, next: i64) {
        self.handled_next.store(next, Ordering::Release);
    }

    /// The offset to commit: everything below it is acknowledged; -1 = nothing yet.
    pub fn committable(&self) -> i64 {
        let handled = self.handled_next.load(Ordering::Acquire);
        let o = self.outstanding.lock().expect("outstanding lock");
        o.iter().map(|(_, off)| *off).fold(handled, i64::min)
    }

    /// Marks an INSERT holding this partition's rows as started, unless the
    /// partition was revoked (then returns false and nothing is marked).
    ///
    /// `SeqCst` on both sides (here and in the revocation, which stores
    /// `revoked` and then reads `writing`): either the revocation sees this
    /// INSERT and waits for it, or this sees the revocation and leaves the
    /// partition out.
    pub fn start_writing(&self) -> bool {
        self.writing.fetch_add(1, Ordering::SeqCst);
        if self.revoked.load(Ordering::SeqCst) {
            self.writing.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    pub fn stop_writing(&self) {
        self.writing.fetch_sub(1, Ordering::SeqCst);
    }

    pub fn revoke(&self) {
        self.revoked.store(true, Ordering::SeqCst);
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::SeqCst)
    }

    pub fn is_writing(&self) -> bool {
        self.writing.load(Ordering::SeqCst) > 0
    }
}

/// Commits the committable offset of every given partition that has one and
/// moved past `last` (what was committed before, when known). Returns
/// whether the commit succeeded (or there was nothing to do).
pub fn commit<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    parts: &[(&str, i32, &Arc<PartShared>, i64)],
    metrics: &Metrics,
    mode: CommitMode,
) -> Vec<i64> {
    let mut tpl = TopicPartitionList::new();
    let mut next = Vec::with_capacity(parts.len());
    for (topic, p, s, last) in parts {
        let n = s.committable();
        next.push(n.max(*last));
        if n >= 0 && n > *last {
            let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(n));
        }
    }
    if tpl.count() == 0 {
        return next;
    }
    match consumer.commit(&tpl, mode) {
        Ok(()) => {
            metrics.commits.inc();
            next
        }
        Err(e) => {
            metrics.commit_errors.inc();
            warn!(error = %e, "offset commit failed; will retry");
            parts.iter().map(|(_, _, _, last)| *last).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committable_waits_for_the_oldest_outstanding_block() {
        let s = PartShared::default();
        assert_eq!(s.committable(), -1);
        // Offsets 10..=12 to block 1 (requests), 11 also to block 2 (dead
        // letters), 13 skipped as stored.
        s.hold(1, 10);
        s.hold(2, 11);
        s.handled(14);
        assert_eq!(s.committable(), 10);
        s.release(2); // the later block finished first
        assert_eq!(s.committable(), 10);
        s.release(1);
        assert_eq!(s.committable(), 14);
        s.release(7); // unknown: ignored
        assert_eq!(s.committable(), 14);
    }

    #[test]
    fn a_revoked_partition_starts_no_write() {
        let s = PartShared::default();
        assert!(s.start_writing());
        assert!(s.is_writing());
        s.revoke();
        assert!(!s.start_writing());
        s.stop_writing();
        assert!(!s.is_writing());
    }
}
