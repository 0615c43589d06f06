//! Malformed messages, each with the dead-letter reason the pipeline must report.
//!
//! Every bad message is built from a fresh, valid template line and broken in
//! one specific way, so exactly one rule is violated and the expected
//! [`schemas::ParseError::reason`] is known. The unit tests check each kind
//! against the real `schemas` parsers (see [`crate::verify`]).

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use schemas::LogType;
use serde::{Deserialize, Serialize};

use crate::model::Line;

/// The ways a message is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadKind {
    /// A Filebeat JSON document cut off in the middle (a partial write).
    TruncatedEnvelope,
    /// Bytes that are not UTF-8 (bare, or raw inside the JSON document).
    InvalidUtf8,
    /// One TSV field too many, or the last fields missing.
    FieldCount,
    /// uid is not a decimal number (`guest`, `12a45`, `-`, full-width digits…).
    NonNumericUid,
    /// uid does not fit in u64.
    UidOverflow,
    /// Negative latency (request) or bid price (exposure).
    NegativeNumber,
    /// `NaN` / `inf` latency or bid price.
    NotFinite,
    /// A timestamp with month 13 or hour 25.
    BadTimestamp,
    /// An empty line (an envelope with an empty message, or a bare newline).
    Empty,
    /// Something that is not a log line at all (a stack trace, an HTML error page…).
    Garbage,
    /// A TSV field with an invalid backslash escape (`\q`).
    BadEscape,
    /// A JSON-form line without a required key.
    MissingField,
    /// An envelope whose `fields.log_type` names no known log type.
    UnknownLogType,
}

impl BadKind {
    pub const ALL: [BadKind; 13] = [
        BadKind::TruncatedEnvelope,
        BadKind::InvalidUtf8,
        BadKind::FieldCount,
        BadKind::NonNumericUid,
        BadKind::UidOverflow,
        BadKind::NegativeNumber,
        BadKind::NotFinite,
        BadKind::BadTimestamp,
        BadKind::Empty,
        BadKind::Garbage,
        BadKind::BadEscape,
        BadKind::MissingField,
        BadKind::UnknownLogType,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BadKind::TruncatedEnvelope => "truncated_envelope",
            BadKind::InvalidUtf8 => "invalid_utf8",
            BadKind::FieldCount => "field_count",
            BadKind::NonNumericUid => "non_numeric_uid",
            BadKind::UidOverflow => "uid_overflow",
            BadKind::NegativeNumber => "negative_number",
            BadKind::NotFinite => "not_finite",
            BadKind::BadTimestamp => "bad_timestamp",
            BadKind::Empty => "empty",
            BadKind::Garbage => "garbage",
            BadKind::BadEscape => "bad_escape",
            BadKind::MissingField => "missing_field",
            BadKind::UnknownLogType => "unknown_log_type",
        }
    }

    /// The [`schemas::ParseError::reason`] code the pipeline must report.
    pub fn reason(self) -> &'static str {
        match self {
            BadKind::TruncatedEnvelope => "invalid_json",
            BadKind::InvalidUtf8 => "invalid_utf8",
            BadKind::FieldCount | BadKind::Garbage => "field_count",
            BadKind::NonNumericUid
            | BadKind::UidOverflow
            | BadKind::NegativeNumber
            | BadKind::NotFinite
            | BadKind::BadTimestamp
            | BadKind::BadEscape => "bad_field",
            BadKind::Empty => "empty",
            BadKind::MissingField => "missing_field",
            BadKind::UnknownLogType => "unknown_log_type",
        }
    }

    /// Whether this kind can be made from a line of type `t` (interactions
    /// have no float column).
    pub fn applies_to(self, t: LogType) -> bool {
        !matches!(
            (self, t),
            (
                BadKind::NegativeNumber | BadKind::NotFinite,
                LogType::Interaction
            )
        )
    }

    /// A random kind that applies to `t`.
    pub fn random(rng: &mut ChaCha8Rng, t: LogType) -> BadKind {
        loop {
            let k = BadKind::ALL[rng.random_range(0..BadKind::ALL.len())];
            if k.applies_to(t) {
                return k;
            }
        }
    }
}

/// How a bad line is put into its Kafka value.
#[derive(Debug, Clone, PartialEq)]
pub enum Wrap {
    /// Wrap like a good line (envelope or bare by `bare_ratio`).
    Either,
    /// Always the Filebeat JSON document.
    Envelope,
    /// Always the bare line.
    Bare,
    /// The JSON document, then cut to this fraction of its length.
    TruncatedEnvelope(f64),
    /// The JSON document with `fields.log_type` set to this value.
    LogTypeOverride(&'static str),
}

/// A broken line: its bytes and how to wrap them. Invalid UTF-8 is marked by
/// [`BAD_BYTES_MARK`] in `line` and substituted after wrapping.
#[derive(Debug, Clone)]
pub struct BadLine {
    pub line: String,
    pub wrap: Wrap,
}

/// Stands for invalid bytes until the value is assembled.
pub const BAD_BYTES_MARK: &str = "@@BADBYTES@@";
/// What [`BAD_BYTES_MARK`] becomes: a lone continuation byte, an overlong
/// encoding and 0xFF, none valid UTF-8.
pub const BAD_BYTES: &[u8] = &[0x80, 0xC0, 0xAF, 0xFF];

const GARBAGE: [&str; 6] = [
    "java.lang.IllegalStateException: connection pool exhausted",
    "    at com.example.ads.RankService.rank(RankService.java:214)",
    "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
    "GET /healthz HTTP/1.1 200 2 \"-\" \"kube-probe/1.27\"",
    "*** log rotated ***",
    "panic: runtime error: index out of range [3] with length 3",
];

/// Column indexes of the fields the kinds break.
fn uid_col(t: LogType) -> usize {
    match t {
        LogType::Request => 7,
        _ => 3,
    }
}
fn float_col(t: LogType) -> usize {
    match t {
        LogType::Request => 10,
        _ => 9, // exposure bid_price
    }
}

/// Breaks `template` (a valid line) the way `kind` says.
pub fn build(rng: &mut ChaCha8Rng, kind: BadKind, template: &Line) -> BadLine {
    let t = template.log_type();
    let mut tsv = String::with_capacity(256);
    template.write(false, &mut tsv);
    let mut cols: Vec<String> = tsv.split('\t').map(str::to_owned).collect();
    let join = |cols: &[String]| cols.join("\t");
    let either = |line: String| BadLine {
        line,
        wrap: Wrap::Either,
    };
    match kind {
        BadKind::TruncatedEnvelope => BadLine {
            line: tsv,
            wrap: Wrap::TruncatedEnvelope(rng.random_range(0.05..0.97)),
        },
        BadKind::InvalidUtf8 => {
            let last = cols.len() - 1;
            let col = if rng.random_bool(0.5) { last } else { 1 };
            let at = rng.random_range(0..=cols[col].len());
            cols[col].insert_str(at, BAD_BYTES_MARK);
            BadLine {
                line: join(&cols),
                wrap: if rng.random_bool(0.5) {
                    Wrap::Bare
                } else {
                    Wrap::Envelope
                },
            }
        }
        BadKind::FieldCount => {
            if rng.random_bool(0.5) {
                cols.push(pick(rng, &["unexpected", "", "1"]).to_owned());
            } else {
                let keep = cols.len() - rng.random_range(1..=2);
                cols.truncate(keep);
            }
            either(join(&cols))
        }
        BadKind::NonNumericUid => {
            cols[uid_col(t)] =
                pick(rng, &["guest", "12a45", "-", "0x1f3a", "１２３", " 42"]).into();
            either(join(&cols))
        }
        BadKind::UidOverflow => {
            cols[uid_col(t)] =
                pick(rng, &["18446744073709551616", "99999999999999999999999"]).into();
            either(join(&cols))
        }
        BadKind::NegativeNumber => {
            cols[float_col(t)] = format!("-{}", cols[float_col(t)]);
            either(join(&cols))
        }
        BadKind::NotFinite => {
            cols[float_col(t)] = pick(rng, &["NaN", "inf", "Infinity", "nan"]).into();
            either(join(&cols))
        }
        BadKind::BadTimestamp => {
            // "YYYY-MM-DD HH:MM:SS.mmm": month 13 or hour 25.
            let time = &mut cols[0];
            if rng.random_bool(0.5) {
                time.replace_range(5..7, "13");
            } else {
                time.replace_range(11..13, "25");
            }
            either(join(&cols))
        }
        BadKind::Empty => {
            if rng.random_bool(0.5) {
                BadLine {
                    line: String::new(),
                    wrap: Wrap::Envelope,
                }
            } else {
                BadLine {
                    line: "\n".into(),
                    wrap: Wrap::Bare,
                }
            }
        }
        BadKind::Garbage => either(pick(rng, &GARBAGE).into()),
        BadKind::BadEscape => {
            // An id column (trace_id for requests, mark_id otherwise).
            let col = 1;
            let at = rng.random_range(1..cols[col].len());
            let esc = pick(rng, &["\\q", "\\x41", "\\u0041", "\\ "]);
            cols[col].insert_str(at, esc);
            either(join(&cols))
        }
        BadKind::MissingField => {
            let mut json = String::with_capacity(300);
            template.write(true, &mut json);
            let mut v: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&json).expect("the JSON writer writes an object");
            let key = match t {
                LogType::Request => pick(rng, &["trace_id", "uid", "service", "time"]),
                LogType::Exposure => pick(rng, &["mark_id", "uid", "ad_id", "time"]),
                _ => pick(rng, &["mark_id", "uid", "action", "time"]),
            };
            v.remove(key);
            either(serde_json::Value::Object(v).to_string())
        }
        BadKind::UnknownLogType => BadLine {
            line: tsv,
            wrap: Wrap::LogTypeOverride(pick(rng, &["clickstream", "access", "debug"])),
        },
    }
}

fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}
