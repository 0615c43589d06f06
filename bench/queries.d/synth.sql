-- Synthetic ad-log traffic, generated inside ClickHouse (INSERT … SELECT FROM
-- numbers()), for the query benchmark (bench/queries). Much faster than going
-- through Kafka and the ingest worker; the materialized views fill every rollup
-- exactly as they do for ingested rows.
--
-- Placeholders (replaced by bench/queries.d/bench_queries.py):
--   {db}      database          {n0}, {rows}   first line number, lines in this chunk
--   {start_ms} event time of line 0 (epoch ms)  {span_ms} event-time span of the whole run
--   {total}   lines in the whole run (sets the trace rate)
--
-- The model (close to loadgen's): one ad request = one trace of 6 lines,
--   ad-gateway (edge, caller '') → ad-server → user-profile, ad-retrieval,
--   ad-ranker → (ctr-predictor | bidder); every hop starts after its parent
--   and is faster than it. uid: 20 % of traces from 200 heavy users, the rest
--   uniform over 2 M users; psid: 50 placements with a skewed (power-law) share;
--   status: ~0.6 % 5xx, ~1 % 4xx on leaves; latency: long-tailed per service.
-- Exposures: 55 % of traces show 1–3 ads; ~9 % of exposures get a click
-- (~1 % a like, ~0.5 % a follow, ~1 % a close), 2 s–2 h after the exposure
-- (median ~20 s); joined rows are those within the 1 h window.

-- ods_request: one row per line number n; trace k = n / 6, hop h = n % 6.
INSERT INTO {db}.ods_request
SELECT
    toDateTime(intDiv(t_ms, 1000)) AS ts, t_ms AS ts_ms,
    lower(hex(cityHash64(k, 11))) AS trace_id,
    lower(hex(cityHash64(k, h, 12))) AS span_id,
    if(h = 0, '', lower(hex(cityHash64(k, parent_h, 12)))) AS parent_span_id,
    svc AS service, caller,
    multiIf(h = 0, ['/v1/feed', '/v1/feed', '/v1/feed', '/v1/video_feed', '/v1/search_ads', '/v1/splash'][1 + hk % 6],
            h = 1, '/serve', h = 2, '/profile/get', h = 3, '/retrieve', h = 4, '/rank',
            alt, '/predict', '/bid') AS api,
    uid, psid,
    toUInt16(multiIf(r < 6, 503, r < 16 AND h >= 2, 404, 200)) AS status,
    latency_ms,
    concat(svc, '-', toString(101 + cityHash64(k, h, 13) % 24)) AS host,
    ['yf', 'zw', 'gz', 'sh'][1 + hk % 4] AS idc,
    if(hk % 3 = 0, ['ab'], emptyArrayString()) AS extra_keys,
    if(hk % 3 = 0, ['exp42'], emptyArrayString()) AS extra_values,
    'request' AS _topic, toUInt32(hk % 8) AS _partition, n AS _offset,
    t_ms + 40 + hk % 200 AS _kafka_ts_ms,
    concat(svc, '-', toString(101 + cityHash64(k, h, 13) % 24)) AS _src_host,
    concat('/data/logs/', svc, '/trace.log') AS _src_file,
    n * 180 AS _src_file_offset,
    toDateTime(intDiv(t_ms, 1000) + 1) AS _ingested_at
FROM
(
    SELECT
        n, k, h, hk, alt,
        toUInt64({start_ms} + intDiv(k * {span_ms}, greatest(intDiv({total}, 6), 1)) + h * 3) AS t_ms,
        multiIf(h = 0, 'ad-gateway', h = 1, 'ad-server', h = 2, 'user-profile', h = 3, 'ad-retrieval',
                h = 4, 'ad-ranker', alt, 'ctr-predictor', 'bidder') AS svc,
        multiIf(h = 0, '', h = 1, 'ad-gateway', h = 5 AND alt, 'ad-ranker', 'ad-server') AS caller,
        multiIf(h = 0, 0, h = 1, 0, h = 5 AND alt, 4, 1) AS parent_h,
        if(hk % 5 = 0, 1 + cityHash64(k, 14) % 200, 1000 + cityHash64(k, 15) % 2000000) AS uid,
        toUInt32(1000 + floor(pow((cityHash64(k, 16) % 1000000) / 1000000, 3) * 50)) AS psid,
        cityHash64(k, h, 17) % 1000 AS r,
        -- hop latency: parent > child; long tail from u^6
        (multiIf(h = 0, 38., h = 1, 30., h = 2, 4., h = 3, 9., h = 4, 14., alt, 6., 8.)
            * (0.6 + 0.8 * ((cityHash64(k, h, 18) % 1000) / 1000) + 12 * pow((cityHash64(k, 19) % 1000) / 1000, 6))) AS latency_ms
    FROM
    (
        SELECT number + {n0} AS n, intDiv(number + {n0}, 6) AS k, (number + {n0}) % 6 AS h,
               cityHash64(intDiv(number + {n0}, 6), 10) AS hk, cityHash64(intDiv(number + {n0}, 6), 20) % 2 = 0 AS alt
        FROM numbers({rows})
    )
);

-- ods_exposure: traces k of this chunk; slot j in 0..2; a trace shows ads when
-- hash % 100 < 55, and slot j exists when j < 1 + hash % 3.
INSERT INTO {db}.ods_exposure
SELECT
    toDateTime(intDiv(e_ms, 1000)) AS ts, e_ms AS ts_ms,
    concat('m-', lower(hex(cityHash64(k, j, 30)))) AS mark_id,
    lower(hex(cityHash64(k, 11))) AS trace_id,
    uid, psid,
    1 + cityHash64(k, j, 31) % 5000 AS ad_id,
    1 + cityHash64(k, j, 32) % 20000 AS creative_id,
    toUInt16(j + 1) AS position,
    ['android', 'ios', 'web'][1 + cityHash64(k, 33) % 3] AS platform,
    round(0.05 + (cityHash64(k, j, 34) % 1000) / 400, 3) AS bid_price,
    'exposure' AS _topic, toUInt32(cityHash64(k, j) % 8) AS _partition, k * 3 + j AS _offset,
    e_ms + 60 AS _kafka_ts_ms, concat('ad-tracker-', toString(101 + k % 5)) AS _src_host,
    '/data/logs/ad-tracker/exposure.log' AS _src_file, (k * 3 + j) * 120 AS _src_file_offset,
    toDateTime(intDiv(e_ms, 1000) + 1) AS _ingested_at
FROM
(
    SELECT
        k, j,
        toUInt64({start_ms} + intDiv(k * {span_ms}, greatest(intDiv({total}, 6), 1)) + 60 + j * 5) AS e_ms,
        if(cityHash64(k, 10) % 5 = 0, 1 + cityHash64(k, 14) % 200, 1000 + cityHash64(k, 15) % 2000000) AS uid,
        toUInt32(1000 + floor(pow((cityHash64(k, 16) % 1000000) / 1000000, 3) * 50)) AS psid
    FROM
    (
        SELECT intDiv(number, 3) + intDiv({n0}, 6) AS k, number % 3 AS j
        FROM numbers(intDiv({rows}, 6) * 3)
    )
    WHERE cityHash64(k, 10) % 100 < 55 AND j < 1 + cityHash64(k, 35) % 3
);

-- ods_interaction: per exposure, an action when hash % 1000 < 115; delay
-- 2 s … 2 h (median ~20 s).
INSERT INTO {db}.ods_interaction
SELECT
    toDateTime(intDiv(i_ms, 1000)) AS ts, i_ms AS ts_ms, mark_id,
    lower(hex(cityHash64(mark_id, 40))) AS trace_id, uid,
    multiIf(a < 90, 'click', a < 100, 'like', a < 105, 'follow', a < 108, 'comment', a < 110, 'repost', 'close') AS action,
    emptyArrayString() AS extra_keys, emptyArrayString() AS extra_values,
    'interaction' AS _topic, toUInt32(cityHash64(mark_id) % 8) AS _partition, _offset,
    i_ms + 80 AS _kafka_ts_ms, '' AS _src_host, '/data/logs/ad-tracker/interaction.log' AS _src_file,
    _offset * 90 AS _src_file_offset, toDateTime(intDiv(i_ms, 1000) + 1) AS _ingested_at
FROM
(
    SELECT mark_id, uid, _offset, cityHash64(mark_id, 41) % 1000 AS a,
           ts_ms + toUInt64(least(7200000, 2000 + 18000 * exp(4 * ((cityHash64(mark_id, 42) % 10000 + cityHash64(mark_id, 43) % 10000 + cityHash64(mark_id, 44) % 10000) / 10000 - 1.5)))) AS i_ms
    FROM {db}.ods_exposure
    WHERE _offset >= intDiv({n0}, 6) * 3 AND _offset < (intDiv({n0}, 6) + intDiv({rows}, 6)) * 3
)
WHERE a < 115;

-- ods_joined: interactions of this chunk within 1 h of their exposure.
INSERT INTO {db}.ods_joined
SELECT
    cityHash64(e.mark_id, i_action, i_ts_ms) AS joined_id, e.mark_id, e.ts, e.ts_ms, e.trace_id AS exposure_trace_id,
    e.uid, e.psid, e.ad_id, e.creative_id, e.position, e.platform, e.bid_price,
    i_ts AS interaction_ts, i_ts_ms AS interaction_ts_ms, i_trace_id AS interaction_trace_id, i_action AS action,
    toInt64(i_ts_ms) - toInt64(e.ts_ms) AS delay_ms,
    'joined' AS _topic, toUInt32(cityHash64(e.mark_id) % 8) AS _partition, i_offset AS _offset,
    i_ts_ms + 300 AS _kafka_ts_ms, '' AS _src_host, '' AS _src_file, toUInt64(0) AS _src_file_offset,
    toDateTime(intDiv(i_ts_ms, 1000) + 2) AS _ingested_at
FROM {db}.ods_exposure AS e
ALL INNER JOIN
(
    SELECT mark_id, ts AS i_ts, ts_ms AS i_ts_ms, trace_id AS i_trace_id, action AS i_action, _offset AS i_offset
    FROM {db}.ods_interaction
    WHERE _offset >= intDiv({n0}, 6) * 3 AND _offset < (intDiv({n0}, 6) + intDiv({rows}, 6)) * 3
) USING mark_id
WHERE e._offset >= intDiv({n0}, 6) * 3 AND e._offset < (intDiv({n0}, 6) + intDiv({rows}, 6)) * 3
  AND i_ts_ms >= e.ts_ms AND i_ts_ms <= e.ts_ms + 3600000;
