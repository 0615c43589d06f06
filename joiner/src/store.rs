//! The Redis connection: one node (`ConnectionManager`, reconnects by itself)
//! or Redis Cluster (a connection per master of our own, plus redis-rs's
//! async cluster connection for discovery and commands sent to every master).
//!
//! [`Store::exec`] sends a list of commands in **one round trip per node**.
//! On one node that is a single pipeline. redis-rs's cluster client refuses a
//! pipeline whose keys span several slots ("crossed slots") and, when one reply
//! of a pipeline is a redirection, sends the *whole* pipeline again to the
//! node named (most of it to a node that does not own it); so for a cluster
//! the store keeps its own slot → node map (`CLUSTER SLOTS`), splits the
//! commands into one pipeline per master (order kept within each) and sends
//! them concurrently on its own connections, one per node (cached).
//!
//! **Live resharding** is followed per command (issue 12 §3): a reply
//! `ASK <slot> <node>` (the slot is migrating and the command's keys are not
//! on the source any more) sends `ASKING` + that command to the importing
//! node; `MOVED <slot> <node>` (the slot has a new owner) updates the map for
//! that slot (a node not in the map: `CLUSTER SLOTS` again) and sends the
//! command to its owner; `TRYAGAIN` (a multi-key command — our Lua scripts
//! touch `jx:{m}` and `jp:{m}` — whose keys the migration has split, or that
//! the importing node does not hold whole yet) sends it again after a short
//! pause, until the slot's migration step is over. Only the commands that
//! were not executed are sent again, each slot's in pipeline order, all to
//! one node per slot ([`regroup`]): see joiner/README.md ("Redis Cluster")
//! for why this keeps each side's write-then-read order. Counted in
//! `redis_redirects_total{kind}`, logged at debug. What is still redirected
//! after [`REDIRECT_ROUNDS`] rounds or [`REDIRECT_BUDGET`] fails the attempt
//! (the map refreshed); the caller retries the batch (every command the
//! joiner sends is idempotent). `NOSCRIPT` (a restarted or new node) reloads
//! the scripts and retries at once.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline, Value};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

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

/// A node's address as the cluster names it (`CLUSTER SLOTS`, `MOVED`, `ASK`).
pub type Addr = (String, u16);

/// Rounds of redirections one [`Store::exec`] follows before it gives up
/// (the caller then retries the batch).
pub const REDIRECT_ROUNDS: usize = 64;
/// Time one [`Store::exec`] spends following redirections (mostly pauses
/// after `TRYAGAIN`, while a slot's keys are migrated) before it gives up.
pub const REDIRECT_BUDGET: Duration = Duration::from_secs(5);

struct SlotMap {
    /// Master index by slot.
    by_slot: Vec<u16>,
    /// (host, port, one slot it owns) per master.
    masters: Vec<(String, u16, u16)>,
}

impl SlotMap {
    fn owner(&self, slot: u16) -> Addr {
        let (h, p, _) = &self.masters[usize::from(self.by_slot[usize::from(slot)])];
        (h.clone(), *p)
    }

    /// Records `MOVED slot addr`; false if `addr` is not a known master
    /// (the map must be fetched again).
    fn moved(&mut self, slot: u16, addr: &Addr) -> bool {
        match self
            .masters
            .iter()
            .position(|(h, p, _)| *h == addr.0 && *p == addr.1)
        {
            Some(i) => {
                self.by_slot[usize::from(slot)] = i as u16;
                true
            }
            None => false,
        }
    }
}

/// How one reply of a cluster node left its command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Executed: any reply but the three below (error replies included).
    Served,
    /// `ASK <slot> <addr>`: the slot is migrating to `addr` and none of the
    /// command's keys is on this node any more; not executed.
    Ask(Addr),
    /// `MOVED <slot> <addr>`: `addr` owns the slot now; not executed.
    Moved(Addr),
    /// `TRYAGAIN`: a multi-key command whose keys a migration in progress
    /// has split (or that the importing node does not hold whole yet); not
    /// executed.
    TryAgain,
}

/// The verdict of `reply`, sent by the node at `from`.
pub fn verdict(reply: &Value, from: &Addr) -> Verdict {
    let Value::ServerError(se) = reply else {
        return Verdict::Served;
    };
    let redirect = || parse_redirect(se.details().unwrap_or(""), &from.0).map(|(_, a)| a);
    match se.code() {
        "ASK" => redirect().map_or(Verdict::Served, Verdict::Ask),
        "MOVED" => redirect().map_or(Verdict::Served, Verdict::Moved),
        "TRYAGAIN" => Verdict::TryAgain,
        _ => Verdict::Served,
    }
}

/// The slot and node of a redirection's details, `<slot> <host>:<port>`. An
/// empty host (a node that does not know its own address: `MOVED 3999 :7001`)
/// is the host of the node that replied.
pub fn parse_redirect(details: &str, from_host: &str) -> Option<(u16, Addr)> {
    let mut parts = details.split_whitespace();
    let slot: u16 = parts.next()?.parse().ok()?;
    if usize::from(slot) >= SLOTS {
        return None;
    }
    let (host, port) = parts.next()?.rsplit_once(':')?;
    let host = if host.is_empty() { from_host } else { host };
    Some((slot, (host.to_string(), port.parse().ok()?)))
}

/// Where a command goes in the next round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// The slot's owner in the map.
    Owner,
    /// This node.
    Node(Addr),
    /// This node, after `ASKING`.
    Asking(Addr),
}

/// The next hop of every command not executed, given as (index, slot,
/// verdict), in pipeline order. Per slot, all of them go one way, in their
/// order: after a `TRYAGAIN` among them, all to the owner (after a pause: the
/// migration step is not over); else after a `MOVED`, all to the new owner;
/// else (all `ASK`) each with `ASKING` to the importing node it names.
/// Commands that were executed are never sent again.
pub fn regroup(unserved: &[(usize, u16, Verdict)]) -> Vec<(usize, Next)> {
    let mut by_slot: BTreeMap<u16, Vec<(usize, &Verdict)>> = BTreeMap::new();
    for (i, slot, v) in unserved {
        by_slot.entry(*slot).or_default().push((*i, v));
    }
    let mut out = Vec::with_capacity(unserved.len());
    for items in by_slot.values() {
        let wait = items.iter().any(|(_, v)| **v == Verdict::TryAgain);
        let moved = items.iter().find_map(|(_, v)| match v {
            Verdict::Moved(a) => Some(a),
            _ => None,
        });
        for (i, v) in items {
            let next = match (wait, moved, v) {
                (true, _, _) => Next::Owner,
                (false, Some(a), _) => Next::Node(a.clone()),
                (false, None, Verdict::Ask(a)) => Next::Asking(a.clone()),
                (false, None, _) => Next::Owner,
            };
            out.push((*i, next));
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out
}

/// One pipeline per node: its address and the (index, `ASKING` first?) of
/// each command, in pipeline order.
pub fn plan_sends(
    next: &[(usize, Next)],
    owner: impl Fn(usize) -> Addr,
) -> Vec<(Addr, Vec<(usize, bool)>)> {
    let mut out: Vec<(Addr, Vec<(usize, bool)>)> = Vec::new();
    for (i, n) in next {
        let (addr, asking) = match n {
            Next::Owner => (owner(*i), false),
            Next::Node(a) => (a.clone(), false),
            Next::Asking(a) => (a.clone(), true),
        };
        match out.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, items)) => items.push((*i, asking)),
            None => out.push((addr, vec![(*i, asking)])),
        }
    }
    out
}

/// The pause before sending `TRYAGAIN` commands again, by round: 2, 4, 8 …
/// up to 100 ms.
fn tryagain_pause(round: usize) -> Duration {
    Duration::from_millis((2u64 << round.min(6)).min(100))
}

/// Redis Cluster: the slot map and a connection per node.
struct Cluster {
    /// Discovery (`CLUSTER SLOTS`) and commands sent to every master.
    conn: ClusterConnection,
    map: Mutex<SlotMap>,
    /// The first seed's settings (credentials, TLS); only the address differs per node.
    seed: ConnectionInfo,
    timeout: Duration,
    nodes: Mutex<HashMap<Addr, MultiplexedConnection>>,
}

impl Cluster {
    /// The (cached) connection to `addr`.
    async fn node(&self, addr: &Addr) -> Result<MultiplexedConnection, StoreError> {
        if let Some(c) = self.nodes.lock().await.get(addr) {
            return Ok(c.clone());
        }
        let (host, port) = addr.clone();
        let node_addr = match self.seed.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host, port),
        };
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let conn = redis::Client::open(self.seed.clone().set_addr(node_addr))
            .map_err(|e| StoreError::from_redis(&e))?
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(|e| StoreError::from_redis(&e))?;
        Ok(self
            .nodes
            .lock()
            .await
            .entry(addr.clone())
            .or_insert(conn)
            .clone())
    }

    /// Sends `cmds[i]` for each (i, asking) of `items` to `addr` as one
    /// pipeline (`ASKING` before those that ask for it); one reply per item.
    async fn send(
        &self,
        addr: &Addr,
        items: &[(usize, bool)],
        cmds: &[&Cmd],
    ) -> Result<Vec<Value>, StoreError> {
        let mut pipe = Pipeline::new();
        for (i, asking) in items {
            if *asking {
                pipe.add_command(redis::cmd("ASKING"));
            }
            pipe.add_command(cmds[*i].clone());
        }
        let mut conn = self.node(addr).await?;
        let values = match conn.req_packed_commands(&pipe, 0, pipe.len()).await {
            Ok(v) => v,
            Err(e) => {
                // A broken or timed-out connection is opened again next time.
                self.nodes.lock().await.remove(addr);
                return Err(StoreError::from_redis(&e));
            }
        };
        if values.len() != pipe.len() {
            return Err(StoreError {
                kind: "redis",
                detail: format!("{} replies to {} commands", values.len(), pipe.len()),
            });
        }
        let mut values = values.into_iter();
        let mut out = Vec::with_capacity(items.len());
        for (_, asking) in items {
            if *asking {
                values.next(); // ASKING's OK
            }
            out.extend(values.next());
        }
        Ok(out)
    }
}

enum Conn {
    Single(ConnectionManager),
    Cluster(Box<Cluster>),
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
            let seed = nodes[0]
                .into_connection_info()
                .context("redis.url: invalid cluster seed node")?;
            Conn::Cluster(Box::new(Cluster {
                conn,
                map: Mutex::new(map),
                seed,
                timeout,
                nodes: Mutex::new(HashMap::new()),
            }))
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
            Conn::Cluster(cl) => {
                let masters = cl.map.lock().await.masters.clone();
                let mut out = Vec::with_capacity(masters.len());
                for (host, port, _) in masters {
                    let mut c = cl.conn.clone();
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
                    // On a cluster, a node that fails may have been replaced
                    // (failover): ask the cluster again.
                    if matches!(e.kind, "moved" | "io" | "timeout") {
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
            Conn::Cluster(cl) => self.exec_cluster(cl, cmds).await,
        }
    }

    /// One attempt on the cluster: one pipeline per node, then rounds that
    /// send the commands not executed again where their replies said
    /// ([`regroup`]); replies still redirected after [`REDIRECT_ROUNDS`] or
    /// [`REDIRECT_BUDGET`] are returned as they are (the caller fails the
    /// attempt on them).
    async fn exec_cluster(&self, cl: &Cluster, cmds: &Commands) -> Result<Vec<Value>, StoreError> {
        let all: Vec<&Cmd> = cmds.pipe.cmd_iter().collect();
        let mut out = vec![Value::Nil; all.len()];
        let mut next: Vec<(usize, Next)> = (0..all.len()).map(|i| (i, Next::Owner)).collect();
        let started = Instant::now();
        for round in 0..REDIRECT_ROUNDS {
            let sends = {
                let map = cl.map.lock().await;
                plan_sends(&next, |i| map.owner(cmds.slots[i]))
            };
            let all = &all;
            let results =
                futures_util::future::join_all(sends.into_iter().map(|(addr, items)| async move {
                    let r = cl.send(&addr, &items, all).await;
                    (addr, items, r)
                }))
                .await;
            let mut unserved = Vec::new();
            for (addr, items, r) in results {
                for ((i, _), v) in items.into_iter().zip(r?) {
                    let verdict = verdict(&v, &addr);
                    out[i] = v;
                    if verdict != Verdict::Served {
                        unserved.push((i, cmds.slots[i], verdict));
                    }
                }
            }
            if unserved.is_empty() {
                return Ok(out);
            }
            unserved.sort_by_key(|(i, _, _)| *i);
            let wait = self.note_redirects(cl, &unserved, round).await;
            if round + 1 == REDIRECT_ROUNDS || started.elapsed() >= REDIRECT_BUDGET {
                break;
            }
            if wait {
                tokio::time::sleep(tryagain_pause(round)).await;
            }
            next = regroup(&unserved);
        }
        Ok(out)
    }

    /// Counts and logs one round's redirections and records `MOVED` in the
    /// slot map; true if some must wait (`TRYAGAIN`).
    async fn note_redirects(
        &self,
        cl: &Cluster,
        unserved: &[(usize, u16, Verdict)],
        round: usize,
    ) -> bool {
        let (mut ask, mut moved, mut again) = (0u64, 0u64, 0u64);
        let mut unknown_node = false;
        {
            let mut map = cl.map.lock().await;
            for (_, slot, v) in unserved {
                match v {
                    Verdict::Ask(_) => ask += 1,
                    Verdict::Moved(a) => {
                        moved += 1;
                        unknown_node |= !map.moved(*slot, a);
                    }
                    Verdict::TryAgain => again += 1,
                    Verdict::Served => {}
                }
            }
        }
        let m = &self.metrics.redis_redirects;
        m.with_label_values(&["ask"]).inc_by(ask);
        m.with_label_values(&["moved"]).inc_by(moved);
        m.with_label_values(&["tryagain"]).inc_by(again);
        let (_, slot, first) = &unserved[0];
        debug!(
            round,
            ask,
            moved,
            tryagain = again,
            slot,
            first = ?first,
            "Redis Cluster redirections: sending those commands again"
        );
        if unknown_node {
            self.refresh_slots().await;
        }
        again > 0
    }

    async fn refresh_slots(&self) {
        if let Conn::Cluster(cl) = &self.conn {
            match fetch_slot_map(&mut cl.conn.clone()).await {
                Ok(m) => {
                    info!(
                        masters = m.masters.len(),
                        "refreshed the Redis Cluster slot map"
                    );
                    *cl.map.lock().await = m;
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
            Conn::Cluster(cl) => cl
                .map
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

    fn reply(raw: &str) -> Value {
        redis::parse_redis_value(raw.as_bytes()).unwrap()
    }

    fn addr(h: &str, p: u16) -> Addr {
        (h.to_string(), p)
    }

    #[test]
    fn parses_ask_and_moved() {
        assert_eq!(
            parse_redirect("3999 127.0.0.1:6381", "x"),
            Some((3999, addr("127.0.0.1", 6381)))
        );
        // A node that does not know its own address: the replying node's host.
        assert_eq!(
            parse_redirect("12 :7001", "10.0.0.5"),
            Some((12, addr("10.0.0.5", 7001)))
        );
        assert_eq!(
            parse_redirect("7 ::1:7002", "x"),
            Some((7, addr("::1", 7002)))
        );
        for bad in ["", "3999", "16384 h:1", "x h:1", "1 h", "1 h:port"] {
            assert_eq!(parse_redirect(bad, "x"), None, "{bad:?}");
        }
        let from = addr("127.0.0.1", 7000);
        assert_eq!(
            verdict(&reply("-ASK 3300 127.0.0.1:7001\r\n"), &from),
            Verdict::Ask(addr("127.0.0.1", 7001))
        );
        assert_eq!(
            verdict(&reply("-MOVED 3300 :7002\r\n"), &from),
            Verdict::Moved(addr("127.0.0.1", 7002))
        );
        assert_eq!(
            verdict(
                &reply("-TRYAGAIN Multiple keys request during rehashing of slot\r\n"),
                &from
            ),
            Verdict::TryAgain
        );
        // Everything else was executed, errors included (the caller judges them).
        for r in [
            "+OK\r\n",
            ":1\r\n",
            "$-1\r\n",
            "-NOSCRIPT No matching script\r\n",
            "-ERR wrong\r\n",
            "-ASK garbage\r\n",
        ] {
            assert_eq!(verdict(&reply(r), &from), Verdict::Served, "{r:?}");
        }
    }

    #[test]
    fn regroup_sends_each_slots_unexecuted_commands_one_way_in_order() {
        let (a, b, c) = (addr("h", 1), addr("h", 2), addr("h", 3));
        let unserved = vec![
            // slot 5: all ASK → ASKING to the importing node, in order
            (1, 5, Verdict::Ask(b.clone())),
            (4, 5, Verdict::Ask(b.clone())),
            // slot 6: an ASK and a MOVED (the migration ended between them):
            // both to the new owner, no ASKING
            (2, 6, Verdict::Ask(b.clone())),
            (7, 6, Verdict::Moved(c.clone())),
            // slot 8: a TRYAGAIN holds the slot's ASK back with it
            (3, 8, Verdict::Ask(b.clone())),
            (9, 8, Verdict::TryAgain),
        ];
        let next = regroup(&unserved);
        assert_eq!(
            next,
            vec![
                (1, Next::Asking(b.clone())),
                (2, Next::Node(c.clone())),
                (3, Next::Owner),
                (4, Next::Asking(b.clone())),
                (7, Next::Node(c.clone())),
                (9, Next::Owner),
            ]
        );
        // One pipeline per node, pipeline order kept within each; the owner
        // of slot 8 (via the command's index) is node a.
        let sends = plan_sends(&next, |i| {
            assert!(i == 3 || i == 9, "only Owner hops ask the map");
            a.clone()
        });
        assert_eq!(
            sends,
            vec![
                (b.clone(), vec![(1, true), (4, true)]),
                (c.clone(), vec![(2, false), (7, false)]),
                (a.clone(), vec![(3, false), (9, false)]),
            ]
        );
        assert!(regroup(&[]).is_empty());
    }

    #[test]
    fn slot_map_records_moved_for_known_masters_only() {
        let mut map = SlotMap {
            by_slot: vec![0; SLOTS],
            masters: vec![("h".into(), 1, 0), ("h".into(), 2, 100)],
        };
        map.by_slot[100..].fill(1);
        assert_eq!(map.owner(5), addr("h", 1));
        assert!(map.moved(5, &addr("h", 2)));
        assert_eq!(map.owner(5), addr("h", 2));
        assert_eq!(map.owner(6), addr("h", 1), "only that slot");
        assert!(!map.moved(5, &addr("h", 9)), "unknown node: fetch the map");
        assert_eq!(map.owner(5), addr("h", 2));
    }

    #[test]
    fn tryagain_pauses_grow_to_100_ms() {
        assert_eq!(tryagain_pause(0), Duration::from_millis(2));
        assert_eq!(tryagain_pause(3), Duration::from_millis(16));
        assert_eq!(tryagain_pause(40), Duration::from_millis(100));
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
