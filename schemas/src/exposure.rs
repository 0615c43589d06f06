//! `exposure`: one ad shown to one user.

use std::borrow::Cow;

use crate::fields::{self, Form, JsonSource, Source, TsvSource};
use crate::owned::owned;
use crate::write::{Json, Tsv};
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
    /// Column names in TSV order; also the JSON keys.
    pub const FIELDS: [&'static str; 10] = [
        "time",
        "mark_id",
        "trace_id",
        "uid",
        "psid",
        "ad_id",
        "creative_id",
        "position",
        "platform",
        "bid_price",
    ];

    /// Parses a TSV line, or a JSON object when the line starts with `{`.
    pub fn parse(line: &'a str) -> Result<Self, ParseError> {
        match fields::classify(line)? {
            Form::Tsv(l) => Self::build(&mut TsvSource::split(l, &Self::FIELDS)?),
            Form::Json(l) => Self::build(&mut JsonSource::parse(l, &Self::FIELDS)?),
        }
    }

    fn build<S: Source<'a>>(s: &mut S) -> Result<Self, ParseError> {
        Ok(Exposure {
            ts_ms: s.time(0)?,
            mark_id: s.id(1)?,
            trace_id: s.id(2)?,
            uid: s.uint(3)?,
            psid: s.uint(4)?,
            ad_id: s.uint(5)?,
            creative_id: s.uint(6)?,
            position: s.uint(7)?,
            platform: s.id(8)?,
            bid_price: s.float(9)?,
        })
    }

    /// Detaches the record from the input buffer.
    pub fn into_owned(self) -> Exposure<'static> {
        Exposure {
            ts_ms: self.ts_ms,
            mark_id: owned(self.mark_id),
            trace_id: owned(self.trace_id),
            uid: self.uid,
            psid: self.psid,
            ad_id: self.ad_id,
            creative_id: self.creative_id,
            position: self.position,
            platform: owned(self.platform),
            bid_price: self.bid_price,
        }
    }
    /// Appends the TSV form (no trailing newline) to `out`.
    pub fn write_tsv(&self, out: &mut String) {
        Tsv::new(out)
            .time(self.ts_ms)
            .str(&self.mark_id)
            .str(&self.trace_id)
            .uint(self.uid)
            .uint(self.psid.into())
            .uint(self.ad_id)
            .uint(self.creative_id)
            .uint(self.position.into())
            .str(&self.platform)
            .float(self.bid_price);
    }

    /// Appends the JSON-object form (no trailing newline) to `out`.
    pub fn write_json(&self, out: &mut String) {
        let [time, mark_id, trace_id, uid, psid, ad_id, creative_id, position, platform, bid_price] =
            Self::FIELDS;
        Json::new(out)
            .time(time, self.ts_ms)
            .str(mark_id, &self.mark_id)
            .str(trace_id, &self.trace_id)
            .uint(uid, self.uid)
            .uint(psid, self.psid.into())
            .uint(ad_id, self.ad_id)
            .uint(creative_id, self.creative_id)
            .uint(position, self.position.into())
            .str(platform, &self.platform)
            .float(bid_price, self.bid_price)
            .end();
    }
}
