//! Security: credentials never appear in logs or on /metrics, /metrics binds
//! to localhost unless configured, the ClickHouse password works from the
//! environment and from `clickhouse.password_file`, and Kafka TLS/SASL
//! settings reach librdkafka.
//!
//! The workers run at debug log level (`RUST_LOG=debug`) with real secrets:
//! a ClickHouse user with a password (a users.d file in a ClickHouse of this
//! test's own), a Redis with `requirepass`, a Kafka `sasl.password` property.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Config;
use integration_tests::reliability::{
    ch_u64, full_env, http_get, metric_sum, metrics_addr, workspace_root, OwnRedis, OwnStack,
};
use integration_tests::{bin, generate, test_config, Proc};

/// Runs `bin args` with `env` (config via env only), up to `timeout`.
fn run(b: &str, args: &[&str], env: &[(String, String)], timeout: Duration) -> (i32, String) {
    let mut child = Command::new(bin(b))
        .args(args)
        .envs(env.iter().cloned())
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pipe = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = pipe(Box::new(child.stdout.take().unwrap()));
    let err = pipe(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code().unwrap_or(-1);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{b} {args:?} still running after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (code, out.join().unwrap() + &err.join().unwrap())
}

fn assert_no_secret(secret: &str, what: &str, text: &str) {
    assert!(
        !text.contains(secret),
        "the secret appears in {what}:\n{}",
        text.lines()
            .filter(|l| l.contains(secret))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn log_dir() -> std::path::PathBuf {
    let d = workspace_root().join("target").join("test-logs");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Starts a worker at debug level with `env`; its log file.
fn start_worker(role: &str, cfg: &Config, extra: &[(String, String)]) -> Proc {
    let log = log_dir().join(format!("{}-{role}-security.log", cfg.clickhouse.database));
    let _ = std::fs::remove_file(&log);
    let mut env = full_env(cfg);
    env.extend(extra.iter().cloned());
    env.push(("RUST_LOG".into(), "debug".into()));
    Proc::start_env(role, &["run"], &env, &log).unwrap()
}

/// Waits until a worker's `/metrics` shows `metric` > 0; returns the page.
fn metrics_when(p: &mut Proc, metric: &str, timeout: Duration) -> String {
    let addr = metrics_addr(&p.name, Duration::from_secs(30)).expect("metrics address logged");
    let start = Instant::now();
    loop {
        let page = http_get(&addr, "/metrics").unwrap_or_default();
        if metric_sum(&page, metric) > 0.0 {
            return page;
        }
        assert!(p.is_running(), "worker exited; log {}", p.name);
        assert!(
            start.elapsed() < timeout,
            "{metric} stayed 0 (log {})",
            p.name
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn term(p: &mut Proc) {
    p.term();
    assert_eq!(
        p.wait(Duration::from_secs(60)).unwrap(),
        0,
        "exit code (log {})",
        p.name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_password_from_env_and_file_never_logged() {
    const SECRET: &str = "chPW-Secret-8841";
    let own = tokio::task::block_in_place(|| {
        let own = OwnStack::new("sec-ch");
        own.up("clickhouse");
        own
    });
    // A user with a password (ClickHouse reloads users.d by itself).
    let users = own.dir.join("clickhouse/etc/users.d/zz-adlog-writer.xml");
    std::fs::write(
        &users,
        format!(
            "<?xml version=\"1.0\"?>\n<yandex><users><adlog_writer>\
             <password>{SECRET}</password><networks><ip>127.0.0.1</ip></networks>\
             <profile>default</profile><quota>default</quota>\
             </adlog_writer></users></yandex>\n"
        ),
    )
    .unwrap();
    let mut cfg = test_config("sec_ch");
    cfg.clickhouse.url = own.ch_url();
    cfg.clickhouse.user = "adlog_writer".into();
    let pw_file = own.dir.join("ch-password");
    std::fs::write(&pw_file, format!("{SECRET}\n")).unwrap();
    let mut from_file = full_env(&cfg);
    from_file.push((
        "ADLOG_CLICKHOUSE__PASSWORD_FILE".into(),
        pw_file.display().to_string(),
    ));
    let from_env = {
        let mut e = full_env(&cfg);
        e.push(("ADLOG_CLICKHOUSE__PASSWORD".into(), SECRET.into()));
        e
    };

    tokio::task::block_in_place(|| {
        // password_file: `ingest migrate` authenticates (retried until the
        // server has loaded the new user).
        let start = Instant::now();
        let out = loop {
            let (code, out) = run("ingest", &["migrate"], &from_file, Duration::from_secs(60));
            if code == 0 {
                break out;
            }
            assert!(
                out.contains("Unknown user adlog_writer")
                    && start.elapsed() < Duration::from_secs(30),
                "ingest migrate with clickhouse.password_file: exit {code}\n{out}"
            );
            std::thread::sleep(Duration::from_millis(500));
        };
        assert_no_secret(SECRET, "ingest migrate's output", &out);

        // A wrong password: a clear error naming the user, not the password.
        let mut wrong = full_env(&cfg);
        wrong.push((
            "ADLOG_CLICKHOUSE__PASSWORD".into(),
            "not-the-password-5512".into(),
        ));
        let (code, out) = run("ingest", &["migrate"], &wrong, Duration::from_secs(60));
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains("Wrong password for user adlog_writer"),
            "{out}"
        );
        assert!(out.contains("as user \"adlog_writer\""), "{out}");
        assert_no_secret("not-the-password-5512", "the wrong-password error", &out);

        // check-config shows the password redacted.
        let (code, out) = run(
            "ingest",
            &["check-config", "--offline"],
            &from_env,
            Duration::from_secs(30),
        );
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("password = \"***\""), "{out}");
        assert_no_secret(SECRET, "ingest check-config", &out);
    });

    // The worker with the password from the environment, at debug level.
    let mut ingest = start_worker("ingest", &cfg, &from_env[from_env.len() - 1..]);
    generate(&cfg, 3_000, 0).await.unwrap();
    let page = tokio::task::block_in_place(|| {
        let page = metrics_when(
            &mut ingest,
            "adlog_ingest_rows_inserted_total",
            Duration::from_secs(120),
        );
        // The metric counts every table; ods_request's own lane may finish
        // its first INSERT a little later (seen on a slow CI machine).
        let sql = format!(
            "SELECT count() FROM {}.ods_request",
            cfg.clickhouse.database
        );
        let waited = Instant::now();
        let mut rows = 0;
        while rows == 0 && waited.elapsed() < Duration::from_secs(60) {
            rows = ch_u64(&own.ch_url(), &sql).unwrap();
            if rows == 0 {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        assert!(rows > 0, "rows inserted as adlog_writer");
        term(&mut ingest);
        page
    });
    let log = std::fs::read_to_string(&ingest.name).unwrap();
    assert!(log.contains("DEBUG"), "the worker ran at debug level");
    assert_no_secret(SECRET, "the ingest log", &log);
    assert_no_secret(SECRET, "/metrics", &page);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_password_never_logged() {
    const SECRET: &str = "redisPW-Secret-2290";
    let redis = tokio::task::block_in_place(|| OwnRedis::start_with_password("sec", Some(SECRET)));
    let mut cfg = test_config("sec_redis");
    cfg.redis.url = format!("redis://:{SECRET}@127.0.0.1:{}", redis.port);
    cfg.joiner.key_prefix = format!("{}:", cfg.clickhouse.database);
    cfg.joiner.metrics_listen = "127.0.0.1:0".into();

    tokio::task::block_in_place(|| {
        let (code, out) = run(
            "ingest",
            &["check-config", "--offline"],
            &full_env(&cfg),
            Duration::from_secs(30),
        );
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains(&format!("redis://:***@127.0.0.1:{}", redis.port)),
            "{out}"
        );
        assert_no_secret(SECRET, "ingest check-config", &out);

        // A wrong password: the joiner gives up after its startup wait,
        // naming redis.url (redacted), not the password.
        let mut wrong = cfg.clone();
        wrong.redis.url = format!("redis://:wrongPW-3319@127.0.0.1:{}", redis.port);
        let (code, out) = run(
            "joiner",
            &["run"],
            &full_env(&wrong),
            Duration::from_secs(60),
        );
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains("redis.url") && out.contains("redis://***@127.0.0.1"),
            "{out}"
        );
        assert_no_secret("wrongPW-3319", "the joiner's wrong-password error", &out);
    });

    let mut joiner = start_worker("joiner", &cfg, &[]);
    generate(&cfg, 5_000, 0).await.unwrap();
    let page = tokio::task::block_in_place(|| {
        let page = metrics_when(
            &mut joiner,
            "adlog_joiner_produced_total",
            Duration::from_secs(120),
        );
        term(&mut joiner);
        page
    });
    let log = std::fs::read_to_string(&joiner.name).unwrap();
    // (RUST_LOG=debug; the joiner itself logs little at debug level)
    assert!(log.contains("joiner started"), "{log}");
    assert_no_secret(SECRET, "the joiner log", &log);
    assert_no_secret(SECRET, "/metrics", &page);
}

/// Kafka properties pass through to librdkafka: an invalid
/// `security.protocol` is librdkafka's error naming it, TLS settings are
/// understood (this build has OpenSSL), and a `sasl.password` is in no
/// output, not even at debug level with librdkafka's own debug contexts on.
#[test]
fn kafka_security_settings_pass_through_and_sasl_password_never_logged() {
    const SECRET: &str = "kafkaPW-Secret-6675";
    let dir = workspace_root()
        .join("target")
        .join("reliability")
        .join("security");
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let base = |cfg: &Config| {
        let mut e = full_env(cfg);
        e.retain(|(k, _)| k != "ADLOG_KAFKA__BROKERS");
        e
    };
    let cfg = test_config("sec_kafka");
    let bogus = file(
        "bogus.toml",
        format!(
            "[kafka]\nbrokers = \"{}\"\n[kafka.properties]\n\"security.protocol\" = \"bogus\"\n",
            cfg.kafka.brokers
        ),
    );
    let tls = file(
        "tls.toml",
        format!(
            "[kafka]\nbrokers = \"{}\"\n[kafka.properties]\n\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = \"/nonexistent/kafka-ca.pem\"\n",
            cfg.kafka.brokers
        ),
    );
    let sasl = file(
        "sasl.toml",
        format!(
            "[kafka]\nbrokers = \"{}\"\n[kafka.properties]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\
             \"sasl.mechanisms\" = \"PLAIN\"\n\"sasl.username\" = \"adlog\"\n\"sasl.password\" = \"{SECRET}\"\n\
             \"debug\" = \"broker,security,conf\"\n",
            cfg.kafka.brokers
        ),
    );
    let arg = |p: &Path| p.display().to_string();
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("ingest", vec!["--config".into(), arg(&bogus), "run".into()]),
        ("joiner", vec!["--config".into(), arg(&bogus), "run".into()]),
        (
            "loadgen",
            vec![
                "--config".into(),
                arg(&bogus),
                "--count".into(),
                "10".into(),
            ],
        ),
    ];
    std::thread::scope(|s| {
        let mut hs = Vec::new();
        for (b, args) in &cases {
            let env = base(&cfg);
            hs.push(s.spawn(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let (code, out) = run(b, &args, &env, Duration::from_secs(60));
                assert_eq!(code, 1, "{b}: {out}");
                assert!(
                    out.contains(
                        "Invalid value \"bogus\" for configuration property \"security.protocol\""
                    ),
                    "{b}: librdkafka's error naming security.protocol:\n{out}"
                );
            }));
        }
        // TLS settings reach librdkafka (which reports the missing CA file).
        let env = base(&cfg);
        let tls = arg(&tls);
        hs.push(s.spawn(move || {
            let (code, out) = run(
                "ingest",
                &["--config", &tls, "run"],
                &env,
                Duration::from_secs(60),
            );
            assert_eq!(code, 1, "{out}");
            assert!(out.contains("ssl.ca.location"), "{out}");
            assert!(
                !out.contains("not supported in this build"),
                "librdkafka without TLS: {out}"
            );
        }));
        // SASL: the broker (plaintext tansu) does not speak it, so the
        // workers fail; whatever they print must not contain the password.
        for b in ["ingest", "joiner"] {
            let env = base(&cfg);
            let sasl = arg(&sasl);
            hs.push(s.spawn(move || {
                let (code, out) = run(
                    b,
                    &["--config", &sasl, "run"],
                    &env,
                    Duration::from_secs(90),
                );
                assert_ne!(code, 0, "{b}: {out}");
                assert_no_secret(SECRET, &format!("{b}'s output"), &out);
            }));
        }
        let env = base(&cfg);
        let sasl2 = arg(&sasl);
        hs.push(s.spawn(move || {
            let (code, out) = run(
                "ingest",
                &["--config", &sasl2, "check-config", "--offline"],
                &env,
                Duration::from_secs(30),
            );
            assert_eq!(code, 0, "{out}");
            assert!(out.contains("\"sasl.password\" = \"***\""), "{out}");
            assert_no_secret(SECRET, "ingest check-config", &out);
        }));
        for h in hs {
            h.join().unwrap();
        }
    });
}

#[test]
fn metrics_bind_to_localhost_unless_configured() {
    let d = Config::default();
    assert_eq!(d.ingest.metrics_listen, "127.0.0.1:9101");
    assert_eq!(d.joiner.metrics_listen, "127.0.0.1:9102");
    // The effective defaults, as the binary sees them (no overrides).
    let mut c = Command::new(bin("ingest"));
    c.args(["check-config", "--offline"]);
    for (k, _) in std::env::vars() {
        if k.starts_with("ADLOG_") {
            c.env_remove(k);
        }
    }
    let out = c.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let listens: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("metrics_listen"))
        .collect();
    assert_eq!(
        listens,
        [
            "metrics_listen = \"127.0.0.1:9101\"",
            "metrics_listen = \"127.0.0.1:9102\""
        ],
        "{text}"
    );

    // A running worker binds where it is told: localhost by default, any
    // address when configured.
    for (listen, want) in [("127.0.0.1:0", "127.0.0.1:"), ("0.0.0.0:0", "0.0.0.0:")] {
        let mut cfg = test_config("sec_listen");
        cfg.ingest.metrics_listen = listen.into();
        let log = log_dir().join(format!("{}-ingest.log", cfg.clickhouse.database));
        let mut p = Proc::start_env("ingest", &["run"], &full_env(&cfg), &log).unwrap();
        let addr = metrics_addr(&p.name, Duration::from_secs(30)).expect("metrics address logged");
        assert!(addr.starts_with(want), "{listen}: bound {addr}");
        let page = http_get(
            &format!("127.0.0.1:{}", addr.rsplit(':').next().unwrap()),
            "/metrics",
        )
        .unwrap();
        assert!(page.contains("adlog_ingest_"), "{page}");
        p.term();
        let _ = p.wait(Duration::from_secs(60));
    }
}
