//! The shadow pipeline: ingest and the joiner against shadow topics, a shadow
//! database and a shadow Redis key prefix, by configuration alone.
//!
//! [`shadow_config`] derives it from the production configuration with a
//! suffix (`request` → `request_shadow`, database `adlog` → `adlog_shadow`,
//! consumer groups likewise, joiner keys under `shadow:`); `loadgen
//! shadow-config` writes it as a TOML file for `ingest run --config` and
//! `joiner run --config`. [`drop_shadow`] deletes the shadow topics and the
//! shadow database afterwards, and refuses anything production uses.

use anyhow::{bail, Context, Result};
use common::Config;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::replay::{all_topics, guard};

/// The default suffix of shadow names.
pub const DEFAULT_SUFFIX: &str = "_shadow";

/// Rejects a suffix that would not make valid, distinct names.
pub fn check_suffix(suffix: &str) -> Result<()> {
    if suffix.is_empty()
        || !suffix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        bail!("the shadow suffix must be non-empty ASCII letters, digits or `_`, got {suffix:?}");
    }
    Ok(())
}

/// `cfg` with every topic, the consumer groups and the database suffixed and
/// the joiner's Redis keys under their own prefix; everything else as in
/// production (brokers, ClickHouse and Redis servers, tuning).
pub fn shadow_config(cfg: &Config, suffix: &str) -> Result<Config> {
    check_suffix(suffix)?;
    let mut s = cfg.clone();
    let t = &mut s.topics;
    for name in [
        &mut t.request,
        &mut t.exposure,
        &mut t.interaction,
        &mut t.joined,
        &mut t.dead_letter,
        &mut t.unmatched,
    ] {
        name.push_str(suffix);
    }
    s.kafka.ingest_group.push_str(suffix);
    s.kafka.joiner_group.push_str(suffix);
    s.clickhouse.database.push_str(suffix);
    s.joiner.key_prefix = format!(
        "{}{}:",
        cfg.joiner.key_prefix,
        suffix.trim_start_matches('_')
    );
    Ok(s)
}

/// What [`drop_shadow`] removed.
#[derive(Debug, Default)]
pub struct Dropped {
    pub topics_deleted: Vec<String>,
    pub topics_absent: Vec<String>,
    pub database: String,
}

/// Deletes the shadow topics and drops the shadow database. Refuses when any
/// of them is production's (the same names as `production`).
pub async fn drop_shadow(production: &Config, shadow: &Config) -> Result<Dropped> {
    guard(&production.topics, &shadow.topics)?;
    if shadow.clickhouse.database == production.clickhouse.database {
        bail!(
            "refusing to drop the production database {:?}",
            production.clickhouse.database
        );
    }
    let mut out = Dropped {
        database: shadow.clickhouse.database.clone(),
        ..Dropped::default()
    };
    let admin: AdminClient<DefaultClientContext> = common::kafka::client_config(&shadow.kafka)
        .create()
        .context("creating the Kafka admin client")?;
    let names = all_topics(&shadow.topics);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let results = admin
        .delete_topics(&refs, &common::kafka::admin_options())
        .await
        .with_context(|| format!("Kafka at {} is not reachable", shadow.kafka.brokers))?;
    for r in results {
        match r {
            Ok(name) => out.topics_deleted.push(name),
            Err((name, RDKafkaErrorCode::UnknownTopicOrPartition)) => out.topics_absent.push(name),
            Err((name, code)) => bail!("deleting topic {name}: {code}"),
        }
    }
    let ch = &shadow.clickhouse;
    let mut client = clickhouse::Client::default()
        .with_url(ch.url.trim_end_matches('/'))
        .with_user(&ch.user);
    let password = ch.resolved_password()?;
    if !password.is_empty() {
        client = client.with_password(password);
    }
    client
        .query(&format!("DROP DATABASE IF EXISTS `{}`", ch.database))
        .execute()
        .await
        .with_context(|| format!("dropping database {} at {}", ch.database, ch.url))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_names_differ_from_production_and_pass_the_guard() {
        let prod = Config::default();
        let s = shadow_config(&prod, DEFAULT_SUFFIX).unwrap();
        assert_eq!(s.topics.request, format!("{}_shadow", prod.topics.request));
        assert_eq!(
            s.clickhouse.database,
            format!("{}_shadow", prod.clickhouse.database)
        );
        assert_eq!(
            s.joiner.key_prefix,
            format!("{}shadow:", prod.joiner.key_prefix)
        );
        assert_ne!(s.kafka.ingest_group, prod.kafka.ingest_group);
        guard(&prod.topics, &s.topics).unwrap();
        let err = guard(&prod.topics, &prod.topics).unwrap_err().to_string();
        assert!(err.contains("refusing"), "{err}");
        assert!(shadow_config(&prod, "").is_err());
        assert!(shadow_config(&prod, "-x").is_err());
    }
}
