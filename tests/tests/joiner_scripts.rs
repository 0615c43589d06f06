//! The joiner's Lua scripts against the dev stack's Redis (each test under a
//! key prefix of its own): symmetric and idempotent join steps, the joined /
//! counted flags, the bounded park list, the sweeper's once-only marks, and
//! two racing sides of one mark_id never both missing. Needs `dev/stack up redis`
//! (`ADLOG_REDIS__URL`, default redis://127.0.0.1:6379); unreachable FAILS.

use std::sync::Arc;
use std::time::Duration;

use common::config::RedisConfig;
use integration_tests::unique;
use joiner::metrics::Metrics;
use joiner::state::{self, Encoding, Keys, FLAG_COUNTED, FLAG_JOINED, FLAG_OPEN};
use joiner::store::{Commands, Store};
use redis::Value;
use schemas::{Exposure, Interaction};

const WINDOW: i64 = 3_600_000;
const TTL: i64 = 4_200_000;

async fn store() -> (Store, Keys) {
    let mut cfg = common::Config::load(None)
        .expect("config from ADLOG_* env")
        .redis;
    if cfg.cluster {
        // These tests are about the scripts; one node is enough.
        cfg = RedisConfig::default();
    }
    let s = match Store::connect(&cfg, Duration::from_secs(3), Metrics::new()).await {
        Ok(s) => s,
        Err(e) => panic!(
            "Redis is not reachable at {} ({e:#}). Start it: `dev/stack up redis`.",
            cfg.url
        ),
    };
    (s, Keys::new(&format!("{}:", unique("jscript"))).unwrap())
}

async fn exec(s: &Store, key: &str, cmd: redis::Cmd) -> Value {
    let mut c = Commands::new();
    c.push(key.as_bytes(), cmd);
    s.exec(&c).await.expect("redis").pop().unwrap()
}

fn exposure(m: &str, ts: i64) -> Exposure<'static> {
    Exposure::parse(&format!(
        "{ts}\t{m}\t4bf92f3577b34da6a3ce929d0e0e4736\t7\t1001\t2\t3\t4\tios\t1.5"
    ))
    .unwrap()
    .into_owned()
}

fn interaction(m: &str, ts: i64, action: &str) -> Interaction<'static> {
    Interaction::parse(&format!("{ts}\t{m}\tab12\t7\t{action}\t"))
        .unwrap()
        .into_owned()
}

async fn put_exposure(s: &Store, k: &Keys, e: &Exposure<'_>) -> Value {
    let mut buf = Vec::new();
    state::encode_exposure(e, Encoding::Compact, &mut buf);
    let (kx, kp) = (k.exposure(&e.mark_id), k.parked(&e.mark_id));
    let cmd = state::evalsha(
        &s.scripts.exposure,
        &[kx.as_bytes(), kp.as_bytes()],
        &[
            &buf,
            TTL.to_string().as_bytes(),
            WINDOW.to_string().as_bytes(),
        ],
    );
    exec(s, &kx, cmd).await
}

async fn put_interaction(s: &Store, k: &Keys, i: &Interaction<'_>, max_parked: usize) -> Value {
    let mut buf = Vec::new();
    state::encode_interaction(i, Encoding::Compact, &mut buf);
    let (kx, kp) = (k.exposure(&i.mark_id), k.parked(&i.mark_id));
    let cmd = state::evalsha(
        &s.scripts.interaction,
        &[kx.as_bytes(), kp.as_bytes()],
        &[
            &buf,
            TTL.to_string().as_bytes(),
            WINDOW.to_string().as_bytes(),
            max_parked.to_string().as_bytes(),
        ],
    );
    exec(s, &kx, cmd).await
}

async fn flag(s: &Store, k: &Keys, m: &str) -> Option<u8> {
    let kx = k.exposure(m);
    let mut get = redis::cmd("GET");
    get.arg(&kx);
    match exec(s, &kx, get).await {
        Value::BulkString(b) => b.first().copied(),
        _ => None,
    }
}

fn parked_count(v: &Value) -> usize {
    match v {
        Value::Array(a) => a
            .iter()
            .filter(|x| !matches!(x, Value::BulkString(b) if b.is_empty()))
            .count(),
        other => panic!("exposure script returned {other:?}"),
    }
}

#[tokio::test]
async fn join_steps_are_symmetric_and_idempotent() {
    let (s, k) = store().await;
    let e = exposure("m-a", 1_000_000);
    let early = interaction("m-a", 1_000_500, "click");
    // Interaction first: parked; its replay is recognised.
    assert_eq!(put_interaction(&s, &k, &early, 64).await, Value::Int(0));
    assert_eq!(put_interaction(&s, &k, &early, 64).await, Value::Int(1));
    // The exposure finds it (once, despite the replay) and is flagged joined.
    let r = put_exposure(&s, &k, &e).await;
    assert_eq!(parked_count(&r), 1);
    let Value::Array(items) = &r else {
        unreachable!()
    };
    let Value::BulkString(b) = &items[0] else {
        panic!()
    };
    assert_eq!(
        state::decode_interaction("m-a", b).unwrap().ts_ms,
        early.ts_ms
    );
    assert_eq!(flag(&s, &k, "m-a").await, Some(FLAG_JOINED));
    // A replayed exposure finds it again and keeps the flag.
    assert_eq!(parked_count(&put_exposure(&s, &k, &e).await), 1);
    assert_eq!(flag(&s, &k, "m-a").await, Some(FLAG_JOINED));
    // A later interaction gets the state back.
    let later = interaction("m-a", 1_900_000, "like");
    let Value::BulkString(st) = put_interaction(&s, &k, &later, 64).await else {
        panic!("expected the state");
    };
    assert_eq!(state::decode_exposure("m-a", &st).unwrap().exposure, e);

    // Out of the window (and skewed) interactions do not flag the exposure.
    let e2 = exposure("m-b", 1_000_000);
    assert_eq!(parked_count(&put_exposure(&s, &k, &e2).await), 0);
    for ts in [1_000_000 + WINDOW + 1, 999_999] {
        assert!(matches!(
            put_interaction(&s, &k, &interaction("m-b", ts, "click"), 64).await,
            Value::BulkString(_)
        ));
    }
    assert_eq!(flag(&s, &k, "m-b").await, Some(FLAG_OPEN));
    // The window's end is inclusive.
    put_interaction(&s, &k, &interaction("m-b", 1_000_000 + WINDOW, "click"), 64).await;
    assert_eq!(flag(&s, &k, "m-b").await, Some(FLAG_JOINED));
}

#[tokio::test]
async fn park_list_is_bounded() {
    let (s, k) = store().await;
    for n in 0..3 {
        let i = interaction("m-full", 1_000 + n, "click");
        assert_eq!(put_interaction(&s, &k, &i, 3).await, Value::Int(0));
    }
    let i = interaction("m-full", 5_000, "click");
    assert_eq!(put_interaction(&s, &k, &i, 3).await, Value::Int(2));
    let e = exposure("m-full", 500);
    assert_eq!(parked_count(&put_exposure(&s, &k, &e).await), 3);
}

#[tokio::test]
async fn sweeper_marks_count_each_event_once() {
    let (s, k) = store().await;
    let sweep_x = |m: &str| {
        let kx = k.exposure(m);
        (
            kx.clone(),
            state::evalsha(&s.scripts.sweep_exposure, &[kx.as_bytes()], &[]),
        )
    };
    // An open exposure is reported once, then marked counted.
    let e = exposure("m-x", 1_000_000);
    put_exposure(&s, &k, &e).await;
    let (kx, c) = sweep_x("m-x");
    assert!(matches!(exec(&s, &kx, c).await, Value::BulkString(_)));
    assert_eq!(flag(&s, &k, "m-x").await, Some(FLAG_COUNTED));
    let (kx, c) = sweep_x("m-x");
    assert_eq!(exec(&s, &kx, c).await, Value::Int(1));
    // A replay keeps "counted"; a late join still flags it joined.
    put_exposure(&s, &k, &e).await;
    assert_eq!(flag(&s, &k, "m-x").await, Some(FLAG_COUNTED));
    put_interaction(&s, &k, &interaction("m-x", 1_000_001, "click"), 64).await;
    assert_eq!(flag(&s, &k, "m-x").await, Some(FLAG_JOINED));
    // No state at all: 0 (expired before the check).
    let (kx, c) = sweep_x("m-none");
    assert_eq!(exec(&s, &kx, c).await, Value::Int(0));

    // Parked interactions: not final while the list's TTL exceeds the slack.
    let sweep_p = |m: &str, slack: i64| {
        let (kx, kp) = (k.exposure(m), k.parked(m));
        let c = state::evalsha(
            &s.scripts.sweep_parked,
            &[kx.as_bytes(), kp.as_bytes()],
            &[slack.to_string().as_bytes()],
        );
        (kx, c)
    };
    put_interaction(&s, &k, &interaction("m-p", 10, "click"), 64).await;
    put_interaction(&s, &k, &interaction("m-p", 20, "like"), 64).await;
    let (kx, c) = sweep_p("m-p", 1_000);
    assert_eq!(exec(&s, &kx, c).await, Value::Array(vec![Value::Int(2)]));
    let (kx, c) = sweep_p("m-p", TTL);
    let Value::Array(items) = exec(&s, &kx, c).await else {
        panic!()
    };
    assert_eq!(items.len(), 4, "{items:?}: [1, no state, 2 entries]");
    assert_eq!(items[0], Value::Int(1));
    assert_eq!(items[1], Value::BulkString(Vec::new()));
    // Counted: nothing new.
    let (kx, c) = sweep_p("m-p", TTL);
    assert_eq!(exec(&s, &kx, c).await, Value::Array(vec![Value::Int(0)]));
    // A new orphan after the marker is reported alone; the exposure script
    // ignores the marker.
    put_interaction(&s, &k, &interaction("m-p", 30, "close"), 64).await;
    let (kx, c) = sweep_p("m-p", TTL);
    let Value::Array(items) = exec(&s, &kx, c).await else {
        panic!()
    };
    assert_eq!(items.len(), 3, "{items:?}");
    assert_eq!(
        parked_count(&put_exposure(&s, &k, &exposure("m-p", 5)).await),
        3
    );
}

/// Two workers handling the two sides of one mark_id at the same moment:
/// exactly one of them sees the other (never both miss, never both hit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_sides_never_both_miss() {
    let (a, k) = store().await;
    let (b, _) = store().await;
    let (a, b, k) = (Arc::new(a), Arc::new(b), Arc::new(k));
    let mut tasks = Vec::new();
    for n in 0..400 {
        let m = format!("m-race-{n}");
        let (a, b, k) = (a.clone(), b.clone(), k.clone());
        tasks.push(tokio::spawn(async move {
            let e = exposure(&m, 1_000);
            let i = interaction(&m, 2_000, "click");
            let (x, y) = tokio::join!(async { put_exposure(&a, &k, &e).await }, async {
                put_interaction(&b, &k, &i, 64).await
            });
            let exposure_saw = parked_count(&x) == 1;
            let interaction_saw = matches!(y, Value::BulkString(_));
            (m, exposure_saw, interaction_saw)
        }));
    }
    let mut first_saw = [0, 0];
    for t in tasks {
        let (m, x, i) = t.await.unwrap();
        assert!(x != i, "{m}: exposure saw {x}, interaction saw {i}");
        first_saw[usize::from(x)] += 1;
        assert_eq!(flag(&a, &k, &m).await, Some(FLAG_JOINED), "{m}");
    }
    eprintln!(
        "interaction found the exposure {} times, exposure found the parked interaction {} times",
        first_saw[0], first_saw[1]
    );
}
