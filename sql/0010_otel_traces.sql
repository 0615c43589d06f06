-- OpenTelemetry-shaped spans and log lines, for the Grafana ClickHouse
-- plugin's own trace search, trace view ("View trace") and logs ("View logs")
-- with no custom SQL (grafana/README.md, "Traces and logs").
--
-- Only on servers >= 23.3 (every statement is gated): the shapes need
-- DateTime64(9), Map, SimpleAggregateFunction and mapFromArrays, which
-- ClickHouse 18.16 lacks; 23.3 is the first LTS that has all of them. On 18.16
-- this migration creates nothing (and is recorded like any other: a server
-- upgraded later gets these tables from a new migration, as for TTLs).
-- The trace dashboard itself reads ods_request and runs on both.
--
--   otel_traces              one span per request line, in the column layout of
--                            the OpenTelemetry collector's ClickHouse exporter
--                            (exporter/clickhouseexporter traces_table.sql), fed
--                            by otel_traces_mv from ods_request. Timestamp is
--                            the line's time (a hop's start: ts, with the
--                            millisecond of ts_ms, so that partition and TTL
--                            follow the raw row's ts exactly), Duration its
--                            latency in ns; StatusCode 'Error' for status >= 500,
--                            else 'Unset'.
--   otel_traces_trace_id_ts  TraceId -> Start/End (whole seconds) as
--                            SimpleAggregateFunction(min/max, DateTime): the
--                            plugin reads min(Start), max(End) + 1 to narrow a
--                            trace lookup to its time range (a state column,
--                            AggregateFunction, would not work with min()).
--   otel_logs                a view over otel_traces: each request line as a log
--                            line in the exporter's otel_logs layout (Body
--                            rebuilt from the parsed fields; the raw line is not
--                            stored). It has TimestampTime too, so plugin
--                            versions with the 1.2.9 column map work as well.
--
-- Every statement is a whole gated statement: gates cannot contain line-ending
-- semicolons or comments of their own, so the notes are up here.
-- SpanAttributes: adlog.caller, adlog.api, http.response.status_code,
-- adlog.latency_ms, enduser.id (uid), adlog.psid, then the line's extra keys.
-- ResourceAttributes: service.name, host.name, adlog.idc.

/*@since 23.3: CREATE TABLE IF NOT EXISTS {db}.otel_traces{on_cluster}
(
    Timestamp           DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TraceId             String CODEC(ZSTD(1)),
    SpanId              String CODEC(ZSTD(1)),
    ParentSpanId        String CODEC(ZSTD(1)),
    TraceState          String CODEC(ZSTD(1)),
    SpanName            LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind            LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName         LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes  Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName           String CODEC(ZSTD(1)),
    ScopeVersion        String CODEC(ZSTD(1)),
    SpanAttributes      Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration            UInt64 CODEC(T64, ZSTD(1)),
    StatusCode          LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage       String CODEC(ZSTD(1)),
    Events Nested (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    Links Nested (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1
)
ENGINE = {engine:MergeTree}
PARTITION BY toDate(Timestamp)
PRIMARY KEY (ServiceName, SpanName, toDateTime(Timestamp))
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp), Timestamp)
TTL toDateTime(Timestamp) + INTERVAL {raw_ttl_days} DAY
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1 */;

/*@since 23.3: CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.otel_traces_mv{on_cluster}
TO {db}.otel_traces
AS SELECT
    fromUnixTimestamp64Nano(toInt64(toUInt32(ts)) * 1000000000 + toInt64(ts_ms % 1000) * 1000000) AS Timestamp,
    trace_id AS TraceId,
    span_id AS SpanId,
    parent_span_id AS ParentSpanId,
    api AS SpanName,
    'Server' AS SpanKind,
    service AS ServiceName,
    map('service.name', toString(service), 'host.name', toString(host), 'adlog.idc', toString(idc)) AS ResourceAttributes,
    'adlog' AS ScopeName,
    mapFromArrays(
        arrayConcat(['adlog.caller', 'adlog.api', 'http.response.status_code', 'adlog.latency_ms', 'enduser.id', 'adlog.psid'], extra_keys),
        arrayConcat([toString(caller), toString(api), toString(status), toString(latency_ms), toString(uid), toString(psid)], extra_values)
    ) AS SpanAttributes,
    toUInt64(greatest(round(latency_ms * 1000000), 0)) AS Duration,
    if(status >= 500, 'Error', 'Unset') AS StatusCode,
    if(status >= 500, concat('status ', toString(status)), '') AS StatusMessage
FROM {db}.ods_request */;

/*@since 23.3: CREATE TABLE IF NOT EXISTS {db}.otel_traces_trace_id_ts{on_cluster}
(
    TraceId  String CODEC(ZSTD(1)),
    Start    SimpleAggregateFunction(min, DateTime) CODEC(ZSTD(1)),
    End      SimpleAggregateFunction(max, DateTime) CODEC(ZSTD(1))
)
ENGINE = {engine:AggregatingMergeTree}
PARTITION BY toYYYYMMDD(toDate(Start))
ORDER BY TraceId
TTL toDateTime(Start) + INTERVAL {raw_ttl_days} DAY
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1 */;

/*@since 23.3: CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.otel_traces_trace_id_ts_mv{on_cluster}
TO {db}.otel_traces_trace_id_ts
AS SELECT
    TraceId,
    min(Timestamp) AS Start,
    max(Timestamp) AS End
FROM {db}.otel_traces
WHERE TraceId != ''
GROUP BY TraceId */;

/*@since 23.3: CREATE VIEW IF NOT EXISTS {db}.otel_logs{on_cluster}
AS SELECT
    Timestamp,
    toDateTime(Timestamp) AS TimestampTime,
    TraceId,
    SpanId,
    toUInt8(1) AS TraceFlags,
    multiIf(StatusCode = 'Error', 'ERROR', toUInt16OrZero(SpanAttributes['http.response.status_code']) >= 400, 'WARN', 'INFO') AS SeverityText,
    toUInt8(multiIf(StatusCode = 'Error', 17, toUInt16OrZero(SpanAttributes['http.response.status_code']) >= 400, 13, 9)) AS SeverityNumber,
    ServiceName,
    concat(ServiceName, ' ', SpanName, ' -> ', SpanAttributes['http.response.status_code'],
           ' in ', SpanAttributes['adlog.latency_ms'], ' ms (caller ', if(SpanAttributes['adlog.caller'] = '', '-', SpanAttributes['adlog.caller']),
           ', uid ', SpanAttributes['enduser.id'], ', psid ', SpanAttributes['adlog.psid'],
           ', host ', ResourceAttributes['host.name'], ')') AS Body,
    CAST('' AS LowCardinality(String)) AS ResourceSchemaUrl,
    ResourceAttributes,
    CAST('' AS LowCardinality(String)) AS ScopeSchemaUrl,
    ScopeName,
    ScopeVersion,
    CAST(map(), 'Map(LowCardinality(String), String)') AS ScopeAttributes,
    SpanAttributes AS LogAttributes
FROM {db}.otel_traces */;

/*@since 23.3 cluster: CREATE TABLE IF NOT EXISTS {dist_db}.otel_traces{on_cluster} AS {db}.otel_traces
ENGINE = Distributed({cluster}, {db}, otel_traces) */;

/*@since 23.3 cluster: CREATE TABLE IF NOT EXISTS {dist_db}.otel_traces_trace_id_ts{on_cluster} AS {db}.otel_traces_trace_id_ts
ENGINE = Distributed({cluster}, {db}, otel_traces_trace_id_ts) */;

/*@since 23.3 cluster: CREATE TABLE IF NOT EXISTS {dist_db}.otel_logs{on_cluster} AS {db}.otel_logs
ENGINE = Distributed({cluster}, {db}, otel_logs) */;
