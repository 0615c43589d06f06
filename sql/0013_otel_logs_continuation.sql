-- otel_logs shows a multiline event's continuation: ingest keeps the lines
-- after the first of a Filebeat multiline event (an error line's Java stack
-- trace) in the extra `_continuation` (schemas/README.md, "Filebeat
-- envelope"), which otel_traces has in SpanAttributes; the plugin's "View
-- logs" Body is the line's summary as in 0010, then a newline and those
-- lines, exactly like the trace dashboard's Logs panel on every server.
--
-- ClickHouse >= 23.3 only, like 0010 (nothing on 18.16). The view is dropped
-- and created again with the same columns (the Distributed otel_logs of a
-- cluster reads it by name; for that moment "View logs" finds no view), in
-- the idempotent forms of sql/README.md, so applying this twice changes
-- nothing. It is 0010's statement again but for Body: an applied migration is
-- never edited, and a view is replaced whole.

/*@since 23.3: DROP VIEW IF EXISTS {db}.otel_logs{on_cluster} */;

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
           ', host ', ResourceAttributes['host.name'], ')',
           if(mapContains(SpanAttributes, '_continuation'), concat('\n', SpanAttributes['_continuation']), '')) AS Body,
    CAST('' AS LowCardinality(String)) AS ResourceSchemaUrl,
    ResourceAttributes,
    CAST('' AS LowCardinality(String)) AS ScopeSchemaUrl,
    ScopeName,
    ScopeVersion,
    CAST(map(), 'Map(LowCardinality(String), String)') AS ScopeAttributes,
    SpanAttributes AS LogAttributes
FROM {db}.otel_traces */;
