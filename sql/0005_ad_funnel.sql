-- Ad funnel per minute × placement (psid) × action, kept by three materialized
-- views, for the Grafana funnel / CTR panels.
--
-- One SummingMergeTree (UInt64/Int64/Float64 sums: valid on 18.16 and on
-- current releases); rows with the same (ts, psid, action) are summed at merge
-- time, so always read with sum(...) GROUP BY:
--   * action = ''    : exposures of the minute (ods_exposure, exposure time)
--                      and the sum of their bid prices;
--   * psid = 0       : raw interactions by action (ods_interaction, interaction
--                      time). An interaction line has no psid: it is only known
--                      once the joiner matched it to its exposure;
--   * other rows     : joined events by psid and action (ods_joined), bucketed
--                      by EXPOSURE time, so a minute's CTR is that of the ads
--                      shown in that minute (its clicks keep arriving for up to
--                      the join window, 1 h).
--
-- CTR of placement P over a range:
--   SELECT sumIf(joined, action = 'click') / sumIf(exposures, action = '') AS ctr
--   FROM {db}.agg_ad_1m_psid WHERE psid = P AND ts >= … AND ts < …
-- Join hit rate (share of interactions that found their exposure):
--   SELECT sum(joined) / sumIf(interactions, psid = 0) FROM {db}.agg_ad_1m_psid WHERE …
--
-- Exactness: exposures and interactions are exactly-once (the ingest worker's
-- ledger makes ods_exposure/ods_interaction exact). `joined` is AT-LEAST-ONCE:
-- the joiner's output is at-least-once on the joined topic (a replay after a
-- crash produces the same joined_id again), ods_joined collapses copies by
-- joined_id only at merge time (ReplacingMergeTree), and this view counts
-- every inserted copy. For exact joined counts query ods_joined itself:
--   SELECT toStartOfMinute(ts) AS minute, psid, action, uniqExact(joined_id) AS joined
--   FROM {db}.ods_joined
--   WHERE ts >= … AND ts < …
--   GROUP BY minute, psid, action
-- or equivalently `count()` FROM {db}.ods_joined FINAL with the same WHERE/GROUP BY.

CREATE TABLE IF NOT EXISTS {db}.agg_ad_1m_psid{on_cluster}
(
    ts                   DateTime,
    psid                 UInt32,
    action               {lc:String},
    exposures            UInt64,
    bid_sum              Float64,
    interactions         UInt64,
    joined               UInt64,
    joined_delay_ms_sum  Int64
)
ENGINE = {engine:SummingMergeTree}
PARTITION BY toYYYYMMDD(ts)
ORDER BY (ts, psid, action)
/*@since 20.3: TTL ts + INTERVAL {raw_ttl_days} DAY */;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.agg_ad_1m_psid_exposure_mv{on_cluster}
TO {db}.agg_ad_1m_psid
AS SELECT
    toStartOfMinute(ts) AS ts,
    psid,
    '' AS action,
    toUInt64(count()) AS exposures,
    sum(bid_price) AS bid_sum,
    toUInt64(0) AS interactions,
    toUInt64(0) AS joined,
    toInt64(0) AS joined_delay_ms_sum
FROM {db}.ods_exposure
GROUP BY ts, psid;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.agg_ad_1m_psid_interaction_mv{on_cluster}
TO {db}.agg_ad_1m_psid
AS SELECT
    toStartOfMinute(ts) AS ts,
    toUInt32(0) AS psid,
    action,
    toUInt64(0) AS exposures,
    toFloat64(0) AS bid_sum,
    toUInt64(count()) AS interactions,
    toUInt64(0) AS joined,
    toInt64(0) AS joined_delay_ms_sum
FROM {db}.ods_interaction
GROUP BY ts, action;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.agg_ad_1m_psid_joined_mv{on_cluster}
TO {db}.agg_ad_1m_psid
AS SELECT
    toStartOfMinute(ts) AS ts,
    psid,
    action,
    toUInt64(0) AS exposures,
    toFloat64(0) AS bid_sum,
    toUInt64(0) AS interactions,
    toUInt64(count()) AS joined,
    sum(delay_ms) AS joined_delay_ms_sum
FROM {db}.ods_joined
GROUP BY ts, psid, action;
