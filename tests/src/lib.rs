//! Harness for the integration tests: every test gets its own topics, consumer
//! groups, ClickHouse database and Redis key space, so tests run in parallel
//! against the one local stack (`dev/stack up`) without seeing each other.
//! The pipeline's binaries run as child processes, configured the way a user
//! configures them: `ADLOG_*` environment variables over the defaults.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context;
use common::Config;

/// A name no other test (or earlier run) uses: `<prefix>_<pid>_<n>_<time>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 1_000_000;
    format!(
        "{prefix}_{}_{}_{t}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A configuration whose topics, groups and database are private to one test.
pub fn test_config(name: &str) -> Config {
    let id = unique(name);
    let mut cfg = Config::load(None).expect("default config with ADLOG_* env");
    let t = &mut cfg.topics;
    t.request = format!("{id}_request");
    t.exposure = format!("{id}_exposure");
    t.interaction = format!("{id}_interaction");
    t.joined = format!("{id}_joined");
    t.dead_letter = format!("{id}_dead_letter");
    t.unmatched = format!("{id}_unmatched");
    cfg.kafka.ingest_group = format!("{id}_ingest");
    cfg.kafka.joiner_group = format!("{id}_joiner");
    cfg.clickhouse.database = id;
    // Any free port: tests run workers in parallel.
    cfg.ingest.metrics_listen = "127.0.0.1:0".into();
    cfg.joiner.metrics_listen = "127.0.0.1:0".into();
    cfg
}

/// The `ADLOG_*` variables that make a binary use `cfg` (the sections tests change).
pub fn env_of(cfg: &Config) -> Vec<(String, String)> {
    let t = &cfg.topics;
    let i = &cfg.ingest;
    let mut v: Vec<(&str, String)> = vec![
        ("KAFKA__BROKERS", cfg.kafka.brokers.clone()),
        ("KAFKA__INGEST_GROUP", cfg.kafka.ingest_group.clone()),
        ("KAFKA__JOINER_GROUP", cfg.kafka.joiner_group.clone()),
        ("KAFKA__PARTITIONS", cfg.kafka.partitions.to_string()),
        ("TOPICS__REQUEST", t.request.clone()),
        ("TOPICS__EXPOSURE", t.exposure.clone()),
        ("TOPICS__INTERACTION", t.interaction.clone()),
        ("TOPICS__JOINED", t.joined.clone()),
        ("TOPICS__DEAD_LETTER", t.dead_letter.clone()),
        ("TOPICS__UNMATCHED", t.unmatched.clone()),
        ("CLICKHOUSE__URL", cfg.clickhouse.url.clone()),
        ("CLICKHOUSE__DATABASE", cfg.clickhouse.database.clone()),
        ("REDIS__URL", cfg.redis.url.clone()),
        ("INGEST__BATCH_MAX_ROWS", i.batch_max_rows.to_string()),
        ("INGEST__FLUSH_INTERVAL_MS", i.flush_interval_ms.to_string()),
        ("INGEST__FLUSH_AGE_MS", i.flush_age_ms.to_string()),
        (
            "INGEST__MAX_PENDING_BATCHES",
            i.max_pending_batches.to_string(),
        ),
        ("INGEST__RETRY_MAX_MS", i.retry_max_ms.to_string()),
        ("INGEST__METRICS_LISTEN", i.metrics_listen.clone()),
        ("JOINER__METRICS_LISTEN", cfg.joiner.metrics_listen.clone()),
    ];
    v.retain(|_| true);
    v.into_iter()
        .map(|(k, val)| (format!("ADLOG_{k}"), val))
        .collect()
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Path of a workspace binary, built (once per test process) if needed, in the
/// same profile as the tests.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<std::sync::Mutex<Vec<String>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let path = target.join("debug").join(name);
    if !built.iter().any(|b| b == name) {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", name, "--bin", name])
            .current_dir(workspace_root())
            .status()
            .expect("running cargo build");
        assert!(status.success(), "building {name} failed");
        built.push(name.to_string());
    }
    path
}

/// A child process that is killed (SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    /// Starts `bin(name) args…` with `cfg`'s environment; output goes to
    /// `target/test-logs/<db>-<name>.log`.
    pub fn start(name: &str, args: &[&str], cfg: &Config) -> anyhow::Result<Proc> {
        let logs = workspace_root().join("target").join("test-logs");
        std::fs::create_dir_all(&logs)?;
        let log_path = logs.join(format!("{}-{name}.log", cfg.clickhouse.database));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let child = Command::new(bin(name))
            .args(args)
            .envs(env_of(cfg))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            child,
            name: log_path.display().to_string(),
        })
    }

    /// SIGKILL, like a crash.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, like an orchestrator stopping the worker.
    pub fn term(&mut self) {
        unsafe_kill(self.child.id(), "TERM");
    }

    /// Waits for exit up to `timeout`; returns the exit code.
    pub fn wait(&mut self, timeout: Duration) -> anyhow::Result<i32> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st.code().unwrap_or(-1));
            }
            anyhow::ensure!(
                start.elapsed() < timeout,
                "{} still running after {timeout:?} (log: {})",
                self.child.id(),
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Panics, with the exit status and the end of the log, if it exited:
    /// a worker that stopped early says why in its last lines.
    pub fn assert_running(&mut self, why: &str) {
        if let Some(st) = self.child.try_wait().expect("try_wait") {
            let log = std::fs::read_to_string(&self.name).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            panic!("{why}: it exited ({st}); the end of {}:\n{tail}", self.name);
        }
    }

    /// Resident set size in KiB (from /proc), 0 if the process is gone.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1).map(|n| n.parse().unwrap_or(0)))
            })
            .unwrap_or(0)
    }
}

fn unsafe_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status();
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `ingest migrate` for `cfg` and fails with its output if it fails.
pub fn migrate(cfg: &Config) -> anyhow::Result<()> {
    let out = Command::new(bin("ingest"))
        .arg("migrate")
        .envs(env_of(cfg))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "ingest migrate failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A ClickHouse client for `cfg` (no validation: 18.16 lacks RowBinaryWithNamesAndTypes).
pub fn clickhouse(cfg: &Config) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(&cfg.clickhouse.url)
        .with_user(&cfg.clickhouse.user)
        .with_validation(false)
}

/// `SELECT count() FROM <db>.<table> [WHERE …]`.
pub async fn count(ch: &clickhouse::Client, cfg: &Config, table: &str, filter: &str) -> u64 {
    let w = if filter.is_empty() {
        String::new()
    } else {
        format!(" WHERE {filter}")
    };
    ch.query(&format!(
        "SELECT count() FROM {}.{table}{w}",
        cfg.clickhouse.database
    ))
    .fetch_one::<u64>()
    .await
    .unwrap_or_else(|e| panic!("counting {table}: {e}"))
}

/// Drops the test's database (best effort).
pub async fn drop_database(cfg: &Config) {
    let _ = clickhouse(cfg)
        .query(&format!(
            "DROP DATABASE IF EXISTS {}",
            cfg.clickhouse.database
        ))
        .execute()
        .await;
}

/// Sends generator traffic for `cfg` and returns the manifest (every message acknowledged).
pub async fn generate(cfg: &Config, count: u64, rate: u64) -> anyhow::Result<loadgen::Manifest> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let mut params = loadgen::Params::from_config(&cfg.loadgen, now);
    params.count = count;
    params.start_ms = params.start_ending_at(now);
    let mut opts = loadgen::SendOptions::from_config(cfg);
    opts.rate = rate;
    opts.progress = false;
    let m = loadgen::produce(cfg, &params, &opts).await?;
    m.ensure_delivered()?;
    Ok(m)
}

pub mod reliability;
pub mod rollups;

#[cfg(test)]
mod calendar {
    //! No test data that expires: the tests, fixtures and scripts that feed
    //! rows to ClickHouse or to the workers build their timestamps from the
    //! current time (or from the clock of the engine they check), never from
    //! a calendar date. A TTL drops an expired row at insert time on a current
    //! ClickHouse, and `ingest.max_past_age_s` dead-letters an old event, so a
    //! fixed date turns a green test red weeks later (it did, in November
    //! 2026). This check finds `YYYY-MM-DD` dates and epoch constants of this
    //! century's first half (10 or 13 digits, underscores allowed) in those
    //! files; a line within 10 lines after a `calendar-ok: <why>` comment is
    //! exempt.

    use std::path::{Path, PathBuf};

    fn files(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if p.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    files(&p, out);
                }
            } else if !name.ends_with(".md") && !name.ends_with(".json") && !name.ends_with(".png")
            {
                out.push(p);
            }
        }
    }

    /// Byte ranges of date-like or epoch-like literals in `line`.
    fn suspects(line: &str) -> Vec<String> {
        let b = line.as_bytes();
        let mut found = Vec::new();
        let mut i = 0;
        while i < b.len() {
            // YYYY-MM-DD with YYYY in 2000..2099
            if i + 10 <= b.len()
                && b[i..i + 2] == *b"20"
                && (i == 0 || !b[i - 1].is_ascii_digit())
                && b[i + 2].is_ascii_digit()
                && b[i + 3].is_ascii_digit()
                && b[i + 4] == b'-'
                && b[i + 5].is_ascii_digit()
                && b[i + 6].is_ascii_digit()
                && b[i + 7] == b'-'
                && b[i + 8].is_ascii_digit()
                && b[i + 9].is_ascii_digit()
            {
                found.push(line[i..i + 10].to_string());
                i += 10;
                continue;
            }
            // A run of digits (underscores allowed) starting a number.
            if b[i].is_ascii_digit()
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
            {
                let start = i;
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
                    i += 1;
                }
                let digits: String = line[start..i].chars().filter(|c| *c != '_').collect();
                let epochish = (digits.len() == 10 || digits.len() == 13)
                    && (digits.starts_with("16")
                        || digits.starts_with("17")
                        || digits.starts_with("18")
                        || digits.starts_with("19"));
                if epochish && !(i < b.len() && b[i].is_ascii_alphabetic()) {
                    found.push(line[start..i].to_string());
                }
                continue;
            }
            i += 1;
        }
        found
    }

    #[test]
    fn finds_dates_and_epochs() {
        // The examples are built from the current time, so that this file
        // holds no date itself.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let mut stamp = String::new();
        schemas::time::format_ms(now_ms, &mut stamp);
        let day = &stamp[..10];
        assert_eq!(suspects(&format!(r#"x = "{stamp}""#)), [day]);
        let secs = (now_ms / 1000).to_string();
        assert_eq!(suspects(&format!("base = {secs}  # x")), [secs.as_str()]);
        let ms = now_ms.to_string();
        let grouped = format!("{}_{}_{}", &ms[..1], &ms[1..4], &ms[4..]);
        assert_eq!(
            suspects(&format!("const START: i64 = {grouped};")),
            [grouped.as_str()]
        );
        assert!(suspects("port 18123, offset 812, 200000 events, v2.16.1").is_empty());
    }

    #[test]
    fn no_test_data_is_stamped_with_a_calendar_date() {
        let root = super::workspace_root();
        let mut all = Vec::new();
        for d in ["tests", "bench"] {
            files(&root.join(d), &mut all);
        }
        all.push(root.join("dev/demo"));
        let mut bad = Vec::new();
        for f in &all {
            let Ok(text) = std::fs::read_to_string(f) else {
                continue; // not text
            };
            let mut exempt_until = 0;
            for (n, line) in text.lines().enumerate() {
                if line.contains("calendar-ok") {
                    exempt_until = n + 10;
                    continue;
                }
                if n <= exempt_until && exempt_until > 0 {
                    continue;
                }
                for s in suspects(line) {
                    bad.push(format!(
                        "{}:{}: {s}",
                        f.strip_prefix(&root).unwrap().display(),
                        n + 1
                    ));
                }
            }
        }
        assert!(
            bad.is_empty(),
            "calendar dates or epoch constants in test data (stamp rows from the current \
             time or the engine's clock; mark a line that stores nothing with a \
             `calendar-ok: <why>` comment):\n{}",
            bad.join("\n")
        );
    }
}
