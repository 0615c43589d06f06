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
use crate::json::{Obj, Scalar};

/// Not a document the reference decoder accepted: the value is a bare line.
#[derive(Debug)]
pub(super) struct Invalid;

type R<T> = Result<T, Invalid>;

/// Decodes `text` (the whole Kafka value) if it is one JSON object.
pub(super) fn doc(text: &str) -> Option<Doc<'_>> {
    let mut s = Scan {
        s: text,
        b: text.as_bytes(),
        i: 0,
    };
    let doc = s.document().ok()?;
    s.ws();
    (s.i == s.b.len()).then_some(doc)
}

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

/// Sets `bit` in `seen`, or fails if it was set: a kept key twice.
#[inline]
fn once(seen: &mut u16, bit: u16) -> R<()> {
    if *seen & bit != 0 {
        return Err(Invalid);
    }
    *seen |= bit;
    Ok(())
}

struct Scan<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    #[inline(always)]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn eat(&mut self, c: u8) -> R<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    fn literal(&mut self, lit: &[u8]) -> R<()> {
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
    fn string(&mut self) -> R<Cow<'a, str>> {
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
    fn skip_string(&mut self) -> R<()> {
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
    fn skip_number(&mut self) -> R<()> {
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
    fn number(&mut self) -> R<Scalar<'a>> {
        let b = self.b;
        let start = self.i;
        let mut i = start;
        let mut v = 0u64;
        while let Some(&d @ b'0'..=b'9') = b.get(i) {
            v = v.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
            i += 1;
        }
        let n = i - start;
        if (1..=19).contains(&n)
            && (n == 1 || b[start] != b'0')
            && !matches!(b.get(i), Some(b'.' | b'e' | b'E'))
        {
            self.i = i;
            return Ok(Scalar::UInt(v));
        }
        self.skip_number()?;
        serde_json::from_str::<Scalar>(&self.s[start..self.i]).map_err(|_| Invalid)
    }

    /// Skips any value (leading whitespace included), validating it as
    /// serde_json's `ignore_value` does.
    fn skip_value(&mut self) -> R<()> {
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
    fn skip_key(&mut self) -> R<()> {
        self.eat(b'"')?;
        self.skip_string()?;
        self.ws();
        self.eat(b':')
    }

    /// The members of an object whose `{` was consumed: each key parsed (a
    /// visited object's keys are serde_json-parsed), `f` reads its value
    /// (whitespace before it skipped).
    #[inline]
    fn members(&mut self, mut f: impl FnMut(&mut Self, &str) -> R<()>) -> R<()> {
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
            f(self, &key)?;
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

    /// A kept leaf (`Option<Scalar>` in the reference): `null` is `None`.
    fn scalar(&mut self) -> R<Option<Scalar<'a>>> {
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
        self.members(|s, k| f(s, &mut t, &mut seen, k))?;
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
            match k {
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
    use proptest::prelude::*;

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

    /// Whitespace JSON allows, and some it does not.
    fn ws() -> impl Strategy<Value = &'static str> {
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
    fn string_piece() -> impl Strategy<Value = String> {
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

    fn string() -> impl Strategy<Value = String> {
        prop::collection::vec(string_piece(), 0..10).prop_map(|p| format!("\"{}\"", p.concat()))
    }

    fn number() -> impl Strategy<Value = String> {
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
    fn key() -> impl Strategy<Value = String> {
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

    fn leaf() -> impl Strategy<Value = String> {
        prop_oneof![
            30 => string(),
            30 => number(),
            10 => prop::sample::select(vec!["true", "false", "null"]).prop_map(str::to_string),
            1 => prop::sample::select(vec!["nul", "tru", "nulll", "True"]).prop_map(str::to_string),
        ]
    }

    fn value() -> impl Strategy<Value = String> {
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

    fn object(members: Vec<(String, &str, &str, String)>, odd: u8) -> String {
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
