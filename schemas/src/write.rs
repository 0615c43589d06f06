//! Shared writer plumbing: each record's `write_tsv`/`write_json` is a list of
//! typed calls, and the separators, escaping and number formatting live here
//! once. Everything appends to the caller's `String`; nothing else allocates.

use std::borrow::Cow;

use crate::{time, tsv};

/// Extras as the records hold them (borrowed as a slice).
pub(crate) type Pairs<'a> = [(Cow<'a, str>, Cow<'a, str>)];

/// Appends `v` as shortest round-trip decimal (`12.0`, `1.85`, `1e+20`), which
/// both the TSV and the JSON parser read back to the same bits.
pub(crate) fn push_f64(out: &mut String, v: f64) {
    if v.is_finite() {
        out.push_str(zmij::Buffer::new().format_finite(v));
    } else {
        // Not a valid record; write something the parsers reject loudly
        // rather than a number that would be read back as a different value.
        out.push_str(if v.is_nan() { "NaN" } else { "inf" });
    }
}

pub(crate) struct Tsv<'o> {
    out: &'o mut String,
    first: bool,
}

impl<'o> Tsv<'o> {
    pub(crate) fn new(out: &'o mut String) -> Self {
        Tsv { out, first: true }
    }

    fn sep(&mut self) {
        if !self.first {
            self.out.push('\t');
        }
        self.first = false;
    }

    pub(crate) fn str(&mut self, s: &str) -> &mut Self {
        self.sep();
        tsv::escape_into(s, self.out);
        self
    }

    pub(crate) fn uint(&mut self, v: u64) -> &mut Self {
        self.sep();
        self.out.push_str(itoa::Buffer::new().format(v));
        self
    }

    pub(crate) fn int(&mut self, v: i64) -> &mut Self {
        self.sep();
        self.out.push_str(itoa::Buffer::new().format(v));
        self
    }

    pub(crate) fn float(&mut self, v: f64) -> &mut Self {
        self.sep();
        push_f64(self.out, v);
        self
    }

    pub(crate) fn time(&mut self, ts_ms: i64) -> &mut Self {
        self.sep();
        time::format_ms(ts_ms, self.out);
        self
    }

    /// `k=v&k=v`, each key and value TSV-escaped. `&` and `=` have no escape
    /// in the contract (see README), so they must not occur where they would
    /// be ambiguous.
    pub(crate) fn extras(&mut self, extra: &Pairs<'_>) -> &mut Self {
        self.sep();
        for (i, (k, v)) in extra.iter().enumerate() {
            if i > 0 {
                self.out.push('&');
            }
            tsv::escape_into(k, self.out);
            self.out.push('=');
            tsv::escape_into(v, self.out);
        }
        self
    }
}

/// Writes one JSON object; keys are the contract's field names, which need no
/// escaping.
pub(crate) struct Json<'o> {
    out: &'o mut String,
    first: bool,
}

impl<'o> Json<'o> {
    pub(crate) fn new(out: &'o mut String) -> Self {
        out.push('{');
        Json { out, first: true }
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push('"');
        self.out.push_str(key);
        self.out.push_str("\":");
    }

    pub(crate) fn str(&mut self, key: &str, s: &str) -> &mut Self {
        self.key(key);
        push_json_str(self.out, s);
        self
    }

    pub(crate) fn uint(&mut self, key: &str, v: u64) -> &mut Self {
        self.key(key);
        self.out.push_str(itoa::Buffer::new().format(v));
        self
    }

    pub(crate) fn int(&mut self, key: &str, v: i64) -> &mut Self {
        self.key(key);
        self.out.push_str(itoa::Buffer::new().format(v));
        self
    }

    pub(crate) fn float(&mut self, key: &str, v: f64) -> &mut Self {
        self.key(key);
        push_f64(self.out, v);
        self
    }

    pub(crate) fn time(&mut self, key: &str, ts_ms: i64) -> &mut Self {
        self.key(key);
        self.out.push('"');
        time::format_ms(ts_ms, self.out);
        self.out.push('"');
        self
    }

    pub(crate) fn extras(&mut self, key: &str, extra: &Pairs<'_>) -> &mut Self {
        self.key(key);
        self.out.push('{');
        for (i, (k, v)) in extra.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            push_json_str(self.out, k);
            self.out.push(':');
            push_json_str(self.out, v);
        }
        self.out.push('}');
        self
    }

    /// Writes a value the caller formats itself (constants, nested literals).
    pub(crate) fn raw_value(&mut self, key: &str, write: impl FnOnce(&mut String)) -> &mut Self {
        self.key(key);
        write(self.out);
        self
    }

    /// Starts a nested object under `key`; close it with [`Json::end`].
    pub(crate) fn object(&mut self, key: &str) -> Json<'_> {
        self.key(key);
        Json::new(self.out)
    }

    pub(crate) fn end(&mut self) {
        self.out.push('}');
    }
}

/// Appends `s` as a JSON string literal. Control characters are escaped so the
/// output is always a single line (the Kafka value / log line stays one line).
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        out.push_str(&s[start..i]);
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            _ => {
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_string_escapes() {
        let mut s = String::new();
        push_json_str(&mut s, "a\"b\\c\nd\u{1}e\u{7f}é\u{2028}");
        assert_eq!(s, "\"a\\\"b\\\\c\\nd\\u0001e\u{7f}é\u{2028}\"");
        let back: String = serde_json::from_str(&s).unwrap();
        assert_eq!(back, "a\"b\\c\nd\u{1}e\u{7f}é\u{2028}");
    }

    #[test]
    fn floats_are_shortest_round_trip() {
        for (v, text) in [
            (12.0, "12.0"),
            (12.75, "12.75"),
            (0.0, "0.0"),
            (1.85, "1.85"),
        ] {
            let mut s = String::new();
            push_f64(&mut s, v);
            assert_eq!(s, text);
        }
    }
}
