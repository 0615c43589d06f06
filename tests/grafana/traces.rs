//! Included by tests/tests/dashboards.rs (`#[path]`): what Grafana's trace view
//! and logs view need from a frame, and the queries the ClickHouse plugin
//! itself sends for its trace search, "View trace" and "View logs" (built the
//! way `src/data/sqlGenerator.ts` of grafana/clickhouse-datasource builds them
//! from the datasource's `traces` / `logs` defaults in
//! grafana/provisioning/datasources/adlog.yaml).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{column, QueryResult};

/// A column's type as the plugin sees it: its converters unwrap
/// `LowCardinality(T)` to `T` (pkg/converters/converters.go).
pub fn plain(t: &str) -> &str {
    t.strip_prefix("LowCardinality(")
        .and_then(|t| t.strip_suffix(')'))
        .unwrap_or(t)
}

/// `columns` must be exactly `want` (name, plain type), in order.
pub fn exact_columns(r: &QueryResult, want: &[(&str, &str)]) -> Vec<String> {
    let got: Vec<(&str, &str)> = r.meta.iter().map(|(n, t)| (n.as_str(), plain(t))).collect();
    if got == want {
        Vec::new()
    } else {
        vec![format!("columns {got:?}, want exactly {want:?}")]
    }
}

/// The traces panel's frame (Grafana's trace data frame: traceID, spanID,
/// parentSpanID, serviceName, operationName, startTime in epoch ms, duration in
/// ms; statusCode 0/2; tags and serviceTags as JSON text that the panel's
/// "Convert field type → other" transformation parses into [{key, value}]).
pub const WATERFALL_18_16: &[(&str, &str)] = &[
    ("traceID", "String"),
    ("spanID", "String"),
    ("parentSpanID", "String"),
    ("serviceName", "String"),
    ("operationName", "String"),
    ("startTime", "UInt64"),
    ("duration", "Float64"),
    ("statusCode", "UInt8"),
    ("tags", "String"),
    ("serviceTags", "String"),
];

/// The logs panel's frame: the time first, the line second (the plugin's
/// logs frame order), then level and traceID, then fields shown in the details.
pub const LOGS_18_16: &[(&str, &str)] = &[
    ("timestamp", "DateTime"),
    ("body", "String"),
    ("level", "String"),
    ("traceID", "String"),
    ("spanID", "String"),
    ("serviceName", "String"),
    ("uid", "UInt64"),
    ("ts_ms", "UInt64"),
];

/// A waterfall: one trace id (the one asked for), unique span ids, exactly one
/// root (parentSpanID ''), every other span's parent in the frame, and tags
/// that parse as `[{"key": "…", "value": "…"}]` (JSON text or, from the
/// plugin's own query, arrays of maps).
pub fn check_waterfall(r: &QueryResult, trace: &str) -> Vec<String> {
    let mut e = Vec::new();
    let spans = column(r, "spanID");
    let parents = column(r, "parentSpanID");
    let ids: Vec<String> = column(r, "traceID")
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if ids != [trace.to_string()] {
        e.push(format!("trace ids {ids:?}, want only {trace}"));
    }
    let set: BTreeSet<&String> = spans.iter().collect();
    if set.len() != spans.len() {
        e.push(format!("duplicate span ids: {spans:?}"));
    }
    let roots = parents.iter().filter(|p| p.is_empty()).count();
    if roots != 1 {
        e.push(format!("{roots} root spans (parentSpanID ''), want 1"));
    }
    for (s, p) in spans.iter().zip(&parents) {
        if !p.is_empty() && !set.contains(p) {
            e.push(format!("span {s}: parent {p} is not in the trace"));
        }
    }
    if spans.len() < 2 {
        e.push(format!(
            "a trace of {} span(s): no nested calls",
            spans.len()
        ));
    }
    for name in ["tags", "serviceTags"] {
        let Some(i) = r.meta.iter().position(|(n, _)| n == name) else {
            e.push(format!("no {name} field"));
            continue;
        };
        for row in &r.data {
            let v = match &row[i] {
                Value::String(s) => match serde_json::from_str::<Value>(s) {
                    Ok(v) => v,
                    Err(err) => {
                        e.push(format!("{name} {s:?} is not JSON: {err}"));
                        continue;
                    }
                },
                other => other.clone(),
            };
            let ok = v.as_array().is_some_and(|a| {
                !a.is_empty()
                    && a.iter().all(|kv| {
                        kv.as_object().is_some_and(|o| {
                            o.len() == 2 && o["key"].is_string() && o["value"].is_string()
                        })
                    })
            });
            if !ok {
                e.push(format!(
                    "{name} {v} is not a list of {{key, value}} strings"
                ));
            }
        }
    }
    e
}

/// The spans of a waterfall frame by span id: (parent, service, operation,
/// start ms, duration ms, status code), numbers normalised.
pub fn spans(r: &QueryResult) -> BTreeMap<String, (String, String, String, i64, String, String)> {
    let num = |c: &str| column(r, c);
    let (s, p, svc, op, start, dur, st) = (
        num("spanID"),
        num("parentSpanID"),
        num("serviceName"),
        num("operationName"),
        num("startTime"),
        num("duration"),
        num("statusCode"),
    );
    (0..s.len())
        .map(|i| {
            let ms = start[i]
                .trim_matches('"')
                .parse::<f64>()
                .unwrap_or(f64::NAN);
            let d = dur[i].trim_matches('"').parse::<f64>().unwrap_or(f64::NAN);
            (
                s[i].clone(),
                (
                    p[i].clone(),
                    svc[i].clone(),
                    op[i].clone(),
                    ms.round() as i64,
                    format!("{d:.6}"),
                    st[i].trim_matches('"').to_string(),
                ),
            )
        })
        .collect()
}

fn q(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The plugin's "View trace" query for `trace` with the provisioned traces
/// defaults (OTel column map, `_trace_id_ts` table present, events and links
/// prefixes): `generateTraceIdQuery` in sqlGenerator.ts, Map-typed tags.
pub fn plugin_trace_id_query(db: &str, trace: &str) -> String {
    let attrs =
        |x: &str| format!("arrayMap(key -> map('key', key, 'value', {x}[key]), mapKeys({x}))");
    format!(
        "WITH {id} as __gf_trace_id, \
         (SELECT min(Start) FROM \"{db}\".\"otel_traces_trace_id_ts\" WHERE TraceId = __gf_trace_id) as __gf_trace_start, \
         (SELECT max(End) + 1 FROM \"{db}\".\"otel_traces_trace_id_ts\" WHERE TraceId = __gf_trace_id) as __gf_trace_end \
         SELECT \"TraceId\" as traceID, \"SpanId\" as spanID, \"ParentSpanId\" as parentSpanID, \
         \"ServiceName\" as serviceName, \"SpanName\" as operationName, \
         multiply(toUnixTimestamp64Nano(\"Timestamp\"), 0.000001) as startTime, \
         multiply(\"Duration\", 0.000001) as duration, \
         arrayMap(key -> map('key', key, 'value',\"SpanAttributes\"[key]), mapKeys(\"SpanAttributes\")) as tags, \
         arrayMap(key -> map('key', key, 'value',\"ResourceAttributes\"[key]), mapKeys(\"ResourceAttributes\")) as serviceTags, \
         if(\"StatusCode\" IN ('Error', 'STATUS_CODE_ERROR'), 2, 0) as statusCode, \
         arrayMap((name, timestamp, attributes) -> tuple(name, toString(toUnixTimestamp64Milli(timestamp)), {a})\
         ::Tuple(name String, timestamp String, fields Array(Map(String, String))), \
         \"Events\".Name, \"Events\".Timestamp, \"Events\".Attributes) AS logs, \
         arrayMap((traceID, spanID, attributes) -> tuple(traceID, spanID, {a})\
         ::Tuple(traceID String, spanID String, tags Array(Map(String, String))), \
         \"Links\".TraceId, \"Links\".SpanId, \"Links\".Attributes) AS references, \
         \"SpanKind\" as kind, \"StatusMessage\" as statusMessage, \"TraceState\" as traceState \
         FROM \"{db}\".\"otel_traces\" WHERE traceID = __gf_trace_id \
         AND \"Timestamp\" >= __gf_trace_start AND \"Timestamp\" <= __gf_trace_end",
        id = q(trace),
        a = attrs("attributes"),
    )
}

pub const PLUGIN_TRACE_ID: &[(&str, &str)] = &[
    ("traceID", "String"),
    ("spanID", "String"),
    ("parentSpanID", "String"),
    ("serviceName", "String"),
    ("operationName", "String"),
    ("startTime", "Float64"),
    ("duration", "Float64"),
    ("tags", "Array(Map(String, String))"),
    ("serviceTags", "Array(Map(String, String))"),
    ("statusCode", "UInt8"),
    (
        "logs",
        "Array(Tuple(name String, timestamp String, fields Array(Map(String, String))))",
    ),
    (
        "references",
        "Array(Tuple(traceID String, spanID String, tags Array(Map(String, String))))",
    ),
    ("kind", "String"),
    ("statusMessage", "String"),
    ("traceState", "String"),
];

/// The plugin's "View logs" query for `trace` with the provisioned logs
/// defaults (OTel column map): `generateLogsQuery` with a TraceId filter,
/// ascending time.
pub fn plugin_logs_query(db: &str, trace: &str) -> String {
    format!(
        "SELECT Timestamp as \"timestamp\", Body as \"body\", SeverityText as \"level\", TraceId as \"traceID\", \
         ResourceAttributes, ScopeAttributes, LogAttributes FROM \"{db}\".\"otel_logs\" \
         WHERE ( traceID = {} ) ORDER BY timestamp ASC LIMIT 1000",
        q(trace)
    )
}

pub const PLUGIN_LOGS: &[(&str, &str)] = &[
    ("timestamp", "DateTime64(9)"),
    ("body", "String"),
    ("level", "String"),
    ("traceID", "String"),
    ("ResourceAttributes", "Map(LowCardinality(String), String)"),
    ("ScopeAttributes", "Map(LowCardinality(String), String)"),
    ("LogAttributes", "Map(LowCardinality(String), String)"),
];

/// The plugin's trace search (Explore, query type Traces, OTel defaults):
/// root spans in the range, newest first (`generateTraceSearchQuery`).
pub fn plugin_search_query(db: &str, from_s: i64, to_s: i64) -> String {
    format!(
        "SELECT \"TraceId\" as traceID, \"ServiceName\" as serviceName, \"SpanName\" as operationName, \
         \"Timestamp\" as startTime, multiply(\"Duration\", 0.000001) as duration \
         FROM \"{db}\".\"otel_traces\" WHERE ( Timestamp >= toDateTime({from_s}) AND Timestamp <= toDateTime({to_s}) ) \
         AND ( ParentSpanId = '' ) AND ( Duration > 0 ) ORDER BY Timestamp DESC, Duration DESC LIMIT 1000"
    )
}

pub const PLUGIN_SEARCH: &[(&str, &str)] = &[
    ("traceID", "String"),
    ("serviceName", "String"),
    ("operationName", "String"),
    ("startTime", "DateTime64(9)"),
    ("duration", "Float64"),
];
