//! The pipeline's single configuration file (`adlog.toml`), with env overrides.
//!
//! Precedence: built-in defaults (pointing at the local dev stack) < the TOML
//! file < environment variables `ADLOG_<SECTION>__<KEY>` (for example
//! `ADLOG_KAFKA__BROKERS=10.0.0.1:9092`). Unknown keys are errors that name the key.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Everything any binary needs. Each section has defaults for the local stack.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub topics: TopicsConfig,
    pub clickhouse: ClickHouseConfig,
    pub redis: RedisConfig,
    pub ingest: IngestConfig,
    pub joiner: JoinerConfig,
    pub loadgen: LoadgenConfig,
    pub log: LogConfig,
    pub grafana: GrafanaConfig,
}

/// Where people open the dashboards (links printed by `adlog-trace --grafana`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrafanaConfig {
    /// Grafana's base URL, e.g. `https://grafana.example.com`.
    pub url: String,
}

impl Default for GrafanaConfig {
    fn default() -> Self {
        GrafanaConfig {
            url: "http://127.0.0.1:3000".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Consumer group of the ingest workers / joiner workers.
    pub ingest_group: String,
    pub joiner_group: String,
    /// Kept short by default so that group joins are quick with tansu; Apache
    /// Kafka users typically raise it to 10–45 s.
    pub session_timeout_ms: u32,
    pub heartbeat_interval_ms: u32,
    /// Partitions given to topics the pipeline creates itself.
    pub partitions: i32,
    /// Passed verbatim to librdkafka (TLS, SASL, tuning): e.g.
    /// `"security.protocol" = "SASL_SSL"`, `"sasl.mechanisms" = "SCRAM-SHA-512"`.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            ingest_group: "adlog-ingest".into(),
            joiner_group: "adlog-joiner".into(),
            session_timeout_ms: 6000,
            heartbeat_interval_ms: 500,
            partitions: 4,
            properties: BTreeMap::new(),
        }
    }
}

/// Topic names, and which log type each input topic carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    pub request: String,
    pub exposure: String,
    pub interaction: String,
    pub joined: String,
    pub dead_letter: String,
    pub unmatched: String,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            request: "request".into(),
            exposure: "exposure".into(),
            interaction: "interaction".into(),
            joined: "joined".into(),
            dead_letter: "dead_letter".into(),
            unmatched: "unmatched".into(),
        }
    }
}

impl TopicsConfig {
    /// The topic carrying each log type (before `fields.log_type` overrides).
    pub fn topic_for(&self, t: schemas::LogType) -> &str {
        match t {
            schemas::LogType::Request => &self.request,
            schemas::LogType::Exposure => &self.exposure,
            schemas::LogType::Interaction => &self.interaction,
            schemas::LogType::Joined => &self.joined,
        }
    }

    /// The log type a topic carries, if it is one of the input topics.
    pub fn log_type_of(&self, topic: &str) -> Option<schemas::LogType> {
        schemas::LogType::ALL
            .into_iter()
            .find(|t| self.topic_for(*t) == topic)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// HTTP interface.
    pub url: String,
    pub database: String,
    pub user: String,
    /// Prefer `password_file` or `ADLOG_CLICKHOUSE__PASSWORD`; never logged.
    pub password: String,
    pub password_file: Option<String>,
    /// Cluster name for `ON CLUSTER` DDL and Replicated/Distributed tables; empty = single server.
    pub cluster: String,
    /// Compression of INSERT bodies: `none` (default) or `lz4`. LZ4 costs CPU
    /// on both the worker and the server (measured in bench/ingest) and saves
    /// bandwidth: worth it only where the network, not CPU, is the limit.
    pub compression: InsertCompression,
}

/// See [`ClickHouseConfig::compression`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum InsertCompression {
    #[default]
    None,
    Lz4,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: "http://127.0.0.1:8123".into(),
            database: "adlog".into(),
            user: "default".into(),
            password: String::new(),
            password_file: None,
            cluster: String::new(),
            compression: InsertCompression::None,
        }
    }
}

impl ClickHouseConfig {
    /// The password from `password_file` if set, else `password`.
    pub fn resolved_password(&self) -> anyhow::Result<String> {
        match &self.password_file {
            Some(p) => Ok(std::fs::read_to_string(p)
                .with_context(|| format!("reading clickhouse.password_file {p}"))?
                .trim_end()
                .to_string()),
            None => Ok(self.password.clone()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// One URL for a single node; several (comma-separated) seed nodes with `cluster = true`.
    pub url: String,
    pub cluster: bool,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            cluster: false,
        }
    }
}

/// The ingest worker: batching, limits, retries, metrics.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Consumer threads in one process (each a member of the group; partitions
    /// are spread over them, so parsing runs in parallel).
    pub consumers: usize,
    /// Rows of every owned partition gather per table; a table's block is
    /// sent as one INSERT when its oldest row was appended to Kafka
    /// flush_age_ms ago (freshness: rows are queryable about this long plus
    /// one INSERT after the append; 0 = off) ...
    pub flush_age_ms: u64,
    /// ... or when it has been open this long (what bounds a block whose
    /// rows are already later than freshness_target_ms, i.e. a backlog, or
    /// come from a clock ahead of ours) ...
    #[serde(alias = "batch_max_wait_ms")]
    pub flush_interval_ms: u64,
    /// ... or when it holds this many rows ...
    pub batch_max_rows: usize,
    /// ... or this many encoded bytes.
    pub batch_max_bytes: usize,
    /// INSERTs of one table in flight at once (per consumer thread). While all
    /// are busy a due block keeps growing: a slow server gets fewer, larger INSERTs.
    pub max_inflight_inserts: usize,
    /// Full blocks per table waiting for a free INSERT slot before every
    /// partition is paused (backpressure: memory stays bounded when
    /// ClickHouse is slow or down).
    pub max_pending_batches: usize,
    /// Client-side deadline of one INSERT; a frozen server fails it (then it
    /// is settled and retried) instead of holding its rows forever.
    pub insert_timeout_ms: u64,
    /// Messages larger than this are dead-lettered (`too_large`).
    pub max_message_bytes: usize,
    /// Raw bytes kept per dead letter (the original size is kept too).
    pub dead_letter_max_bytes: usize,
    /// Event times further than this in the future are dead-lettered (`time_out_of_range`).
    pub max_future_skew_s: u64,
    /// Event times older than this are dead-lettered (`time_out_of_range`); match it to retention.
    pub max_past_age_s: u64,
    /// Retry backoff for ClickHouse and Kafka errors (exponential with jitter).
    pub retry_min_ms: u64,
    pub retry_max_ms: u64,
    /// Freshness SLA: the share of events queryable within this delay after Kafka
    /// appended them is exported as `adlog_ingest_freshness_within_target_ratio`.
    pub freshness_target_ms: u64,
    /// Prometheus `/metrics`; localhost unless you mean otherwise.
    pub metrics_listen: String,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            consumers: 1,
            flush_age_ms: 800,
            flush_interval_ms: 1000,
            batch_max_rows: 100_000,
            batch_max_bytes: 16 << 20,
            max_inflight_inserts: 2,
            max_pending_batches: 1,
            insert_timeout_ms: 60_000,
            max_message_bytes: 1 << 20,
            dead_letter_max_bytes: 64 << 10,
            max_future_skew_s: 3_600,
            max_past_age_s: 30 * 86_400,
            retry_min_ms: 100,
            retry_max_ms: 10_000,
            freshness_target_ms: 2_000,
            metrics_listen: "127.0.0.1:9101".into(),
        }
    }
}

/// The joiner: exposure × interaction join through Redis (SPEC §2.3).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JoinerConfig {
    /// The Redis join protocol: `slices` (plain pipelined hash commands on
    /// bucketed, time-sliced hashes; joiner/README.md) or `lua` (one script
    /// call per event, a key per exposure: the previous default, kept as the
    /// benchmark baseline). Each protocol keeps its own state and guard keys,
    /// so switching a running deployment rebuilds the window from Kafka.
    pub protocol: JoinProtocol,
    /// Consumer threads in one process (each a member of `kafka.joiner_group`
    /// with one batch in flight). A batch waits on two round trips (Redis, then
    /// the produce acks), so two threads roughly double throughput (bench/joiner).
    pub consumers: usize,
    /// An interaction joins its exposure when 0 <= t_interaction - t_exposure <= window_s (event time).
    pub window_s: u64,
    /// Exposure state and parked interactions live window_s + state_ttl_slack_s in Redis
    /// (processing time); the slack covers lag between the two topics and the sweeper.
    pub state_ttl_slack_s: u64,
    /// Interactions parked per mark_id while its exposure is unknown; more are
    /// counted (`adlog_joiner_park_overflow_total`) and dropped.
    pub max_parked_per_mark: usize,
    /// Hash buckets per time slice of join state (hash tag of the keys). Size
    /// so that a slice (one window of event time) holds at most ~100
    /// exposures per bucket: Redis then keeps each bucket as a compact
    /// listpack (`hash-max-listpack-entries`, 128 by default).
    pub state_buckets: u32,
    /// A batch (one Redis round trip, then one produce flush, then one commit)
    /// closes at batch_max messages or batch_max_wait_ms after its first one.
    pub batch_max: usize,
    pub batch_max_wait_ms: u64,
    /// Prefix of every Redis key (must not contain `{` or `}`); lets several
    /// pipelines or tests share one Redis.
    pub key_prefix: String,
    /// Also produce unmatched events (after the window) to `topics.unmatched`.
    pub emit_unmatched: bool,
    /// How often each worker tries to sweep due unmatched entries (shards are
    /// locked in Redis, so workers share the work).
    pub sweep_interval_ms: u64,
    /// Due entries handled per sweep step (one Redis round trip).
    pub sweep_batch: usize,
    /// Redis command timeout; a batch that times out is retried.
    pub redis_timeout_ms: u64,
    /// Backoff between retries of a batch's Redis or Kafka work (exponential, jitter).
    pub retry_min_ms: u64,
    pub retry_max_ms: u64,
    /// librdkafka `message.timeout.ms` for joined/unmatched events (a failed
    /// delivery is retried by the worker, with backoff, until it succeeds).
    pub produce_timeout_ms: u64,
    /// On SIGTERM, how long to keep retrying the in-flight batch while Redis or
    /// Kafka is down before exiting without committing it (it is then replayed).
    pub shutdown_grace_s: u64,
    /// Larger messages are counted as invalid (`too_large`) and skipped.
    pub max_message_bytes: usize,
    /// How often Redis key count and memory are sampled for the state-size gauges.
    pub redis_stats_interval_s: u64,
    /// Prometheus `/metrics`; localhost unless you mean otherwise.
    pub metrics_listen: String,
    /// When Redis lost the join state, the joiner re-reads the last
    /// window_s + rebuild_slack_s of Kafka (by message timestamp) into it; the
    /// slack covers consumer lag and events produced after their event time.
    pub rebuild_slack_s: u64,
    /// The unmatched sweeper judges a due entry only once the *other* side's
    /// topic was processed (by every partition's owner) up to its due time +
    /// unmatched_slack_ms (joiner/README.md); the slack covers events that reach
    /// Kafka after their event time, and is the whole delay when no progress
    /// is known. Keep it well below state_ttl_slack_s.
    pub unmatched_slack_ms: u64,
}

impl Default for JoinerConfig {
    fn default() -> Self {
        JoinerConfig {
            protocol: JoinProtocol::Slices,
            consumers: 2,
            window_s: 3_600,
            state_ttl_slack_s: 600,
            max_parked_per_mark: 64,
            state_buckets: 2_048,
            batch_max: 5_000,
            batch_max_wait_ms: 100,
            key_prefix: String::new(),
            emit_unmatched: false,
            sweep_interval_ms: 5_000,
            sweep_batch: 1_000,
            redis_timeout_ms: 5_000,
            retry_min_ms: 100,
            retry_max_ms: 10_000,
            produce_timeout_ms: 30_000,
            shutdown_grace_s: 30,
            max_message_bytes: 1 << 20,
            redis_stats_interval_s: 15,
            metrics_listen: "127.0.0.1:9102".into(),
            rebuild_slack_s: 600,
            unmatched_slack_ms: 30_000,
        }
    }
}

/// See [`JoinerConfig::protocol`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum JoinProtocol {
    #[default]
    Slices,
    Lua,
}

/// Defaults for the load generator (each is also a CLI flag).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadgenConfig {
    pub seed: u64,
    /// Total events (request lines + exposures + interactions, bad lines included).
    pub count: u64,
    /// Events per second; 0 = as fast as possible.
    pub rate: u64,
    /// Share of lines that are malformed (0.0–1.0).
    pub bad_ratio: f64,
    /// Share of interactions sent before their exposure.
    pub out_of_order_ratio: f64,
    /// Share of lines sent as the bare line (Filebeat `codec.format`) instead of the JSON envelope.
    pub bare_ratio: f64,
    /// Event-time density: events per second of *event time* (the virtual clock),
    /// independent of the send rate. Lower it so that a run spans more than the
    /// join window (e.g. 10 events/s × 50,000 events ≈ 83 min).
    pub event_rate: f64,
    /// Share of interactions whose mark_id has no exposure at all (orphans), 0.0–0.9.
    pub orphan_ratio: f64,
    /// Share of interactions stamped slightly *before* their exposure (clock skew;
    /// they must not join), 0.0–0.5.
    pub skew_ratio: f64,
    /// Size of the user pool uids are drawn from (skewed: a few users are very active).
    pub users: u64,
    /// The join window the expected pairs are computed with (must match the joiner's).
    pub window_ms: i64,
    /// Replication factor of the topics the load generator creates when missing.
    pub replication_factor: i32,
    /// Upper bound on produced-but-unacknowledged messages.
    pub max_in_flight: usize,
    /// librdkafka `linger.ms` of the generator's producer: how long it gathers
    /// a partition's messages into one batch, as a Filebeat host does (its
    /// queue and `bulk_max_size`). A `linger.ms` in `[kafka.properties]` wins.
    pub linger_ms: u64,
}

impl Default for LoadgenConfig {
    fn default() -> Self {
        LoadgenConfig {
            seed: 42,
            count: 100_000,
            rate: 0,
            bad_ratio: 0.01,
            out_of_order_ratio: 0.05,
            bare_ratio: 0.1,
            event_rate: 2000.0,
            orphan_ratio: 0.02,
            skew_ratio: 0.005,
            users: 100_000,
            window_ms: 3_600_000,
            replication_factor: 1,
            max_in_flight: 100_000,
            linger_ms: 50,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter, e.g. `info` or `ingest=debug,info`.
    pub level: String,
    /// `json` for structured logs, `text` for humans.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

impl Config {
    /// Loads defaults, then `path` (if given; it must exist), then `ADLOG_*` env.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(p) = path {
            anyhow::ensure!(p.exists(), "config file {} does not exist", p.display());
            fig = fig.merge(Toml::file(p));
        }
        // Only ADLOG_<SECTION>__<KEY> variables are configuration; single-underscore
        // ones (ADLOG_CONFIG, the dev stack's ADLOG_CH_HTTP_PORT, ...) belong to
        // the scripts and the CLI.
        fig = fig.merge(
            Env::prefixed("ADLOG_")
                .filter(|k| k.as_str().contains("__"))
                .split("__"),
        );
        fig.extract().map_err(|e| {
            let msgs: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
            anyhow::anyhow!("invalid configuration: {}", msgs.join("; "))
        })
    }
}

/// `check-config`: the config loaded without error; print the effective values
/// (secrets redacted) so that env overrides can be verified.
pub fn print_checked(cfg: &Config) -> anyhow::Result<()> {
    let mut shown = cfg.clone();
    if !shown.clickhouse.password.is_empty() {
        shown.clickhouse.password = "***".into();
    }
    // URLs may carry a password too (`redis://:pw@host`, `http://user:pw@host`).
    shown.redis.url = shown
        .redis
        .url
        .split(',')
        .map(redact_url_password)
        .collect::<Vec<_>>()
        .join(",");
    shown.clickhouse.url = redact_url_password(&shown.clickhouse.url);
    for (k, v) in shown.kafka.properties.iter_mut() {
        if k.contains("password") || k.contains("secret") {
            *v = "***".into();
        }
    }
    let text = toml::to_string_pretty(&shown).context("rendering the configuration")?;
    println!("# configuration OK; effective values:\n{text}");
    Ok(())
}

/// `scheme://user:password@host…` → `scheme://user:***@host…` (and
/// `scheme://:password@host` → `scheme://:***@host`); other URLs unchanged.
pub fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_redacted() {
        assert_eq!(
            redact_url_password("redis://:s3cret@10.0.0.1:6379/0"),
            "redis://:***@10.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url_password("http://bob:s3cret@ch:8123"),
            "http://bob:***@ch:8123"
        );
        assert_eq!(
            redact_url_password("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(redact_url_password(" redis://u:p@h"), " redis://u:***@h");
    }

    #[test]
    fn unknown_key_is_named() {
        let dir = std::env::temp_dir().join(format!("adlog-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bad.toml");
        std::fs::write(&p, "[kafka]\nbrokerz = \"x\"\n").unwrap();
        let err = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(err.contains("brokerz"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let dir = std::env::temp_dir().join(format!("adlog-cfg2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bad.toml");
        std::fs::write(&p, "[kafka]\npartitions = \"many\"\n").unwrap();
        let err = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(err.contains("partitions"), "{err}");
    }

    /// The shipped adlog.toml documents the defaults: it must parse, and say
    /// exactly what the built-in defaults are (sections not in the file aside).
    #[test]
    fn shipped_adlog_toml_equals_the_defaults() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../adlog.toml");
        let text = std::fs::read_to_string(&p).unwrap();
        let from_file: toml::Value = toml::from_str(&text).unwrap();
        // Parsed directly (not Config::load): ADLOG_* env must not matter here.
        let loaded: Config = toml::from_str(&text).unwrap();
        let loaded = toml::Value::try_from(&loaded).unwrap();
        let defaults = toml::Value::try_from(Config::default()).unwrap();
        assert_eq!(
            loaded, defaults,
            "adlog.toml differs from Config::default()"
        );
        for (section, _) in defaults.as_table().unwrap() {
            assert!(
                from_file.get(section).is_some(),
                "adlog.toml does not document the [{section}] section"
            );
        }
    }

    #[test]
    fn defaults_point_at_local_stack() {
        let c = Config::default();
        assert_eq!(c.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(c.clickhouse.url, "http://127.0.0.1:8123");
        assert_eq!(
            c.topics.log_type_of("exposure"),
            Some(schemas::LogType::Exposure)
        );
        assert_eq!(c.topics.log_type_of("nope"), None);
    }
}
