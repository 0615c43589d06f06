-- Request rollups, kept by materialized views as rows arrive in ods_request.
--
-- AggregatingMergeTree with -State columns (valid on ClickHouse 18.16 and on
-- current releases; a plain UInt64 measure in an AggregatingMergeTree is
-- rejected by current servers). Read them with the -Merge combinators, e.g.
--   SELECT ts, service, countMerge(requests), sumMerge(errors),
--          quantilesTDigestMerge(0.5, 0.9, 0.99)(latency)
--   FROM agg_request_1s WHERE ts >= now() - 3600 GROUP BY ts, service
-- An error is a status >= 500.

-- Per second × service × api: the traffic overview.
CREATE TABLE IF NOT EXISTS {db}.agg_request_1s{on_cluster}
(
    ts           DateTime,
    service      {lc:String},
    api          {lc:String},
    requests     AggregateFunction(count),
    errors       AggregateFunction(sum, UInt64),
    latency_sum  AggregateFunction(sum, Float64),
    latency      AggregateFunction(quantilesTDigest(0.5, 0.9, 0.99), Float64)
)
ENGINE = {engine:AggregatingMergeTree}
PARTITION BY toYYYYMMDD(ts)
ORDER BY (ts, service, api)
/*@since 20.3: TTL ts + INTERVAL {raw_ttl_days} DAY */;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.agg_request_1s_mv{on_cluster}
TO {db}.agg_request_1s
AS SELECT
    ts,
    service,
    api,
    countState() AS requests,
    sumState(toUInt64(status >= 500)) AS errors,
    sumState(latency_ms) AS latency_sum,
    quantilesTDigestState(0.5, 0.9, 0.99)(latency_ms) AS latency
FROM {db}.ods_request
GROUP BY ts, service, api;

-- Per minute × placement (psid): the per-psid table. Counted at the edge
-- service only (caller = ''), so one ad request counts once, not once per hop.
CREATE TABLE IF NOT EXISTS {db}.agg_request_1m_psid{on_cluster}
(
    ts           DateTime,
    psid         UInt32,
    requests     AggregateFunction(count),
    errors       AggregateFunction(sum, UInt64),
    users        AggregateFunction(uniq, UInt64),
    latency_sum  AggregateFunction(sum, Float64),
    latency      AggregateFunction(quantilesTDigest(0.5, 0.9, 0.99), Float64)
)
ENGINE = {engine:AggregatingMergeTree}
PARTITION BY toYYYYMMDD(ts)
ORDER BY (ts, psid)
/*@since 20.3: TTL ts + INTERVAL {raw_ttl_days} DAY */;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.agg_request_1m_psid_mv{on_cluster}
TO {db}.agg_request_1m_psid
AS SELECT
    toStartOfMinute(ts) AS ts,
    psid,
    countState() AS requests,
    sumState(toUInt64(status >= 500)) AS errors,
    uniqState(uid) AS users,
    sumState(latency_ms) AS latency_sum,
    quantilesTDigestState(0.5, 0.9, 0.99)(latency_ms) AS latency
FROM {db}.ods_request
WHERE caller = ''
GROUP BY ts, psid;

-- Per hour × user: visits (ad requests at the edge) and hops (all request lines).
-- SummingMergeTree: read with sum(visits), sum(hops) ... GROUP BY uid.
CREATE TABLE IF NOT EXISTS {db}.agg_user_visits_1h{on_cluster}
(
    ts      DateTime,
    uid     UInt64,
    visits  UInt64,
    hops    UInt64
)
ENGINE = {engine:SummingMergeTree}
PARTITION BY toYYYYMMDD(ts)
ORDER BY (uid, ts)
/*@since 20.3: TTL ts + INTERVAL {raw_ttl_days} DAY */;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.agg_user_visits_1h_mv{on_cluster}
TO {db}.agg_user_visits_1h
AS SELECT
    toStartOfHour(ts) AS ts,
    uid,
    toUInt64(countIf(caller = '')) AS visits,
    toUInt64(count()) AS hops
FROM {db}.ods_request
GROUP BY ts, uid;
