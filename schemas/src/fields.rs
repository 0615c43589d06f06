//! Typed field access shared by the TSV and JSON forms.
//!
//! Each record's parser is written once against [`Source`]; the two forms
//! differ only in how a field's raw value is found and what "wrong type" means.
//! All validation rules of the README's "Common rules" live here.

use std::borrow::Cow;

use crate::json::{self, JVal, Slots};
use crate::tsv::{self, Field};
use crate::{time, Extras, ParseError};

/// Ids longer than this are rejected: they are ClickHouse keys and a huge id
/// is a producer bug, not data.
pub const MAX_ID_LEN: usize = 128;

/// Unsigned integer column types and how an overflow is described.
pub(crate) trait UInt: TryFrom<u64> {
    const RANGE: &'static str;
}
impl UInt for u16 {
    const RANGE: &'static str = "out of range for u16";
}
impl UInt for u32 {
    const RANGE: &'static str = "out of range for u32";
}
impl UInt for u64 {
    const RANGE: &'static str = "out of range for u64";
}

/// Typed access to field `i` (index into the record's `FIELDS`).
pub(crate) trait Source<'a> {
    /// A non-empty id.
    fn id(&mut self, i: usize) -> Result<Cow<'a, str>, ParseError>;
    /// An id that may be empty (`parent_span_id`, `caller`).
    fn id_or_empty(&mut self, i: usize) -> Result<Cow<'a, str>, ParseError>;
    fn uint<T: UInt>(&mut self, i: usize) -> Result<T, ParseError>;
    fn int(&mut self, i: usize) -> Result<i64, ParseError>;
    fn float(&mut self, i: usize) -> Result<f64, ParseError>;
    fn time(&mut self, i: usize) -> Result<i64, ParseError>;
    fn extras(&mut self, i: usize) -> Result<Extras<'a>, ParseError>;
    /// An error for a rule spanning fields, reported on field `i`.
    fn bad(&self, i: usize, detail: String) -> ParseError;
}

/// A line after the form was decided.
pub(crate) enum Form<'a> {
    Tsv(&'a str),
    Json(&'a str),
}

/// Trims the line end, rejects an empty line and picks the form by the first byte.
pub(crate) fn classify(line: &str) -> Result<Form<'_>, ParseError> {
    let line = tsv::trim_line_end(line);
    if line.trim_start().is_empty() {
        return Err(ParseError::Empty);
    }
    Ok(if line.starts_with('{') {
        Form::Json(line)
    } else {
        Form::Tsv(line)
    })
}

// ---- validation shared by both forms ----

fn check_id(s: &str, allow_empty: bool) -> Result<(), &'static str> {
    if s.is_empty() {
        return if allow_empty { Ok(()) } else { Err("empty") };
    }
    if s.len() > MAX_ID_LEN {
        return Err("longer than 128 bytes");
    }
    // The common case, printable ASCII, in one pass without an early exit
    // (ids are at most 128 bytes): it vectorizes, where `any` went byte by
    // byte (route_bench: ~600 fewer instructions/msg).
    let printable_ascii = s
        .bytes()
        .fold(true, |ok, b| ok & (b >= 0x20) & (b != 0x7f) & (b < 0x80));
    let control = !printable_ascii
        && (s.bytes().any(|b| b < 0x20 || b == 0x7f)
            || (!s.is_ascii() && s.chars().any(char::is_control)));
    if control {
        return Err("contains a control character");
    }
    Ok(())
}

fn parse_u64(s: &str) -> Result<u64, &'static str> {
    if s.is_empty() {
        return Err("empty (expected an unsigned integer)");
    }
    let mut v: u64 = 0;
    for b in s.bytes() {
        if !b.is_ascii_digit() {
            return Err(if b == b'-' {
                "negative"
            } else {
                "not an unsigned decimal integer"
            });
        }
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or("out of range for u64")?;
    }
    Ok(v)
}

fn parse_i64(s: &str) -> Result<i64, &'static str> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a decimal integer");
    }
    let mut v: i64 = 0;
    for b in digits.bytes() {
        let d = i64::from(b - b'0');
        v = v
            .checked_mul(10)
            .and_then(|v| {
                if neg {
                    v.checked_sub(d)
                } else {
                    v.checked_add(d)
                }
            })
            .ok_or("out of range for i64")?;
    }
    Ok(v)
}

/// `digits [. digits] [(e|E) [+-] digits]`: what the writers produce and what
/// C++/Java printf-style formatting gives; rejects `inf`, `NaN`, hex, signs.
fn parse_f64(s: &str) -> Result<f64, &'static str> {
    let b = s.as_bytes();
    if b.first() == Some(&b'-') {
        return Err("negative");
    }
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    let mut ok = digits(&mut i);
    if ok && b.get(i) == Some(&b'.') {
        i += 1;
        ok = digits(&mut i);
    }
    if ok && matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        ok = digits(&mut i);
    }
    if !ok || i != b.len() {
        return Err("not a finite decimal number");
    }
    let v: f64 = s.parse().map_err(|_| "not a finite decimal number")?;
    check_f64(v)
}

fn check_f64(v: f64) -> Result<f64, &'static str> {
    if !v.is_finite() {
        Err("not finite")
    } else if v < 0.0 || v.is_sign_negative() {
        Err("negative")
    } else {
        Ok(v)
    }
}

fn check_time_ms(v: u64) -> Result<i64, &'static str> {
    i64::try_from(v)
        .ok()
        .filter(|v| (time::MIN_MS..=time::MAX_MS).contains(v))
        .ok_or("epoch milliseconds outside years 1970–2999")
}

// ---- TSV ----

/// The fields of one TSV line.
pub(crate) struct TsvSource<'a, const N: usize> {
    names: &'static [&'static str; N],
    fields: [Field<'a>; N],
    /// Whether the line has a backslash: when not, no field is unescaped.
    escapes: bool,
}

impl<'a, const N: usize> TsvSource<'a, N> {
    pub(crate) fn split(
        line: &'a str,
        names: &'static [&'static str; N],
    ) -> Result<Self, ParseError> {
        let (fields, escapes) = tsv::split_fields_escaped::<N>(line)?;
        Ok(TsvSource {
            names,
            fields,
            escapes,
        })
    }

    fn err(&self, i: usize, at: usize, detail: impl Into<String>) -> ParseError {
        ParseError::BadField {
            field: self.names[i],
            offset: self.fields[i].0 + at,
            detail: detail.into(),
        }
    }

    fn unescaped(&self, i: usize, raw: &'a str) -> Result<Cow<'a, str>, ParseError> {
        if !self.escapes {
            return Ok(Cow::Borrowed(raw));
        }
        tsv::unescape(raw).map_err(|(at, d)| self.err(i, at, d))
    }

    fn id_impl(&self, i: usize, allow_empty: bool) -> Result<Cow<'a, str>, ParseError> {
        let s = self.unescaped(i, self.fields[i].1)?;
        check_id(&s, allow_empty).map_err(|d| self.err(i, 0, d))?;
        Ok(s)
    }
}

impl<'a, const N: usize> Source<'a> for TsvSource<'a, N> {
    fn id(&mut self, i: usize) -> Result<Cow<'a, str>, ParseError> {
        self.id_impl(i, false)
    }

    fn id_or_empty(&mut self, i: usize) -> Result<Cow<'a, str>, ParseError> {
        self.id_impl(i, true)
    }

    fn uint<T: UInt>(&mut self, i: usize) -> Result<T, ParseError> {
        let v = parse_u64(self.fields[i].1).map_err(|d| self.err(i, 0, d))?;
        T::try_from(v).map_err(|_| self.err(i, 0, T::RANGE))
    }

    fn int(&mut self, i: usize) -> Result<i64, ParseError> {
        parse_i64(self.fields[i].1).map_err(|d| self.err(i, 0, d))
    }

    fn float(&mut self, i: usize) -> Result<f64, ParseError> {
        parse_f64(self.fields[i].1).map_err(|d| self.err(i, 0, d))
    }

    fn time(&mut self, i: usize) -> Result<i64, ParseError> {
        time::parse_ms(self.fields[i].1).map_err(|d| self.err(i, 0, d))
    }

    /// Splits on the raw `&` and `=` first and unescapes each piece, so pieces
    /// without escapes stay borrowed (escapes never produce `&` or `=`).
    fn extras(&mut self, i: usize) -> Result<Extras<'a>, ParseError> {
        let raw = self.fields[i].1;
        let mut out = Vec::new();
        if raw.is_empty() {
            return Ok(out);
        }
        // `&`-separated pairs found byte by byte: extras are a few dozen
        // bytes, where `split` and a `memchr` per pair cost more in setup.
        let bytes = raw.as_bytes();
        let mut at = 0;
        loop {
            let end = bytes[at..]
                .iter()
                .position(|&c| c == b'&')
                .map_or(bytes.len(), |p| at + p);
            let pair = &raw[at..end];
            let Some(eq) = pair.bytes().position(|c| c == b'=') else {
                return Err(self.err(i, at, "expected key=value"));
            };
            if eq == 0 {
                return Err(self.err(i, at, "empty key"));
            }
            let (k, v) = (&pair[..eq], &pair[eq + 1..]);
            if self.escapes {
                let k = tsv::unescape(k).map_err(|(p, d)| self.err(i, at + p, d))?;
                let v = tsv::unescape(v).map_err(|(p, d)| self.err(i, at + eq + 1 + p, d))?;
                out.push((k, v));
            } else {
                out.push((Cow::Borrowed(k), Cow::Borrowed(v)));
            }
            if end == bytes.len() {
                return Ok(out);
            }
            at = end + 1;
        }
    }

    fn bad(&self, i: usize, detail: String) -> ParseError {
        self.err(i, 0, detail)
    }
}

// ---- JSON ----

/// The known keys of one JSON line.
pub(crate) struct JsonSource<'a, const N: usize> {
    text: &'a str,
    names: &'static [&'static str; N],
    vals: [Option<JVal<'a>>; N],
}

impl<'a, const N: usize> JsonSource<'a, N> {
    pub(crate) fn parse(
        text: &'a str,
        names: &'static [&'static str; N],
    ) -> Result<Self, ParseError> {
        let Slots { vals, duplicate } = json::parse_slots(text, names)?;
        let src = JsonSource { text, names, vals };
        match duplicate {
            Some(i) => Err(src.err(i, "duplicate key".into())),
            None => Ok(src),
        }
    }

    fn err(&self, i: usize, detail: String) -> ParseError {
        ParseError::BadField {
            field: self.names[i],
            offset: json::key_offset(self.text, self.names[i]),
            detail,
        }
    }

    fn take(&mut self, i: usize) -> Result<JVal<'a>, ParseError> {
        self.vals[i].take().ok_or(ParseError::MissingField {
            field: self.names[i],
        })
    }

    fn wrong_type(&self, i: usize, expected: &str, got: &JVal<'_>) -> ParseError {
        self.err(i, format!("expected {expected}, found {}", got.kind()))
    }

    fn id_impl(&mut self, i: usize, allow_empty: bool) -> Result<Cow<'a, str>, ParseError> {
        match self.take(i)? {
            JVal::Str(s) => {
                check_id(&s, allow_empty).map_err(|d| self.err(i, d.into()))?;
                Ok(s)
            }
            other => Err(self.wrong_type(i, "a string", &other)),
        }
    }
}

impl<'a, const N: usize> Source<'a> for JsonSource<'a, N> {
    fn id(&mut self, i: usize) -> Result<Cow<'a, str>, ParseError> {
        self.id_impl(i, false)
    }

    fn id_or_empty(&mut self, i: usize) -> Result<Cow<'a, str>, ParseError> {
        self.id_impl(i, true)
    }

    fn uint<T: UInt>(&mut self, i: usize) -> Result<T, ParseError> {
        match self.take(i)? {
            JVal::UInt(v) => T::try_from(v).map_err(|_| self.err(i, T::RANGE.into())),
            JVal::NegInt(_) => Err(self.err(i, "negative".into())),
            other => Err(self.wrong_type(i, "an unsigned integer", &other)),
        }
    }

    fn int(&mut self, i: usize) -> Result<i64, ParseError> {
        match self.take(i)? {
            JVal::UInt(v) => {
                i64::try_from(v).map_err(|_| self.err(i, "out of range for i64".into()))
            }
            JVal::NegInt(v) => Ok(v),
            other => Err(self.wrong_type(i, "an integer", &other)),
        }
    }

    fn float(&mut self, i: usize) -> Result<f64, ParseError> {
        let v = match self.take(i)? {
            // Integers are exact in f64 up to 2^53, far beyond any price or latency.
            JVal::UInt(v) => v as f64,
            JVal::NegInt(_) => return Err(self.err(i, "negative".into())),
            JVal::Float(v) => v,
            other => return Err(self.wrong_type(i, "a number", &other)),
        };
        check_f64(v).map_err(|d| self.err(i, d.into()))
    }

    fn time(&mut self, i: usize) -> Result<i64, ParseError> {
        match self.take(i)? {
            JVal::Str(s) => time::parse_ms(&s).map_err(|d| self.err(i, d.into())),
            JVal::UInt(v) => check_time_ms(v).map_err(|d| self.err(i, d.into())),
            JVal::NegInt(_) => Err(self.err(i, "epoch milliseconds before 1970".into())),
            other => Err(self.wrong_type(i, "a time string or epoch milliseconds", &other)),
        }
    }

    /// A missing or `null` `extra` is no extras: unlike TSV, JSON has no
    /// column position to keep.
    fn extras(&mut self, i: usize) -> Result<Extras<'a>, ParseError> {
        match self.vals[i].take() {
            None | Some(JVal::Null) => Ok(Vec::new()),
            Some(JVal::Object(Ok(pairs))) => {
                if pairs.iter().any(|(k, _)| k.is_empty()) {
                    return Err(self.err(i, "empty key".into()));
                }
                Ok(pairs)
            }
            Some(JVal::Object(Err(key))) => {
                Err(self.err(i, format!("value of key {key:?} is not a string")))
            }
            Some(other) => Err(self.wrong_type(i, "an object of strings", &other)),
        }
    }

    fn bad(&self, i: usize, detail: String) -> ParseError {
        self.err(i, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `extras` as it was (`split` on `&`, `memchr` for `=`, every piece
    /// unescaped).
    fn extras_reference<'a>(
        src: &TsvSource<'a, 1>,
        raw: &'a str,
    ) -> Result<Extras<'a>, ParseError> {
        let mut out = Vec::new();
        if raw.is_empty() {
            return Ok(out);
        }
        let mut at = 0;
        for pair in raw.split('&') {
            let Some(eq) = memchr::memchr(b'=', pair.as_bytes()) else {
                return Err(src.err(0, at, "expected key=value"));
            };
            if eq == 0 {
                return Err(src.err(0, at, "empty key"));
            }
            let k = tsv::unescape(&pair[..eq]).map_err(|(p, d)| src.err(0, at + p, d))?;
            let v =
                tsv::unescape(&pair[eq + 1..]).map_err(|(p, d)| src.err(0, at + eq + 1 + p, d))?;
            out.push((k, v));
            at += pair.len() + 1;
        }
        Ok(out)
    }

    /// Every string of `&`, `=`, backslashes and others up to 6 long: the
    /// same pairs (borrowed alike) or the same error as before.
    #[test]
    fn extras_are_the_split_memchr_ones() {
        let alphabet = ["a", "&", "=", "\\", "t", "é"];
        let mut lines = vec![String::new()];
        let mut last = lines.clone();
        for _ in 0..6 {
            last = last
                .iter()
                .flat_map(|l| alphabet.iter().map(move |c| format!("{l}{c}")))
                .collect();
            lines.extend(last.iter().cloned());
        }
        for raw in &lines {
            let mut src = TsvSource::<1>::split(raw, &["extra"]).unwrap();
            let want = extras_reference(&src, raw);
            let got = src.extras(0);
            assert_eq!(got, want, "{raw:?}");
            if let (Ok(a), Ok(b)) = (&got, &want) {
                for ((ka, va), (kb, vb)) in a.iter().zip(b) {
                    assert_eq!(
                        (
                            matches!(ka, Cow::Borrowed(_)),
                            matches!(va, Cow::Borrowed(_))
                        ),
                        (
                            matches!(kb, Cow::Borrowed(_)),
                            matches!(vb, Cow::Borrowed(_))
                        ),
                        "{raw:?}"
                    );
                }
            }
        }
    }

    /// The ASCII fast path and the slow path agree on every kind of byte.
    #[test]
    fn check_id_control_characters() {
        let ctl = Err("contains a control character");
        for (id, want) in [
            ("4bf92f3577b34da6a3ce929d0e0e4736", Ok(())),
            ("ad-gateway ~", Ok(())),
            ("caf\u{e9}", Ok(())),
            ("a\u{1}b", ctl),
            ("a\u{7f}", ctl),
            ("\u{1f}", ctl),
            ("caf\u{e9}\u{85}", ctl),
            ("\u{9f}x", ctl),
        ] {
            assert_eq!(check_id(id, false), want, "{id:?}");
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u64("0"), Ok(0));
        assert_eq!(parse_u64("18446744073709551615"), Ok(u64::MAX));
        assert!(parse_u64("18446744073709551616").is_err());
        assert!(parse_u64("+1").is_err());
        assert!(parse_u64(" 1").is_err());
        assert_eq!(parse_i64("-9223372036854775808"), Ok(i64::MIN));
        assert!(parse_i64("9223372036854775808").is_err());
        assert!(parse_i64("-").is_err());
        for (s, v) in [
            ("12", 12.0),
            ("12.75", 12.75),
            ("1e+20", 1e20),
            ("1.5E-7", 1.5e-7),
        ] {
            assert_eq!(parse_f64(s), Ok(v));
        }
        for s in [
            "", ".5", "5.", "1e", "NaN", "inf", "-1", "-0.0", "1e400", "0x10", "1_0", "+1",
        ] {
            assert!(parse_f64(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn ids() {
        assert!(check_id("a", false).is_ok());
        assert!(check_id("", true).is_ok());
        assert!(check_id("", false).is_err());
        assert!(check_id(&"x".repeat(128), false).is_ok());
        assert!(check_id(&"x".repeat(129), false).is_err());
        assert!(check_id("a\u{7f}", false).is_err());
        assert!(check_id("a\u{85}", false).is_err());
        assert!(check_id("a b/é", false).is_ok());
    }
}
