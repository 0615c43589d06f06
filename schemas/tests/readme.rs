//! The README's example lines, copied literally, parse to the documented
//! values, and the writers reproduce them byte for byte. Each literal is also
//! checked to still be in the README, so the two cannot drift apart.

use std::borrow::Cow;

use schemas::{Envelope, Exposure, Interaction, Joined, Request};

const README: &str = include_str!("../README.md");
const ENVELOPE_6X: &str = r#"{"@timestamp":"2026-11-21T10:00:00.123Z","@metadata":{"beat":"filebeat","type":"doc","version":"6.8.23","topic":"ad_request"},"offset":812,"prospector":{"type":"log"},"input":{"type":"log"},"beat":{"name":"ad-web-017","hostname":"ad-web-017","version":"6.8.23"},"host":{"name":"ad-web-017"},"source":"/data/logs/adserver/trace.log","message":"<the raw line>","fields":{"log_type":"request","idc":"yf"}}"#;

const REQUEST_TSV: &str = "2026-11-21 10:00:00.123\t4bf92f3577b34da6a3ce929d0e0e4736\t00f067aa0ba902b7\t\tad-gateway\t\t/v1/feed\t123456\t1001\t200\t12.75\tad-web-017\tyf\tregion=cn-north&ab=exp42";
const REQUEST_JSON: &str = r#"{"time":"2026-11-21 10:00:00.123","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7","parent_span_id":"","service":"ad-gateway","caller":"","api":"/v1/feed","uid":123456,"psid":1001,"status":200,"latency_ms":12.75,"host":"ad-web-017","idc":"yf","extra":{"region":"cn-north","ab":"exp42"}}"#;
const EXPOSURE_TSV: &str = "2026-11-21 10:00:00.456\tm-5f1c2d3e4a5b6c7d\t4bf92f3577b34da6a3ce929d0e0e4736\t123456\t1001\t880011\t990022\t3\tios\t1.85";
const INTERACTION_TSV: &str = "2026-11-21 10:03:12.004\tm-5f1c2d3e4a5b6c7d\t9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d\t123456\tclick\tdwell_ms=5300";
const JOINED_JSON: &str = r#"{"joined_id":12415149300388127466,"mark_id":"m-5f1c2d3e4a5b6c7d","exposure_time":"2026-11-21 10:00:00.456","exposure_trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","uid":123456,"psid":1001,"ad_id":880011,"creative_id":990022,"position":3,"platform":"ios","bid_price":1.85,"interaction_time":"2026-11-21 10:03:12.004","interaction_trace_id":"9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d","action":"click","delay_ms":191548}"#;
const ENVELOPE: &str = r#"{"@timestamp":"2026-11-21T10:00:00.123Z","@metadata":{"beat":"filebeat","type":"_doc","version":"8.15.0"},"message":"<the raw line>","log":{"offset":812,"file":{"path":"/data/logs/adserver/trace.log"}},"input":{"type":"filestream"},"host":{"name":"ad-web-017"},"agent":{"type":"filebeat","version":"8.15.0"},"ecs":{"version":"8.0.0"},"fields":{"log_type":"request","idc":"yf"}}"#;

fn b(s: &str) -> Cow<'_, str> {
    Cow::Borrowed(s)
}

fn request() -> Request<'static> {
    Request {
        ts_ms: 1_795_255_200_123,
        trace_id: b("4bf92f3577b34da6a3ce929d0e0e4736"),
        span_id: b("00f067aa0ba902b7"),
        parent_span_id: b(""),
        service: b("ad-gateway"),
        caller: b(""),
        api: b("/v1/feed"),
        uid: 123_456,
        psid: 1001,
        status: 200,
        latency_ms: 12.75,
        host: b("ad-web-017"),
        idc: b("yf"),
        extra: vec![(b("region"), b("cn-north")), (b("ab"), b("exp42"))],
    }
}

fn exposure() -> Exposure<'static> {
    Exposure {
        ts_ms: 1_795_255_200_456,
        mark_id: b("m-5f1c2d3e4a5b6c7d"),
        trace_id: b("4bf92f3577b34da6a3ce929d0e0e4736"),
        uid: 123_456,
        psid: 1001,
        ad_id: 880_011,
        creative_id: 990_022,
        position: 3,
        platform: b("ios"),
        bid_price: 1.85,
    }
}

fn interaction() -> Interaction<'static> {
    Interaction {
        ts_ms: 1_795_255_392_004,
        mark_id: b("m-5f1c2d3e4a5b6c7d"),
        trace_id: b("9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d"),
        uid: 123_456,
        action: b("click"),
        extra: vec![(b("dwell_ms"), b("5300"))],
    }
}

#[test]
fn literals_are_in_the_readme() {
    for lit in [
        REQUEST_TSV,
        REQUEST_JSON,
        EXPOSURE_TSV,
        INTERACTION_TSV,
        JOINED_JSON,
        ENVELOPE,
        ENVELOPE_6X,
    ] {
        assert!(
            README.lines().any(|l| l == lit),
            "README no longer contains:\n{lit}"
        );
    }
}

#[test]
fn request_examples() {
    assert_eq!(Request::parse(REQUEST_TSV).unwrap(), request());
    assert_eq!(Request::parse(REQUEST_JSON).unwrap(), request());
    let mut out = String::new();
    request().write_tsv(&mut out);
    assert_eq!(out, REQUEST_TSV);
    out.clear();
    request().write_json(&mut out);
    assert_eq!(out, REQUEST_JSON);
}

#[test]
fn parsed_fields_borrow_from_the_line() {
    let r = Request::parse(REQUEST_TSV).unwrap();
    assert!(matches!(r.trace_id, Cow::Borrowed(_)));
    assert!(matches!(r.extra[0].1, Cow::Borrowed(_)));
    let r = Request::parse(REQUEST_JSON).unwrap();
    assert!(matches!(r.api, Cow::Borrowed(_)));
    assert!(matches!(r.extra[1].0, Cow::Borrowed(_)));
}

#[test]
fn exposure_example() {
    assert_eq!(Exposure::parse(EXPOSURE_TSV).unwrap(), exposure());
    let mut out = String::new();
    exposure().write_tsv(&mut out);
    assert_eq!(out, EXPOSURE_TSV);
}

#[test]
fn interaction_example() {
    assert_eq!(Interaction::parse(INTERACTION_TSV).unwrap(), interaction());
    let mut out = String::new();
    interaction().write_tsv(&mut out);
    assert_eq!(out, INTERACTION_TSV);
}

#[test]
fn joined_example_is_from_pair_of_the_examples() {
    let j = Joined::from_pair(&exposure(), &interaction());
    assert_eq!(j.delay_ms, 191_548);
    assert_eq!(
        j.joined_id,
        schemas::joined_id(
            "m-5f1c2d3e4a5b6c7d",
            1_795_255_392_004,
            "9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d",
            "click"
        )
    );
    let mut out = String::new();
    j.write_json(&mut out);
    assert_eq!(out, JOINED_JSON);
    assert_eq!(Joined::parse(JOINED_JSON).unwrap(), j);
}

#[test]
fn joined_id_is_fnv1a_of_the_documented_bytes() {
    // Reference FNV-1a 64 written out independently.
    let bytes = b"m-5f1c2d3e4a5b6c7d\x001795255392004\x009a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d\x00click";
    let mut h: u64 = 0xcbf29ce484222325;
    for &x in bytes {
        h = (h ^ u64::from(x)).wrapping_mul(0x100000001b3);
    }
    assert_eq!(Joined::from_pair(&exposure(), &interaction()).joined_id, h);
    // Known FNV-1a 64 vectors: "" and "a".
    assert_eq!(schemas::joined_id("", 0, "", ""), {
        let mut h: u64 = 0xcbf29ce484222325;
        for &x in b"\x000\x00\x00" {
            h = (h ^ u64::from(x)).wrapping_mul(0x100000001b3);
        }
        h
    });
}

fn envelope() -> Envelope<'static> {
    Envelope {
        read_ts_ms: Some(1_795_255_200_123),
        message: b("<the raw line>"),
        continuation: None,
        host: Some(b("ad-web-017")),
        file_path: Some(b("/data/logs/adserver/trace.log")),
        file_offset: Some(812),
        log_type: Some(b("request")),
        idc: Some(b("yf")),
        bare: false,
    }
}

#[test]
fn envelope_example() {
    let env = Envelope::parse(ENVELOPE.as_bytes()).unwrap();
    assert_eq!(env, envelope());
    assert!(matches!(env.message, Cow::Borrowed(_)));
    assert!(matches!(env.file_path, Some(Cow::Borrowed(_))));
    let mut out = String::new();
    envelope().write_json(&mut out);
    assert_eq!(out, ENVELOPE);
}

#[test]
fn envelope_6x_example() {
    // The same envelope as 8.x writes it: where the line came from is kept.
    assert_eq!(Envelope::parse(ENVELOPE_6X.as_bytes()).unwrap(), envelope());
}

#[test]
fn envelope_around_a_real_line() {
    let mut doc = String::new();
    Envelope {
        message: b(REQUEST_TSV),
        ..envelope()
    }
    .write_json(&mut doc);
    let env = Envelope::parse(doc.as_bytes()).unwrap();
    assert!(!env.bare);
    assert_eq!(Request::parse(&env.message).unwrap(), request());
}

#[test]
fn bare_values() {
    let with_newline = format!("{REQUEST_TSV}\r\n");
    let env = Envelope::parse(with_newline.as_bytes()).unwrap();
    assert!(env.bare);
    assert_eq!(env.message, REQUEST_TSV);
    assert_eq!(env.read_ts_ms, None);
    // A JSON line (which has its own string `host`, but no `message`) is bare too.
    let env = Envelope::parse(REQUEST_JSON.as_bytes()).unwrap();
    assert!(env.bare);
    assert_eq!(env.message, REQUEST_JSON);
    assert_eq!(Request::parse(&env.message).unwrap(), request());
}

#[test]
fn parse_line_dispatches() {
    use schemas::{parse_line, LogType, Record};
    let r = parse_line(LogType::Exposure, EXPOSURE_TSV).unwrap();
    assert_eq!(r.log_type(), LogType::Exposure);
    assert_eq!(r, Record::Exposure(exposure()));
    let owned: Record<'static> = parse_line(LogType::Request, REQUEST_TSV)
        .unwrap()
        .into_owned();
    assert_eq!(owned, Record::Request(request()));
    assert!(parse_line(LogType::Joined, EXPOSURE_TSV).is_err());
}
