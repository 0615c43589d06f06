//! The ingest worker (Kafka → ClickHouse) and the ClickHouse migration command.

pub mod batch;
pub mod clickhouse;
pub mod metrics;
pub mod migrate;
pub mod recovery;
pub mod route;
pub mod rowbinary;
pub mod run;
pub mod sink;
pub mod table;
pub mod worker;
