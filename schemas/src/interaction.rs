//! `interaction`: a user acting on an ad that was shown to them.

use std::borrow::Cow;

use crate::fields::{self, Form, JsonSource, Source, TsvSource};
use crate::owned::{owned, owned_extras};
use crate::write::{Json, Tsv};
use crate::ParseError;

/// A user action on an exposure, linked to it by `mark_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct Interaction<'a> {
    pub ts_ms: i64,
    pub mark_id: Cow<'a, str>,
    pub trace_id: Cow<'a, str>,
    pub uid: u64,
    /// click, like, repost, comment, follow, close, ... (lowercase, non-empty).
    pub action: Cow<'a, str>,
    /// Free `key=value` attributes, in line order.
    pub extra: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> Interaction<'a> {
    /// Column names in TSV order; also the JSON keys.
    pub const FIELDS: [&'static str; 6] = ["time", "mark_id", "trace_id", "uid", "action", "extra"];

    /// Parses a TSV line, or a JSON object when the line starts with `{`.
    pub fn parse(line: &'a str) -> Result<Self, ParseError> {
        match fields::classify(line)? {
            Form::Tsv(l) => Self::build(&mut TsvSource::split(l, &Self::FIELDS)?),
            Form::Json(l) => Self::build(&mut JsonSource::parse(l, &Self::FIELDS)?),
        }
    }

    fn build<S: Source<'a>>(s: &mut S) -> Result<Self, ParseError> {
        Ok(Interaction {
            ts_ms: s.time(0)?,
            mark_id: s.id(1)?,
            trace_id: s.id(2)?,
            uid: s.uint(3)?,
            action: s.id(4)?,
            extra: s.extras(5)?,
        })
    }

    /// Detaches the record from the input buffer.
    pub fn into_owned(self) -> Interaction<'static> {
        Interaction {
            ts_ms: self.ts_ms,
            mark_id: owned(self.mark_id),
            trace_id: owned(self.trace_id),
            uid: self.uid,
            action: owned(self.action),
            extra: owned_extras(self.extra),
        }
    }
    /// Appends the TSV form (no trailing newline) to `out`.
    pub fn write_tsv(&self, out: &mut String) {
        Tsv::new(out)
            .time(self.ts_ms)
            .str(&self.mark_id)
            .str(&self.trace_id)
            .uint(self.uid)
            .str(&self.action)
            .extras(&self.extra);
    }

    /// Appends the JSON-object form (no trailing newline) to `out`.
    pub fn write_json(&self, out: &mut String) {
        let [time, mark_id, trace_id, uid, action, extra] = Self::FIELDS;
        Json::new(out)
            .time(time, self.ts_ms)
            .str(mark_id, &self.mark_id)
            .str(trace_id, &self.trace_id)
            .uint(uid, self.uid)
            .str(action, &self.action)
            .extras(extra, &self.extra)
            .end();
    }
}
