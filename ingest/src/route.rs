//! From one Kafka message to one encoded row: parse the Filebeat envelope, pick
//! the log type (topic mapping, overridden by `fields.log_type`), parse and
//! validate the line, and encode it as RowBinary for its table — or explain,
//! precisely, why it is a dead letter.

use schemas::{Envelope, Exposure, Interaction, Joined, LogType, ParseError, Request};

use crate::rowbinary::RowBinary;
use crate::table::Table;

/// Where a message came from in Kafka.
#[derive(Debug, Clone, Copy)]
pub struct MsgMeta<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// The message timestamp (CreateTime or LogAppendTime), ms.
    pub kafka_ts_ms: i64,
}

/// Limits applied beyond the line format itself.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_future_skew_ms: i64,
    pub max_past_age_ms: i64,
}

/// Why a message was rejected: a stable `reason` code and the full message.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub log_type: Option<LogType>,
    pub reason: &'static str,
    pub error: String,
}

impl Rejection {
    fn parse(log_type: Option<LogType>, e: ParseError) -> Self {
        Rejection {
            log_type,
            reason: e.reason(),
            error: e.to_string(),
        }
    }
}

/// A message that parsed and validated: its record, ready to encode.
pub struct Parsed<'a> {
    pub envelope: Envelope<'a>,
    pub record: Record<'a>,
}

/// One parsed line of any type. It borrows from the envelope's message, which
/// is itself borrowed from the Kafka payload where no unescaping was needed.
pub enum Record<'a> {
    Request(Request<'a>),
    Exposure(Exposure<'a>),
    Interaction(Interaction<'a>),
    Joined(Joined<'a>),
}

impl Record<'_> {
    pub fn table(&self) -> Table {
        match self {
            Record::Request(_) => Table::Request,
            Record::Exposure(_) => Table::Exposure,
            Record::Interaction(_) => Table::Interaction,
            Record::Joined(_) => Table::Joined,
        }
    }

    /// The row's `ts` column (for joined rows: the exposure time).
    pub fn event_ts_ms(&self) -> i64 {
        match self {
            Record::Request(r) => r.ts_ms,
            Record::Exposure(r) => r.ts_ms,
            Record::Interaction(r) => r.ts_ms,
            Record::Joined(r) => r.exposure_ts_ms,
        }
    }
}

/// Decides the log type of a message: `fields.log_type` wins over the topic's type.
fn log_type_of(env: &Envelope<'_>, topic_type: Option<LogType>) -> Result<LogType, Rejection> {
    match &env.log_type {
        Some(t) => t
            .parse::<LogType>()
            .map_err(|_| Rejection::parse(topic_type, ParseError::UnknownLogType(t.to_string()))),
        None => topic_type.ok_or_else(|| Rejection {
            log_type: None,
            reason: "unknown_log_type",
            error: "topic has no log type mapping and the message no fields.log_type".into(),
        }),
    }
}

/// Parses and validates one message. The envelope must be parsed from `payload`
/// in the caller's scope because the record borrows from it.
pub fn parse<'a>(
    payload: &'a [u8],
    envelope: &'a Envelope<'a>,
    topic_type: Option<LogType>,
    limits: &Limits,
    now_ms: i64,
) -> Result<Record<'a>, Rejection> {
    debug_assert!(payload.len() <= limits.max_message_bytes);
    let t = log_type_of(envelope, topic_type)?;
    let line: &'a str = &envelope.message;
    let rec = match t {
        LogType::Request => Request::parse(line).map(Record::Request),
        LogType::Exposure => Exposure::parse(line).map(Record::Exposure),
        LogType::Interaction => Interaction::parse(line).map(Record::Interaction),
        LogType::Joined => Joined::parse(line).map(Record::Joined),
    }
    .map_err(|e| Rejection::parse(Some(t), e))?;
    // A joined event has a second time: an interaction time in year 2500 was
    // stored with its DateTime column clamped (to 2106), not exactly.
    let second = match &rec {
        Record::Joined(j) => Some(j.interaction_ts_ms),
        _ => None,
    };
    for ts in std::iter::once(rec.event_ts_ms()).chain(second) {
        check_time(t, ts, limits, now_ms)?;
    }
    Ok(rec)
}

fn check_time(t: LogType, ts: i64, limits: &Limits, now_ms: i64) -> Result<(), Rejection> {
    if ts > now_ms + limits.max_future_skew_ms || ts < now_ms - limits.max_past_age_ms {
        return Err(Rejection {
            log_type: Some(t),
            reason: "time_out_of_range",
            error: format!(
                "event time {ts} ms is outside the accepted range [now - {} s, now + {} s]",
                limits.max_past_age_ms / 1000,
                limits.max_future_skew_ms / 1000
            ),
        });
    }
    Ok(())
}

/// Checks size and parses the envelope; the first step of [`parse`].
pub fn envelope<'a>(payload: Option<&'a [u8]>, limits: &Limits) -> Result<Envelope<'a>, Rejection> {
    let payload = payload.unwrap_or_default();
    if payload.len() > limits.max_message_bytes {
        return Err(Rejection::parse(
            None,
            ParseError::TooLarge {
                size: payload.len(),
                limit: limits.max_message_bytes,
            },
        ));
    }
    Envelope::parse(payload).map_err(|e| Rejection::parse(None, e))
}

/// Encodes a record's row (own columns then source columns) onto `buf`.
pub fn encode(
    rec: &Record<'_>,
    env: &Envelope<'_>,
    meta: &MsgMeta<'_>,
    ingested_at_ms: i64,
    buf: &mut Vec<u8>,
) {
    match rec {
        Record::Request(r) => {
            buf.put_datetime_ms(r.ts_ms);
            buf.put_u64(r.ts_ms as u64);
            buf.put_str(&r.trace_id);
            buf.put_str(&r.span_id);
            buf.put_str(&r.parent_span_id);
            buf.put_str(&r.service);
            buf.put_str(&r.caller);
            buf.put_str(&r.api);
            buf.put_u64(r.uid);
            buf.put_u32(r.psid);
            buf.put_u16(r.status);
            buf.put_f64(r.latency_ms);
            buf.put_str(&r.host);
            buf.put_str(&r.idc);
            buf.put_str_array(r.extra.iter().map(|(k, _)| k.as_ref()));
            buf.put_str_array(r.extra.iter().map(|(_, v)| v.as_ref()));
        }
        Record::Exposure(r) => {
            buf.put_datetime_ms(r.ts_ms);
            buf.put_u64(r.ts_ms as u64);
            buf.put_str(&r.mark_id);
            buf.put_str(&r.trace_id);
            buf.put_u64(r.uid);
            buf.put_u32(r.psid);
            buf.put_u64(r.ad_id);
            buf.put_u64(r.creative_id);
            buf.put_u16(r.position);
            buf.put_str(&r.platform);
            buf.put_f64(r.bid_price);
        }
        Record::Interaction(r) => {
            buf.put_datetime_ms(r.ts_ms);
            buf.put_u64(r.ts_ms as u64);
            buf.put_str(&r.mark_id);
            buf.put_str(&r.trace_id);
            buf.put_u64(r.uid);
            buf.put_str(&r.action);
            buf.put_str_array(r.extra.iter().map(|(k, _)| k.as_ref()));
            buf.put_str_array(r.extra.iter().map(|(_, v)| v.as_ref()));
        }
        Record::Joined(r) => {
            buf.put_u64(r.joined_id);
            buf.put_str(&r.mark_id);
            buf.put_datetime_ms(r.exposure_ts_ms);
            buf.put_u64(r.exposure_ts_ms as u64);
            buf.put_str(&r.exposure_trace_id);
            buf.put_u64(r.uid);
            buf.put_u32(r.psid);
            buf.put_u64(r.ad_id);
            buf.put_u64(r.creative_id);
            buf.put_u16(r.position);
            buf.put_str(&r.platform);
            buf.put_f64(r.bid_price);
            buf.put_datetime_ms(r.interaction_ts_ms);
            buf.put_u64(r.interaction_ts_ms as u64);
            buf.put_str(&r.interaction_trace_id);
            buf.put_str(&r.action);
            buf.put_i64(r.delay_ms);
        }
    }
    put_kafka_columns(buf, meta);
    buf.put_str(env.host.as_deref().unwrap_or(""));
    buf.put_str(env.file_path.as_deref().unwrap_or(""));
    buf.put_u64(env.file_offset.unwrap_or(0));
    buf.put_datetime_ms(ingested_at_ms);
}

/// `_topic, _partition, _offset, _kafka_ts_ms`: every raw table and dead_letter.
#[inline]
fn put_kafka_columns(buf: &mut Vec<u8>, meta: &MsgMeta<'_>) {
    buf.put_str(meta.topic);
    buf.put_u32(meta.partition as u32);
    buf.put_u64(meta.offset as u64);
    buf.put_u64(meta.kafka_ts_ms.max(0) as u64);
}

/// Encodes a dead-letter row (raw bytes capped at `max_raw`).
pub fn encode_dead_letter(
    rej: &Rejection,
    payload: &[u8],
    meta: &MsgMeta<'_>,
    now_ms: i64,
    max_raw: usize,
    buf: &mut Vec<u8>,
) {
    buf.put_datetime_ms(now_ms);
    buf.put_str(rej.log_type.map(|t| t.as_str()).unwrap_or(""));
    buf.put_str(rej.reason);
    buf.put_str(&rej.error);
    buf.put_bytes(&payload[..payload.len().min(max_raw)]);
    buf.put_u64(payload.len() as u64);
    put_kafka_columns(buf, meta);
}
