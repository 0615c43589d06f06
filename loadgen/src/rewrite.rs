//! Per-copy rewriting of one recorded Kafka value for `loadgen replay`.
//!
//! Copy `c` of a message is the same event with other ids: every trace id,
//! span id, parent span id and mark id goes through [`map_id`], a pure
//! function of `(c, id)` that is a bijection for a given copy (distinct ids
//! stay distinct, equal ids stay equal), so a trace stays whole (its spans'
//! parent links hold), an exposure keeps its request's trace id, and an
//! exposure→interaction pair stays a pair. Event times move by one shift for
//! every line, so a pair keeps its delay. uids are kept unless asked
//! ([`map_uid`], a bijection on u64 per copy).
//!
//! Only those fields change, in place: the rest of the line and of the
//! Filebeat document (host, file, offset, fields, key order) is kept
//! byte for byte, a bare line stays bare. A rewritten value must read as the
//! original did — good with the same log type, or bad with the same
//! [`schemas::ParseError::reason`] — or the original bytes are sent
//! unchanged ([`Rewritten::verbatim`]): a bad line is never made good, or
//! bad for another reason.
//!
//! Every copy, copy 0 included, gets new ids: a shadow pipeline shares the
//! Redis server and maybe ClickHouse with production, and a copy that kept
//! production's mark ids would meet production's join state.

use std::borrow::Cow;

use schemas::LogType;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::model::mix64;
use crate::verify;

/// How copies differ from the recorded message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewrite {
    /// Copy index (ids depend on it).
    pub copy: u32,
    /// Added to every event time (and the envelope's `@timestamp`), ms.
    pub shift_ms: i64,
    /// Also map uids (by default a copy keeps the user).
    pub rewrite_uid: bool,
}

/// One rewritten value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    pub value: Vec<u8>,
    /// The original bytes were kept: rewriting would have changed how the
    /// pipeline reads the message, or the value could not be read at all.
    pub verbatim: bool,
    /// How the pipeline reads it: the log type, or the dead-letter reason.
    pub class: Result<LogType, &'static str>,
}

/// Ids with fewer `[0-9a-f]` characters than this also get a `~<copy>` suffix,
/// so copies of short ids stay distinct.
const MIN_HEX: usize = 12;

/// The id of copy `copy`: each `[0-9a-f]` character XOR a nibble of a
/// per-copy key stream (so the same length and character classes, and a
/// bijection for a given copy); ids with few hex characters also get a
/// `~<copy>` suffix when it fits in [`schemas::MAX_ID_LEN`]. Empty stays empty
/// (the edge of a trace has no parent).
pub fn map_id(copy: u32, id: &str) -> String {
    if id.is_empty() {
        return String::new();
    }
    let key = |block: u64| mix64(0x7265_706c_6179 ^ (u64::from(copy) << 32) ^ block);
    let mut out = String::with_capacity(id.len() + 8);
    let mut hex = 0usize;
    let mut stream = 0u64;
    for ch in id.chars() {
        let v = match ch {
            '0'..='9' => ch as u32 - '0' as u32,
            'a'..='f' => ch as u32 - 'a' as u32 + 10,
            _ => {
                out.push(ch);
                continue;
            }
        };
        if hex & 15 == 0 {
            stream = key(hex as u64 / 16);
        }
        let nibble = ((stream >> ((hex % 16) * 4)) & 0xf) as u32;
        out.push(char::from_digit(v ^ nibble, 16).expect("a nibble"));
        hex += 1;
    }
    if hex < MIN_HEX {
        let suffix = format!("~{copy}");
        if out.len() + suffix.len() <= schemas::MAX_ID_LEN {
            out.push_str(&suffix);
        }
    }
    out
}

/// The uid of copy `copy`: a bijection on u64 for a given copy.
pub fn map_uid(copy: u32, uid: u64) -> u64 {
    mix64(uid ^ mix64(0x0075_6964 ^ u64::from(copy)))
}

/// `s` (a time as the contract writes it) moved by `shift_ms`, in the same
/// form (epoch ms stay epoch ms; a `T` separator and a `Z` are kept).
/// `None` when `s` is no valid time or the shift leaves the valid range.
pub fn shift_time(s: &str, shift_ms: i64) -> Option<String> {
    let ms = schemas::time::parse_ms(s).ok()?;
    let moved = ms.checked_add(shift_ms)?;
    if !(schemas::time::MIN_MS..=schemas::time::MAX_MS).contains(&moved) {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return Some(moved.to_string());
    }
    let mut out = String::with_capacity(24);
    schemas::time::format_ms(moved, &mut out);
    if s.as_bytes().get(10) == Some(&b'T') {
        out.replace_range(10..11, "T");
    }
    if s.ends_with('Z') {
        out.push('Z');
    }
    Some(out)
}

/// The envelope's `@timestamp` moved by `shift_ms` (RFC 3339, ms precision).
fn shift_rfc3339(s: &str, shift_ms: i64) -> Option<String> {
    let ms = schemas::time::parse_ms(s.trim_end_matches('Z').get(..23).unwrap_or(s)).ok()?;
    let mut out = String::with_capacity(24);
    schemas::time::format_rfc3339_ms(ms.checked_add(shift_ms)?, &mut out);
    Some(out)
}

/// What a field of a line is, for rewriting.
#[derive(Clone, Copy)]
enum Field {
    Time,
    Id,
    Uid,
}

/// The rewritten fields of a log type: TSV column and JSON key.
fn fields(t: LogType) -> &'static [(usize, &'static str, Field)] {
    match t {
        LogType::Request => &[
            (0, "time", Field::Time),
            (1, "trace_id", Field::Id),
            (2, "span_id", Field::Id),
            (3, "parent_span_id", Field::Id),
            (7, "uid", Field::Uid),
        ],
        LogType::Exposure | LogType::Interaction => &[
            (0, "time", Field::Time),
            (1, "mark_id", Field::Id),
            (2, "trace_id", Field::Id),
            (3, "uid", Field::Uid),
        ],
        LogType::Joined => &[],
    }
}

impl Rewrite {
    /// A field's new text (TSV form), `None` to keep it.
    fn field(&self, f: Field, text: &str) -> Option<String> {
        match f {
            Field::Id => Some(map_id(self.copy, text)),
            Field::Time if self.shift_ms != 0 => shift_time(text, self.shift_ms),
            Field::Uid if self.rewrite_uid && text.bytes().all(|b| b.is_ascii_digit()) => text
                .parse::<u64>()
                .ok()
                .map(|u| map_uid(self.copy, u).to_string()),
            _ => None,
        }
    }

    /// The line of type `t` with its ids, time and (maybe) uid rewritten;
    /// unreadable fields are kept as they are. Of a multiline event only the
    /// first line (the record) changes; its continuation is kept.
    pub fn line(&self, t: LogType, line: &str) -> String {
        if let Some(nl) = line.find('\n').filter(|nl| nl + 1 < line.len()) {
            let mut out = self.record(t, &line[..nl]);
            out.push_str(&line[nl..]);
            return out;
        }
        self.record(t, line)
    }

    fn record(&self, t: LogType, line: &str) -> String {
        if line.as_bytes().first() == Some(&b'{') {
            return self.json_line(t, line).unwrap_or_else(|| line.to_owned());
        }
        let mut cols: Vec<Cow<'_, str>> = line.split('\t').map(Cow::Borrowed).collect();
        for &(col, _, f) in fields(t) {
            if let Some(c) = cols.get_mut(col) {
                if let Some(new) = self.field(f, c) {
                    *c = Cow::Owned(new);
                }
            }
        }
        cols.join("\t")
    }

    /// The JSON form: only the values of the rewritten keys change.
    fn json_line(&self, t: LogType, line: &str) -> Option<String> {
        // Top-level keys → raw values (a key with escapes, or any
        // duplicate the parser would reject, leaves the line unchanged or
        // fails the final check).
        let k: std::collections::BTreeMap<&str, &RawValue> = serde_json::from_str(line).ok()?;
        let mut edits = Vec::new();
        for &(_, key, f) in fields(t) {
            let Some(raw) = k.get(key) else { continue };
            let text = raw.get();
            let new = if text.starts_with('"') {
                let s: String = serde_json::from_str(text).ok()?;
                self.field(f, &s)
                    .map(|n| serde_json::to_string(&n).expect("a string"))
            } else {
                self.field(f, text)
            };
            if let Some(new) = new {
                edits.push((span_in(line, text), new));
            }
        }
        Some(splice(line, edits))
    }

    /// Copy `self.copy` of a value read from a topic carrying `topic_type`.
    pub fn value(&self, topic_type: LogType, value: &[u8]) -> Rewritten {
        let class = verify::classify(topic_type, value);
        let verbatim = || Rewritten {
            value: value.to_vec(),
            verbatim: true,
            class,
        };
        let Some(new) = self.try_value(topic_type, value) else {
            return verbatim();
        };
        if verify::classify(topic_type, &new) != class {
            return verbatim();
        }
        Rewritten {
            value: new,
            verbatim: false,
            class,
        }
    }

    fn try_value(&self, topic_type: LogType, value: &[u8]) -> Option<Vec<u8>> {
        let text = std::str::from_utf8(value).ok()?;
        let env = schemas::Envelope::parse(value).ok()?;
        let t = verify::log_type_of(topic_type, &env).ok()?;
        if env.bare {
            let line = text.trim_end_matches(['\r', '\n']);
            let mut out = self.line(t, line);
            out.push_str(&text[line.len()..]);
            return Some(out.into_bytes());
        }
        #[derive(Deserialize)]
        struct Doc<'a> {
            #[serde(borrow)]
            message: Option<&'a RawValue>,
            #[serde(borrow, rename = "@timestamp")]
            timestamp: Option<&'a RawValue>,
            #[serde(borrow)]
            event: Option<Event<'a>>,
        }
        #[derive(Deserialize)]
        struct Event<'a> {
            #[serde(borrow)]
            original: Option<&'a RawValue>,
        }
        let doc: Doc = serde_json::from_str(text).ok()?;
        // The line is `message`, else `event.original` (as schemas reads it).
        let string = |r: &RawValue| serde_json::from_str::<String>(r.get()).ok();
        let (raw, message) = match doc.message.and_then(|r| Some((r, string(r)?))) {
            Some(m) => m,
            None => {
                let r = doc.event?.original?;
                (r, string(r)?)
            }
        };
        let mut edits = vec![(
            span_in(text, raw.get()),
            serde_json::to_string(&self.line(t, &message)).expect("a string"),
        )];
        if let (Some(ts), true) = (doc.timestamp, self.shift_ms != 0) {
            if let Some(new) = serde_json::from_str::<String>(ts.get())
                .ok()
                .and_then(|s| shift_rfc3339(&s, self.shift_ms))
            {
                edits.push((span_in(text, ts.get()), serde_json::to_string(&new).ok()?));
            }
        }
        Some(splice(text, edits).into_bytes())
    }
}

/// Byte range of `part` (a subslice of `whole`) in `whole`.
fn span_in(whole: &str, part: &str) -> std::ops::Range<usize> {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    start..start + part.len()
}

/// `s` with each range replaced (ranges do not overlap).
fn splice(s: &str, mut edits: Vec<(std::ops::Range<usize>, String)>) -> String {
    edits.sort_by_key(|(r, _)| r.start);
    let mut out = String::with_capacity(s.len() + 16);
    let mut at = 0;
    for (r, new) in edits {
        out.push_str(&s[at..r.start]);
        out.push_str(&new);
        at = r.end;
    }
    out.push_str(&s[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Generator, Kind, Params};

    fn rw(copy: u32, shift_ms: i64) -> Rewrite {
        Rewrite {
            copy,
            shift_ms,
            rewrite_uid: false,
        }
    }

    #[test]
    fn map_id_keeps_shape_and_differs_per_copy() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let a = map_id(0, id);
        let b = map_id(1, id);
        assert_eq!(a.len(), id.len());
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, id);
        assert_ne!(a, b);
        assert_eq!(map_id(0, id), a, "pure");
        let m = map_id(2, "m-5f1c2d3e4a5b6c7d");
        assert!(m.starts_with("m-") && m.len() == 18, "{m}");
        assert_eq!(map_id(3, ""), "");
        assert_eq!(
            map_id(3, "guest"),
            format!("{}~3", map_id(3, "guest").trim_end_matches("~3"))
        );
        assert_ne!(map_id(3, "guest"), map_id(4, "guest"));
    }

    #[test]
    fn map_id_is_a_bijection_per_copy() {
        let ids: Vec<String> = (0..5000u64).map(|i| format!("{:016x}", mix64(i))).collect();
        for copy in 0..3 {
            let mapped: std::collections::HashSet<String> =
                ids.iter().map(|i| map_id(copy, i)).collect();
            assert_eq!(mapped.len(), ids.len());
        }
        let mut all = std::collections::HashSet::new();
        for copy in 0..50 {
            assert!(all.insert(map_id(copy, &ids[0])));
        }
    }

    #[test]
    fn shift_time_keeps_the_form() {
        let now = 1_000_000_000_000 + 123; // any time; only its form matters
        let mut s = String::new();
        schemas::time::format_ms(now, &mut s);
        let shifted = shift_time(&s, 1500).unwrap();
        assert_eq!(schemas::time::parse_ms(&shifted), Ok(now + 1500));
        assert_eq!(shifted.as_bytes()[10], b' ');
        let t = format!("{}Z", s.replace(' ', "T"));
        let st = shift_time(&t, -1000).unwrap();
        assert!(st.ends_with('Z') && st.as_bytes()[10] == b'T', "{st}");
        assert_eq!(shift_time(&now.to_string(), 7), Some((now + 7).to_string()));
        assert_eq!(shift_time("2x", 7), None);
    }

    #[test]
    fn map_uid_is_pure_and_differs_per_copy() {
        assert_eq!(map_uid(1, 42), map_uid(1, 42));
        assert_ne!(map_uid(1, 42), map_uid(2, 42));
    }

    /// Every generated message, good or bad, enveloped or bare, reads the same
    /// after rewriting; good ones change, and their ids follow `map_id`.
    #[test]
    fn generated_messages_read_the_same_after_rewriting() {
        let mut p = Params::from_config(&common::Config::default().loadgen, 0);
        p.start_ms = 1_000_000_000_000;
        p.count = 4000;
        p.bad_ratio = 0.2;
        p.bare_ratio = 0.3;
        let mut bad_changed = 0;
        let mut bad = 0;
        for m in Generator::new(&p).unwrap() {
            for copy in [0, 5] {
                let r = rw(copy, 3_600_000).value(m.log_type, &m.value);
                match (&m.kind, r.class) {
                    (Kind::Good(line), Ok(t)) => {
                        assert_eq!(t, line.log_type());
                        assert!(!r.verbatim, "good message kept verbatim: {:?}", m);
                        verify::parse_value(m.log_type, &r.value, |env, p| {
                            assert_eq!(env.bare, m.bare);
                            let (key, ts) = match p {
                                verify::Parsed::Request(x) => (x.trace_id.to_string(), x.ts_ms),
                                verify::Parsed::Exposure(x) => (x.mark_id.to_string(), x.ts_ms),
                                verify::Parsed::Interaction(x) => (x.mark_id.to_string(), x.ts_ms),
                                verify::Parsed::Joined(_) => unreachable!(),
                            };
                            assert_eq!(key, map_id(copy, line.key()));
                            assert_eq!(ts, line.ts_ms() + 3_600_000);
                        })
                        .unwrap();
                    }
                    (Kind::Bad(_), Err(reason)) => {
                        assert_eq!(Some(reason), m.expected_reason());
                        let again = verify::classify(m.log_type, &r.value);
                        assert_eq!(again, Err(reason));
                        bad += 1;
                        bad_changed += usize::from(r.value != m.value);
                    }
                    other => panic!("{other:?} for {m:?}"),
                }
            }
        }
        assert!(bad > 100 && bad_changed > bad / 2, "{bad_changed} of {bad}");
    }

    #[test]
    fn the_envelope_is_kept_but_for_the_message() {
        let ts = 1_000_000_000_123i64;
        let line = format!("{ts}\tm-5f1c2d3e4a5b6c7d\t4bf92f3577b34da6a3ce929d0e0e4736\t123456\tclick\tdwell_ms=5300");
        let mut at = String::new();
        schemas::time::format_rfc3339_ms(ts, &mut at);
        let doc = format!(
            r#"{{"@timestamp":"{at}","message":{},"log":{{"offset":812,"file":{{"path":"/a.log"}}}},"host":{{"name":"h-1"}},"fields":{{"log_type":"interaction","idc":"yf"}}}}"#,
            serde_json::to_string(&line).unwrap()
        );
        let r = rw(1, 0).value(LogType::Interaction, doc.as_bytes());
        assert!(!r.verbatim);
        let want_line = rw(1, 0).line(LogType::Interaction, &line);
        let want = doc.replace(
            &serde_json::to_string(&line).unwrap(),
            &serde_json::to_string(&want_line).unwrap(),
        );
        assert_eq!(String::from_utf8(r.value).unwrap(), want);
        assert!(want_line.starts_with(&format!("{ts}\tm-")));
        assert!(want_line.ends_with("\t123456\tclick\tdwell_ms=5300"));

        // A shift moves @timestamp too, and nothing else of the document.
        let r = rw(1, 1000).value(LogType::Interaction, doc.as_bytes());
        let out = String::from_utf8(r.value).unwrap();
        let mut later = String::new();
        schemas::time::format_rfc3339_ms(ts + 1000, &mut later);
        assert!(
            out.starts_with(&format!(
                r#"{{"@timestamp":"{later}","message":"{}\t"#,
                ts + 1000
            )),
            "{out}"
        );
        assert!(out.ends_with(r#","log":{"offset":812,"file":{"path":"/a.log"}},"host":{"name":"h-1"},"fields":{"log_type":"interaction","idc":"yf"}}"#));
    }

    #[test]
    fn event_original_and_multiline_events_are_rewritten_in_place() {
        let ts = 1_000_000_000_123i64;
        let line = format!("{ts}\tm-5f1c2d3e4a5b6c7d\t4bf92f3577b34da6a3ce929d0e0e4736\t123456\tclick\tdwell_ms=5300");
        let multi = format!("{line}\njava.lang.Exception: x\n\tat a.b(C.java:1)");
        let doc = format!(
            r#"{{"event":{{"original":{}}},"host":{{"name":"h-1"}}}}"#,
            serde_json::to_string(&multi).unwrap()
        );
        let r = rw(2, 0).value(LogType::Interaction, doc.as_bytes());
        assert!(!r.verbatim && r.class == Ok(LogType::Interaction), "{r:?}");
        let want = format!(
            "{}\njava.lang.Exception: x\n\tat a.b(C.java:1)",
            rw(2, 0).line(LogType::Interaction, &line)
        );
        let out = String::from_utf8(r.value).unwrap();
        assert_eq!(
            out,
            doc.replace(
                &serde_json::to_string(&multi).unwrap(),
                &serde_json::to_string(&want).unwrap()
            )
        );
        assert!(!out.contains("m-5f1c2d3e4a5b6c7d"));
    }
}
