//! Oracles shared by the fuzz targets (see `fuzz_targets/`).
//!
//! Beyond "does not panic", each target checks what the contract
//! (`schemas/README.md`) promises:
//! * an error's byte offset lies within the input and its reason code is one
//!   of the documented ones;
//! * an accepted line re-written with `write_json` parses back to the same
//!   record, and so does `write_tsv` whenever the record is representable in
//!   TSV (no `&` in extra values, no `=`/`&` in extra keys, no empty keys);
//! * an accepted envelope re-written with `write_json` parses back to the
//!   same kept fields.

use schemas::{parse_line, Envelope, LogType, ParseError, Record};

const REASONS: [&str; 9] = [
    "invalid_utf8",
    "invalid_json",
    "empty",
    "field_count",
    "missing_field",
    "bad_field",
    "too_large",
    "unknown_log_type",
    "time_out_of_range",
];

fn check_error(e: &ParseError, input_len: usize) {
    assert!(REASONS.contains(&e.reason()), "undocumented reason {e:?}");
    let msg = e.to_string();
    assert!(!msg.is_empty());
    match e {
        ParseError::BadField { offset, .. }
        | ParseError::InvalidUtf8 { offset }
        | ParseError::InvalidJson { offset, .. } => {
            assert!(
                *offset <= input_len,
                "offset {offset} beyond input of {input_len} bytes: {e}"
            )
        }
        _ => {}
    }
}

fn extras_of<'r>(rec: &'r Record<'_>) -> Vec<(&'r str, &'r str)> {
    let ex = match rec {
        Record::Request(r) => &r.extra,
        Record::Interaction(r) => &r.extra,
        _ => return Vec::new(),
    };
    ex.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).collect()
}

fn tsv_representable(rec: &Record<'_>) -> bool {
    extras_of(rec)
        .iter()
        .all(|(k, v)| !k.is_empty() && !k.contains(['=', '&']) && !v.contains('&'))
}

/// Parses `data` as a line of type `t` and checks the oracles above.
pub fn check_line(t: LogType, data: &[u8]) {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    match parse_line(t, line) {
        Err(e) => check_error(&e, line.len()),
        Ok(rec) => {
            let mut json = String::new();
            rec.write_json(&mut json);
            let again = parse_line(t, &json)
                .unwrap_or_else(|e| panic!("write_json output does not parse: {e}\n{json}"));
            assert_eq!(again, rec, "JSON round trip of {line:?} via {json:?}");
            if tsv_representable(&rec) {
                let mut tsv = String::new();
                rec.write_tsv(&mut tsv);
                let again = parse_line(t, &tsv)
                    .unwrap_or_else(|e| panic!("write_tsv output does not parse: {e}\n{tsv:?}"));
                assert_eq!(again, rec, "TSV round trip of {line:?} via {tsv:?}");
            }
        }
    }
}

/// Parses `data` as a Kafka value (Filebeat envelope or bare line).
pub fn check_envelope(data: &[u8]) {
    match Envelope::parse(data) {
        Err(e) => check_error(&e, data.len()),
        Ok(env) => {
            if env.bare {
                return;
            }
            let mut json = String::new();
            env.write_json(&mut json);
            let again = Envelope::parse(json.as_bytes())
                .unwrap_or_else(|e| panic!("write_json output does not parse: {e}\n{json}"));
            assert!(!again.bare, "re-written envelope read as bare: {json}");
            assert_eq!(again.message, env.message);
            assert_eq!(again.continuation, env.continuation);
            assert_eq!(again.host, env.host);
            assert_eq!(again.file_path, env.file_path);
            assert_eq!(again.file_offset, env.file_offset);
            assert_eq!(again.log_type, env.log_type);
            assert_eq!(again.idc, env.idc);
            assert_eq!(again.read_ts_ms, env.read_ts_ms);
            // The line inside goes through the line parsers too.
            if let Some(t) = env
                .log_type
                .as_deref()
                .and_then(|t| t.parse::<LogType>().ok())
            {
                check_line(t, env.message.as_bytes());
            }
        }
    }
}
