-- The ELT baseline of bench/ingest: raw Kafka messages land in a Null table
-- (kafka_raw), and materialized views split them into the same ods_* tables
-- that `ingest migrate` creates (so the storage side -- sorting, parts, the
-- ingest_ledger views and the agg_* rollups -- is identical for both
-- contenders; only where parsing happens differs).
--
-- Placeholders: {db}, {request_topic}, {exposure_topic}, {interaction_topic}.
-- Statements are separated by a line holding only ";".
--
-- Parsing is deliberately what such a setup usually does: NO validation.
-- A value is a Filebeat envelope when it starts with '{' and has a "message"
-- key (then the line is that string, JSON-unescaped by
-- visitParamExtractString), else it is the bare line. A line starting with '{'
-- is the JSON form of the log line (fields read with visitParamExtract*),
-- otherwise it is tab-separated (splitByChar). TSV backslash escapes are not
-- undone, fractions of a second are assumed to have 3 digits, and malformed
-- messages become rows of zeros/empty strings instead of dead letters.

CREATE TABLE IF NOT EXISTS {db}.kafka_raw
(
    topic        String,
    partition    UInt32,
    offset       UInt64,
    kafka_ts_ms  UInt64,
    value        String
)
ENGINE = Null
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.kafka_raw_request_mv TO {db}.ods_request
AS WITH
    substring(value, 1, 1) = '{' AND visitParamHas(value, 'message') AS env,
    if(env, visitParamExtractString(value, 'message'), value) AS line,
    substring(line, 1, 1) = '{' AS j,
    splitByChar('\t', line) AS f,
    if(j, visitParamExtractString(line, 'time'), f[1]) AS t,
    multiIf(j AND t = '', visitParamExtractUInt(line, 'time'),
            match(t, '^[0-9]+$'), toUInt64OrZero(t),
            toUInt64(toDateTimeOrZero(substring(replaceOne(t, 'T', ' '), 1, 19))) * 1000
              + toUInt64OrZero(substring(t, 21, 3))) AS t_ms,
    if(j, visitParamExtractRaw(line, 'extra'), '') AS jx,
    arrayFilter(p -> p != '', splitByChar('&', f[14])) AS px
SELECT
    toDateTime(intDiv(t_ms, 1000)) AS ts,
    t_ms AS ts_ms,
    if(j, visitParamExtractString(line, 'trace_id'), f[2]) AS trace_id,
    if(j, visitParamExtractString(line, 'span_id'), f[3]) AS span_id,
    if(j, visitParamExtractString(line, 'parent_span_id'), f[4]) AS parent_span_id,
    if(j, visitParamExtractString(line, 'service'), f[5]) AS service,
    if(j, visitParamExtractString(line, 'caller'), f[6]) AS caller,
    if(j, visitParamExtractString(line, 'api'), f[7]) AS api,
    if(j, visitParamExtractUInt(line, 'uid'), toUInt64OrZero(f[8])) AS uid,
    toUInt32(if(j, visitParamExtractUInt(line, 'psid'), toUInt32OrZero(f[9]))) AS psid,
    toUInt16(if(j, visitParamExtractUInt(line, 'status'), toUInt16OrZero(f[10]))) AS status,
    if(j, visitParamExtractFloat(line, 'latency_ms'), toFloat64OrZero(f[11])) AS latency_ms,
    if(j, visitParamExtractString(line, 'host'), f[12]) AS host,
    if(j, visitParamExtractString(line, 'idc'), f[13]) AS idc,
    if(j, extractAll(jx, '"([^"]*)":'), arrayMap(p -> splitByChar('=', p)[1], px)) AS extra_keys,
    if(j, extractAll(jx, ':"([^"]*)"'), arrayMap(p -> substring(p, position(p, '=') + 1), px)) AS extra_values,
    topic AS _topic,
    partition AS _partition,
    offset AS _offset,
    kafka_ts_ms AS _kafka_ts_ms,
    if(env, visitParamExtractString(value, 'name'), '') AS _src_host,
    if(env, visitParamExtractString(value, 'path'), '') AS _src_file,
    if(env, visitParamExtractUInt(value, 'offset'), 0) AS _src_file_offset,
    now() AS _ingested_at
FROM {db}.kafka_raw
WHERE topic = '{request_topic}'
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.kafka_raw_exposure_mv TO {db}.ods_exposure
AS WITH
    substring(value, 1, 1) = '{' AND visitParamHas(value, 'message') AS env,
    if(env, visitParamExtractString(value, 'message'), value) AS line,
    substring(line, 1, 1) = '{' AS j,
    splitByChar('\t', line) AS f,
    if(j, visitParamExtractString(line, 'time'), f[1]) AS t,
    multiIf(j AND t = '', visitParamExtractUInt(line, 'time'),
            match(t, '^[0-9]+$'), toUInt64OrZero(t),
            toUInt64(toDateTimeOrZero(substring(replaceOne(t, 'T', ' '), 1, 19))) * 1000
              + toUInt64OrZero(substring(t, 21, 3))) AS t_ms
SELECT
    toDateTime(intDiv(t_ms, 1000)) AS ts,
    t_ms AS ts_ms,
    if(j, visitParamExtractString(line, 'mark_id'), f[2]) AS mark_id,
    if(j, visitParamExtractString(line, 'trace_id'), f[3]) AS trace_id,
    if(j, visitParamExtractUInt(line, 'uid'), toUInt64OrZero(f[4])) AS uid,
    toUInt32(if(j, visitParamExtractUInt(line, 'psid'), toUInt32OrZero(f[5]))) AS psid,
    if(j, visitParamExtractUInt(line, 'ad_id'), toUInt64OrZero(f[6])) AS ad_id,
    if(j, visitParamExtractUInt(line, 'creative_id'), toUInt64OrZero(f[7])) AS creative_id,
    toUInt16(if(j, visitParamExtractUInt(line, 'position'), toUInt16OrZero(f[8]))) AS position,
    if(j, visitParamExtractString(line, 'platform'), f[9]) AS platform,
    if(j, visitParamExtractFloat(line, 'bid_price'), toFloat64OrZero(f[10])) AS bid_price,
    topic AS _topic,
    partition AS _partition,
    offset AS _offset,
    kafka_ts_ms AS _kafka_ts_ms,
    if(env, visitParamExtractString(value, 'name'), '') AS _src_host,
    if(env, visitParamExtractString(value, 'path'), '') AS _src_file,
    if(env, visitParamExtractUInt(value, 'offset'), 0) AS _src_file_offset,
    now() AS _ingested_at
FROM {db}.kafka_raw
WHERE topic = '{exposure_topic}'
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.kafka_raw_interaction_mv TO {db}.ods_interaction
AS WITH
    substring(value, 1, 1) = '{' AND visitParamHas(value, 'message') AS env,
    if(env, visitParamExtractString(value, 'message'), value) AS line,
    substring(line, 1, 1) = '{' AS j,
    splitByChar('\t', line) AS f,
    if(j, visitParamExtractString(line, 'time'), f[1]) AS t,
    multiIf(j AND t = '', visitParamExtractUInt(line, 'time'),
            match(t, '^[0-9]+$'), toUInt64OrZero(t),
            toUInt64(toDateTimeOrZero(substring(replaceOne(t, 'T', ' '), 1, 19))) * 1000
              + toUInt64OrZero(substring(t, 21, 3))) AS t_ms,
    if(j, visitParamExtractRaw(line, 'extra'), '') AS jx,
    arrayFilter(p -> p != '', splitByChar('&', f[6])) AS px
SELECT
    toDateTime(intDiv(t_ms, 1000)) AS ts,
    t_ms AS ts_ms,
    if(j, visitParamExtractString(line, 'mark_id'), f[2]) AS mark_id,
    if(j, visitParamExtractString(line, 'trace_id'), f[3]) AS trace_id,
    if(j, visitParamExtractUInt(line, 'uid'), toUInt64OrZero(f[4])) AS uid,
    if(j, visitParamExtractString(line, 'action'), f[5]) AS action,
    if(j, extractAll(jx, '"([^"]*)":'), arrayMap(p -> splitByChar('=', p)[1], px)) AS extra_keys,
    if(j, extractAll(jx, ':"([^"]*)"'), arrayMap(p -> substring(p, position(p, '=') + 1), px)) AS extra_values,
    topic AS _topic,
    partition AS _partition,
    offset AS _offset,
    kafka_ts_ms AS _kafka_ts_ms,
    if(env, visitParamExtractString(value, 'name'), '') AS _src_host,
    if(env, visitParamExtractString(value, 'path'), '') AS _src_file,
    if(env, visitParamExtractUInt(value, 'offset'), 0) AS _src_file_offset,
    now() AS _ingested_at
FROM {db}.kafka_raw
WHERE topic = '{interaction_topic}'
;
