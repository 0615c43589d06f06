//! The default join protocol (plain pipelined hash commands, `joiner::slices`)
//! against the dev stack's Redis, each test under a key prefix of its own:
//! two racing sides of one mark_id never both miss, replays are idempotent.
//! Needs `dev/stack up redis` (`ADLOG_REDIS__URL`); unreachable FAILS.

use std::sync::Arc;
use std::time::Duration;

use common::config::RedisConfig;
use integration_tests::unique;
use joiner::join::{Event, JoinParams, Protocol};
use joiner::metrics::Metrics;
use joiner::store::Store;
use schemas::{Exposure, Interaction, Joined};

async fn setup() -> (Store, Store, Arc<JoinParams>) {
    let mut cfg = common::Config::load(None).expect("config from ADLOG_* env");
    if cfg.redis.cluster {
        cfg.redis = RedisConfig::default();
    }
    cfg.joiner.key_prefix = format!("{}:", unique("jslices"));
    cfg.joiner.state_buckets = 64;
    let connect = || async {
        Store::connect(&cfg.redis, Duration::from_secs(3), Metrics::new())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "Redis is not reachable at {} ({e:#}). Start it: `dev/stack up redis`.",
                    cfg.redis.url
                )
            })
    };
    let (a, b) = (connect().await, connect().await);
    let p = JoinParams::from_config(&cfg, Protocol::Slices).unwrap();
    (a, b, Arc::new(p))
}

fn exposure(m: &str, ts: i64) -> Event {
    Event::Exposure(
        Exposure::parse(&format!(
            "{ts}\t{m}\t4bf92f3577b34da6a3ce929d0e0e4736\t7\t1001\t2\t3\t4\tios\t1.5"
        ))
        .unwrap()
        .into_owned(),
    )
}

fn interaction(m: &str, ts: i64, action: &str) -> Event {
    Event::Interaction(
        Interaction::parse(&format!("{ts}\t{m}\tab12\t7\t{action}\t"))
            .unwrap()
            .into_owned(),
    )
}

async fn run(s: &Store, p: &JoinParams, events: &[Event]) -> Vec<u64> {
    p.slices
        .run(s, events, 1, "joined", &Metrics::new())
        .await
        .expect("redis")
        .iter()
        .map(|r| Joined::parse(&r.payload).unwrap().joined_id)
        .collect()
}

/// 400 mark_ids, each exposure and interaction sent at the same moment over
/// two connections: at least one side sees the other every time (both may;
/// the ids are equal and collapse).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_sides_never_both_miss() {
    let (a, b, p) = setup().await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    let base = 1_000_000_000i64;
    let mut tasks = Vec::new();
    for n in 0..400 {
        let m = format!("m-{n:016x}");
        let (a, b, p) = (a.clone(), b.clone(), p.clone());
        tasks.push(tokio::spawn(async move {
            let x = [exposure(&m, base + n)];
            let i = [interaction(&m, base + n + 1_000, "click")];
            let (ex, ix) = tokio::join!(run(&a, &p, &x), run(&b, &p, &i));
            (m, ex, ix)
        }));
    }
    let mut both = 0;
    for t in tasks {
        let (m, ex, ix) = t.await.unwrap();
        assert!(!(ex.is_empty() && ix.is_empty()), "{m}: both sides missed");
        if !ex.is_empty() && !ix.is_empty() {
            assert_eq!(ex, ix, "{m}: both saw, different ids");
            both += 1;
        }
    }
    eprintln!("both sides saw each other {both} times of 400");
}

/// Interaction first (parked in two slices), several per mark_id, replays:
/// the exposure joins each once, replays emit the same ids, the
/// out-of-window one does not join.
#[tokio::test]
async fn parked_interactions_join_once_and_replays_are_idempotent() {
    let (a, _, p) = setup().await;
    let w = p.window_ms;
    let te = 50 * w + w / 2; // mid-slice
    let m = "m-00000000000000aa";
    let early = [
        interaction(m, te + 10, "click"),
        interaction(m, te + 20, "like"),
        interaction(m, te + w, "share"), // the window's end is inclusive
        interaction(m, te + w + 1, "late"),
    ];
    assert!(run(&a, &p, &early).await.is_empty(), "no exposure yet");
    assert!(run(&a, &p, &early).await.is_empty(), "replay: still parked");
    let x = [exposure(m, te)];
    let mut got = run(&a, &p, &x).await;
    got.sort();
    assert_eq!(got.len(), 3, "three interactions within the window");
    let mut again = run(&a, &p, &x).await;
    again.sort();
    assert_eq!(got, again, "a replayed exposure emits the same ids");
    // A later interaction finds the exposure directly.
    let later = [interaction(m, te + 30, "comment")];
    assert_eq!(run(&a, &p, &later).await.len(), 1);
}
