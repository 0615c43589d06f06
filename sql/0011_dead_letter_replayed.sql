-- Dead letters replayed by `ingest dead-letters replay` (ingest/src/dead_letters.rs):
-- one row per dead letter (Kafka coordinates) that became a row of `tbl`, so
-- that a second replay skips it. ReplacingMergeTree: a mark written twice (two
-- replays racing) collapses; readers only ask "is it there".

CREATE TABLE IF NOT EXISTS {db}.dead_letter_replayed{on_cluster}
(
    _topic       {lc:String},
    _partition   UInt32,
    _offset      UInt64,
    tbl          {lc:String},
    replayed_at  DateTime
)
ENGINE = {engine:ReplacingMergeTree(replayed_at)}
PARTITION BY toYYYYMMDD(replayed_at)
ORDER BY (_topic, _partition, _offset)
/*@since 20.3: TTL replayed_at + INTERVAL {dead_letter_ttl_days} DAY */
SETTINGS index_granularity = 8192/*@since 20.3: , ttl_only_drop_parts = 1*/;

/*@cluster: CREATE TABLE IF NOT EXISTS {dist_db}.dead_letter_replayed{on_cluster} AS {db}.dead_letter_replayed
ENGINE = Distributed({cluster}, {db}, dead_letter_replayed, _partition) */;
