//! The traffic model: what one ad request looks like in the logs.
//!
//! * An ad request is a trace of 3–8 hops: `ad-gateway` (the edge: empty
//!   caller and parent span) → `ad-server` → some of `user-profile`,
//!   `ad-retrieval` (one or two shards), `ad-ranker` (→ `ctr-predictor`) and
//!   `bidder`. A child starts after its parent and finishes before it, so every
//!   child's latency is smaller than its parent's. Leaves fail now and then
//!   (4xx/5xx); a 5xx below may or may not propagate up (fallbacks).
//! * All hops of a trace run in one IDC; hosts are named like `ad-web-017`,
//!   and each host belongs to one IDC.
//! * uids come from a skewed pool (a share of traffic is log-uniform over the
//!   pool's ranks, so a few users have many traces); psids from ~50 placements
//!   with Zipf weights.
//! * A successful trace fills 1–3 ad slots with probability ~55%: exposures
//!   (same trace, uid, psid; a unique `m-<hex>` mark_id). Most exposures get no
//!   interaction; some get a click (or a `close`) and maybe likes, comments…
//!   The first delay is log-normal (median 20 s) with a long tail up to 2 h,
//!   so a few percent fall outside the 1 h join window.
//! * Special interactions: out of order (emitted before their exposure),
//!   skewed (stamped 1–3000 ms before the exposure: must not join), exactly on
//!   the window boundary (`window_ms` joins, `window_ms + 1` does not), zero
//!   delay, and orphans (a mark_id that no exposure has).
//!
//! The model only decides *content* and *event time*; [`crate::generator`]
//! decides the stream order and wraps lines the way Filebeat does.

use std::borrow::Cow;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use schemas::{Exposure, Interaction, LogType, Request};

use crate::params::Params;

/// No interaction is stamped later than this after its exposure (2 h 15 min).
pub const MAX_DELAY_MS: i64 = 8_100_000;

/// IDCs and their share of traffic.
pub const IDCS: [&str; 4] = ["yf", "zw", "gz", "sh"];
const IDC_WEIGHTS: [f64; 4] = [0.4, 0.3, 0.2, 0.1];

/// The services that write logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Svc {
    Gateway,
    Server,
    Profile,
    Retrieval,
    Ranker,
    Ctr,
    Bidder,
    /// Writes the exposure and interaction logs (client beacons).
    Tracker,
}

/// Static facts about a service.
pub struct ServiceInfo {
    pub name: &'static str,
    pub host_prefix: &'static str,
    /// Hosts per IDC; host numbers are blocks per IDC (yf: 1..=n, zw: n+1..=2n, …).
    pub hosts_per_idc: u16,
    pub api: &'static str,
    /// Writes its lines in the JSON form rather than TSV.
    pub json_lines: bool,
}

impl Svc {
    pub fn info(self) -> &'static ServiceInfo {
        &SERVICES[self as usize]
    }
}

const SERVICES: [ServiceInfo; 8] = [
    ServiceInfo {
        name: "ad-gateway",
        host_prefix: "ad-gw",
        hosts_per_idc: 6,
        api: "/v1/feed",
        json_lines: false,
    },
    ServiceInfo {
        name: "ad-server",
        host_prefix: "ad-web",
        hosts_per_idc: 16,
        api: "/serve",
        json_lines: false,
    },
    ServiceInfo {
        name: "user-profile",
        host_prefix: "up-cache",
        hosts_per_idc: 4,
        api: "/profile/get",
        json_lines: true,
    },
    ServiceInfo {
        name: "ad-retrieval",
        host_prefix: "ad-ret",
        hosts_per_idc: 8,
        api: "/retrieve",
        json_lines: false,
    },
    ServiceInfo {
        name: "ad-ranker",
        host_prefix: "ad-rank",
        hosts_per_idc: 8,
        api: "/rank",
        json_lines: false,
    },
    ServiceInfo {
        name: "ctr-predictor",
        host_prefix: "ctr-gpu",
        hosts_per_idc: 4,
        api: "/predict",
        json_lines: true,
    },
    ServiceInfo {
        name: "bidder",
        host_prefix: "ad-bid",
        hosts_per_idc: 6,
        api: "/bid",
        json_lines: false,
    },
    ServiceInfo {
        name: "ad-tracker",
        host_prefix: "ad-trk",
        hosts_per_idc: 5,
        api: "/beacon",
        json_lines: false,
    },
];

/// Edge APIs of the gateway and their share.
const EDGE_APIS: [(&str, f64); 4] = [
    ("/v1/feed", 0.55),
    ("/v1/video_feed", 0.20),
    ("/v1/search_ads", 0.15),
    ("/v1/splash", 0.10),
];

/// One host: a service and its number (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostRef {
    pub svc: Svc,
    pub no: u16,
}

impl HostRef {
    pub fn name(&self) -> String {
        format!("{}-{:03}", self.svc.info().host_prefix, self.no)
    }
    pub fn idc(&self) -> &'static str {
        IDCS[((self.no - 1) / self.svc.info().hosts_per_idc) as usize % IDCS.len()]
    }
    /// Whether this host writes JSON-form lines: some services do, and one in
    /// five tracker hosts runs a newer agent that does.
    pub fn json_lines(&self) -> bool {
        self.svc.info().json_lines || (self.svc == Svc::Tracker && matches!(self.no % 5, 0))
    }
    /// `log.file.path` of this host's log of type `t`.
    pub fn file_path(&self, t: LogType) -> String {
        format!("/data/logs/{}/{}.log", self.svc.info().name, t.as_str())
    }
}

/// A line the model produced, with its event time inside.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    Request(Request<'static>),
    Exposure(Exposure<'static>),
    Interaction(Interaction<'static>),
}

impl Line {
    pub fn log_type(&self) -> LogType {
        match self {
            Line::Request(_) => LogType::Request,
            Line::Exposure(_) => LogType::Exposure,
            Line::Interaction(_) => LogType::Interaction,
        }
    }
    pub fn ts_ms(&self) -> i64 {
        match self {
            Line::Request(r) => r.ts_ms,
            Line::Exposure(e) => e.ts_ms,
            Line::Interaction(i) => i.ts_ms,
        }
    }
    /// The Kafka message key: trace_id for request lines, mark_id otherwise.
    pub fn key(&self) -> &str {
        match self {
            Line::Request(r) => &r.trace_id,
            Line::Exposure(e) => &e.mark_id,
            Line::Interaction(i) => &i.mark_id,
        }
    }
    /// Appends the TSV form, or the JSON form when `json`.
    pub fn write(&self, json: bool, out: &mut String) {
        match (self, json) {
            (Line::Request(r), false) => r.write_tsv(out),
            (Line::Request(r), true) => r.write_json(out),
            (Line::Exposure(e), false) => e.write_tsv(out),
            (Line::Exposure(e), true) => e.write_json(out),
            (Line::Interaction(i), false) => i.write_tsv(out),
            (Line::Interaction(i), true) => i.write_json(out),
        }
    }
}

/// A line planned for the stream: `emit_ms` orders the stream (normally the
/// event time; earlier for out-of-order interactions).
#[derive(Debug, Clone)]
pub struct Planned {
    pub emit_ms: i64,
    pub line: Line,
    pub host: HostRef,
}

/// Seed-dependent pools and id counters.
pub struct Model {
    salt: u64,
    users: u64,
    psid_cdf: Vec<f64>,
    trace_counter: u64,
    mark_counter: u64,
    window_ms: i64,
    out_of_order_ratio: f64,
    orphan_ratio: f64,
    skew_ratio: f64,
}

/// splitmix64's finalizer: a bijection on u64, so distinct counters give
/// distinct ids.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn hex16(v: u64) -> String {
    format!("{v:016x}")
}

/// `x` rounded down to 2 decimals.
fn floor2(x: f64) -> f64 {
    (x * 100.0).floor() / 100.0
}

/// A standard normal sample (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn lognormal(rng: &mut ChaCha8Rng, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(rng)).exp()
}

fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

fn weighted<T: Copy>(rng: &mut ChaCha8Rng, items: &[(T, f64)]) -> T {
    let total: f64 = items.iter().map(|(_, w)| w).sum();
    let mut x = rng.random::<f64>() * total;
    for (t, w) in items {
        if x < *w {
            return *t;
        }
        x -= w;
    }
    items[items.len() - 1].0
}

fn kv(k: &'static str, v: impl Into<String>) -> (Cow<'static, str>, Cow<'static, str>) {
    (Cow::Borrowed(k), Cow::Owned(v.into()))
}

fn s(v: &'static str) -> Cow<'static, str> {
    Cow::Borrowed(v)
}

/// Delay of the first interaction after its exposure: 90% log-normal
/// (median 20 s), 10% log-uniform between 10 min and 2 h (the long tail:
/// about 3% of first interactions land after 1 h).
pub fn first_delay_ms(rng: &mut ChaCha8Rng) -> i64 {
    if rng.random::<f64>() < 0.9 {
        lognormal(rng, 20_000.0, 1.4).clamp(0.0, 7_200_000.0) as i64
    } else {
        let (lo, hi) = (600_000f64.ln(), 7_200_000f64.ln());
        (lo + rng.random::<f64>() * (hi - lo)).exp() as i64
    }
}

/// Gap between consecutive interactions on one exposure (median 8 s).
fn next_gap_ms(rng: &mut ChaCha8Rng) -> i64 {
    lognormal(rng, 8_000.0, 1.0).clamp(100.0, 600_000.0) as i64
}

/// One hop while a trace is being built.
struct Hop {
    svc: Svc,
    parent: Option<usize>,
    start: i64,
    latency: f64,
    status: u16,
    span: String,
    extra: Vec<(Cow<'static, str>, Cow<'static, str>)>,
}

impl Model {
    pub fn new(p: &Params) -> Model {
        let salt = mix64(p.seed ^ 0x6164_6c6f_672d_6c67);
        // ~50 placements with Zipf(1.1) weights.
        let mut acc = 0.0;
        let psid_cdf = (1..=50)
            .map(|k| {
                acc += 1.0 / (k as f64).powf(1.1);
                acc
            })
            .collect();
        Model {
            salt,
            users: p.users,
            psid_cdf,
            trace_counter: 0,
            mark_counter: 0,
            window_ms: p.window_ms,
            out_of_order_ratio: p.out_of_order_ratio,
            orphan_ratio: p.orphan_ratio,
            skew_ratio: p.skew_ratio,
        }
    }

    /// A uid: 25% of traffic log-uniform over the pool's ranks (heavy users),
    /// the rest uniform.
    pub fn uid(&self, rng: &mut ChaCha8Rng) -> u64 {
        let n = self.users as f64;
        let rank = if rng.random::<f64>() < 0.25 {
            ((rng.random::<f64>() * (n + 1.0).ln()).exp() as u64).clamp(1, self.users)
        } else {
            rng.random_range(1..=self.users)
        };
        100_000_000 + mix64(self.salt ^ rank) % 9_900_000_000
    }

    pub fn psid(&self, rng: &mut ChaCha8Rng) -> u32 {
        let x = rng.random::<f64>() * self.psid_cdf[self.psid_cdf.len() - 1];
        let i = self.psid_cdf.partition_point(|c| *c <= x);
        1001 + i.min(self.psid_cdf.len() - 1) as u32
    }

    /// A new, unique trace id (32 hex digits).
    pub fn trace_id(&mut self, rng: &mut ChaCha8Rng) -> String {
        self.trace_counter += 1;
        let hi = mix64(self.salt.wrapping_add(self.trace_counter));
        format!("{hi:016x}{:016x}", rng.random::<u64>())
    }

    /// A new, unique mark id (`m-` + 16 hex digits).
    pub fn mark_id(&mut self) -> String {
        self.mark_counter += 1;
        format!(
            "m-{}",
            hex16(mix64(
                (self.salt ^ 0x6d61_726b).wrapping_add(self.mark_counter)
            ))
        )
    }

    fn idc_index(rng: &mut ChaCha8Rng) -> usize {
        weighted(
            rng,
            &[
                (0usize, IDC_WEIGHTS[0]),
                (1, IDC_WEIGHTS[1]),
                (2, IDC_WEIGHTS[2]),
                (3, IDC_WEIGHTS[3]),
            ],
        )
    }

    /// A random host of `svc` in IDC `idc`.
    pub fn host(rng: &mut ChaCha8Rng, svc: Svc, idc: usize) -> HostRef {
        let n = svc.info().hosts_per_idc;
        HostRef {
            svc,
            no: idc as u16 * n + rng.random_range(1..=n),
        }
    }

    fn platform(&self, uid: u64) -> &'static str {
        match mix64(uid ^ self.salt) % 100 {
            0..=45 => "ios",
            46..=91 => "android",
            _ => "web",
        }
    }

    /// Generates one trace starting at `t0` into `out` (hops, then exposures
    /// each followed by its interactions, then orphan interactions).
    pub fn trace(&mut self, rng: &mut ChaCha8Rng, t0: i64, out: &mut Vec<Planned>) {
        let idc = Self::idc_index(rng);
        let uid = self.uid(rng);
        let psid = self.psid(rng);
        let trace_id = self.trace_id(rng);
        let edge_api = weighted(rng, &EDGE_APIS);

        // --- structure and latencies, top-down ---
        let mut hops: Vec<Hop> = Vec::with_capacity(8);
        let l0 = floor2(lognormal(rng, 40.0, 0.45).clamp(4.0, 2_000.0));
        let region = match IDCS[idc] {
            "gz" => "cn-south",
            "sh" => "cn-east",
            _ => "cn-north",
        };
        hops.push(Hop {
            svc: Svc::Gateway,
            parent: None,
            start: t0,
            latency: l0,
            status: 200,
            span: hex16(rng.random()),
            extra: vec![
                kv("region", region),
                kv("app_ver", pick(rng, &["8.3.1", "8.4.0", "8.5.2"])),
                kv("ab", format!("exp{}", rng.random_range(10..60))),
            ],
        });
        let child =
            |rng: &mut ChaCha8Rng, hops: &Vec<Hop>, parent: usize, svc: Svc, lo: f64, hi: f64| {
                let p = &hops[parent];
                let lat = floor2(p.latency * rng.random_range(lo..hi));
                let slack = (p.latency - lat).max(0.0);
                Hop {
                    svc,
                    parent: Some(parent),
                    start: p.start + (rng.random::<f64>() * slack).floor() as i64,
                    latency: lat,
                    status: 200,
                    span: hex16(rng.random()),
                    extra: Vec::new(),
                }
            };
        let server = child(rng, &hops, 0, Svc::Server, 0.70, 0.95);
        hops.push(server);
        let mut kids = Vec::new();
        if rng.random_bool(0.7) {
            kids.push(Svc::Profile);
        }
        let retrieval = rng.random_bool(0.9);
        if retrieval {
            kids.push(Svc::Retrieval);
            if rng.random_bool(0.3) {
                kids.push(Svc::Retrieval);
            }
            if rng.random_bool(0.75) {
                kids.push(Svc::Ranker);
            }
        }
        if rng.random_bool(0.5) {
            kids.push(Svc::Bidder);
        }
        if kids.is_empty() {
            kids.push(Svc::Retrieval);
        }
        let mut shard = 0;
        for svc in kids {
            let mut h = child(rng, &hops, 1, svc, 0.08, 0.7);
            h.extra = match svc {
                Svc::Profile => vec![kv(
                    "cache",
                    if rng.random_bool(0.85) { "hit" } else { "miss" },
                )],
                Svc::Retrieval => {
                    shard += 1;
                    vec![
                        kv("shard", shard.to_string()),
                        kv("cands", rng.random_range(200..2000).to_string()),
                    ]
                }
                Svc::Ranker => vec![
                    kv("model", "dnn-v7"),
                    kv("cands", rng.random_range(50..300).to_string()),
                ],
                _ => vec![
                    kv("bidders", rng.random_range(2..12).to_string()),
                    kv("floor", format!("{:.2}", rng.random_range(0.10..0.80))),
                ],
            };
            hops.push(h);
            if svc == Svc::Ranker && rng.random_bool(0.8) {
                let ranker = hops.len() - 1;
                let mut c = child(rng, &hops, ranker, Svc::Ctr, 0.3, 0.85);
                c.extra = vec![
                    kv("model", "ctr-v12"),
                    kv("batch", rng.random_range(16..128).to_string()),
                ];
                hops.push(c);
            }
        }

        // --- statuses, bottom-up ---
        let leaf_status = |rng: &mut ChaCha8Rng| {
            let r = rng.random::<f64>();
            if r < 0.975 {
                200
            } else if r < 0.985 {
                pick(rng, &[400, 404, 429])
            } else {
                pick(rng, &[500, 502, 503, 504])
            }
        };
        for i in (2..hops.len()).rev() {
            let own = leaf_status(rng);
            let child_5xx = hops.iter().any(|c| c.parent == Some(i) && c.status >= 500);
            hops[i].status = if child_5xx && own == 200 && !rng.random_bool(0.7) {
                500
            } else {
                own
            };
        }
        let child_5xx = hops.iter().any(|c| c.parent == Some(1) && c.status >= 500);
        hops[1].status = if child_5xx {
            if rng.random_bool(0.6) {
                200
            } else {
                pick(rng, &[500, 502, 504])
            }
        } else if rng.random_bool(0.003) {
            500
        } else {
            200
        };
        hops[0].status = if hops[1].status >= 500 {
            if rng.random_bool(0.8) {
                pick(rng, &[502, 504])
            } else {
                200
            }
        } else if rng.random_bool(0.01) {
            pick(rng, &[400, 401, 429])
        } else {
            200
        };

        // --- exposures ---
        let ok = hops[0].status == 200 && hops[1].status == 200;
        let splash = edge_api == "/v1/splash";
        let n_exp = if !ok {
            0
        } else if splash {
            usize::from(rng.random_bool(0.8))
        } else if rng.random_bool(0.55) {
            weighted(rng, &[(1usize, 0.55), (2, 0.30), (3, 0.15)])
        } else {
            0
        };
        hops[1].extra = vec![kv("ads", n_exp.to_string())];

        for h in &hops {
            let host = Self::host(rng, h.svc, idc);
            let parent = h.parent.map(|p| hops[p].span.clone()).unwrap_or_default();
            let caller = h.parent.map(|p| hops[p].svc.info().name).unwrap_or("");
            let info = h.svc.info();
            out.push(Planned {
                emit_ms: h.start,
                host,
                line: Line::Request(Request {
                    ts_ms: h.start,
                    trace_id: Cow::Owned(trace_id.clone()),
                    span_id: Cow::Owned(h.span.clone()),
                    parent_span_id: Cow::Owned(parent),
                    service: s(info.name),
                    caller: s(caller),
                    api: s(if h.svc == Svc::Gateway {
                        edge_api
                    } else {
                        info.api
                    }),
                    uid,
                    psid,
                    status: h.status,
                    latency_ms: h.latency,
                    host: Cow::Owned(host.name()),
                    idc: s(IDCS[idc]),
                    extra: h.extra.clone(),
                }),
            });
        }

        let shown_at = t0 + l0.ceil() as i64;
        let mut position: u16 = if splash { 0 } else { rng.random_range(0..3) };
        let mut real_interactions = 0usize;
        for _ in 0..n_exp {
            let ad_id = 800_000 + self.ad_rank(rng);
            let exposure = Exposure {
                ts_ms: shown_at + rng.random_range(50..=1500),
                mark_id: Cow::Owned(self.mark_id()),
                trace_id: Cow::Owned(trace_id.clone()),
                uid,
                psid,
                ad_id,
                creative_id: ad_id * 10 + rng.random_range(1..=3),
                position,
                platform: s(self.platform(uid)),
                bid_price: floor2(lognormal(rng, 1.2, 0.6).clamp(0.01, 50.0)).max(0.01),
            };
            position += rng.random_range(2..=4);
            let tracker = Self::host(rng, Svc::Tracker, idc);
            let ets = exposure.ts_ms;
            let interactions = self.interactions(rng, &exposure);
            real_interactions += interactions.len();
            out.push(Planned {
                emit_ms: ets,
                host: tracker,
                line: Line::Exposure(exposure),
            });
            for (emit_ms, i) in interactions {
                out.push(Planned {
                    emit_ms,
                    host: Self::host(rng, Svc::Tracker, idc),
                    line: Line::Interaction(i),
                });
            }
        }

        // Orphans: geometric per real interaction, so that orphans make up
        // `orphan_ratio` of all interactions on average.
        for _ in 0..real_interactions {
            while rng.random_bool(self.orphan_ratio) {
                let orphan_idc = Self::idc_index(rng);
                let uid = self.uid(rng);
                let ts = shown_at + first_delay_ms(rng);
                let action = Self::first_action(rng);
                let i = Interaction {
                    ts_ms: ts,
                    mark_id: Cow::Owned(self.mark_id()),
                    trace_id: Cow::Owned(self.trace_id(rng)),
                    uid,
                    action: s(action),
                    extra: Self::action_extra(rng, action, 0),
                };
                out.push(Planned {
                    emit_ms: ts,
                    host: Self::host(rng, Svc::Tracker, orphan_idc),
                    line: Line::Interaction(i),
                });
            }
        }
    }

    fn ad_rank(&self, rng: &mut ChaCha8Rng) -> u64 {
        // 20,000 ads, log-uniform ranks: a few campaigns get most impressions.
        ((rng.random::<f64>() * 20_001f64.ln()).exp() as u64).clamp(1, 20_000)
    }

    fn first_action(rng: &mut ChaCha8Rng) -> &'static str {
        if rng.random_bool(0.9) {
            "click"
        } else {
            "close"
        }
    }

    fn action_extra(
        rng: &mut ChaCha8Rng,
        action: &str,
        position: u16,
    ) -> Vec<(Cow<'static, str>, Cow<'static, str>)> {
        match action {
            "click" => vec![
                kv("pos", position.to_string()),
                kv("net", pick(rng, &["wifi", "4g", "5g"])),
            ],
            "close" => vec![kv(
                "reason",
                pick(rng, &["not_interested", "seen_too_often", "irrelevant"]),
            )],
            "comment" => vec![kv("len", rng.random_range(2..140).to_string())],
            "repost" | "like" | "follow" | "share" => {
                vec![kv("src", pick(rng, &["feed", "detail", "video"]))]
            }
            _ => Vec::new(),
        }
    }

    /// The interactions on one exposure, each with its stream position key.
    fn interactions(
        &mut self,
        rng: &mut ChaCha8Rng,
        e: &Exposure<'static>,
    ) -> Vec<(i64, Interaction<'static>)> {
        let n = weighted(
            rng,
            &[(0usize, 0.65), (1, 0.22), (2, 0.08), (3, 0.03), (4, 0.02)],
        );
        let mut out = Vec::with_capacity(n);
        let mut chain = e.ts_ms;
        for k in 0..n {
            let action = if k == 0 {
                Self::first_action(rng)
            } else {
                weighted(
                    rng,
                    &[
                        ("like", 0.4),
                        ("comment", 0.2),
                        ("repost", 0.15),
                        ("follow", 0.15),
                        ("share", 0.1),
                    ],
                )
            };
            let r = rng.random::<f64>();
            let skewed = r < self.skew_ratio;
            let ts = if skewed {
                e.ts_ms - rng.random_range(1..=3000)
            } else if r < self.skew_ratio + 0.004 {
                // On the window boundary: `window_ms` joins, `window_ms + 1` does not.
                e.ts_ms + self.window_ms + i64::from(rng.random_bool(0.5))
            } else if r < self.skew_ratio + 0.007 {
                e.ts_ms
            } else {
                chain += if k == 0 {
                    first_delay_ms(rng)
                } else {
                    next_gap_ms(rng)
                };
                chain = chain.min(e.ts_ms + MAX_DELAY_MS);
                chain
            };
            let emit_ms = if !skewed && rng.random_bool(self.out_of_order_ratio) {
                // Emitted before its exposure; the event time is unchanged.
                e.ts_ms - rng.random_range(1..=5000)
            } else {
                ts
            };
            out.push((
                emit_ms,
                Interaction {
                    ts_ms: ts,
                    mark_id: e.mark_id.clone(),
                    trace_id: Cow::Owned(self.trace_id(rng)),
                    uid: e.uid,
                    action: s(action),
                    extra: Self::action_extra(rng, action, e.position),
                },
            ));
            if action == "close" {
                break;
            }
        }
        out
    }

    // --- single lines used as templates for bad lines ---

    /// An edge hop of a fresh trace at `ts`.
    pub fn template_request(&mut self, rng: &mut ChaCha8Rng, ts: i64) -> (Line, HostRef) {
        let idc = Self::idc_index(rng);
        let host = Self::host(rng, Svc::Gateway, idc);
        let r = Request {
            ts_ms: ts,
            trace_id: Cow::Owned(self.trace_id(rng)),
            span_id: Cow::Owned(hex16(rng.random())),
            parent_span_id: s(""),
            service: s("ad-gateway"),
            caller: s(""),
            api: s(weighted(rng, &EDGE_APIS)),
            uid: self.uid(rng),
            psid: self.psid(rng),
            status: 200,
            latency_ms: floor2(lognormal(rng, 40.0, 0.45).clamp(4.0, 2_000.0)),
            host: Cow::Owned(host.name()),
            idc: s(IDCS[idc]),
            extra: vec![kv("region", "cn-north"), kv("app_ver", "8.5.2")],
        };
        (Line::Request(r), host)
    }

    /// A fresh exposure at `ts`.
    pub fn template_exposure(&mut self, rng: &mut ChaCha8Rng, ts: i64) -> (Line, HostRef) {
        let idc = Self::idc_index(rng);
        let uid = self.uid(rng);
        let ad_id = 800_000 + self.ad_rank(rng);
        let e = Exposure {
            ts_ms: ts,
            mark_id: Cow::Owned(self.mark_id()),
            trace_id: Cow::Owned(self.trace_id(rng)),
            uid,
            psid: self.psid(rng),
            ad_id,
            creative_id: ad_id * 10 + 1,
            position: rng.random_range(0..10),
            platform: s(self.platform(uid)),
            bid_price: floor2(lognormal(rng, 1.2, 0.6).clamp(0.01, 50.0)).max(0.01),
        };
        (Line::Exposure(e), Self::host(rng, Svc::Tracker, idc))
    }

    /// A fresh interaction (on a fresh mark id) at `ts`.
    pub fn template_interaction(&mut self, rng: &mut ChaCha8Rng, ts: i64) -> (Line, HostRef) {
        let idc = Self::idc_index(rng);
        let action = Self::first_action(rng);
        let i = Interaction {
            ts_ms: ts,
            mark_id: Cow::Owned(self.mark_id()),
            trace_id: Cow::Owned(self.trace_id(rng)),
            uid: self.uid(rng),
            action: s(action),
            extra: Self::action_extra(rng, action, 1),
        };
        (Line::Interaction(i), Self::host(rng, Svc::Tracker, idc))
    }
}
