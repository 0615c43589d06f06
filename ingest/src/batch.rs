//! A batch: the encoded rows of one Kafka partition's consecutive offsets, one
//! buffer per destination table, plus what is needed to acknowledge it
//! (offset range, Kafka timestamps for freshness, dead letters for the DLQ topic).
//!
//! Batches never mix partitions: a batch is the unit of "insert, then commit".

use std::sync::Arc;
use std::time::Instant;

use crate::table::Table;

/// Rows encoded for one table.
#[derive(Debug, Default)]
pub struct TableRows {
    pub rows: usize,
    pub bytes: Vec<u8>,
    /// Smallest and largest value of the rows' `ts` column (ms): lets
    /// `Sink::settle` look for the rows themselves with a primary-key range.
    pub ts_range: Option<(i64, i64)>,
    /// Smallest and largest Kafka timestamp (ms) of the rows' messages: tells
    /// this batch's rows from an earlier incarnation's at the same offsets.
    pub kafka_ts_range: (i64, i64),
}

impl TableRows {
    /// Records one row's `ts` and its message's Kafka timestamp (ms).
    pub fn note_ts(&mut self, ts_ms: i64, kafka_ts_ms: i64) {
        (self.ts_range, self.kafka_ts_range) = match self.ts_range {
            None => (Some((ts_ms, ts_ms)), (kafka_ts_ms, kafka_ts_ms)),
            Some((lo, hi)) => (
                Some((lo.min(ts_ms), hi.max(ts_ms))),
                (
                    self.kafka_ts_range.0.min(kafka_ts_ms),
                    self.kafka_ts_range.1.max(kafka_ts_ms),
                ),
            ),
        };
    }
}

/// A malformed message to publish on the dead-letter topic.
#[derive(Debug)]
pub struct DeadLetter {
    pub offset: i64,
    pub reason: &'static str,
    pub error: String,
    pub payload: Vec<u8>,
}

/// Batch size limits.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_rows: usize,
    pub max_bytes: usize,
    pub max_wait: std::time::Duration,
}

#[derive(Debug)]
pub struct Batch {
    pub topic: Arc<str>,
    pub partition: i32,
    /// First and last Kafka offset covered (every offset in between is in some
    /// table, skipped as already stored, or a dead letter).
    pub first_offset: i64,
    pub last_offset: i64,
    pub tables: [TableRows; 5],
    pub dead_letters: Vec<DeadLetter>,
    /// Sum of the dead letters' payload sizes (kept, not recomputed per message).
    dead_letter_bytes: usize,
    /// Kafka timestamp of every message, for the freshness histogram on ack.
    pub kafka_ts_ms: Vec<i64>,
    /// Messages skipped because recovery found them already stored.
    pub skipped: usize,
    pub opened_at: Instant,
    /// Bumped on every (re)assignment; acks of an older generation are ignored.
    pub generation: u64,
}

impl Batch {
    pub fn new(topic: Arc<str>, partition: i32, first_offset: i64, generation: u64) -> Self {
        Batch {
            topic,
            partition,
            first_offset,
            last_offset: first_offset - 1,
            tables: Default::default(),
            dead_letters: Vec::new(),
            dead_letter_bytes: 0,
            kafka_ts_ms: Vec::new(),
            skipped: 0,
            opened_at: Instant::now(),
            generation,
        }
    }

    pub fn table(&mut self, t: Table) -> &mut TableRows {
        &mut self.tables[t as usize]
    }

    pub fn messages(&self) -> usize {
        (self.last_offset - self.first_offset + 1).max(0) as usize
    }

    pub fn rows(&self) -> usize {
        self.tables.iter().map(|t| t.rows).sum()
    }

    pub fn bytes(&self) -> usize {
        self.tables.iter().map(|t| t.bytes.len()).sum::<usize>() + self.dead_letter_bytes
    }

    pub fn push_dead_letter(&mut self, d: DeadLetter) {
        self.dead_letter_bytes += d.payload.len();
        self.dead_letters.push(d);
    }

    pub fn is_full(&self, l: &BatchLimits) -> bool {
        self.rows() >= l.max_rows || self.bytes() >= l.max_bytes
    }

    pub fn is_due(&self, l: &BatchLimits) -> bool {
        self.messages() > 0 && self.opened_at.elapsed() >= l.max_wait
    }
}
