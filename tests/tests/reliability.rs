//! Fault scenarios against the whole pipeline: load generator → Kafka →
//! ingest → ClickHouse, joiner ⇄ Redis → joined topic → ingest → ods_joined.
//!
//! Every scenario runs the real binaries, injects its fault while the
//! generator is sending, then checks exactly (`Outcome::assert_exact`):
//! every input message (topic, partition, offset) is in exactly one table
//! (its ods_* table or dead_letter) — lost = 0, duplicated = 0 — the per-table
//! counts and dead-letter reasons equal the manifest, and the distinct
//! joined ids in ods_joined are exactly the manifest's expected pairs (each
//! with its mark_id, action and delay), and every rollup and trace table
//! equals what the raw rows imply (`integration_tests::rollups`).
//!
//! The fast scale runs in CI (`cargo test`); `bench/reliability` runs the
//! `#[ignore]`d long scale (more events, more and longer faults) and the
//! broker restart, and writes the table to docs/RELIABILITY.md. Each row is
//! also appended to `target/reliability/results.md`.
//!
//! Services a scenario stops or freezes are its own (`OwnStack` via
//! `dev/stack` with a private state dir and free ports, `OwnRedis` with AOF);
//! the shared stack stays up for the other tests.

use std::net::ToSocketAddrs;
use std::time::{Duration, Instant};

use common::Config;
use integration_tests::generate;
use integration_tests::reliability::{
    http_host_port, pipeline_config, DelayProxy, OwnRedis, OwnStack, Pipeline,
};
use tokio::task::JoinHandle;

#[derive(Clone, Copy)]
struct Scale {
    events: u64,
    rate: u64,
    /// Kills / restarts per scenario.
    repeats: u32,
    /// How long a service stays down (or frozen, or slow).
    outage: Duration,
    /// Until everything is stored after the generator finished.
    timeout: Duration,
    tag: &'static str,
}

const CI: Scale = Scale {
    events: 36_000,
    rate: 3_000,
    repeats: 2,
    outage: Duration::from_secs(8),
    timeout: Duration::from_secs(240),
    tag: "",
};

const LONG: Scale = Scale {
    events: 400_000,
    rate: 8_000,
    repeats: 5,
    outage: Duration::from_secs(25),
    timeout: Duration::from_secs(900),
    tag: " (long)",
};

type Gen = JoinHandle<anyhow::Result<loadgen::Manifest>>;

fn start_generator(cfg: &Config, s: Scale) -> Gen {
    let cfg = cfg.clone();
    tokio::spawn(async move { generate(&cfg, s.events, s.rate).await })
}

async fn manifest(gen: Gen) -> loadgen::Manifest {
    gen.await.expect("generator task").expect("generator")
}

fn block<R>(f: impl FnOnce() -> R) -> R {
    tokio::task::block_in_place(f)
}

/// `s` with its rate lowered (never raised) so that sending lasts through
/// `outages` outages and a recovery after each: every fault must land while
/// events still flow. At the full CI rate (12 s of sending) a fast run stored
/// the last event during the first recovery, and the second outage's wait for
/// more rows timed out.
fn spanning(s: Scale, outages: u32) -> Scale {
    let need = (s.outage + Duration::from_secs(10)) * outages + Duration::from_secs(5);
    let rate = (s.events as f64 / need.as_secs_f64()) as u64;
    Scale {
        rate: s.rate.min(rate.max(1)),
        ..s
    }
}

/// Waits until the pipeline stored `more` raw rows beyond `from`.
fn wait_raw(pl: &mut Pipeline, from: u64, more: u64) -> u64 {
    pl.wait_for("rows to flow", Duration::from_secs(120), |p| {
        p.raw() >= from + more
    });
    pl.progress().raw()
}

fn wait_joined(pl: &mut Pipeline, more: u64) {
    let from = pl.progress().joined_ids;
    pl.wait_for("joined rows to flow", Duration::from_secs(120), |p| {
        p.joined_ids >= from + more
    });
}

/// A stack of the scenario's own (tag `tag`) with `svc` started.
fn own_stack(tag: &str, svc: &str) -> OwnStack {
    block(|| {
        let own = OwnStack::new(tag);
        own.up(svc);
        own
    })
}

// ------------------------------------------------------------- scenarios ---

/// The frame every scenario shares: ingest and joiner (tagged `tag`) run on
/// `cfg` while the generator sends `s.events`; `faults` acts meanwhile (it
/// runs on a blocking thread); then the workers finish and the exact checks
/// run (`ch_url`: ClickHouse for the checks, never through a proxy).
async fn scenario(
    name: &str,
    cfg: &Config,
    ch_url: &str,
    s: Scale,
    tag: &str,
    faults: impl FnOnce(&mut Pipeline),
) -> integration_tests::reliability::Outcome {
    let mut pl = block(|| Pipeline::new(name, cfg.clone(), ch_url));
    pl.start("ingest", tag);
    pl.start("joiner", tag);
    pl.expect(s.events);
    let gen = start_generator(cfg, s);
    block(|| faults(&mut pl));
    let m = manifest(gen).await;
    block(|| pl.finish(&m, s.timeout))
}

async fn kill9_ingest(s: Scale) {
    let name = format!("kill -9 ingest ×{}{}", s.repeats, s.tag);
    let cfg = pipeline_config("rel_kill_ingest");
    let o = scenario(&name, &cfg, &cfg.clickhouse.url, s, "0", |pl| {
        let mut seen = 0;
        for i in 0..s.repeats {
            seen = wait_raw(pl, seen, 1);
            std::thread::sleep(Duration::from_millis(400 + 250 * (i as u64 % 4)));
            pl.kill9("ingest");
            pl.start("ingest", &(i + 1).to_string());
            pl.recovered("raw", Duration::from_secs(60));
        }
    })
    .await;
    o.assert_exact();
}

async fn kill9_joiner(s: Scale) {
    let name = format!("kill -9 joiner ×{}{}", s.repeats, s.tag);
    let cfg = pipeline_config("rel_kill_joiner");
    let o = scenario(&name, &cfg, &cfg.clickhouse.url, s, "0", |pl| {
        for i in 0..s.repeats {
            wait_joined(pl, 1);
            std::thread::sleep(Duration::from_millis(300 + 250 * (i as u64 % 4)));
            pl.kill9("joiner");
            pl.start("joiner", &(i + 1).to_string());
            pl.recovered("joined", Duration::from_secs(60));
        }
    })
    .await;
    o.assert_exact();
}

async fn clickhouse_stop_restart(s: Scale) {
    let s = spanning(s, s.repeats.min(2));
    let name = format!(
        "ClickHouse stopped {} s and restarted ×{}{}",
        s.outage.as_secs(),
        s.repeats.min(2),
        s.tag
    );
    let own = own_stack("ch", "clickhouse");
    let mut cfg = pipeline_config("rel_ch_restart");
    cfg.clickhouse.url = own.ch_url();
    let o = scenario(&name, &cfg, &own.ch_url(), s, "0", |pl| {
        let mut seen = 0;
        for _ in 0..s.repeats.min(2) {
            wait_raw(pl, seen, 1);
            own.down("clickhouse");
            pl.hold(s.outage);
            own.up("clickhouse");
            pl.recovered("raw", Duration::from_secs(90));
            seen = pl.progress().raw();
        }
    })
    .await;
    assert!(
        o.peak_rss_ingest_mib < 256.0,
        "ingest memory during the outage: {} MiB",
        o.peak_rss_ingest_mib
    );
    let mut o = o;
    // A server SIGKILLed mid-INSERT can have written a block's raw part but
    // not all its views' parts (ARCHITECTURE.md, invariant 3, limits): then,
    // and only then, a rollup difference is the documented limit, reported
    // rather than failed. A server that stopped on SIGTERM must leave every
    // rollup exact.
    if own.sigkills() > 0 && !o.rollup_mismatches.is_empty() {
        for r in std::mem::take(&mut o.rollup_mismatches) {
            eprintln!("known limit (server SIGKILLed mid-INSERT): {r}");
            o.notes.push(format!("after SIGKILL: {r}"));
        }
    }
    o.assert_exact();
}

async fn clickhouse_slow(s: Scale) {
    let delay = Duration::from_millis(400);
    let name = format!(
        "ClickHouse slow: +{} ms each way for {} s{}",
        delay.as_millis(),
        (s.outage * 2).as_secs(),
        s.tag
    );
    let mut cfg = pipeline_config("rel_ch_slow");
    let direct = cfg.clickhouse.url.clone();
    let target = http_host_port(&direct)
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap();
    let proxy = DelayProxy::start(target, delay);
    cfg.clickhouse.url = proxy.url();
    let o = scenario(&name, &cfg, &direct, s, "0", |pl| {
        wait_raw(pl, 0, 1);
        pl.hold(s.outage * 2);
        proxy.set_delay(Duration::ZERO);
        pl.recovered("raw", Duration::from_secs(60));
    })
    .await;
    o.assert_exact();
}

async fn redis_restart(s: Scale) {
    let s = spanning(s, s.repeats.min(3));
    let name = format!(
        "Redis killed, down {} s, restarted (AOF) ×{}{}",
        s.outage.as_secs(),
        s.repeats.min(3),
        s.tag
    );
    let mut redis = block(|| OwnRedis::start("rel"));
    let mut cfg = pipeline_config("rel_redis");
    cfg.redis.url = redis.url();
    let o = scenario(&name, &cfg, &cfg.clickhouse.url, s, "0", |pl| {
        for _ in 0..s.repeats.min(3) {
            wait_joined(pl, 1);
            redis.kill9();
            pl.hold(s.outage);
            redis.up();
            pl.recovered("joined", Duration::from_secs(60));
        }
    })
    .await;
    o.assert_exact();
}

/// How a scenario's Redis (no AOF) loses the join state.
#[derive(Clone, Copy, PartialEq)]
enum RedisLoss {
    /// Killed and restarted empty (no persistence at all).
    Empty,
    /// A snapshot is taken mid-stream, writes go on, then Redis is killed and
    /// restarts from the snapshot: what a failover to a replica that missed
    /// the last writes looks like. The epoch key survives.
    OlderSnapshot,
}

/// Redis without AOF loses the join state mid-stream (`loss`), `repeats`
/// times: the joiner must find it (the epoch key gone, or its guard sequence
/// gone back) and rebuild the window from Kafka, so the joined ids stay
/// exactly the expected pairs (joiner/README.md, "Redis loss"), and each loss
/// must be repaired by a rebuild of that reason that re-read events.
async fn redis_loss(s: Scale, loss: RedisLoss) {
    let repeats = s.repeats.min(3);
    // Every loss must land while the generator still sends (a snapshot taken
    // after the last write loses nothing, and no rebuild is due): short
    // outages and a third of the rate. At the full CI rate (12 s of sending)
    // the second loss of a loaded CI machine came after the last event
    // ("no writes_lost rebuild after loss 2", pairs exact).
    let outage = s.outage / 4;
    let s = Scale {
        rate: s.rate / 3,
        ..s
    };
    // A thread that finds the epoch set by another after the loss still
    // sees its own sequence gone back: `writes_lost` either way.
    let (what, tag, reasons): (_, _, &[&str]) = match loss {
        RedisLoss::Empty => (
            "killed, restarted empty",
            "rel_redis_vol",
            &["epoch_missing", "writes_lost"],
        ),
        RedisLoss::OlderSnapshot => (
            "restarted from a snapshot taken before the last writes",
            "rel_redis_snap",
            &["writes_lost"],
        ),
    };
    let name = format!(
        "Redis (no AOF) {what}, down {} s ×{repeats}{}",
        outage.as_secs(),
        s.tag
    );
    let mut redis = block(|| OwnRedis::start_volatile(tag));
    let mut cfg = pipeline_config(tag);
    cfg.redis.url = redis.url();
    let mut counts = Vec::new();
    let o = scenario(&name, &cfg, &cfg.clickhouse.url, s, "0", |pl| {
        for _ in 0..repeats {
            wait_joined(pl, 1);
            let before = rebuilt_after(pl, reasons);
            if loss == RedisLoss::OlderSnapshot {
                redis.save();
                pl.hold(outage);
            }
            redis.kill9();
            pl.hold(outage);
            redis.up();
            pl.recovered("joined", Duration::from_secs(60));
            counts.push((before, rebuilt_after(pl, reasons)));
        }
    })
    .await;
    o.assert_exact();
    for (i, (before, after)) in counts.iter().enumerate() {
        assert!(
            after > before,
            "no {reasons:?} rebuild after loss {}: {counts:?}",
            i + 1
        );
    }
}

/// The joiner's log lines of rebuilds for one of `reasons` that re-read events.
fn rebuilt_after(pl: &Pipeline, reasons: &[&str]) -> usize {
    pl.log_lines("joiner", "Redis state rebuilt from Kafka")
        .iter()
        .filter(|l| {
            reasons
                .iter()
                .any(|r| l.contains(&format!("reason=\"{r}\"")))
                && !l.contains(" events=0 ")
        })
        .count()
}

/// The broker process hangs (SIGSTOP) for the outage and resumes (SIGCONT):
/// every client's connection stalls, nothing is refused, and the broker keeps
/// its (in-memory) data — what a long GC pause, a frozen VM or a network
/// black hole look like. Its data surviving, the counts must be exact.
async fn broker_frozen(s: Scale) {
    let name = format!(
        "Kafka broker frozen {} s (SIGSTOP) ×{}{}",
        s.outage.as_secs(),
        s.repeats.min(2),
        s.tag
    );
    let own = own_stack("kafka", "kafka");
    let mut cfg = pipeline_config("rel_broker_freeze");
    cfg.kafka.brokers = own.kafka_brokers();
    let o = scenario(&name, &cfg, &cfg.clickhouse.url, s, "0", |pl| {
        let mut seen = 0;
        for _ in 0..s.repeats.min(2) {
            wait_raw(pl, seen, 1);
            own.freeze("kafka", true);
            pl.hold(s.outage);
            own.freeze("kafka", false);
            pl.recovered("raw", Duration::from_secs(90));
            seen = pl.progress().raw();
        }
    })
    .await;
    o.assert_exact();
}

/// ClickHouse hangs (SIGSTOP) while a second ingest worker joins the group,
/// with a short `max.poll.interval.ms`: the first worker's revocation and the
/// second one's recovery both wait for ClickHouse. Neither may stop polling
/// for it (a member that overstays max.poll.interval.ms is expelled from its
/// group: seen leaving the group stuck with a third of its lines unconsumed),
/// and once ClickHouse resumes the counts must be exact.
async fn clickhouse_frozen_rebalance(s: Scale) {
    let name = format!(
        "ClickHouse frozen {} s (SIGSTOP) while a second ingest worker joins, \
         max.poll.interval.ms 8 s{}",
        (s.outage * 2).as_secs(),
        s.tag
    );
    let own = own_stack("chfreeze", "clickhouse");
    let mut cfg = pipeline_config("rel_ch_freeze");
    cfg.clickhouse.url = own.ch_url();
    cfg.kafka
        .properties
        .insert("max.poll.interval.ms".into(), "8000".into());
    let mut expelled = Vec::new();
    let o = scenario(&name, &cfg, &own.ch_url(), s, "a", |pl| {
        wait_raw(pl, 0, 1);
        // The second worker checks ClickHouse at start, then joins the group
        // (~3 s): freeze ClickHouse in between, so that the rebalance, the
        // first worker's revocation and the second one's recovery all meet
        // a ClickHouse that does not answer.
        let b = pl.start("ingest", "b");
        pl.wait_log(b, "ClickHouse reachable", Duration::from_secs(30));
        own.freeze("clickhouse", true);
        pl.hold(s.outage * 2);
        own.freeze("clickhouse", false);
        pl.recovered("raw", Duration::from_secs(90));
        expelled = pl.log_lines("ingest", "maximum poll interval");
    })
    .await;
    assert!(
        expelled.is_empty(),
        "an ingest worker stopped polling while ClickHouse was frozen:\n{}",
        expelled.join("\n")
    );
    o.assert_exact();
}

/// A second ingest worker and a second joiner join the groups while the
/// first ones hold every partition with open batches (long batch wait), then
/// the first ones leave (SIGTERM): two rebalances mid-batch.
async fn rebalance(s: Scale) {
    let name = format!(
        "second worker joins, first leaves (rebalance mid-batch){}",
        s.tag
    );
    let mut cfg = pipeline_config("rel_rebalance");
    cfg.ingest.batch_max_rows = 20_000;
    cfg.ingest.flush_interval_ms = 2_000;
    cfg.ingest.flush_age_ms = 0;
    // One consumer per joiner process: with two, after the first joiner's two
    // members left, the dev broker (tansu) gave the remaining members their
    // partitions back only after 90 s, once not within 240 s (see
    // docs/RELIABILITY.md). One member per process, like ingest, rebalances
    // in ~3 s.
    cfg.joiner.consumers = 1;
    let o = scenario(&name, &cfg, &cfg.clickhouse.url, s, "a", |pl| {
        wait_raw(pl, 0, 1);
        wait_joined(pl, 1);
        let ingest_b = pl.start("ingest", "b");
        let joiner_b = pl.start("joiner", "b");
        // The first rebalance completes before the first ones leave: a
        // leader that leaves while its group rebalances wedges the dev
        // broker's group for good (docs/RELIABILITY.md, "known limits").
        pl.wait_assigned(ingest_b, Duration::from_secs(90));
        pl.wait_assigned(joiner_b, Duration::from_secs(90));
        pl.recovered("raw", Duration::from_secs(60));
        // Then the first ones ("a", the oldest) leave.
        let seen = pl.progress().raw();
        wait_raw(pl, seen, 1);
        pl.term_oldest("ingest");
        pl.term_oldest("joiner");
        pl.recovered("raw", Duration::from_secs(60));
    })
    .await;
    o.assert_exact();
}

// ---------------------------------------------------------------- CI scale ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_ingest_repeatedly_exact() {
    kill9_ingest(CI).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_joiner_repeatedly_exact() {
    kill9_joiner(CI).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_stopped_and_restarted_exact() {
    clickhouse_stop_restart(CI).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_slow_exact() {
    clickhouse_slow(CI).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_exact() {
    redis_restart(CI).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_without_persistence_restarted_empty_exact() {
    redis_loss(CI, RedisLoss::Empty).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_from_an_older_snapshot_exact() {
    redis_loss(CI, RedisLoss::OlderSnapshot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_broker_frozen_exact() {
    broker_frozen(CI).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_frozen_during_rebalance_exact() {
    clickhouse_frozen_rebalance(CI).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_mid_batch_exact() {
    rebalance(CI).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long-only for now: after the broker lost its log, ingest's consumer was \
            once (1 of 4 runs) never assigned the recreated joined topic within \
            90 s (librdkafka saw no change to rejoin for); the input topics were exact \
            in every run. Run by bench/reliability."]
async fn kafka_broker_restarted_log_lost_exact() {
    broker_restarted(Scale {
        events: 12_000,
        ..CI
    })
    .await;
}

// ------------------------------------------------- long scale (bench only) ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run by bench/reliability"]
async fn long_kill_9_ingest() {
    kill9_ingest(LONG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run by bench/reliability"]
async fn long_kill_9_joiner() {
    kill9_joiner(LONG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run by bench/reliability"]
async fn long_clickhouse_stopped_and_restarted() {
    clickhouse_stop_restart(Scale {
        outage: Duration::from_secs(60),
        ..LONG
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run by bench/reliability"]
async fn long_clickhouse_slow() {
    clickhouse_slow(LONG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run by bench/reliability"]
async fn long_redis_killed_and_restarted() {
    redis_restart(LONG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run by bench/reliability"]
async fn long_kafka_broker_frozen() {
    // Below librdkafka's 30 s request timeout: a longer freeze makes the
    // load generator's producer resend (it has no idempotence), which would
    // duplicate input messages in Kafka, not in the pipeline.
    broker_frozen(Scale {
        outage: Duration::from_secs(20),
        ..LONG
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run by bench/reliability"]
async fn long_rebalance_mid_batch() {
    rebalance(LONG).await;
}

/// The dev broker (tansu, in-memory) is stopped and started again: every
/// topic, message and committed offset is gone, and the recreated topics
/// hand out offsets 0.. again, which ingest's ledger already holds for the
/// earlier incarnation. What this shows: the workers survive a broker that is
/// down for the outage and comes back empty (no crash, they reconnect and
/// rejoin their groups); everything sent before the restart was stored
/// exactly; and everything sent after it is stored exactly too — recovery
/// tells the ledger's stale ranges from the new messages at the same offsets
/// by their Kafka timestamps (ingest/src/recovery.rs) instead of skipping them.
/// What it cannot show: that messages the broker held but nobody had consumed
/// yet survive — an in-memory broker loses them; a durable one (Apache Kafka,
/// tansu with a storage engine) keeps them.
async fn broker_restarted(s: Scale) {
    let name = format!(
        "Kafka broker restarted with its log lost (offsets reused){}",
        s.tag
    );
    let own = own_stack("kafka-restart", "kafka");
    let mut cfg = pipeline_config("rel_broker_restart");
    cfg.kafka.brokers = own.kafka_brokers();
    let mut pl = block(|| Pipeline::new(&name, cfg.clone(), &cfg.clickhouse.url));
    pl.start("ingest", "0");
    pl.start("joiner", "0");
    let half = Scale {
        events: s.events / 2,
        ..s
    };
    pl.expect(half.events);
    let a = manifest(start_generator(&cfg, half)).await;
    let db = cfg.clickhouse.database.clone();
    block(|| {
        pl.wait_for("phase A stored", s.timeout, |p| {
            p.raw() + p.dead_letter >= a.totals.messages
                && p.joined_ids >= a.expected_pairs.len() as u64
        });
        std::thread::sleep(Duration::from_secs(3));
        let o = integration_tests::reliability::verify(&pl.ch_url, &db, &a);
        eprintln!(
            "before the restart: lost {} duplicated {}",
            o.lost, o.duplicated
        );
        o.assert_exact();
        own.down("kafka");
        pl.hold(s.outage);
        own.up("kafka");
    });
    // Phase B: other events (another seed) into the recreated topics.
    let mut cfg_b = cfg.clone();
    cfg_b.loadgen.seed += 1;
    let b = manifest(start_generator(&cfg_b, half)).await;
    let mut o = block(|| {
        pl.recovered("raw", Duration::from_secs(120));
        let want_raw = a.totals.messages + b.totals.messages;
        let want_joined = (a.expected_pairs.len() + b.expected_pairs.len()) as u64;
        // Wait until everything arrived or nothing moved for 90 s (ingest
        // sees the joined topic again only once the joiner's first event has
        // recreated it and a metadata refresh and a rejoin followed: ~30 s
        // on tansu).
        let (mut last, mut since) = (pl.progress(), Instant::now());
        while since.elapsed() < Duration::from_secs(90) {
            pl.assert_running();
            let p = pl.progress();
            if p.raw() + p.dead_letter >= want_raw && p.joined_ids >= want_joined {
                break;
            }
            if p != last {
                (last, since) = (p, Instant::now());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        std::thread::sleep(Duration::from_secs(3));
        // Offsets 0.. of phase B reuse phase A's: a message is its
        // coordinates plus its Kafka timestamp.
        let mut o = integration_tests::reliability::verify_all(&pl.ch_url, &db, &[&a, &b]);
        o.scenario = name.clone();
        o.faults = 1;
        o.notes.push(format!(
            "topics recreated empty: {} messages before the restart, {} after into offsets 0..",
            a.totals.messages, b.totals.messages
        ));
        o
    });
    o.recovery_s = pl.recoveries.first().map(|d| d.as_secs_f64());
    o.peak_rss_ingest_mib = pl.rss.peak_kib("ingest") as f64 / 1024.0;
    o.peak_rss_joiner_mib = pl.rss.peak_kib("joiner") as f64 / 1024.0;
    o.record();
    o.assert_exact();
    // The workers survived and still exit cleanly.
    block(|| {
        pl.term("ingest");
        pl.term("joiner");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run by bench/reliability"]
async fn long_kafka_broker_restarted() {
    broker_restarted(LONG).await;
}
