//! The default join protocol: plain pipelined hash commands (no Lua), state
//! in bucketed, time-sliced hashes.
//!
//! # Layout
//!
//! | key | type | content |
//! |---|---|---|
//! | `<p>j:{<bucket>}:<slice>` | hash (listpack) | field [`exposure_field`]`(m)` → the exposure's [state](crate::state::encode_exposure); field [`park_field`]`(m, k)` → the k-th interaction parked for `m` ([encoded](crate::state::encode_interaction)) |
//! | `<p>jsl` | sorted set | slice → last processing time (ms) anything was written into it (`ZADD GT`) |
//! | `<p>jslx`, `<p>jsli` | sorted set | the same for exposures, and for interactions parked in their own slice |
//! | `<p>jsw`, `<p>jswi` | sorted set | slice → the last write the sweeper's exposure / interaction phase covered |
//! | `<p>jsl:lock` | string | the sweeper's lock (`SET NX PX`, renewed while it works) |
//!
//! `<bucket>` is FNV-1a(mark_id) mod `joiner.state_buckets`; `<slice>` is the
//! **event time** divided by the slice width, which is the window. An exposure
//! lives in the slice of its own time; an interaction at `ti` can only join an
//! exposure at `te ∈ [ti − window, ti]`, i.e. in slice `s(ti)` or `s(ti) − 1`,
//! and parks a copy in both, so that an exposure only ever looks in its own
//! slice. Both sides of a mark_id use keys with the hash tag `{<bucket>}`: one
//! Redis Cluster slot, one node, one connection.
//!
//! Small hashes are stored by Redis as one listpack (no per-entry dict entry,
//! robj or expiry): an exposure costs its field (9 bytes for loadgen's
//! `m-<16 hex>` mark_ids) and value (~45 bytes) plus ~4 bytes of headers, as
//! long as a hash stays within `hash-max-listpack-entries` (128) and values
//! within `hash-max-listpack-value` (64). Size `state_buckets` so that a slice
//! holds at most ~100 exposures per bucket; fewer is cheaper on Redis CPU
//! (every listpack command scans the hash; `HSETNX` also grows it) for a few
//! bytes more per exposure (joiner/README.md has the measurement).
//!
//! Nothing has a TTL: the sweeper drops a slice's hashes whole once it is
//! final (no write for window + slack) and swept (see [`crate::slice_sweeper`]).
//!
//! # Protocol (per batch, in rounds; one pipeline per round and node)
//!
//! * exposure `e` (slice `s`): `HSETNX h(s) F(m) state`, then `HGET h(s) P(m,0)`;
//!   while a parked entry comes back, `HGET h(s) P(m,k+1)` next round. Every
//!   parked interaction within the window is joined.
//! * interaction `i` (slice `s`): `HGET h(s) F(m)`. Found: joined (or out of
//!   the window). Not found: for each of `s` and `s − 1`, `HSETNX h P(m,k) i`
//!   then `HGET h F(m)` (k = 0 first). `HSETNX` answering 0 (`P(m,k)` was
//!   taken) is followed next round by `HGET h P(m,k)`: this interaction's own
//!   entry (a replay) is its park; another interaction's means k + 1 next
//!   round (`HSETNX` + `HGET F(m)` again). Found on any read: joined.
//! * a first join sets the exposure's *joined* flag (`HSET` of the state with
//!   flag `'1'`) for the sweeper.
//!
//! **Why two racing sides never both miss.** Redis executes commands one at a
//! time, and one connection's commands in the order sent; both sides' keys are
//! in one slot, so on one node and, per joiner, one connection. Take the
//! exposure's write `Ew` (its `HSETNX`) and read chain `Er0, Er1, …`, and the
//! interaction's park into the exposure's slice: the write `Iw` that put its
//! entry at `P(m,k)` (its `HSETNX` answering 1, in this run or, for a replay,
//! an earlier one), and a read `Ir` of `F(m)` that followed `Iw` on the same
//! connection (the one pipelined right after that `HSETNX`, or after the
//! `HSETNX` that found the entry already its own: either runs after `Iw`).
//! If `Ir` runs after `Ew`, the interaction sees the exposure. Otherwise
//! `Ir` — and so `Iw` — ran before `Ew`, hence before every `Er`: the chain
//! reads `P(m,0), P(m,1), …` and entries are never removed while the slice
//! lives, so each `P(m,j)` with `j < k` (which existed when the interaction's
//! `HSETNX` on it answered 0, before `Iw`) is found and the chain reaches
//! `P(m,k)`, which holds the interaction. The `HGET P(m,k)` that tells a
//! taken field's owner is a read only: it plays no part in the argument.
//! Both may see each other; the joined id is deterministic, so the two copies collapse
//! (within a batch the joiner drops the second; across batches `ods_joined`
//! collapses by joined_id). An interaction's first, write-less `HGET` only
//! saves the park writes when the exposure is already there.
//!
//! Every command is idempotent under a replay (of a round, a batch or a
//! Kafka redelivery): `HSETNX` keeps the first value, a parked entry equal to
//! the one being parked is recognised as itself, flags are only ever set.

use std::collections::HashMap;

use redis::Value;
use schemas::{Exposure, Interaction, Joined};

use crate::join::Emitter;
use crate::metrics::Metrics;
use crate::output::OutRecord;
use crate::state::{self, fnv1a, Side, FLAG_COUNTED, FLAG_JOINED};
use crate::store::{bulk, Commands, Store, StoreError};

/// Registries of the slices written: any write (park copies included).
pub const REG_ANY: u8 = 0;
/// ... exposures written.
pub const REG_EXPOSURES: u8 = 1;
/// ... interactions parked in their own slice.
pub const REG_INTERACTIONS: u8 = 2;

/// First byte of a field holding a packed `m-<hex>` mark_id.
const FIELD_PACKED: u8 = 0x01;
/// First byte of a field whose raw mark_id starts with a byte below 0x03.
const FIELD_ESCAPED: u8 = 0x00;
/// First byte of a park field (then k, then the exposure field).
const FIELD_PARK: u8 = 0x02;

/// Appends the hash field of `mark_id`'s exposure: `m-<even-length hex>`
/// packed to `0x01` + bytes (9 bytes for loadgen's ids instead of 18), other
/// ids raw (escaped with `0x00` when they start with a byte < 0x03, so that
/// no two ids and no park field share a field).
pub fn exposure_field(mark_id: &str, out: &mut Vec<u8>) {
    let b = mark_id.as_bytes();
    let hex = &b[b.len().min(2)..];
    if b.starts_with(b"m-")
        && !hex.is_empty()
        && hex.len().is_multiple_of(2)
        && hex
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    {
        out.push(FIELD_PACKED);
        for pair in hex.chunks_exact(2) {
            out.push(nibble(pair[0]) << 4 | nibble(pair[1]));
        }
    } else {
        if b.first().is_some_and(|c| *c <= FIELD_PARK) {
            out.push(FIELD_ESCAPED);
        }
        out.extend_from_slice(b);
    }
}

fn nibble(c: u8) -> u8 {
    if c.is_ascii_digit() {
        c - b'0'
    } else {
        c - b'a' + 10
    }
}

/// Appends the field of the `k`-th interaction parked for `mark_id`.
pub fn park_field(mark_id: &str, k: u8, out: &mut Vec<u8>) {
    out.push(FIELD_PARK);
    out.push(k);
    exposure_field(mark_id, out);
}

/// What a hash field names (for the sweeper, which reads whole hashes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Exposure(String),
    Parked(String, u8),
}

/// Decodes a field written by [`exposure_field`] or [`park_field`].
pub fn parse_field(f: &[u8]) -> Option<Field> {
    fn mark(f: &[u8]) -> Option<String> {
        match f.first().copied() {
            None => Some(String::new()),
            Some(FIELD_PACKED) => {
                const DIGITS: &[u8; 16] = b"0123456789abcdef";
                let mut s = String::with_capacity(2 + 2 * (f.len() - 1));
                s.push_str("m-");
                for b in &f[1..] {
                    s.push(DIGITS[usize::from(b >> 4)] as char);
                    s.push(DIGITS[usize::from(b & 15)] as char);
                }
                Some(s)
            }
            Some(FIELD_ESCAPED) => String::from_utf8(f[1..].to_vec()).ok(),
            Some(FIELD_PARK) => None,
            _ => String::from_utf8(f.to_vec()).ok(),
        }
    }
    match f {
        [FIELD_PARK, k, rest @ ..] => Some(Field::Parked(mark(rest)?, *k)),
        _ => Some(Field::Exposure(mark(f)?)),
    }
}

/// Key names and where a mark_id's state lives.
#[derive(Debug, Clone)]
pub struct Layout {
    prefix: String,
    buckets: u32,
    /// Slice width in event time (= the window).
    pub slice_ms: i64,
}

impl Layout {
    pub fn new(keys: &state::Keys, buckets: u32, slice_ms: i64) -> Layout {
        Layout {
            prefix: keys.prefix().to_owned(),
            buckets: buckets.max(1),
            slice_ms: slice_ms.max(1),
        }
    }

    pub fn buckets(&self) -> u32 {
        self.buckets
    }

    pub fn bucket_of(&self, mark_id: &str) -> u32 {
        fnv1a(mark_id) % self.buckets
    }

    pub fn slice_of(&self, ts_ms: i64) -> i64 {
        ts_ms.div_euclid(self.slice_ms)
    }

    /// The hash of one bucket and slice.
    pub fn hash(&self, bucket: u32, slice: i64) -> String {
        format!("{}j:{{{bucket}}}:{slice}", self.prefix)
    }

    /// Slice → last write of anything (processing time, ms).
    pub fn registry(&self) -> String {
        self.registry_of(REG_ANY)
    }

    /// Slice → last write of the kind `r` ([`REG_ANY`], [`REG_EXPOSURES`],
    /// [`REG_INTERACTIONS`]).
    pub fn registry_of(&self, r: u8) -> String {
        match r {
            REG_EXPOSURES => format!("{}jslx", self.prefix),
            REG_INTERACTIONS => format!("{}jsli", self.prefix),
            _ => format!("{}jsl", self.prefix),
        }
    }

    /// Slices whose exposures were swept → when.
    pub fn swept(&self) -> String {
        format!("{}jsw", self.prefix)
    }

    /// Slices whose parked interactions were swept → when.
    pub fn swept_interactions(&self) -> String {
        format!("{}jswi", self.prefix)
    }

    pub fn lock(&self) -> String {
        format!("{}jsl:lock", self.prefix)
    }
}

/// The protocol's parameters.
#[derive(Debug, Clone)]
pub struct SliceJoin {
    pub layout: Layout,
    pub window_ms: i64,
    /// Park fields per mark_id and slice (≤ 256).
    pub max_parked: usize,
}

/// One step of an event in a round.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Exposure: write the state, read park field 0.
    XWrite,
    /// Exposure: read park field k.
    XRead(u8),
    /// Interaction: read the exposure in its own slice (no write).
    IRead,
    /// Interaction: park at field k of the slice, then read the exposure there.
    Park(i64, u8),
    /// Interaction: field k of the slice was taken (`HSETNX` 0): read it, to
    /// tell a replay of this interaction (its own entry) from another one.
    ParkCheck(i64, u8),
}

/// Per-event progress across rounds.
#[derive(Default)]
struct Progress {
    /// The exposure's (first) in-window join was seen: its flag must be set.
    flag_exposure: bool,
    /// The interaction found its exposure's state (in or out of its window).
    found: bool,
    /// ... within the window: joined, stop parking. One found out of its
    /// window still parks in its own slice, so that the sweeper reports it
    /// unmatched (`out_of_window`) like every interaction that joins nothing.
    joined: bool,
    /// The interaction was parked in its own slice.
    parked_home: bool,
}

impl SliceJoin {
    /// Runs a batch's rounds against Redis and returns the joined events to
    /// produce (deduplicated by joined_id).
    pub async fn run(
        &self,
        store: &Store,
        events: &[crate::join::Event],
        now_ms: i64,
        topic: &str,
        metrics: &Metrics,
    ) -> Result<Vec<OutRecord>, StoreError> {
        use crate::join::Event;
        let mut emitter = Emitter::new(topic);
        let mut progress: Vec<Progress> = (0..events.len()).map(|_| Progress::default()).collect();
        let mut encoded: Vec<Vec<u8>> = Vec::with_capacity(events.len());
        for ev in events {
            let mut b = Vec::with_capacity(64);
            match ev {
                Event::Exposure(e) => state::encode_exposure(e, state::Encoding::Compact, &mut b),
                Event::Interaction(i) => {
                    state::encode_interaction(i, state::Encoding::Compact, &mut b)
                }
            }
            encoded.push(b);
        }
        let mut round: Vec<(usize, Step)> = events
            .iter()
            .enumerate()
            .map(|(n, ev)| match ev {
                Event::Exposure(_) => (n, Step::XWrite),
                Event::Interaction(_) => (n, Step::IRead),
            })
            .collect();
        let mut total_cmds = 0;
        let mut field = Vec::with_capacity(32);
        while !round.is_empty() {
            let mut cmds = Commands::new();
            // (registry, slice) of every write: any write, and separately
            // exposures and interactions parked in their own slice (the
            // sweeper's two phases wait for their last write).
            let mut written: Vec<(u8, i64)> = Vec::new();
            for (n, step) in &round {
                let m = events[*n].mark_id();
                let b = self.layout.bucket_of(m);
                match (step, &events[*n]) {
                    (Step::XWrite, Event::Exposure(e)) => {
                        let s = self.layout.slice_of(e.ts_ms);
                        let key = self.layout.hash(b, s);
                        field.clear();
                        exposure_field(m, &mut field);
                        let mut c = redis::cmd("HSETNX");
                        c.arg(&key).arg(&field[..]).arg(&encoded[*n][..]);
                        cmds.push(key.as_bytes(), c);
                        field.clear();
                        park_field(m, 0, &mut field);
                        let mut c = redis::cmd("HGET");
                        c.arg(&key).arg(&field[..]);
                        cmds.push(key.as_bytes(), c);
                        written.push((REG_EXPOSURES, s));
                    }
                    (Step::XRead(k), Event::Exposure(e)) => {
                        let key = self.layout.hash(b, self.layout.slice_of(e.ts_ms));
                        field.clear();
                        park_field(m, *k, &mut field);
                        let mut c = redis::cmd("HGET");
                        c.arg(&key).arg(&field[..]);
                        cmds.push(key.as_bytes(), c);
                    }
                    (Step::IRead, Event::Interaction(i)) => {
                        let key = self.layout.hash(b, self.layout.slice_of(i.ts_ms));
                        field.clear();
                        exposure_field(m, &mut field);
                        let mut c = redis::cmd("HGET");
                        c.arg(&key).arg(&field[..]);
                        cmds.push(key.as_bytes(), c);
                    }
                    (Step::Park(s, k), Event::Interaction(i)) => {
                        let key = self.layout.hash(b, *s);
                        field.clear();
                        park_field(m, *k, &mut field);
                        let mut c = redis::cmd("HSETNX");
                        c.arg(&key).arg(&field[..]).arg(&encoded[*n][..]);
                        cmds.push(key.as_bytes(), c);
                        field.clear();
                        exposure_field(m, &mut field);
                        let mut c = redis::cmd("HGET");
                        c.arg(&key).arg(&field[..]);
                        cmds.push(key.as_bytes(), c);
                        if *s == self.layout.slice_of(i.ts_ms) {
                            written.push((REG_INTERACTIONS, *s));
                        }
                        written.push((REG_ANY, *s));
                    }
                    (Step::ParkCheck(s, k), Event::Interaction(_)) => {
                        let key = self.layout.hash(b, *s);
                        field.clear();
                        park_field(m, *k, &mut field);
                        let mut c = redis::cmd("HGET");
                        c.arg(&key).arg(&field[..]);
                        cmds.push(key.as_bytes(), c);
                    }
                    _ => unreachable!("step of the other side"),
                }
            }
            let n_steps = cmds.len();
            let any: Vec<(u8, i64)> = written.iter().map(|(_, s)| (REG_ANY, *s)).collect();
            written.extend(any);
            written.sort_unstable();
            written.dedup();
            for (r, s) in &written {
                let reg = self.layout.registry_of(*r);
                let mut c = redis::cmd("ZADD");
                c.arg(&reg).arg("GT").arg(now_ms).arg(*s);
                cmds.push(reg.as_bytes(), c);
            }
            total_cmds += cmds.len();
            let t0 = std::time::Instant::now();
            let replies = store.exec(&cmds).await;
            metrics
                .redis_roundtrip_seconds
                .observe(t0.elapsed().as_secs_f64());
            let replies = replies?;
            let mut replies = replies[..n_steps.min(replies.len())].iter();
            let mut next = Vec::new();
            let mut flags = Commands::new();
            for (n, step) in round {
                let ev = &events[n];
                let m = ev.mark_id();
                let mut take = || replies.next().unwrap_or(&Value::Nil);
                match (step, ev) {
                    (Step::XWrite, Event::Exposure(e)) | (Step::XRead(_), Event::Exposure(e)) => {
                        let k = match step {
                            Step::XWrite => {
                                take();
                                0
                            }
                            Step::XRead(k) => k,
                            _ => unreachable!(),
                        };
                        let reply = take();
                        if let Some(p) = bulk(reply) {
                            match state::decode_interaction(m, p) {
                                Ok(i) => {
                                    if state::in_window(e.ts_ms, i.ts_ms, self.window_ms) {
                                        emitter.emit(
                                            Joined::from_pair(e, &i),
                                            Side::Exposure,
                                            metrics,
                                        );
                                        progress[n].flag_exposure = true;
                                    } else {
                                        metrics
                                            .out_of_window
                                            .with_label_values(&["exposure"])
                                            .inc();
                                    }
                                }
                                Err(_) => metrics.decode_errors.inc(),
                            }
                            if usize::from(k) + 1 < self.max_parked {
                                next.push((n, Step::XRead(k + 1)));
                            }
                        } else if progress[n].flag_exposure {
                            progress[n].flag_exposure = false;
                            let mut st = encoded[n].clone();
                            st[0] = FLAG_JOINED;
                            self.flag(&mut flags, m, self.layout.slice_of(e.ts_ms), &st);
                        }
                    }
                    (Step::IRead, Event::Interaction(i)) => {
                        let s = self.layout.slice_of(i.ts_ms);
                        if let Some(st) = bulk(take()) {
                            progress[n].found = true;
                            if self.found(i, st, s, &mut emitter, &mut flags, metrics) {
                                progress[n].joined = true;
                            } else {
                                next.push((n, Step::Park(s, 0)));
                            }
                        } else {
                            next.push((n, Step::Park(s, 0)));
                            next.push((n, Step::Park(s - 1, 0)));
                        }
                    }
                    (Step::Park(s, k), Event::Interaction(i)) => {
                        let set = take();
                        let x = take();
                        if matches!(set, Value::Int(1)) {
                            if s == self.layout.slice_of(i.ts_ms) {
                                progress[n].parked_home = true;
                            }
                        } else {
                            // Taken: by this interaction (a replay) or another.
                            next.push((n, Step::ParkCheck(s, k)));
                        }
                        if let Some(st) = bulk(x) {
                            if !progress[n].found {
                                progress[n].found = true;
                                progress[n].joined =
                                    self.found(i, st, s, &mut emitter, &mut flags, metrics);
                            }
                        }
                    }
                    (Step::ParkCheck(s, k), Event::Interaction(i)) => {
                        if bulk(take()).is_some_and(|b| b == encoded[n].as_slice()) {
                            if s == self.layout.slice_of(i.ts_ms) {
                                progress[n].parked_home = true;
                            }
                        } else if usize::from(k) + 1 < self.max_parked {
                            next.push((n, Step::Park(s, k + 1)));
                        } else if s == self.layout.slice_of(i.ts_ms) {
                            metrics.park_overflow.inc();
                        }
                    }
                    _ => unreachable!("step of the other side"),
                }
            }
            // An interaction that joined its exposure stops parking; one still
            // parking keeps reading after each write (the next round's steps).
            next.retain(|(n, step)| {
                !(matches!(step, Step::Park(..) | Step::ParkCheck(..)) && progress[*n].joined)
            });
            for (n, p) in progress.iter_mut().enumerate() {
                if p.parked_home && matches!(events[n], Event::Interaction(_)) {
                    p.parked_home = false;
                    metrics.parked.inc();
                }
            }
            if !flags.is_empty() {
                total_cmds += flags.len();
                store.exec(&flags).await?;
            }
            round = next;
        }
        for (n, ev) in events.iter().enumerate() {
            if matches!(ev, Event::Interaction(_)) && !progress[n].found {
                metrics.misses.inc();
            }
        }
        metrics.redis_commands_per_batch.observe(total_cmds as f64);
        Ok(emitter.into_records())
    }

    /// An interaction found its exposure's state `st` in slice `s`; true
    /// when within the window (joined). A join of an exposure the sweeper
    /// already counted unmatched is counted in `unmatched_then_joined_total`.
    fn found(
        &self,
        i: &Interaction<'_>,
        st: &[u8],
        s: i64,
        emitter: &mut Emitter,
        flags: &mut Commands,
        metrics: &Metrics,
    ) -> bool {
        match state::decode_exposure(&i.mark_id, st) {
            Ok(x) if state::in_window(x.exposure.ts_ms, i.ts_ms, self.window_ms) => {
                emitter.emit(
                    Joined::from_pair(&x.exposure, i),
                    Side::Interaction,
                    metrics,
                );
                if x.flag == FLAG_COUNTED {
                    metrics
                        .unmatched_then_joined
                        .with_label_values(&["exposure"])
                        .inc();
                }
                if x.flag != FLAG_JOINED {
                    let mut v = st.to_vec();
                    v[0] = FLAG_JOINED;
                    self.flag(flags, &i.mark_id, s, &v);
                }
                true
            }
            Ok(_) => {
                metrics
                    .out_of_window
                    .with_label_values(&["interaction"])
                    .inc();
                false
            }
            Err(_) => {
                metrics.decode_errors.inc();
                false
            }
        }
    }

    /// `HSET` of an exposure's state with the joined flag (for the sweeper).
    fn flag(&self, flags: &mut Commands, mark_id: &str, slice: i64, state: &[u8]) {
        let key = self.layout.hash(self.layout.bucket_of(mark_id), slice);
        let mut f = Vec::with_capacity(24);
        exposure_field(mark_id, &mut f);
        let mut c = redis::cmd("HSET");
        c.arg(&key).arg(f).arg(state);
        flags.push(key.as_bytes(), c);
    }
}

/// The exposure and interaction of a decoded slice hash, for the sweeper.
#[derive(Default)]
pub struct SliceContent {
    /// mark_id → exposure state bytes.
    pub exposures: HashMap<String, Vec<u8>>,
    /// (mark_id, parked interaction bytes).
    pub parked: Vec<(String, Vec<u8>)>,
}

impl SliceContent {
    /// Adds an `HGETALL` reply.
    pub fn add(&mut self, reply: &Value) {
        let Value::Array(items) = reply else {
            return;
        };
        for pair in items.chunks_exact(2) {
            let (Some(f), Some(v)) = (bulk(&pair[0]), bulk(&pair[1])) else {
                continue;
            };
            match parse_field(f) {
                Some(Field::Exposure(m)) => {
                    self.exposures.insert(m, v.to_vec());
                }
                Some(Field::Parked(m, _)) => self.parked.push((m, v.to_vec())),
                None => {}
            }
        }
    }
}

/// An exposure parsed back from the sweeper's view (mark_id from the field).
pub fn exposure_of(mark_id: &str, st: &[u8]) -> Option<(u8, Exposure<'static>)> {
    state::decode_exposure(mark_id, st)
        .ok()
        .map(|x| (x.flag, x.exposure))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_compact_and_distinct() {
        let mut f = Vec::new();
        exposure_field("m-5f1c2d3e4a5b6c7d", &mut f);
        assert_eq!(f.len(), 9);
        assert_eq!(
            parse_field(&f),
            Some(Field::Exposure("m-5f1c2d3e4a5b6c7d".into()))
        );
        let marks = [
            "m-5f1c2d3e4a5b6c7d",
            "m-5F1C",
            "m-abc",
            "m-",
            "x",
            "\u{1}abc",
            "\u{0}",
            "\u{2}\u{3}",
            "",
            "m-00",
        ];
        let mut seen = std::collections::HashSet::new();
        for m in marks {
            let mut f = Vec::new();
            exposure_field(m, &mut f);
            assert_eq!(parse_field(&f), Some(Field::Exposure(m.into())), "{m:?}");
            assert!(seen.insert(f), "{m:?} collides");
            for k in [0u8, 1, 255] {
                let mut p = Vec::new();
                park_field(m, k, &mut p);
                assert_eq!(parse_field(&p), Some(Field::Parked(m.into(), k)), "{m:?}");
                assert!(seen.insert(p), "park {m:?} {k} collides");
            }
        }
    }

    #[test]
    fn slices_cover_the_window() {
        let keys = state::Keys::new("t:").unwrap();
        let l = Layout::new(&keys, 64, 3_600_000);
        for ti in [0i64, 1, 3_599_999, 3_600_000, 7_200_001, 1_764_000_123_456] {
            let si = l.slice_of(ti);
            for te in [ti - 3_600_000, ti - 1, ti] {
                let se = l.slice_of(te);
                assert!(se == si || se == si - 1, "ti {ti} te {te}");
            }
        }
        assert_eq!(l.hash(7, 42), "t:j:{7}:42");
        assert_eq!(
            crate::store::key_slot(l.hash(7, 1).as_bytes()),
            crate::store::key_slot(l.hash(7, 2).as_bytes())
        );
    }
}
