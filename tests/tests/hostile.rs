//! Hostile input through the real pipeline (broker → `ingest run` →
//! ClickHouse): every message of the corpus is either dead-lettered with a
//! precise, expected reason (and an error naming the field) or stored
//! exactly — every stored column compared byte for byte (strings as hex,
//! floats as their IEEE bits). Each hostile message sits between two good
//! sentinel lines in the same partition (consecutive offsets, same batch),
//! and every sentinel must be stored exactly too: nothing corrupts a
//! neighbouring row. The worker must drain everything and stop by itself
//! (`--stop-after-idle`), so a stall fails the test.

use std::time::Duration;

use integration_tests::reliability::{ch_query, ch_u64};
use integration_tests::{drop_database, migrate, test_config, Proc};
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::time::format_ms;

/// What must become of a message.
enum Expect {
    /// Dead-lettered with this reason; the error contains `.1`.
    Dead(&'static str, &'static str),
    /// Stored in ods_request with exactly these column values.
    Request(Box<ReqRow>),
    /// Stored in ods_joined with this joined_id (checked via its columns).
    Joined(u64),
}

/// The ods_request columns of one row, as they must be stored.
#[derive(Clone)]
struct ReqRow {
    ts_ms: u64,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    service: Vec<u8>,
    caller: Vec<u8>,
    api: Vec<u8>,
    uid: u64,
    psid: u32,
    status: u16,
    latency_ms: f64,
    host: Vec<u8>,
    idc: Vec<u8>,
    extra: Vec<(Vec<u8>, Vec<u8>)>,
}

/// `hex(reinterpretAsString(x))` of a Float64: its little-endian bytes,
/// trailing zero bytes dropped (reinterpretAsString drops them).
fn float_hex(x: f64) -> String {
    let b = x.to_le_bytes();
    let n = b.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
    hex(&b[..n])
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

impl ReqRow {
    fn base(ts_ms: i64, span: &str) -> ReqRow {
        ReqRow {
            ts_ms: ts_ms as u64,
            trace_id: b"4bf92f3577b34da6a3ce929d0e0e4736".to_vec(),
            span_id: span.as_bytes().to_vec(),
            parent_span_id: Vec::new(),
            service: b"ad-gateway".to_vec(),
            caller: Vec::new(),
            api: b"/v1/feed".to_vec(),
            uid: 123456,
            psid: 1001,
            status: 200,
            latency_ms: 12.75,
            host: b"ad-web-017".to_vec(),
            idc: b"yf".to_vec(),
            extra: vec![(b"region".to_vec(), b"cn-north".to_vec())],
        }
    }

    /// The stored row as `SELECT … FORMAT TSV` of [`ROW_SQL`] prints it.
    fn expected_tsv(&self) -> String {
        let arr = |v: Vec<&[u8]>| v.iter().map(|b| hex(b)).collect::<Vec<_>>().join(",");
        [
            self.ts_ms.to_string(),
            hex(&self.trace_id),
            hex(&self.span_id),
            hex(&self.parent_span_id),
            hex(&self.service),
            hex(&self.caller),
            hex(&self.api),
            self.uid.to_string(),
            self.psid.to_string(),
            self.status.to_string(),
            float_hex(self.latency_ms),
            hex(&self.host),
            hex(&self.idc),
            arr(self.extra.iter().map(|(k, _)| k.as_slice()).collect()),
            arr(self.extra.iter().map(|(_, v)| v.as_slice()).collect()),
            (self.ts_ms / 1000).to_string(),
        ]
        .join("\t")
    }
}

const ROW_SQL: &str =
    "ts_ms, hex(trace_id), hex(span_id), hex(parent_span_id), hex(service), hex(caller), \
    hex(api), uid, psid, status, hex(reinterpretAsString(latency_ms)), hex(host), hex(idc), \
    arrayStringConcat(arrayMap(x -> hex(x), extra_keys), ','), \
    arrayStringConcat(arrayMap(x -> hex(x), extra_values), ','), toUInt32(ts)";

/// A TSV request line with the fields of `r` written raw (no escaping: the
/// corpus builds hostile bytes itself).
fn tsv(fields: &[&str]) -> Vec<u8> {
    fields.join("\t").into_bytes()
}

fn time_str(ms: i64) -> String {
    let mut s = String::new();
    format_ms(ms, &mut s);
    s
}

/// The README example line's fields, with a given time and span id.
fn req_fields(ts: &str, span: &str) -> Vec<String> {
    [
        ts,
        "4bf92f3577b34da6a3ce929d0e0e4736",
        span,
        "",
        "ad-gateway",
        "",
        "/v1/feed",
        "123456",
        "1001",
        "200",
        "12.75",
        "ad-web-017",
        "yf",
        "region=cn-north",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn with(mut f: Vec<String>, i: usize, v: &str) -> Vec<u8> {
    f[i] = v.to_string();
    f.join("\t").into_bytes()
}

fn envelope(message: &str, extra: &str) -> Vec<u8> {
    let msg = serde_json::to_string(message).unwrap();
    // When Filebeat read the line: now, like the line's own time.
    let read_at = time_str(schemas_now()).replacen(' ', "T", 1) + "Z";
    format!(
        r#"{{"@timestamp":"{read_at}","message":{msg},"log":{{"offset":812,"file":{{"path":"/data/logs/adserver/trace.log"}}}},"host":{{"name":"ad-web-017"}}{extra}}}"#
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_corpus_is_dead_lettered_precisely_or_stored_exactly() {
    let mut cfg = test_config("hostile");
    cfg.kafka.partitions = 1;
    cfg.ingest.flush_interval_ms = 300;
    migrate(&cfg).unwrap();
    ingest::run::ensure_topics(
        &cfg,
        &[
            &cfg.topics.request,
            &cfg.topics.joined,
            &cfg.topics.dead_letter,
        ],
    )
    .await
    .unwrap();

    let now = schemas_now();
    let ts = time_str(now - 60_000);
    let ts_ms = now - 60_000;
    let f = |span: &str| req_fields(&ts, span);
    let stored = |r: ReqRow| Expect::Request(Box::new(r));
    let base = |span: &str| ReqRow::base(ts_ms, span);

    // (topic is request unless the name starts with "joined:"), payload, expectation
    let mut corpus: Vec<(&str, Vec<u8>, Expect)> = Vec::new();
    let mut add = |name: &'static str, payload: Vec<u8>, e: Expect| corpus.push((name, payload, e));

    // --- malformed JSON and encodings
    add(
        "truncated JSON line",
        format!(r#"{{"time":"{ts}","trace_id":"4bf9"#).into_bytes(),
        Expect::Dead("invalid_json", "invalid JSON"),
    );
    add(
        "truncated envelope",
        envelope(&f("t-env").join("\t"), "")[..60].to_vec(),
        Expect::Dead("invalid_json", "invalid JSON"),
    );
    add(
        "invalid JSON",
        br#"{"time":1,,"trace_id":}"#.to_vec(),
        Expect::Dead("invalid_json", "invalid JSON at byte"),
    );
    let mut bad_utf8 = f("t-utf8").join("\t").into_bytes();
    bad_utf8.splice(40..40, [0xff, 0xfe, 0xc3]);
    add(
        "invalid UTF-8",
        bad_utf8,
        Expect::Dead("invalid_utf8", "not valid UTF-8 (at byte 40)"),
    );
    add(
        "overlong UTF-8 encoding of '/'",
        with(f("t-overlong"), 6, "/v1\u{0}")
            .into_iter()
            .map(|b| if b == 0 { 0xc0 } else { b })
            .chain([0xaf])
            .collect(),
        Expect::Dead("invalid_utf8", "not valid UTF-8"),
    );
    add(
        "10 MB message",
        {
            let mut v = f("t-huge");
            v[13] = format!("pad={}", "x".repeat(10 << 20));
            v.join("\t").into_bytes()
        },
        Expect::Dead("too_large", "message too large"),
    );
    add(
        "deeply nested JSON line",
        format!(
            "{{\"time\":{}1{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        )
        .into_bytes(),
        Expect::Dead(
            "bad_field",
            "field `time` at byte 1: expected a time string or epoch milliseconds, found an array",
        ),
    );
    add(
        "deeply nested JSON in the envelope",
        envelope(
            &f("t-nest").join("\t"),
            &format!(
                r#","fields":{{"deep":{}0{}}}"#,
                "[".repeat(50_000),
                "]".repeat(50_000)
            ),
        ),
        // Unknown envelope fields are skipped without recursing (no depth
        // limit is hit): the line inside is good and stored.
        stored(base("t-nest")),
    );
    add(
        "empty message",
        Vec::new(),
        Expect::Dead("empty", "empty line"),
    );
    add(
        "only whitespace",
        b"  \t \r\n".to_vec(),
        Expect::Dead("empty", "empty line"),
    );

    // --- missing, extra and wrongly typed fields
    add(
        "TSV line with a field missing",
        tsv(&f("t-missing")[..13]
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()),
        Expect::Dead("field_count", "expected 14 tab-separated fields, found 13"),
    );
    add(
        "TSV line with an extra field",
        format!("{}\textra", f("t-extra").join("\t")).into_bytes(),
        Expect::Dead("field_count", "found 15"),
    );
    add(
        "JSON line without uid",
        format!(r#"{{"time":"{ts}","trace_id":"a","span_id":"t-j1","parent_span_id":"","service":"s","caller":"","api":"/x","psid":1,"status":200,"latency_ms":1,"host":"h","idc":"i"}}"#).into_bytes(),
        Expect::Dead("missing_field", "missing field `uid`"),
    );
    add(
        "JSON line with unknown keys (ignored) and a null extra",
        format!(r#"{{"zzz":[1,{{"a":null}}],"time":"{ts}","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"t-j2","parent_span_id":"","service":"ad-gateway","caller":"","api":"/v1/feed","uid":123456,"psid":1001,"status":200,"latency_ms":12.75,"host":"ad-web-017","idc":"yf","extra":null,"more":"x"}}"#).into_bytes(),
        stored(ReqRow { extra: vec![], ..base("t-j2") }),
    );
    add(
        "JSON uid as a string",
        format!(r#"{{"time":"{ts}","trace_id":"a","span_id":"t-j3","parent_span_id":"","service":"s","caller":"","api":"/x","uid":"123","psid":1,"status":200,"latency_ms":1,"host":"h","idc":"i"}}"#).into_bytes(),
        Expect::Dead("bad_field", "field `uid`"),
    );
    add(
        "JSON status as 200.0",
        format!(r#"{{"time":"{ts}","trace_id":"a","span_id":"t-j4","parent_span_id":"","service":"s","caller":"","api":"/x","uid":1,"psid":1,"status":200.0,"latency_ms":1,"host":"h","idc":"i"}}"#).into_bytes(),
        Expect::Dead("bad_field", "field `status`"),
    );
    add(
        "JSON repeated key",
        format!(r#"{{"time":"{ts}","time":"{ts}","trace_id":"a","span_id":"t-j5","parent_span_id":"","service":"s","caller":"","api":"/x","uid":1,"psid":1,"status":200,"latency_ms":1,"host":"h","idc":"i"}}"#).into_bytes(),
        Expect::Dead("bad_field", "field `time`"),
    );
    add(
        "envelope log.offset as a string",
        envelope(&f("t-off").join("\t"), "").replace_offset(),
        Expect::Dead("bad_field", "log.offset"),
    );
    add(
        "envelope message is a number",
        br#"{"message":12,"host":{"name":"h"}}"#.to_vec(),
        Expect::Dead("missing_field", "missing field `time`"),
    );
    add(
        "unknown fields.log_type",
        envelope(&f("t-lt").join("\t"), r#","fields":{"log_type":"bogus"}"#),
        Expect::Dead("unknown_log_type", "bogus"),
    );

    // --- times
    add(
        "time far in the future (2999)",
        with(f("t-future"), 0, "2999-12-31 23:59:59.999"),
        Expect::Dead("time_out_of_range", "outside the accepted range"),
    );
    add(
        "time 2 hours ahead",
        with(f("t-ahead"), 0, &time_str(now + 7_200_000)),
        Expect::Dead("time_out_of_range", "outside the accepted range"),
    );
    add(
        "time far in the past (1971)",
        with(f("t-past"), 0, "1971-01-01 00:00:00"),
        Expect::Dead("time_out_of_range", "outside the accepted range"),
    );
    add(
        "time before 1970",
        with(f("t-1969"), 0, "1969-12-31 23:59:59.999"),
        Expect::Dead("bad_field", "year outside 1970"),
    );
    add(
        "negative epoch time",
        with(f("t-neg"), 0, "-1"),
        Expect::Dead("bad_field", "field `time`"),
    );
    add(
        "epoch seconds instead of ms",
        with(f("t-secs"), 0, &(now / 1000).to_string()),
        Expect::Dead("time_out_of_range", "outside the accepted range"),
    );
    add(
        "time as epoch ms (stored exactly)",
        with(f("t-epoch"), 0, &ts_ms.to_string()),
        stored(base("t-epoch")),
    );

    // --- numbers
    for (name, v, span) in [
        ("latency NaN", "NaN", "t-nan"),
        ("latency inf", "inf", "t-inf"),
        ("latency negative", "-1.5", "t-negl"),
        ("latency 1e400 (overflows to inf)", "1e400", "t-1e400"),
        ("latency hex", "0x10", "t-hex"),
    ] {
        add(
            name,
            with(f(span), 10, v),
            Expect::Dead("bad_field", "field `latency_ms`"),
        );
    }
    add(
        "JSON latency 1e400",
        format!(r#"{{"time":"{ts}","trace_id":"a","span_id":"t-j6","parent_span_id":"","service":"s","caller":"","api":"/x","uid":1,"psid":1,"status":200,"latency_ms":1e400,"host":"h","idc":"i"}}"#).into_bytes(),
        Expect::Dead("invalid_json", "number out of range"),
    );
    add(
        "latency 1e+300 (stored exactly)",
        with(f("t-big"), 10, "1e+300"),
        stored(ReqRow {
            latency_ms: 1e300,
            ..base("t-big")
        }),
    );
    add(
        "latency 5e-324 (subnormal, stored exactly)",
        with(f("t-sub"), 10, "5e-324"),
        stored(ReqRow {
            latency_ms: 5e-324,
            ..base("t-sub")
        }),
    );
    add(
        "uid 2^64",
        with(f("t-u64"), 7, "18446744073709551616"),
        Expect::Dead("bad_field", "out of range for u64"),
    );
    add(
        "uid negative",
        with(f("t-uneg"), 7, "-1"),
        Expect::Dead("bad_field", "negative"),
    );
    add(
        "psid 2^32",
        with(f("t-u32"), 8, "4294967296"),
        Expect::Dead("bad_field", "out of range for u32"),
    );
    add(
        "status 65536",
        with(f("t-u16"), 9, "65536"),
        Expect::Dead("bad_field", "out of range for u16"),
    );
    add(
        "uid with a plus sign",
        with(f("t-plus"), 7, "+5"),
        Expect::Dead("bad_field", "field `uid`"),
    );
    add(
        "uid 2^64-1, psid 2^32-1, status 65535 (stored exactly)",
        {
            let mut v = f("t-max");
            v[7] = u64::MAX.to_string();
            v[8] = u32::MAX.to_string();
            v[9] = u16::MAX.to_string();
            v.join("\t").into_bytes()
        },
        stored(ReqRow {
            uid: u64::MAX,
            psid: u32::MAX,
            status: u16::MAX,
            ..base("t-max")
        }),
    );

    // --- control characters, tabs, newlines, escapes
    add(
        "NUL in an id",
        with(f("t-nul"), 4, "ad\u{0}gw"),
        Expect::Dead("bad_field", "control character"),
    );
    add(
        "DEL in an id",
        with(f("t-del"), 4, "ad\u{7f}gw"),
        Expect::Dead("bad_field", "control character"),
    );
    add(
        "C1 control in an id",
        with(f("t-c1"), 4, "ad\u{85}gw"),
        Expect::Dead("bad_field", "control character"),
    );
    add(
        "escaped tab in an id",
        with(f("t-esc-id"), 4, "ad\\tgw"),
        Expect::Dead("bad_field", "control character"),
    );
    add(
        "bad escape",
        with(f("t-badesc"), 4, "ad\\qgw"),
        Expect::Dead("bad_field", "field `service`"),
    );
    add(
        "trailing lone backslash",
        with(f("t-lone"), 13, "a=b\\"),
        Expect::Dead("bad_field", "field `extra`"),
    );
    add(
        "129-byte id",
        with(f("t-long"), 1, &"x".repeat(129)),
        Expect::Dead("bad_field", "longer than 128 bytes"),
    );
    add(
        "BOM before the time",
        with(f("t-bom"), 0, &format!("\u{feff}{ts}")),
        Expect::Dead("bad_field", "field `time`"),
    );
    add(
        "escaped tab, newline, CR, backslash in an extra value (stored unescaped)",
        with(f("t-esc"), 13, "note=a\\tb\\nc\\rd\\\\e&k=v"),
        stored(ReqRow {
            extra: vec![
                (b"note".to_vec(), b"a\tb\nc\rd\\e".to_vec()),
                (b"k".to_vec(), b"v".to_vec()),
            ],
            ..base("t-esc")
        }),
    );
    add(
        "raw control characters in an extra value (stored as is)",
        with(f("t-ctl"), 13, "c=\u{1}\u{7f}\u{85}x"),
        stored(ReqRow {
            extra: vec![(b"c".to_vec(), "\u{1}\u{7f}\u{85}x".as_bytes().to_vec())],
            ..base("t-ctl")
        }),
    );
    add(
        "JSON extra with tab, newline, quote, &, = (stored exactly)",
        format!(r#"{{"time":"{ts}","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"t-j7","parent_span_id":"","service":"ad-gateway","caller":"","api":"/v1/feed","uid":123456,"psid":1001,"status":200,"latency_ms":12.75,"host":"ad-web-017","idc":"yf","extra":{{"a=b&c":"x\ty\nz\"&=\\","\u00e9":"\u0000"}}}}"#).into_bytes(),
        stored(ReqRow {
            extra: vec![
                (b"a=b&c".to_vec(), b"x\ty\nz\"&=\\".to_vec()),
                ("é".as_bytes().to_vec(), b"\0".to_vec()),
            ],
            ..base("t-j7")
        }),
    );
    add(
        "extra pair without =",
        with(f("t-noeq"), 13, "a=1&&b=2"),
        Expect::Dead("bad_field", "field `extra`"),
    );

    // --- SQL-looking strings (stored exactly; they are data, never SQL)
    let sql = "x'); DROP TABLE ods_request; --";
    add(
        "SQL in service, api and an extra value",
        {
            let mut v = f("t-sql");
            v[4] = sql.into();
            v[6] = "/v1/feed' OR '1'='1".into();
            v[13] = format!("q={sql}");
            v.join("\t").into_bytes()
        },
        stored(ReqRow {
            service: sql.as_bytes().to_vec(),
            api: b"/v1/feed' OR '1'='1".to_vec(),
            extra: vec![(b"q".to_vec(), sql.as_bytes().to_vec())],
            ..base("t-sql")
        }),
    );
    add(
        "SQL and quotes in the envelope's host and file (stored exactly)",
        format!(
            r#"{{"message":{},"log":{{"offset":18446744073709551615,"file":{{"path":"/x/'; DROP DATABASE default; --"}}}},"host":{{"name":"h\"'\\"}}}}"#,
            serde_json::to_string(&f("t-envsql").join("\t")).unwrap()
        )
        .into_bytes(),
        stored(base("t-envsql")),
    );
    add(
        "unicode ids (stored exactly)",
        with(f("t-uni"), 4, "广告网关-🚀"),
        stored(ReqRow {
            service: "广告网关-🚀".as_bytes().to_vec(),
            ..base("t-uni")
        }),
    );

    // --- joined topic
    let joined_ok = 0x1234_5678_9abc_def0u64;
    let jt = |exp: &str, int: &str, delay: i64, id: u64| {
        format!(
            r#"{{"joined_id":{id},"mark_id":"m-hostile","exposure_time":"{exp}","exposure_trace_id":"a","uid":1,"psid":2,"ad_id":3,"creative_id":4,"position":5,"platform":"ios","bid_price":1.85,"interaction_time":"{int}","interaction_trace_id":"b","action":"click","delay_ms":{delay}}}"#
        )
        .into_bytes()
    };
    add(
        "joined: delay_ms inconsistent",
        jt(&ts, &time_str(ts_ms + 1000), 5, 1),
        Expect::Dead("bad_field", "delay_ms"),
    );
    add(
        "joined: interaction time far in the future",
        jt(&ts, "2500-01-01 00:00:00", 16_725_225_600_000 - ts_ms, 2),
        Expect::Dead("time_out_of_range", "outside the accepted range"),
    );
    add(
        "joined: exact (stored)",
        jt(&ts, &time_str(ts_ms + 1000), 1000, joined_ok),
        Expect::Joined(joined_ok),
    );

    // ---- produce: sentinel, hostile, sentinel … in one partition, in order.
    let mut pc = common::kafka::producer_config(&cfg.kafka);
    pc.set("message.max.bytes", "20000000")
        .set("linger.ms", "0");
    let producer: FutureProducer = pc.create().unwrap();
    let mut sentinels = Vec::new();
    let mut sent_per_topic = std::collections::BTreeMap::<String, u64>::new();
    let mut order = Vec::new(); // (topic, offset, name, expect index)
    let send = |topic: &str, payload: &[u8]| {
        let producer = producer.clone();
        let topic = topic.to_string();
        let payload = payload.to_vec();
        async move {
            let rec: FutureRecord<'_, (), [u8]> =
                FutureRecord::to(&topic).partition(0).payload(&payload);
            producer
                .send(rec, Duration::from_secs(60))
                .await
                .map(|d| d.offset)
                .map_err(|(e, _)| e)
        }
    };
    let mut n = 0;
    let mut too_large_refused = None;
    for (i, (name, payload, e)) in corpus.iter().enumerate() {
        let topic = if name.starts_with("joined:") {
            cfg.topics.joined.clone()
        } else {
            cfg.topics.request.clone()
        };
        for side in 0..2 {
            if side == 1 {
                match send(&topic, payload).await {
                    Ok(off) => {
                        order.push((topic.clone(), off, i));
                        *sent_per_topic.entry(topic.clone()).or_default() += 1;
                    }
                    Err(err) => {
                        // Only the 10 MB message may be refused (then say so).
                        assert!(payload.len() > 1 << 20, "{name}: produce failed: {err}");
                        too_large_refused = Some(err.to_string());
                    }
                }
            }
            n += 1;
            let span = format!("sentinel-{n}");
            let line = req_fields(&ts, &span).join("\t");
            let payload = if n % 2 == 0 {
                envelope(&line, "")
            } else {
                line.into_bytes()
            };
            send(&cfg.topics.request, &payload)
                .await
                .expect("sentinel produced");
            *sent_per_topic
                .entry(cfg.topics.request.clone())
                .or_default() += 1;
            sentinels.push(base(&span));
        }
        let _ = e;
    }
    if let Some(err) = &too_large_refused {
        eprintln!("the broker refused the 10 MB message: {err}");
    }

    // ---- the worker drains everything and stops by itself (no stall).
    let started = std::time::Instant::now();
    let mut ingest = Proc::start("ingest", &["run", "--stop-after-idle", "5"], &cfg).unwrap();
    let code = tokio::task::block_in_place(|| ingest.wait(Duration::from_secs(180)))
        .unwrap_or_else(|e| panic!("ingest stalled on the hostile corpus: {e}"));
    assert_eq!(code, 0, "ingest exit code (log {})", ingest.name);
    let took = started.elapsed();
    let log = std::fs::read_to_string(&ingest.name).unwrap();
    assert!(
        !log.contains("panicked"),
        "a panic in the log {}",
        ingest.name
    );

    // ---- checks
    let url = cfg.clickhouse.url.clone();
    let db = cfg.clickhouse.database.clone();
    tokio::task::block_in_place(|| {
        let q = |sql: &str| ch_query(&url, &format!("{sql} FORMAT TSV")).unwrap();
        // Every produced message is in exactly one table.
        for (topic, sent) in &sent_per_topic {
            let union = format!(
                "SELECT _offset AS o FROM {db}.ods_request WHERE _topic = '{topic}' \
                 UNION ALL SELECT _offset FROM {db}.ods_joined WHERE _topic = '{topic}' \
                 UNION ALL SELECT _offset FROM {db}.dead_letter WHERE _topic = '{topic}'"
            );
            let r = q(&format!("SELECT count(), uniqExact(o) FROM ({union})"));
            assert_eq!(
                r.trim(),
                format!("{sent}\t{sent}"),
                "{topic}: messages stored once each"
            );
        }
        let mut failures = Vec::new();
        for (topic, off, i) in &order {
            let (name, payload, e) = &corpus[*i];
            match e {
                Expect::Dead(reason, needle) => {
                    let r = q(&format!(
                        "SELECT reason, error, raw_size, length(raw), hex(substring(raw, 1, 256)) FROM {db}.dead_letter \
                         WHERE _topic = '{topic}' AND _offset = {off}"
                    ));
                    let cols: Vec<&str> = r.trim_end_matches('\n').split('\t').collect();
                    if cols.len() < 5 || cols[0] != *reason || !cols[1].contains(needle) {
                        failures.push(format!("{name}: expected {reason} ({needle:?}), got {r:?}"));
                        continue;
                    }
                    let raw_size: usize = cols[2].parse().unwrap();
                    let raw_len: usize = cols[3].parse().unwrap();
                    assert_eq!(raw_size, payload.len(), "{name}: raw_size");
                    assert_eq!(
                        raw_len,
                        payload.len().min(cfg.ingest.dead_letter_max_bytes),
                        "{name}: raw capped"
                    );
                    assert_eq!(
                        cols[4],
                        hex(&payload[..payload.len().min(256)]),
                        "{name}: raw bytes"
                    );
                }
                Expect::Request(row) => {
                    let r = q(&format!(
                        "SELECT {ROW_SQL} FROM {db}.ods_request WHERE _topic = '{topic}' AND _offset = {off}"
                    ));
                    if r.trim_end_matches('\n') != row.expected_tsv() {
                        failures.push(format!(
                            "{name}: stored\n  {r:?}\nexpected\n  {:?}",
                            row.expected_tsv()
                        ));
                    }
                }
                Expect::Joined(id) => {
                    let r = q(&format!(
                        "SELECT joined_id, mark_id, interaction_ts_ms - ts_ms, delay_ms, hex(reinterpretAsString(bid_price)) \
                         FROM {db}.ods_joined WHERE _topic = '{topic}' AND _offset = {off}"
                    ));
                    let want = format!("{id}\tm-hostile\t1000\t1000\t{}", float_hex(1.85));
                    if r.trim_end_matches('\n') != want {
                        failures.push(format!("{name}: stored {r:?}, expected {want:?}"));
                    }
                }
            }
        }
        // The sentinels: all there, each exactly.
        let got = q(&format!(
            "SELECT {ROW_SQL} FROM {db}.ods_request WHERE startsWith(span_id, 'sentinel-') ORDER BY _offset"
        ));
        let got: Vec<&str> = got.lines().collect();
        let mut want: Vec<String> = sentinels.iter().map(ReqRow::expected_tsv).collect();
        want.sort_by_key(|w| w.split('\t').nth(2).map(|s| s.to_string()));
        let mut got_sorted: Vec<String> = got.iter().map(|s| s.to_string()).collect();
        got_sorted.sort_by_key(|w| w.split('\t').nth(2).map(|s| s.to_string()));
        assert_eq!(
            got_sorted.len(),
            sentinels.len(),
            "every sentinel stored once"
        );
        assert_eq!(got_sorted, want, "sentinels stored exactly");
        assert!(
            failures.is_empty(),
            "{} of {} hostile messages not handled as expected:\n{}",
            failures.len(),
            corpus.len(),
            failures.join("\n")
        );
        // The 10 MB dead letter: reason in the table and on the DLQ topic's
        // headers (the DLQ producer must cope with the size).
        let huge = ch_u64(&url, &format!("SELECT count() FROM {db}.dead_letter WHERE reason = 'too_large' AND raw_size > 10000000")).unwrap();
        assert_eq!(
            huge,
            u64::from(too_large_refused.is_none()),
            "the 10 MB message is a too_large dead letter"
        );
        // The row of the reliability table (everything above is exact).
        let n = |t: &str| ch_u64(&url, &format!("SELECT count() FROM {db}.{t}")).unwrap();
        integration_tests::reliability::Outcome {
            scenario: format!(
                "hostile corpus: {} kinds, each between 2 good sentinels",
                corpus.len()
            ),
            sent: sent_per_topic.values().sum(),
            stored: n("ods_request") + n("ods_joined"),
            dead_lettered: n("dead_letter"),
            catch_up_s: took.as_secs_f64(),
            ..Default::default()
        }
        .record();
    });
    drop_database(&cfg).await;
}

fn schemas_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

trait ReplaceOffset {
    fn replace_offset(self) -> Vec<u8>;
}

impl ReplaceOffset for Vec<u8> {
    /// `"offset":812` → `"offset":"812"` in an envelope.
    fn replace_offset(self) -> Vec<u8> {
        String::from_utf8(self)
            .unwrap()
            .replace(r#""offset":812"#, r#""offset":"812""#)
            .into_bytes()
    }
}
