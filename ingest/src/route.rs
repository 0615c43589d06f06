//! From one Kafka message to one encoded row: parse the Filebeat envelope, pick
//! the log type (topic mapping, overridden by `fields.log_type`), parse and
//! validate the line, and encode it as RowBinary for its table — or explain,
//! precisely, why it is a dead letter.

use std::borrow::Cow;

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
    let mut rec = match t {
        LogType::Request => Request::parse(line).map(Record::Request),
        LogType::Exposure => Exposure::parse(line).map(Record::Exposure),
        LogType::Interaction => Interaction::parse(line).map(Record::Interaction),
        LogType::Joined => Joined::parse(line).map(Record::Joined),
    }
    .map_err(|e| Rejection::parse(Some(t), e))?;
    if let Some(rest) = &envelope.continuation {
        keep_continuation(&mut rec, t, rest)?;
    }
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

/// The extra key under which a multiline event's continuation lines (the
/// stack trace after an error line) are stored.
pub const CONTINUATION_KEY: &str = "_continuation";

/// Keeps a multiline event's continuation with the row of its first line: as
/// the last extra, `_continuation`, of a request or interaction row, where the
/// trace lookup and the Grafana panels show a line's extras. Exposure and
/// joined lines have no extras (and machine-written lines never span several);
/// rather than drop the continuation they are dead letters,
/// `unexpected_continuation`, raw bytes kept for a replay.
fn keep_continuation<'a>(rec: &mut Record<'a>, t: LogType, rest: &'a str) -> Result<(), Rejection> {
    let extra = match rec {
        Record::Request(r) => &mut r.extra,
        Record::Interaction(r) => &mut r.extra,
        Record::Exposure(_) | Record::Joined(_) => {
            return Err(Rejection {
                log_type: Some(t),
                reason: "unexpected_continuation",
                error: format!(
                    "multiline event: {} continuation line(s) after a valid {t} line, which has no extra field to keep them in",
                    rest.split('\n').count()
                ),
            });
        }
    };
    extra.push((Cow::Borrowed(CONTINUATION_KEY), Cow::Borrowed(rest)));
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "2026-11-21 10:00:00.123\t4bf92f3577b34da6a3ce929d0e0e4736\t00f067aa0ba902b7\t\tad-gateway\t\t/v1/feed\t123456\t1001\t500\t12.75\tad-web-017\tyf\tregion=cn-north";
    const STACK: &str = "java.lang.IllegalStateException: timed out\n\tat com.example.ad.BidClient.call(BidClient.java:88)\n\t... 2 more";
    const NOW: i64 = 1_795_255_200_123;

    fn limits() -> Limits {
        Limits {
            max_message_bytes: 1 << 20,
            max_future_skew_ms: 60_000,
            max_past_age_ms: 86_400_000,
        }
    }

    /// A 7.x multiline document of `first` and `STACK`.
    fn multiline(first: &str) -> Vec<u8> {
        let msg = serde_json::to_string(&format!("{first}\n{STACK}")).unwrap();
        format!(r#"{{"log":{{"offset":8,"file":{{"path":"/a.log"}},"flags":["multiline"]}},"message":{msg},"host":{{"name":"h"}}}}"#).into_bytes()
    }

    fn outcome(payload: &[u8], t: LogType) -> Result<Vec<(String, String)>, Rejection> {
        let env = envelope(Some(payload), &limits())?;
        let extra = match parse(payload, &env, Some(t), &limits(), NOW)? {
            Record::Request(r) => r.extra,
            Record::Interaction(r) => r.extra,
            _ => Vec::new(),
        };
        Ok(extra
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect())
    }

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn a_multiline_request_keeps_its_stack_trace_as_the_last_extra() {
        assert_eq!(
            outcome(&multiline(LINE), LogType::Request).unwrap(),
            vec![pair("region", "cn-north"), pair(CONTINUATION_KEY, STACK)]
        );
        // One-line events are as before.
        let one = format!(r#"{{"message":{}}}"#, serde_json::to_string(LINE).unwrap());
        assert_eq!(
            outcome(one.as_bytes(), LogType::Request).unwrap(),
            vec![pair("region", "cn-north")]
        );
        // The raw codec's multiline value too.
        let bare = format!("{LINE}\n{STACK}\n");
        assert_eq!(
            outcome(bare.as_bytes(), LogType::Request).unwrap(),
            vec![pair("region", "cn-north"), pair(CONTINUATION_KEY, STACK)]
        );
    }

    #[test]
    fn a_multiline_interaction_keeps_it_too() {
        let line = "2026-11-21 10:00:00.123\tm-1\t4bf92f3577b34da6a3ce929d0e0e4736\t123456\tclick\tdwell_ms=5300";
        assert_eq!(
            outcome(&multiline(line), LogType::Interaction).unwrap(),
            vec![pair("dwell_ms", "5300"), pair(CONTINUATION_KEY, STACK)]
        );
    }

    #[test]
    fn a_multiline_event_with_a_bad_first_line_is_that_line_s_dead_letter() {
        let bad = LINE.replace("\t500\t", "\t5x0\t");
        let rej = outcome(&multiline(&bad), LogType::Request).unwrap_err();
        assert_eq!(
            (rej.log_type, rej.reason),
            (Some(LogType::Request), "bad_field")
        );
        assert_eq!(
            rej.error,
            "field `status` at byte 108: not an unsigned decimal integer"
        );
        let rej = outcome(&multiline("not a line"), LogType::Request).unwrap_err();
        assert_eq!(rej.reason, "field_count");
    }

    #[test]
    fn a_multiline_exposure_is_a_dead_letter_not_a_silent_loss() {
        let line = "2026-11-21 10:00:00.456\tm-5f1c2d3e4a5b6c7d\t4bf92f3577b34da6a3ce929d0e0e4736\t123456\t1001\t880011\t990022\t3\tios\t1.85";
        assert!(outcome(line.as_bytes(), LogType::Exposure).is_ok());
        let rej = outcome(&multiline(line), LogType::Exposure).unwrap_err();
        assert_eq!(
            (rej.log_type, rej.reason, rej.error.as_str()),
            (
                Some(LogType::Exposure),
                "unexpected_continuation",
                "multiline event: 3 continuation line(s) after a valid exposure line, which has no extra field to keep them in"
            )
        );
    }
}
