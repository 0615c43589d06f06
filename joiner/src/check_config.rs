//! `joiner check-config`: the configuration (printed with secrets redacted),
//! then, unless `--offline`, every service it names: Kafka (metadata of the
//! topics the joiner reads and writes), Redis (the node, or every cluster
//! seed) and the metrics port. All probes run at once, each within
//! `common::probe::TIMEOUT`.

use common::config::redact_url_password;
use common::probe::{self, Check};
use common::Config;

pub fn command(cfg: &Config, offline: bool) -> anyhow::Result<()> {
    common::config::print_checked(cfg)?;
    if offline {
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let checks = rt.block_on(async {
        let t = &cfg.topics;
        let mut topics = vec![t.exposure.clone(), t.interaction.clone(), t.joined.clone()];
        if cfg.joiner.emit_unmatched {
            topics.push(t.unmatched.clone());
        }
        let kafka = probe::kafka_topics_async(&cfg.kafka, topics, "ingest run or joiner run");
        let seeds: Vec<&str> = cfg.redis.url.split(',').map(str::trim).collect();
        let redis = futures_util::future::join_all(seeds.iter().map(|url| {
            probe::within(
                "redis",
                redact_url_password(url),
                redis(url, cfg.redis.cluster),
            )
        }));
        let (kafka, redis) = tokio::join!(kafka, redis);
        let mut checks = kafka;
        checks.extend(redis);
        checks.push(probe::metrics_port(
            "joiner.metrics_listen",
            &cfg.joiner.metrics_listen,
        ));
        checks
    });
    probe::report(&checks)
}

/// PING, the server's version and, with `redis.cluster`, the cluster's state.
async fn redis(url: &str, cluster: bool) -> Check {
    let target = redact_url_password(url);
    let fail = |d: String| Check::fail("redis", target.clone(), d);
    let client = match redis::Client::open(url) {
        Ok(c) => c,
        Err(e) => return fail(format!("bad URL: {e}")),
    };
    let mut con = match client.get_multiplexed_async_connection().await {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot connect: {e}")),
    };
    if let Err(e) = redis::cmd("PING").query_async::<String>(&mut con).await {
        return fail(format!("PING: {e}"));
    }
    let info: String = match redis::cmd("INFO").arg("server").query_async(&mut con).await {
        Ok(i) => i,
        Err(e) => return fail(format!("INFO: {e}")),
    };
    let field = |text: &str, key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| "?".into())
    };
    let version = field(&info, "redis_version:");
    if !cluster {
        return Check::ok("redis", target, format!("Redis {version}, PING ok"));
    }
    match redis::cmd("CLUSTER").arg("INFO").query_async::<String>(&mut con).await {
        Ok(ci) if field(&ci, "cluster_state:") == "ok" => Check::ok(
            "redis",
            target,
            format!("Redis {version}, cluster_state ok, {} known nodes", field(&ci, "cluster_known_nodes:")),
        ),
        Ok(ci) => fail(format!(
            "Redis {version}: cluster_state {} (redis.cluster = true)",
            field(&ci, "cluster_state:")
        )),
        Err(e) => fail(format!(
            "Redis {version}: CLUSTER INFO failed ({e}); is it a cluster node? (redis.cluster = true)"
        )),
    }
}
