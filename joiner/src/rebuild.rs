//! Surviving the loss of Redis state: detect it, rebuild the window from Kafka.
//!
//! Redis that restarts empty (no persistence) or fails over to a replica that
//! missed the last writes loses acknowledged state: exposures and parked
//! interactions whose offsets are already committed. Their partners would find
//! nothing. Redis is therefore treated as a *rebuildable cache of the last
//! window of Kafka*:
//!
//! * **Detection (the guard)**: every batch's pipeline ends with, per *guard
//!   tag* (one on a single node; one per master on Redis Cluster, a hash tag
//!   owned by that master): `INCR` of this consumer thread's own sequence key,
//!   `GET` of the epoch key and `GET` of the *rebuilt marker* of every
//!   partition the thread owns. No extra round trip on the default protocol.
//!   - the epoch key is missing: Redis came back empty → a new epoch is set
//!     (check-and-set, so racing threads agree on one);
//!   - the sequence is not above the last value this thread saw: Redis lost
//!     the suffix of its history that held that `INCR`, hence every write of
//!     ours before it in the same pipeline (Redis executes, replicates and
//!     logs commands in one order, so what survives a failover or a restart
//!     from AOF is a prefix) → a new epoch replaces the one seen;
//!   - a partition's marker differs from the epoch: its window is not known to
//!     be in this Redis (after a loss, found by any joiner, or at the first
//!     start on an empty Redis) → its owner rebuilds it.
//! * **Rebuild**: the consumer thread's batch task re-reads its stale
//!   partitions from the offset of Kafka timestamp `now − window_s −
//!   rebuild_slack_s` ([`rebuild_from_ms`], `offsets_for_times`) up to what
//!   was already processed ([`read_window`]), and runs the events through
//!   the same Redis step (the scripts are idempotent) producing the joins it finds with their
//!   deterministic ids (copies of ones produced before collapse by
//!   `joined_id` in `ods_joined`). Then the markers are set to the epoch and
//!   the batch that found the loss runs again. Normal consumption waits
//!   meanwhile (the batch in flight is not done: the consumer pauses after
//!   `STALL_AFTER`). Each thread rebuilds only its own partitions; the join
//!   is symmetric, so once every partition's window was written again every
//!   pair is found by whichever side is written second. A partition revoked
//!   mid-rebuild keeps a stale marker, and its next owner rebuilds it.
//!
//! Keys (all under `joiner.key_prefix`, hash tag `{<tag>}`):
//!
//! | key | content | TTL |
//! |---|---|---|
//! | `<p><ns>:{<tag>}:epoch` | this Redis incarnation's epoch (random) | none |
//! | `<p><ns>:{<tag>}:seq:<token>` | a consumer thread's `INCR` sequence | 1 day |
//! | `<p><ns>:{<tag>}:rb:<topic>:<partition>` | the epoch the partition's window was written under | none |

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use redis::Value;

use crate::store::{key_slot, Commands, StoreError};

/// A Kafka topic and partition.
pub type Tp = (std::sync::Arc<str>, i32);

/// A rebuild's read ends when no message came for this long.
pub const READ_IDLE: std::time::Duration = std::time::Duration::from_secs(15);

/// How long a sequence key outlives its thread's last batch.
const SEQ_TTL_MS: u64 = 86_400_000;

/// Guard key names under a prefix.
#[derive(Debug, Clone)]
pub struct GuardKeys {
    /// The key prefix and the protocol's namespace (`jg`, `jgs`, …).
    prefix: String,
}

impl GuardKeys {
    /// `ns`: [`crate::join::Protocol::guard_namespace`].
    pub fn new(prefix: &str, ns: &str) -> GuardKeys {
        GuardKeys {
            prefix: format!("{prefix}{ns}"),
        }
    }

    pub fn epoch(&self, tag: &str) -> String {
        format!("{}:{{{tag}}}:epoch", self.prefix)
    }

    pub fn seq(&self, tag: &str, token: &str) -> String {
        format!("{}:{{{tag}}}:seq:{token}", self.prefix)
    }

    pub fn rebuilt(&self, tag: &str, tp: &Tp) -> String {
        format!("{}:{{{tag}}}:rb:{}:{}", self.prefix, tp.0, tp.1)
    }
}

/// A hash tag whose keys live in `slot` (`g<n>`, the smallest such n): lets
/// the guard put one set of keys on every master of a Redis Cluster.
pub fn tag_for_slot(slot: u16) -> String {
    static TABLE: OnceLock<Vec<u32>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = vec![u32::MAX; 16_384];
        let mut left = t.len();
        let mut n = 0u32;
        while left > 0 {
            let s = usize::from(key_slot(format!("g{n}").as_bytes()));
            if t[s] == u32::MAX {
                t[s] = n;
                left -= 1;
            }
            n += 1;
        }
        t
    });
    format!("g{}", table[usize::from(slot) % 16_384])
}

/// The guard's commands for one batch, appended to `cmds`: per tag `INCR`
/// + `PEXPIRE` of the thread's sequence, `GET` of the epoch, `GET` of each
///   partition's marker. Returns how many were added.
pub fn push_commands(
    keys: &GuardKeys,
    tags: &[String],
    token: &str,
    tps: &[Tp],
    cmds: &mut Commands,
) -> usize {
    let before = cmds.len();
    for tag in tags {
        let seq = keys.seq(tag, token);
        let mut incr = redis::cmd("INCR");
        incr.arg(&seq);
        cmds.push(seq.as_bytes(), incr);
        let mut exp = redis::cmd("PEXPIRE");
        exp.arg(&seq).arg(SEQ_TTL_MS);
        cmds.push(seq.as_bytes(), exp);
        let epoch = keys.epoch(tag);
        let mut get = redis::cmd("GET");
        get.arg(&epoch);
        cmds.push(epoch.as_bytes(), get);
        for tp in tps {
            let k = keys.rebuilt(tag, tp);
            let mut get = redis::cmd("GET");
            get.arg(&k);
            cmds.push(k.as_bytes(), get);
        }
    }
    cmds.len() - before
}

/// What the guard read back for one tag.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardReply {
    pub seq: i64,
    pub epoch: Option<Vec<u8>>,
    /// Per partition (in the order given), its marker.
    pub rebuilt: Vec<Option<Vec<u8>>>,
}

fn opt_bytes(v: &Value) -> Result<Option<Vec<u8>>, StoreError> {
    match v {
        Value::Nil => Ok(None),
        Value::BulkString(b) => Ok(Some(b.clone())),
        Value::SimpleString(s) => Ok(Some(s.as_bytes().to_vec())),
        other => Err(bad_reply(other)),
    }
}

fn bad_reply(v: &Value) -> StoreError {
    StoreError {
        kind: "redis",
        detail: format!("unexpected reply to the Redis-loss guard: {v:?}"),
    }
}

/// Splits the guard's replies (the last ones of the pipeline) per tag.
pub fn parse_replies(
    tags: usize,
    tps: usize,
    replies: &[Value],
) -> Result<Vec<GuardReply>, StoreError> {
    let per = 3 + tps;
    if replies.len() != tags * per {
        return Err(StoreError {
            kind: "redis",
            detail: format!("{} guard replies, expected {}", replies.len(), tags * per),
        });
    }
    replies
        .chunks(per)
        .map(|r| {
            let seq = match &r[0] {
                Value::Int(n) => *n,
                other => return Err(bad_reply(other)),
            };
            Ok(GuardReply {
                seq,
                epoch: opt_bytes(&r[2])?,
                rebuilt: r[3..].iter().map(opt_bytes).collect::<Result<_, _>>()?,
            })
        })
        .collect()
}

/// Why Redis state is known lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// The epoch key is gone: Redis came back empty (or was flushed).
    EpochMissing,
    /// No epoch at this thread's first batch: the first start on this Redis,
    /// or it lost its state while no joiner ran (the same repair).
    EpochMissingAtStart,
    /// The thread's sequence went back: acknowledged writes were lost
    /// (failover to a replica that missed them, AOF `everysec`).
    WritesLost,
}

impl Loss {
    pub fn as_str(self) -> &'static str {
        match self {
            Loss::EpochMissing => "epoch_missing",
            Loss::EpochMissingAtStart => "epoch_missing_at_start",
            Loss::WritesLost => "writes_lost",
        }
    }
}

/// Whether one tag's reply shows a loss, given the last sequence this thread
/// saw there (`None`: first batch, or the tag is new).
pub fn judge(prev_seq: Option<i64>, reply: &GuardReply) -> Option<Loss> {
    if reply.epoch.is_none() {
        Some(if prev_seq.is_some() {
            Loss::EpochMissing
        } else {
            Loss::EpochMissingAtStart
        })
    } else if prev_seq.is_some_and(|p| reply.seq <= p) {
        Some(Loss::WritesLost)
    } else {
        None
    }
}

/// Indexes of the partitions whose marker is not `epoch` (their window is
/// not known to be in this Redis).
pub fn stale(epoch: &[u8], rebuilt: &[Option<Vec<u8>>]) -> Vec<usize> {
    rebuilt
        .iter()
        .enumerate()
        .filter(|(_, m)| m.as_deref() != Some(epoch))
        .map(|(i, _)| i)
        .collect()
}

/// Kafka timestamp from which a rebuild re-reads: one window plus the slack
/// (consumer lag, events produced late) before now.
pub fn rebuild_from_ms(now_ms: i64, window_ms: i64, slack_ms: i64) -> i64 {
    now_ms
        .saturating_sub(window_ms)
        .saturating_sub(slack_ms)
        .max(0)
}

/// Sets the epoch to `new` if it is missing or still `seen` (one agreed
/// epoch when several threads find the same loss); returns the epoch now set.
pub const EPOCH_CAS_LUA: &str = "local cur = redis.call('GET', KEYS[1])\n\
if (not cur) or cur == ARGV[2] then redis.call('SET', KEYS[1], ARGV[1]) return ARGV[1] end\n\
return cur";

/// One consumer thread's guard state: its sequence token and the last
/// sequence seen per tag.
pub struct Guard {
    pub keys: GuardKeys,
    pub token: String,
    prev: Mutex<HashMap<String, i64>>,
    /// Per tag, the epoch the thread last went on with.
    known: Mutex<HashMap<String, Vec<u8>>>,
}

impl Guard {
    pub fn new(keys: GuardKeys, token: String) -> Guard {
        Guard {
            keys,
            token,
            prev: Mutex::new(HashMap::new()),
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The epoch this thread last went on with under `tag`.
    pub fn known_epoch(&self, tag: &str) -> Option<Vec<u8>> {
        self.known.lock().expect("guard lock").get(tag).cloned()
    }

    pub fn set_known_epoch(&self, tag: &str, epoch: &[u8]) {
        self.known
            .lock()
            .expect("guard lock")
            .insert(tag.to_owned(), epoch.to_vec());
    }

    /// Records the sequences read and returns each tag's loss, if any.
    pub fn observe(&self, tags: &[String], replies: &[GuardReply]) -> Vec<Option<Loss>> {
        let mut prev = self.prev.lock().expect("guard lock");
        tags.iter()
            .zip(replies)
            .map(|(tag, r)| {
                let loss = judge(prev.get(tag).copied(), r);
                prev.insert(tag.clone(), r.seq);
                loss
            })
            .collect()
    }
}

/// The value the epoch check-and-set replaces: after `WritesLost`, the
/// epoch this thread last went on with (`known`), not the one just read. If
/// they differ, the current one was set after the loss (a write before it
/// would have been seen, one after it but before the loss would have been
/// lost too) — by another thread that found the same loss — and is kept, so
/// threads finding one loss agree on one epoch and no rebuild is restarted.
/// A missing epoch: empty (set only if still missing).
pub fn cas_seen(loss: Loss, known: Option<&[u8]>, read: Option<&[u8]>) -> Vec<u8> {
    match loss {
        Loss::WritesLost => known.or(read).unwrap_or_default().to_vec(),
        Loss::EpochMissing | Loss::EpochMissingAtStart => Vec::new(),
    }
}

/// A fresh epoch value (unique per process and call).
pub fn new_epoch() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        crate::worker::now_ms(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// What a rebuild read from Kafka.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Messages read within the range (timestamp ≥ the start).
    pub messages: u64,
    /// Of them, exposures and interactions handed on.
    pub events: u64,
    /// Partitions whose start came from the broker's timestamp index (the
    /// others were read from their log start, filtered by timestamp).
    pub by_time: usize,
}

/// Reads `tps` from the first message with Kafka timestamp ≥ `from_ms` up to
/// what the joiner already processed: `upto` (the next offset acknowledged,
/// or the first of the batch in flight) or the group's committed offset,
/// whichever is larger. Later messages are read by the consumer as usual.
/// Not capped by the high watermark: these offsets were read before, and
/// the dev broker (tansu) was seen reporting a watermark a few messages
/// short of what it had served. If nothing arrives for [`READ_IDLE`] the read
/// ends with what it got (a log that lost its tail), with a warning. Each message is parsed like the consumer does; and sends the events in chunks of `chunk` on `tx` (blocks
/// while the receiver is behind: bounded memory). Runs on a thread of its
/// own (librdkafka's calls block). Stops early when `stop` is set or the
/// receiver is gone.
pub fn read_window(
    cfg: &common::Config,
    tps: &[Tp],
    upto: &HashMap<Tp, i64>,
    from_ms: i64,
    chunk: usize,
    tx: &tokio::sync::mpsc::Sender<Vec<crate::join::Event>>,
    stop: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<ReadStats> {
    use anyhow::Context;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    use std::time::Duration;

    let timeout = Duration::from_secs(10);
    // The joiner's group id, to read its committed offsets; `assign` (not
    // `subscribe`) does not join the group, and nothing is committed.
    let consumer: BaseConsumer =
        common::kafka::consumer_config(&cfg.kafka, &cfg.kafka.joiner_group)
            .set("client.id", "adlog-joiner-rebuild")
            .create()
            .context("creating the rebuild's Kafka consumer")?;
    let mut stats = ReadStats::default();
    let mut query = TopicPartitionList::new();
    for tp in tps {
        query
            .add_partition_offset(&tp.0, tp.1, Offset::Offset(from_ms))
            .context("building the offsets_for_times query")?;
    }
    let committed = consumer
        .committed_offsets(query.clone(), timeout)
        .context("reading the joiner group's committed offsets")?;
    let by_time = consumer.offsets_for_times(query, timeout).ok();
    let mut ends: HashMap<Tp, i64> = HashMap::new();
    let mut assign = TopicPartitionList::new();
    for tp in tps {
        let (lo, _) = consumer
            .fetch_watermarks(&tp.0, tp.1, timeout)
            .with_context(|| format!("watermarks of {}/{}", tp.0, tp.1))?;
        let found = by_time
            .as_ref()
            .and_then(|l| l.find_partition(&tp.0, tp.1))
            .map(|e| e.offset());
        let start = match found {
            Some(Offset::Offset(o)) if o >= 0 => {
                stats.by_time += 1;
                o.max(lo)
            }
            // No message at or after the time: nothing to read.
            Some(Offset::End) => {
                stats.by_time += 1;
                i64::MAX
            }
            // No answer (a broker without a timestamp index): the whole log,
            // filtered by timestamp below.
            _ => lo,
        };
        let done = match committed.find_partition(&tp.0, tp.1).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        };
        let end = done.max(upto.get(tp).copied().unwrap_or(-1));
        if start < end {
            ends.insert(tp.clone(), end);
            assign
                .add_partition_offset(&tp.0, tp.1, Offset::Offset(start))
                .context("building the rebuild's assignment")?;
        }
    }
    if ends.is_empty() {
        return Ok(stats);
    }
    consumer
        .assign(&assign)
        .context("assigning the rebuild's partitions")?;
    let mut out = Vec::with_capacity(chunk);
    let mut last = std::time::Instant::now();
    while !ends.is_empty() {
        if stop.load(Ordering::Acquire) {
            anyhow::bail!("rebuild stopped");
        }
        if last.elapsed() >= READ_IDLE {
            tracing::warn!(left = ?ends, "rebuild read: no message for {READ_IDLE:?}; ending with what was read");
            break;
        }
        let msg = match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "Kafka error while rebuilding; continuing");
                continue;
            }
            None => continue,
        };
        last = std::time::Instant::now();
        let tp: Tp = (std::sync::Arc::from(msg.topic()), msg.partition());
        let Some(&end) = ends.get(&tp) else { continue };
        if msg.offset() >= end {
            ends.remove(&tp);
            continue;
        }
        if msg.offset() + 1 >= end {
            ends.remove(&tp);
        }
        if msg.timestamp().to_millis().is_some_and(|ts| ts < from_ms) {
            continue;
        }
        stats.messages += 1;
        if let Ok(ev) = crate::worker::parse(cfg, msg.topic(), msg.payload().unwrap_or_default()) {
            stats.events += 1;
            out.push(ev);
        }
        if out.len() >= chunk && tx.blocking_send(std::mem::take(&mut out)).is_err() {
            anyhow::bail!("rebuild abandoned");
        }
    }
    if !out.is_empty() && tx.blocking_send(out).is_err() {
        anyhow::bail!("rebuild abandoned");
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(seq: i64, epoch: Option<&str>, rebuilt: &[Option<&str>]) -> GuardReply {
        GuardReply {
            seq,
            epoch: epoch.map(|e| e.as_bytes().to_vec()),
            rebuilt: rebuilt
                .iter()
                .map(|m| m.map(|m| m.as_bytes().to_vec()))
                .collect(),
        }
    }

    #[test]
    fn judge_finds_an_empty_redis_and_a_sequence_that_went_back() {
        assert_eq!(judge(None, &reply(1, Some("e1"), &[])), None);
        assert_eq!(judge(Some(4), &reply(5, Some("e1"), &[])), None);
        // A failed attempt may have run its INCR: skipping values is fine.
        assert_eq!(judge(Some(4), &reply(7, Some("e1"), &[])), None);
        assert_eq!(
            judge(Some(4), &reply(4, Some("e1"), &[])),
            Some(Loss::WritesLost)
        );
        assert_eq!(
            judge(Some(9), &reply(1, Some("e1"), &[])),
            Some(Loss::WritesLost)
        );
        assert_eq!(
            judge(Some(9), &reply(1, None, &[])),
            Some(Loss::EpochMissing)
        );
        assert_eq!(
            judge(None, &reply(1, None, &[])),
            Some(Loss::EpochMissingAtStart)
        );
    }

    #[test]
    fn a_loss_replaces_only_the_epoch_the_thread_knew() {
        // Another thread already set e2 after the loss: kept (no CAS match).
        assert_eq!(
            cas_seen(Loss::WritesLost, Some(b"e1"), Some(b"e2")),
            b"e1".to_vec()
        );
        assert_eq!(
            cas_seen(Loss::WritesLost, None, Some(b"e2")),
            b"e2".to_vec()
        );
        assert!(cas_seen(Loss::EpochMissing, Some(b"e1"), None).is_empty());
        assert!(cas_seen(Loss::EpochMissingAtStart, None, None).is_empty());
    }

    #[test]
    fn stale_partitions_are_the_ones_not_marked_with_the_epoch() {
        let r = reply(1, Some("e2"), &[Some("e2"), None, Some("e1")]);
        assert_eq!(stale(b"e2", &r.rebuilt), vec![1, 2]);
        assert!(stale(b"e2", &[Some(b"e2".to_vec())]).is_empty());
    }

    #[test]
    fn guard_tracks_the_sequence_per_tag() {
        let g = Guard::new(GuardKeys::new("p:", "jg"), "t".into());
        let tags = vec!["a".to_string(), "b".to_string()];
        let ok = [reply(3, Some("e"), &[]), reply(8, Some("e"), &[])];
        assert_eq!(g.observe(&tags, &ok), vec![None, None]);
        let later = [reply(4, Some("e"), &[]), reply(2, Some("e"), &[])];
        assert_eq!(g.observe(&tags, &later), vec![None, Some(Loss::WritesLost)]);
        // The value read after the loss is the new baseline.
        let after = [reply(5, Some("e"), &[]), reply(3, Some("e"), &[])];
        assert_eq!(g.observe(&tags, &after), vec![None, None]);
    }

    #[test]
    fn rebuild_starts_a_window_and_the_slack_before_now() {
        let now = 1_800_000_000_000;
        assert_eq!(rebuild_from_ms(now, 3_600_000, 600_000), now - 4_200_000);
        assert_eq!(rebuild_from_ms(1_000, 3_600_000, 600_000), 0);
    }

    #[test]
    fn guard_commands_and_replies_line_up() {
        let keys = GuardKeys::new("p:", "jg");
        let tps: Vec<Tp> = vec![("exposure".into(), 0), ("interaction".into(), 3)];
        let tags = vec!["g0".to_string(), "g1".to_string()];
        let mut c = Commands::new();
        assert_eq!(push_commands(&keys, &tags, "tok", &tps, &mut c), 2 * 5);
        assert_eq!(keys.rebuilt("g1", &tps[1]), "p:jg:{g1}:rb:interaction:3");
        assert_eq!(
            key_slot(keys.epoch("g1").as_bytes()),
            key_slot(keys.seq("g1", "tok").as_bytes())
        );
        let replies = vec![
            Value::Int(3),
            Value::Int(1),
            Value::BulkString(b"e".to_vec()),
            Value::Nil,
            Value::BulkString(b"e".to_vec()),
            Value::Int(1),
            Value::Int(1),
            Value::Nil,
            Value::Nil,
            Value::Nil,
        ];
        let r = parse_replies(2, 2, &replies).unwrap();
        assert_eq!(r[0], reply(3, Some("e"), &[None, Some("e")]));
        assert_eq!(r[1], reply(1, None, &[None, None]));
        assert!(parse_replies(2, 1, &replies).is_err());
    }

    #[test]
    fn a_tag_for_every_slot() {
        for slot in [0u16, 1, 5_000, 12_182, 16_383] {
            let tag = tag_for_slot(slot);
            assert_eq!(key_slot(format!("x{{{tag}}}y").as_bytes()), slot, "{tag}");
        }
    }
}
