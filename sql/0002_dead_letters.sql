-- Dead letters: every message the ingest worker could not turn into a row.
--
--   ts            when it was dead-lettered (worker wall clock; the line's own
--                 time may be what is broken)
--   log_type      the type the worker expected ('' if unknown)
--   reason        short, stable code (for GROUP BY, alerts and the dashboard)
--   error         the full error message
--   raw           the message bytes, capped at the worker's size limit
--   raw_size      the original size in bytes (raw_size > length(raw) = truncated)
--   _topic, _partition, _offset, _kafka_ts_ms   the Kafka message
--   _src_host, _src_file, _src_file_offset      the source line when the
--                 Filebeat envelope could be read (defaults: '', '', 0)
--
-- ORDER BY starts with the hour (like the raw tables: time filters first, and
-- recovery can look up stored offsets for a short time range), then reason so
-- that "which reasons, how many, show me some" reads little.
CREATE TABLE IF NOT EXISTS {db}.dead_letter{on_cluster}
(
    ts                DateTime{codec:Delta, ZSTD(1)},
    log_type          {lc:String},
    reason            {lc:String},
    error             String{codec:ZSTD(1)},
    raw               String{codec:ZSTD(1)},
    raw_size          UInt64,
    _topic            {lc:String},
    _partition        UInt32,
    _offset           UInt64,
    _kafka_ts_ms      UInt64{codec:Delta, ZSTD(1)},
    _src_host         {lc:String} DEFAULT '',
    _src_file         {lc:String} DEFAULT '',
    _src_file_offset  UInt64 DEFAULT 0
)
ENGINE = {engine:MergeTree}
PARTITION BY toYYYYMMDD(ts)
ORDER BY (toStartOfHour(ts), reason, ts)
/*@since 20.3: TTL ts + INTERVAL {dead_letter_ttl_days} DAY */
SETTINGS index_granularity = 8192/*@since 20.3: , ttl_only_drop_parts = 1*/;
