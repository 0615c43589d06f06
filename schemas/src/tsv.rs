//! Tab-separated fields with backslash escapes (`\t`, `\n`, `\r`, `\\`).
//!
//! A raw tab always separates fields, so splitting is a plain `memchr` scan
//! and a field only has to be copied when it contains a backslash.

use std::borrow::Cow;

use crate::ParseError;

/// A field of a line: its byte offset in the line and its raw (still escaped) text.
pub type Field<'a> = (usize, &'a str);

/// Strips the trailing `\r`/`\n` a line may carry (the contract ignores them).
pub fn trim_line_end(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

/// Splits `line` into exactly `N` tab-separated fields. More or fewer is a
/// `FieldCount` error reporting how many were found, so a shifted column is
/// never silently accepted.
pub fn split_fields<const N: usize>(line: &str) -> Result<[Field<'_>; N], ParseError> {
    split_fields_escaped(line).map(|(fields, _)| fields)
}

/// [`split_fields`], and whether the line has a backslash at all (when not,
/// no field needs [`unescape`]): one pass over the line, eight bytes at a
/// time (a `memchr` per tab cost more in setup than the scan).
pub(crate) fn split_fields_escaped<const N: usize>(
    line: &str,
) -> Result<([Field<'_>; N], bool), ParseError> {
    let b = line.as_bytes();
    let mut fields: [Field<'_>; N] = [(0, ""); N];
    let mut start = 0;
    let mut n = 0;
    let mut escapes = false;
    let mut i = 0;
    loop {
        let tab = next_tab_or_backslash(b, i);
        match b.get(tab) {
            None => break,
            Some(b'\\') => {
                escapes = true;
                i = tab + 1;
                continue;
            }
            Some(_) => {}
        }
        if n + 1 >= N {
            // Too many: count the rest for the error message.
            let found = N + 1 + memchr::memchr_iter(b'\t', &b[tab + 1..]).count();
            return Err(ParseError::FieldCount { expected: N, found });
        }
        fields[n] = (start, &line[start..tab]);
        n += 1;
        start = tab + 1;
        i = tab + 1;
    }
    if n + 1 != N {
        return Err(ParseError::FieldCount {
            expected: N,
            found: n + 1,
        });
    }
    fields[n] = (start, &line[start..]);
    Ok((fields, escapes))
}

/// The first tab or backslash in `b` at or after `i`, or `b.len()`.
#[inline]
fn next_tab_or_backslash(b: &[u8], mut i: usize) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let t = w ^ (LO * u64::from(b'\t'));
        let bs = w ^ (LO * u64::from(b'\\'));
        // Each term's lowest flagged byte is a real match (a borrow only
        // flags bytes above one), so the lowest of their union is too.
        let m = ((t.wrapping_sub(LO) & !t) | (bs.wrapping_sub(LO) & !bs)) & HI;
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && !matches!(b[i], b'\t' | b'\\') {
        i += 1;
    }
    i
}

/// Undoes the TSV escapes. Borrows when there is nothing to undo. On an
/// invalid escape returns the byte position of its backslash within `s`.
pub fn unescape(s: &str) -> Result<Cow<'_, str>, (usize, &'static str)> {
    let Some(first) = memchr::memchr(b'\\', s.as_bytes()) else {
        return Ok(Cow::Borrowed(s));
    };
    let mut out = String::with_capacity(s.len());
    out.push_str(&s[..first]);
    let mut rest = &s[first..];
    let mut pos = first;
    while let Some(i) = memchr::memchr(b'\\', rest.as_bytes()) {
        out.push_str(&rest[..i]);
        let c = match rest.as_bytes().get(i + 1) {
            Some(b't') => '\t',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b'\\') => '\\',
            Some(_) => return Err((pos + i, "invalid escape (only \\t \\n \\r \\\\)")),
            None => return Err((pos + i, "trailing backslash")),
        };
        out.push(c);
        rest = &rest[i + 2..];
        pos += i + 2;
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

fn needs_escape(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | b'\r' | b'\\')
}

/// Appends `s` with the TSV escapes applied.
pub fn escape_into(s: &str, out: &mut String) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !needs_escape(b) {
            continue;
        }
        out.push_str(&s[start..i]);
        out.push_str(match b {
            b'\t' => "\\t",
            b'\n' => "\\n",
            b'\r' => "\\r",
            _ => "\\\\",
        });
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_exact() {
        let f = split_fields::<3>("a\t\tccc").unwrap();
        assert_eq!(f, [(0, "a"), (2, ""), (3, "ccc")]);
        assert_eq!(
            split_fields::<3>("a\tb"),
            Err(ParseError::FieldCount {
                expected: 3,
                found: 2
            })
        );
        assert_eq!(
            split_fields::<3>("a\tb\tc\td\te"),
            Err(ParseError::FieldCount {
                expected: 3,
                found: 5
            })
        );
        assert_eq!(split_fields::<1>("abc").unwrap(), [(0, "abc")]);
    }

    /// The one-pass split is the `memchr` one it replaced, on every line of
    /// tabs, backslashes and other bytes up to 24 long (tabs on both sides of
    /// a chunk boundary).
    #[test]
    fn split_fields_is_memchr_split() {
        fn reference<const N: usize>(line: &str) -> Result<[Field<'_>; N], ParseError> {
            let mut fields: [Field<'_>; N] = [(0, ""); N];
            let mut start = 0;
            let mut n = 0;
            for tab in memchr::memchr_iter(b'\t', line.as_bytes()) {
                if n + 1 >= N {
                    let found =
                        N + 1 + memchr::memchr_iter(b'\t', &line.as_bytes()[tab + 1..]).count();
                    return Err(ParseError::FieldCount { expected: N, found });
                }
                fields[n] = (start, &line[start..tab]);
                n += 1;
                start = tab + 1;
            }
            if n + 1 != N {
                return Err(ParseError::FieldCount {
                    expected: N,
                    found: n + 1,
                });
            }
            fields[n] = (start, &line[start..]);
            Ok(fields)
        }
        let alphabet = ['a', '\t', '\\', '\u{8}', '\u{5d}', 'é'];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..24 {
            for _ in 0..400 {
                let line: String = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        alphabet[(seed % 6) as usize]
                    })
                    .collect();
                let ours = split_fields_escaped::<4>(&line);
                assert_eq!(ours.clone().map(|r| r.0), reference::<4>(&line), "{line:?}");
                if let Ok((_, escapes)) = ours {
                    assert_eq!(escapes, line.contains('\\'), "{line:?}");
                }
                assert_eq!(split_fields::<1>(&line), reference::<1>(&line), "{line:?}");
            }
        }
    }

    #[test]
    fn escapes_round_trip() {
        let raw = "a\tb\nc\rd\\e\\";
        let mut out = String::new();
        escape_into(raw, &mut out);
        assert_eq!(out, "a\\tb\\nc\\rd\\\\e\\\\");
        assert_eq!(unescape(&out).unwrap(), raw);
        assert!(matches!(unescape("plain").unwrap(), Cow::Borrowed("plain")));
        assert_eq!(
            unescape("ab\\x"),
            Err((2, "invalid escape (only \\t \\n \\r \\\\)"))
        );
        assert_eq!(unescape("ab\\\\c\\"), Err((5, "trailing backslash")));
    }
}
