//! Micro-benchmark of the envelope decoder on ingest's hot path: ns and heap
//! allocations per message for each Filebeat document form, decoded as ingest
//! does (envelope, then the request line).
//!
//! `cargo run --release -p schemas --example envelope_bench [FORM [ITERATIONS]]`

use std::hint::black_box;
use std::time::Instant;

use schemas::{Envelope, Request};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static A: counting_alloc::Counting = counting_alloc::Counting;

const LINE: &str = "2026-11-21 10:00:00.123\t4bf92f3577b34da6a3ce929d0e0e4736\t00f067aa0ba902b7\t\tad-gateway\t\t/v1/feed\t123456\t1001\t200\t12.75\tad-web-017\tyf\tregion=cn-north&ab=exp42";

const STACK: &str = "java.lang.IllegalStateException: bid service timed out\n\tat com.example.ad.BidClient.call(BidClient.java:88)\n\tat com.example.ad.Gateway.feed(Gateway.java:41)";

fn decode(value: &[u8]) -> u64 {
    let env = Envelope::parse(value).expect("envelope");
    let r = Request::parse(&env.message).expect("request line");
    r.uid + env.file_offset.unwrap_or(0)
}

fn main() {
    let msg = serde_json::to_string(LINE).unwrap();
    let forms = [
        (
            "8.x filestream",
            format!(
                r#"{{"@timestamp":"2026-11-21T10:00:00.123Z","@metadata":{{"beat":"filebeat","type":"_doc","version":"8.15.0"}},"message":{msg},"log":{{"offset":812,"file":{{"path":"/data/logs/adserver/trace.log"}}}},"input":{{"type":"filestream"}},"host":{{"name":"ad-web-017"}},"agent":{{"type":"filebeat","version":"8.15.0","ephemeral_id":"8f3e2a0c-9d7b-4c55-a1f0-2b6d7e9c4a11","id":"0b7c1d9e-5f4a-4e2b-9c8d-7a6b5c4d3e2f","name":"ad-web-017"}},"ecs":{{"version":"8.0.0"}},"fields":{{"log_type":"request","idc":"yf"}}}}"#
            ),
        ),
        (
            "7.x log",
            format!(
                r#"{{"@timestamp":"2026-11-21T10:00:00.123Z","@metadata":{{"beat":"filebeat","type":"_doc","version":"7.17.18"}},"log":{{"offset":812,"file":{{"path":"/data/logs/adserver/trace.log"}}}},"message":{msg},"input":{{"type":"log"}},"ecs":{{"version":"1.12.0"}},"host":{{"name":"ad-web-017"}},"agent":{{"type":"filebeat","version":"7.17.18","hostname":"ad-web-017","name":"ad-web-017","id":"0b7c1d9e-5f4a-4e2b-9c8d-7a6b5c4d3e2f","ephemeral_id":"8f3e2a0c-9d7b-4c55-a1f0-2b6d7e9c4a11"}}}}"#
            ),
        ),
        ("bare line", LINE.to_string()),
        (
            "6.x log",
            format!(
                r#"{{"@timestamp":"2026-11-21T10:00:00.123Z","@metadata":{{"beat":"filebeat","type":"doc","version":"6.8.23","topic":"ad_request"}},"offset":812,"prospector":{{"type":"log"}},"input":{{"type":"log"}},"beat":{{"name":"ad-web-017","hostname":"ad-web-017","version":"6.8.23"}},"host":{{"name":"ad-web-017"}},"source":"/data/logs/adserver/trace.log","message":{msg}}}"#
            ),
        ),
        (
            "7.x multiline",
            format!(
                r#"{{"@timestamp":"2026-11-21T10:00:00.123Z","@metadata":{{"beat":"filebeat","type":"_doc","version":"7.17.18"}},"log":{{"offset":812,"file":{{"path":"/data/logs/adserver/trace.log"}},"flags":["multiline"]}},"message":{},"input":{{"type":"log"}},"host":{{"name":"ad-web-017"}},"agent":{{"type":"filebeat","version":"7.17.18","hostname":"ad-web-017"}}}}"#,
                serde_json::to_string(&format!("{LINE}\n{STACK}")).unwrap()
            ),
        ),
    ];
    // Optional: only the forms whose name contains ARG1, ARG2 iterations (for
    // an instruction count under `valgrind --tool=callgrind`, immune to the
    // noise of a shared machine).
    let only = std::env::args().nth(1).unwrap_or_default();
    let n: u64 = std::env::args()
        .nth(2)
        .map_or(400_000, |a| a.parse().expect("iterations"));
    for (name, doc) in forms
        .iter()
        .filter(|(name, _)| name.contains(only.as_str()))
    {
        let v = doc.as_bytes();
        for _ in 0..n.min(20_000) {
            black_box(decode(black_box(v)));
        }
        let a0 = counting_alloc::allocs();
        let t0 = Instant::now();
        for _ in 0..n {
            black_box(decode(black_box(v)));
        }
        let ns = t0.elapsed().as_nanos() as f64 / n as f64;
        let allocs = (counting_alloc::allocs() - a0) as f64 / n as f64;
        println!(
            "{name:<16} {ns:>7.0} ns/msg  {allocs:.2} allocs/msg  ({} B)",
            v.len()
        );
    }
}
