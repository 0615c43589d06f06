-- Raw ("ods") tables: one row per accepted log line, plus where it came from.
--
-- Layout shared by all raw tables:
--   * PARTITION BY day of event time: retention drops whole days, and a batch
--     normally touches one or two partitions.
--   * ORDER BY starts with toStartOfHour(ts): crash recovery looks up the stored
--     _offset's of one Kafka partition within a short event-time range, and
--     Grafana panels always filter on time first.
--   * The _* source columns identify the Kafka message (_topic, _partition,
--     _offset, _kafka_ts_ms = append/create time) and the source line
--     (_src_host = Filebeat host.name or '', _src_file, _src_file_offset), and
--     _ingested_at is when the ingest worker built the row.
--   * LowCardinality, codecs and TTL are only used where the server has them
--     (see sql/README.md); the column names and base types are the same on all
--     versions, so the worker's RowBinary rows fit every variant.

CREATE TABLE IF NOT EXISTS {db}.ods_request{on_cluster}
(
    ts                DateTime{codec:Delta, ZSTD(1)},
    ts_ms             UInt64{codec:Delta, ZSTD(1)},
    trace_id          String{codec:ZSTD(1)},
    span_id           String{codec:ZSTD(1)},
    parent_span_id    String{codec:ZSTD(1)},
    service           {lc:String},
    caller            {lc:String},
    api               {lc:String},
    uid               UInt64,
    psid              UInt32,
    status            UInt16,
    latency_ms        Float64,
    host              {lc:String},
    idc               {lc:String},
    extra_keys        Array(String){codec:ZSTD(1)},
    extra_values      Array(String){codec:ZSTD(1)},
    _topic            {lc:String},
    _partition        UInt32,
    _offset           UInt64,
    _kafka_ts_ms      UInt64{codec:Delta, ZSTD(1)},
    _src_host         {lc:String},
    _src_file         {lc:String},
    _src_file_offset  UInt64,
    _ingested_at      DateTime{codec:Delta, ZSTD(1)}
)
ENGINE = {engine:MergeTree}
PARTITION BY toYYYYMMDD(ts)
ORDER BY (toStartOfHour(ts), service, api, ts)
/*@since 20.3: TTL ts + INTERVAL {raw_ttl_days} DAY */
SETTINGS index_granularity = 8192/*@since 20.3: , ttl_only_drop_parts = 1*/;

CREATE TABLE IF NOT EXISTS {db}.ods_exposure{on_cluster}
(
    ts                DateTime{codec:Delta, ZSTD(1)},
    ts_ms             UInt64{codec:Delta, ZSTD(1)},
    mark_id           String{codec:ZSTD(1)},
    trace_id          String{codec:ZSTD(1)},
    uid               UInt64,
    psid              UInt32,
    ad_id             UInt64,
    creative_id       UInt64,
    position          UInt16,
    platform          {lc:String},
    bid_price         Float64,
    _topic            {lc:String},
    _partition        UInt32,
    _offset           UInt64,
    _kafka_ts_ms      UInt64{codec:Delta, ZSTD(1)},
    _src_host         {lc:String},
    _src_file         {lc:String},
    _src_file_offset  UInt64,
    _ingested_at      DateTime{codec:Delta, ZSTD(1)}
)
ENGINE = {engine:MergeTree}
PARTITION BY toYYYYMMDD(ts)
ORDER BY (toStartOfHour(ts), psid, ts)
/*@since 20.3: TTL ts + INTERVAL {raw_ttl_days} DAY */
SETTINGS index_granularity = 8192/*@since 20.3: , ttl_only_drop_parts = 1*/;

CREATE TABLE IF NOT EXISTS {db}.ods_interaction{on_cluster}
(
    ts                DateTime{codec:Delta, ZSTD(1)},
    ts_ms             UInt64{codec:Delta, ZSTD(1)},
    mark_id           String{codec:ZSTD(1)},
    trace_id          String{codec:ZSTD(1)},
    uid               UInt64,
    action            {lc:String},
    extra_keys        Array(String){codec:ZSTD(1)},
    extra_values      Array(String){codec:ZSTD(1)},
    _topic            {lc:String},
    _partition        UInt32,
    _offset           UInt64,
    _kafka_ts_ms      UInt64{codec:Delta, ZSTD(1)},
    _src_host         {lc:String},
    _src_file         {lc:String},
    _src_file_offset  UInt64,
    _ingested_at      DateTime{codec:Delta, ZSTD(1)}
)
ENGINE = {engine:MergeTree}
PARTITION BY toYYYYMMDD(ts)
ORDER BY (toStartOfHour(ts), action, ts)
/*@since 20.3: TTL ts + INTERVAL {raw_ttl_days} DAY */
SETTINGS index_granularity = 8192/*@since 20.3: , ttl_only_drop_parts = 1*/;

-- Joined exposure+interaction events (from the joiner's "joined" topic).
-- joined_id is deterministic, so a replayed event has the same joined_id, ts
-- and psid, i.e. the same sorting key in the same partition: ReplacingMergeTree
-- collapses the copies at merge time (query with FINAL, or count distinct
-- joined_id, for exact numbers before the merge).
CREATE TABLE IF NOT EXISTS {db}.ods_joined{on_cluster}
(
    joined_id             UInt64,
    mark_id               String{codec:ZSTD(1)},
    ts                    DateTime{codec:Delta, ZSTD(1)},
    ts_ms                 UInt64{codec:Delta, ZSTD(1)},
    exposure_trace_id     String{codec:ZSTD(1)},
    uid                   UInt64,
    psid                  UInt32,
    ad_id                 UInt64,
    creative_id           UInt64,
    position              UInt16,
    platform              {lc:String},
    bid_price             Float64,
    interaction_ts        DateTime{codec:Delta, ZSTD(1)},
    interaction_ts_ms     UInt64{codec:Delta, ZSTD(1)},
    interaction_trace_id  String{codec:ZSTD(1)},
    action                {lc:String},
    delay_ms              Int64,
    _topic                {lc:String},
    _partition            UInt32,
    _offset               UInt64,
    _kafka_ts_ms          UInt64{codec:Delta, ZSTD(1)},
    _src_host             {lc:String},
    _src_file             {lc:String},
    _src_file_offset      UInt64,
    _ingested_at          DateTime{codec:Delta, ZSTD(1)}
)
ENGINE = {engine:ReplacingMergeTree}
PARTITION BY toYYYYMMDD(ts)
ORDER BY (toStartOfHour(ts), psid, joined_id)
/*@since 20.3: TTL ts + INTERVAL {raw_ttl_days} DAY */
SETTINGS index_granularity = 8192/*@since 20.3: , ttl_only_drop_parts = 1*/;
