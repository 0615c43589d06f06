//! ClickHouse HTTP client construction from [`ClickHouseConfig`], shared by the
//! migration command and the workers.
//!
//! The client is created with `with_validation(false)`: ClickHouse 18.16 has no
//! `RowBinaryWithNamesAndTypes`, so rows travel as plain `RowBinary`, and the
//! column types are guaranteed by the migrations (and tested against both the
//! old server and chDB).

use std::time::Duration;

use anyhow::Context;
use common::config::{ClickHouseConfig, InsertCompression};

/// A client for `cfg`, with the password resolved (from `password_file` if set).
/// No database is selected: every statement names its database explicitly.
///
/// With `clickhouse.cluster` set, the tables the workers write are Distributed
/// tables (see `sql/0006_cluster_tables.sql`), and every query carries
/// `insert_distributed_sync = 1`: an INSERT returns only once the shard stored
/// the rows (and its materialized views, the ingest ledger included, ran), as
/// on a single server. Without it the Distributed table would acknowledge rows
/// still queued on the entry node, and recovery could not see them yet.
pub fn client(cfg: &ClickHouseConfig) -> anyhow::Result<::clickhouse::Client> {
    let password = cfg.resolved_password()?;
    let compression = match cfg.compression {
        InsertCompression::None => ::clickhouse::Compression::None,
        InsertCompression::Lz4 => ::clickhouse::Compression::Lz4,
    };
    let mut c = ::clickhouse::Client::default()
        .with_url(cfg.url.trim_end_matches('/'))
        .with_user(&cfg.user)
        .with_validation(false)
        .with_compression(compression);
    if !password.is_empty() {
        c = c.with_password(password);
    }
    if !cfg.cluster.is_empty() {
        c = c.with_setting("insert_distributed_sync", "1");
    }
    Ok(c)
}

/// Where running queries are listed: `system.processes`, or on a cluster every
/// node's (`cluster('<cluster>', system, processes)`), since a retried INSERT
/// may reach a different entry node than the one still running the first try.
pub fn processes_source(cfg: &ClickHouseConfig) -> String {
    if cfg.cluster.is_empty() {
        "system.processes".to_string()
    } else {
        format!("cluster('{}', system, processes)", cfg.cluster)
    }
}

/// `url` safe for messages and logs: no password in `user:pass@`, no query string
/// (which could carry `password=`).
pub fn redacted_url(url: &str) -> String {
    let (url, had_query) = match url.split_once('?') {
        Some((u, _)) => (u, true),
        None => (url, false),
    };
    let mut out = match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(p) => rest.split_at(p),
                None => (rest, ""),
            };
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    let user = userinfo.split(':').next().unwrap_or("");
                    format!("{user}:***@{host}")
                }
                None => authority.to_string(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => url.to_string(),
    };
    if had_query {
        out.push_str("?…");
    }
    out
}

/// `SELECT version()`, with a timeout, as the connection check: the error names
/// the server (URL without secrets) and the user.
pub async fn server_version(
    client: &::clickhouse::Client,
    cfg: &ClickHouseConfig,
    timeout: Duration,
) -> anyhow::Result<String> {
    let what = || {
        format!(
            "cannot query ClickHouse at {} as user {:?}",
            redacted_url(&cfg.url),
            cfg.user
        )
    };
    let v = tokio::time::timeout(
        timeout,
        client.query("SELECT version()").fetch_one::<String>(),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no answer within {timeout:?}"))
    .with_context(what)?
    .with_context(what)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_secrets() {
        assert_eq!(
            redacted_url("http://127.0.0.1:8123"),
            "http://127.0.0.1:8123"
        );
        assert_eq!(
            redacted_url("https://bob:s3cret@ch.example:8443/x?password=s3cret"),
            "https://bob:***@ch.example:8443/x?…"
        );
        assert_eq!(redacted_url("http://bob@ch:8123"), "http://bob:***@ch:8123");
    }

    #[tokio::test]
    async fn unreachable_server_is_named_without_password() {
        let cfg = ClickHouseConfig {
            // Port 1 on localhost: connection refused at once.
            url: "http://127.0.0.1:1".into(),
            password: "topsecret".into(),
            ..ClickHouseConfig::default()
        };
        let c = client(&cfg).unwrap();
        let err = server_version(&c, &cfg, Duration::from_secs(5))
            .await
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("http://127.0.0.1:1"), "{msg}");
        assert!(!msg.contains("topsecret"), "{msg}");
    }
}
