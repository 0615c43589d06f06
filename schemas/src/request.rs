//! `request`: one line per service hop of one ad request (the full-link trace log).

use std::borrow::Cow;

use crate::ParseError;

/// One hop of an ad request. Hops of one request share `trace_id`; `parent_span_id`
/// and `caller` link a hop to the hop that called it (both empty at the edge).
#[derive(Debug, Clone, PartialEq)]
pub struct Request<'a> {
    /// Event time, milliseconds since the Unix epoch (UTC).
    pub ts_ms: i64,
    pub trace_id: Cow<'a, str>,
    pub span_id: Cow<'a, str>,
    pub parent_span_id: Cow<'a, str>,
    pub service: Cow<'a, str>,
    /// Upstream service; empty at the edge.
    pub caller: Cow<'a, str>,
    pub api: Cow<'a, str>,
    pub uid: u64,
    /// Ad placement id.
    pub psid: u32,
    /// Status code (HTTP-like: >= 500 counts as an error).
    pub status: u16,
    /// Latency in milliseconds (fractional, finite, >= 0).
    pub latency_ms: f64,
    pub host: Cow<'a, str>,
    pub idc: Cow<'a, str>,
    /// Free `key=value` attributes, in line order.
    pub extra: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> Request<'a> {
    /// Parses a TSV line, or a JSON object when the line starts with `{`.
    pub fn parse(line: &'a str) -> Result<Self, ParseError> {
        let _ = line;
        todo!("implemented by the schemas parser work")
    }

    /// Appends the TSV form (no trailing newline) to `out`.
    pub fn write_tsv(&self, out: &mut String) {
        let _ = out;
        todo!()
    }

    /// Appends the JSON-object form to `out`.
    pub fn write_json(&self, out: &mut String) {
        let _ = out;
        todo!()
    }
}
