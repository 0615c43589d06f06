//! `ingest check-config` and `joiner check-config` reach every service the
//! configuration names, against the real stack and with each service "down"
//! (an address nothing listens on, a metrics port this test holds, a database
//! never migrated): the service's line says FAIL and why, the others say ok,
//! the exit status is 1, and the answer comes within a few seconds.
//! `--offline` checks the file only, with everything down. The shared stack is
//! never stopped.

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Config;
use integration_tests::{bin, drop_database, env_of, migrate, test_config};

/// A port nothing listens on (bound, then released).
fn unused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Answer {
    code: i32,
    /// The `# services:` section: one line per check.
    lines: Vec<String>,
    stderr: String,
    took: Duration,
}

impl Answer {
    /// The one line of `service` about `target` (prefix of the text after the
    /// service column).
    fn line(&self, service: &str, target: &str) -> &str {
        let found: Vec<&String> = self
            .lines
            .iter()
            .filter(|l| {
                l.get(6..)
                    .and_then(|r| r.strip_prefix(&format!("{service:<10}  ")))
                    .is_some_and(|r| r.starts_with(target))
            })
            .collect();
        assert_eq!(found.len(), 1, "{service} {target} in {:#?}", self.lines);
        found[0]
    }
    fn status_of(&self, service: &str, target: &str) -> &str {
        self.line(service, target)
            .split_whitespace()
            .next()
            .unwrap()
    }
}

fn check(binary: &str, cfg: &Config, extra: &[(&str, String)], args: &[&str]) -> Answer {
    let t0 = Instant::now();
    let out = Command::new(bin(binary))
        .arg("check-config")
        .args(args)
        .envs(env_of(cfg))
        .envs(extra.iter().map(|(k, v)| (k.to_string(), v.clone())))
        .output()
        .unwrap();
    let took = t0.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines = stdout
        .split("# services:\n")
        .nth(1)
        .map(|s| {
            s.lines()
                .filter(|l| !l.starts_with('#'))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    println!(
        "$ {binary} check-config {} {:?}\n{}{}(exit {:?}, {took:.1?})\n",
        args.join(" "),
        extra,
        stdout
            .split("# services:\n")
            .nth(1)
            .unwrap_or("(no service checks)\n"),
        String::from_utf8_lossy(&out.stderr),
        out.status.code()
    );
    Answer {
        code: out.status.code().unwrap_or(-1),
        lines,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took,
    }
}

/// Within a few seconds even when a service does not answer.
const QUICK: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_reaches_every_service_and_names_the_one_down() {
    let mut cfg = test_config("cc");
    migrate(&cfg).expect("migrations");
    let t = cfg.topics.clone();
    let ingest_topics = [
        &t.request,
        &t.exposure,
        &t.interaction,
        &t.joined,
        &t.dead_letter,
    ];
    let names: Vec<&str> = ingest_topics.iter().map(|s| s.as_str()).collect();
    let refused = common::kafka::create_topics(&cfg.kafka, &names, 1)
        .await
        .unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    cfg.kafka.partitions = 3; // only what a *missing* topic would get
    let partitions = Config::load(None).unwrap().kafka.partitions;

    // Everything up.
    let a = tokio::task::block_in_place(|| check("ingest", &cfg, &[], &[]));
    assert_eq!(a.code, 0, "{}", a.stderr);
    assert!(a.took < QUICK, "{:?}", a.took);
    assert_eq!(a.lines.len(), 1 + 5 + 1 + 1, "{:#?}", a.lines);
    assert_eq!(a.status_of("kafka", &cfg.kafka.brokers), "ok");
    for topic in &names {
        assert!(
            a.line("kafka", &format!("topic {topic}:"))
                .ends_with(&format!(": {partitions} partitions")),
            "{:#?}",
            a.lines
        );
    }
    let ch = a.line("clickhouse", &cfg.clickhouse.url);
    assert!(ch.starts_with("ok"), "{ch}");
    assert!(
        ch.contains(&format!(
            "database {}, migrations up to",
            cfg.clickhouse.database
        )),
        "{ch}"
    );
    assert_eq!(a.status_of("metrics", "ingest.metrics_listen"), "ok");

    // Kafka down: that line fails, ClickHouse is still checked.
    let kafka_down = format!("127.0.0.1:{}", unused_port());
    let a = tokio::task::block_in_place(|| {
        check(
            "ingest",
            &cfg,
            &[("ADLOG_KAFKA__BROKERS", kafka_down.clone())],
            &[],
        )
    });
    assert_eq!(a.code, 1);
    assert!(a.took < QUICK, "{:?}", a.took);
    let k = a.line("kafka", &kafka_down);
    assert!(
        k.starts_with("FAIL") && k.contains("no metadata within"),
        "{k}"
    );
    assert_eq!(a.status_of("clickhouse", &cfg.clickhouse.url), "ok");
    assert!(
        a.stderr.contains("1 of 3 service checks failed"),
        "{}",
        a.stderr
    );

    // ClickHouse down.
    let ch_down = format!("http://127.0.0.1:{}", unused_port());
    let a = tokio::task::block_in_place(|| {
        check(
            "ingest",
            &cfg,
            &[("ADLOG_CLICKHOUSE__URL", ch_down.clone())],
            &[],
        )
    });
    assert_eq!(a.code, 1);
    assert!(a.took < QUICK, "{:?}", a.took);
    let c = a.line("clickhouse", &ch_down);
    assert!(
        c.starts_with("FAIL") && c.contains("Connection refused"),
        "{c}"
    );
    assert_eq!(a.status_of("kafka", &cfg.kafka.brokers), "ok");

    // ClickHouse up, the database never migrated.
    let a = tokio::task::block_in_place(|| {
        check(
            "ingest",
            &cfg,
            &[(
                "ADLOG_CLICKHOUSE__DATABASE",
                format!("{}_never", cfg.clickhouse.database),
            )],
            &[],
        )
    });
    assert_eq!(a.code, 1);
    let c = a.line("clickhouse", &cfg.clickhouse.url);
    assert!(
        c.starts_with("FAIL") && c.ends_with("_never does not exist: run `ingest migrate`"),
        "{c}"
    );

    // The metrics port taken (by this test).
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().to_string();
    let a = tokio::task::block_in_place(|| {
        check(
            "ingest",
            &cfg,
            &[("ADLOG_INGEST__METRICS_LISTEN", taken.clone())],
            &[],
        )
    });
    assert_eq!(a.code, 1);
    let m = a.line("metrics", &format!("ingest.metrics_listen {taken}"));
    assert!(m.starts_with("FAIL") && m.contains("cannot listen"), "{m}");

    // A topic that does not exist yet: a warning (the worker creates it).
    let a = tokio::task::block_in_place(|| {
        check(
            "ingest",
            &cfg,
            &[(
                "ADLOG_TOPICS__DEAD_LETTER",
                format!("{}_not_yet", t.dead_letter),
            )],
            &[],
        )
    });
    assert_eq!(a.code, 0, "{}", a.stderr);
    let w = a.line("kafka", &format!("topic {}_not_yet:", t.dead_letter));
    assert!(
        w.starts_with("warn")
            && w.ends_with("does not exist yet (ingest run creates it with kafka.partitions = 3)"),
        "{w}"
    );

    // The joiner: Kafka topics, Redis, its metrics port.
    let a = tokio::task::block_in_place(|| check("joiner", &cfg, &[], &[]));
    assert_eq!(a.code, 0, "{}", a.stderr);
    assert_eq!(a.lines.len(), 1 + 3 + 1 + 1, "{:#?}", a.lines);
    for topic in [&t.exposure, &t.interaction, &t.joined] {
        assert_eq!(a.status_of("kafka", &format!("topic {topic}:")), "ok");
    }
    let r = a.line("redis", &cfg.redis.url);
    assert!(r.starts_with("ok") && r.ends_with(", PING ok"), "{r}");
    assert_eq!(a.status_of("metrics", "joiner.metrics_listen"), "ok");

    let redis_down = format!("redis://127.0.0.1:{}", unused_port());
    let a = tokio::task::block_in_place(|| {
        check(
            "joiner",
            &cfg,
            &[("ADLOG_REDIS__URL", redis_down.clone())],
            &[],
        )
    });
    assert_eq!(a.code, 1);
    assert!(a.took < QUICK, "{:?}", a.took);
    let r = a.line("redis", &redis_down);
    assert!(r.starts_with("FAIL") && r.contains("cannot connect"), "{r}");
    assert_eq!(a.status_of("kafka", &cfg.kafka.brokers), "ok");

    // Every seed of a cluster is reached: one up, one down; and the node
    // that is up is no cluster node.
    let seeds = format!("{},{redis_down}", cfg.redis.url);
    let a = tokio::task::block_in_place(|| {
        check(
            "joiner",
            &cfg,
            &[
                ("ADLOG_REDIS__URL", seeds.clone()),
                ("ADLOG_REDIS__CLUSTER", "true".into()),
            ],
            &[],
        )
    });
    assert_eq!(a.code, 1);
    assert!(a.line("redis", &redis_down).starts_with("FAIL"));
    let up = a.line("redis", &cfg.redis.url);
    assert!(
        up.starts_with("FAIL") && up.contains("CLUSTER INFO failed"),
        "{up}"
    );

    let a = tokio::task::block_in_place(|| {
        check(
            "joiner",
            &cfg,
            &[("ADLOG_KAFKA__BROKERS", kafka_down.clone())],
            &[],
        )
    });
    assert_eq!(a.code, 1);
    assert!(a.line("kafka", &kafka_down).starts_with("FAIL"));
    assert_eq!(a.status_of("redis", &cfg.redis.url), "ok");

    let a = tokio::task::block_in_place(|| {
        check(
            "joiner",
            &cfg,
            &[("ADLOG_JOINER__METRICS_LISTEN", taken.clone())],
            &[],
        )
    });
    assert_eq!(a.code, 1);
    assert!(a
        .line("metrics", &format!("joiner.metrics_listen {taken}"))
        .starts_with("FAIL"));
    drop(held);

    // --offline: the file only, with every service down.
    let all_down = [
        ("ADLOG_KAFKA__BROKERS", kafka_down.clone()),
        ("ADLOG_CLICKHOUSE__URL", ch_down.clone()),
        ("ADLOG_REDIS__URL", redis_down.clone()),
    ];
    for b in ["ingest", "joiner"] {
        let a = tokio::task::block_in_place(|| check(b, &cfg, &all_down, &["--offline"]));
        assert_eq!(a.code, 0, "{b}: {}", a.stderr);
        assert!(
            a.lines.is_empty(),
            "{b} --offline reached services: {:?}",
            a.lines
        );
    }

    drop_database(&cfg).await;
}
