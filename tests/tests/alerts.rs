//! The Prometheus side of the pipeline's observability (`prometheus/`):
//!
//! * `promtool check config` (prometheus.yml), `promtool check rules` and
//!   `promtool test rules` (rules/adlog.yml against rules/adlog_test.yml), every
//!   alert having a test case that fires and one that does not, and every
//!   `adlog_*` metric the rules name being registered by ingest or the joiner;
//! * `amtool check-config` (alertmanager.yml) and its routes;
//! * a real Alertmanager (Debian `prometheus-alertmanager`) with that
//!   configuration (webhooks pointed at a listener in this test, group_wait
//!   shortened): an outage's cause alert is notified, the symptom alerts of the
//!   same cluster are inhibited, other clusters and unrelated alerts are not.
//!
//! Needs Debian `prometheus` and `prometheus-alertmanager` (`dev/stack install`);
//! missing tools FAIL the test with that hint.

#[allow(dead_code)]
#[path = "../grafana/prom.rs"]
mod prom;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prom::{check_metric_names, promtool, root};
use serde_json::{json, Value};

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} not found: install Debian's `prometheus-alertmanager` / `prometheus` (`dev/stack install`)");
}

/// Runs `cmd`, fails with its output unless it exits 0; returns stdout and stderr.
fn run_ok(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{stdout}{stderr}");
    (stdout, stderr)
}

fn prom_dir() -> PathBuf {
    root().join("prometheus")
}

/// `alert:` names of a rules file.
fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_string())
        .collect()
}

#[test]
fn promtool_checks_and_unit_tests_pass() {
    let dir = prom_dir();
    for args in [
        &["check", "config", "prometheus.yml"][..],
        &["check", "rules", "rules/adlog.yml"][..],
        &["test", "rules", "rules/adlog_test.yml"][..],
    ] {
        let (out, err) = run_ok(Command::new(promtool()).args(args).current_dir(&dir));
        println!("promtool {}:\n{out}{err}", args.join(" "));
    }
}

#[test]
fn every_alert_has_a_firing_and_a_silent_test_case() {
    let rules = std::fs::read_to_string(prom_dir().join("rules/adlog.yml")).unwrap();
    let tests = std::fs::read_to_string(prom_dir().join("rules/adlog_test.yml")).unwrap();
    let alerts = alert_names(&rules);
    assert!(alerts.len() >= 7, "too few alerts: {alerts:?}");
    for want in [
        "AdlogWorkerDown",
        "AdlogClickHouseDown",
        "AdlogConsumerLagHigh",
        "AdlogFreshnessSLABreach",
        "AdlogDeadLetterRateHigh",
        "AdlogInsertFailures",
        "AdlogJoinRateDrop",
    ] {
        assert!(alerts.iter().any(|a| a == want), "no alert {want}");
    }
    // alertname → (cases expecting alerts, cases expecting none)
    let mut cases: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    let lines: Vec<&str> = tests.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let Some(name) = l.trim().strip_prefix("alertname:") else {
            continue;
        };
        let next = lines.get(i + 1).map(|l| l.trim()).unwrap_or("");
        let e = cases.entry(name.trim().to_string()).or_default();
        match next {
            "exp_alerts: []" => e.1 += 1,
            "exp_alerts:" => e.0 += 1,
            other => panic!("unexpected line after alertname {name}: {other:?}"),
        }
    }
    for a in &alerts {
        let (fire, silent) = cases.get(a).copied().unwrap_or_default();
        assert!(
            fire >= 1 && silent >= 1,
            "{a}: {fire} firing and {silent} silent test cases in rules/adlog_test.yml (want >= 1 each)"
        );
    }
    // Every label and annotation set is complete: severity on every alert.
    let severities = rules.matches("severity:").count();
    assert_eq!(
        severities,
        alerts.len(),
        "every alert needs a severity label"
    );
    // Metrics named by the rules exist in the workers.
    let exprs: Vec<(String, String)> = rules
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("adlog_") && !l.trim_start().starts_with('#'))
        .map(|(i, l)| (format!("rules/adlog.yml:{}", i + 1), l.to_string()))
        .collect();
    let errors = check_metric_names(&exprs);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    println!(
        "{} alerts, each with firing and silent cases: {cases:?}",
        alerts.len()
    );
}

#[test]
fn amtool_accepts_the_alertmanager_config_and_routes_by_severity() {
    let dir = prom_dir();
    let (out, err) = run_ok(
        Command::new(tool("amtool"))
            .args(["check-config", "alertmanager.yml"])
            .current_dir(&dir),
    );
    println!("{out}{err}");
    for (labels, receiver) in [
        (
            &["alertname=AdlogWorkerDown", "severity=critical"][..],
            "adlog-oncall",
        ),
        (
            &[
                "alertname=AdlogInsertFailures",
                "severity=warning",
                "symptom=true",
            ][..],
            "adlog-team",
        ),
        (&["alertname=Other"][..], "adlog-team"),
    ] {
        let (out, _) = run_ok(
            Command::new(tool("amtool"))
                .args(["config", "routes", "test", "--config.file=alertmanager.yml"])
                .args(labels)
                .current_dir(&dir),
        );
        let got = out.lines().last().unwrap_or("").trim();
        assert_eq!(got, receiver, "{labels:?} routed to {got:?}:\n{out}");
    }
}

// ------------------------------------------------- a real Alertmanager ---

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A minimal HTTP/1.1 request; returns (status, body).
fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // Chunked answers: keep the JSON between the first '[' / '{' and the last ']' / '}'.
    let body = match (body.find(['[', '{']), body.rfind([']', '}'])) {
        (Some(a), Some(b)) if b >= a => body[a..=b].to_string(),
        _ => body.to_string(),
    };
    Ok((status, body))
}

/// Webhook notifications received: (path, alerts of the notification).
type Received = Arc<Mutex<Vec<(String, Value)>>>;

fn webhook_listener() -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got: Received = Arc::default();
    let sink = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let sink = sink.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream);
                let mut line = String::new();
                let _ = r.read_line(&mut line);
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut len = 0;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                sink.lock().unwrap().push((path, v));
                let mut s = r.into_inner();
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            });
        }
    });
    (port, got)
}

struct Alertmanager(Child);

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn one_outage_gives_one_notification() {
    let (hook_port, received) = webhook_listener();
    let dir = tempfile::tempdir().unwrap();
    // The shipped configuration, with the webhooks pointed here and a short group_wait.
    let cfg = std::fs::read_to_string(prom_dir().join("alertmanager.yml"))
        .unwrap()
        .replace(
            "http://127.0.0.1:5001/",
            &format!("http://127.0.0.1:{hook_port}/"),
        )
        .replace("group_wait: 30s", "group_wait: 2s");
    assert!(
        cfg.contains(&format!(":{hook_port}/")),
        "webhook URLs not found in alertmanager.yml"
    );
    let cfg_path = dir.path().join("alertmanager.yml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("am.log")).unwrap();
    let am = Alertmanager(
        Command::new(tool("prometheus-alertmanager"))
            .arg(format!("--config.file={}", cfg_path.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting prometheus-alertmanager"),
    );
    let t0 = Instant::now();
    while !matches!(http(port, "GET", "/-/ready", ""), Ok((200, _))) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "Alertmanager did not become ready: {}",
            std::fs::read_to_string(dir.path().join("am.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let alert =
        |name: &str, cluster: &str, severity: &str, symptom: bool, extra: &[(&str, &str)]| {
            let mut labels = json!({"alertname": name, "cluster": cluster, "severity": severity});
            if symptom {
                labels["symptom"] = json!("true");
            }
            for (k, v) in extra {
                labels[*k] = json!(v);
            }
            json!({"labels": labels, "annotations": {"summary": name}})
        };
    // ClickHouse is down in cluster c1: the cause and its symptoms fire at once.
    // Also: an unrelated alert in c1 and a symptom in another cluster.
    let alerts = json!([
        alert(
            "AdlogClickHouseDown",
            "c1",
            "critical",
            false,
            &[("instance", "i1")]
        ),
        alert(
            "AdlogInsertFailures",
            "c1",
            "warning",
            true,
            &[("instance", "i1"), ("table", "ods_request")]
        ),
        alert(
            "AdlogInsertFailures",
            "c1",
            "warning",
            true,
            &[("instance", "i1"), ("table", "ods_exposure")]
        ),
        alert(
            "AdlogFreshnessSLABreach",
            "c1",
            "critical",
            true,
            &[("job", "adlog-ingest")]
        ),
        alert(
            "AdlogConsumerLagHigh",
            "c1",
            "warning",
            true,
            &[("topic", "request")]
        ),
        alert(
            "AdlogDeadLetterRateHigh",
            "c1",
            "warning",
            false,
            &[("topic", "request")]
        ),
        alert(
            "AdlogInsertFailures",
            "c2",
            "warning",
            true,
            &[("instance", "i9"), ("table", "ods_request")]
        ),
    ]);
    let (status, body) = http(port, "POST", "/api/v2/alerts", &alerts.to_string()).unwrap();
    assert_eq!(status, 200, "posting alerts: {body}");

    // Suppression as the API reports it.
    let want_active: BTreeSet<(String, String)> = [
        ("AdlogClickHouseDown", "c1"),
        ("AdlogDeadLetterRateHigh", "c1"),
        ("AdlogInsertFailures", "c2"),
    ]
    .iter()
    .map(|(a, c)| (a.to_string(), c.to_string()))
    .collect();
    let mut states = BTreeMap::new();
    let t0 = Instant::now();
    loop {
        let (_, body) = http(port, "GET", "/api/v2/alerts", "").unwrap();
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        states.clear();
        for a in v.as_array().into_iter().flatten() {
            let key = (
                a["labels"]["alertname"].as_str().unwrap_or("").to_string(),
                a["labels"]["cluster"].as_str().unwrap_or("").to_string(),
                a["labels"]["table"].as_str().unwrap_or("").to_string(),
            );
            states.insert(key, a["status"]["state"].as_str().unwrap_or("").to_string());
        }
        let ok = states.len() == 7
            && states.iter().all(|((a, c, _), s)| {
                (s == "active") == want_active.contains(&(a.clone(), c.clone()))
            });
        if ok {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "alert states (want only {want_active:?} active, the rest suppressed): {states:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Notifications: one per group of an active alert, nothing about the symptoms of c1.
    std::thread::sleep(Duration::from_secs(5));
    let got = received.lock().unwrap().clone();
    let mut notified: BTreeMap<(String, String), u32> = BTreeMap::new();
    for (path, v) in &got {
        for a in v["alerts"].as_array().into_iter().flatten() {
            let key = (
                a["labels"]["alertname"].as_str().unwrap_or("").to_string(),
                a["labels"]["cluster"].as_str().unwrap_or("").to_string(),
            );
            assert!(
                want_active.contains(&key),
                "notified an alert that should be inhibited: {key:?} via {path}"
            );
            *notified.entry(key).or_default() += 1;
        }
    }
    let keys: BTreeSet<(String, String)> = notified.keys().cloned().collect();
    assert_eq!(keys, want_active, "notifications: {got:#?}");
    assert_eq!(
        got.len(),
        want_active.len(),
        "one notification per group: {got:#?}"
    );
    let oncall: Vec<&String> = got
        .iter()
        .map(|(p, _)| p)
        .filter(|p| p.ends_with("/oncall"))
        .collect();
    assert_eq!(oncall.len(), 1, "only the critical cause pages: {got:#?}");
    println!("alert states: {states:#?}\nnotifications: {notified:?}");
    drop(am);
}
