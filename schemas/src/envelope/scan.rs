//! One pass over a Filebeat document: the kept fields are read, everything
//! else is only validated and skipped.
//!
//! The document is accepted exactly when the serde_json derive decoder it
//! replaces accepted it (kept as the test-only `reference`), and yields the
//! same values; a rejected document is a bare line. What that decoder
//! checked, and so what is checked here:
//! - strict JSON everywhere (no trailing commas, JSON whitespace only, valid
//!   escapes, no raw control characters in strings, RFC 8259 numbers,
//!   nothing after the document but whitespace);
//! - the keys of every object it visited (the document, `log`, `log.file`,
//!   `host`, `fields`, `beat`, `agent`, `event`, and an object found where a
//!   kept scalar belongs) and every string it kept are *parsed*: a `\u`
//!   escape must not be a lone surrogate. Skipped values (`@metadata`,
//!   `input`, an unknown key's value, a non-string `message`) only need
//!   syntactically valid escapes, at any depth;
//! - a number where a kept value belongs is parsed: a float out of range
//!   (`1e400`) is an error, and its kind ("a negative integer", "a float") is
//!   serde_json's (non-trivial numbers are handed to serde_json itself);
//! - a kept key that occurs twice in one object is an error (serde's
//!   `duplicate field`), whatever its values;
//! - `null` in a kept place is the key's absence.

use std::borrow::Cow;

use super::{Agent, Beat, Doc, Event, Fields, File, Host, Log};
use crate::json::Obj;
use crate::scan::{Invalid, Scan, R};

/// Decodes `text` (the whole Kafka value) if it is one JSON object the
/// reference decoder accepted; `None` makes the value a bare line.
pub(super) fn doc(text: &str) -> Option<Doc<'_>> {
    let mut s = Scan::new(text);
    let doc = s.document().ok()?;
    s.at_end().then_some(doc)
}

/// Sets `bit` in `seen`, or fails if it was set: a kept key twice.
#[inline]
fn once(seen: &mut u16, bit: u16) -> R<()> {
    if *seen & bit != 0 {
        return Err(Invalid);
    }
    *seen |= bit;
    Ok(())
}

impl<'a> Scan<'a> {
    /// A kept object (`Option<Obj<T>>` in the reference): its members read
    /// by `f`; any other value is checked as a scalar and is `NotObject`.
    #[inline]
    fn object<T: Default>(
        &mut self,
        mut f: impl FnMut(&mut Self, &mut T, &mut u16, &str) -> R<()>,
    ) -> R<Option<Obj<T>>> {
        if self.peek() != Some(b'{') {
            return Ok(self.scalar()?.map(|_| Obj::NotObject));
        }
        self.i += 1;
        let mut t = T::default();
        let mut seen = 0u16;
        self.members(|s, k| f(s, &mut t, &mut seen, &k))?;
        Ok(Some(Obj::Obj(t)))
    }

    /// The envelope's `message`: its value when a string, else `None`
    /// (absent, `null`, or another value, which is only validated).
    fn message(&mut self) -> R<Option<Cow<'a, str>>> {
        if self.peek() == Some(b'"') {
            self.i += 1;
            return self.string().map(Some);
        }
        self.skip_value()?;
        Ok(None)
    }

    fn document(&mut self) -> R<Doc<'a>> {
        self.ws();
        self.eat(b'{')?;
        let mut d = Doc::default();
        let mut seen = 0u16;
        self.members(|s, k| {
            match &*k {
                "message" => {
                    once(&mut seen, 1)?;
                    d.message = s.message()?;
                }
                "@timestamp" => {
                    once(&mut seen, 1 << 1)?;
                    d.timestamp = s.scalar()?;
                }
                "log" => {
                    once(&mut seen, 1 << 2)?;
                    d.log = s.object(|s, log: &mut Log<'a>, seen, k| match k {
                        "offset" => {
                            once(seen, 1)?;
                            log.offset = s.scalar()?;
                            Ok(())
                        }
                        "file" => {
                            once(seen, 2)?;
                            log.file = s.object(|s, f: &mut File<'a>, seen, k| match k {
                                "path" => {
                                    once(seen, 1)?;
                                    f.path = s.scalar()?;
                                    Ok(())
                                }
                                _ => s.skip_value(),
                            })?;
                            Ok(())
                        }
                        _ => s.skip_value(),
                    })?;
                }
                "host" => {
                    once(&mut seen, 1 << 3)?;
                    d.host = s.object(|s, h: &mut Host<'a>, seen, k| match k {
                        "name" => {
                            once(seen, 1)?;
                            h.name = s.scalar()?;
                            Ok(())
                        }
                        _ => s.skip_value(),
                    })?;
                }
                "fields" => {
                    once(&mut seen, 1 << 4)?;
                    d.fields = s.object(|s, f: &mut Fields<'a>, seen, k| match k {
                        "log_type" => {
                            once(seen, 1)?;
                            f.log_type = s.scalar()?;
                            Ok(())
                        }
                        "idc" => {
                            once(seen, 2)?;
                            f.idc = s.scalar()?;
                            Ok(())
                        }
                        _ => s.skip_value(),
                    })?;
                }
                "log_type" => {
                    once(&mut seen, 1 << 5)?;
                    d.log_type = s.scalar()?;
                }
                "idc" => {
                    once(&mut seen, 1 << 6)?;
                    d.idc = s.scalar()?;
                }
                "source" => {
                    once(&mut seen, 1 << 7)?;
                    d.source = s.scalar()?;
                }
                "offset" => {
                    once(&mut seen, 1 << 8)?;
                    d.offset = s.scalar()?;
                }
                "beat" => {
                    once(&mut seen, 1 << 9)?;
                    d.beat = s.object(|s, b: &mut Beat<'a>, seen, k| match k {
                        "hostname" => {
                            once(seen, 1)?;
                            b.hostname = s.scalar()?;
                            Ok(())
                        }
                        "name" => {
                            once(seen, 2)?;
                            b.name = s.scalar()?;
                            Ok(())
                        }
                        _ => s.skip_value(),
                    })?;
                }
                "agent" => {
                    once(&mut seen, 1 << 10)?;
                    d.agent = s.object(|s, a: &mut Agent<'a>, seen, k| match k {
                        "hostname" => {
                            once(seen, 1)?;
                            a.hostname = s.scalar()?;
                            Ok(())
                        }
                        _ => s.skip_value(),
                    })?;
                }
                "event" => {
                    once(&mut seen, 1 << 11)?;
                    d.event = s.object(|s, e: &mut Event<'a>, seen, k| match k {
                        "original" => {
                            once(seen, 1)?;
                            e.original = s.scalar()?;
                            Ok(())
                        }
                        _ => s.skip_value(),
                    })?;
                }
                _ => s.skip_value()?,
            }
            Ok(())
        })?;
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{reference, Envelope};
    use crate::scan::gen::{key, number, object, string, value, ws};
    use proptest::prelude::*;

    #[test]
    fn deep_skipped_values_need_no_recursion() {
        for depth in [1, 63, 64, 65, 128, 129, 100_000] {
            let doc = format!(
                r#"{{"x":{}{}{},"message":"m"}}"#,
                "[{\"a\":".repeat(depth),
                "1",
                "}]".repeat(depth)
            );
            assert_eq!(
                super::doc(&doc).and_then(|d| d.message).as_deref(),
                Some("m"),
                "{depth}"
            );
            same(&doc);
            let bad = format!(r#"{{"x":{}1{}]}}"#, "[".repeat(depth), "]".repeat(depth));
            assert!(super::doc(&bad).is_none(), "{depth}");
            same(&bad);
        }
    }

    /// The scanner's envelope (or error) is the reference decoder's, and the
    /// message is borrowed exactly when the reference's is.
    fn same(doc: &str) {
        same_bytes(doc.as_bytes());
    }

    fn same_bytes(doc: &[u8]) {
        let (ours, theirs) = (Envelope::parse(doc), reference::parse(doc));
        assert_eq!(ours, theirs, "{}", String::from_utf8_lossy(doc));
        if let (Ok(a), Ok(b)) = (&ours, &theirs) {
            assert_eq!(
                matches!(a.message, Cow::Borrowed(_)),
                matches!(b.message, Cow::Borrowed(_)),
                "{}",
                String::from_utf8_lossy(doc)
            );
        }
    }

    /// Documents of every form the module docs list, each valid one also
    /// cut at every byte and with every byte removed.
    #[test]
    fn hand_written_documents() {
        let docs = [
            r#"{"@timestamp":"2026-11-21T10:00:00.456Z","@metadata":{"beat":"filebeat","type":"_doc","version":"8.15.0"},"log":{"offset":812,"file":{"path":"/a.log","inode":"1"}},"message":"a\tb\tc\\d","input":{"type":"filestream"},"ecs":{"version":"8.0.0"},"host":{"name":"h"},"agent":{"name":"x","hostname":"y"},"fields":{"log_type":"request","idc":"yf"}}"#,
            r#"{"beat":{"name":"b","hostname":"bh"},"source":"/s","offset":7,"message":"m\u00e9\ud83d\ude00"}"#,
            r#" { "message" : "x" , "log_type" : "exposure" , "idc" : "zw" } "#,
            "{\t\"message\"\n:\r\"x\"}\n",
            r#"{"message":"x","message":"y"}"#,
            r#"{"message":null,"message":"y"}"#,
            r#"{"message":"x","unknown":1,"unknown":2}"#,
            r#"{"mess\u0061ge":"x","h\u006fst":{"n\u0061me":"h"}}"#,
            r#"{"message":"x","host":{"name":"a","name":"b"}}"#,
            r#"{"message":"x","host":{"name":"a"},"agent":{"hostname":"a","hostname":"b"}}"#,
            r#"{"message":"x","agent":{"hostname":"\ud800"}}"#,
            r#"{"message":"x","@metadata":{"k":"\ud800"}}"#,
            r#"{"message":"x","@metadata":{"\ud800":1}}"#,
            r#"{"message":"x","\ud800":1}"#,
            r#"{"message":"x","host":{"\udc00":1}}"#,
            r#"{"message":"x","offset":{"\ud800":1}}"#,
            r#"{"message":"x","offset":[{"\ud800":1}]}"#,
            r#"{"message":"\ud800"}"#,
            r#"{"message":"\ud800\u0041"}"#,
            r#"{"message":"\ud800\ud800"}"#,
            r#"{"message":["\ud800"],"event":{"original":"o"}}"#,
            r#"{"message":"x","offset":1e400}"#,
            r#"{"message":"x","x":1e400}"#,
            r#"{"message":"x","log":1e400}"#,
            r#"{"message":"x","offset":-0}"#,
            r#"{"message":"x","offset":-5}"#,
            r#"{"message":"x","offset":1.0}"#,
            r#"{"message":"x","offset":18446744073709551615}"#,
            r#"{"message":"x","offset":18446744073709551616}"#,
            r#"{"message":"x","offset":-9223372036854775809}"#,
            r#"{"message":"x","offset":0e999999999}"#,
            r#"{"message":"x","offset":01}"#,
            r#"{"message":"x","offset":00}"#,
            r#"{"message":"x","offset":1.}"#,
            r#"{"message":"x","offset":.5}"#,
            r#"{"message":"x","offset":+1}"#,
            r#"{"message":"x","x":-}"#,
            r#"{"message":"x","offset":true,"source":false}"#,
            r#"{"message":"x","log":{"offset":"1","file":[]}}"#,
            r#"{"message":"x","log":[],"host":"h"}"#,
            r#"{"message":"x","fields":{"log_type":7},"@timestamp":"bad"}"#,
            r#"{"message":"x","@timestamp":"2026-11-21T10:00:00.123456789+08:00"}"#,
            r#"{"message":"x",}"#,
            r#"{"message":"x","y":[1,]}"#,
            r#"{"message":"x"}x"#,
            r#"{"message":"x"}{}"#,
            "\u{a0}{\"message\":\"x\"}",
            "\x0c{\"message\":\"x\"}",
            r#"{"message":"x","y":nul}"#,
            r#"{"message":"x","y":"\q"}"#,
            r#"{"message":"x","y":"\u12"}"#,
            r#"{"message":"x","y":"\u12G4"}"#,
            "{\"message\":\"x\",\"y\":\"a\x01b\"}",
            "{\"message\":\"a\x7fb\"}",
            r#"{"event":{"original":"o","original":"p"}}"#,
            r#"{"event":{"original":"o"},"message":{}}"#,
            r#"{"event":"o","message":"m"}"#,
            r#"{}"#,
            r#"[]"#,
            r#"{"message":"a\nb\r\nc\n"}"#,
            "{\"message\":\"\u{e9}\u{1F600}\\t\"}",
        ];
        for doc in docs {
            same(doc);
            for cut in 0..doc.len() {
                same_bytes(&doc.as_bytes()[..cut]);
                let mut v = doc.as_bytes().to_vec();
                v.remove(cut);
                same_bytes(&v);
            }
        }
    }

    /// A value typed as Filebeat writes it at a kept key, or anything.
    fn kept() -> impl Strategy<Value = (String, String)> {
        let s = || string().boxed();
        let name =
            |k: &'static str, v: BoxedStrategy<String>| (Just(format!("\"{k}\"")), v).boxed();
        prop_oneof![
            1 => name("message", s()),
            1 => name("@timestamp", prop::sample::select(vec![
                "\"2026-11-21T10:00:00.456Z\"", "\"2026-11-21T10:00:00Z\"",
                "\"2026-11-21T10:00:00.123456789+08:00\"", "\"yesterday\"", "1795255200",
            ]).prop_map(str::to_string).boxed()),
            2 => name("log", (number(), s(), any::<bool>()).prop_map(|(o, p, flags)| {
                let flags = if flags { r#","flags":["multiline"]"# } else { "" };
                format!(r#"{{"offset":{o},"file":{{"path":{p},"inode":"1"}}{flags}}}"#)
            }).boxed()),
            2 => name("host", s().prop_map(|h| format!(r#"{{"name":{h}}}"#)).boxed()),
            1 => name("agent", s().prop_map(|h| format!(r#"{{"type":"filebeat","hostname":{h},"id":"x"}}"#)).boxed()),
            1 => name("beat", (s(), s()).prop_map(|(h, n)| format!(r#"{{"hostname":{h},"name":{n}}}"#)).boxed()),
            1 => name("fields", (s(), s()).prop_map(|(t, i)| format!(r#"{{"log_type":{t},"idc":{i}}}"#)).boxed()),
            1 => name("event", s().prop_map(|o| format!(r#"{{"original":{o}}}"#)).boxed()),
            1 => name("source", s()),
            1 => name("offset", number().boxed()),
            1 => name("log_type", prop::sample::select(vec!["\"request\"", "\"exposure\"", "\"nope\""]).prop_map(str::to_string).boxed()),
            1 => name("@metadata", Just(r#"{"beat":"filebeat","type":"_doc","version":"8.15.0"}"#.to_string()).boxed()),
            3 => (key(), value()).boxed(),
        ]
    }

    fn envelope() -> impl Strategy<Value = String> {
        // Mostly one `message` somewhere among the other members.
        let message = prop_oneof![
            8 => string().prop_map(Some),
            1 => Just(None),
        ];
        (
            prop::collection::vec((kept(), ws(), ws()), 0..7),
            message,
            any::<prop::sample::Index>(),
            0..40u8,
            ws(),
            ws(),
        )
            .prop_map(|(members, message, at, odd, before, after)| {
                let mut members: Vec<_> = members
                    .into_iter()
                    .map(|((k, v), a, b)| (k, a, b, v))
                    .collect();
                if let Some(m) = message {
                    let at = at.index(members.len() + 1);
                    members.insert(at, ("\"message\"".to_string(), "", "", m));
                }
                format!("{before}{}{after}", object(members, odd))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn scanner_is_the_reference_decoder(doc in envelope()) {
            same(&doc);
        }

        #[test]
        fn scanner_is_the_reference_decoder_on_any_value(doc in value()) {
            same(&doc);
        }

        /// Cut anywhere (a truncated produce), or one byte replaced.
        #[test]
        fn scanner_is_the_reference_decoder_on_damaged_documents(
            doc in envelope(),
            at in any::<prop::sample::Index>(),
            byte in prop::sample::select(vec![b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b' ', b'0', b'-', b'e', b'.', b'u', 0x01, 0xc3, 0xff]),
        ) {
            let b = doc.as_bytes();
            let i = at.index(b.len() + 1);
            same_bytes(&b[..i]);
            if i < b.len() {
                let mut v = b.to_vec();
                v[i] = byte;
                same_bytes(&v);
                v.insert(i, byte);
                same_bytes(&v);
            }
        }
    }
}
