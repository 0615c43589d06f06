//! `check-config` without `--offline`: reach every service the configuration
//! names, so that a wrong address, a missing topic or a taken port shows up
//! before the worker starts, each with what is wrong. The service-specific
//! probes that need other clients (ClickHouse, Redis) live with their binary;
//! this module has the shared ones (Kafka, the metrics port) and the report.

use std::fmt;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::config::KafkaConfig;

/// How long each probe may take: check-config answers within a few seconds
/// even when every service is down (the probes run at the same time).
pub const TIMEOUT: Duration = Duration::from_secs(4);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Not an error now (e.g. a topic the worker creates when it starts).
    Warn,
    Fail,
}

/// One probe's answer: the service, what was reached, and what was found.
#[derive(Debug, Clone)]
pub struct Check {
    pub service: &'static str,
    pub target: String,
    pub status: Status,
    pub detail: String,
}

impl Check {
    pub fn ok(service: &'static str, target: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(service, target, Status::Ok, detail)
    }
    pub fn warn(
        service: &'static str,
        target: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self::new(service, target, Status::Warn, detail)
    }
    pub fn fail(
        service: &'static str,
        target: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self::new(service, target, Status::Fail, detail)
    }
    fn new(
        service: &'static str,
        target: impl Into<String>,
        status: Status,
        detail: impl Into<String>,
    ) -> Self {
        Check {
            service,
            target: target.into(),
            status,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self.status {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        write!(
            f,
            "{s:<4}  {:<10}  {}: {}",
            self.service, self.target, self.detail
        )
    }
}

/// Prints one line per check and a summary; an error if any check failed.
pub fn report(checks: &[Check]) -> anyhow::Result<()> {
    println!("# services:");
    for c in checks {
        println!("{c}");
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} service checks failed (see the FAIL lines; --offline checks the file only)",
            checks.len()
        );
    }
    println!("# all {} service checks passed", checks.len());
    Ok(())
}

/// The brokers' metadata of every topic in `topics` (`creates`: the binary
/// creates missing topics itself, so a missing one is a warning). Blocking:
/// call it from `spawn_blocking`.
pub fn kafka_topics(k: &KafkaConfig, topics: &[&str], creates: &str) -> Vec<Check> {
    let brokers = k.brokers.clone();
    let consumer: BaseConsumer = match crate::kafka::client_config(k).create() {
        Ok(c) => c,
        Err(e) => {
            return vec![Check::fail(
                "kafka",
                brokers,
                format!("bad client settings: {e}"),
            )]
        }
    };
    // All topics at once: asking for one by name may auto-create it.
    let md = match consumer.fetch_metadata(None, TIMEOUT) {
        Ok(md) => md,
        Err(e) => {
            return vec![Check::fail(
                "kafka",
                brokers,
                format!(
                    "no metadata within {} s ({e}); is kafka.brokers right and the broker up?",
                    TIMEOUT.as_secs()
                ),
            )]
        }
    };
    let mut out = vec![Check::ok(
        "kafka",
        brokers,
        format!("{} broker(s) in the metadata", md.brokers().len()),
    )];
    for &t in topics {
        let target = format!("topic {t}");
        let Some(m) = md.topics().iter().find(|m| m.name() == t) else {
            out.push(Check::warn(
                "kafka",
                target,
                format!(
                    "does not exist yet ({creates} creates it with kafka.partitions = {})",
                    k.partitions
                ),
            ));
            continue;
        };
        let leaderless = m.partitions().iter().filter(|p| p.leader() < 0).count();
        out.push(match (m.error(), leaderless) {
            (Some(e), _) => Check::fail("kafka", target, format!("broker error {e:?}")),
            (None, 0) if m.partitions().is_empty() => Check::fail("kafka", target, "no partitions"),
            (None, 0) => Check::ok(
                "kafka",
                target,
                format!("{} partitions", m.partitions().len()),
            ),
            (None, n) => Check::fail(
                "kafka",
                target,
                format!("{n} of {} partitions have no leader", m.partitions().len()),
            ),
        });
    }
    out
}

/// [`kafka_topics`] on a blocking thread, for async callers.
pub async fn kafka_topics_async(
    k: &KafkaConfig,
    topics: Vec<String>,
    creates: &'static str,
) -> Vec<Check> {
    let kc = k.clone();
    let probe = tokio::task::spawn_blocking(move || {
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        kafka_topics(&kc, &names, creates)
    });
    probe
        .await
        .unwrap_or_else(|e| vec![Check::fail("kafka", k.brokers.clone(), e.to_string())])
}

/// The metrics address can be bound (a running worker, or anything else on
/// the port, makes the worker fail at start). Port 0 means any free port.
pub fn metrics_port(key: &str, listen: &str) -> Check {
    let target = format!("{key} {listen}");
    match std::net::TcpListener::bind(listen) {
        Ok(l) => Check::ok(
            "metrics",
            target,
            format!(
                "free (bound {} and released it)",
                l.local_addr().map(|a| a.to_string()).unwrap_or_default()
            ),
        ),
        Err(e) => Check::fail(
            "metrics",
            target,
            format!("cannot listen: {e} (another worker running?)"),
        ),
    }
}

/// Runs `probe` with [`TIMEOUT`]; a probe that does not answer in time fails
/// with `what`.
pub async fn within<F>(service: &'static str, target: String, probe: F) -> Check
where
    F: std::future::Future<Output = Check>,
{
    match tokio::time::timeout(TIMEOUT, probe).await {
        Ok(c) => c,
        Err(_) => Check::fail(
            service,
            target,
            format!("no answer within {} s", TIMEOUT.as_secs()),
        ),
    }
}
