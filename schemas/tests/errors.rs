//! Bad lines map to the precise `ParseError` variant, field and offset.

use schemas::{Envelope, Exposure, Interaction, Joined, ParseError, Request};

const REQUEST: [&str; 14] = [
    "2026-11-21 10:00:00.123",
    "4bf92f3577b34da6a3ce929d0e0e4736",
    "00f067aa0ba902b7",
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
    "region=cn-north&ab=exp42",
];

/// The README request line with column `i` replaced by `v`.
fn req_with(i: usize, v: &str) -> String {
    let mut f = REQUEST;
    f[i] = v;
    f.join("\t")
}

/// Byte offset of column `i` in `req_with(i, ..)`.
fn req_offset(i: usize) -> usize {
    REQUEST[..i].iter().map(|f| f.len() + 1).sum()
}

fn bad_field(err: ParseError) -> (&'static str, usize, String) {
    match err {
        ParseError::BadField {
            field,
            offset,
            detail,
        } => (field, offset, detail),
        other => panic!("expected BadField, got {other:?}"),
    }
}

#[test]
fn request_tsv_bad_fields() {
    // (column, value, expected detail fragment)
    let cases: &[(usize, &str, &str)] = &[
        (7, "12a", "not an unsigned decimal integer"),
        (7, "", "empty"),
        (7, "18446744073709551616", "out of range for u64"),
        (7, "-5", "negative"),
        (7, " 5", "not an unsigned decimal integer"),
        (8, "4294967296", "out of range for u32"),
        (9, "65536", "out of range for u16"),
        (10, "-1.5", "negative"),
        (10, "NaN", "not a finite decimal number"),
        (10, "inf", "not a finite decimal number"),
        (10, "1e400", "not finite"),
        (10, "12,5", "not a finite decimal number"),
        (0, "2026-13-21 10:00:00.123", "month out of range"),
        (0, "2026-02-30 10:00:00.123", "day out of range"),
        (0, "1969-12-31 23:59:59.999", "year outside 1970–2999"),
        (0, "2026-11-21 10:00:00.1234", "fraction"),
        (0, "yesterday", "expected YYYY-MM-DD"),
        (1, "", "empty"),
        (1, "abc\u{1}def", "control character"),
        (1, "abc\\tdef", "control character"),
        (1, &"x".repeat(129), "longer than 128 bytes"),
        (4, "", "empty"),
        (13, "a=1&&b=2", "expected key=value"),
        (13, "=v", "empty key"),
        (13, "novalue", "expected key=value"),
    ];
    for &(col, value, detail) in cases {
        let line = req_with(col, value);
        let (field, offset, got) = bad_field(Request::parse(&line).unwrap_err());
        assert_eq!(field, Request::FIELDS[col], "{line:?}");
        if col == 13 {
            // Extras errors point at the offending pair inside the column.
            assert!((req_offset(col)..line.len()).contains(&offset), "{line:?}");
        } else {
            assert_eq!(offset, req_offset(col), "{line:?}");
        }
        assert!(got.contains(detail), "{line:?}: {got:?} lacks {detail:?}");
    }
}

#[test]
fn bad_escape_points_at_the_backslash() {
    let line = req_with(4, "ad-\\xgateway");
    let (field, offset, detail) = bad_field(Request::parse(&line).unwrap_err());
    assert_eq!(field, "service");
    assert_eq!(offset, req_offset(4) + 3);
    assert!(detail.contains("invalid escape"));

    let line = req_with(13, "a=1&b=x\\");
    let (field, offset, detail) = bad_field(Request::parse(&line).unwrap_err());
    assert_eq!(field, "extra");
    assert_eq!(offset, req_offset(13) + 7);
    assert!(detail.contains("trailing backslash"));
}

#[test]
fn escapes_are_undone() {
    let line = req_with(13, "q=a\\tb\\\\c&n=x\\ny");
    let r = Request::parse(&line).unwrap();
    assert_eq!(r.extra[0].1, "a\tb\\c");
    assert_eq!(r.extra[1].1, "x\ny");
    let line = req_with(6, "/v1\\\\feed");
    assert_eq!(Request::parse(&line).unwrap().api, "/v1\\feed");
}

#[test]
fn field_counts() {
    let short = REQUEST[..13].join("\t");
    assert_eq!(
        Request::parse(&short),
        Err(ParseError::FieldCount {
            expected: 14,
            found: 13
        })
    );
    let long = format!("{}\textra\tmore", REQUEST.join("\t"));
    assert_eq!(
        Request::parse(&long),
        Err(ParseError::FieldCount {
            expected: 14,
            found: 16
        })
    );
    assert_eq!(
        Exposure::parse("2026-11-21 10:00:00.456\tm-1"),
        Err(ParseError::FieldCount {
            expected: 10,
            found: 2
        })
    );
    // An exposure line fed to the interaction parser is caught by its count.
    let exposure = "2026-11-21 10:00:00.456\tm-5f1c2d3e4a5b6c7d\t4bf92f3577b34da6a3ce929d0e0e4736\t123456\t1001\t880011\t990022\t3\tios\t1.85";
    assert_eq!(
        Interaction::parse(exposure),
        Err(ParseError::FieldCount {
            expected: 6,
            found: 10
        })
    );
}

#[test]
fn empty_lines() {
    for line in ["", "\n", "\r\n", "  "] {
        assert_eq!(Request::parse(line), Err(ParseError::Empty), "{line:?}");
    }
}

const REQUEST_JSON: &str = r#"{"time":"2026-11-21 10:00:00.123","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7","parent_span_id":"","service":"ad-gateway","caller":"","api":"/v1/feed","uid":123456,"psid":1001,"status":200,"latency_ms":12.75,"host":"ad-web-017","idc":"yf","extra":{"region":"cn-north","ab":"exp42"}}"#;

#[test]
fn request_json_errors() {
    let cases: &[(&str, &str, &str, &str)] = &[
        // (replace, with, field, detail fragment)
        (
            r#""uid":123456"#,
            r#""uid":"123456""#,
            "uid",
            "expected an unsigned integer, found a string",
        ),
        (r#""uid":123456"#, r#""uid":-1"#, "uid", "negative"),
        (
            r#""uid":123456"#,
            r#""uid":123456.0"#,
            "uid",
            "found a float",
        ),
        (
            r#""uid":123456"#,
            r#""uid":18446744073709551616"#,
            "uid",
            "found a float",
        ),
        (
            r#""psid":1001"#,
            r#""psid":4294967296"#,
            "psid",
            "out of range for u32",
        ),
        (
            r#""latency_ms":12.75"#,
            r#""latency_ms":-0.5"#,
            "latency_ms",
            "negative",
        ),
        (
            r#""latency_ms":12.75"#,
            r#""latency_ms":"12.75""#,
            "latency_ms",
            "expected a number",
        ),
        (
            r#""time":"2026-11-21 10:00:00.123""#,
            r#""time":"2026-02-30 10:00:00""#,
            "time",
            "day out of range",
        ),
        (
            r#""time":"2026-11-21 10:00:00.123""#,
            r#""time":-1"#,
            "time",
            "before 1970",
        ),
        (
            r#""time":"2026-11-21 10:00:00.123""#,
            r#""time":32503680000000"#,
            "time",
            "outside years",
        ),
        (
            r#""time":"2026-11-21 10:00:00.123""#,
            r#""time":true"#,
            "time",
            "found a boolean",
        ),
        (
            r#""trace_id":"4bf92f3577b34da6a3ce929d0e0e4736""#,
            r#""trace_id":"""#,
            "trace_id",
            "empty",
        ),
        (
            r#""trace_id":"4bf92f3577b34da6a3ce929d0e0e4736""#,
            r#""trace_id":"a\u0000b""#,
            "trace_id",
            "control character",
        ),
        (
            r#""trace_id":"4bf92f3577b34da6a3ce929d0e0e4736""#,
            r#""trace_id":null"#,
            "trace_id",
            "found null",
        ),
        (
            r#""ab":"exp42""#,
            r#""ab":42"#,
            "extra",
            r#"value of key "ab" is not a string"#,
        ),
        (r#""ab":"exp42""#, r#""":"exp42""#, "extra", "empty key"),
        (
            r#""idc":"yf""#,
            r#""idc":"yf","idc":"zw""#,
            "idc",
            "duplicate key",
        ),
    ];
    for &(from, to, field, detail) in cases {
        assert!(REQUEST_JSON.contains(from), "{from}");
        let line = REQUEST_JSON.replace(from, to);
        let (got_field, offset, got) = bad_field(Request::parse(&line).unwrap_err());
        assert_eq!(got_field, field, "{line}");
        assert!(got.contains(detail), "{line}: {got:?} lacks {detail:?}");
        if field != "extra" {
            let key = format!("\"{field}\"");
            assert_eq!(offset, line.find(&key).unwrap(), "{line}");
        }
    }
}

#[test]
fn json_missing_and_optional() {
    let line = REQUEST_JSON.replace(r#""uid":123456,"#, "");
    assert_eq!(
        Request::parse(&line),
        Err(ParseError::MissingField { field: "uid" })
    );
    // Missing extras are none; unknown keys are ignored.
    let line = REQUEST_JSON.replace(
        r#","extra":{"region":"cn-north","ab":"exp42"}"#,
        r#","new_field":[1,{"x":2}]"#,
    );
    let r = Request::parse(&line).unwrap();
    assert!(r.extra.is_empty());
    // Epoch milliseconds are accepted for time.
    let line = REQUEST_JSON.replace(r#""2026-11-21 10:00:00.123""#, "1795255200123");
    assert_eq!(Request::parse(&line).unwrap().ts_ms, 1_795_255_200_123);
}

#[test]
fn invalid_json() {
    let truncated = &REQUEST_JSON[..40];
    match Request::parse(truncated).unwrap_err() {
        ParseError::InvalidJson { offset, detail } => {
            assert!(offset <= truncated.len());
            assert!(detail.contains("EOF"), "{detail}");
            assert!(!detail.contains(" at line "), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    match Request::parse(r#"{"time":x}"#).unwrap_err() {
        ParseError::InvalidJson { offset, .. } => assert_eq!(offset, 8),
        other => panic!("{other:?}"),
    }
    match Request::parse(&format!("{REQUEST_JSON} trailing")).unwrap_err() {
        ParseError::InvalidJson { offset, detail } => {
            assert_eq!(offset, REQUEST_JSON.len() + 1);
            assert!(detail.contains("trailing"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    // Deep nesting is an error, not a stack overflow.
    let deep = format!(r#"{{"extra":{}"#, "[".repeat(100_000));
    assert!(matches!(
        Request::parse(&deep),
        Err(ParseError::InvalidJson { .. })
    ));
    let deep = format!(r#"{{"other":{}"#, "{\"a\":".repeat(100_000));
    assert!(matches!(
        Request::parse(&deep),
        Err(ParseError::InvalidJson { .. })
    ));
}

#[test]
fn joined_delay_must_match() {
    let line = r#"{"joined_id":1,"mark_id":"m","exposure_time":"2026-11-21 10:00:00.456","exposure_trace_id":"t","uid":1,"psid":1,"ad_id":1,"creative_id":1,"position":0,"platform":"ios","bid_price":1.85,"interaction_time":"2026-11-21 10:03:12.004","interaction_trace_id":"u","action":"click","delay_ms":191549}"#;
    let (field, _, detail) = bad_field(Joined::parse(line).unwrap_err());
    assert_eq!(field, "delay_ms");
    assert!(detail.contains("191548"), "{detail}");
    assert!(Joined::parse(&line.replace("191549", "191548")).is_ok());
}

#[test]
fn envelope_errors() {
    assert_eq!(
        Envelope::parse(b"2026-11-21\t\xff\xfe"),
        Err(ParseError::InvalidUtf8 { offset: 11 })
    );
    assert_eq!(
        Envelope::parse(b"{\"message\":\"a\xc3\"}"),
        Err(ParseError::InvalidUtf8 { offset: 13 })
    );
    let doc = r#"{"message":"x","log":{"offset":"812"}}"#;
    let (field, offset, _) = bad_field(Envelope::parse(doc.as_bytes()).unwrap_err());
    assert_eq!(
        (field, offset),
        ("log.offset", doc.find("\"offset\"").unwrap())
    );
    let doc = r#"{"message":"x","host":"web-1"}"#;
    let (field, _, detail) = bad_field(Envelope::parse(doc.as_bytes()).unwrap_err());
    assert_eq!((field, detail.as_str()), ("host", "expected an object"));
    let doc = r#"{"@timestamp":"2026-11-21 25:00:00Z","message":"x"}"#;
    let (field, _, _) = bad_field(Envelope::parse(doc.as_bytes()).unwrap_err());
    assert_eq!(field, "@timestamp");
    let doc = r#"{"message":"x","fields":{"log_type":7}}"#;
    let (field, _, _) = bad_field(Envelope::parse(doc.as_bytes()).unwrap_err());
    assert_eq!(field, "fields.log_type");
}

#[test]
fn envelope_fallbacks_to_bare() {
    for value in [
        r#"{"message":12}"#,
        r#"{"message":"x""#,
        r#"{"time":"2026-11-21 10:00:00.123"}"#,
        "[1,2]",
        "",
    ] {
        let env = Envelope::parse(value.as_bytes()).unwrap();
        assert!(env.bare, "{value}");
        assert_eq!(env.message, value);
    }
    // Top-level custom fields (fields_under_root) and sub-ms @timestamp.
    let doc = r#"{"@timestamp":"2026-11-21T10:00:00.123456Z","message":"x","log_type":"exposure","idc":"zw","host":{"name":"h","os":{"family":"linux"}}}"#;
    let env = Envelope::parse(doc.as_bytes()).unwrap();
    assert_eq!(env.read_ts_ms, Some(1_795_255_200_123));
    assert_eq!(env.log_type.as_deref(), Some("exposure"));
    assert_eq!(env.idc.as_deref(), Some("zw"));
    assert_eq!(env.host.as_deref(), Some("h"));
}

#[test]
fn reasons_are_stable() {
    assert_eq!(Request::parse("").unwrap_err().reason(), "empty");
    assert_eq!(Request::parse("a\tb").unwrap_err().reason(), "field_count");
    assert_eq!(Request::parse("{").unwrap_err().reason(), "invalid_json");
    assert_eq!(Request::parse("{}").unwrap_err().reason(), "missing_field");
    assert_eq!(
        Envelope::parse(b"\xff").unwrap_err().reason(),
        "invalid_utf8"
    );
}
