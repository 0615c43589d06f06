-- Service-call edges per minute, for the topology (node graph) panel:
-- caller → callee (= the service that wrote the line) × api, kept by a
-- materialized view from ods_request. Edge-service lines (caller = '') have no
-- upstream service and are left out; per-service node stats (request rate,
-- error rate, latency) come from agg_request_1s.
--
-- AggregatingMergeTree with -State columns (valid on 18.16 and current
-- releases). An error is a status >= 500. Read with the -Merge combinators:
--   SELECT caller, service, countMerge(calls) AS calls, sumMerge(errors) AS errors,
--          sumMerge(latency_sum) / countMerge(calls) AS avg_latency_ms,
--          quantilesTDigestMerge(0.5, 0.9, 0.99)(latency) AS latency_q
--   FROM {dist_db}.agg_service_edges_1m
--   WHERE ts >= now() - 3600
--   GROUP BY caller, service
CREATE TABLE IF NOT EXISTS {db}.agg_service_edges_1m{on_cluster}
(
    ts           DateTime,
    caller       {lc:String},
    service      {lc:String},
    api          {lc:String},
    calls        AggregateFunction(count),
    errors       AggregateFunction(sum, UInt64),
    latency_sum  AggregateFunction(sum, Float64),
    latency      AggregateFunction(quantilesTDigest(0.5, 0.9, 0.99), Float64)
)
ENGINE = {engine:AggregatingMergeTree}
PARTITION BY toYYYYMMDD(ts)
ORDER BY (ts, caller, service, api)
/*@since 20.3: TTL ts + INTERVAL {raw_ttl_days} DAY */;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.agg_service_edges_1m_mv{on_cluster}
TO {db}.agg_service_edges_1m
AS SELECT
    toStartOfMinute(ts) AS ts,
    caller,
    service,
    api,
    countState() AS calls,
    sumState(toUInt64(status >= 500)) AS errors,
    sumState(latency_ms) AS latency_sum,
    quantilesTDigestState(0.5, 0.9, 0.99)(latency_ms) AS latency
FROM {db}.ods_request
WHERE caller != ''
GROUP BY ts, caller, service, api;

/*@cluster: CREATE TABLE IF NOT EXISTS {dist_db}.agg_service_edges_1m{on_cluster} AS {db}.agg_service_edges_1m
ENGINE = Distributed({cluster}, {db}, agg_service_edges_1m) */;
