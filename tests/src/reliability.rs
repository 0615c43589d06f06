//! Building blocks of the reliability suite (`tests/tests/reliability.rs`,
//! `bench/reliability`): services of a test's own (so a scenario may stop
//! them without disturbing other tests), a latency-adding TCP proxy, an RSS
//! sampler, and [`Pipeline`]: the whole pipeline (ingest + joiner workers as
//! real processes) with the exact end-of-run checks against the load
//! generator's manifest.
//!
//! Everything here is synchronous (std threads, a minimal HTTP client for
//! ClickHouse), so the tests can call it from any runtime via
//! `tokio::task::block_in_place`, while the generator runs as a tokio task.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use common::Config;

use crate::{bin, env_of, test_config, Proc};

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A port nothing listens on right now (the OS picks it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `host:port` of an `http://host:port[/…]` URL.
pub fn http_host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_string()
}

/// Runs `sql` over ClickHouse's HTTP interface at `url` (no auth) and returns
/// the body (use `FORMAT TSV` or a single value). A tiny HTTP/1.0 client, so
/// the harness needs no async runtime.
pub fn ch_query(url: &str, sql: &str) -> anyhow::Result<String> {
    let addr = http_host_port(url);
    let mut s = TcpStream::connect(&addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let req = format!(
        "POST / HTTP/1.0\r\nHost: {addr}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{sql}",
        sql.len()
    );
    s.write_all(req.as_bytes())?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let ok = head
        .lines()
        .next()
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("200"));
    anyhow::ensure!(ok, "ClickHouse at {addr}: {sql}\n{head}\n{body}");
    Ok(body.to_string())
}

/// A single number from `sql`.
pub fn ch_u64(url: &str, sql: &str) -> anyhow::Result<u64> {
    let b = ch_query(url, sql)?;
    b.trim()
        .parse()
        .with_context(|| format!("not a number: {b:?} from {sql}"))
}

// ------------------------------------------------------------ own services ---

/// Services of a test's own, run by the project's `dev/stack` with a private
/// `ADLOG_STATE_DIR` and free ports: the scenario may stop, freeze and restart
/// them while the shared stack stays up for the other tests.
pub struct OwnStack {
    pub dir: PathBuf,
    pub kafka_port: u16,
    pub ch_http_port: u16,
    pub ch_tcp_port: u16,
    pub ch_interserver_port: u16,
    started: Mutex<BTreeSet<String>>,
    /// Stops that needed SIGKILL (the service ignored SIGTERM for
    /// `ADLOG_STOP_TIMEOUT`): a server killed mid-INSERT.
    sigkills: AtomicU64,
}

impl OwnStack {
    pub fn new(tag: &str) -> OwnStack {
        let dir = workspace_root()
            .join("target")
            .join("reliability")
            .join(format!("stack-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        OwnStack {
            dir,
            kafka_port: free_port(),
            ch_http_port: free_port(),
            ch_tcp_port: free_port(),
            ch_interserver_port: free_port(),
            started: Mutex::new(BTreeSet::new()),
            sigkills: AtomicU64::new(0),
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("ADLOG_STATE_DIR".into(), self.dir.display().to_string()),
            ("ADLOG_KAFKA_PORT".into(), self.kafka_port.to_string()),
            ("ADLOG_CH_HTTP_PORT".into(), self.ch_http_port.to_string()),
            ("ADLOG_CH_TCP_PORT".into(), self.ch_tcp_port.to_string()),
            (
                "ADLOG_CH_INTERSERVER_PORT".into(),
                self.ch_interserver_port.to_string(),
            ),
        ]
    }

    fn stack(&self, verb: &str, svc: &str) -> anyhow::Result<String> {
        let out = Command::new(workspace_root().join("dev/stack"))
            .args([verb, svc])
            .envs(self.env())
            .stdin(Stdio::null())
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "dev/stack {verb} {svc}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    /// `dev/stack up SVC` (kafka or clickhouse) for this stack.
    pub fn up(&self, svc: &str) {
        self.stack("up", svc).unwrap();
        self.started.lock().unwrap().insert(svc.to_string());
    }

    pub fn down(&self, svc: &str) {
        let out = self.stack("down", svc).unwrap();
        if out.contains("SIGKILL") {
            self.sigkills.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// How many `down`s ended in SIGKILL.
    pub fn sigkills(&self) -> u64 {
        self.sigkills.load(Ordering::Acquire)
    }

    pub fn pid(&self, svc: &str) -> Option<u32> {
        std::fs::read_to_string(self.dir.join(svc).join(format!("{svc}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// SIGSTOP / SIGCONT: the service hangs (every connection stalls) but keeps its data.
    pub fn freeze(&self, svc: &str, frozen: bool) {
        let pid = self.pid(svc).expect("service pid");
        signal(pid, if frozen { "STOP" } else { "CONT" });
    }

    pub fn kafka_brokers(&self) -> String {
        format!("127.0.0.1:{}", self.kafka_port)
    }

    pub fn ch_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ch_http_port)
    }
}

impl Drop for OwnStack {
    fn drop(&mut self) {
        let started: Vec<String> = self.started.lock().unwrap().iter().cloned().collect();
        for svc in started {
            if let Some(pid) = self.pid(&svc) {
                signal(pid, "CONT");
            }
            let _ = self.stack("down", &svc);
        }
        // A passed scenario leaves nothing behind (ClickHouse data dirs of
        // every run filled the disk); a failed one keeps its logs.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// A `redis-server` of a test's own with AOF and `appendfsync always`, so a
/// kill -9 loses nothing Redis acknowledged (joiner/README.md, "Operating Redis"),
/// or ([`OwnRedis::start_volatile`]) with no persistence at all.
pub struct OwnRedis {
    child: Option<std::process::Child>,
    pub port: u16,
    dir: PathBuf,
    /// `--requirepass` (then PING needs AUTH: readiness is checked by the log).
    password: Option<String>,
    /// AOF on; off: no AOF and no RDB, a restart comes back empty.
    persist: bool,
}

impl OwnRedis {
    pub fn start(tag: &str) -> OwnRedis {
        Self::start_with_password(tag, None)
    }

    /// No AOF, no RDB: every restart comes back empty (Redis as a cache).
    pub fn start_volatile(tag: &str) -> OwnRedis {
        Self::start_opts(tag, None, false)
    }

    /// With `requirepass`: clients must authenticate.
    pub fn start_with_password(tag: &str, password: Option<&str>) -> OwnRedis {
        Self::start_opts(tag, password, true)
    }

    fn start_opts(tag: &str, password: Option<&str>, persist: bool) -> OwnRedis {
        let dir = workspace_root()
            .join("target")
            .join("reliability")
            .join(format!("redis-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = OwnRedis {
            child: None,
            port: free_port(),
            dir,
            password: password.map(str::to_string),
            persist,
        };
        r.up();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn up(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(if self.persist {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "no"]
            })
            .args(["--save", ""])
            .args(
                self.password
                    .iter()
                    .flat_map(|p| ["--requirepass".to_string(), p.clone()]),
            )
            .arg("--dir")
            .arg(&self.dir)
            .args(["--logfile", "redis.log", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) must be installed");
        self.child = Some(child);
        let start = Instant::now();
        while !redis_ping(self.port, self.password.as_deref()) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "own redis-server on {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `SAVE`: a snapshot (`dump.rdb`) the next start loads when there is
    /// no AOF, i.e. Redis comes back as it was now, missing every later
    /// write (what a failover to a replica that lagged looks like).
    pub fn save(&self) {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "SAVE"])
            .output()
            .expect("redis-cli (Debian package redis-tools) must be installed");
        assert!(
            String::from_utf8_lossy(&out.stdout).trim() == "OK",
            "SAVE on own redis-server {}: {out:?}",
            self.port
        );
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill9();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Redis answers PING (after loading its AOF: `LOADING` is not `PONG`).
pub fn redis_ping(port: u16, password: Option<&str>) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(3))).ok();
    let mut buf = [0u8; 64];
    if let Some(p) = password {
        let auth = format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{p}\r\n", p.len());
        if s.write_all(auth.as_bytes()).is_err() {
            return false;
        }
        if !matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+OK")) {
            return false;
        }
    }
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

// ------------------------------------------------------------------- proxy ---

/// A TCP proxy to `target` that holds every chunk for `delay` in each
/// direction (pure latency, no bandwidth cap), like a slow link or a server
/// that answers late. `set_delay` changes it on the fly (new chunks).
pub struct DelayProxy {
    pub port: u16,
    delay_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    pub connections: Arc<AtomicU64>,
}

impl DelayProxy {
    pub fn start(target: SocketAddr, delay: Duration) -> DelayProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let delay_ms = Arc::new(AtomicU64::new(delay.as_millis() as u64));
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicU64::new(0));
        let (d, st, n) = (delay_ms.clone(), stop.clone(), connections.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::Acquire) {
                    return;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(target) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                n.fetch_add(1, Ordering::Relaxed);
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let d = d.clone();
                    std::thread::spawn(move || pump(from, to, d));
                }
            }
        });
        DelayProxy {
            port,
            delay_ms,
            stop,
            connections,
        }
    }

    pub fn set_delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::Release);
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies `from` → `to`, each chunk released `delay` after it was read.
fn pump(mut from: TcpStream, to: TcpStream, delay_ms: Arc<AtomicU64>) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let writer = std::thread::spawn(move || {
        let mut to = to;
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let due = Instant::now() + Duration::from_millis(delay_ms.load(Ordering::Acquire));
                if tx.send((due, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.join();
    let _ = from.shutdown(Shutdown::Read);
}

/// A TCP proxy to ClickHouse's HTTP port that drops the first request whose
/// first chunk holds every one of `needles` (once armed): it closes both
/// sockets without forwarding a byte of it, so the client cannot know whether
/// the server got it — an ambiguous failure, like a response lost on the way.
/// Every other byte is passed through unchanged.
pub struct DropProxy {
    pub port: u16,
    armed: Arc<AtomicBool>,
    /// Requests dropped so far.
    pub dropped: Arc<AtomicU64>,
}

impl DropProxy {
    pub fn start(target: SocketAddr, needles: Vec<Vec<u8>>) -> DropProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(true));
        let dropped = Arc::new(AtomicU64::new(0));
        let (a, d) = (armed.clone(), dropped.clone());
        let needles = Arc::new(needles);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut client) = conn else { continue };
                let Ok(mut server) = TcpStream::connect(target) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s2, &mut c2);
                    let _ = c2.shutdown(Shutdown::Write);
                });
                let (a, d, needles) = (a.clone(), d.clone(), needles.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match client.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let chunk = &buf[..n];
                        let hit = needles
                            .iter()
                            .all(|w| chunk.windows(w.len()).any(|x| x == &w[..]));
                        if hit && a.swap(false, Ordering::AcqRel) {
                            d.fetch_add(1, Ordering::AcqRel);
                            let _ = server.shutdown(Shutdown::Both);
                            let _ = client.shutdown(Shutdown::Both);
                            return;
                        }
                        if server.write_all(chunk).is_err() {
                            break;
                        }
                    }
                    let _ = server.shutdown(Shutdown::Write);
                });
            }
        });
        DropProxy {
            port,
            armed,
            dropped,
        }
    }

    /// Whether the next matching request is still to be dropped.
    pub fn armed(&self) -> bool {
        self.armed.load(Ordering::Acquire)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

// --------------------------------------------------------------------- RSS ---

/// Samples the resident set size of registered processes every 100 ms and
/// keeps the peak per role (`ingest`, `joiner`).
#[derive(Clone, Default)]
pub struct RssWatch {
    inner: Arc<Mutex<RssInner>>,
}

#[derive(Default)]
struct RssInner {
    pids: Vec<(String, u32)>,
    peak_kib: BTreeMap<String, u64>,
    running: bool,
}

pub fn rss_kib_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

impl RssWatch {
    pub fn new() -> RssWatch {
        let w = RssWatch::default();
        w.inner.lock().unwrap().running = true;
        let inner = Arc::downgrade(&w.inner);
        std::thread::spawn(move || loop {
            let Some(inner) = inner.upgrade() else { return };
            {
                let mut g = inner.lock().unwrap();
                if !g.running {
                    return;
                }
                let samples: Vec<(String, u64)> = g
                    .pids
                    .iter()
                    .map(|(role, pid)| (role.clone(), rss_kib_of(*pid)))
                    .collect();
                for (role, kib) in samples {
                    let e = g.peak_kib.entry(role).or_default();
                    *e = (*e).max(kib);
                }
            }
            drop(inner);
            std::thread::sleep(Duration::from_millis(100));
        });
        w
    }

    pub fn watch(&self, role: &str, pid: u32) {
        self.inner
            .lock()
            .unwrap()
            .pids
            .push((role.to_string(), pid));
    }

    pub fn peak_kib(&self, role: &str) -> u64 {
        self.inner
            .lock()
            .unwrap()
            .peak_kib
            .get(role)
            .copied()
            .unwrap_or(0)
    }

    pub fn stop(&self) {
        self.inner.lock().unwrap().running = false;
    }
}

// ---------------------------------------------------------------- pipeline ---

/// A private configuration for a whole-pipeline scenario: topics, groups,
/// database and Redis key prefix of its own; small batches and quick retries
/// so that faults land while work is in flight.
pub fn pipeline_config(name: &str) -> Config {
    let mut cfg = test_config(name);
    let id = cfg.clickhouse.database.clone();
    cfg.ingest.batch_max_rows = 3_000;
    cfg.ingest.flush_interval_ms = 300;
    cfg.ingest.retry_max_ms = 2_000;
    cfg.joiner.key_prefix = format!("{id}:");
    cfg.joiner.metrics_listen = "127.0.0.1:0".into();
    cfg.joiner.retry_min_ms = 50;
    cfg.joiner.retry_max_ms = 1_000;
    cfg.joiner.batch_max = 2_000;
    cfg.joiner.sweep_interval_ms = 1_000;
    cfg.joiner.shutdown_grace_s = 10;
    cfg.joiner.redis_timeout_ms = 1_000;
    cfg
}

/// `env_of` plus the joiner/Redis/ingest settings the pipeline scenarios change.
pub fn full_env(cfg: &Config) -> Vec<(String, String)> {
    let j = &cfg.joiner;
    let mut v = env_of(cfg);
    for (k, val) in [
        ("REDIS__CLUSTER", cfg.redis.cluster.to_string()),
        ("CLICKHOUSE__USER", cfg.clickhouse.user.clone()),
        ("JOINER__KEY_PREFIX", j.key_prefix.clone()),
        ("JOINER__CONSUMERS", j.consumers.to_string()),
        ("INGEST__CONSUMERS", cfg.ingest.consumers.to_string()),
        ("JOINER__METRICS_LISTEN", j.metrics_listen.clone()),
        ("JOINER__RETRY_MIN_MS", j.retry_min_ms.to_string()),
        ("JOINER__RETRY_MAX_MS", j.retry_max_ms.to_string()),
        ("JOINER__BATCH_MAX", j.batch_max.to_string()),
        ("JOINER__SWEEP_INTERVAL_MS", j.sweep_interval_ms.to_string()),
        ("JOINER__SHUTDOWN_GRACE_S", j.shutdown_grace_s.to_string()),
        ("JOINER__REDIS_TIMEOUT_MS", j.redis_timeout_ms.to_string()),
        ("JOINER__WINDOW_S", j.window_s.to_string()),
        ("INGEST__RETRY_MIN_MS", cfg.ingest.retry_min_ms.to_string()),
        (
            "INGEST__MAX_MESSAGE_BYTES",
            cfg.ingest.max_message_bytes.to_string(),
        ),
        (
            "INGEST__BATCH_MAX_BYTES",
            cfg.ingest.batch_max_bytes.to_string(),
        ),
    ] {
        v.push((format!("ADLOG_{k}"), val));
    }
    v
}

impl Proc {
    /// Starts `bin(name) args…` with `env` (the whole configuration); output
    /// goes to `log`.
    pub fn start_env(
        name: &str,
        args: &[&str],
        env: &[(String, String)],
        log: &Path,
    ) -> anyhow::Result<Proc> {
        if let Some(d) = log.parent() {
            std::fs::create_dir_all(d)?;
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = Command::new(bin(name))
            .args(args)
            .envs(env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            child,
            name: log.display().to_string(),
        })
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Row counts of a scenario's tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub request: u64,
    pub exposure: u64,
    pub interaction: u64,
    pub dead_letter: u64,
    pub joined_ids: u64,
}

impl Progress {
    pub fn raw(&self) -> u64 {
        self.request + self.exposure + self.interaction
    }
}

/// The whole pipeline of one scenario: ingest and joiner processes (the real
/// binaries), fault bookkeeping, and the exact checks at the end.
pub struct Pipeline {
    pub name: String,
    /// What the workers run with (may point at proxies or own services).
    pub cfg: Config,
    /// ClickHouse for the checks (direct, never through a proxy).
    pub ch_url: String,
    pub procs: Vec<(String, Proc)>,
    pub rss: RssWatch,
    /// What the generator sends (see [`Pipeline::expect`]).
    pub expected: Option<loadgen::Manifest>,
    /// Indexes of workers the scenario killed or stopped on purpose.
    pub retired: Vec<usize>,
    pub faults: u32,
    /// Per fault: from the fault's end until the affected stream grew again.
    pub recoveries: Vec<Duration>,
    pub notes: Vec<String>,
    started: Instant,
    logs: PathBuf,
}

impl Pipeline {
    /// Applies the migrations (directly on `ch_url`) and prepares the logs.
    pub fn new(name: &str, cfg: Config, ch_url: &str) -> Pipeline {
        let mut direct = cfg.clone();
        direct.clickhouse.url = ch_url.to_string();
        crate::migrate(&direct).expect("migrations");
        let logs = workspace_root().join("target").join("test-logs");
        Pipeline {
            name: name.to_string(),
            cfg,
            ch_url: ch_url.to_string(),
            procs: Vec::new(),
            retired: Vec::new(),
            expected: None,
            rss: RssWatch::new(),
            faults: 0,
            recoveries: Vec::new(),
            notes: Vec::new(),
            started: Instant::now(),
            logs,
        }
    }

    pub fn db(&self) -> &str {
        &self.cfg.clickhouse.database
    }

    /// Starts an `ingest run` or `joiner run` worker; `tag` names its log.
    pub fn start(&mut self, role: &str, tag: &str) -> usize {
        let log = self
            .logs
            .join(format!("{}-{role}-{tag}.log", self.cfg.clickhouse.database));
        let mut env = full_env(&self.cfg);
        env.push(("RUST_LOG".into(), "info".into()));
        // librdkafka properties have dotted keys, which env variables cannot
        // carry: they go in a config file of their own.
        if !self.cfg.kafka.properties.is_empty() {
            let file = self
                .logs
                .join(format!("{}-kafka.toml", self.cfg.clickhouse.database));
            let mut toml = String::from("[kafka.properties]\n");
            for (k, v) in &self.cfg.kafka.properties {
                toml.push_str(&format!("{k:?} = {v:?}\n"));
            }
            std::fs::create_dir_all(&self.logs).expect("logs dir");
            std::fs::write(&file, toml).expect("writing the kafka properties file");
            env.push(("ADLOG_CONFIG".into(), file.display().to_string()));
        }
        let p = Proc::start_env(role, &["run"], &env, &log).expect("worker starts");
        self.rss.watch(role, p.child.id());
        self.procs.push((role.to_string(), p));
        self.procs.len() - 1
    }

    /// SIGKILL of the newest running worker of `role`.
    pub fn kill9(&mut self, role: &str) {
        let i = self.newest(role);
        self.retired.push(i);
        self.procs[i].1.kill9();
    }

    /// SIGTERM to the newest running worker of `role`; it must exit 0 (graceful).
    pub fn term(&mut self, role: &str) {
        let i = self.newest(role);
        self.retired.push(i);
        let p = &mut self.procs[i].1;
        p.term();
        let code = p.wait(Duration::from_secs(90)).unwrap();
        assert_eq!(code, 0, "{role} exit code after SIGTERM (log {})", p.name);
    }

    /// SIGTERM to the oldest running worker of `role` (exit 0 required).
    pub fn term_oldest(&mut self, role: &str) {
        let i = (0..self.procs.len())
            .find(|&i| {
                self.procs[i].0 == role
                    && !self.retired.contains(&i)
                    && self.procs[i].1.is_running()
            })
            .unwrap_or_else(|| panic!("no running {role}"));
        self.retired.push(i);
        let p = &mut self.procs[i].1;
        p.term();
        let code = p.wait(Duration::from_secs(90)).unwrap();
        assert_eq!(code, 0, "{role} exit code after SIGTERM (log {})", p.name);
    }

    fn newest(&mut self, role: &str) -> usize {
        (0..self.procs.len())
            .rev()
            .find(|&i| {
                self.procs[i].0 == role
                    && !self.retired.contains(&i)
                    && self.procs[i].1.is_running()
            })
            .unwrap_or_else(|| panic!("no running {role}"))
    }

    /// Panics (with the log's tail) if a worker exited that should run.
    pub fn assert_running(&mut self) {
        for (i, (role, p)) in self.procs.iter_mut().enumerate() {
            if self.retired.contains(&i) {
                continue;
            }
            if let Ok(Some(st)) = p.child.try_wait() {
                let log = std::fs::read_to_string(&p.name).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                panic!("{role} exited ({st}); log {}:\n{tail}", p.name);
            }
        }
    }

    /// Lines of the logs of every `role` worker started so far that contain
    /// `needle` (case-insensitive).
    pub fn log_lines(&self, role: &str, needle: &str) -> Vec<String> {
        let needle = needle.to_lowercase();
        self.procs
            .iter()
            .filter(|(r, _)| r == role)
            .flat_map(|(_, p)| {
                std::fs::read_to_string(&p.name)
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.to_lowercase().contains(&needle))
                    .map(|l| format!("{}: {l}", p.name))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Waits until the log of worker `i` (from [`Pipeline::start`]) has a line
    /// containing `needle`.
    pub fn wait_log(&mut self, i: usize, needle: &str, timeout: Duration) {
        self.wait_line(i, timeout, &format!("{needle:?}"), |l| l.contains(needle));
    }

    /// Waits until worker `i` owns at least one partition (its log's
    /// "partitions assigned" line with a non-empty list): its group's
    /// rebalance is over.
    pub fn wait_assigned(&mut self, i: usize, timeout: Duration) {
        self.wait_line(i, timeout, "partition assigned", |l| {
            l.contains("partitions assigned") && !l.contains("partitions=[]")
        });
    }

    /// Waits until a line of worker `i`'s log satisfies `found`, checking
    /// that the workers stay up; `what` names it in the failure.
    fn wait_line(&mut self, i: usize, timeout: Duration, what: &str, found: impl Fn(&str) -> bool) {
        let start = Instant::now();
        loop {
            let log = std::fs::read_to_string(&self.procs[i].1.name).unwrap_or_default();
            if log.lines().any(&found) {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "no {what} within {timeout:?} in {}",
                self.procs[i].1.name
            );
            self.assert_running();
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Lets `d` pass while checking that the workers stay up.
    pub fn hold(&mut self, d: Duration) {
        let start = Instant::now();
        while start.elapsed() < d {
            self.assert_running();
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn progress(&self) -> Progress {
        let db = self.db();
        let q = format!(
            "SELECT (SELECT count() FROM {db}.ods_request), (SELECT count() FROM {db}.ods_exposure), \
             (SELECT count() FROM {db}.ods_interaction), (SELECT count() FROM {db}.dead_letter), \
             (SELECT uniqExact(joined_id) FROM {db}.ods_joined) FORMAT TSV"
        );
        let Ok(body) = ch_query(&self.ch_url, &q) else {
            return Progress::default();
        };
        let v: Vec<u64> = body
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        if v.len() != 5 {
            return Progress::default();
        }
        Progress {
            request: v[0],
            exposure: v[1],
            interaction: v[2],
            dead_letter: v[3],
            joined_ids: v[4],
        }
    }

    /// Waits until `f(progress)` holds (checking the workers stay up).
    pub fn wait_for(&mut self, what: &str, timeout: Duration, f: impl Fn(&Progress) -> bool) {
        let start = Instant::now();
        loop {
            let p = self.progress();
            if f(&p) {
                return;
            }
            self.assert_running();
            assert!(
                start.elapsed() < timeout,
                "{}: timed out after {timeout:?} waiting for {what}; progress {p:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Marks the end of a fault and measures how long until `stream` (`raw`:
    /// ods_* + dead letters, or `joined`) grows again, polling up to `max`.
    /// When everything expected (`expect`) is already stored, there is
    /// nothing to recover and no time is recorded.
    pub fn recovered(&mut self, stream: &str, max: Duration) {
        self.faults += 1;
        let t0 = Instant::now();
        let pick = |p: &Progress| {
            if stream == "joined" {
                p.joined_ids
            } else {
                p.raw() + p.dead_letter
            }
        };
        let before = pick(&self.progress());
        loop {
            let p = self.progress();
            if pick(&p) > before {
                self.recoveries.push(t0.elapsed());
                return;
            }
            if self
                .expected
                .as_ref()
                .is_some_and(|m| complete(&self.cfg.topics, m, &p))
            {
                self.notes
                    .push(format!("fault {}: nothing left to recover", self.faults));
                return;
            }
            self.assert_running();
            if t0.elapsed() > max {
                self.notes
                    .push(format!("fault {}: no progress within {max:?}", self.faults));
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What the generator will send (same seed and count, computed without
    /// sending), so `recovered` knows when nothing is left.
    pub fn expect(&mut self, count: u64) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let mut params = loadgen::Params::from_config(&self.cfg.loadgen, now);
        params.count = count;
        params.start_ms = params.start_ending_at(now);
        self.expected = Some(loadgen::manifest_only(&params, &self.cfg).expect("manifest"));
    }

    /// Is everything the manifest expects stored?
    pub fn complete(&self, m: &loadgen::Manifest, p: &Progress) -> bool {
        complete(&self.cfg.topics, m, p)
    }
}

fn complete(t: &common::config::TopicsConfig, m: &loadgen::Manifest, p: &Progress) -> bool {
    {
        p.request >= good(m, &t.request)
            && p.exposure >= good(m, &t.exposure)
            && p.interaction >= good(m, &t.interaction)
            && p.dead_letter >= m.totals.bad
            && p.joined_ids >= m.expected_pairs.len() as u64
    }
}

impl Pipeline {
    /// Waits for everything, lingers (late duplicates would show), stops the
    /// workers with SIGTERM (each must exit 0), then checks the tables.
    pub fn finish(mut self, m: &loadgen::Manifest, timeout: Duration) -> Outcome {
        let t0 = Instant::now();
        let topics = self.cfg.topics.clone();
        self.wait_for("every event stored", timeout, |p| complete(&topics, m, p));
        let caught_up = t0.elapsed();
        std::thread::sleep(Duration::from_secs(3));
        self.assert_running();
        for (i, (_, p)) in self.procs.iter_mut().enumerate() {
            if !self.retired.contains(&i) {
                p.term();
            }
        }
        for (i, (role, p)) in self.procs.iter_mut().enumerate() {
            if !self.retired.contains(&i) {
                let code = p.wait(Duration::from_secs(90)).unwrap();
                assert_eq!(code, 0, "{role} exit code after SIGTERM (log {})", p.name);
            }
        }
        self.rss.stop();
        let mut o = verify(&self.ch_url, self.db(), m);
        o.scenario = self.name.clone();
        o.faults = self.faults;
        o.recovery_s = self
            .recoveries
            .iter()
            .map(|d| d.as_secs_f64())
            .fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.max(x))));
        o.catch_up_s = caught_up.as_secs_f64();
        o.elapsed_s = self.started.elapsed().as_secs_f64();
        o.peak_rss_ingest_mib = self.rss.peak_kib("ingest") as f64 / 1024.0;
        o.peak_rss_joiner_mib = self.rss.peak_kib("joiner") as f64 / 1024.0;
        o.notes.append(&mut self.notes);
        o.record();
        o
    }
}

/// Good messages the manifest says were sent to `topic`.
pub fn good(m: &loadgen::Manifest, topic: &str) -> u64 {
    m.per_topic.get(topic).map_or(0, |c| c.counts.good)
}

// ------------------------------------------------------------ exact checks ---

/// What a scenario ended with: the row of the reliability table.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub scenario: String,
    /// Input messages the generator had acknowledged by the broker.
    pub sent: u64,
    /// Distinct Kafka coordinates in ods_request + ods_exposure + ods_interaction.
    pub stored: u64,
    /// Distinct Kafka coordinates in dead_letter.
    pub dead_lettered: u64,
    /// Input messages (Kafka coordinates) in no table, plus per-table shortfalls.
    pub lost: u64,
    /// Extra rows: a Kafka coordinate stored twice (in one table or two),
    /// for the input topics and for the joined topic.
    pub duplicated: u64,
    pub joined_expected: u64,
    pub joined_stored: u64,
    pub joined_missing: u64,
    pub joined_unexpected: u64,
    /// joined ids whose stored mark_id/action/delay differ from the manifest.
    pub joined_wrong: u64,
    /// Messages on the joined topic beyond one per id (at-least-once copies,
    /// collapsed by joined_id in ods_joined).
    pub joined_copies: u64,
    /// Per-table/reason mismatches against the manifest (must be empty).
    pub mismatches: Vec<String>,
    /// Rollup and trace tables that disagree with the raw rows, one line per
    /// table (`crate::rollups::rollup_mismatches`; must be empty).
    pub rollup_mismatches: Vec<String>,
    pub faults: u32,
    pub recovery_s: Option<f64>,
    pub catch_up_s: f64,
    pub elapsed_s: f64,
    pub peak_rss_ingest_mib: f64,
    pub peak_rss_joiner_mib: f64,
    pub notes: Vec<String>,
}

fn tsv_rows(url: &str, sql: &str) -> Vec<Vec<String>> {
    ch_query(url, &format!("{sql} FORMAT TSV"))
        .unwrap_or_else(|e| panic!("{e:#}"))
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// The exact checks against the manifest, on the scenario's database.
pub fn verify(ch_url: &str, db: &str, m: &loadgen::Manifest) -> Outcome {
    verify_all(ch_url, db, &[m])
}

/// The exact checks against several runs of the generator into the same
/// topics: `ms` may be runs into successive incarnations of the topics (a
/// broker that lost its log hands out offsets 0.. again), so a message is
/// identified by its Kafka coordinates and its Kafka timestamp.
pub fn verify_all(ch_url: &str, db: &str, ms: &[&loadgen::Manifest]) -> Outcome {
    let m0 = ms[0];
    let mut o = Outcome {
        sent: ms.iter().map(|m| m.totals.messages).sum(),
        joined_expected: ms.iter().map(|m| m.expected_pairs.len() as u64).sum(),
        ..Outcome::default()
    };
    let mut delivered: BTreeMap<(String, i32), u64> = BTreeMap::new();
    for m in ms {
        let d = &m
            .delivery
            .as_ref()
            .expect("manifest with a delivery report")
            .partitions;
        for (topic, parts) in d {
            for (p, &n) in parts {
                *delivered.entry((topic.clone(), *p)).or_default() += n;
            }
        }
    }
    // Every input message (topic, partition, offset, Kafka timestamp) must be
    // in exactly one table: its ods_* table or dead_letter.
    let union = format!(
        "SELECT _topic AS t, _partition AS p, _offset AS o, _kafka_ts_ms AS k FROM {db}.ods_request \
         UNION ALL SELECT _topic, _partition, _offset, _kafka_ts_ms FROM {db}.ods_exposure \
         UNION ALL SELECT _topic, _partition, _offset, _kafka_ts_ms FROM {db}.ods_interaction \
         UNION ALL SELECT _topic, _partition, _offset, _kafka_ts_ms FROM {db}.dead_letter"
    );
    let rows = tsv_rows(
        ch_url,
        &format!(
            "SELECT t, p, count(), uniqExact(o, k), min(o), max(o) FROM ({union}) GROUP BY t, p ORDER BY t, p"
        ),
    );
    let mut seen: BTreeMap<(String, i32), (u64, u64, u64, u64)> = BTreeMap::new();
    for r in rows {
        let n = |i: usize| r[i].parse::<u64>().unwrap();
        seen.insert(
            (r[0].clone(), r[1].parse().unwrap()),
            (n(2), n(3), n(4), n(5)),
        );
    }
    for ((topic, p), want) in delivered {
        let (rows, distinct, lo, hi) = seen.remove(&(topic.clone(), p)).unwrap_or((0, 0, 0, 0));
        o.lost += want.saturating_sub(distinct);
        o.duplicated += rows - distinct;
        let offsets_off = ms.len() == 1 && distinct > 0 && (lo != 0 || hi != want - 1);
        if distinct > want || offsets_off {
            o.mismatches.push(format!(
                "{topic}/{p}: offsets {lo}..={hi} ({distinct} distinct) but {want} messages sent"
            ));
        }
    }
    for ((t, p), (rows, ..)) in seen {
        o.mismatches.push(format!(
            "{t}/{p}: {rows} rows from a partition nothing was sent to"
        ));
    }

    // Per table: rows = good lines of its topic, no message twice.
    for (table, topic_of) in [
        ("ods_request", "request"),
        ("ods_exposure", "exposure"),
        ("ods_interaction", "interaction"),
    ] {
        let topic = m0
            .topics
            .get(topic_of)
            .unwrap_or_else(|| panic!("manifest names the {topic_of} topic"));
        let want: u64 = ms.iter().map(|m| good(m, topic)).sum();
        let r = &tsv_rows(
            ch_url,
            &format!(
                "SELECT uniqExact(_topic, _partition, _offset, _kafka_ts_ms) FROM {db}.{table}"
            ),
        )[0];
        let distinct: u64 = r[0].parse().unwrap();
        o.stored += distinct;
        o.lost = o.lost.max(want.saturating_sub(distinct));
        if distinct != want {
            o.mismatches.push(format!(
                "{table}: {distinct} distinct rows, {want} good lines sent"
            ));
        }
    }
    let r = &tsv_rows(
        ch_url,
        &format!(
            "SELECT uniqExact(_topic, _partition, _offset, _kafka_ts_ms) FROM {db}.dead_letter"
        ),
    )[0];
    o.dead_lettered = r[0].parse().unwrap();
    let by_reason: BTreeMap<String, u64> = tsv_rows(
        ch_url,
        &format!(
            "SELECT reason, uniqExact(_topic, _partition, _offset, _kafka_ts_ms) FROM {db}.dead_letter GROUP BY reason"
        ),
    )
    .into_iter()
    .map(|r| (r[0].clone(), r[1].parse().unwrap()))
    .collect();
    let mut want_by_reason: BTreeMap<String, u64> = BTreeMap::new();
    for m in ms {
        for (reason, n) in &m.bad_by_reason {
            *want_by_reason.entry(reason.clone()).or_default() += n;
        }
    }
    if by_reason != want_by_reason {
        o.mismatches.push(format!(
            "dead letters by reason {by_reason:?}, manifests {want_by_reason:?}"
        ));
    }
    let no_reason = ch_u64(
        ch_url,
        &format!("SELECT count() FROM {db}.dead_letter WHERE reason = '' OR error = ''"),
    )
    .unwrap();
    if no_reason > 0 {
        o.mismatches
            .push(format!("{no_reason} dead letters without reason/error"));
    }

    // Joined: the distinct ids equal the expected pairs, each with its fields;
    // ingest stored each joined-topic message once.
    let want: BTreeMap<u64, &loadgen::ExpectedPair> = ms
        .iter()
        .flat_map(|m| &m.expected_pairs)
        .map(|p| (p.joined_id, p))
        .collect();
    let got = tsv_rows(
        ch_url,
        &format!(
            "SELECT joined_id, any(mark_id), any(action), any(delay_ms), uniqExact(mark_id, action, delay_ms) \
             FROM {db}.ods_joined GROUP BY joined_id"
        ),
    );
    o.joined_stored = got.len() as u64;
    let mut got_ids = BTreeSet::new();
    for r in &got {
        let id: u64 = r[0].parse().unwrap();
        got_ids.insert(id);
        match want.get(&id) {
            None => o.joined_unexpected += 1,
            Some(p) => {
                if r[1] != p.mark_id
                    || r[2] != p.action
                    || r[3] != p.delay_ms.to_string()
                    || r[4] != "1"
                {
                    o.joined_wrong += 1;
                }
            }
        }
    }
    o.joined_missing = want.keys().filter(|id| !got_ids.contains(id)).count() as u64;
    let r = &tsv_rows(
        ch_url,
        &format!(
            "SELECT count(), uniqExact(_topic, _partition, _offset, _kafka_ts_ms), uniqExact(joined_id) FROM {db}.ods_joined"
        ),
    )[0];
    let (rows, coords, ids): (u64, u64, u64) = (
        r[0].parse().unwrap(),
        r[1].parse().unwrap(),
        r[2].parse().unwrap(),
    );
    o.duplicated += rows - coords;
    o.joined_copies = coords - ids;

    // Every agg_* rollup and trace table equals what the raw rows imply.
    o.rollup_mismatches = crate::rollups::rollup_mismatches(ch_url, db)
        .unwrap_or_else(|e| vec![format!("rollup check could not run: {e:#}")]);
    o
}

impl Outcome {
    /// Lost = 0, duplicated = 0, every table and reason as the manifest says,
    /// the joined ids exactly the expected pairs, every rollup and trace
    /// table equal to the raw rows.
    pub fn assert_exact(&self) {
        let ok = self.lost == 0
            && self.duplicated == 0
            && self.mismatches.is_empty()
            && self.rollup_mismatches.is_empty()
            && self.joined_missing == 0
            && self.joined_unexpected == 0
            && self.joined_wrong == 0
            && self.joined_stored == self.joined_expected;
        assert!(ok, "{}: not exact: {self:#?}", self.scenario);
    }

    pub const HEADER: &'static str = "| scenario | events sent | stored | dead-lettered | lost | duplicated | joined (expected/stored) | joined lost/extra | faults | recovery (max) | catch-up | peak RSS ingest / joiner |";

    /// One Markdown table row.
    pub fn row(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {}/{} | {}/{} | {} | {} | {:.1} s | {} |",
            self.scenario,
            self.sent,
            self.stored,
            self.dead_lettered,
            self.lost,
            self.duplicated,
            self.joined_expected,
            self.joined_stored,
            self.joined_missing,
            self.joined_unexpected + self.joined_wrong,
            self.faults,
            self.recovery_s.map_or("-".into(), |s| format!("{s:.1} s")),
            self.catch_up_s,
            if self.peak_rss_ingest_mib + self.peak_rss_joiner_mib > 0.0 {
                format!(
                    "{:.0} / {:.0} MiB",
                    self.peak_rss_ingest_mib, self.peak_rss_joiner_mib
                )
            } else {
                "-".into()
            },
        )
    }

    /// Prints the row and appends it to `target/reliability/results.md`
    /// (bench/reliability collects that file into docs/RELIABILITY.md).
    pub fn record(&self) {
        eprintln!("{}\n{}", Self::HEADER, self.row());
        for n in &self.notes {
            eprintln!("  note: {n}");
        }
        for r in &self.rollup_mismatches {
            eprintln!("  rollup mismatch: {r}");
        }
        let dir = workspace_root().join("target").join("reliability");
        let _ = std::fs::create_dir_all(&dir);
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("results.md"))
        {
            let _ = writeln!(f, "{}", self.row());
            for n in &self.notes {
                let _ = writeln!(f, "<!-- {}: {n} -->", self.scenario);
            }
        }
    }
}

// ----------------------------------------------------------------- metrics ---

/// The `/metrics` address a worker logged at start (`metrics on … addr=HOST:PORT`),
/// waiting up to `timeout` for the line.
pub fn metrics_addr(log: &str, timeout: Duration) -> Option<String> {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains("metrics on")) {
            if let Some(rest) = line.split("addr=").nth(1) {
                return Some(rest.split_whitespace().next().unwrap_or(rest).to_string());
            }
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `GET path` on `addr` (HTTP/1.0); the body.
pub fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp).into_owned();
    Ok(text
        .split_once("\r\n\r\n")
        .map_or(text.clone(), |(_, b)| b.to_string()))
}

/// A metric's value summed over its label sets, from a Prometheus text page.
pub fn metric_sum(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
