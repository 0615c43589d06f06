//! Pieces every binary of the pipeline shares: the one TOML configuration
//! ([`config`]), Kafka client setup ([`kafka`]) and structured logging ([`logging`]).

pub mod backoff;
pub mod config;
pub mod kafka;
pub mod logging;
pub mod metrics;
pub mod probe;
pub mod timerange;

pub use config::Config;
