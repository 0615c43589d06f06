//! Property tests: valid records round-trip through both forms and the
//! envelope; no input makes any parser panic.

use std::borrow::Cow;

use proptest::prelude::*;
use schemas::{parse_line, time, Envelope, Exposure, Interaction, Joined, LogType, Request};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 2000,
        ..ProptestConfig::default()
    }
}

fn cow(s: String) -> Cow<'static, str> {
    Cow::Owned(s)
}

/// Valid ids: plain ASCII, any printable Unicode (≤ 32 chars so ≤ 128 bytes),
/// and backslash-heavy ones to exercise the escapes.
fn id() -> impl Strategy<Value = Cow<'static, str>> {
    prop_oneof![
        "[a-zA-Z0-9_./:-]{1,40}",
        "\\PC{1,32}",
        "[\\\\a-z\"{}]{1,10}",
        Just("x".repeat(128)),
    ]
    .prop_map(cow)
}

fn id_or_empty() -> impl Strategy<Value = Cow<'static, str>> {
    prop_oneof![Just(Cow::Borrowed("")), id()]
}

/// Keys: non-empty, no `=`/`&`. Values: anything but `&` (tabs, newlines,
/// backslashes, `=` and control characters included).
fn extras() -> impl Strategy<Value = Vec<(Cow<'static, str>, Cow<'static, str>)>> {
    prop::collection::vec(
        ("[^=&]{1,8}".prop_map(cow), "[^&]{0,8}".prop_map(cow)),
        0..4,
    )
}

fn ts() -> impl Strategy<Value = i64> {
    prop_oneof![
        time::MIN_MS..=time::MAX_MS,
        Just(time::MIN_MS),
        Just(time::MAX_MS),
        1_700_000_000_000i64..1_900_000_000_000,
    ]
}

fn float() -> impl Strategy<Value = f64> {
    use proptest::num::f64::{NORMAL, POSITIVE, SUBNORMAL, ZERO};
    prop_oneof![
        0.0..1e6f64,
        (0u32..1_000_000).prop_map(f64::from),
        (0u32..100_000).prop_map(|c| f64::from(c) / 100.0),
        POSITIVE | NORMAL | SUBNORMAL | ZERO,
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
    ]
}

prop_compose! {
    fn request()(
        ts_ms in ts(), trace_id in id(), span_id in id(), parent_span_id in id_or_empty(),
        service in id(), caller in id_or_empty(), api in id(), uid in any::<u64>(),
        psid in any::<u32>(), status in any::<u16>(), latency_ms in float(),
        host in id(), idc in id(), extra in extras(),
    ) -> Request<'static> {
        Request { ts_ms, trace_id, span_id, parent_span_id, service, caller, api, uid, psid,
                  status, latency_ms, host, idc, extra }
    }
}

prop_compose! {
    fn exposure()(
        ts_ms in ts(), mark_id in id(), trace_id in id(), uid in any::<u64>(), psid in any::<u32>(),
        ad_id in any::<u64>(), creative_id in any::<u64>(), position in any::<u16>(),
        platform in id(), bid_price in float(),
    ) -> Exposure<'static> {
        Exposure { ts_ms, mark_id, trace_id, uid, psid, ad_id, creative_id, position, platform, bid_price }
    }
}

prop_compose! {
    fn interaction()(
        ts_ms in ts(), mark_id in id(), trace_id in id(), uid in any::<u64>(), action in id(),
        extra in extras(),
    ) -> Interaction<'static> {
        Interaction { ts_ms, mark_id, trace_id, uid, action, extra }
    }
}

prop_compose! {
    fn joined()(e in exposure(), i in interaction(), id in prop::option::of(any::<u64>())) -> Joined<'static> {
        let mut j = Joined::from_pair(&e, &i);
        if let Some(id) = id {
            j.joined_id = id;
        }
        j
    }
}

macro_rules! round_trip {
    ($name:ident, $strategy:expr, $ty:ident) => {
        proptest! {
            #![proptest_config(config())]
            #[test]
            fn $name(rec in $strategy) {
                let mut tsv = String::new();
                rec.write_tsv(&mut tsv);
                prop_assert!(!tsv.contains('\n') && !tsv.contains('\r'));
                prop_assert_eq!(&$ty::parse(&tsv).unwrap(), &rec, "tsv: {:?}", tsv);
                // A trailing newline is ignored.
                tsv.push('\n');
                prop_assert_eq!(&$ty::parse(&tsv).unwrap(), &rec);

                let mut json = String::new();
                rec.write_json(&mut json);
                prop_assert!(!json.contains('\n'));
                prop_assert_eq!(&$ty::parse(&json).unwrap(), &rec, "json: {}", json);
                // The JSON form is plain JSON that serde_json accepts too.
                prop_assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok());

                // Both forms survive a Filebeat envelope.
                for line in [&tsv, &json] {
                    let mut doc = String::new();
                    Envelope { message: Cow::Borrowed(line), ..Envelope::default() }.write_json(&mut doc);
                    let env = Envelope::parse(doc.as_bytes()).unwrap();
                    prop_assert!(!env.bare);
                    prop_assert_eq!(&$ty::parse(&env.message).unwrap(), &rec);
                }
            }
        }
    };
}

round_trip!(request_round_trips, request(), Request);
round_trip!(exposure_round_trips, exposure(), Exposure);
round_trip!(interaction_round_trips, interaction(), Interaction);
round_trip!(joined_round_trips, joined(), Joined);

fn opt_str() -> impl Strategy<Value = Option<Cow<'static, str>>> {
    prop::option::of(any::<String>().prop_map(cow))
}

prop_compose! {
    fn envelope()(
        read_ts_ms in prop::option::of(ts()), message in "[^\r\n]*",
        continuation in prop::option::of("[^\r\n](.|\n)*[^\r\n]|[^\r\n]"), host in opt_str(),
        file_path in opt_str(), file_offset in prop::option::of(any::<u64>()),
        log_type in opt_str(), idc in opt_str(),
    ) -> Envelope<'static> {
        // A message is one line; a multiline event's other lines are its
        // continuation (which has no trailing newline).
        Envelope { read_ts_ms, message: cow(message), continuation: continuation.map(cow), host, file_path, file_offset, log_type, idc, bare: false }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn envelope_round_trips(env in envelope()) {
        let mut doc = String::new();
        env.write_json(&mut doc);
        prop_assert_eq!(Envelope::parse(doc.as_bytes()).unwrap(), env);
    }

    #[test]
    fn non_json_values_are_bare(line in "[^{ \t\r\n][^\r\n]{0,60}(\r?\n)?") {
        let env = Envelope::parse(line.as_bytes()).unwrap();
        prop_assert!(env.bare);
        prop_assert_eq!(&env.message, line.trim_end_matches(['\r', '\n']));
    }

    #[test]
    fn time_round_trips(t in ts()) {
        let mut s = String::new();
        time::format_ms(t, &mut s);
        prop_assert_eq!(time::parse_ms(&s), Ok(t));
        prop_assert_eq!(time::parse_ms(&t.to_string()), Ok(t));
    }
}

// ---- no panics ----

fn parse_all(line: &str) {
    for t in LogType::ALL {
        let _ = parse_line(t, line);
    }
    let _ = time::parse_ms(line);
    if let Ok(env) = Envelope::parse(line.as_bytes()) {
        for t in LogType::ALL {
            let _ = parse_line(t, &env.message);
        }
    }
}

/// Strings built from fragments that matter to the parsers.
fn nasty() -> impl Strategy<Value = String> {
    let frag = prop_oneof![
        Just("\t"),
        Just("{"),
        Just("}"),
        Just("\""),
        Just("\\"),
        Just(":"),
        Just(","),
        Just("["),
        Just("]"),
        Just("="),
        Just("&"),
        Just("-"),
        Just("."),
        Just("e"),
        Just("0"),
        Just("1"),
        Just("9"),
        Just("18446744073709551616"),
        Just("\\t"),
        Just("\\x"),
        Just("\\u0000"),
        Just("\\ud800"),
        Just("null"),
        Just("true"),
        Just("2026-11-21 10:00:00.123"),
        Just("2026-02-29T23:59:60Z"),
        Just("NaN"),
        Just("\"time\":"),
        Just("\"uid\":"),
        Just("\"extra\":"),
        Just("\"message\":"),
        Just("\"log\":"),
        Just("\"offset\":"),
        Just("é"),
        Just("\u{85}"),
        Just("\u{0}"),
        Just("\n"),
        Just("\r"),
        Just(" "),
        Just("a=b"),
    ];
    prop::collection::vec(frag, 0..40).prop_map(|v| v.concat())
}

/// Renders a record with one of its writers.
fn line_of<R>(write: fn(&R, &mut String)) -> impl Fn(R) -> String {
    move |rec| {
        let mut s = String::new();
        write(&rec, &mut s);
        s
    }
}

/// A valid line of any type in either form.
fn valid_line() -> impl Strategy<Value = String> {
    // Boxed arms: an unboxed union of these value trees overflows the 2 MiB
    // test-thread stack in debug builds.
    prop_oneof![
        request().prop_map(line_of(Request::write_tsv)).boxed(),
        request().prop_map(line_of(Request::write_json)).boxed(),
        exposure().prop_map(line_of(Exposure::write_tsv)).boxed(),
        interaction()
            .prop_map(line_of(Interaction::write_json))
            .boxed(),
        joined().prop_map(line_of(Joined::write_json)).boxed(),
        joined().prop_map(line_of(Joined::write_tsv)).boxed(),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn no_panic_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(env) = Envelope::parse(&bytes) {
            for t in LogType::ALL {
                let _ = parse_line(t, &env.message);
            }
        }
    }

    #[test]
    fn no_panic_on_strings(s in any::<String>()) {
        parse_all(&s);
    }

    #[test]
    fn no_panic_on_fragments(s in nasty()) {
        parse_all(&s);
        parse_all(&format!("{{{s}}}"));
    }

    /// Valid lines with a few bytes replaced, inserted or cut off.
    #[test]
    fn no_panic_on_mutated_lines(
        line in valid_line(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<char>(), 0u8..3), 1..4),
    ) {
        let mut chars: Vec<char> = line.chars().collect();
        for (at, c, op) in edits {
            if chars.is_empty() { break; }
            let i = at.index(chars.len());
            match op {
                0 => chars[i] = c,
                1 => chars.insert(i, c),
                _ => chars.truncate(i),
            }
        }
        let s: String = chars.into_iter().collect();
        parse_all(&s);
    }
}
