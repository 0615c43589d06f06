//! The ingest worker (Kafka → ClickHouse), the ClickHouse migration command
//! and the retention command (for servers without TTL).

pub mod batching;
pub mod clickhouse;
pub mod commit;
pub mod metrics;
pub mod migrate;
pub mod reconcile;
pub mod recovery;
pub mod retention;
pub mod route;
pub mod rowbinary;
pub mod run;
pub mod sink;
pub mod source;
pub mod table;
pub mod worker;
