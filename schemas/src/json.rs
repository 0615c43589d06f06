//! serde_json plumbing for the JSON forms.
//!
//! Lines are not deserialized into derived structs: serde's derive reports
//! a wrong type or a missing field without saying which field in a form we
//! can map to [`ParseError`]. Instead the object is collected into one loosely
//! typed slot per known key ([`JVal`], strings borrowed from the input when
//! they had no escapes) and the typed checks happen afterwards, where the
//! field name is known.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::scan::Scan;
use crate::{Extras, ParseError};

/// A string that borrows from the input unless it had escapes. (serde's own
/// `Cow<str>` impl always copies unless it is a `#[serde(borrow)]` field
/// directly, which excludes map keys and `Option<Cow>`.)
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CowStr<'a>(pub(crate) Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for CowStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = CowStr<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

/// The value of a JSON string literal `raw` (quotes included) that serde_json
/// already skipped as valid, or `None` when it is not a string or its value
/// cannot be had here. Cheaper than serde_json's own string value for the
/// envelope's `message`, a TSV line whose every tab is an escape: serde_json
/// copies each run between escapes into a scratch buffer and the visitor then
/// copies that into a `String`; here the runs go straight into one `String`
/// of the right size (and no escape at all borrows). A `\u` escape falls back
/// to serde_json (surrogate pairs, and its rejection of lone surrogates, which
/// skipping does not check), so the result is always serde_json's. (Test-only
/// now: the envelope's reference decoder; `envelope::scan` does this while
/// it scans.)
#[cfg(test)]
pub(crate) fn unescape_str(raw: &str) -> Option<Result<Cow<'_, str>, serde_json::Error>> {
    let body = raw.strip_prefix('"')?.strip_suffix('"')?;
    let bytes = body.as_bytes();
    let Some(mut esc) = next_backslash(bytes, 0) else {
        return Some(Ok(Cow::Borrowed(body)));
    };
    let mut out = String::with_capacity(body.len());
    let mut from = 0;
    loop {
        out.push_str(&body[from..esc]);
        let c = match bytes[esc + 1] {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            _ => return Some(serde_json::from_str::<String>(raw).map(Cow::Owned)),
        };
        out.push(c);
        from = esc + 2;
        match next_backslash(bytes, from) {
            Some(i) => esc = i,
            None => break,
        }
    }
    out.push_str(&body[from..]);
    Some(Ok(Cow::Owned(out)))
}

/// The first `\\` in `b` at or after `i`, eight bytes at a time: a TSV
/// line's escapes are a few bytes apart, where `memchr`'s setup per call
/// costs more than the scan (route_bench: 252 fewer instructions/msg).
#[cfg(test)]
fn next_backslash(b: &[u8], mut i: usize) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes")) ^ (LO * u64::from(b'\\'));
        // The lowest flagged byte is the first zero byte of `w` (borrows
        // only flag bytes above a real zero).
        let zero = w.wrapping_sub(LO) & !w & HI;
        if zero != 0 {
            return Some(i + (zero.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b.get(i..)?.iter().position(|&c| c == b'\\').map(|p| i + p)
}

/// One JSON value, typed just enough to validate it with a precise message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum JVal<'a> {
    Str(Cow<'a, str>),
    UInt(u64),
    NegInt(i64),
    Float(f64),
    Bool(bool),
    Null,
    Array,
    /// An object of strings (the extras), or the first key whose value was
    /// not a string.
    Object(Result<Extras<'a>, Cow<'a, str>>),
}

impl JVal<'_> {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            JVal::Str(_) => "a string",
            JVal::UInt(_) | JVal::NegInt(_) => "an integer",
            JVal::Float(_) => "a float",
            JVal::Bool(_) => "a boolean",
            JVal::Null => "null",
            JVal::Array => "an array",
            JVal::Object(_) => "an object",
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for JVal<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = JVal<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(JVal::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JVal::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(JVal::Str(Cow::Owned(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(JVal::UInt(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(u64::try_from(v).map_or(JVal::NegInt(v), JVal::UInt))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(JVal::Float(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(JVal::Bool(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(JVal::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(JVal::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(JVal::Array)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::new();
                let mut non_string = None;
                while let Some(CowStr(k)) = map.next_key::<CowStr>()? {
                    match map.next_value::<Scalar>()? {
                        Scalar::Str(v) if non_string.is_none() => pairs.push((k, v)),
                        Scalar::Str(_) => {}
                        _ => {
                            non_string.get_or_insert(k);
                        }
                    }
                }
                Ok(JVal::Object(non_string.map_or(Ok(pairs), Err)))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A leaf we care about (string or unsigned integer); anything else is
/// skipped without building it. Also used for the envelope's kept fields.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar<'a> {
    Str(Cow<'a, str>),
    UInt(u64),
    Other(&'static str),
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Scalar<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Scalar::UInt(v))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Scalar::Other("a negative integer"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Scalar::Other("a float"))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Scalar::Other("a boolean"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Other("null"))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Other("null"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other("an object"))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl Scalar<'_> {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Scalar::Str(_) => "a string",
            Scalar::UInt(_) => "an unsigned integer",
            Scalar::Other(kind) => kind,
        }
    }
}

/// `T` when the value is an object, else `NotObject`, so one odd top-level
/// key (a line's own `"host":"web-1"`, say) does not fail the whole document.
#[derive(Debug)]
pub(crate) enum Obj<T> {
    Obj(T),
    NotObject,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Obj::Obj)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Obj::NotObject)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Obj::NotObject)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Obj::NotObject)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Obj::NotObject)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Obj::NotObject)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Obj::NotObject)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Obj::NotObject)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// The known keys of one object, in the record's column order.
pub(crate) struct Slots<'a, const N: usize> {
    pub(crate) vals: [Option<JVal<'a>>; N],
    /// The first key that occurred twice (a JSON object should not repeat keys,
    /// and silently taking either value would hide a producer bug).
    pub(crate) duplicate: Option<usize>,
}

struct SlotsSeed<const N: usize> {
    names: &'static [&'static str; N],
}

impl<'de, const N: usize> DeserializeSeed<'de> for SlotsSeed<N> {
    type Value = Slots<'de, N>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for SlotsSeed<N> {
    type Value = Slots<'de, N>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut slots = Slots {
            vals: std::array::from_fn(|_| None),
            duplicate: None,
        };
        while let Some(CowStr(key)) = map.next_key::<CowStr>()? {
            match self.names.iter().position(|n| *n == key) {
                Some(i) => {
                    let v = map.next_value::<JVal>()?;
                    if slots.vals[i].replace(v).is_some() {
                        slots.duplicate.get_or_insert(i);
                    }
                }
                // Unknown keys are ignored so producers can add fields first.
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(slots)
    }
}

/// Reads one JSON object (and nothing after it but whitespace) into slots
/// for `names`: by the one-pass scanner (`crate::scan`), or, when it is not
/// sure serde_json would read the text the same way (malformed JSON, say),
/// by serde_json, whose error is the one reported.
pub(crate) fn parse_slots<'a, const N: usize>(
    text: &'a str,
    names: &'static [&'static str; N],
) -> Result<Slots<'a, N>, ParseError> {
    match scan_slots(text, names) {
        Some(slots) => Ok(slots),
        None => parse_slots_serde(text, names),
    }
}

/// [`parse_slots`] by the scanner: the same slots as serde_json's, or `None`.
fn scan_slots<'a, const N: usize>(
    text: &'a str,
    names: &'static [&'static str; N],
) -> Option<Slots<'a, N>> {
    let mut s = Scan::new(text);
    let mut slots = Slots {
        vals: std::array::from_fn(|_| None),
        duplicate: None,
    };
    s.ws();
    s.eat(b'{').ok()?;
    // Writers put the keys in `names` order: the key after the last one
    // found is tried first.
    let mut next = 0;
    s.members(|s, key| {
        let at = match names.get(next) {
            Some(n) if *n == key => Some(next),
            _ => names.iter().position(|n| *n == key),
        };
        let Some(i) = at else {
            // Unknown keys are ignored so producers can add fields first.
            return s.skip_value();
        };
        next = i + 1;
        let v = s.jval()?;
        if slots.vals[i].replace(v).is_some() {
            slots.duplicate.get_or_insert(i);
        }
        Ok(())
    })
    .ok()?;
    s.at_end().then_some(slots)
}

/// [`parse_slots`] by serde_json.
fn parse_slots_serde<'a, const N: usize>(
    text: &'a str,
    names: &'static [&'static str; N],
) -> Result<Slots<'a, N>, ParseError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let slots = SlotsSeed { names }
        .deserialize(&mut de)
        .map_err(|e| invalid_json(text, &e))?;
    de.end().map_err(|e| invalid_json(text, &e))?;
    Ok(slots)
}

/// Maps a serde_json error to `InvalidJson` with a byte offset (serde_json
/// reports a line and a 1-based column of the last byte it read).
pub(crate) fn invalid_json(text: &str, e: &serde_json::Error) -> ParseError {
    let line_start = if e.line() <= 1 {
        0
    } else {
        memchr::memchr_iter(b'\n', text.as_bytes())
            .nth(e.line() - 2)
            .map_or(text.len(), |nl| nl + 1)
    };
    let offset = (line_start + e.column().saturating_sub(1)).min(text.len());
    let mut detail = e.to_string();
    // The position is in `offset` already; drop serde_json's " at line L column C".
    if let Some(at) = detail.rfind(" at line ") {
        detail.truncate(at);
    }
    ParseError::InvalidJson { offset, detail }
}

/// Where the key `"name"` first occurs in `text`: the offset reported for a
/// bad JSON field (serde does not expose value positions, and this is exact
/// unless the same quoted text occurs earlier inside a string value).
pub(crate) fn key_offset(text: &str, name: &str) -> usize {
    let mut pat = String::with_capacity(name.len() + 2);
    pat.push('"');
    pat.push_str(name);
    pat.push('"');
    memchr::memmem::find(text.as_bytes(), pat.as_bytes()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// serde_json's own value of the literal `raw` (what `message` was before).
    fn serde_value(raw: &str) -> Result<String, ()> {
        serde_json::from_str::<String>(raw).map_err(|_| ())
    }

    fn ours(raw: &str) -> Result<String, ()> {
        unescape_str(raw)
            .expect("a string literal")
            .map(Cow::into_owned)
            .map_err(|_| ())
    }

    #[test]
    fn unescape_str_is_serde_json_on_every_escape() {
        for raw in [
            r#""""#,
            r#""plain""#,
            r#""a\tb\tc""#,
            r#""\"\\\/\b\f\n\r\t""#,
            r#""x\u00e9y\t""#,
            r#""\ud83d\ude00""#,
            r#""lone \ud800 surrogate""#,
            r#""\udc00""#,
            r#""end\\""#,
        ] {
            assert_eq!(ours(raw), serde_value(raw), "{raw}");
        }
        assert!(matches!(
            unescape_str(r#""plain""#),
            Some(Ok(Cow::Borrowed("plain")))
        ));
        assert!(unescape_str("12").is_none());
        assert!(unescape_str("null").is_none());
    }

    #[test]
    fn next_backslash_finds_the_first() {
        for len in 0..20 {
            for at in 0..len {
                let mut b = vec![b'a'; len];
                b[at] = b'\\';
                if at + 3 < len {
                    b[at + 3] = b'\\';
                }
                // 0x5d ^ 0x5c = 1: the byte whose borrow could mislead.
                if at > 0 {
                    b[at - 1] = 0x5d;
                }
                for from in 0..=at {
                    assert_eq!(next_backslash(&b, from), Some(at), "{len} {at} {from}");
                }
            }
            assert_eq!(next_backslash(&[b']'; 20][..len], 0), None);
        }
    }

    /// A JSON line of the request type's keys (and others), values of every
    /// kind, now and then malformed.
    fn line() -> impl Strategy<Value = String> {
        use crate::scan::gen::{key_from, object, value, ws};
        let val = prop_oneof![
            3 => value(),
            1 => prop::collection::vec((key_from(&["a", "b", "region"]), value()), 0..4).prop_map(
                |kv| {
                    let kv: Vec<_> = kv.into_iter().map(|(k, v)| (k, "", "", v)).collect();
                    object(kv, 9)
                }
            ),
        ];
        (
            prop::collection::vec((key_from(&crate::Request::FIELDS), ws(), ws(), val), 0..16),
            0..40u8,
            ws(),
        )
            .prop_map(|(members, odd, after)| format!("{}{after}", object(members, odd)))
    }

    fn slots_eq<const N: usize>(a: &Slots<'_, N>, b: &Slots<'_, N>) -> bool {
        a.vals == b.vals && a.duplicate == b.duplicate
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// The scanner reads every line serde_json reads, to the same slots,
        /// and takes none that serde_json rejects.
        #[test]
        fn scan_slots_is_serde_json(text in line()) {
            let names = &crate::Request::FIELDS;
            match (scan_slots(&text, names), parse_slots_serde(&text, names)) {
                (Some(a), Ok(b)) => prop_assert!(slots_eq(&a, &b), "{}", text),
                (None, Err(_)) => {}
                (a, b) => prop_assert!(false, "{} scan {:?} serde {:?}", text, a.is_some(), b.is_ok()),
            }
        }

        /// Cut anywhere: the same.
        #[test]
        fn scan_slots_is_serde_json_on_truncated_lines(
            text in line(),
            at in any::<prop::sample::Index>(),
        ) {
            let names = &crate::Request::FIELDS;
            let mut i = at.index(text.len() + 1);
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            let text = &text[..i];
            match (scan_slots(text, names), parse_slots_serde(text, names)) {
                (Some(a), Ok(b)) => prop_assert!(slots_eq(&a, &b), "{}", text),
                (None, Err(_)) => {}
                (a, b) => prop_assert!(false, "{} scan {:?} serde {:?}", text, a.is_some(), b.is_ok()),
            }
        }
    }

    proptest! {
        #[test]
        fn unescape_str_roundtrips_any_string(s in any::<String>()) {
            let raw = serde_json::to_string(&s).unwrap();
            prop_assert_eq!(ours(&raw), Ok(s));
        }
    }
}
