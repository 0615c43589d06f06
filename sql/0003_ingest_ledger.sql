-- The ingest ledger: what each INSERT stored, for exactly-once recovery.
--
-- One materialized view per raw table (and dead_letter) writes one row per
-- inserted block: the table, the Kafka topic/partition and the min/max offset
-- and row count of that block. The view runs inside the same server-side
-- INSERT as the table itself, so a worker killed at any moment leaves either
-- the rows and their ledger row, or neither. When a worker takes over a
-- partition it reads the ledger from the committed offset on and skips the
-- messages that are already stored (see ingest/src/recovery.rs).
--
-- A block holds the rows of one batch, and a batch holds one Kafka partition,
-- so GROUP BY _topic, _partition gives one ledger row per INSERT in practice.
-- The ledger is small (one row per batch and table) and ordered for the
-- recovery lookup (topic, partition, max_offset >= committed offset).

CREATE TABLE IF NOT EXISTS {db}.ingest_ledger{on_cluster}
(
    tbl          String,
    topic        String,
    partition    UInt32,
    min_offset   UInt64,
    max_offset   UInt64,
    rows         UInt64,
    ingested_at  DateTime
)
ENGINE = {engine:MergeTree}
PARTITION BY toYYYYMMDD(ingested_at)
ORDER BY (topic, partition, max_offset)
/*@since 20.3: TTL ingested_at + INTERVAL 7 DAY */;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.ingest_ledger_ods_request{on_cluster}
TO {db}.ingest_ledger
AS SELECT
    'ods_request' AS tbl, _topic AS topic, _partition AS partition,
    min(_offset) AS min_offset, max(_offset) AS max_offset, count() AS rows,
    max(_ingested_at) AS ingested_at
FROM {db}.ods_request
GROUP BY _topic, _partition;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.ingest_ledger_ods_exposure{on_cluster}
TO {db}.ingest_ledger
AS SELECT
    'ods_exposure' AS tbl, _topic AS topic, _partition AS partition,
    min(_offset) AS min_offset, max(_offset) AS max_offset, count() AS rows,
    max(_ingested_at) AS ingested_at
FROM {db}.ods_exposure
GROUP BY _topic, _partition;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.ingest_ledger_ods_interaction{on_cluster}
TO {db}.ingest_ledger
AS SELECT
    'ods_interaction' AS tbl, _topic AS topic, _partition AS partition,
    min(_offset) AS min_offset, max(_offset) AS max_offset, count() AS rows,
    max(_ingested_at) AS ingested_at
FROM {db}.ods_interaction
GROUP BY _topic, _partition;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.ingest_ledger_ods_joined{on_cluster}
TO {db}.ingest_ledger
AS SELECT
    'ods_joined' AS tbl, _topic AS topic, _partition AS partition,
    min(_offset) AS min_offset, max(_offset) AS max_offset, count() AS rows,
    max(_ingested_at) AS ingested_at
FROM {db}.ods_joined
GROUP BY _topic, _partition;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.ingest_ledger_dead_letter{on_cluster}
TO {db}.ingest_ledger
AS SELECT
    'dead_letter' AS tbl, _topic AS topic, _partition AS partition,
    min(_offset) AS min_offset, max(_offset) AS max_offset, count() AS rows,
    max(ts) AS ingested_at
FROM {db}.dead_letter
GROUP BY _topic, _partition;
