//! `adlog-trace` against the real stack: generator traffic is ingested, the
//! same messages are regenerated in-process (same params ⇒ same bytes) and
//! parsed the way the pipeline parses them, and the CLI must return exactly the
//! generator's lines for a uid and for a trace id: same traces in time order,
//! same span ids, tree order (every parent before its children).

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::time::Duration;

use common::Config;
use integration_tests::{bin, drop_database, env_of, generate, migrate, test_config, Proc};
use loadgen::verify::{parse_value, Parsed};
use loadgen::{Generator, Kind};
use schemas::LogType;
use serde_json::Value;

/// A request line as the generator sent it.
#[derive(Debug, Clone)]
struct Sent {
    ts_ms: u64,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    caller: String,
    uid: u64,
}

/// Every good request line of the run, by trace id.
fn sent_lines(m: &loadgen::Manifest) -> BTreeMap<String, Vec<Sent>> {
    let mut by_trace: BTreeMap<String, Vec<Sent>> = BTreeMap::new();
    for msg in Generator::new(&m.params).unwrap() {
        if msg.log_type != LogType::Request || !matches!(msg.kind, Kind::Good(_)) {
            continue;
        }
        let s = parse_value(LogType::Request, &msg.value, |_, p| match p {
            Parsed::Request(r) => Sent {
                ts_ms: r.ts_ms as u64,
                trace_id: r.trace_id.to_string(),
                span_id: r.span_id.to_string(),
                parent_span_id: r.parent_span_id.to_string(),
                caller: r.caller.to_string(),
                uid: r.uid,
            },
            other => panic!("a request message parsed as {:?}", other.log_type()),
        })
        .expect("good messages parse");
        by_trace.entry(s.trace_id.clone()).or_default().push(s);
    }
    by_trace
}

/// `adlog-trace ARGS…` → (exit code, stdout, stderr).
fn cli(cfg: &Config, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin("adlog-trace"))
        .args(args)
        .envs(env_of(cfg))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The CLI's lines of one trace equal the generator's: same count, same span
/// ids, and a valid tree order (parent before child, depth = parent's + 1).
fn assert_same_lines(trace_id: &str, got: &[Value], want: &[Sent]) {
    assert_eq!(got.len(), want.len(), "{trace_id}: line count");
    let mut got_spans: Vec<String> = got
        .iter()
        .map(|l| l["span_id"].as_str().unwrap().to_string())
        .collect();
    let mut want_spans: Vec<String> = want.iter().map(|s| s.span_id.clone()).collect();
    let mut depth_of: HashMap<String, u64> = HashMap::new();
    for (i, l) in got.iter().enumerate() {
        let span = l["span_id"].as_str().unwrap();
        let parent = l["parent_span_id"].as_str().unwrap();
        let depth = l["depth"].as_u64().unwrap();
        assert_eq!(l["trace_id"], trace_id);
        if parent.is_empty() {
            assert_eq!(depth, 0, "{trace_id}: line {i} (span {span}) is a root");
        } else {
            let pd = depth_of.get(parent).unwrap_or_else(|| {
                panic!("{trace_id}: span {span} listed before its parent {parent}")
            });
            assert_eq!(depth, pd + 1, "{trace_id}: depth of span {span}");
        }
        let w = want.iter().find(|s| s.span_id == span).unwrap();
        assert_eq!(l["parent_span_id"], w.parent_span_id.as_str());
        assert_eq!(
            l["ts_ms"].as_u64().unwrap(),
            w.ts_ms,
            "{trace_id}/{span}: ts_ms"
        );
        assert_eq!(l["uid"].as_u64().unwrap(), w.uid);
        depth_of.insert(span.to_string(), depth);
    }
    got_spans.sort();
    want_spans.sort();
    assert_eq!(got_spans, want_spans, "{trace_id}: span ids");
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_lookup_returns_exactly_the_generated_lines() {
    let cfg = test_config("trace_lookup");
    migrate(&cfg).unwrap();
    let m = generate(&cfg, 20_000, 0).await.unwrap();
    let mut ingest = Proc::start("ingest", &["run", "--stop-after-idle", "4"], &cfg).unwrap();
    assert_eq!(
        ingest.wait(Duration::from_secs(300)).unwrap(),
        0,
        "ingest (log: {})",
        ingest.name
    );

    let by_trace = sent_lines(&m);
    // Each trace's edge line (caller = '') names its uid.
    let mut traces_of_uid: BTreeMap<u64, Vec<(u64, String)>> = BTreeMap::new();
    for (t, lines) in &by_trace {
        let edges: Vec<&Sent> = lines.iter().filter(|s| s.caller.is_empty()).collect();
        assert_eq!(edges.len(), 1, "trace {t} has one edge line");
        traces_of_uid
            .entry(edges[0].uid)
            .or_default()
            .push((edges[0].ts_ms, t.clone()));
    }
    let (&uid, traces) = traces_of_uid
        .iter()
        .max_by_key(|(uid, t)| (t.len(), std::cmp::Reverse(**uid)))
        .unwrap();
    let mut want_traces = traces.clone();
    want_traces.sort();
    assert!(want_traces.len() >= 2, "the busiest uid has several traces");
    println!("uid {uid}: {} traces", want_traces.len());

    // uid → traces → lines.
    let uid_s = uid.to_string();
    let (code, out, err) = cli(
        &cfg,
        &[
            "uid", &uid_s, "--since", "1d", "--lines", "--json", "--limit", "10000",
        ],
    );
    assert_eq!(code, 0, "adlog-trace uid: {err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["uid"].as_u64(), Some(uid));
    assert_eq!(v["truncated"], false);
    let got = v["traces"].as_array().unwrap();
    let got_ids: Vec<(u64, String)> = got
        .iter()
        .map(|t| {
            (
                t["ts_ms"].as_u64().unwrap(),
                t["trace_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got_ids, want_traces, "the uid's traces, oldest first");
    for t in got {
        let id = t["trace_id"].as_str().unwrap();
        assert_eq!(t["uid"].as_u64(), Some(uid));
        assert_same_lines(id, t["lines"].as_array().unwrap(), &by_trace[id]);
    }

    // trace id → lines, for the trace with the most lines.
    let (big, big_lines) = by_trace
        .iter()
        .max_by_key(|(id, l)| (l.len(), std::cmp::Reverse((*id).clone())))
        .unwrap();
    let (code, out, err) = cli(&cfg, &["trace", big, "--json"]);
    assert_eq!(code, 0, "adlog-trace trace: {err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["trace_id"], big.as_str());
    assert_eq!(v["indexed_lines"].as_u64(), Some(big_lines.len() as u64));
    assert_same_lines(big, v["lines"].as_array().unwrap(), big_lines);
    println!("trace {big}: {} lines", big_lines.len());

    // The text form shows the tree too.
    let (code, out, _) = cli(&cfg, &["trace", big]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!("trace {big}: {} lines", big_lines.len())),
        "{out}"
    );

    // --grafana: the trace dashboard's link at the trace's user and time range
    // (± 1 minute), under grafana.url.
    let out = Command::new(bin("adlog-trace"))
        .args(["trace", big, "--grafana"])
        .envs(env_of(&cfg))
        .env("ADLOG_GRAFANA__URL", "https://grafana.example.com/")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let edge = big_lines.iter().find(|s| s.caller.is_empty()).unwrap();
    let first = big_lines.iter().map(|s| s.ts_ms).min().unwrap();
    let last = big_lines.iter().map(|s| s.ts_ms).max().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "https://grafana.example.com/d/adlog-trace?var-uid={}&var-trace_id={big}&from={}&to={}\n",
            edge.uid,
            first - 60_000,
            last + 60_000
        )
    );

    // Nothing found: exit 1 and a message that says where it looked.
    let unused = (1..)
        .find(|u| !traces_of_uid.contains_key(u))
        .unwrap()
        .to_string();
    let (code, _, err) = cli(&cfg, &["uid", &unused, "--since", "1d"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with(&format!("no traces for uid {unused} in ")),
        "{err}"
    );
    let (code, _, err) = cli(&cfg, &["trace", "no-such-trace"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no trace \"no-such-trace\""), "{err}");
    let (code, _, err) = cli(&cfg, &["uid", &uid_s, "--since", "1y"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad duration"), "{err}");

    drop_database(&cfg).await;
}
