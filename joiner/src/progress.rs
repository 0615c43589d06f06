//! How far each side's topic has been processed, so that the unmatched
//! sweeper is never early (issue 12 §4).
//!
//! An entry of the due lists is due at `T` = its batch's processing time +
//! window. Its partner, if any, has an event time ≤ T (event time is not after
//! processing time) and reaches Kafka within `unmatched_slack_ms` of its event
//! time; so once every partition of the partner's topic has been processed up
//! to `T + slack`, the partner would have been joined, and "unmatched" is
//! final. Each consumer thread publishes, per owned partition and in the
//! pipeline of every batch (and of the idle guard every 5 s), a *progress*
//! time `P`: everything the partition held at `P` is written to Redis. `P` is
//! the larger of
//!
//! * the Kafka timestamp of the last message of the partition in the batch
//!   (messages before it in the log are processed too), and
//! * the time of the last librdkafka statistics sample that saw the
//!   partition's consumer lag at 0, taken before the batch was sealed (what was
//!   polled by then is in this batch or an earlier one).
//!
//! The sweeper reads the other side's hash (`<p>jwm:<topic>`, field = the
//! partition, 1 day TTL) and sweeps only buckets that end at or before
//! [`horizon`] = min(now, min P) − slack. A thread that stopped publishing
//! (crashed, Redis-loss rebuild, revoked and not yet re-owned) holds the
//! sweeper back at its last `P` until the partition's next owner catches up;
//! no hash (a new deployment, or no joiner for a day) falls back to now −
//! slack. Partitions never processed by any joiner are not in the hash and do
//! not hold it back.
//!
//! Published with a plain `HSET` (last writer wins): a new owner replaying
//! uncommitted messages may lower `P`, which only delays the sweeper.

use std::collections::HashMap;
use std::sync::Arc;

use redis::Value;

use crate::store::{bulk, Commands};

/// A topic partition, as the worker names it.
pub type Tp = (Arc<str>, i32);

/// Lifetime of a progress hash after its last write: a joiner that stops for
/// longer leaves the sweeper to the slack alone.
pub const PROGRESS_TTL_MS: u64 = 24 * 3600 * 1000;

/// The progress hash of `topic`.
pub fn key(prefix: &str, topic: &str) -> String {
    format!("{prefix}jwm:{topic}")
}

/// The progress of each partition to publish: the larger of the batch's last
/// message timestamp and the last caught-up sample, per partition; sorted.
pub fn merge(last_ts: &HashMap<Tp, i64>, caught_up: &HashMap<Tp, i64>) -> Vec<(Tp, i64)> {
    let mut out: HashMap<Tp, i64> = caught_up.clone();
    for (tp, ts) in last_ts {
        let e = out.entry(tp.clone()).or_insert(*ts);
        *e = (*e).max(*ts);
    }
    let mut v: Vec<(Tp, i64)> = out.into_iter().filter(|(_, p)| *p > 0).collect();
    v.sort();
    v
}

/// Appends the `HSET`s (+ `PEXPIRE`) publishing `progress`, one key per
/// topic; returns how many commands (and so replies) were appended.
pub fn push_commands(prefix: &str, progress: &[(Tp, i64)], c: &mut Commands) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < progress.len() {
        let topic = &progress[i].0 .0;
        let k = key(prefix, topic);
        let mut hset = redis::cmd("HSET");
        hset.arg(&k);
        while i < progress.len() && &progress[i].0 .0 == topic {
            hset.arg(progress[i].0 .1).arg(progress[i].1);
            i += 1;
        }
        c.push(k.as_bytes(), hset);
        let mut exp = redis::cmd("PEXPIRE");
        exp.arg(&k).arg(PROGRESS_TTL_MS);
        c.push(k.as_bytes(), exp);
        n += 2;
    }
    n
}

/// The progress values of an `HGETALL` reply (RESP2 array or RESP3 map).
pub fn parse(reply: &Value) -> Vec<i64> {
    let num = |v: &Value| {
        bulk(v)
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.parse::<i64>().ok())
    };
    match reply {
        Value::Array(items) => items.iter().skip(1).step_by(2).filter_map(num).collect(),
        Value::Map(pairs) => pairs.iter().filter_map(|(_, v)| num(v)).collect(),
        _ => Vec::new(),
    }
}

/// The time up to which due entries may be judged: the least progress of the
/// partner topic's partitions (never after `now`; `now` when none is known),
/// minus the slack.
pub fn horizon(now: i64, progress: &[i64], slack_ms: i64) -> i64 {
    progress.iter().copied().fold(now, i64::min) - slack_ms
}

/// [`horizon`] from the progress hash `key` (one round trip).
pub async fn read_horizon(
    store: &crate::store::Store,
    key: &str,
    slack_ms: i64,
) -> Result<i64, crate::store::StoreError> {
    let mut get = redis::cmd("HGETALL");
    get.arg(key);
    let mut c = Commands::new();
    c.push(key.as_bytes(), get);
    let reply = store.exec(&c).await?.pop();
    let progress = reply.as_ref().map(parse).unwrap_or_default();
    Ok(horizon(crate::worker::now_ms(), &progress, slack_ms))
}

/// The last due bucket (of `bucket_ms`) that ends at or before `horizon`.
pub fn last_sweepable_bucket(horizon: i64, bucket_ms: i64) -> i64 {
    horizon.div_euclid(bucket_ms) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(t: &str, p: i32) -> Tp {
        (Arc::from(t), p)
    }

    #[test]
    fn horizon_is_the_least_progress_capped_at_now_minus_slack() {
        assert_eq!(
            horizon(100_000, &[], 5_000),
            95_000,
            "none known: now - slack"
        );
        assert_eq!(horizon(100_000, &[90_000, 70_000, 99_000], 5_000), 65_000);
        // A producer clock ahead of ours never lets the sweeper run early.
        assert_eq!(horizon(100_000, &[250_000], 5_000), 95_000);
    }

    #[test]
    fn a_bucket_is_sweepable_only_once_it_ends_before_the_horizon() {
        // Bucket b covers [b*10 s, (b+1)*10 s).
        assert_eq!(last_sweepable_bucket(30_000, 10_000), 2);
        assert_eq!(last_sweepable_bucket(29_999, 10_000), 1);
        assert_eq!(last_sweepable_bucket(-1, 10_000), -2);
        // An interaction side stuck 40 s back holds the sweeper 4 buckets back.
        let now = 1_000_000;
        let stuck = horizon(now, &[now - 40_000], 0);
        assert_eq!(
            last_sweepable_bucket(horizon(now, &[], 0), 10_000)
                - last_sweepable_bucket(stuck, 10_000),
            4
        );
    }

    #[test]
    fn merge_takes_the_larger_of_message_time_and_caught_up_per_partition() {
        let last: HashMap<Tp, i64> = [(tp("i", 0), 500), (tp("i", 1), 900)].into();
        let caught: HashMap<Tp, i64> =
            [(tp("i", 1), 700), (tp("x", 0), 800), (tp("x", 1), 0)].into();
        assert_eq!(
            merge(&last, &caught),
            vec![(tp("i", 0), 500), (tp("i", 1), 900), (tp("x", 0), 800)]
        );
    }

    #[test]
    fn one_hset_and_pexpire_per_topic() {
        let p = vec![(tp("i", 0), 5), (tp("i", 3), 7), (tp("x", 1), 9)];
        let mut c = Commands::new();
        assert_eq!(push_commands("t:", &p, &mut c), 4);
        assert_eq!(c.len(), 4);
        assert_eq!(key("t:", "i"), "t:jwm:i");
    }

    #[test]
    fn parses_hgetall_in_both_protocols() {
        let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let arr = Value::Array(vec![b("0"), b("123"), b("1"), b("456")]);
        assert_eq!(parse(&arr), vec![123, 456]);
        let map = Value::Map(vec![(b("2"), b("789")), (b("3"), b("x"))]);
        assert_eq!(parse(&map), vec![789]);
        assert!(parse(&Value::Nil).is_empty());
    }
}
