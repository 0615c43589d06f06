//! `ingest dead-letters list | replay` against the real stack: generator
//! traffic is ingested under a low `ingest.max_message_bytes`, so the larger
//! good messages become `too_large` dead letters (the largest with their raw
//! bytes capped by `dead_letter_max_bytes`); the limit is raised and the
//! dead letters replayed: exactly the good messages that fit the cap become
//! rows (each once, with its Kafka coordinates), the capped ones are refused,
//! and a second replay stores nothing. Thresholds come from the generated
//! sizes, times from now.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::Config;
use integration_tests::{bin, clickhouse, drop_database, env_of, generate, migrate, test_config};
use loadgen::{Generator, Kind};
use schemas::LogType;

fn cli(cfg: &Config, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin("ingest"))
        .arg("dead-letters")
        .args(args)
        .envs(env_of(cfg))
        .env(
            "ADLOG_INGEST__MAX_MESSAGE_BYTES",
            cfg.ingest.max_message_bytes.to_string(),
        )
        .env(
            "ADLOG_INGEST__DEAD_LETTER_MAX_BYTES",
            cfg.ingest.dead_letter_max_bytes.to_string(),
        )
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("$ ingest dead-letters {}\n{text}", args.join(" "));
    (out.status.code().unwrap_or(-1), text)
}

/// (count, replayed, capped) summed over the `list` lines (one per topic).
fn list_totals(out: &str) -> (u64, u64, u64) {
    out.lines()
        .filter(|l| l.starts_with("too_large "))
        .map(|l| {
            let c: Vec<u64> = l
                .split_whitespace()
                .skip(2)
                .take(3)
                .map(|x| x.parse().unwrap())
                .collect();
            (c[0], c[1], c[2])
        })
        .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
}

fn table_of(t: LogType) -> &'static str {
    match t {
        LogType::Request => "ods_request",
        LogType::Exposure => "ods_exposure",
        LogType::Interaction => "ods_interaction",
        LogType::Joined => "ods_joined",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_replay_after_a_raised_limit_stores_each_row_once() {
    let mut cfg = test_config("dlr");
    migrate(&cfg).unwrap();
    let m = generate(&cfg, 3_000, 0).await.unwrap();
    // Sizes of the messages (good or malformed), by table.
    let mut sizes: Vec<(usize, LogType, bool)> = Generator::new(&m.params)
        .unwrap()
        .map(|msg| {
            let good = matches!(msg.kind, Kind::Good(_));
            (msg.value.len(), msg.log_type, good)
        })
        .collect();
    sizes.sort();
    let limit = sizes[sizes.len() / 2].0; // half of them too large
    let cap = sizes[sizes.len() * 3 / 4].0; // a quarter of them capped
    assert!(limit < cap, "sizes {limit} {cap}");
    let mut fits: BTreeMap<&str, u64> = BTreeMap::new(); // stored at first
    let mut replayable: BTreeMap<&str, u64> = BTreeMap::new();
    let (mut capped, mut still) = (0u64, 0u64);
    for &(n, t, good) in &sizes {
        match (n <= limit, n <= cap, good) {
            (true, _, true) => *fits.entry(table_of(t)).or_default() += 1,
            (true, _, false) => {} // a dead letter of another reason
            (false, true, true) => *replayable.entry(table_of(t)).or_default() += 1,
            (false, true, false) => still += 1, // malformed: stays a dead letter
            (false, false, _) => capped += 1,
        }
    }
    let too_large = sizes.iter().filter(|(n, _, _)| *n > limit).count() as u64;
    println!("limit {limit} B, cap {cap} B: {too_large} too large, {capped} of them capped; fit {fits:?}, replayable {replayable:?}");

    cfg.ingest.max_message_bytes = limit;
    cfg.ingest.dead_letter_max_bytes = cap;
    // The worker under the low limit (its own child: the limits go in its env).
    let mut child = Command::new(bin("ingest"))
        .args(["run", "--stop-after-idle", "4"])
        .envs(env_of(&cfg))
        .env("ADLOG_INGEST__MAX_MESSAGE_BYTES", limit.to_string())
        .env("ADLOG_INGEST__DEAD_LETTER_MAX_BYTES", cap.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t0.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            panic!("ingest run did not finish within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(status.success(), "ingest run: {status}");

    let ch = clickhouse(&cfg);
    let db = cfg.clickhouse.database.clone();
    let count = |sql: String| {
        let ch = ch.clone();
        async move { ch.query(&sql).fetch_one::<u64>().await.unwrap() }
    };
    for (t, n) in &fits {
        assert_eq!(
            count(format!("SELECT count() FROM {db}.{t}")).await,
            *n,
            "{t} before the replay"
        );
    }
    assert_eq!(
        count(format!(
            "SELECT count() FROM {db}.dead_letter WHERE reason = 'too_large'"
        ))
        .await,
        too_large
    );

    // list: the counts, capped ones among them.
    let (code, out) = cli(&cfg, &["list", "--reason", "too_large"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(list_totals(&out), (too_large, 0, capped), "{out}");
    assert!(out.contains("examples:"), "{out}");

    // The limit raised; a dry run stores nothing and says what would happen.
    cfg.ingest.max_message_bytes = 1 << 20;
    let want_rows: u64 = replayable.values().sum();
    let sizes_of = |good: bool| sizes.iter().filter(|s| s.2 == good && s.0 > limit).count();
    println!(
        "too large: {} good, {} malformed; {still} malformed within the cap",
        sizes_of(true),
        sizes_of(false)
    );
    let (code, out) = cli(&cfg, &["replay", "--reason", "too_large", "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "{too_large} dead letter(s) not replayed before: {want_rows} would parse, {still} still rejected, {capped} refused (capped) (dry run: nothing stored)"
        )),
        "{out}"
    );
    assert_eq!(
        out.lines()
            .filter(|l| l.ends_with("refused: raw bytes capped (ingest.dead_letter_max_bytes)"))
            .count() as u64,
        capped
    );
    for (t, n) in &fits {
        assert_eq!(
            count(format!("SELECT count() FROM {db}.{t}")).await,
            *n,
            "{t} after the dry run"
        );
    }

    // The replay: exactly the replayable ones, each once, with its coordinates.
    let metrics = tempfile::NamedTempFile::new().unwrap();
    let mpath = metrics.path().to_string_lossy().to_string();
    let (code, out) = cli(
        &cfg,
        &["replay", "--reason", "too_large", "--metrics-file", &mpath],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "{too_large} dead letter(s) not replayed before: {want_rows} now parse, {still} still rejected, {capped} refused (capped); {want_rows} row(s) stored, 0 already stored"
        )),
        "{out}"
    );
    let prom = std::fs::read_to_string(metrics.path()).unwrap();
    assert!(
        prom.contains(&format!(
            "adlog_ingest_dead_letters_replayed_total{{reason=\"too_large\",outcome=\"stored\",dry_run=\"false\"}} {want_rows}\n"
        )),
        "{prom}"
    );
    for t in ["ods_request", "ods_exposure", "ods_interaction"] {
        let want = fits.get(t).copied().unwrap_or(0) + replayable.get(t).copied().unwrap_or(0);
        assert_eq!(
            count(format!("SELECT count() FROM {db}.{t}")).await,
            want,
            "{t} after the replay"
        );
        assert_eq!(
            count(format!(
                "SELECT uniqExact(_topic, _partition, _offset) FROM {db}.{t}"
            ))
            .await,
            want,
            "{t}: one row per Kafka message"
        );
    }
    // Each replayed row sits at its dead letter's coordinates.
    assert_eq!(
        count(format!(
            "SELECT count() FROM {db}.dead_letter_replayed WHERE (_topic, _partition, _offset) IN \
             (SELECT _topic, _partition, _offset FROM {db}.dead_letter WHERE reason = 'too_large' AND raw_size = length(raw))"
        ))
        .await,
        want_rows
    );

    // A replay that died between its INSERTs and its marks: the rows are
    // found in their tables and only marked.
    ch.query(&format!("TRUNCATE TABLE {db}.dead_letter_replayed"))
        .execute()
        .await
        .unwrap();
    let (code, out) = cli(&cfg, &["replay", "--reason", "too_large"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "; 0 row(s) stored, {want_rows} already stored (marked only)"
        )),
        "{out}"
    );

    // A second replay stores nothing.
    let (code, out) = cli(&cfg, &["replay", "--reason", "too_large"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "{} dead letter(s) not replayed before: 0 now parse, {still} still rejected, {capped} refused (capped); 0 row(s) stored",
            capped + still
        )),
        "{out}"
    );
    for t in ["ods_request", "ods_exposure", "ods_interaction"] {
        let want = fits.get(t).copied().unwrap_or(0) + replayable.get(t).copied().unwrap_or(0);
        assert_eq!(
            count(format!("SELECT count() FROM {db}.{t}")).await,
            want,
            "{t} after the second replay"
        );
    }
    let (code, out) = cli(&cfg, &["list", "--reason", "too_large", "--examples", "0"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(list_totals(&out), (too_large, want_rows, capped), "{out}");
    drop_database(&cfg).await;
}
