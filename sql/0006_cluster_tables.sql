-- The cluster layer of the tables of 0001-0005 (only with clickhouse.cluster set;
-- on a single server this migration does nothing).
--
-- On a cluster every migration's {db} is the shard-local database
-- `<database>_local` (ReplicatedMergeTree tables, created ON CLUSTER, and the
-- materialized views that feed them), and each table gets a Distributed table
-- with the SAME NAME in `<database>` ({dist_db}): users, Grafana, the trace
-- lookup and the ingest workers read and write `adlog.<table>` on a single
-- server and on a cluster alike (see sql/README.md, "Cluster layout").
--
-- Sharding key of the tables the ingest worker writes: `_partition`, the Kafka
-- partition. A batch holds one Kafka partition, so each INSERT (sent with
-- insert_distributed_sync = 1) lands whole on ONE shard, where its
-- ingest_ledger row is written by the same server-side INSERT: the worker's
-- exactly-once recovery (ARCHITECTURE.md, invariant 3) works unchanged through
-- the Distributed `ingest_ledger`. Make each topic's partition count a multiple
-- of the number of shards (weights) to spread rows evenly; shard = _partition
-- modulo the total weight. (cityHash64(uid) would split one batch over several
-- shards, and a shard failing part-way would leave a batch half stored with a
-- ledger range that claims all of it.)
--
-- Rollups, the ledger and other tables written only by materialized views get
-- no sharding key: an INSERT into them through the Distributed table is
-- refused, which is what we want.

/*@cluster: CREATE TABLE IF NOT EXISTS {dist_db}.ods_request{on_cluster} AS {db}.ods_request
ENGINE = Distributed({cluster}, {db}, ods_request, _partition) */;

/*@cluster: CREATE TABLE IF NOT EXISTS {dist_db}.ods_exposure{on_cluster} AS {db}.ods_exposure
ENGINE = Distributed({cluster}, {db}, ods_exposure, _partition) */;

/*@cluster: CREATE TABLE IF NOT EXISTS {dist_db}.ods_interaction{on_cluster} AS {db}.ods_interaction
ENGINE = Distributed({cluster}, {db}, ods_interaction, _partition) */;

/*@cluster: CREATE TABLE IF NOT EXISTS {dist_db}.ods_joined{on_cluster} AS {db}.ods_joined
ENGINE = Distributed({cluster}, {db}, ods_joined, _partition) */;

/*@cluster: CREATE TABLE IF NOT EXISTS {dist_db}.dead_letter{on_cluster} AS {db}.dead_letter
ENGINE = Distributed({cluster}, {db}, dead_letter, _partition) */;

/*@cluster: CREATE TABLE IF NOT EXISTS {dist_db}.ingest_ledger{on_cluster} AS {db}.ingest_ledger
ENGINE = Distributed({cluster}, {db}, ingest_ledger) */;

/*@cluster: CREATE TABLE IF NOT EXISTS {dist_db}.agg_request_1s{on_cluster} AS {db}.agg_request_1s
ENGINE = Distributed({cluster}, {db}, agg_request_1s) */;

/*@cluster: CREATE TABLE IF NOT EXISTS {dist_db}.agg_request_1m_psid{on_cluster} AS {db}.agg_request_1m_psid
ENGINE = Distributed({cluster}, {db}, agg_request_1m_psid) */;

/*@cluster: CREATE TABLE IF NOT EXISTS {dist_db}.agg_user_visits_1h{on_cluster} AS {db}.agg_user_visits_1h
ENGINE = Distributed({cluster}, {db}, agg_user_visits_1h) */;

/*@cluster: CREATE TABLE IF NOT EXISTS {dist_db}.agg_ad_1m_psid{on_cluster} AS {db}.agg_ad_1m_psid
ENGINE = Distributed({cluster}, {db}, agg_ad_1m_psid) */;
