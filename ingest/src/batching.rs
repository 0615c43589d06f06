//! Batching for freshness: rows of every partition a consumer owns gather per
//! destination (one [`Lane`] per table, plus the dead-letter topic) in an open
//! [`Block`]; a block is sealed when its oldest row was appended to Kafka
//! `flush_age_ms` ago, when it has been open `flush_interval_ms`, or when it
//! reached a size cap, and up to `max_inflight_inserts` blocks per destination
//! are written at once.
//!
//! Why by the rows' age (a freshness budget) rather than only a fixed open
//! time: the server's cost is per INSERT (a part per table and per view, then
//! their merges), while freshness is per row. A block that opens when its
//! first row arrives 60 ms after its Kafka append can stay open until that row
//! is `flush_age_ms` old; a row fetched late (the broker's tail) makes its
//! block go out at once. At 20 k events/s this sends about half the INSERTs of
//! a 400 ms open time for the same p99 (bench/README.md). Rows already later
//! than the freshness target cannot be saved by hurrying: a backlog fills
//! blocks for `flush_interval_ms` instead, so catching up stays few, large
//! INSERTs.
//!
//! Why not per partition (as before): a per-partition batch made the server
//! take one small INSERT per partition and table every second, each a part per
//! table and per materialized view, and a partition's latency was the sum of
//! its serial steps (dead letters, then each table in turn). A block per
//! destination sends the same rows in a handful of INSERTs, and no destination
//! waits for another.
//!
//! A block remembers, per row, where its bytes start and which Kafka message
//! it came from, so a retry can send exactly the rows not yet stored (after an
//! ambiguous failure) or leave out the rows of a partition this worker lost.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::commit::PartShared;
use crate::table::Table;

/// Where a block goes: a ClickHouse table, or the dead-letter Kafka topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    Table(Table),
    DeadLetterTopic,
}

/// Number of destinations (five tables and the dead-letter topic).
pub const DESTS: usize = 6;

impl Dest {
    pub const ALL: [Dest; DESTS] = [
        Dest::Table(Table::Request),
        Dest::Table(Table::Exposure),
        Dest::Table(Table::Interaction),
        Dest::Table(Table::Joined),
        Dest::Table(Table::DeadLetter),
        Dest::DeadLetterTopic,
    ];

    pub fn index(self) -> usize {
        match self {
            Dest::Table(t) => t as usize,
            Dest::DeadLetterTopic => 5,
        }
    }

    /// The metrics label: the table name, or `dead_letter_topic`.
    pub fn name(self) -> &'static str {
        match self {
            Dest::Table(t) => t.name(),
            Dest::DeadLetterTopic => "dead_letter_topic",
        }
    }
}

/// A malformed message to publish on the dead-letter topic.
#[derive(Debug)]
pub struct DeadLetter {
    pub reason: &'static str,
    pub error: String,
    pub payload: Vec<u8>,
}

/// One row of a block: where its bytes start and the message it came from.
#[derive(Debug, Clone, Copy)]
pub struct RowRef {
    pub start: u32,
    /// Index into [`Block::parts`].
    pub part: u32,
    pub offset: i64,
    pub kafka_ts_ms: i64,
}

/// One Kafka partition's share of a block.
#[derive(Debug)]
pub struct BlockPart {
    pub topic: Arc<str>,
    pub partition: i32,
    pub shared: Arc<PartShared>,
    pub first_offset: i64,
    pub last_offset: i64,
    pub rows: usize,
    /// Smallest and largest `ts` (ms) of the rows: a primary-key range for
    /// looking the rows themselves up after an ambiguous failure.
    pub ts_range: (i64, i64),
}

/// What one INSERT (or one dead-letter produce) carries.
#[derive(Debug)]
pub struct Block {
    pub dest: Dest,
    /// Unique within the process; names the block in query ids and in the
    /// partitions' outstanding lists.
    pub id: u64,
    buf: Vec<u8>,
    /// The buffer once sealed ([`Block::freeze`]): retries share it, no copy.
    frozen: Bytes,
    pub rows: Vec<RowRef>,
    pub parts: Vec<BlockPart>,
    /// Dead-letter topic blocks only: `letters[i]` is row `i`.
    pub letters: Vec<DeadLetter>,
    letter_bytes: usize,
    pub opened_at: Instant,
    /// Kafka append time of the block's oldest row (ms; `i64::MAX` when empty).
    oldest_append_ms: i64,
}

impl Block {
    pub fn new(dest: Dest, id: u64) -> Self {
        Block {
            dest,
            id,
            buf: Vec::new(),
            frozen: Bytes::new(),
            rows: Vec::new(),
            parts: Vec::new(),
            letters: Vec::new(),
            letter_bytes: 0,
            opened_at: Instant::now(),
            oldest_append_ms: i64::MAX,
        }
    }

    /// Adds a partition to the block (its first row follows); returns its index.
    pub fn add_part(&mut self, topic: Arc<str>, partition: i32, shared: Arc<PartShared>) -> u32 {
        self.parts.push(BlockPart {
            topic,
            partition,
            shared,
            first_offset: i64::MAX,
            last_offset: -1,
            rows: 0,
            ts_range: (i64::MAX, i64::MIN),
        });
        (self.parts.len() - 1) as u32
    }

    /// Starts a row of message `offset` of part `part`; the caller encodes
    /// the row onto the returned buffer.
    pub fn push_row(
        &mut self,
        part: u32,
        offset: i64,
        kafka_ts_ms: i64,
        ts_ms: i64,
    ) -> &mut Vec<u8> {
        let p = &mut self.parts[part as usize];
        p.first_offset = p.first_offset.min(offset);
        p.last_offset = p.last_offset.max(offset);
        p.rows += 1;
        p.ts_range = (p.ts_range.0.min(ts_ms), p.ts_range.1.max(ts_ms));
        self.oldest_append_ms = self.oldest_append_ms.min(kafka_ts_ms);
        self.rows.push(RowRef {
            start: self.buf.len() as u32,
            part,
            offset,
            kafka_ts_ms,
        });
        &mut self.buf
    }

    /// Adds the dead letter of the row just pushed (dead-letter topic blocks).
    pub fn push_letter(&mut self, d: DeadLetter) {
        self.letter_bytes += d.payload.len();
        self.letters.push(d);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.buf.len() + self.frozen.len() + self.letter_bytes
    }

    /// Moves the encoded rows into a shared buffer (no copy): done once, when
    /// the block is handed to the sink.
    pub fn freeze(&mut self) {
        if self.frozen.is_empty() {
            self.frozen = Bytes::from(std::mem::take(&mut self.buf));
        }
    }

    fn data(&self) -> &[u8] {
        if self.frozen.is_empty() {
            &self.buf
        } else {
            &self.frozen
        }
    }

    /// The encoded bytes of row `i`.
    pub fn row_bytes(&self, i: usize) -> &[u8] {
        let data = self.data();
        let start = self.rows[i].start as usize;
        let end = self
            .rows
            .get(i + 1)
            .map_or(data.len(), |r| r.start as usize);
        &data[start..end]
    }

    /// The body of an INSERT of the rows `keep` selects: the frozen buffer
    /// itself when it selects all (a retry sends the same bytes again).
    pub fn body(&self, keep: impl Fn(usize) -> bool) -> Bytes {
        if (0..self.rows.len()).all(&keep) {
            return if self.frozen.is_empty() {
                Bytes::copy_from_slice(&self.buf)
            } else {
                self.frozen.clone()
            };
        }
        let mut out = Vec::with_capacity(self.data().len());
        for i in (0..self.rows.len()).filter(|i| keep(*i)) {
            out.extend_from_slice(self.row_bytes(i));
        }
        Bytes::from(out)
    }

    pub fn is_full(&self, l: &FlushPolicy) -> bool {
        self.rows.len() >= l.max_rows || self.bytes() >= l.max_bytes
    }

    /// Open for `flush_interval`, or its oldest row is `flush_age_ms` old
    /// (since its Kafka append, at wall-clock `now_ms`) and not yet late.
    pub fn is_due(&self, l: &FlushPolicy, now: Instant, now_ms: i64) -> bool {
        if self.rows.is_empty() {
            return false;
        }
        if now.duration_since(self.opened_at) >= l.flush_interval {
            return true;
        }
        let age = now_ms.saturating_sub(self.oldest_append_ms);
        l.flush_age_ms > 0 && age >= l.flush_age_ms && age < l.late_ms
    }
}

/// When a block is sealed and how many are written at once.
#[derive(Debug, Clone, Copy)]
pub struct FlushPolicy {
    pub max_rows: usize,
    pub max_bytes: usize,
    pub flush_interval: Duration,
    /// A block goes out once its oldest row is this old since its Kafka
    /// append (0: off) ...
    pub flush_age_ms: i64,
    /// ... unless that row is this old already (the freshness target): late
    /// rows fill their block for `flush_interval`.
    pub late_ms: i64,
    /// Blocks of one destination being written at once.
    pub max_inflight: usize,
    /// Sealed (full) blocks of one destination waiting for a free slot;
    /// beyond that every partition is paused.
    pub max_queued: usize,
}

/// One destination's blocks on a consumer thread.
#[derive(Debug, Default)]
pub struct Lane {
    pub open: Option<Block>,
    /// Sealed blocks waiting for an INSERT slot.
    pub queued: VecDeque<Block>,
    /// Blocks handed to the sink and not yet finished.
    pub in_flight: usize,
}

/// Every destination's lane, and the block ids.
#[derive(Debug)]
pub struct Lanes {
    pub lanes: [Lane; DESTS],
    pub policy: FlushPolicy,
    next_id: u64,
    id_base: u64,
}

impl Lanes {
    /// `id_base` keeps block ids of different consumer threads apart.
    pub fn new(policy: FlushPolicy, id_base: u64) -> Self {
        Lanes {
            lanes: Default::default(),
            policy,
            next_id: 0,
            id_base,
        }
    }

    /// The open block of `dest` (opened if there is none).
    pub fn open(&mut self, dest: Dest) -> &mut Block {
        let lane = &mut self.lanes[dest.index()];
        if lane.open.is_none() {
            self.next_id += 1;
            lane.open = Some(Block::new(dest, self.id_base + self.next_id));
        }
        lane.open.as_mut().expect("just opened")
    }

    /// The open block of `dest` and partition `tp`'s part index in it, added
    /// (and held in `shared`) on the partition's first row in the block.
    /// `slots` is the partition's (block id, part index) per destination,
    /// kept by the caller so that a row costs no lookup.
    pub fn open_for(
        &mut self,
        dest: Dest,
        slots: &mut [Option<(u64, u32)>; DESTS],
        (topic, partition): &(Arc<str>, i32),
        shared: &Arc<PartShared>,
        offset: i64,
    ) -> (&mut Block, u32) {
        let block = self.open(dest);
        let pi = match slots[dest.index()] {
            Some((id, pi)) if id == block.id => pi,
            _ => {
                let pi = block.add_part(topic.clone(), *partition, shared.clone());
                shared.hold(block.id, offset);
                slots[dest.index()] = Some((block.id, pi));
                pi
            }
        };
        (block, pi)
    }

    /// Seals `dest`'s open block if it is full; it then waits in the queue.
    pub fn seal_if_full(&mut self, dest: Dest) {
        let lane = &mut self.lanes[dest.index()];
        if lane.open.as_ref().is_some_and(|b| b.is_full(&self.policy)) {
            let b = lane.open.take().expect("open");
            lane.queued.push_back(b);
        }
    }

    /// The blocks to write now: queued ones while slots are free, then open
    /// blocks that are due (or everything, when `flush_all`). Adaptive: when
    /// every slot is busy a due block stays open and keeps growing, so a slow
    /// server gets fewer, larger INSERTs instead of a queue of small ones.
    pub fn take_ready(&mut self, now: Instant, now_ms: i64, flush_all: bool) -> Vec<Block> {
        let mut out = Vec::new();
        for lane in &mut self.lanes {
            while lane.in_flight < self.policy.max_inflight {
                if let Some(b) = lane.queued.pop_front() {
                    lane.in_flight += 1;
                    out.push(b);
                } else if lane.open.as_ref().is_some_and(|b| {
                    !b.is_empty() && (flush_all || b.is_due(&self.policy, now, now_ms))
                }) {
                    lane.in_flight += 1;
                    out.push(lane.open.take().expect("open"));
                } else {
                    break;
                }
            }
        }
        out
    }

    /// A block of `dest` finished (written or given up).
    pub fn finished(&mut self, dest: Dest) {
        let lane = &mut self.lanes[dest.index()];
        lane.in_flight = lane.in_flight.saturating_sub(1);
    }

    /// Whether reading must pause: some destination has `max_queued` (at
    /// least one) full blocks waiting for a slot. The block being filled when
    /// the pause takes effect may still fill up and queue, so a lane holds at
    /// most `max_inflight + max_queued + 1` blocks (ARCHITECTURE.md, invariant 4).
    pub fn backpressure(&self) -> bool {
        let limit = self.policy.max_queued.max(1);
        self.lanes.iter().any(|l| l.queued.len() >= limit)
    }

    /// Nothing open, queued or being written.
    pub fn is_idle(&self) -> bool {
        self.lanes.iter().all(|l| {
            l.in_flight == 0 && l.queued.is_empty() && l.open.as_ref().is_none_or(|b| b.is_empty())
        })
    }

    /// Bytes held in open and queued blocks.
    pub fn buffered_bytes(&self) -> usize {
        self.lanes
            .iter()
            .map(|l| {
                l.open.as_ref().map_or(0, |b| b.bytes())
                    + l.queued.iter().map(|b| b.bytes()).sum::<usize>()
            })
            .sum()
    }

    pub fn pending_blocks(&self) -> usize {
        self.lanes
            .iter()
            .map(|l| l.in_flight + l.queued.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> FlushPolicy {
        FlushPolicy {
            max_rows: 3,
            max_bytes: 1 << 20,
            flush_interval: Duration::from_millis(50),
            flush_age_ms: 0,
            late_ms: 2_000,
            max_inflight: 2,
            max_queued: 1,
        }
    }

    fn push(b: &mut Block, part: u32, offset: i64, bytes: &[u8]) {
        b.push_row(part, offset, 1_000 + offset, 2_000 + offset)
            .extend_from_slice(bytes);
    }

    #[test]
    fn body_selects_exact_rows_and_parts_track_ranges() {
        let mut b = Block::new(Dest::Table(Table::Request), 1);
        let p0 = b.add_part("t".into(), 0, Arc::new(PartShared::default()));
        let p1 = b.add_part("t".into(), 1, Arc::new(PartShared::default()));
        push(&mut b, p0, 10, b"aa");
        push(&mut b, p1, 5, b"b");
        push(&mut b, p0, 11, b"ccc");
        assert_eq!(&b.body(|_| true)[..], b"aabccc");
        assert_eq!(&b.body(|i| b.rows[i].part == p0)[..], b"aaccc");
        assert_eq!(&b.body(|i| i == 2)[..], b"ccc");
        assert_eq!(b.row_bytes(1), b"b");
        b.freeze();
        assert_eq!(&b.body(|_| true)[..], b"aabccc");
        assert_eq!(&b.body(|i| i != 1)[..], b"aaccc");
        assert_eq!(b.bytes(), 6);
        let p = &b.parts[p0 as usize];
        assert_eq!((p.first_offset, p.last_offset, p.rows), (10, 11, 2));
        assert_eq!(p.ts_range, (2_010, 2_011));
    }

    #[test]
    fn a_block_goes_out_when_its_oldest_row_is_flush_age_old_unless_already_late() {
        let p = FlushPolicy {
            flush_interval: Duration::from_secs(10),
            flush_age_ms: 800,
            ..policy()
        };
        let mut b = Block::new(Dest::Table(Table::Request), 1);
        let t0 = b.opened_at;
        assert!(!b.is_due(&p, t0, 50_000), "empty");
        let pi = b.add_part("r".into(), 0, Arc::new(PartShared::default()));
        // Rows appended at 10.7 s and 10.0 s (out of order): the oldest counts.
        b.push_row(pi, 1, 10_700, 0);
        b.push_row(pi, 2, 10_000, 0);
        assert!(!b.is_due(&p, t0, 10_799), "oldest row 799 ms old");
        assert!(b.is_due(&p, t0, 10_800), "oldest row 800 ms old");
        assert!(b.is_due(&p, t0, 11_999), "still within the target");
        // Once the oldest row is later than the target, hurrying saves
        // nothing: the block fills until it has been open flush_interval.
        assert!(
            !b.is_due(&p, t0, 12_000),
            "late rows wait for the open time"
        );
        assert!(b.is_due(&p, t0 + Duration::from_secs(10), 12_000));
        // A row from a clock ahead of ours (negative age) waits for the open time too.
        let mut f = Block::new(Dest::Table(Table::Request), 2);
        let pi = f.add_part("r".into(), 0, Arc::new(PartShared::default()));
        f.push_row(pi, 1, 20_000, 0);
        assert!(!f.is_due(&p, f.opened_at, 10_000));
        assert!(f.is_due(&p, f.opened_at + Duration::from_secs(10), 10_000));
        // flush_age_ms = 0: only the open time.
        let off = FlushPolicy {
            flush_age_ms: 0,
            ..p
        };
        assert!(!b.is_due(&off, t0, 10_900));
    }

    #[test]
    fn blocks_flush_by_age_or_size_and_slots_bound_the_writes() {
        let mut l = Lanes::new(policy(), 0);
        let d = Dest::Table(Table::Exposure);
        let t0 = Instant::now();
        let pi = l
            .open(d)
            .add_part("e".into(), 0, Arc::new(PartShared::default()));
        push(l.open(d), pi, 0, b"x");
        assert!(l.take_ready(t0, 0, false).is_empty(), "not due yet");
        let later = t0 + Duration::from_millis(60);
        let ready = l.take_ready(later, 0, false);
        assert_eq!(ready.len(), 1);
        // Two full blocks: one takes the second slot, one waits.
        for round in 0..2 {
            let b = l.open(d);
            let pi = b.add_part("e".into(), 0, Arc::new(PartShared::default()));
            for o in 0..3 {
                push(b, pi, round * 10 + o, b"y");
            }
            l.seal_if_full(d);
        }
        assert!(l.backpressure(), "two queued > max_queued 1");
        assert_eq!(l.take_ready(later, 0, false).len(), 1);
        assert!(l.take_ready(later, 0, true).is_empty(), "both slots busy");
        l.finished(d);
        assert_eq!(l.take_ready(later, 0, false).len(), 1);
        assert!(!l.backpressure());
        assert!(!l.is_idle());
        l.finished(d);
        l.finished(d);
        assert!(l.is_idle());
        assert_eq!(l.pending_blocks(), 0);
    }
}
