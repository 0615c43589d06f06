//! `joined`: an exposure matched with one later interaction (written by the joiner).

use std::borrow::Cow;

use crate::ParseError;

/// An exposure plus one interaction on it within the join window.
///
/// `joined_id` is deterministic (a hash of mark_id, the interaction's time,
/// trace id and action), so replays produce the same id and ClickHouse can
/// collapse duplicates.
#[derive(Debug, Clone, PartialEq)]
pub struct Joined<'a> {
    pub joined_id: u64,
    pub mark_id: Cow<'a, str>,
    /// Exposure time.
    pub exposure_ts_ms: i64,
    pub exposure_trace_id: Cow<'a, str>,
    pub uid: u64,
    pub psid: u32,
    pub ad_id: u64,
    pub creative_id: u64,
    pub position: u16,
    pub platform: Cow<'a, str>,
    pub bid_price: f64,
    /// Interaction time.
    pub interaction_ts_ms: i64,
    pub interaction_trace_id: Cow<'a, str>,
    pub action: Cow<'a, str>,
    /// interaction_ts_ms - exposure_ts_ms (0 ..= window).
    pub delay_ms: i64,
}

impl<'a> Joined<'a> {
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
    /// Builds the joined event from its two sides, with its deterministic id.
    pub fn from_pair(exposure: &Exposure<'a>, interaction: &Interaction<'a>) -> Joined<'a> {
        let _ = (exposure, interaction);
        todo!()
    }
}

use crate::{Exposure, Interaction};
