//! `exposure`: one ad shown to one user.

use std::borrow::Cow;

use crate::ParseError;

/// An ad impression. `mark_id` is unique per exposure and is the join key.
#[derive(Debug, Clone, PartialEq)]
pub struct Exposure<'a> {
    pub ts_ms: i64,
    pub mark_id: Cow<'a, str>,
    pub trace_id: Cow<'a, str>,
    pub uid: u64,
    pub psid: u32,
    pub ad_id: u64,
    pub creative_id: u64,
    /// Slot position in the feed (0-based).
    pub position: u16,
    /// Client platform: ios, android, web, ...
    pub platform: Cow<'a, str>,
    /// Winning bid price (currency units, finite, >= 0).
    pub bid_price: f64,
}

impl<'a> Exposure<'a> {
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
