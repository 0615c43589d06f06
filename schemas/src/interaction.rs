//! `interaction`: a user acting on an ad that was shown to them.

use std::borrow::Cow;

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
    pub fn parse(line: &'a str) -> Result<Self, ParseError> {
        let _ = line;
        todo!()
    }
    pub fn write_tsv(&self, out: &mut String) {
        let _ = out;
        todo!()
    }
    pub fn write_json(&self, out: &mut String) {
        let _ = out;
        todo!()
    }
}
