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
    /// Column names in TSV order; also the JSON keys.
    pub const FIELDS: [&'static str; 15] = [
        "joined_id",
        "mark_id",
        "exposure_time",
        "exposure_trace_id",
        "uid",
        "psid",
        "ad_id",
        "creative_id",
        "position",
        "platform",
        "bid_price",
        "interaction_time",
        "interaction_trace_id",
        "action",
        "delay_ms",
    ];

    /// Parses a JSON object (what the joiner writes) or a TSV line.
    ///
    /// `delay_ms` must equal `interaction_time - exposure_time`; `joined_id`
    /// is taken as written (it is the joiner's to define).
    pub fn parse(line: &'a str) -> Result<Self, ParseError> {
        match fields::classify(line)? {
            Form::Tsv(l) => Self::build(&mut TsvSource::split(l, &Self::FIELDS)?),
            Form::Json(l) => Self::build(&mut JsonSource::parse(l, &Self::FIELDS)?),
        }
    }

    fn build<S: Source<'a>>(s: &mut S) -> Result<Self, ParseError> {
        let j = Joined {
            joined_id: s.uint(0)?,
            mark_id: s.id(1)?,
            exposure_ts_ms: s.time(2)?,
            exposure_trace_id: s.id(3)?,
            uid: s.uint(4)?,
            psid: s.uint(5)?,
            ad_id: s.uint(6)?,
            creative_id: s.uint(7)?,
            position: s.uint(8)?,
            platform: s.id(9)?,
            bid_price: s.float(10)?,
            interaction_ts_ms: s.time(11)?,
            interaction_trace_id: s.id(12)?,
            action: s.id(13)?,
            delay_ms: s.int(14)?,
        };
        let expected = j.interaction_ts_ms - j.exposure_ts_ms;
        if j.delay_ms != expected {
            return Err(s.bad(
                14,
                format!(
                    "{} is not interaction_time - exposure_time ({expected})",
                    j.delay_ms
                ),
            ));
        }
        Ok(j)
    }

    /// Detaches the record from the input buffer.
    pub fn into_owned(self) -> Joined<'static> {
        Joined {
            joined_id: self.joined_id,
            mark_id: owned(self.mark_id),
            exposure_ts_ms: self.exposure_ts_ms,
            exposure_trace_id: owned(self.exposure_trace_id),
            uid: self.uid,
            psid: self.psid,
            ad_id: self.ad_id,
            creative_id: self.creative_id,
            position: self.position,
            platform: owned(self.platform),
            bid_price: self.bid_price,
            interaction_ts_ms: self.interaction_ts_ms,
            interaction_trace_id: owned(self.interaction_trace_id),
            action: owned(self.action),
            delay_ms: self.delay_ms,
        }
    }
    /// Appends the TSV form (no trailing newline) to `out`.
    pub fn write_tsv(&self, out: &mut String) {
        Tsv::new(out)
            .uint(self.joined_id)
            .str(&self.mark_id)
            .time(self.exposure_ts_ms)
            .str(&self.exposure_trace_id)
            .uint(self.uid)
            .uint(self.psid.into())
            .uint(self.ad_id)
            .uint(self.creative_id)
            .uint(self.position.into())
            .str(&self.platform)
            .float(self.bid_price)
            .time(self.interaction_ts_ms)
            .str(&self.interaction_trace_id)
            .str(&self.action)
            .int(self.delay_ms);
    }

    /// Appends the JSON-object form (no trailing newline) to `out`; this is
    /// what the joiner publishes.
    pub fn write_json(&self, out: &mut String) {
        let [joined_id, mark_id, exposure_time, exposure_trace_id, uid, psid, ad_id, creative_id, position, platform, bid_price, interaction_time, interaction_trace_id, action, delay_ms] =
            Self::FIELDS;
        Json::new(out)
            .uint(joined_id, self.joined_id)
            .str(mark_id, &self.mark_id)
            .time(exposure_time, self.exposure_ts_ms)
            .str(exposure_trace_id, &self.exposure_trace_id)
            .uint(uid, self.uid)
            .uint(psid, self.psid.into())
            .uint(ad_id, self.ad_id)
            .uint(creative_id, self.creative_id)
            .uint(position, self.position.into())
            .str(platform, &self.platform)
            .float(bid_price, self.bid_price)
            .time(interaction_time, self.interaction_ts_ms)
            .str(interaction_trace_id, &self.interaction_trace_id)
            .str(action, &self.action)
            .int(delay_ms, self.delay_ms)
            .end();
    }

    /// Builds the joined event from its two sides, with its deterministic id.
    /// The exposure's `uid` is kept (the interaction's should be the same).
    pub fn from_pair(exposure: &Exposure<'a>, interaction: &Interaction<'a>) -> Joined<'a> {
        Joined {
            joined_id: joined_id(
                &interaction.mark_id,
                interaction.ts_ms,
                &interaction.trace_id,
                &interaction.action,
            ),
            mark_id: exposure.mark_id.clone(),
            exposure_ts_ms: exposure.ts_ms,
            exposure_trace_id: exposure.trace_id.clone(),
            uid: exposure.uid,
            psid: exposure.psid,
            ad_id: exposure.ad_id,
            creative_id: exposure.creative_id,
            position: exposure.position,
            platform: exposure.platform.clone(),
            bid_price: exposure.bid_price,
            interaction_ts_ms: interaction.ts_ms,
            interaction_trace_id: interaction.trace_id.clone(),
            action: interaction.action.clone(),
            delay_ms: interaction.ts_ms.saturating_sub(exposure.ts_ms),
        }
    }
}

/// The deterministic id of a joined event: FNV-1a 64 over `mark_id`, `\0`,
/// the interaction time as decimal ms, `\0`, the interaction trace id, `\0`,
/// the action. It depends only on the interaction (which names its exposure
/// by `mark_id`), so a replay, or the same pair joined from either side,
/// yields the same id and ClickHouse can collapse duplicates.
pub fn joined_id(
    mark_id: &str,
    interaction_ts_ms: i64,
    interaction_trace_id: &str,
    action: &str,
) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET_BASIS;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    };
    feed(mark_id.as_bytes());
    feed(b"\0");
    feed(itoa::Buffer::new().format(interaction_ts_ms).as_bytes());
    feed(b"\0");
    feed(interaction_trace_id.as_bytes());
    feed(b"\0");
    feed(action.as_bytes());
    h
}

use crate::fields::{self, Form, JsonSource, Source, TsvSource};
use crate::owned::owned;
use crate::write::{Json, Tsv};
use crate::{Exposure, Interaction};
