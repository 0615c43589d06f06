//! The Redis connection: one node (`ConnectionManager`, reconnects by itself)
//! or Redis Cluster (redis-rs's async cluster connection).
//!
//! [`Store::exec`] sends a list of commands in **one round trip per node**.
//! On one node that is a single pipeline. redis-rs's cluster client refuses a
//! pipeline whose keys span several slots ("crossed slots"), so for a cluster
//! the store keeps its own slot → node map (`CLUSTER SLOTS`), splits the
//! commands into one pipeline per master (order kept within each), routes
//! each pipeline to its master and sends them concurrently. A `MOVED`/`ASK`
//! reply (resharding, failover) refreshes the map and fails the attempt; the
//! caller retries the whole batch (every command the joiner sends is idempotent).
//! `NOSCRIPT` (a restarted or new node) reloads the scripts and retries at once.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, Value};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::state::Scripts;

const SLOTS: usize = 16_384;

/// Commands to send in one round trip (per node), each with the slot of its key.
#[derive(Default)]
pub struct Commands {
    pipe: Pipeline,
    slots: Vec<u16>,
}

impl Commands {
    pub fn new() -> Self {
        Commands::default()
    }

    /// Adds `cmd`, routed by `key` (its first key).
    pub fn push(&mut self, key: &[u8], cmd: Cmd) {
        self.slots.push(key_slot(key));
        self.pipe.add_command(cmd);
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Appends `other`'s commands (same round trip).
    pub fn append(&mut self, other: Commands) {
        for (cmd, slot) in other.pipe.cmd_iter().zip(other.slots) {
            self.pipe.add_command(cmd.clone());
            self.slots.push(slot);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// The Redis Cluster slot of a key: CRC16-XMODEM of its hash tag (the first
/// non-empty `{…}`) or of the whole key, mod 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|b| *b == b'}')?;
            (close > 0).then_some(&rest[..close])
        })
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for &b in tagged {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % SLOTS as u16
}

/// Why an attempt failed; every variant is worth retrying after a backoff.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {detail}")]
pub struct StoreError {
    /// Low-cardinality label: io, timeout, moved, noscript, busy, server.
    pub kind: &'static str,
    pub detail: String,
}

impl StoreError {
    fn from_redis(e: &redis::RedisError) -> StoreError {
        let kind = if e.is_timeout() {
            "timeout"
        } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
            "io"
        } else if e.redirect_node().is_some() {
            "moved"
        } else if e.code() == Some("NOSCRIPT") {
            "noscript"
        } else {
            "redis"
        };
        StoreError {
            kind,
            detail: e.to_string(),
        }
    }
}

/// Retry class of a per-command error reply.
fn reply_error_kind(code: &str) -> Option<&'static str> {
    match code {
        "NOSCRIPT" => Some("noscript"),
        "MOVED" | "ASK" => Some("moved"),
        "TRYAGAIN" | "CLUSTERDOWN" | "MASTERDOWN" | "READONLY" => Some("cluster"),
        "LOADING" | "BUSY" | "OOM" => Some("busy"),
        _ => None,
    }
}

struct SlotMap {
    /// Master index by slot.
    by_slot: Vec<u16>,
    /// (host, port, one slot it owns) per master.
    masters: Vec<(String, u16, u16)>,
}

enum Conn {
    Single(ConnectionManager),
    Cluster {
        conn: ClusterConnection,
        map: Mutex<SlotMap>,
    },
}

pub struct Store {
    conn: Conn,
    pub scripts: Scripts,
    metrics: Metrics,
}

/// The cluster seed nodes of `redis.url` (comma-separated).
fn seed_nodes(url: &str) -> anyhow::Result<Vec<&str>> {
    let nodes: Vec<&str> = url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    anyhow::ensure!(!nodes.is_empty(), "redis.url names no cluster seed node");
    Ok(nodes)
}

/// Checks that `redis.url` parses (without connecting): a malformed URL is
/// a configuration error, not something to retry.
pub fn check_url(cfg: &common::config::RedisConfig) -> anyhow::Result<()> {
    if cfg.cluster {
        let nodes = seed_nodes(&cfg.url)?;
        redis::cluster::ClusterClientBuilder::new(nodes)
            .build()
            .context("redis.url: invalid cluster seed nodes")?;
    } else {
        redis::Client::open(cfg.url.as_str()).with_context(|| {
            format!("redis.url is not a valid Redis URL: {}", redacted(&cfg.url))
        })?;
    }
    Ok(())
}

impl Store {
    /// Connects (retrying until `deadline`, if given) and loads the scripts.
    pub async fn connect(
        cfg: &common::config::RedisConfig,
        timeout: Duration,
        metrics: Metrics,
    ) -> anyhow::Result<Store> {
        let conn = if cfg.cluster {
            let nodes = seed_nodes(&cfg.url)?;
            let client = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(2)
                .build()
                .context("redis.url: invalid cluster seed nodes")?;
            let conn = client.get_async_connection().await.with_context(|| {
                // Seed URLs may carry a password: never print them raw.
                let shown: Vec<String> = nodes.iter().map(|n| redacted(n)).collect();
                format!("connecting to the Redis Cluster at {shown:?}")
            })?;
            let map = fetch_slot_map(&mut conn.clone()).await?;
            info!(
                masters = map.masters.len(),
                "connected to the Redis Cluster"
            );
            Conn::Cluster {
                conn,
                map: Mutex::new(map),
            }
        } else {
            let client = redis::Client::open(cfg.url.as_str())
                .with_context(|| "redis.url is not a valid Redis URL".to_string())?;
            let mcfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_secs(1));
            let conn = ConnectionManager::new_with_config(client, mcfg)
                .await
                .with_context(|| format!("connecting to Redis at {}", redacted(&cfg.url)))?;
            Conn::Single(conn)
        };
        let store = Store {
            conn,
            scripts: Scripts::new(),
            metrics,
        };
        store
            .load_scripts()
            .await
            .map_err(|e| anyhow!("loading the joiner's Lua scripts: {e}"))?;
        Ok(store)
    }

    /// `SCRIPT LOAD` of every script on every master.
    pub async fn load_scripts(&self) -> Result<(), StoreError> {
        let mut cmds = Vec::new();
        for s in self.scripts.all() {
            let mut c = redis::cmd("SCRIPT");
            c.arg("LOAD").arg(&s.source);
            cmds.push((s.sha.clone(), c));
        }
        for (sha, c) in cmds {
            for v in self.on_every_master(&c).await? {
                match v {
                    Value::BulkString(b) if b == sha.as_bytes() => {}
                    other => {
                        return Err(StoreError {
                            kind: "redis",
                            detail: format!("SCRIPT LOAD returned {other:?}, expected {sha}"),
                        })
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs one command on every master (one node: just that one).
    pub async fn on_every_master(&self, cmd: &Cmd) -> Result<Vec<Value>, StoreError> {
        match &self.conn {
            Conn::Single(c) => {
                let mut c = c.clone();
                let v = c
                    .req_packed_command(cmd)
                    .await
                    .map_err(|e| StoreError::from_redis(&e))?;
                Ok(vec![v])
            }
            Conn::Cluster { conn, map } => {
                let masters = map.lock().await.masters.clone();
                let mut out = Vec::with_capacity(masters.len());
                for (host, port, _) in masters {
                    let mut c = conn.clone();
                    let v = c
                        .route_command(
                            cmd.clone(),
                            RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                                host,
                                port,
                            }),
                        )
                        .await
                        .map_err(|e| StoreError::from_redis(&e))?;
                    out.push(v);
                }
                Ok(out)
            }
        }
    }

    /// Sends `cmds` (one pipeline per node, concurrently) and returns one
    /// reply per command, in order. A reply may be a `Value::ServerError` for
    /// command-specific errors; errors that concern the whole attempt
    /// (connection, timeout, redirect, NOSCRIPT twice, LOADING…) are `Err`.
    pub async fn exec(&self, cmds: &Commands) -> Result<Vec<Value>, StoreError> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let mut reloaded = false;
        loop {
            let res = self.exec_once(cmds).await;
            let replies = match res {
                Ok(r) => r,
                Err(e) => {
                    self.metrics.redis_errors.with_label_values(&[e.kind]).inc();
                    if e.kind == "moved" {
                        self.refresh_slots().await;
                    }
                    return Err(e);
                }
            };
            let mut worst: Option<(&'static str, String)> = None;
            for v in &replies {
                if let Value::ServerError(se) = v {
                    if let Some(kind) = reply_error_kind(se.code()) {
                        if worst.is_none() || kind != "noscript" {
                            worst = Some((
                                kind,
                                format!("{} {}", se.code(), se.details().unwrap_or("")),
                            ));
                        }
                    }
                }
            }
            match worst {
                None => return Ok(replies),
                Some((kind, detail)) => {
                    self.metrics.redis_errors.with_label_values(&[kind]).inc();
                    match kind {
                        "noscript" if !reloaded => {
                            warn!(
                                "Redis lost the joiner's scripts (restart or failover?): reloading"
                            );
                            self.load_scripts().await?;
                            reloaded = true;
                            continue;
                        }
                        "moved" | "cluster" => self.refresh_slots().await,
                        _ => {}
                    }
                    return Err(StoreError { kind, detail });
                }
            }
        }
    }

    async fn exec_once(&self, cmds: &Commands) -> Result<Vec<Value>, StoreError> {
        match &self.conn {
            Conn::Single(c) => {
                let mut c = c.clone();
                c.req_packed_commands(&cmds.pipe, 0, cmds.len())
                    .await
                    .map_err(|e| StoreError::from_redis(&e))
            }
            Conn::Cluster { conn, map } => {
                // Split by master, keeping each command's index.
                let (groups, reps) = {
                    let map = map.lock().await;
                    let mut groups: Vec<(Pipeline, Vec<usize>)> = (0..map.masters.len())
                        .map(|_| (Pipeline::new(), Vec::new()))
                        .collect();
                    for (i, (cmd, slot)) in cmds.pipe.cmd_iter().zip(&cmds.slots).enumerate() {
                        let m = usize::from(map.by_slot[usize::from(*slot)]);
                        groups[m].0.add_command(cmd.clone());
                        groups[m].1.push(i);
                    }
                    let reps: Vec<u16> = map.masters.iter().map(|(_, _, s)| *s).collect();
                    (groups, reps)
                };
                let futs = groups
                    .into_iter()
                    .zip(reps)
                    .filter(|((_, idx), _)| !idx.is_empty())
                    .map(|((pipe, idx), rep)| {
                        let mut c = conn.clone();
                        async move {
                            let n = idx.len();
                            let route = SingleNodeRoutingInfo::SpecificNode(
                                redis::cluster_routing::Route::new(rep, SlotAddr::Master),
                            );
                            c.route_pipeline(pipe, 0, n, route).await.map(|v| (idx, v))
                        }
                    });
                let results = futures_util::future::join_all(futs).await;
                let mut out = vec![Value::Nil; cmds.len()];
                for r in results {
                    let (idx, values) = r.map_err(|e| StoreError::from_redis(&e))?;
                    if values.len() != idx.len() {
                        return Err(StoreError {
                            kind: "redis",
                            detail: format!("{} replies to {} commands", values.len(), idx.len()),
                        });
                    }
                    for (i, v) in idx.into_iter().zip(values) {
                        out[i] = v;
                    }
                }
                Ok(out)
            }
        }
    }

    async fn refresh_slots(&self) {
        if let Conn::Cluster { conn, map } = &self.conn {
            match fetch_slot_map(&mut conn.clone()).await {
                Ok(m) => {
                    info!(
                        masters = m.masters.len(),
                        "refreshed the Redis Cluster slot map"
                    );
                    *map.lock().await = m;
                }
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "refreshing the Redis Cluster slot map failed")
                }
            }
        }
    }

    /// The Redis-loss guard's hash tags ([`crate::rebuild`]): one node, one
    /// tag; a cluster, one per master, in a slot that master serves.
    pub async fn guard_tags(&self) -> Vec<String> {
        match &self.conn {
            Conn::Single(_) => vec!["g".to_string()],
            Conn::Cluster { map, .. } => map
                .lock()
                .await
                .masters
                .iter()
                .map(|(_, _, slot)| crate::rebuild::tag_for_slot(*slot))
                .collect(),
        }
    }

    /// Total keys and used_memory over all masters.
    pub async fn stats(&self) -> Result<(u64, u64), StoreError> {
        let mut keys = 0u64;
        for v in self.on_every_master(&redis::cmd("DBSIZE")).await? {
            if let Value::Int(n) = v {
                keys += n.max(0) as u64;
            }
        }
        let mut mem = 0u64;
        let mut info = redis::cmd("INFO");
        info.arg("memory");
        for v in self.on_every_master(&info).await? {
            let text = match v {
                Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                Value::VerbatimString { text, .. } => text,
                Value::SimpleString(s) => s,
                _ => continue,
            };
            mem += info_field(&text, "used_memory").unwrap_or(0);
        }
        Ok((keys, mem))
    }
}

/// A numeric field of an `INFO` reply.
pub fn info_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.trim_end().split_once(':')?;
        (k == name).then(|| v.trim().parse().ok()).flatten()
    })
}

async fn fetch_slot_map(conn: &mut ClusterConnection) -> anyhow::Result<SlotMap> {
    let v = conn
        .route_command(
            redis::cmd("CLUSTER").arg("SLOTS").to_owned(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        )
        .await
        .context("CLUSTER SLOTS")?;
    let Value::Array(ranges) = v else {
        bail!("CLUSTER SLOTS: unexpected reply {v:?}");
    };
    let mut by_slot = vec![u16::MAX; SLOTS];
    let mut masters: Vec<(String, u16, u16)> = Vec::new();
    for r in ranges {
        let Value::Array(items) = r else { continue };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(node))) =
            (items.first(), items.get(1), items.get(2))
        else {
            continue;
        };
        let host = match node.first() {
            Some(Value::BulkString(h)) => String::from_utf8_lossy(h).into_owned(),
            Some(Value::SimpleString(h)) => h.clone(),
            _ => continue,
        };
        let Some(Value::Int(port)) = node.get(1) else {
            continue;
        };
        let (start, end, port) = (*start as u16, *end as u16, *port as u16);
        let idx = match masters
            .iter()
            .position(|(h, p, _)| *h == host && *p == port)
        {
            Some(i) => i,
            None => {
                masters.push((host, port, start));
                masters.len() - 1
            }
        };
        for s in start..=end.min(SLOTS as u16 - 1) {
            by_slot[usize::from(s)] = idx as u16;
        }
    }
    if let Some(s) = by_slot.iter().position(|m| *m == u16::MAX) {
        bail!("Redis Cluster slot {s} has no master (cluster not ready?)");
    }
    Ok(SlotMap { by_slot, masters })
}

/// The URL without its password, for logs.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// A bulk string reply's bytes.
pub fn bulk(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slot_matches_redis() {
        // Known values from the Redis Cluster specification / CLUSTER KEYSLOT.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        for k in ["jx:{m-1}", "p:jp:{m-2}", "{}", "a{b", "x}{y}", "jd:x:3"] {
            assert_eq!(
                format!("Slot({})", key_slot(k.as_bytes())),
                format!("{:?}", redis::cluster_routing::Slot::for_key(k)),
                "{k}"
            );
        }
    }

    #[test]
    fn info_and_redaction() {
        let info = "# Memory\r\nused_memory:123456\r\nused_memory_human:120.56K\r\n";
        assert_eq!(info_field(info, "used_memory"), Some(123456));
        assert_eq!(info_field(info, "nope"), None);
        assert_eq!(redacted("redis://:secret@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(redacted("redis://h:6379"), "redis://h:6379");
    }
}
