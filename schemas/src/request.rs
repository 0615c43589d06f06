//! `request`: one line per service hop of one ad request (the full-link trace log).

use std::borrow::Cow;

use crate::fields::{self, Form, JsonSource, Source, TsvSource};
use crate::owned::{owned, owned_extras};
use crate::write::{Json, Tsv};
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
    /// Column names in TSV order; also the JSON keys.
    pub const FIELDS: [&'static str; 14] = [
        "time",
        "trace_id",
        "span_id",
        "parent_span_id",
        "service",
        "caller",
        "api",
        "uid",
        "psid",
        "status",
        "latency_ms",
        "host",
        "idc",
        "extra",
    ];

    /// Parses a TSV line, or a JSON object when the line starts with `{`.
    ///
    /// Fields without escapes borrow from `line`. There is no size limit
    /// here: bounding message size is the consumer's job (before parsing).
    pub fn parse(line: &'a str) -> Result<Self, ParseError> {
        match fields::classify(line)? {
            Form::Tsv(l) => Self::build(&mut TsvSource::split(l, &Self::FIELDS)?),
            Form::Json(l) => Self::build(&mut JsonSource::parse(l, &Self::FIELDS)?),
        }
    }

    fn build<S: Source<'a>>(s: &mut S) -> Result<Self, ParseError> {
        Ok(Request {
            ts_ms: s.time(0)?,
            trace_id: s.id(1)?,
            span_id: s.id(2)?,
            parent_span_id: s.id_or_empty(3)?,
            service: s.id(4)?,
            caller: s.id_or_empty(5)?,
            api: s.id(6)?,
            uid: s.uint(7)?,
            psid: s.uint(8)?,
            status: s.uint(9)?,
            latency_ms: s.float(10)?,
            host: s.id(11)?,
            idc: s.id(12)?,
            extra: s.extras(13)?,
        })
    }

    /// Detaches the record from the input buffer.
    pub fn into_owned(self) -> Request<'static> {
        Request {
            ts_ms: self.ts_ms,
            trace_id: owned(self.trace_id),
            span_id: owned(self.span_id),
            parent_span_id: owned(self.parent_span_id),
            service: owned(self.service),
            caller: owned(self.caller),
            api: owned(self.api),
            uid: self.uid,
            psid: self.psid,
            status: self.status,
            latency_ms: self.latency_ms,
            host: owned(self.host),
            idc: owned(self.idc),
            extra: owned_extras(self.extra),
        }
    }

    /// Appends the TSV form (no trailing newline) to `out`.
    pub fn write_tsv(&self, out: &mut String) {
        Tsv::new(out)
            .time(self.ts_ms)
            .str(&self.trace_id)
            .str(&self.span_id)
            .str(&self.parent_span_id)
            .str(&self.service)
            .str(&self.caller)
            .str(&self.api)
            .uint(self.uid)
            .uint(self.psid.into())
            .uint(self.status.into())
            .float(self.latency_ms)
            .str(&self.host)
            .str(&self.idc)
            .extras(&self.extra);
    }

    /// Appends the JSON-object form (no trailing newline) to `out`.
    pub fn write_json(&self, out: &mut String) {
        let [time, trace_id, span_id, parent_span_id, service, caller, api, uid, psid, status, latency_ms, host, idc, extra] =
            Self::FIELDS;
        Json::new(out)
            .time(time, self.ts_ms)
            .str(trace_id, &self.trace_id)
            .str(span_id, &self.span_id)
            .str(parent_span_id, &self.parent_span_id)
            .str(service, &self.service)
            .str(caller, &self.caller)
            .str(api, &self.api)
            .uint(uid, self.uid)
            .uint(psid, self.psid.into())
            .uint(status, self.status.into())
            .float(latency_ms, self.latency_ms)
            .str(host, &self.host)
            .str(idc, &self.idc)
            .extras(extra, &self.extra)
            .end();
    }
}
