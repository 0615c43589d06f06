//! What the joiner keeps in Redis: key names, the compact encodings of an
//! exposure's state and of a parked interaction, the window rule, and the Lua
//! scripts that make each side's step atomic.
//!
//! # Keys
//!
//! Every key of one mark_id carries the hash tag `{<mark_id>}`, so in Redis
//! Cluster the exposure state and the park list live in the same slot and one
//! script can touch both:
//!
//! | key | type | content | TTL |
//! |---|---|---|---|
//! | `<p>jx:{<mark_id>}` | string | the exposure's [state](encode_exposure) | window + slack |
//! | `<p>jp:{<mark_id>}` | list | parked [interactions](encode_interaction) (≤ `max_parked_per_mark`); an empty entry marks "counted by the sweeper up to here" | window + slack after the last push |
//! | `<p>jd:<x\|i>:<shard>:<bucket>` | list | mark_ids due for the unmatched check in that 10 s bucket of processing time | until the bucket is due + slack |
//! | `<p>jd:cur:<x\|i>:<shard>` | string | the last bucket the sweeper finished | 2 × (window + slack) |
//! | `<p>jd:lock:<x\|i>:<shard>` | string | sweeper lock (`SET NX PX`) | seconds |
//!
//! `<p>` is `joiner.key_prefix`; `<shard>` is [`due_shard`] (FNV-1a of the
//! mark_id mod [`DUE_SHARDS`]); `<bucket>` is the due time (processing time +
//! window) divided by [`DUE_BUCKET_MS`]. The due schedule is a list per
//! time bucket rather than one sorted set: a list entry costs ~20 bytes, a
//! sorted-set member ~120 (skiplist node + dict entry), which was a quarter of
//! the memory per exposure when measured (`bench/joiner`).
//!
//! # Encodings
//!
//! Both start with the event time as 6 bytes big-endian (epoch ms < 2^48, i.e.
//! any year up to 10889) so that the Lua scripts can apply the window rule
//! without decoding the rest. The exposure state has a one-byte *joined flag*
//! (`'0'`/`'1'`) before it, set by the scripts (with `SETRANGE`, which keeps the
//! TTL) when an interaction within the window met the exposure; the sweeper
//! uses it to count unmatched exposures, and sets `'2'` (*counted*) on the ones
//! it counted, so that a replay or a second due entry does not count them twice.
//!
//! Compact form (the default): after the time, a format byte (bit 0: trace id
//! stored as packed hex; bit 1: bid price stored as an integer count of 1/10000),
//! then varints and length-prefixed strings. The mark_id is not stored (it is
//! in the key). A typical exposure takes ~45 bytes instead of ~220 for its
//! JSON line. The verbose form (the `--naive` baseline) stores the record's
//! JSON line after the same header (format byte `{`).

use schemas::{Exposure, Interaction};

/// Number of due-schedule shards per side (fixed: it is part of the key names).
pub const DUE_SHARDS: u32 = 16;
/// Width of a due-schedule bucket (processing time).
pub const DUE_BUCKET_MS: i64 = 10_000;

/// Exposure state flag: no interaction within the window has met it yet.
pub const FLAG_OPEN: u8 = b'0';
/// Exposure state flag: at least one interaction within the window joined it.
pub const FLAG_JOINED: u8 = b'1';
/// Exposure state flag: counted as unmatched by the sweeper (a later join sets [`FLAG_JOINED`]).
pub const FLAG_COUNTED: u8 = b'2';

const FMT_HEX_TRACE: u8 = 1;
const FMT_SCALED_BID: u8 = 2;
const FMT_VERBOSE: u8 = b'{';
const MAX_TS: i64 = (1 << 48) - 1;
const BID_SCALE: f64 = 10_000.0;

/// The join rule (event time): the interaction happened at or after the
/// exposure and at most `window_ms` later.
pub fn in_window(exposure_ts_ms: i64, interaction_ts_ms: i64, window_ms: i64) -> bool {
    let d = interaction_ts_ms.saturating_sub(exposure_ts_ms);
    (0..=window_ms).contains(&d)
}

/// How state is encoded in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Binary: only the fields the joined event needs.
    Compact,
    /// The record's JSON line after the header (the naive baseline).
    Verbose,
}

/// Key names under a prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// `prefix` must not contain `{` or `}` (it would change the hash tag).
    pub fn new(prefix: &str) -> anyhow::Result<Keys> {
        anyhow::ensure!(
            !prefix.contains(['{', '}']),
            "joiner.key_prefix {prefix:?} must not contain braces (they would change the Redis Cluster hash tag)"
        );
        Ok(Keys {
            prefix: prefix.to_owned(),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn exposure(&self, mark_id: &str) -> String {
        format!("{}jx:{{{mark_id}}}", self.prefix)
    }

    pub fn parked(&self, mark_id: &str) -> String {
        format!("{}jp:{{{mark_id}}}", self.prefix)
    }

    /// The due-schedule list of a side, shard and bucket.
    pub fn due(&self, side: Side, shard: u32, bucket: i64) -> String {
        format!("{}jd:{}:{shard}:{bucket}", self.prefix, side.tag())
    }

    /// The sweeper's cursor: the last bucket it finished for a side and shard.
    pub fn cursor(&self, side: Side, shard: u32) -> String {
        format!("{}jd:cur:{}:{shard}", self.prefix, side.tag())
    }

    pub fn lock(&self, side: Side, shard: u32) -> String {
        format!("{}jd:lock:{}:{shard}", self.prefix, side.tag())
    }
}

/// The two sides of the join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Exposure,
    Interaction,
}

impl Side {
    pub fn tag(self) -> &'static str {
        match self {
            Side::Exposure => "x",
            Side::Interaction => "i",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Side::Exposure => "exposure",
            Side::Interaction => "interaction",
        }
    }
}

/// FNV-1a 32 of a mark_id: spreads mark_ids over due shards and state buckets.
pub fn fnv1a(mark_id: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in mark_id.as_bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The due-schedule shard of a mark_id: FNV-1a 32 mod [`DUE_SHARDS`].
pub fn due_shard(mark_id: &str) -> u32 {
    fnv1a(mark_id) % DUE_SHARDS
}

/// Why a stored value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable joiner state: {0}")]
pub struct DecodeError(&'static str);

// ------------------------------------------------------------ primitives ---

fn put_ts(out: &mut Vec<u8>, ts: i64) {
    let ts = ts.clamp(0, MAX_TS) as u64;
    out.extend_from_slice(&ts.to_be_bytes()[2..]);
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn is_packable_hex(s: &str) -> bool {
    !s.is_empty()
        && s.len() & 1 == 0
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn hex_val(b: u8) -> u8 {
    if b.is_ascii_digit() {
        b - b'0'
    } else {
        b - b'a' + 10
    }
}

fn put_hex(out: &mut Vec<u8>, s: &str) {
    put_varint(out, (s.len() / 2) as u64);
    for pair in s.as_bytes().chunks_exact(2) {
        out.push(hex_val(pair[0]) << 4 | hex_val(pair[1]));
    }
}

/// The bid as an exact integer count of 1/10000, when that round-trips.
fn scaled_bid(bid: f64) -> Option<u64> {
    let scaled = (bid * BID_SCALE).round();
    if !(0.0..9.0e15).contains(&scaled) {
        return None;
    }
    let n = scaled as u64;
    (n as f64 / BID_SCALE == bid).then_some(n)
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Self {
        Reader { b, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or(DecodeError("truncated"))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn ts(&mut self) -> Result<i64, DecodeError> {
        let mut buf = [0u8; 8];
        buf[2..].copy_from_slice(self.take(6)?);
        Ok(u64::from_be_bytes(buf) as i64)
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError("varint too long"))
    }

    fn uint<T: TryFrom<u64>>(&mut self) -> Result<T, DecodeError> {
        T::try_from(self.varint()?).map_err(|_| DecodeError("integer out of range"))
    }

    fn str(&mut self) -> Result<String, DecodeError> {
        let n = self.uint::<usize>()?;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| DecodeError("invalid UTF-8"))
    }

    fn hex(&mut self) -> Result<String, DecodeError> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let n = self.uint::<usize>()?;
        let bytes = self.take(n)?;
        let mut s = String::with_capacity(n * 2);
        for b in bytes {
            s.push(DIGITS[usize::from(b >> 4)] as char);
            s.push(DIGITS[usize::from(b & 15)] as char);
        }
        Ok(s)
    }

    fn end(&self) -> Result<(), DecodeError> {
        if self.pos == self.b.len() {
            Ok(())
        } else {
            Err(DecodeError("trailing bytes"))
        }
    }
}

// ------------------------------------------------------------- exposure ---

/// Encodes an exposure's state with the flag [`FLAG_OPEN`] (the exposure
/// script sets the real flag).
pub fn encode_exposure(e: &Exposure<'_>, enc: Encoding, out: &mut Vec<u8>) {
    out.clear();
    out.push(FLAG_OPEN);
    put_ts(out, e.ts_ms);
    match enc {
        Encoding::Verbose => {
            let mut line = String::with_capacity(256);
            e.write_json(&mut line);
            out.extend_from_slice(line.as_bytes());
        }
        Encoding::Compact => {
            let hex = is_packable_hex(&e.trace_id);
            let bid = scaled_bid(e.bid_price);
            let mut fmt = 0;
            if hex {
                fmt |= FMT_HEX_TRACE;
            }
            if bid.is_some() {
                fmt |= FMT_SCALED_BID;
            }
            out.push(fmt);
            if hex {
                put_hex(out, &e.trace_id);
            } else {
                put_str(out, &e.trace_id);
            }
            put_varint(out, e.uid);
            put_varint(out, e.psid.into());
            put_varint(out, e.ad_id);
            put_varint(out, e.creative_id);
            put_varint(out, e.position.into());
            put_str(out, &e.platform);
            match bid {
                Some(n) => put_varint(out, n),
                None => out.extend_from_slice(&e.bid_price.to_le_bytes()),
            }
        }
    }
}

/// A decoded exposure state: the flag and the exposure (its `mark_id` is the
/// one given, taken from the key).
#[derive(Debug, Clone, PartialEq)]
pub struct ExposureState {
    /// [`FLAG_OPEN`], [`FLAG_JOINED`] or [`FLAG_COUNTED`].
    pub flag: u8,
    pub exposure: Exposure<'static>,
}

impl ExposureState {
    pub fn joined(&self) -> bool {
        self.flag == FLAG_JOINED
    }
}

/// Decodes a state written by [`encode_exposure`] (either encoding).
pub fn decode_exposure(mark_id: &str, b: &[u8]) -> Result<ExposureState, DecodeError> {
    let mut r = Reader::new(b);
    let flag = r.byte()?;
    if ![FLAG_OPEN, FLAG_JOINED, FLAG_COUNTED].contains(&flag) {
        return Err(DecodeError("bad flag"));
    }
    let ts_ms = r.ts()?;
    let fmt = r.byte()?;
    if fmt == FMT_VERBOSE {
        let line =
            std::str::from_utf8(&b[r.pos - 1..]).map_err(|_| DecodeError("invalid UTF-8"))?;
        let e = Exposure::parse(line).map_err(|_| DecodeError("bad JSON exposure"))?;
        return Ok(ExposureState {
            flag,
            exposure: e.into_owned(),
        });
    }
    if fmt & !(FMT_HEX_TRACE | FMT_SCALED_BID) != 0 {
        return Err(DecodeError("unknown format"));
    }
    let trace_id = if fmt & FMT_HEX_TRACE != 0 {
        r.hex()?
    } else {
        r.str()?
    };
    let uid = r.varint()?;
    let psid = r.uint()?;
    let ad_id = r.varint()?;
    let creative_id = r.varint()?;
    let position = r.uint()?;
    let platform = r.str()?;
    let bid_price = if fmt & FMT_SCALED_BID != 0 {
        r.varint()? as f64 / BID_SCALE
    } else {
        let raw: [u8; 8] = r.take(8)?.try_into().expect("8 bytes");
        f64::from_le_bytes(raw)
    };
    r.end()?;
    Ok(ExposureState {
        flag,
        exposure: Exposure {
            ts_ms,
            mark_id: mark_id.to_owned().into(),
            trace_id: trace_id.into(),
            uid,
            psid,
            ad_id,
            creative_id,
            position,
            platform: platform.into(),
            bid_price,
        },
    })
}

// ---------------------------------------------------------- interaction ---

/// Encodes what a joined event needs of an interaction (its extras are not kept).
pub fn encode_interaction(i: &Interaction<'_>, enc: Encoding, out: &mut Vec<u8>) {
    out.clear();
    put_ts(out, i.ts_ms);
    match enc {
        Encoding::Verbose => {
            let mut line = String::with_capacity(256);
            i.write_json(&mut line);
            out.extend_from_slice(line.as_bytes());
        }
        Encoding::Compact => {
            let hex = is_packable_hex(&i.trace_id);
            out.push(if hex { FMT_HEX_TRACE } else { 0 });
            if hex {
                put_hex(out, &i.trace_id);
            } else {
                put_str(out, &i.trace_id);
            }
            put_varint(out, i.uid);
            put_str(out, &i.action);
        }
    }
}

/// Decodes a parked interaction written by [`encode_interaction`].
pub fn decode_interaction(mark_id: &str, b: &[u8]) -> Result<Interaction<'static>, DecodeError> {
    let mut r = Reader::new(b);
    let ts_ms = r.ts()?;
    let fmt = r.byte()?;
    if fmt == FMT_VERBOSE {
        let line =
            std::str::from_utf8(&b[r.pos - 1..]).map_err(|_| DecodeError("invalid UTF-8"))?;
        let i = Interaction::parse(line).map_err(|_| DecodeError("bad JSON interaction"))?;
        return Ok(i.into_owned());
    }
    if fmt & !FMT_HEX_TRACE != 0 {
        return Err(DecodeError("unknown format"));
    }
    let trace_id = if fmt & FMT_HEX_TRACE != 0 {
        r.hex()?
    } else {
        r.str()?
    };
    let uid = r.varint()?;
    let action = r.str()?;
    r.end()?;
    Ok(Interaction {
        ts_ms,
        mark_id: mark_id.to_owned().into(),
        trace_id: trace_id.into(),
        uid,
        action: action.into(),
        extra: Vec::new(),
    })
}

// -------------------------------------------------------------- scripts ---

/// Shared Lua helpers: `ts(s, i)` reads the 6-byte big-endian time at `i`.
const LUA_TS: &str = include_str!("lua/ts.lua");

/// EXPOSURE: KEYS = [jx:{m}, jp:{m}], ARGV = [state, ttl_ms, window_ms].
/// Stores the state and returns every parked interaction. The flag of a state
/// already stored is kept (a replay must not reset "joined" or "counted");
/// it becomes "joined" when a parked interaction is within the window.
/// Parked interactions are not deleted: a replay after a crash must find them
/// again; they expire by TTL.
pub const EXPOSURE_LUA: &str = include_str!("lua/exposure.lua");

/// INTERACTION: KEYS = [jx:{m}, jp:{m}], ARGV = [interaction, ttl_ms, window_ms, max_parked].
/// Returns the exposure state when it exists (setting its joined flag when the
/// interaction is within the window); otherwise parks the interaction and
/// returns 0 (parked), 1 (already parked: a replay) or 2 (park list full).
pub const INTERACTION_LUA: &str = include_str!("lua/interaction.lua");

/// SWEEP_EXPOSURE: KEYS = [jx:{m}]. An open state is marked counted and
/// returned (an unmatched exposure); otherwise 0 (no state any more: expired
/// before the check) or 1 (joined, or counted already).
pub const SWEEP_EXPOSURE_LUA: &str = include_str!("lua/sweep_exposure.lua");

/// SWEEP_PARKED: KEYS = [jx:{m}, jp:{m}], ARGV = [slack_ms]. When the park
/// list is final (no push for a window: its TTL is down to the slack), returns
/// {1, exposure state or '', entries parked since the last counted marker...}
/// and appends a marker (an empty entry). Otherwise {0} (no list, nothing
/// new) or {2} (pushed to since: a later due entry will check it).
pub const SWEEP_PARKED_LUA: &str = include_str!("lua/sweep_parked.lua");

/// UNLOCK: KEYS = [lock], ARGV = [token]: deletes the lock if we still hold it.
pub const UNLOCK_LUA: &str = include_str!("lua/unlock.lua");

/// RENEW: KEYS = [lock], ARGV = [token, ms]: extends the lock if we still hold it.
pub const RENEW_LUA: &str = include_str!("lua/renew.lua");

/// One Lua script: its full source and SHA1 (for `EVALSHA`).
#[derive(Debug, Clone)]
pub struct Script {
    pub source: String,
    pub sha: String,
}

impl Script {
    fn new(source: String) -> Script {
        let sha = redis::Script::new(&source).get_hash().to_owned();
        Script { source, sha }
    }
}

/// The joiner's scripts, loaded with `SCRIPT LOAD` on every master.
#[derive(Debug, Clone)]
pub struct Scripts {
    pub exposure: Script,
    pub interaction: Script,
    pub sweep_exposure: Script,
    pub sweep_parked: Script,
    pub unlock: Script,
    pub renew: Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        Scripts {
            exposure: Script::new(format!("{LUA_TS}{EXPOSURE_LUA}")),
            interaction: Script::new(format!("{LUA_TS}{INTERACTION_LUA}")),
            sweep_exposure: Script::new(SWEEP_EXPOSURE_LUA.to_owned()),
            sweep_parked: Script::new(SWEEP_PARKED_LUA.to_owned()),
            unlock: Script::new(UNLOCK_LUA.to_owned()),
            renew: Script::new(RENEW_LUA.to_owned()),
        }
    }

    pub fn all(&self) -> [&Script; 6] {
        [
            &self.exposure,
            &self.interaction,
            &self.sweep_exposure,
            &self.sweep_parked,
            &self.unlock,
            &self.renew,
        ]
    }
}

impl Default for Scripts {
    fn default() -> Self {
        Self::new()
    }
}

/// `EVALSHA sha nkeys keys... args...` as a plain command (for pipelines).
pub fn evalsha(script: &Script, keys: &[&[u8]], args: &[&[u8]]) -> redis::Cmd {
    let mut c = redis::cmd("EVALSHA");
    c.arg(&script.sha).arg(keys.len());
    for k in keys {
        c.arg(*k);
    }
    for a in args {
        c.arg(*a);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn exposure() -> Exposure<'static> {
        Exposure::parse(
            "2026-11-21 10:00:00.456\tm-5f1c2d3e4a5b6c7d\t4bf92f3577b34da6a3ce929d0e0e4736\t123456\t1001\t880011\t990022\t3\tios\t1.85",
        )
        .unwrap()
        .into_owned()
    }

    fn interaction() -> Interaction<'static> {
        Interaction::parse(
            "2026-11-21 10:03:12.004\tm-5f1c2d3e4a5b6c7d\t9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d\t123456\tclick\tdwell_ms=5300",
        )
        .unwrap()
        .into_owned()
    }

    #[test]
    fn exposure_round_trips_both_encodings() {
        let e = exposure();
        for enc in [Encoding::Compact, Encoding::Verbose] {
            let mut b = Vec::new();
            encode_exposure(&e, enc, &mut b);
            let st = decode_exposure(&e.mark_id, &b).unwrap();
            assert_eq!(st.flag, FLAG_OPEN);
            assert_eq!(st.exposure, e, "{enc:?}");
        }
        let mut b = Vec::new();
        encode_exposure(&e, Encoding::Compact, &mut b);
        assert!(b.len() <= 45, "compact state is {} bytes", b.len());
        b[0] = FLAG_JOINED;
        assert!(decode_exposure(&e.mark_id, &b).unwrap().joined());
        b[0] = FLAG_COUNTED;
        assert!(!decode_exposure(&e.mark_id, &b).unwrap().joined());
    }

    #[test]
    fn exposure_round_trips_awkward_values() {
        let mut e = exposure();
        let cases: Vec<(String, f64, u64)> = vec![
            ("ABCDEF".into(), 0.1 + 0.2, u64::MAX),
            ("abc".into(), 1e20, 0),
            ("x\u{e9}y-trace".into(), 0.0, 1),
            ("00".into(), 123.4567, 1 << 40),
            (
                "0123456789abcdef0123456789abcdef0123456789abcdef".into(),
                5e-324,
                7,
            ),
        ];
        for (trace, bid, uid) in cases {
            e.trace_id = Cow::Owned(trace);
            e.bid_price = bid;
            e.uid = uid;
            e.ad_id = u64::MAX;
            e.position = u16::MAX;
            e.psid = u32::MAX;
            e.ts_ms = 32_503_679_999_999; // the last ms of 2999
            let mut b = Vec::new();
            encode_exposure(&e, Encoding::Compact, &mut b);
            let got = decode_exposure(&e.mark_id, &b).unwrap().exposure;
            assert_eq!(got, e);
            assert_eq!(got.bid_price.to_bits(), e.bid_price.to_bits());
        }
    }

    #[test]
    fn interaction_round_trips_without_extras() {
        let i = interaction();
        for enc in [Encoding::Compact, Encoding::Verbose] {
            let mut b = Vec::new();
            encode_interaction(&i, enc, &mut b);
            let got = decode_interaction(&i.mark_id, &b).unwrap();
            assert_eq!(got.ts_ms, i.ts_ms);
            assert_eq!(got.trace_id, i.trace_id);
            assert_eq!(got.uid, i.uid);
            assert_eq!(got.action, i.action);
            if enc == Encoding::Compact {
                assert!(got.extra.is_empty());
                assert!(b.len() <= 34, "{}", b.len());
            }
            // The joined event is the same either way.
            let e = exposure();
            assert_eq!(
                schemas::Joined::from_pair(&e, &got),
                schemas::Joined::from_pair(&e, &i)
            );
        }
    }

    #[test]
    fn header_time_is_big_endian_6_bytes() {
        let i = interaction();
        let mut b = Vec::new();
        encode_interaction(&i, Encoding::Compact, &mut b);
        let ts = b[..6].iter().fold(0i64, |a, x| a * 256 + i64::from(*x));
        assert_eq!(ts, i.ts_ms);
        encode_exposure(&exposure(), Encoding::Compact, &mut b);
        let ts = b[1..7].iter().fold(0i64, |a, x| a * 256 + i64::from(*x));
        assert_eq!(ts, exposure().ts_ms);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for b in [
            &b""[..],
            b"0",
            b"0\0\0\0\0\0\0\x01\xff",
            b"2abcdefgh",
            b"0\0\0\0\0\0\0\x80",
        ] {
            assert!(decode_exposure("m", b).is_err(), "{b:?}");
        }
        for b in [&b""[..], b"\0\0\0\0\0\0\x01\x05ab", b"\0\0\0\0\0\0\x40"] {
            assert!(decode_interaction("m", b).is_err(), "{b:?}");
        }
    }

    #[test]
    fn window_rule() {
        let w = 3_600_000;
        assert!(in_window(1000, 1000, w), "same millisecond joins");
        assert!(
            in_window(1000, 1000 + w, w),
            "the window's end is inclusive"
        );
        assert!(!in_window(1000, 1001 + w, w), "one ms past the window");
        assert!(!in_window(1000, 999, w), "before the exposure (clock skew)");
        assert!(!in_window(i64::MAX, i64::MIN, w));
        assert!(!in_window(i64::MIN, i64::MAX, w));
    }

    #[test]
    fn keys_share_the_mark_id_hash_tag() {
        let k = Keys::new("t1:").unwrap();
        let (x, p) = (k.exposure("m-1"), k.parked("m-1"));
        assert_eq!(x, "t1:jx:{m-1}");
        assert_eq!(
            redis::cluster_routing::Slot::for_key(&x),
            redis::cluster_routing::Slot::for_key(&p)
        );
        assert!(Keys::new("a{b").is_err());
        assert!((0..1000).all(|n| due_shard(&format!("m-{n}")) < DUE_SHARDS));
    }
}
