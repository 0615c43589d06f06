//! A one-pass JSON scanner for the hot path's documents: the values a
//! caller keeps are read, everything else is only validated and skipped.
//!
//! It accepts exactly what serde_json accepts where the callers used serde
//! before (the Filebeat envelope, `envelope/scan.rs`; a JSON line's known
//! keys, `json::parse_slots`), and reads the same values:
//! - strict JSON (no trailing commas, JSON whitespace only, valid escapes, no
//!   raw control characters in strings, RFC 8259 numbers);
//! - a string that is kept, and every key of an object that is visited, is
//!   *parsed*: a `\u` escape must not be a lone surrogate (serde_json's
//!   `parse_str`). Skipped values only need syntactically valid escapes, at
//!   any depth, without recursion (serde_json's `ignore_value`);
//! - a number that is kept is parsed: a plain unsigned integer here, anything
//!   else by serde_json itself (its float range check, its integer/float
//!   split, its float rounding).
//!
//! [`Invalid`] means only "not what serde_json would take the same way": the
//! callers then do what they did on a serde_json error (or ask serde_json).

use std::borrow::Cow;

use crate::json::{JVal, Scalar};

/// Not a document serde_json would decode the same way.
#[derive(Debug)]
pub(crate) struct Invalid;

pub(crate) type R<T> = Result<T, Invalid>;

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// The high bit of the bytes of `w` that are `"`, `\\` or a control
/// character; only the lowest flagged byte is sure to be one (a borrow only
/// flags bytes above a real match, so each term's lowest flag is real, and
/// so is the lowest of their union).
#[inline(always)]
fn special_mask(w: u64) -> u64 {
    let q = w ^ (LO * u64::from(b'"'));
    let bs = w ^ (LO * u64::from(b'\\'));
    ((q.wrapping_sub(LO) & !q) | (bs.wrapping_sub(LO) & !bs) | (w.wrapping_sub(LO * 0x20) & !w))
        & HI
}

/// The first `"`, `\\` or control character in `b` at or after `i`, or
/// `b.len()`, eight bytes at a time (a TSV line's escapes are a few bytes
/// apart: a `memchr` per run costs more in setup than this scan).
#[inline(always)]
fn special(b: &[u8], mut i: usize) -> usize {
    while let Some(chunk) = b.get(i..i + 8) {
        let m = special_mask(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && !matches!(b[i], b'"' | b'\\' | 0..=0x1f) {
        i += 1;
    }
    i
}

/// Appends `b[i..]` up to its first special byte (as [`special`]) to `out`
/// and returns that byte's index. Stores whole chunks and takes back the
/// bytes after the special one: `out` must have room for eight more bytes
/// than it keeps.
#[inline(always)]
fn copy_to_special(b: &[u8], mut i: usize, out: &mut Vec<u8>) -> usize {
    while let Some(chunk) = b.get(i..i + 8) {
        let chunk: [u8; 8] = chunk.try_into().expect("8 bytes");
        let m = special_mask(u64::from_le_bytes(chunk));
        out.extend_from_slice(&chunk);
        if m != 0 {
            let k = (m.trailing_zeros() / 8) as usize;
            out.truncate(out.len() - 8 + k);
            return i + k;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if matches!(c, b'"' | b'\\' | 0..=0x1f) {
            break;
        }
        out.push(c);
        i += 1;
    }
    i
}

/// The value of four hex digits at `b[i..i + 4]`.
#[inline]
fn hex4(b: &[u8], i: usize) -> R<u16> {
    let d = b.get(i..i + 4).ok_or(Invalid)?;
    let mut n = 0u16;
    for &c in d {
        let v = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return Err(Invalid),
        };
        n = n << 4 | u16::from(v);
    }
    Ok(n)
}

/// Open arrays and objects of a skipped value (a bit each, 1 = object): no
/// depth limit, like serde_json's `ignore_value`, and no allocation below
/// 64 levels.
struct Stack {
    top: u64,
    spill: Vec<u64>,
    depth: usize,
}

impl Stack {
    fn push(&mut self, object: bool) {
        if self.depth > 0 && self.depth.is_multiple_of(64) {
            self.spill.push(self.top);
            self.top = 0;
        }
        self.top = self.top << 1 | u64::from(object);
        self.depth += 1;
    }
    fn object(&self) -> bool {
        self.top & 1 == 1
    }
    fn pop(&mut self) {
        self.top >>= 1;
        self.depth -= 1;
        if self.depth > 0 && self.depth.is_multiple_of(64) {
            self.top = self.spill.pop().expect("spilled level");
        }
    }
}

pub(crate) struct Scan<'a> {
    pub(crate) s: &'a str,
    pub(crate) b: &'a [u8],
    pub(crate) i: usize,
}

impl<'a> Scan<'a> {
    pub(crate) fn new(s: &'a str) -> Self {
        Scan {
            s,
            b: s.as_bytes(),
            i: 0,
        }
    }

    /// Whether only whitespace is left.
    pub(crate) fn at_end(&mut self) -> bool {
        self.ws();
        self.i == self.b.len()
    }

    #[inline(always)]
    pub(crate) fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    #[inline]
    pub(crate) fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    pub(crate) fn eat(&mut self, c: u8) -> R<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    pub(crate) fn literal(&mut self, lit: &[u8]) -> R<()> {
        if self.b[self.i..].starts_with(lit) {
            self.i += lit.len();
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    /// A string's value (its opening quote consumed), surrogates checked as
    /// serde_json's `parse_str` does; borrowed when it has no escape.
    #[inline(always)]
    pub(crate) fn string(&mut self) -> R<Cow<'a, str>> {
        let start = self.i;
        let j = special(self.b, start);
        if self.b.get(j) == Some(&b'"') {
            self.i = j + 1;
            return Ok(Cow::Borrowed(&self.s[start..j]));
        }
        self.unescape(start, j)
    }

    /// The rest of [`Self::string`] from its first special byte `b[j]`: the
    /// value is copied eight bytes at a time while the next special byte is
    /// looked for (one store per chunk instead of a `memcpy` per run between
    /// escapes, a TSV line's tabs being a few bytes apart).
    #[inline(never)]
    fn unescape(&mut self, start: usize, mut j: usize) -> R<Cow<'a, str>> {
        let b = self.b;
        // Never more than the rest of the document (escapes only shrink, and
        // a chunk is stored only where eight more input bytes exist): one
        // allocation.
        let mut out: Vec<u8> = Vec::with_capacity(b.len() - start);
        out.extend_from_slice(&b[start..j]);
        loop {
            match b.get(j) {
                Some(b'"') => break,
                Some(b'\\') => {}
                _ => return Err(Invalid),
            }
            let c = match b.get(j + 1) {
                Some(b'"') => b'"',
                Some(b'\\') => b'\\',
                Some(b'/') => b'/',
                Some(b'b') => 0x08,
                Some(b'f') => 0x0c,
                Some(b'n') => b'\n',
                Some(b'r') => b'\r',
                Some(b't') => b'\t',
                Some(b'u') => {
                    let (c, len) = self.unicode(j + 2)?;
                    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                    j += 2 + len;
                    j = copy_to_special(b, j, &mut out);
                    continue;
                }
                _ => return Err(Invalid),
            };
            out.push(c);
            j = copy_to_special(b, j + 2, &mut out);
        }
        self.i = j + 1;
        // Valid UTF-8: runs of a `str` cut at ASCII bytes, and whole chars.
        String::from_utf8(out).map(Cow::Owned).map_err(|_| Invalid)
    }

    /// The character of the `\u` escape whose hex digits start at `i` and
    /// the bytes it took after the `\u`: a surrogate must be a leading one
    /// followed by `\u` and a trailing one (serde_json with validation).
    #[cold]
    fn unicode(&self, i: usize) -> R<(char, usize)> {
        let b = self.b;
        let n = hex4(b, i)?;
        match n {
            0xDC00..=0xDFFF => Err(Invalid),
            0xD800..=0xDBFF => {
                if b.get(i + 4..i + 6) != Some(b"\\u") {
                    return Err(Invalid);
                }
                let n2 = hex4(b, i + 6)?;
                if !(0xDC00..=0xDFFF).contains(&n2) {
                    return Err(Invalid);
                }
                let c = ((u32::from(n) - 0xD800) << 10 | (u32::from(n2) - 0xDC00)) + 0x1_0000;
                Ok((char::from_u32(c).ok_or(Invalid)?, 10))
            }
            _ => Ok((char::from_u32(u32::from(n)).ok_or(Invalid)?, 4)),
        }
    }

    /// Skips a string (its opening quote consumed): escapes checked for
    /// syntax only (serde_json's `ignore_str`).
    #[inline(always)]
    pub(crate) fn skip_string(&mut self) -> R<()> {
        let j = special(self.b, self.i);
        if self.b.get(j) == Some(&b'"') {
            self.i = j + 1;
            return Ok(());
        }
        self.skip_escaped(j)
    }

    /// The rest of [`Self::skip_string`] from its first special byte.
    #[inline(never)]
    fn skip_escaped(&mut self, mut j: usize) -> R<()> {
        let b = self.b;
        loop {
            match b.get(j) {
                Some(b'"') => {
                    self.i = j + 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    match b.get(j + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => j += 2,
                        Some(b'u') => {
                            hex4(b, j + 2)?;
                            j += 6;
                        }
                        _ => return Err(Invalid),
                    }
                    j = special(b, j);
                }
                _ => return Err(Invalid),
            }
        }
    }

    /// Skips a number, checking its grammar only.
    pub(crate) fn skip_number(&mut self) -> R<()> {
        let b = self.b;
        let mut i = self.i;
        let digits = |mut i: usize| {
            while let Some(b'0'..=b'9') = b.get(i) {
                i += 1;
            }
            i
        };
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => i = digits(i + 1),
            _ => return Err(Invalid),
        }
        if b.get(i) == Some(&b'.') {
            let j = digits(i + 1);
            if j == i + 1 {
                return Err(Invalid);
            }
            i = j;
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            let j = digits(i);
            if j == i {
                return Err(Invalid);
            }
            i = j;
        }
        self.i = i;
        Ok(())
    }

    /// A number where a kept value belongs, as serde_json types it: a plain
    /// unsigned integer here, anything else by serde_json itself (its float
    /// range check and its integer/float split).
    pub(crate) fn number(&mut self) -> R<Scalar<'a>> {
        if let Some(v) = self.plain_uint() {
            return Ok(Scalar::UInt(v));
        }
        self.by_serde()
    }

    /// A number of at most 19 digits, no sign, fraction or exponent (it fits
    /// a `u64`), consumed; otherwise nothing is.
    #[inline(always)]
    fn plain_uint(&mut self) -> Option<u64> {
        let b = self.b;
        let start = self.i;
        let mut i = start;
        let mut v = 0u64;
        while let Some(&d @ b'0'..=b'9') = b.get(i) {
            v = v.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
            i += 1;
        }
        let n = i - start;
        let plain = (1..=19).contains(&n)
            && (n == 1 || b[start] != b'0')
            && !matches!(b.get(i), Some(b'.' | b'e' | b'E'));
        plain.then(|| {
            self.i = i;
            v
        })
    }

    /// The number at `i` as serde_json's `T` (its grammar checked here first).
    fn by_serde<T: serde::Deserialize<'a>>(&mut self) -> R<T> {
        let start = self.i;
        self.skip_number()?;
        serde_json::from_str::<T>(&self.s[start..self.i]).map_err(|_| Invalid)
    }

    /// Skips any value (leading whitespace included), validating it as
    /// serde_json's `ignore_value` does.
    pub(crate) fn skip_value(&mut self) -> R<()> {
        let mut stack = Stack {
            top: 0,
            spill: Vec::new(),
            depth: 0,
        };
        loop {
            // A value is expected here.
            self.ws();
            match self.peek().ok_or(Invalid)? {
                b'"' => {
                    self.i += 1;
                    self.skip_string()?;
                }
                b'-' | b'0'..=b'9' => self.skip_number()?,
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'[' => {
                    self.i += 1;
                    self.ws();
                    if self.peek() == Some(b']') {
                        self.i += 1;
                    } else {
                        stack.push(false);
                        continue;
                    }
                }
                b'{' => {
                    self.i += 1;
                    self.ws();
                    if self.peek() == Some(b'}') {
                        self.i += 1;
                    } else {
                        stack.push(true);
                        self.skip_key()?;
                        continue;
                    }
                }
                _ => return Err(Invalid),
            }
            // After a value: close containers until one wants another value.
            loop {
                if stack.depth == 0 {
                    return Ok(());
                }
                self.ws();
                let object = stack.object();
                match self.peek() {
                    Some(b',') => {
                        self.i += 1;
                        if object {
                            self.ws();
                            self.skip_key()?;
                        }
                        break;
                    }
                    Some(b'}') if object => {
                        self.i += 1;
                        stack.pop();
                    }
                    Some(b']') if !object => {
                        self.i += 1;
                        stack.pop();
                    }
                    _ => return Err(Invalid),
                }
            }
        }
    }

    /// A skipped object's key and its colon.
    pub(crate) fn skip_key(&mut self) -> R<()> {
        self.eat(b'"')?;
        self.skip_string()?;
        self.ws();
        self.eat(b':')
    }

    /// The members of an object whose `{` was consumed: each key parsed (a
    /// visited object's keys are serde_json-parsed), `f` reads its value
    /// (whitespace before it skipped).
    #[inline]
    pub(crate) fn members(&mut self, mut f: impl FnMut(&mut Self, Cow<'a, str>) -> R<()>) -> R<()> {
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.eat(b'"')?;
            let key = self.string()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            f(self, key)?;
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(Invalid),
            }
        }
    }

    /// A JSON line's kept value, as [`JVal`]'s serde impl reads it.
    pub(crate) fn jval(&mut self) -> R<JVal<'a>> {
        Ok(match self.peek().ok_or(Invalid)? {
            b'"' => {
                self.i += 1;
                JVal::Str(self.string()?)
            }
            b'-' | b'0'..=b'9' => match self.plain_uint() {
                Some(v) => JVal::UInt(v),
                None => self.by_serde()?,
            },
            b't' => {
                self.literal(b"true")?;
                JVal::Bool(true)
            }
            b'f' => {
                self.literal(b"false")?;
                JVal::Bool(false)
            }
            b'n' => {
                self.literal(b"null")?;
                JVal::Null
            }
            b'[' => {
                self.skip_value()?;
                JVal::Array
            }
            b'{' => {
                self.i += 1;
                let mut pairs = Vec::new();
                let mut non_string = None;
                self.members(|s, k| {
                    match s.scalar()? {
                        Some(Scalar::Str(v)) if non_string.is_none() => pairs.push((k, v)),
                        Some(Scalar::Str(_)) => {}
                        _ => {
                            non_string.get_or_insert(k);
                        }
                    }
                    Ok(())
                })?;
                JVal::Object(non_string.map_or(Ok(pairs), Err))
            }
            _ => return Err(Invalid),
        })
    }

    /// A kept leaf (`Option<Scalar>` in serde): `null` is `None`.
    pub(crate) fn scalar(&mut self) -> R<Option<Scalar<'a>>> {
        Ok(Some(match self.peek().ok_or(Invalid)? {
            b'"' => {
                self.i += 1;
                Scalar::Str(self.string()?)
            }
            b'-' | b'0'..=b'9' => self.number()?,
            b'n' => {
                self.literal(b"null")?;
                return Ok(None);
            }
            b't' => {
                self.literal(b"true")?;
                Scalar::Other("a boolean")
            }
            b'f' => {
                self.literal(b"false")?;
                Scalar::Other("a boolean")
            }
            b'[' => {
                self.skip_value()?;
                Scalar::Other("an array")
            }
            b'{' => {
                self.i += 1;
                self.members(|s, _| s.skip_value())?;
                Scalar::Other("an object")
            }
            _ => return Err(Invalid),
        }))
    }
}

/// Strategies for JSON text as producers write it, and now and then as
/// they should not (for the equivalence tests with serde_json).
#[cfg(test)]
pub(crate) mod gen {
    use proptest::prelude::*;

    /// Whitespace JSON allows, and some it does not.
    pub(crate) fn ws() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            200 => Just(""),
            40 => Just(" "),
            20 => Just("\t"),
            20 => Just("\n"),
            20 => Just("\r\n "),
            1 => Just("\x0c"),
            1 => Just("\u{a0}"),
        ]
    }

    /// One character of a JSON string, written one of the ways JSON allows
    /// (or, now and then, a way it does not).
    pub(crate) fn string_piece() -> impl Strategy<Value = String> {
        let ch = prop_oneof![
            Just('a'),
            Just('\t'),
            Just('"'),
            Just('\\'),
            Just('/'),
            Just('\n'),
            Just('\u{1}'),
            Just('\u{7f}'),
            Just('é'),
            Just('😀'),
            any::<char>(),
        ];
        prop_oneof![
            60 => "[a-z0-9 ]{1,12}",
            60 => (ch, 0..40u8).prop_map(|(c, how)| {
                let json = serde_json::to_string(&c.to_string()).unwrap();
                let short = json[1..json.len() - 1].to_string();
                let mut utf16 = [0u16; 2];
                let units = c.encode_utf16(&mut utf16);
                let u = |upper: bool| {
                    units
                        .iter()
                        .map(|n| if upper { format!("\\u{n:04X}") } else { format!("\\u{n:04x}") })
                        .collect::<String>()
                };
                match how {
                    0 => short,
                    1 => u(false),
                    2 => u(true),
                    // Raw, even where JSON needs an escape.
                    3 => c.to_string(),
                    _ if c < ' ' || c == '"' || c == '\\' => short,
                    _ => c.to_string(),
                }
            }),
            1 => prop_oneof![
                Just(r"\ud800".to_string()),
                Just(r"\udfff".to_string()),
                Just(r"\ud83d\u0041".to_string()),
                Just(r"\ud83d\ud83d".to_string()),
                Just(r"\ud83d\n".to_string()),
                Just(r"\ud83d".to_string()),
                Just(r"\x".to_string()),
                Just(r"\u00".to_string()),
                Just(r"\u00g0".to_string()),
                Just(r"\/".to_string()),
            ],
        ]
    }

    pub(crate) fn string() -> impl Strategy<Value = String> {
        prop::collection::vec(string_piece(), 0..10).prop_map(|p| format!("\"{}\"", p.concat()))
    }

    pub(crate) fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            10 => any::<u64>().prop_map(|n| n.to_string()),
            10 => (0..100_000u64).prop_map(|n| n.to_string()),
            5 => any::<i64>().prop_map(|n| n.to_string()),
            5 => any::<f64>().prop_map(|f| serde_json::to_string(&f).unwrap()),
            5 => (any::<i32>(), any::<u16>(), -400..400i32, 0..4u8).prop_map(|(i, f, e, how)| match how {
                0 => format!("{i}.{f}"),
                1 => format!("{i}e{e}"),
                2 => format!("{i}.{f}E+{}", e.unsigned_abs()),
                _ => format!("{i}.{f}e{e}"),
            }),
            5 => prop::sample::select(vec![
                "0", "-0", "-0.0", "1e400", "-1e400", "1e-400", "0e99999999999", "1.7976931348623157e308",
                "18446744073709551615", "18446744073709551616", "99999999999999999999999",
                "-9223372036854775808", "-9223372036854775809", "10000000000000000000", "9999999999999999999",
                "0.0", "1E2", "1e-2", "-1.5E+3",
            ])
            .prop_map(str::to_string),
            1 => prop::sample::select(vec![
                "0", "-0", "-0.0", "1e400", "-1e400", "1e-400", "0e99999999999", "1.7976931348623157e308",
                "18446744073709551615", "18446744073709551616", "99999999999999999999999",
                "-9223372036854775808", "-9223372036854775809", "0000", "01", "-01", "1.", "-",
                ".5", "+1", "1e", "1e+", "1.5e-", "0x10", "1_000", "NaN", "Infinity", "-x",
                "10000000000000000000", "9999999999999999999",
            ])
            .prop_map(str::to_string),
        ]
    }

    /// Keys: every kept name at every level, unknown ones, escaped spellings.
    pub(crate) fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => prop::sample::select(vec![
                "message", "@timestamp", "log", "offset", "file", "path", "host", "name",
                "hostname", "fields", "log_type", "idc", "source", "beat", "agent", "event",
                "original", "@metadata", "input", "ecs", "flags", "type",
            ])
            .prop_map(|k| format!("\"{k}\"")),
            1 => prop::sample::select(vec![
                r"mess\u0061ge", r"h\u006fst", r"n\u0061me", r"\ud800", r"\udc00x", r"of\fset",
                r"log\/", "", r"\u006c\u006fg", "msg",
            ])
            .prop_map(|k| format!("\"{k}\"")),
            1 => string(),
        ]
    }

    /// A JSON line's keys: `names`, unknown ones, escaped spellings.
    pub(crate) fn key_from(names: &'static [&'static str]) -> impl Strategy<Value = String> {
        prop_oneof![
            8 => prop::sample::select(names).prop_map(|k| format!("\"{k}\"")),
            1 => prop::sample::select(vec![r"tim\u0065", r"\ud800", "", "x", "extra "])
                .prop_map(|k| format!("\"{k}\"")),
            1 => key(),
        ]
    }

    pub(crate) fn leaf() -> impl Strategy<Value = String> {
        prop_oneof![
            30 => string(),
            30 => number(),
            10 => prop::sample::select(vec!["true", "false", "null"]).prop_map(str::to_string),
            1 => prop::sample::select(vec!["nul", "tru", "nulll", "True"]).prop_map(str::to_string),
        ]
    }

    pub(crate) fn value() -> impl Strategy<Value = String> {
        leaf().prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                (
                    prop::collection::vec((ws(), inner.clone(), ws()), 0..5),
                    0..40u8
                )
                    .prop_map(|(items, odd)| {
                        let items: Vec<String> = items
                            .into_iter()
                            .map(|(a, v, b)| format!("{a}{v}{b}"))
                            .collect();
                        // Now and then a trailing comma.
                        let tail = if odd == 0 { "," } else { "" };
                        format!("[{}{tail}]", items.join(","))
                    }),
                (
                    prop::collection::vec((key(), ws(), ws(), inner), 0..6),
                    0..40u8
                )
                    .prop_map(|(members, odd)| object(members, odd)),
            ]
        })
    }

    pub(crate) fn object(members: Vec<(String, &str, &str, String)>, odd: u8) -> String {
        let members: Vec<String> = members
            .into_iter()
            .map(|(k, a, b, v)| format!("{a}{k}{b}:{a}{v}{b}"))
            .collect();
        let (sep, tail) = match odd {
            0 => (",", ","),
            1 => (" , ", ""),
            _ => (",", ""),
        };
        format!("{{{}{tail}}}", members.join(sep))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_finds_the_first() {
        for len in 0..20 {
            for at in 0..len {
                for c in [b'"', b'\\', 0, 0x1f, b'\n'] {
                    let mut b = vec![b'a'; len];
                    b[at] = c;
                    if at + 3 < len {
                        b[at + 3] = b'"';
                    }
                    // Bytes one above a match (borrows) and high bytes.
                    if at > 0 {
                        b[at - 1] = if c == b'"' { 0x23 } else { 0x20 };
                    }
                    for from in 0..=at {
                        assert_eq!(special(&b, from), at, "{len} {at} {from} {c}");
                    }
                }
            }
            assert_eq!(special(&[0x80; 20][..len], 0), len);
            assert_eq!(special(&[b' '; 20][..len], 0), len);
        }
    }
}
