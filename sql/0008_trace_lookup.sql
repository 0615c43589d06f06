-- Trace lookup structures ("what happened to user 123456 in the last hour?"),
-- both kept by materialized views from ods_request and both point lookups at
-- hundreds of millions of rows (the queries are in sql/README.md, "Trace
-- lookups"; `adlog-trace` runs them):
--
--   trace_by_uid  uid → (time, trace_id): one row per trace, from its edge line
--                 (caller = ''), with the trace's psid, api, status, latency
--                 and host. ORDER BY (uid, ts): a uid + time range reads a
--                 granule or two per day partition.
--   trace_index   trace_id → the time range of its lines (min/max ts, line
--                 count): ORDER BY trace_id, one granule per day partition.
--                 The lines themselves are then read from ods_request with
--                 `ts BETWEEN min AND max AND trace_id = …`: its ORDER BY
--                 (toStartOfHour(ts), service, api, ts) and day partitions
--                 narrow that to a few granules (per service/api of the hour).
--
-- index_granularity 1024 (not 8192): both tables are read by point lookups, and
-- their rows are small, so finer marks cost little and read 8x fewer rows.
-- trace_index is an AggregatingMergeTree: every insert block adds a row per
-- (day, trace_id) it contains (a trace's lines usually arrive in one block,
-- since request lines are keyed by trace_id in Kafka), merged in the
-- background; always read it with minMerge/maxMerge/countMerge … GROUP BY.

CREATE TABLE IF NOT EXISTS {db}.trace_by_uid{on_cluster}
(
    uid         UInt64,
    ts          DateTime,
    ts_ms       UInt64,
    trace_id    String,
    psid        UInt32,
    service     {lc:String},
    api         {lc:String},
    status      UInt16,
    latency_ms  Float64,
    host        {lc:String},
    idc         {lc:String}
)
ENGINE = {engine:MergeTree}
PARTITION BY toYYYYMMDD(ts)
ORDER BY (uid, ts)
/*@since 20.3: TTL ts + INTERVAL {raw_ttl_days} DAY */
SETTINGS index_granularity = 1024/*@since 20.3: , ttl_only_drop_parts = 1*/;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.trace_by_uid_mv{on_cluster}
TO {db}.trace_by_uid
AS SELECT
    uid,
    ts,
    ts_ms,
    trace_id,
    psid,
    service,
    api,
    status,
    latency_ms,
    host,
    idc
FROM {db}.ods_request
WHERE caller = '';

CREATE TABLE IF NOT EXISTS {db}.trace_index{on_cluster}
(
    day       Date,
    trace_id  String,
    ts_min    AggregateFunction(min, DateTime),
    ts_max    AggregateFunction(max, DateTime),
    lines     AggregateFunction(count)
)
ENGINE = {engine:AggregatingMergeTree}
PARTITION BY toYYYYMMDD(day)
ORDER BY trace_id
/*@since 20.3: TTL day + INTERVAL {raw_ttl_days} DAY */
SETTINGS index_granularity = 1024/*@since 20.3: , ttl_only_drop_parts = 1*/;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.trace_index_mv{on_cluster}
TO {db}.trace_index
AS SELECT
    toDate(ts) AS day,
    trace_id,
    minState(ts) AS ts_min,
    maxState(ts) AS ts_max,
    countState() AS lines
FROM {db}.ods_request
GROUP BY day, trace_id;

/*@cluster: CREATE TABLE IF NOT EXISTS {dist_db}.trace_by_uid{on_cluster} AS {db}.trace_by_uid
ENGINE = Distributed({cluster}, {db}, trace_by_uid) */;

/*@cluster: CREATE TABLE IF NOT EXISTS {dist_db}.trace_index{on_cluster} AS {db}.trace_index
ENGINE = Distributed({cluster}, {db}, trace_index) */;
