//! The deterministic message stream.
//!
//! A virtual clock starts at `start_ms` and advances by `1 / event_rate` s per
//! good event allocated. Whenever the earliest pending line is later than the
//! clock, a new trace is generated ([`Model::trace`]) and its lines go into a
//! min-heap keyed by their stream position (`emit_ms`, then creation order).
//! The stream pops that heap, so it is ordered by event time except for the
//! deliberate out-of-order interactions. Bad lines are interleaved uniformly
//! (sampling without replacement, so their number is exact). Once all good
//! events are allocated no new traces start and the heap drains: the late
//! interactions of the last traces are still sent, up to [`MAX_DELAY_MS`]
//! after them. The last trace is cut so the total is exactly `count`.
//!
//! Each line is wrapped like Filebeat's Kafka output: the JSON document with
//! `host.name`, `log.file.path`, a per-(host, file) increasing `log.offset`,
//! `fields.log_type` and `fields.idc`, or (with probability `bare_ratio`) the
//! bare line.
//!
//! [`MAX_DELAY_MS`]: crate::model::MAX_DELAY_MS

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use anyhow::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use schemas::{Envelope, LogType};

use crate::bad::{self, BadKind, Wrap, BAD_BYTES, BAD_BYTES_MARK};
use crate::model::{HostRef, Line, Model, Planned};
use crate::params::Params;

/// One Kafka message of the run.
#[derive(Debug, Clone)]
pub struct Message {
    /// Position in the stream (0-based, bad lines included).
    pub seq: u64,
    /// The log type whose topic this message goes to.
    pub log_type: LogType,
    /// Kafka key: trace_id for request lines, mark_id for exposures and interactions.
    pub key: String,
    /// Kafka value: the Filebeat JSON document or the bare line.
    pub value: Vec<u8>,
    /// Whether `value` is the bare line.
    pub bare: bool,
    pub kind: Kind,
}

/// What a message is.
// Bad lines are rare; boxing the common variant would cost an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Kind {
    /// A valid line; the typed record it carries.
    Good(Line),
    /// A malformed message and how it is broken.
    Bad(BadKind),
}

impl Message {
    /// The topic this message goes to.
    pub fn topic<'t>(&self, topics: &'t common::config::TopicsConfig) -> &'t str {
        topics.topic_for(self.log_type)
    }

    /// The reason code the pipeline must report for this message, `None` when good.
    pub fn expected_reason(&self) -> Option<&'static str> {
        match &self.kind {
            Kind::Good(_) => None,
            Kind::Bad(k) => Some(k.reason()),
        }
    }
}

/// A heap entry: the stream position of a planned line kept in the slab
/// (small entries keep the heap's sifting cheap).
struct Pending {
    emit_ms: i64,
    seq: u64,
    slot: u32,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.emit_ms, self.seq) == (o.emit_ms, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    /// Reversed, so that `BinaryHeap` pops the smallest (emit_ms, seq).
    fn cmp(&self, o: &Self) -> Ordering {
        (o.emit_ms, o.seq).cmp(&(self.emit_ms, self.seq))
    }
}

/// One log file on one host, as Filebeat tracks it.
struct Source {
    host: String,
    path: String,
    idc: &'static str,
    /// Byte offset of the next line.
    offset: u64,
}

/// The stream of messages: an iterator of exactly `params.count` [`Message`]s.
pub struct Generator {
    p: Params,
    rng: ChaCha8Rng,
    model: Model,
    heap: BinaryHeap<Pending>,
    /// Planned lines by slot, and the free slots.
    slab: Vec<Option<Planned>>,
    free: Vec<u32>,
    push_seq: u64,
    ms_per_event: f64,
    good_budget: u64,
    allocated: u64,
    bad_total: u64,
    bad_done: u64,
    emitted: u64,
    sources: HashMap<(HostRef, LogType), Source>,
    scratch: Vec<Planned>,
    line: String,
}

impl Generator {
    /// Validates `p` and sets up the stream.
    pub fn new(p: &Params) -> Result<Generator> {
        p.validate()?;
        Ok(Generator {
            rng: ChaCha8Rng::seed_from_u64(p.seed),
            model: Model::new(p),
            heap: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            push_seq: 0,
            ms_per_event: 1000.0 / p.event_rate,
            good_budget: p.good_count(),
            allocated: 0,
            bad_total: p.bad_count().min(p.count),
            bad_done: 0,
            emitted: 0,
            sources: HashMap::new(),
            scratch: Vec::with_capacity(32),
            line: String::with_capacity(512),
            p: p.clone(),
        })
    }

    /// The virtual clock: event time of the next trace.
    fn clock_ms(&self) -> i64 {
        self.p.start_ms + (self.allocated as f64 * self.ms_per_event) as i64
    }

    /// True when no pending line comes before the next trace's start.
    fn trace_due(&self) -> bool {
        match self.heap.peek() {
            None => true,
            Some(p) => p.emit_ms >= self.clock_ms(),
        }
    }

    fn generate_trace(&mut self) {
        let t0 = self.clock_ms();
        self.scratch.clear();
        self.model.trace(&mut self.rng, t0, &mut self.scratch);
        let left = (self.good_budget - self.allocated) as usize;
        self.scratch.truncate(left);
        self.allocated += self.scratch.len() as u64;
        for planned in self.scratch.drain(..) {
            self.push_seq += 1;
            let emit_ms = planned.emit_ms;
            let slot = match self.free.pop() {
                Some(i) => {
                    self.slab[i as usize] = Some(planned);
                    i
                }
                None => {
                    self.slab.push(Some(planned));
                    (self.slab.len() - 1) as u32
                }
            };
            self.heap.push(Pending {
                emit_ms,
                seq: self.push_seq,
                slot,
            });
        }
    }

    /// Wraps `line` (from `host`'s log of type `t`) into a Kafka value.
    fn wrap(
        &mut self,
        line: &str,
        t: LogType,
        host: HostRef,
        ts: i64,
        bare: bool,
        log_type: &str,
    ) -> Vec<u8> {
        let src = self.sources.entry((host, t)).or_insert_with(|| Source {
            host: host.name(),
            path: host.file_path(t),
            idc: host.idc(),
            offset: 0,
        });
        let at = src.offset;
        src.offset += line.len() as u64 + 1;
        if bare {
            return line.as_bytes().to_vec();
        }
        let env = Envelope {
            read_ts_ms: Some(ts + self.rng.random_range(1..=800)),
            message: Cow::Borrowed(line),
            continuation: None,
            host: Some(Cow::Borrowed(&src.host)),
            file_path: Some(Cow::Borrowed(&src.path)),
            file_offset: Some(at),
            log_type: Some(Cow::Borrowed(log_type)),
            idc: Some(Cow::Borrowed(src.idc)),
            bare: false,
        };
        let mut out = String::with_capacity(line.len() + 320);
        env.write_json(&mut out);
        out.into_bytes()
    }

    fn good(&mut self) -> Message {
        let Pending { slot, .. } = self
            .heap
            .pop()
            .expect("a good event is pending while the good budget is not used up");
        let Planned { line, host, .. } = self.slab[slot as usize]
            .take()
            .expect("a heap entry points at a planned line");
        self.free.push(slot);
        let t = line.log_type();
        let mut text = std::mem::take(&mut self.line);
        text.clear();
        line.write(host.json_lines(), &mut text);
        let bare = self.rng.random_bool(self.p.bare_ratio);
        let value = self.wrap(&text, t, host, line.ts_ms(), bare, t.as_str());
        self.line = text;
        Message {
            seq: self.emitted,
            log_type: t,
            key: line.key().to_owned(),
            value,
            bare,
            kind: Kind::Good(line),
        }
    }

    fn bad(&mut self) -> Message {
        let r = self.rng.random::<f64>();
        // Roughly the good traffic's mix, so each topic's bad share is similar.
        let t = if r < 0.75 {
            LogType::Request
        } else if r < 0.88 {
            LogType::Exposure
        } else {
            LogType::Interaction
        };
        let kind = BadKind::random(&mut self.rng, t);
        self.bad_message(t, kind)
    }

    /// A bad message of kind `kind` on the topic of `t` (built from a fresh template).
    pub(crate) fn bad_message(&mut self, t: LogType, kind: BadKind) -> Message {
        let ts = self.clock_ms();
        let rng = &mut self.rng;
        let (template, host) = match t {
            LogType::Request => self.model.template_request(rng, ts),
            LogType::Exposure => self.model.template_exposure(rng, ts),
            _ => self.model.template_interaction(rng, ts),
        };
        let broken = bad::build(rng, kind, &template);
        let (bare, log_type, cut) = match broken.wrap {
            Wrap::Either => (rng.random_bool(self.p.bare_ratio), t.as_str(), None),
            Wrap::Envelope => (false, t.as_str(), None),
            Wrap::Bare => (true, t.as_str(), None),
            Wrap::TruncatedEnvelope(f) => (false, t.as_str(), Some(f)),
            Wrap::LogTypeOverride(lt) => (false, lt, None),
        };
        let mut value = self.wrap(&broken.line, t, host, ts, bare, log_type);
        if let Some(f) = cut {
            let mut at = ((value.len() as f64 * f) as usize).clamp(1, value.len() - 1);
            while std::str::from_utf8(&value[..at]).is_err() {
                at -= 1;
            }
            value.truncate(at);
        }
        if let Some(i) = find(&value, BAD_BYTES_MARK.as_bytes()) {
            value.splice(i..i + BAD_BYTES_MARK.len(), BAD_BYTES.iter().copied());
        }
        Message {
            seq: self.emitted,
            log_type: t,
            key: template.key().to_owned(),
            value,
            bare,
            kind: Kind::Bad(kind),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Iterator for Generator {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        if self.emitted >= self.p.count {
            return None;
        }
        let remaining = self.p.count - self.emitted;
        let bad_left = self.bad_total - self.bad_done;
        let is_bad = bad_left > 0
            && (bad_left >= remaining || self.rng.random_range(0..remaining) < bad_left);
        let msg = if is_bad {
            self.bad_done += 1;
            self.bad()
        } else {
            while self.allocated < self.good_budget && self.trace_due() {
                self.generate_trace();
            }
            self.good()
        };
        self.emitted += 1;
        Some(msg)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = (self.p.count - self.emitted) as usize;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Generator {}
