//! Shared by tests/tests/dashboards.rs and tests/tests/alerts.rs (included with
//! `#[path]`): the metric names the workers register, and promtool.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Names the workers register (`adlog_ingest_…`, `adlog_joiner_…`), read from
/// their metrics.rs and the shared `common::metrics::Registrar` (its
/// `consumer_lag`, under both prefixes): every string literal that looks
/// like a metric name.
pub fn known_metrics() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (file, prefix) in [
        ("ingest/src/metrics.rs", "adlog_ingest_"),
        ("joiner/src/metrics.rs", "adlog_joiner_"),
        ("common/src/metrics.rs", "adlog_ingest_"),
        ("common/src/metrics.rs", "adlog_joiner_"),
    ] {
        let src = std::fs::read_to_string(root().join(file)).unwrap();
        for lit in src.split('"').skip(1).step_by(2) {
            if !lit.is_empty()
                && lit
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
            {
                out.insert(format!("{prefix}{lit}"));
            }
        }
    }
    out
}

/// `adlog_*` metric names in a PromQL expression (histogram series suffixes removed).
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("adlog_") {
        let tail = &rest[i..];
        // `adlog:…` recording rules and longer words are not metric names.
        let standalone = i == 0 || !rest[..i].ends_with(|c: char| word(c) || c == ':');
        // A `{__name__=~"adlog_(ingest|joiner)_x"}` matcher names one metric per alternative.
        let (names, len) = match tail["adlog_".len()..].strip_prefix('(') {
            Some(group) => match group.split_once(')') {
                Some((alts, after)) => {
                    let n = after.find(|c: char| !word(c)).unwrap_or(after.len());
                    let names: Vec<String> = alts
                        .split('|')
                        .map(|a| format!("adlog_{a}{}", &after[..n]))
                        .collect();
                    (names, "adlog_(".len() + alts.len() + 1 + n)
                }
                None => (Vec::new(), "adlog_".len()),
            },
            None => {
                let n = tail.find(|c: char| !word(c)).unwrap_or(tail.len());
                (vec![tail[..n].to_string()], n)
            }
        };
        if standalone {
            for name in names {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name);
                out.insert(base.to_string());
            }
        }
        rest = &tail[len.max(1)..];
    }
    out
}

/// Checks that every `adlog_*` metric named in `exprs` is registered by a worker.
pub fn check_metric_names(exprs: &[(String, String)]) -> Vec<String> {
    let known = known_metrics();
    let mut errors = Vec::new();
    for (what, expr) in exprs {
        for m in metric_names(expr) {
            if !known.contains(&m) {
                errors.push(format!(
                    "{what}: metric {m} is not registered by ingest or joiner (expr: {expr})"
                ));
            }
        }
    }
    errors
}

pub fn promtool() -> PathBuf {
    for p in ["/usr/bin/promtool", "/usr/local/bin/promtool"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("promtool not found: install Debian's `prometheus` package (`dev/stack install`)");
}
