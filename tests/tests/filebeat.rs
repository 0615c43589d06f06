//! Filebeat documents as users send them, through the dev broker and
//! ClickHouse: a 6.x log-input document (top-level `source`/`offset`,
//! `beat.hostname`, `prospector`) keeps where its line came from, and a
//! multiline event (a request line followed by a Java stack trace) is stored as
//! the row of its first line with the stack trace in the extra
//! `_continuation`, in a 7.x document and as a bare line (raw codec), and
//! `adlog-trace` and the trace dashboard's Logs panel show it under its line.
//! Nothing is dead-lettered. Times are relative to now.

use std::process::Command;
use std::time::Duration;

use integration_tests::{bin, clickhouse, drop_database, env_of, migrate, test_config, Proc};
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::time::format_ms;

const STACK: &str = "java.lang.IllegalStateException: bid service timed out\n\tat com.example.ad.BidClient.call(BidClient.java:88)\n\tat com.example.ad.Gateway.feed(Gateway.java:41)\nCaused by: java.net.SocketTimeoutException: Read timed out\n\t... 2 more";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A request line (README format) of span `span`, status 500, at now - 2 s.
fn line(span: &str) -> String {
    let mut ts = String::new();
    format_ms(now_ms() - 2_000, &mut ts);
    format!("{ts}\t4bf92f3577b34da6a3ce929d0e0e4736\t{span}\t\tad-gateway\t\t/v1/feed\t123456\t1001\t500\t12.75\tad-web-017\tyf\tregion=cn-north")
}

/// `@timestamp` of a document read now.
fn read_at() -> String {
    let mut s = String::new();
    schemas::time::format_rfc3339_ms(now_ms(), &mut s);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filebeat_6x_documents_and_multiline_events_are_stored_whole() {
    let mut cfg = test_config("filebeat");
    cfg.kafka.partitions = 1;
    migrate(&cfg).unwrap();
    ingest::run::ensure_topics(&cfg, &[&cfg.topics.request, &cfg.topics.dead_letter])
        .await
        .unwrap();

    let json = |s: &str| serde_json::to_string(s).unwrap();
    // Filebeat 6.2 (log prospector, no `host` object yet): where the line came
    // from is only in `source`, `offset` and `beat`.
    let v6 = format!(
        r#"{{"@timestamp":"{}","@metadata":{{"beat":"filebeat","type":"doc","version":"6.2.4","topic":"{}"}},"beat":{{"name":"ad-web-006","hostname":"ad-web-006","version":"6.2.4"}},"source":"/data/logs/adserver/trace.log","offset":40960,"message":{},"prospector":{{"type":"log"}}}}"#,
        read_at(),
        cfg.topics.request,
        json(&line("span-6x"))
    );
    // Filebeat 7.17 log input, multiline (`log.flags`): the line, then a stack trace.
    let v7_multiline = format!(
        r#"{{"@timestamp":"{}","@metadata":{{"beat":"filebeat","type":"_doc","version":"7.17.18"}},"log":{{"offset":81920,"file":{{"path":"/data/logs/adserver/trace.log"}},"flags":["multiline"]}},"message":{},"input":{{"type":"log"}},"ecs":{{"version":"1.12.0"}},"host":{{"name":"ad-web-007"}},"agent":{{"type":"filebeat","version":"7.17.18","hostname":"ad-web-007","name":"ad-web-007"}}}}"#,
        read_at(),
        json(&format!("{}\n{STACK}", line("span-7x-multiline")))
    );
    // The raw codec (`codec.format: {string: '%{[message]}'}`) of a multiline event.
    let bare_multiline = format!("{}\n{STACK}\n", line("span-bare-multiline"));

    let producer: FutureProducer = common::kafka::producer_config(&cfg.kafka).create().unwrap();
    for payload in [&v6, &v7_multiline, &bare_multiline] {
        producer
            .send(
                FutureRecord::<(), _>::to(&cfg.topics.request).payload(payload.as_bytes()),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    let mut p = Proc::start("ingest", &["run", "--stop-after-idle", "3"], &cfg).unwrap();
    assert_eq!(
        p.wait(Duration::from_secs(120)).unwrap(),
        0,
        "ingest exit ({})",
        p.name
    );

    let ch = clickhouse(&cfg);
    let db = &cfg.clickhouse.database;
    let dead: Vec<(String, String)> = ch
        .query(&format!("SELECT reason, error FROM {db}.dead_letter"))
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(dead, vec![], "nothing is dead-lettered");
    // The extras as `key=value` pairs joined by `|`.
    type Row = (String, u16, String, String, u64, String);
    let rows: Vec<Row> = ch
        .query(&format!(
            "SELECT span_id, status, _src_host, _src_file, _src_file_offset, \
             arrayStringConcat(arrayMap((k, v) -> concat(k, '=', v), extra_keys, extra_values), '|') \
             FROM {db}.ods_request ORDER BY _offset"
        ))
        .fetch_all()
        .await
        .unwrap();
    let s = |x: &str| x.to_string();
    let file = s("/data/logs/adserver/trace.log");
    assert_eq!(
        rows,
        vec![
            (
                s("span-6x"),
                500,
                s("ad-web-006"),
                file.clone(),
                40960,
                s("region=cn-north"),
            ),
            (
                s("span-7x-multiline"),
                500,
                s("ad-web-007"),
                file,
                81920,
                format!("region=cn-north|_continuation={STACK}"),
            ),
            (
                s("span-bare-multiline"),
                500,
                s(""),
                s(""),
                0,
                format!("region=cn-north|_continuation={STACK}"),
            ),
        ]
    );

    // The user who looks the trace up sees each stack trace under its line.
    let trace = |args: &[&str]| {
        let out = Command::new(bin("adlog-trace"))
            .args(["trace", "4bf92f3577b34da6a3ce929d0e0e4736"])
            .args(args)
            .envs(env_of(&cfg))
            .output()
            .unwrap();
        assert!(out.status.success(), "adlog-trace: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let v: serde_json::Value = serde_json::from_str(&trace(&["--json"])).unwrap();
    let mut got: Vec<(String, Option<String>)> = v["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["span_id"].as_str().unwrap().to_string(),
                l["continuation"].as_str().map(str::to_string),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (s("span-6x"), None),
            (s("span-7x-multiline"), Some(s(STACK))),
            (s("span-bare-multiline"), Some(s(STACK))),
        ]
    );
    let text = trace(&[]);
    let indented: String = STACK.lines().map(|l| format!("\n      {l}")).collect();
    assert_eq!(text.matches(&indented).count(), 2, "{text}");

    // And so does the trace dashboard's Logs panel (on 18.16; sql/0013 gives
    // the plugin's View logs the same Body on current servers).
    let dash: serde_json::Value =
        serde_json::from_str(include_str!("../../grafana/dashboards/trace.json")).unwrap();
    let logs = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["type"] == "logs")
        .expect("the trace dashboard has a Logs panel");
    let now_s = now_ms() / 1000;
    let sql = logs["targets"][0]["rawSql"]
        .as_str()
        .unwrap()
        .replace(
            "${trace_id:sqlstring}",
            "'4bf92f3577b34da6a3ce929d0e0e4736'",
        )
        .replace("$__fromTime", &format!("toDateTime({})", now_s - 3600))
        .replace("$__toTime", &format!("toDateTime({})", now_s + 60));
    let bodies: Vec<(String, String)> = ch
        .clone()
        .with_database(db)
        .query(&format!("SELECT spanID, body FROM ({sql}) ORDER BY spanID"))
        .fetch_all()
        .await
        .unwrap();
    let summary =
        "ad-gateway /v1/feed -> 500 in 12.75 ms (caller -, uid 123456, psid 1001, host ad-web-017)";
    assert_eq!(
        bodies,
        vec![
            (s("span-6x"), s(summary)),
            (s("span-7x-multiline"), format!("{summary}\n{STACK}")),
            (s("span-bare-multiline"), format!("{summary}\n{STACK}")),
        ]
    );
    drop_database(&cfg).await;
}
