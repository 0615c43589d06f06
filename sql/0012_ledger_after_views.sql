-- The ingest ledger row of a block means: every materialized view of that
-- block ran.
--
-- ClickHouse 18.16 writes an INSERT's own parts first and then runs the views
-- of the table one after another, in the ORDER OF THEIR NAMES (checked: with
-- views a_, c_, k_ (failing), m_, z_ on one table, a failing INSERT leaves the
-- table's rows and a_'s and c_'s, none of m_'s and z_'s). The ledger views of
-- 0003 (`ingest_ledger_<table>`) sorted before `trace_by_uid_mv` and
-- `trace_index_mv`: a server dying or a view failing after the ledger view
-- left a ledger row claiming a block whose trace rows were never written, and
-- recovery trusts the ledger. The ledger views are therefore recreated here
-- under names that sort after every other view (`zz_ledger_<table>`); a
-- current engine (chDB 26.9) writes no view's rows when any view of the
-- INSERT fails, so there too a ledger row implies every view ran. Both are
-- tested (tests/tests/migrations.rs, tests/chdb/test_migrations.py), and so
-- is the rule that every view on a raw table sorts before its ledger view:
-- name new views so (agg_*, trace_*, ... — anything below "zz_").
--
-- The new view is created before the old one is dropped: in between a block
-- gets two identical ledger rows, which recovery (membership of ranges) does
-- not mind; never a block without one.

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.zz_ledger_ods_request{on_cluster}
TO {db}.ingest_ledger
AS SELECT
    'ods_request' AS tbl, _topic AS topic, _partition AS partition,
    min(_offset) AS min_offset, max(_offset) AS max_offset, count() AS rows,
    max(_ingested_at) AS ingested_at
FROM {db}.ods_request
GROUP BY _topic, _partition;

DROP TABLE IF EXISTS {db}.ingest_ledger_ods_request{on_cluster};

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.zz_ledger_ods_exposure{on_cluster}
TO {db}.ingest_ledger
AS SELECT
    'ods_exposure' AS tbl, _topic AS topic, _partition AS partition,
    min(_offset) AS min_offset, max(_offset) AS max_offset, count() AS rows,
    max(_ingested_at) AS ingested_at
FROM {db}.ods_exposure
GROUP BY _topic, _partition;

DROP TABLE IF EXISTS {db}.ingest_ledger_ods_exposure{on_cluster};

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.zz_ledger_ods_interaction{on_cluster}
TO {db}.ingest_ledger
AS SELECT
    'ods_interaction' AS tbl, _topic AS topic, _partition AS partition,
    min(_offset) AS min_offset, max(_offset) AS max_offset, count() AS rows,
    max(_ingested_at) AS ingested_at
FROM {db}.ods_interaction
GROUP BY _topic, _partition;

DROP TABLE IF EXISTS {db}.ingest_ledger_ods_interaction{on_cluster};

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.zz_ledger_ods_joined{on_cluster}
TO {db}.ingest_ledger
AS SELECT
    'ods_joined' AS tbl, _topic AS topic, _partition AS partition,
    min(_offset) AS min_offset, max(_offset) AS max_offset, count() AS rows,
    max(_ingested_at) AS ingested_at
FROM {db}.ods_joined
GROUP BY _topic, _partition;

DROP TABLE IF EXISTS {db}.ingest_ledger_ods_joined{on_cluster};

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.zz_ledger_dead_letter{on_cluster}
TO {db}.ingest_ledger
AS SELECT
    'dead_letter' AS tbl, _topic AS topic, _partition AS partition,
    min(_offset) AS min_offset, max(_offset) AS max_offset, count() AS rows,
    max(ts) AS ingested_at
FROM {db}.dead_letter
GROUP BY _topic, _partition;

DROP TABLE IF EXISTS {db}.ingest_ledger_dead_letter{on_cluster};
