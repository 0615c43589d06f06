//! The joiner against the real broker and Redis: the distinct set of joined ids
//! on the joined topic must equal the load generator's expected pairs exactly
//! (none missing, none extra, every event's fields right; copies on the topic
//! are allowed, they collapse by joined_id), with one joiner, two at once, a
//! kill -9 mid-stream, a Redis restart mid-stream and a 3-master Redis Cluster.
//!
//! Each test has its own topics, consumer group and Redis key prefix, so tests
//! run in parallel. The joiner runs as the real binary (`target/debug/joiner
//! run --config <file>`). Needs `dev/stack up` (Kafka, Redis on 6379) and, for
//! the cluster test, `dev/stack up redis-cluster` (seeds from
//! `ADLOG_TEST_REDIS_CLUSTER`, default 127.0.0.1:7000-7002); an unreachable
//! service FAILS the test with a message saying what to start. The Redis
//! restart test starts its own `redis-server` (AOF, `appendfsync always`) on a
//! free port.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Config;
use integration_tests::{bin, env_of, generate, test_config};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use schemas::Joined;

const WAIT: Duration = Duration::from_secs(240);

fn logs_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("target")
        .join("test-logs");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A private configuration: topics, group and Redis key prefix of its own,
/// quick retries and sweeps.
fn config(name: &str) -> Config {
    config_from(test_config(name))
}

/// `config()` for the unmatched tests: a 2 s window, unmatched events
/// emitted, the sweeper every 0.5 s, states kept 60 s past the window.
fn unmatched_config(name: &str) -> Config {
    let mut cfg = config(name);
    cfg.joiner.window_s = 2;
    cfg.joiner.state_ttl_slack_s = 60;
    cfg.joiner.emit_unmatched = true;
    cfg.joiner.sweep_interval_ms = 500;
    cfg
}

fn check_kafka(cfg: &Config) {
    let c: BaseConsumer = common::kafka::client_config(&cfg.kafka)
        .create()
        .expect("Kafka client");
    if let Err(e) = c.fetch_metadata(None, Duration::from_secs(10)) {
        panic!(
            "Kafka is not reachable at {} ({e}). Start the dev stack: `dev/stack up`.",
            cfg.kafka.brokers
        );
    }
}

/// PING over a plain socket.
fn redis_ping(addr: &str) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(
        &addr.parse().map_err(|e| format!("{addr}: {e}"))?,
        Duration::from_secs(3),
    )
    .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok();
    s.write_all(b"PING\r\n").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).map_err(|e| e.to_string())?;
    if buf[..n].starts_with(b"+PONG") {
        Ok(())
    } else {
        Err(format!("answered {:?}", String::from_utf8_lossy(&buf[..n])))
    }
}

fn host_port(url: &str) -> String {
    let rest = url.trim().trim_start_matches("redis://");
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    rest.split('/').next().unwrap_or(rest).to_string()
}

fn check_redis(cfg: &Config) {
    for url in cfg.redis.url.split(',') {
        if let Err(e) = redis_ping(&host_port(url)) {
            panic!(
                "Redis is not reachable at {url} ({e}). Start it: `dev/stack up redis`{}.",
                if cfg.redis.cluster {
                    " / `dev/stack up redis-cluster` (or set ADLOG_TEST_REDIS_CLUSTER)"
                } else {
                    ""
                }
            );
        }
    }
}

/// A joiner child process (killed when dropped).
struct JoinerProc {
    child: Child,
    log: PathBuf,
}

impl JoinerProc {
    fn start(cfg: &Config, tag: &str) -> JoinerProc {
        let base = format!("{}-joiner-{tag}", cfg.clickhouse.database);
        let cfg_path = logs_dir().join(format!("{base}.toml"));
        std::fs::write(&cfg_path, toml::to_string(cfg).expect("config as TOML")).unwrap();
        let log = logs_dir().join(format!("{base}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin("joiner"))
            .arg("run")
            .arg("--config")
            .arg(&cfg_path)
            // The file is the whole configuration: drop env overrides of the
            // sections the tests set (the harness's env_of only adds ours).
            .envs(env_of(cfg))
            .env("ADLOG_JOINER__KEY_PREFIX", &cfg.joiner.key_prefix)
            .env("ADLOG_REDIS__URL", &cfg.redis.url)
            .env("ADLOG_REDIS__CLUSTER", cfg.redis.cluster.to_string())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("starting the joiner");
        JoinerProc { child, log }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and the exit code (must come within `timeout`).
    fn term(&mut self, timeout: Duration) -> i32 {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            assert!(
                start.elapsed() < timeout,
                "joiner did not exit within {timeout:?} after SIGTERM (log: {})",
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The value of `adlog_joiner_<name>{<labels>}` on the joiner's
    /// `/metrics` page (0 when the series is absent).
    fn metric(&self, name: &str, labels: &str) -> f64 {
        let log = self.log.display().to_string();
        let addr = integration_tests::reliability::metrics_addr(&log, Duration::from_secs(5))
            .expect("the joiner's metrics address in its log");
        let page = integration_tests::reliability::http_get(&addr, "/metrics").unwrap();
        page.lines()
            .find(|l| l.starts_with(&format!("adlog_joiner_{name}{{{labels}}} ")))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    }

    /// Sends SIGSTOP / SIGCONT (`sig` = "STOP", "CONT").
    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(st.success(), "kill -{sig} failed");
    }

    fn assert_running(&mut self) {
        if let Some(st) = self.child.try_wait().unwrap() {
            panic!(
                "joiner exited early ({st}); log {}:\n{}",
                self.log.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

impl Drop for JoinerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the joined topic holds.
#[derive(Default)]
struct Seen {
    /// joined_id → (mark_id, action, delay_ms).
    events: BTreeMap<u64, (String, String, i64)>,
    messages: u64,
    bad: u64,
}

/// Reads the joined topic from the beginning until it holds every expected
/// id (then `linger` more, to catch extras) or `WAIT` passes. Checks that the
/// joiners stay up meanwhile.
fn read_joined(
    cfg: &Config,
    expected: &BTreeSet<u64>,
    linger: Duration,
    procs: &mut [&mut JoinerProc],
) -> Seen {
    let c: BaseConsumer = common::kafka::consumer_config(&cfg.kafka, "unused-manual-assign")
        .create()
        .expect("Kafka consumer");
    let start = Instant::now();
    let parts = loop {
        let md = c
            .fetch_metadata(Some(&cfg.topics.joined), Duration::from_secs(10))
            .expect("metadata");
        let n = md
            .topics()
            .first()
            .filter(|t| t.error().is_none())
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        if n > 0 {
            break n;
        }
        assert!(start.elapsed() < WAIT, "the joined topic never appeared");
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts as i32 {
        tpl.add_partition_offset(&cfg.topics.joined, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut seen = Seen::default();
    let mut complete_at: Option<Instant> = None;
    let mut last_check = Instant::now();
    loop {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            seen.messages += 1;
            let payload = std::str::from_utf8(m.payload().unwrap_or_default()).unwrap_or("");
            match Joined::parse(payload) {
                Ok(j) => {
                    seen.events.insert(
                        j.joined_id,
                        (j.mark_id.to_string(), j.action.to_string(), j.delay_ms),
                    );
                }
                Err(_) => seen.bad += 1,
            }
        }
        if complete_at.is_none() && expected.iter().all(|id| seen.events.contains_key(id)) {
            complete_at = Some(Instant::now());
        }
        if complete_at.is_some_and(|t| t.elapsed() >= linger) || start.elapsed() > WAIT {
            return seen;
        }
        if last_check.elapsed() > Duration::from_secs(1) {
            last_check = Instant::now();
            for p in procs.iter_mut() {
                p.assert_running();
            }
        }
    }
}

/// The distinct joined ids are exactly the manifest's pairs, with their fields.
fn assert_exact(m: &loadgen::Manifest, seen: &Seen) {
    let want: BTreeMap<u64, &loadgen::ExpectedPair> =
        m.expected_pairs.iter().map(|p| (p.joined_id, p)).collect();
    assert!(!want.is_empty(), "the manifest expects no joined pairs");
    assert!(
        m.stats.out_of_order_pairs > 0,
        "traffic must include interactions sent before their exposure"
    );
    let missing: Vec<&u64> = want
        .keys()
        .filter(|id| !seen.events.contains_key(id))
        .collect();
    let extra: Vec<&u64> = seen
        .events
        .keys()
        .filter(|id| !want.contains_key(id))
        .collect();
    let missing_ooo = missing.iter().filter(|id| want[**id].out_of_order).count();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "joined ids: {} expected, {} distinct on the topic ({} messages); {} missing ({} of them \
         out of order; first {:?}), {} unexpected (first {:?})",
        want.len(),
        seen.events.len(),
        seen.messages,
        missing.len(),
        missing_ooo,
        missing.first().map(|id| want[*id]),
        extra.len(),
        extra.first().map(|id| &seen.events[*id]),
    );
    assert_eq!(seen.bad, 0, "unparseable joined events");
    for (id, p) in &want {
        let (mark, action, delay) = &seen.events[id];
        assert_eq!(
            (mark.as_str(), action.as_str(), *delay),
            (p.mark_id.as_str(), p.action.as_str(), p.delay_ms),
            "joined event {id}"
        );
        assert!((0..=m.params.window_ms).contains(delay));
    }
}

/// Messages on the joined topic so far (sum of the partitions' high watermarks).
fn joined_so_far(cfg: &Config) -> u64 {
    let c: BaseConsumer = common::kafka::client_config(&cfg.kafka).create().unwrap();
    let Ok(md) = c.fetch_metadata(Some(&cfg.topics.joined), Duration::from_secs(5)) else {
        return 0;
    };
    let n = md
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    (0..n as i32)
        .filter_map(|p| {
            c.fetch_watermarks(&cfg.topics.joined, p, Duration::from_secs(5))
                .ok()
        })
        .map(|(_, high)| high.max(0) as u64)
        .sum()
}

/// Waits until the joiner has produced something while the generator is
/// still sending: the fault then hits the middle of the stream.
async fn wait_mid_stream(
    cfg: &Config,
    gen: &tokio::task::JoinHandle<anyhow::Result<loadgen::Manifest>>,
) {
    let start = Instant::now();
    loop {
        let cfg2 = cfg.clone();
        let n = tokio::task::spawn_blocking(move || joined_so_far(&cfg2))
            .await
            .unwrap();
        if n > 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the joiner produced nothing"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !gen.is_finished(),
        "the generator finished before the fault: not mid-stream (raise the count)"
    );
}

fn expected_ids(m: &loadgen::Manifest) -> BTreeSet<u64> {
    m.expected_pairs.iter().map(|p| p.joined_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_exactly_including_out_of_order_and_stops_on_sigterm() {
    let cfg = config("jn_exact");
    let m = generate(&cfg, 40_000, 0).await.unwrap();
    let mut j = JoinerProc::start(&cfg, "a");
    let ids = expected_ids(&m);
    let seen = tokio::task::block_in_place(|| {
        read_joined(&cfg, &ids, Duration::from_secs(3), &mut [&mut j])
    });
    assert_exact(&m, &seen);
    assert_eq!(j.term(Duration::from_secs(30)), 0, "graceful exit code");
    // Nothing was replayed in a clean run: each id once on the topic.
    assert_eq!(
        seen.messages,
        seen.events.len() as u64,
        "duplicates in a clean run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_joiners_in_one_group_join_exactly() {
    let cfg = config("jn_two");
    let mut a = JoinerProc::start(&cfg, "a");
    let mut b = JoinerProc::start(&cfg, "b");
    // The input topics do not exist yet: the joiners must notice them when
    // they appear (librdkafka metadata refresh), then share the partitions.
    tokio::time::sleep(Duration::from_secs(5)).await;
    a.assert_running();
    b.assert_running();
    let m = generate(&cfg, 60_000, 12_000).await.unwrap();
    let ids = expected_ids(&m);
    let seen = tokio::task::block_in_place(|| {
        read_joined(&cfg, &ids, Duration::from_secs(3), &mut [&mut a, &mut b])
    });
    assert_exact(&m, &seen);
    assert_eq!(a.term(Duration::from_secs(30)), 0);
    assert_eq!(b.term(Duration::from_secs(30)), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_and_restart_join_exactly() {
    let cfg = config("jn_kill");
    let mut a = JoinerProc::start(&cfg, "a");
    let gen = {
        let cfg = cfg.clone();
        tokio::spawn(async move { generate(&cfg, 100_000, 10_000).await })
    };
    // Group join (~3 s) + the first joined events, then a crash.
    wait_mid_stream(&cfg, &gen).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.assert_running();
    a.kill9();
    let mut b = JoinerProc::start(&cfg, "b");
    let m = gen.await.unwrap().unwrap();
    let ids = expected_ids(&m);
    let seen = tokio::task::block_in_place(|| {
        read_joined(&cfg, &ids, Duration::from_secs(3), &mut [&mut b])
    });
    assert_exact(&m, &seen);
    assert_eq!(b.term(Duration::from_secs(30)), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_stream_join_exactly() {
    // AOF with fsync on every write: a kill -9 loses nothing acknowledged.
    let mut redis = integration_tests::reliability::OwnRedis::start("jn");
    let mut cfg = test_config("jn_redis");
    cfg.redis.url = format!("redis://127.0.0.1:{}", redis.port);
    cfg.redis.cluster = false;
    let cfg = {
        let mut c = config_from(cfg);
        c.joiner.redis_timeout_ms = 1_000;
        c
    };
    let mut j = JoinerProc::start(&cfg, "a");
    let gen = {
        let cfg = cfg.clone();
        tokio::spawn(async move { generate(&cfg, 100_000, 10_000).await })
    };
    wait_mid_stream(&cfg, &gen).await;
    j.assert_running();
    redis.kill9();
    tokio::time::sleep(Duration::from_secs(4)).await;
    j.assert_running();
    redis.up();
    let m = gen.await.unwrap().unwrap();
    let ids = expected_ids(&m);
    let seen = tokio::task::block_in_place(|| {
        read_joined(&cfg, &ids, Duration::from_secs(3), &mut [&mut j])
    });
    assert_exact(&m, &seen);
    let log = std::fs::read_to_string(&j.log).unwrap_or_default();
    assert!(
        log.contains("retrying"),
        "the outage should have made the joiner retry (log: {})",
        j.log.display()
    );
    assert_eq!(j.term(Duration::from_secs(30)), 0);
}

/// `config()` for a configuration whose Redis was already chosen.
fn config_from(base: Config) -> Config {
    let mut cfg = base;
    let id = cfg.clickhouse.database.clone();
    cfg.joiner.key_prefix = format!("{id}:");
    cfg.joiner.metrics_listen = "127.0.0.1:0".into();
    cfg.joiner.retry_min_ms = 50;
    cfg.joiner.retry_max_ms = 1_000;
    cfg.joiner.batch_max = 2_000;
    cfg.joiner.sweep_interval_ms = 1_000;
    cfg.joiner.shutdown_grace_s = 5;
    check_kafka(&cfg);
    check_redis(&cfg);
    cfg
}

/// `config()` on the 3-master Redis Cluster (`dev/stack up redis-cluster`;
/// seeds from `ADLOG_TEST_REDIS_CLUSTER`).
fn cluster_config(name: &str) -> Config {
    let mut cfg = test_config(name);
    cfg.redis.cluster = true;
    cfg.redis.url = std::env::var("ADLOG_TEST_REDIS_CLUSTER").unwrap_or_else(|_| {
        "redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002".into()
    });
    config_from(cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_three_masters_join_exactly() {
    let cfg = cluster_config("jn_cluster");
    let m = generate(&cfg, 40_000, 0).await.unwrap();
    let mut j = JoinerProc::start(&cfg, "a");
    let ids = expected_ids(&m);
    let seen = tokio::task::block_in_place(|| {
        read_joined(&cfg, &ids, Duration::from_secs(3), &mut [&mut j])
    });
    assert_exact(&m, &seen);
    assert_eq!(j.term(Duration::from_secs(30)), 0);
}

/// `redis-cli ARGS…`: its output (stdout and stderr), or a panic naming it
/// if it failed.
fn redis_cli(args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(args)
        .output()
        .expect("running redis-cli (apt install redis-tools)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "redis-cli {args:?} failed: {text}");
    text
}

/// `redis-cli --cluster reshard`: `slots` slots from node id `from` to `to`
/// (the source's lowest slots first); returns how long it took.
fn reshard(seed: &str, from: &str, to: &str, slots: u32) -> Duration {
    let t = Instant::now();
    let out = redis_cli(&[
        "--cluster",
        "reshard",
        seed,
        "--cluster-from",
        from,
        "--cluster-to",
        to,
        "--cluster-slots",
        &slots.to_string(),
        "--cluster-yes",
    ]);
    assert!(
        !out.contains("[ERR]"),
        "reshard {from} -> {to} reported an error:\n{out}"
    );
    t.elapsed()
}

/// Live resharding (issue 12 §3): while events flow, 1000 slots move from the
/// first master to the second (`redis-cli --cluster reshard`) and back. The
/// joined ids stay exactly the expected pairs; the joiner followed the
/// redirections per command (`redis_redirects_total` > 0: the reshard
/// happened while it worked) and never failed a batch for them
/// (`batch_retries_total{stage="redis"}` = 0: no attempt failed and waited for
/// a backoff).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_live_reshard_mid_stream_joins_exactly() {
    let cfg = cluster_config("jn_reshard");
    let seeds: Vec<String> = cfg.redis.url.split(',').map(host_port).collect();
    let (a, b) = (seeds[0].clone(), seeds[1].clone());
    let id = |node: &str| {
        let (host, port) = node.rsplit_once(':').expect("host:port");
        redis_cli(&["-h", host, "-p", port, "CLUSTER", "MYID"])
            .trim()
            .to_string()
    };
    let (id_a, id_b) = (id(&a), id(&b));
    let mut j = JoinerProc::start(&cfg, "a");
    let gen = {
        let cfg = cfg.clone();
        tokio::spawn(async move { generate(&cfg, 200_000, 8_000).await })
    };
    wait_mid_stream(&cfg, &gen).await;
    let there = tokio::task::block_in_place(|| reshard(&a, &id_a, &id_b, 1000));
    assert!(
        !gen.is_finished(),
        "the generator finished during the first reshard: not mid-stream (raise the count)"
    );
    let back = tokio::task::block_in_place(|| reshard(&a, &id_b, &id_a, 1000));
    j.assert_running();
    let m = gen.await.unwrap().unwrap();
    let ids = expected_ids(&m);
    let seen = tokio::task::block_in_place(|| {
        read_joined(&cfg, &ids, Duration::from_secs(3), &mut [&mut j])
    });
    assert_exact(&m, &seen);
    let log = j.log.display().to_string();
    let metric = |name: &str, labels: &str| j.metric(name, labels);
    let (ask, moved, again) = (
        metric("redis_redirects_total", "kind=\"ask\""),
        metric("redis_redirects_total", "kind=\"moved\""),
        metric("redis_redirects_total", "kind=\"tryagain\""),
    );
    let retries = metric("batch_retries_total", "stage=\"redis\"");
    println!(
        "reshard 1000 slots there {there:?}, back {back:?}; redirects ask {ask}, moved {moved}, \
         tryagain {again}; redis batch retries {retries}; {} pairs",
        ids.len()
    );
    assert!(
        ask + moved > 0.0,
        "no redirection counted: the reshard did not meet the stream (log: {log})"
    );
    assert_eq!(
        retries, 0.0,
        "batches failed and were retried during the reshard (log: {log})"
    );
    assert_eq!(j.term(Duration::from_secs(30)), 0);
}

/// The unmatched sweeper is never early (issue 12 §4). Two joiners in one
/// group; the interaction topic has 3 partitions and the exposure topic 4, so
/// a mark_id's exposure and interaction are often owned by different joiners.
/// Mid-stream joiner b is stopped (SIGSTOP) for 12 s (due lists are 10 s buckets): the interactions
/// of its partitions wait in Kafka while joiner a keeps processing exposures
/// whose partners are among them, and those exposures come due. The sweeper
/// must wait for b's published progress: when b continues, they join, and the
/// unmatched topic holds exactly loadgen's unmatched exposures, none of them
/// joined. With the horizon at `now − slack` (before src/progress.rs) the
/// sweeper counted some of those exposures unmatched and they joined
/// afterwards (4 in the run that checked it, with an 8 s stop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeper_waits_for_a_lagging_partner_and_never_counts_a_later_join() {
    let mut cfg = unmatched_config("jn_lagging");
    cfg.joiner.unmatched_slack_ms = 500;
    cfg.loadgen.window_ms = 2_000;
    cfg.kafka.partitions = 4;
    // The interaction topic first, with fewer partitions (loadgen keeps an
    // existing topic as it is).
    let mut k = cfg.kafka.clone();
    k.partitions = 3;
    let refused = common::kafka::create_topics(&k, &[cfg.topics.interaction.as_str()], 1)
        .await
        .unwrap();
    assert!(
        refused.is_empty(),
        "creating the interaction topic: {refused:?}"
    );
    let mut a = JoinerProc::start(&cfg, "a");
    let mut b = JoinerProc::start(&cfg, "b");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let gen = {
        let cfg = cfg.clone();
        tokio::spawn(async move { generate(&cfg, 160_000, 6_000).await })
    };
    wait_mid_stream(&cfg, &gen).await;
    b.signal("STOP");
    tokio::time::sleep(Duration::from_secs(12)).await;
    a.assert_running();
    assert!(
        !gen.is_finished(),
        "the generator finished while b was stopped: not mid-stream (raise the count)"
    );
    b.signal("CONT");
    let m = gen.await.unwrap().unwrap();
    let ids = expected_ids(&m);
    let seen = tokio::task::block_in_place(|| {
        read_joined(&cfg, &ids, Duration::from_secs(1), &mut [&mut a, &mut b])
    });
    assert_exact(&m, &seen);
    let u = tokio::task::block_in_place(|| {
        read_unmatched(
            &cfg,
            m.stats.exposures_unmatched,
            m.stats.interactions_unmatched,
            &mut [&mut a, &mut b],
        )
    });
    let (exposures, by_reason) = (&u.exposures, &u.by_reason);
    let joined_marks: BTreeSet<&str> = m
        .expected_pairs
        .iter()
        .map(|p| p.mark_id.as_str())
        .collect();
    let early: Vec<&String> = exposures
        .iter()
        .filter(|x| joined_marks.contains(x.as_str()))
        .collect();
    assert!(
        early.is_empty(),
        "{} exposures were counted unmatched and joined later, e.g. {:?} (by reason: {by_reason:?})",
        early.len(),
        &early[..early.len().min(5)]
    );
    assert_eq!(
        exposures.len() as u64,
        m.stats.exposures_unmatched,
        "unmatched exposures (by reason: {by_reason:?})"
    );
    for j in [&a, &b] {
        assert_eq!(
            j.metric("unmatched_then_joined_total", "side=\"exposure\""),
            0.0,
            "a joiner counted an exposure unmatched that joined later (log: {})",
            j.log.display()
        );
    }
    assert_eq!(a.term(Duration::from_secs(30)), 0);
    assert_eq!(b.term(Duration::from_secs(30)), 0);
}

/// With a 2 s window, the sweeper reports every exposure without an
/// interaction in its window, and every orphan interaction, on the unmatched topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_events_are_emitted_after_the_window() {
    let mut cfg = unmatched_config("jn_unmatched");
    cfg.loadgen.window_ms = 2_000;
    let m = generate(&cfg, 20_000, 0).await.unwrap();
    let mut j = JoinerProc::start(&cfg, "a");
    let ids = expected_ids(&m);
    let seen = tokio::task::block_in_place(|| {
        read_joined(&cfg, &ids, Duration::from_secs(1), &mut [&mut j])
    });
    assert_exact(&m, &seen);

    let (want_x, want_i) = (m.stats.exposures_unmatched, m.stats.interactions_unmatched);
    let u = read_unmatched(&cfg, want_x, want_i, &mut [&mut j]);
    let (exposures, by_reason) = (&u.exposures, &u.by_reason);
    let orphans = by_reason
        .get(&("interaction".into(), "no_exposure_in_window".into()))
        .copied()
        .unwrap_or(0);
    assert_eq!(
        exposures.len() as u64,
        want_x,
        "unmatched exposures (by reason: {by_reason:?})"
    );
    // Every interaction that joins nothing (orphans, out of the window,
    // stamped before its exposure) is reported once; the orphans among them
    // as having no exposure in the window.
    assert_eq!(
        u.interactions.len() as u64,
        want_i,
        "unmatched interactions: loadgen's orphans {}, out of window {}, skewed {} \
         (by reason: {by_reason:?})",
        m.stats.orphan_interactions,
        m.stats.out_of_window_interactions,
        m.stats.skewed_interactions
    );
    assert!(
        orphans >= m.stats.orphan_interactions,
        "orphans {} (by reason: {by_reason:?})",
        m.stats.orphan_interactions
    );
    // Joined exposures are never reported unmatched.
    let joined_marks: BTreeSet<&str> = m
        .expected_pairs
        .iter()
        .map(|p| p.mark_id.as_str())
        .collect();
    assert!(exposures.iter().all(|x| !joined_marks.contains(x.as_str())));
    assert_eq!(j.term(Duration::from_secs(30)), 0);
}

/// What the unmatched topic held.
struct UnmatchedSeen {
    /// Exposures by mark_id.
    exposures: BTreeSet<String>,
    /// Interactions by their record (JSON line).
    interactions: BTreeSet<String>,
    /// Every report by (side, reason).
    by_reason: BTreeMap<(String, String), u64>,
}

/// Reads the unmatched topic from the beginning until it holds `want_x`
/// distinct exposures and `want_i` distinct interactions, or `WAIT` passes
/// (the caller asserts the counts). Checks that the joiners stay up meanwhile.
fn read_unmatched(
    cfg: &Config,
    want_x: u64,
    want_i: u64,
    procs: &mut [&mut JoinerProc],
) -> UnmatchedSeen {
    let c: BaseConsumer = common::kafka::consumer_config(&cfg.kafka, "unused-manual-assign")
        .create()
        .unwrap();
    let start = Instant::now();
    let mut assigned = false;
    let mut exposures = BTreeSet::new();
    let mut interactions = BTreeSet::new();
    let mut by_reason: BTreeMap<(String, String), u64> = BTreeMap::new();
    while start.elapsed() < WAIT {
        if !assigned {
            let md = c
                .fetch_metadata(Some(&cfg.topics.unmatched), Duration::from_secs(10))
                .unwrap();
            let n = md
                .topics()
                .first()
                .map(|t| t.partitions().len())
                .unwrap_or(0);
            if n == 0 {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            let mut tpl = TopicPartitionList::new();
            for p in 0..n as i32 {
                tpl.add_partition_offset(&cfg.topics.unmatched, p, Offset::Beginning)
                    .unwrap();
            }
            c.assign(&tpl).unwrap();
            assigned = true;
        }
        if let Some(Ok(msg)) = c.poll(Duration::from_millis(100)) {
            let v: serde_json::Value = serde_json::from_slice(msg.payload().unwrap()).unwrap();
            let side = v["side"].as_str().unwrap().to_string();
            let reason = v["reason"].as_str().unwrap().to_string();
            assert_eq!(v["record"]["mark_id"], v["mark_id"]);
            if side == "exposure" {
                exposures.insert(v["mark_id"].as_str().unwrap().to_string());
            } else {
                interactions.insert(v["record"].to_string());
            }
            *by_reason.entry((side, reason)).or_default() += 1;
        }
        if exposures.len() as u64 >= want_x && interactions.len() as u64 >= want_i {
            break;
        }
        for j in procs.iter_mut() {
            j.assert_running();
        }
    }
    UnmatchedSeen {
        exposures,
        interactions,
        by_reason,
    }
}
