//! The Grafana dashboards (`grafana/dashboards/*.json`) without a Grafana server:
//!
//! * `dashboards_are_well_formed` (no stack needed): the JSON model (ids, titles,
//!   descriptions, units, grid), the official ClickHouse plugin's query shape
//!   (`editorType: sql`, `queryType`, `format`, `rawSql`), every variable a query
//!   uses is defined, no construct ClickHouse 18.16 lacks (`$__timeInterval`,
//!   `toStartOfInterval`, `fromUnixTimestamp64Milli`, the `_ms` macros), the
//!   provisioning files name the datasource uids the panels use, every Prometheus
//!   expression parses (`promtool check rules` on a generated rules file) and
//!   every `adlog_*` metric it names exists in `ingest/src/metrics.rs` or
//!   `joiner/src/metrics.rs`.
//! * `every_clickhouse_panel_runs_on_18_16_and_chdb`: real traffic (loadgen →
//!   Kafka → joiner + ingest → ClickHouse 18.16), then every ClickHouse panel
//!   target and query variable of every dashboard is expanded the way Grafana and
//!   the plugin do (see [`grafana`] below; `bench/queries.d/grafana_expand.py`
//!   implements the same rules and must agree on every query) and run on the dev
//!   stack's ClickHouse 18.16 AND on chDB (ClickHouse 26.9, the same raw rows
//!   loaded under the same migrations rendered for 26.9, rollups rebuilt by its
//!   materialized views; `tests/grafana/chdb_panels.py`). Each result must have
//!   what its panel type needs (time series: a DateTime column, numbers, string
//!   labels, ascending time; tables: named columns; stats: one numeric row; node
//!   graph: `nodes` id/title/mainstat and `edges` id/source/target whose ends are
//!   node ids) and rows, with the same row count and columns on both engines —
//!   once with every variable at All and once with concrete selections.
//!
//! Needs `dev/stack up` (Kafka, ClickHouse, Redis), `pip install chdb-core` and
//! Debian `prometheus` (promtool). A missing piece FAILS the test with what to start.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use integration_tests::{
    bin, clickhouse, drop_database, env_of, generate, migrate, test_config, Proc,
};
use serde_json::{json, Value};

#[allow(dead_code)]
#[path = "../grafana/prom.rs"]
mod prom;

use prom::{check_metric_names, known_metrics, metric_names, promtool};

#[path = "../grafana/traces.rs"]
mod traces;

const CH_TYPE: &str = "grafana-clickhouse-datasource";
const CH_UID: &str = "adlog-clickhouse";
const PROM_TYPE: &str = "prometheus";
const PROM_UID: &str = "adlog-prometheus";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Grafana's variable interpolation and the ClickHouse plugin's macros, in the
/// order they happen: `$__conditionalAll` (plugin front end), template
/// variables (Grafana's templateSrv with the plugin's format function), then
/// the backend macros (`pkg/macros/macros.go`). Mirrors
/// `bench/queries.d/grafana_expand.py`.
mod grafana {
    use std::collections::BTreeMap;

    use anyhow::{anyhow, bail, Result};
    use serde_json::Value;

    /// A template variable's current value: a string, or a list (multi-value).
    /// `$__all` (or `[$__all]`) means All; `all_values` are then the options.
    #[derive(Debug, Clone)]
    pub struct Var {
        pub value: Value,
        pub all_values: Option<Vec<String>>,
    }

    impl Var {
        pub fn one(v: &str) -> Var {
            Var {
                value: Value::String(v.to_string()),
                all_values: None,
            }
        }
        pub fn many(v: &[String]) -> Var {
            Var {
                value: Value::Array(v.iter().map(|s| Value::String(s.clone())).collect()),
                all_values: None,
            }
        }
        pub fn all() -> Var {
            Var {
                value: Value::Array(vec![Value::String("$__all".into())]),
                all_values: None,
            }
        }
        pub fn to_json(&self) -> Value {
            serde_json::json!({"value": self.value, "all_values": self.all_values})
        }
    }

    fn is_all(v: &Value) -> bool {
        match v {
            Value::String(s) => s.is_empty() || s == "$__all",
            Value::Array(a) => a.is_empty() || (a.len() == 1 && a[0] == "$__all"),
            _ => false,
        }
    }

    const NICE_MS: [i64; 27] = [
        10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 15000, 20000, 30000, 60000, 120000,
        300000, 600000, 900000, 1200000, 1800000, 3600000, 7200000, 10800000, 21600000, 43200000,
        86400000, 604800000,
    ];

    /// "1m" → 60000; "" → 0.
    pub fn duration_ms(s: &str) -> Result<i64> {
        let s = s.trim().trim_start_matches('>').trim();
        if s.is_empty() {
            return Ok(0);
        }
        let split = s
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| anyhow!("bad interval {s:?}"))?;
        let n: i64 = s[..split].parse()?;
        let mult = match &s[split..] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            u => bail!("bad interval unit {u:?} in {s:?}"),
        };
        Ok(n * mult)
    }

    /// Grafana's $__interval: range / max data points rounded up to a nice
    /// interval, at least the panel's min interval.
    pub fn interval_ms(
        from_ms: i64,
        to_ms: i64,
        max_points: i64,
        min_interval: &str,
    ) -> Result<i64> {
        let raw = ((to_ms - from_ms) as f64 / max_points.max(1) as f64).max(1.0);
        let nice = NICE_MS
            .iter()
            .copied()
            .find(|&n| n as f64 >= raw)
            .unwrap_or(NICE_MS[NICE_MS.len() - 1]);
        Ok(nice.max(duration_ms(min_interval)?))
    }

    fn format_interval(ms: i64) -> String {
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1000),
        ] {
            if ms >= size && ms % size == 0 {
                return format!("{}{unit}", ms / size);
            }
        }
        format!("{ms}ms")
    }

    /// Arguments of the call whose '(' is at byte `open`; returns them and the
    /// byte index after the closing ')'. Commas split at depth 1 only; quotes
    /// are respected.
    pub fn macro_args(sql: &str, open: usize) -> Result<(Vec<String>, usize)> {
        let mut depth = 0;
        let mut args = Vec::new();
        let mut cur = String::new();
        let mut quote: Option<char> = None;
        let mut chars = sql[open..].char_indices().peekable();
        while let Some((off, c)) = chars.next() {
            if let Some(q) = quote {
                cur.push(c);
                if c == '\\' {
                    if let Some((_, n)) = chars.next() {
                        cur.push(n);
                    }
                } else if c == q {
                    quote = None;
                }
                continue;
            }
            match c {
                '\'' | '"' | '`' => {
                    quote = Some(c);
                    cur.push(c);
                }
                '(' => {
                    depth += 1;
                    if depth > 1 {
                        cur.push(c);
                    }
                }
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        args.push(cur);
                        return Ok((args, open + off + 1));
                    }
                    cur.push(c);
                }
                ',' if depth == 1 => args.push(std::mem::take(&mut cur)),
                _ => cur.push(c),
            }
        }
        let end = (open + 60).min(sql.len());
        let end = (end..=sql.len())
            .find(|&i| sql.is_char_boundary(i))
            .unwrap_or(sql.len());
        bail!("unclosed macro call: {:?}", &sql[open..end])
    }

    fn conditional_all(mut sql: String, vars: &BTreeMap<String, Var>) -> Result<String> {
        const MACRO: &str = "$__conditionalAll(";
        while let Some(i) = sql.rfind(MACRO) {
            let (args, end) = macro_args(&sql, i + MACRO.len() - 1)?;
            if args.len() != 2 {
                bail!("$__conditionalAll needs 2 arguments: {}", &sql[i..end]);
            }
            let name = args[1]
                .trim()
                .trim_start_matches('$')
                .trim_start_matches('{')
                .trim_end_matches('}');
            let all = vars.get(name).map(|v| is_all(&v.value)).unwrap_or(true);
            let phrase = if all {
                "1=1".to_string()
            } else {
                args[0].clone()
            };
            sql = format!("{}{}{}", &sql[..i], phrase, &sql[end..]);
        }
        Ok(sql)
    }

    fn items(v: &Value) -> Vec<String> {
        match v {
            Value::Array(a) => a.iter().map(scalar).collect(),
            other => vec![scalar(other)],
        }
    }

    fn scalar(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    fn format_value(v: &Value, fmt: Option<&str>) -> Result<String> {
        let list = items(v);
        Ok(match fmt {
            // The plugin's default format: a list → 'a','b'; a single value as it is.
            None => match v {
                Value::Array(_) => format!("'{}'", list.join("','")),
                other => scalar(other),
            },
            Some("singlequote") => list
                .iter()
                .map(|s| format!("'{}'", s.replace('\'', "\\'")))
                .collect::<Vec<_>>()
                .join(","),
            Some("sqlstring") => list
                .iter()
                .map(|s| format!("'{}'", s.replace('\'', "''")))
                .collect::<Vec<_>>()
                .join(","),
            Some("csv") | Some("raw") | Some("text") => list.join(","),
            Some("pipe") => list.join("|"),
            Some(f) => bail!("unsupported variable format :{f}"),
        })
    }

    fn is_word(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '_'
    }

    /// `$name`, `${name}`, `${name:fmt}`, `[[name]]`, `[[name:fmt]]` → value;
    /// unknown names are left as they are.
    fn variables(
        sql: &str,
        vars: &BTreeMap<String, Var>,
        builtins: &BTreeMap<&str, String>,
    ) -> Result<String> {
        let lookup = |name: &str, fmt: Option<&str>| -> Result<Option<String>> {
            if let Some(b) = builtins.get(name) {
                return Ok(Some(b.clone()));
            }
            let Some(v) = vars.get(name) else {
                return Ok(None);
            };
            let value = match (&v.all_values, is_all(&v.value)) {
                (Some(all), true) => {
                    Value::Array(all.iter().map(|s| Value::String(s.clone())).collect())
                }
                _ => v.value.clone(),
            };
            format_value(&value, fmt).map(Some)
        };
        let mut out = String::with_capacity(sql.len());
        let mut i = 0;
        while i < sql.len() {
            let rest = &sql[i..];
            if let Some(r) = rest.strip_prefix('$') {
                let n = r.find(|c: char| !is_word(c)).unwrap_or(r.len());
                if n > 0 {
                    let name = &r[..n];
                    match lookup(name, None)? {
                        Some(v) => out.push_str(&v),
                        None => out.push_str(&rest[..1 + n]),
                    }
                    i += 1 + n;
                    continue;
                }
                if let Some(body) = r.strip_prefix('{') {
                    if let Some(close) = body.find('}') {
                        let inner = &body[..close];
                        let (name, fmt) = match inner.split_once(':') {
                            Some((n, f)) => (n, Some(f)),
                            None => (inner, None),
                        };
                        if !name.is_empty()
                            && name.chars().all(is_word)
                            && fmt.is_none_or(|f| !f.is_empty())
                        {
                            match lookup(name, fmt)? {
                                Some(v) => out.push_str(&v),
                                None => out.push_str(&rest[..2 + close + 1]),
                            }
                            i += 2 + close + 1;
                            continue;
                        }
                    }
                }
            } else if let Some(r) = rest.strip_prefix("[[") {
                if let Some(close) = r.find("]]") {
                    let inner = &r[..close];
                    let (name, fmt) = match inner.split_once(':') {
                        Some((n, f)) => (n, Some(f)),
                        None => (inner, None),
                    };
                    if !name.is_empty() && name.chars().all(is_word) {
                        match lookup(name, fmt)? {
                            Some(v) => out.push_str(&v),
                            None => out.push_str(&rest[..2 + close + 2]),
                        }
                        i += 2 + close + 2;
                        continue;
                    }
                }
            }
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
        Ok(out)
    }

    fn datetime(ms: i64) -> String {
        format!("toDateTime({})", ms.div_euclid(1000))
    }

    fn date(ms: i64) -> String {
        let days = ms.div_euclid(86_400_000);
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        format!("toDate('{y:04}-{m:02}-{d:02}')")
    }

    fn macros(sql: &str, from_ms: i64, to_ms: i64, interval_ms: i64) -> Result<String> {
        let interval_s = (interval_ms / 1000).max(1);
        let mut out = String::with_capacity(sql.len());
        let mut i = 0;
        while let Some(pos) = sql[i..].find("$__") {
            let start = i + pos;
            out.push_str(&sql[i..start]);
            let name_start = start + 3;
            let n = sql[name_start..]
                .find(|c: char| !is_word(c))
                .unwrap_or(sql.len() - name_start);
            let name = &sql[name_start..name_start + n];
            let mut end = name_start + n;
            let mut args: Option<Vec<String>> = None;
            if sql[end..].starts_with('(') {
                let (a, e) = macro_args(sql, end)?;
                args = Some(a.into_iter().map(|s| s.trim().to_string()).collect());
                end = e;
            }
            let arg = |what: &str| -> Result<String> {
                args.as_ref()
                    .and_then(|a| a.first().cloned())
                    .ok_or_else(|| anyhow!("$__{what} needs an argument"))
            };
            let rep = match name {
                "timeFilter" => {
                    let c = arg(name)?;
                    format!(
                        "{c} >= {} AND {c} <= {}",
                        datetime(from_ms),
                        datetime(to_ms)
                    )
                }
                "timeFilter_ms" => {
                    let c = arg(name)?;
                    format!(
                        "{c} >= fromUnixTimestamp64Milli({from_ms}) AND {c} <= fromUnixTimestamp64Milli({to_ms})"
                    )
                }
                "dateFilter" => {
                    let c = arg(name)?;
                    format!("{c} >= {} AND {c} <= {}", date(from_ms), date(to_ms))
                }
                "fromTime" => datetime(from_ms),
                "toTime" => datetime(to_ms),
                "fromTime_ms" => format!("fromUnixTimestamp64Milli({from_ms})"),
                "toTime_ms" => format!("fromUnixTimestamp64Milli({to_ms})"),
                "interval_s" => interval_s.to_string(),
                "timeInterval" => format!(
                    "toStartOfInterval(toDateTime({}), INTERVAL {interval_s} second)",
                    arg(name)?
                ),
                other => bail!("unknown macro $__{other}"),
            };
            out.push_str(&rep);
            i = end;
        }
        out.push_str(&sql[i..]);
        Ok(out)
    }

    /// The SQL the plugin sends to ClickHouse for `raw` with `vars`, a time range
    /// and Grafana's interval.
    pub fn expand(
        raw: &str,
        vars: &BTreeMap<String, Var>,
        from_ms: i64,
        to_ms: i64,
        interval_ms: i64,
    ) -> Result<String> {
        let sql = conditional_all(raw.to_string(), vars)?;
        let builtins: BTreeMap<&str, String> = [
            ("__from", from_ms.to_string()),
            ("__to", to_ms.to_string()),
            ("__interval", format_interval(interval_ms)),
            ("__interval_ms", interval_ms.to_string()),
            ("__range_s", ((to_ms - from_ms) / 1000).to_string()),
            ("__range_ms", (to_ms - from_ms).to_string()),
        ]
        .into_iter()
        .collect();
        let sql = variables(&sql, vars, &builtins)?;
        macros(&sql, from_ms, to_ms, interval_ms)
    }

    #[test]
    fn expands_like_the_plugin() {
        let mut vars = BTreeMap::new();
        vars.insert(
            "service".to_string(),
            Var::many(&["a".into(), "b'c".into()]),
        );
        vars.insert("api".to_string(), Var::all());
        vars.insert("psid".to_string(), Var::one("7"));
        vars.insert("uid".to_string(), Var::one("12'3"));
        let sql = "SELECT $__interval_s, toDateTime(intDiv(toUInt32(ts), $__interval_s) * $__interval_s) \
                   FROM t WHERE $__timeFilter(ts) AND $__conditionalAll(service IN (${service:singlequote}), $service) \
                   AND $__conditionalAll(api IN (${api:singlequote}), $api) AND psid IN (${psid:csv}) \
                   AND uid = toUInt64OrZero(${uid:sqlstring}) AND $service = [[psid]] AND x < $__toTime \
                   AND $__timeInterval(ts) = 1 AND $unknown = '$__from'";
        // calendar-ok: the macro expander's own unit test (text in, text out; no rows).
        let got = expand(sql, &vars, 1_700_000_000_123, 1_700_003_600_999, 5000).unwrap();
        assert_eq!(
            got,
            "SELECT 5, toDateTime(intDiv(toUInt32(ts), 5) * 5) FROM t WHERE ts >= toDateTime(1700000000) \
             AND ts <= toDateTime(1700003600) AND service IN ('a','b\\'c') AND 1=1 AND psid IN (7) \
             AND uid = toUInt64OrZero('12''3') AND 'a','b'c' = 7 AND x < toDateTime(1700003600) \
             AND toStartOfInterval(toDateTime(ts), INTERVAL 5 second) = 1 AND $unknown = '1700000000123'"
        );
        assert_eq!(date(1_700_000_000_000), "toDate('2023-11-14')");
        assert_eq!(interval_ms(0, 3_600_000, 1000, "").unwrap(), 5000);
        assert_eq!(interval_ms(0, 3_600_000, 1000, "1m").unwrap(), 60000);
    }
}

use grafana::Var;

// ------------------------------------------------------------------ model ---

struct Dashboard {
    file: String,
    json: Value,
}

impl Dashboard {
    fn uid(&self) -> &str {
        self.json["uid"].as_str().unwrap_or("")
    }
    fn vars(&self) -> Vec<&Value> {
        self.json["templating"]["list"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default()
    }
    /// Every panel, rows and the panels inside collapsed rows included.
    fn panels(&self) -> Vec<&Value> {
        fn walk<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
            for p in v.as_array().into_iter().flatten() {
                out.push(p);
                walk(&p["panels"], out);
            }
        }
        let mut out = Vec::new();
        walk(&self.json["panels"], &mut out);
        out
    }
}

fn load_dashboards() -> Vec<Dashboard> {
    let dir = root().join("grafana/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboards in {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let json =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            Dashboard {
                file: p.file_name().unwrap().to_string_lossy().into_owned(),
                json,
            }
        })
        .collect()
}

fn datasource<'a>(panel: &'a Value, target: &'a Value) -> &'a Value {
    if target["datasource"].is_object() {
        &target["datasource"]
    } else {
        &panel["datasource"]
    }
}

/// One ClickHouse query of a dashboard: a panel target or a query variable.
#[derive(Clone)]
struct ChQuery {
    dashboard: String,
    /// Panel title, or `variable <name>`.
    panel: String,
    panel_type: String,
    ref_id: String,
    /// 0 = time series, 1 = table (the plugin's `format`).
    format: u64,
    raw_sql: String,
    max_points: i64,
    min_interval: String,
}

impl ChQuery {
    fn label(&self) -> String {
        format!("{} / {} [{}]", self.dashboard, self.panel, self.ref_id)
    }
}

fn ch_queries(d: &Dashboard) -> Vec<ChQuery> {
    let mut out = Vec::new();
    for v in d.vars() {
        if v["datasource"]["type"] == CH_TYPE {
            out.push(ChQuery {
                dashboard: d.uid().into(),
                panel: format!("variable {}", v["name"].as_str().unwrap()),
                panel_type: "variable".into(),
                ref_id: "var".into(),
                format: 1,
                raw_sql: v["query"]["rawSql"].as_str().unwrap_or("").into(),
                max_points: 1000,
                min_interval: String::new(),
            });
        }
    }
    for p in d.panels() {
        for t in p["targets"].as_array().into_iter().flatten() {
            if datasource(p, t)["type"] != CH_TYPE {
                continue;
            }
            out.push(ChQuery {
                dashboard: d.uid().into(),
                panel: p["title"].as_str().unwrap_or("").into(),
                panel_type: p["type"].as_str().unwrap_or("").into(),
                ref_id: t["refId"].as_str().unwrap_or("").into(),
                format: t["format"].as_u64().unwrap_or(99),
                raw_sql: t["rawSql"].as_str().unwrap_or("").into(),
                max_points: p["maxDataPoints"].as_i64().unwrap_or(1000),
                min_interval: p["interval"].as_str().unwrap_or("").into(),
            });
        }
    }
    out
}

/// `$name`, `${name…}` and `[[name…]]` references that are not built-ins (`$__…`).
fn referenced_vars(sql: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = sql.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < b.len() {
        let name_at = if b[i] == b'$' && i + 1 < b.len() && b[i + 1] == b'{' {
            Some(i + 2)
        } else if b[i] == b'$' {
            Some(i + 1)
        } else if b[i] == b'[' && i + 1 < b.len() && b[i + 1] == b'[' {
            Some(i + 2)
        } else {
            None
        };
        if let Some(s) = name_at {
            let mut e = s;
            while e < b.len() && word(b[e]) {
                e += 1;
            }
            let name = &sql[s..e];
            if !name.is_empty() && !name.starts_with("__") {
                out.insert(name.to_string());
            }
            i = e.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// Every expression parses: they go into a rules file that `promtool check rules` reads.
fn promtool_check_exprs(exprs: &[(String, String)]) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut rules = String::from("groups:\n  - name: dashboard_expressions\n    rules:\n");
    for (i, (_, e)) in exprs.iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "1m")
            .replace("$__interval", "1m")
            .replace("$__range", "1h")
            .replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: adlog:dashboard_check_{i}\n        expr: {}\n",
            serde_json::to_string(&e)?
        ));
    }
    let path = dir.path().join("exprs.yml");
    std::fs::write(&path, &rules)?;
    let out = Command::new(promtool())
        .arg("check")
        .arg("rules")
        .arg(&path)
        .output()?;
    ensure!(
        out.status.success(),
        "promtool check rules on the dashboards' expressions failed:\n{}{}\n(expressions: {:#?})",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        exprs
    );
    Ok(())
}

// ------------------------------------------------------- static checks ---

#[test]
fn dashboards_are_well_formed() {
    let dashboards = load_dashboards();
    let mut errors: Vec<String> = Vec::new();
    let mut uids = BTreeSet::new();
    let mut prom_exprs: Vec<(String, String)> = Vec::new();
    let mut err = |e: String| errors.push(e);

    for d in &dashboards {
        let j = &d.json;
        let f = &d.file;
        if !uids.insert(d.uid().to_string()) || d.uid().is_empty() {
            err(format!("{f}: missing or duplicate uid {:?}", d.uid()));
        }
        for key in ["title", "description"] {
            if j[key].as_str().is_none_or(str::is_empty) {
                err(format!("{f}: no {key}"));
            }
        }
        if j["schemaVersion"].as_u64().is_none_or(|v| v < 36) {
            err(format!(
                "{f}: schemaVersion {} (want >= 36)",
                j["schemaVersion"]
            ));
        }
        if !j["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "adlog"))
        {
            err(format!(
                "{f}: no `adlog` tag (the dashboards link each other by it)"
            ));
        }
        if j["time"]["from"].as_str().is_none() {
            err(format!("{f}: no default time range"));
        }
        let defined: BTreeSet<String> = d
            .vars()
            .iter()
            .filter_map(|v| v["name"].as_str().map(String::from))
            .collect();
        for v in d.vars() {
            let name = v["name"].as_str().unwrap_or("?");
            let ds = &v["datasource"];
            if v["type"] == "query" {
                if ds["uid"] != CH_UID && ds["uid"] != PROM_UID {
                    err(format!("{f}: variable {name}: datasource {ds}"));
                }
                if ds["type"] == CH_TYPE {
                    let q = &v["query"];
                    if q["editorType"] != "sql" || q["rawSql"].as_str().is_none_or(str::is_empty) {
                        err(format!(
                            "{f}: variable {name}: query must be {{editorType: sql, rawSql}}: {q}"
                        ));
                    }
                    if v["definition"] != q["rawSql"] {
                        err(format!(
                            "{f}: variable {name}: definition differs from rawSql"
                        ));
                    }
                }
            }
        }
        let mut ids = BTreeSet::new();
        for p in d.panels() {
            let title = p["title"].as_str().unwrap_or("");
            let ty = p["type"].as_str().unwrap_or("");
            let what = format!("{f} / {title:?}");
            if !p["id"].as_u64().is_some_and(|id| ids.insert(id)) {
                err(format!("{what}: missing or duplicate panel id"));
            }
            let g = &p["gridPos"];
            let (x, w, h) = (g["x"].as_u64(), g["w"].as_u64(), g["h"].as_u64());
            if !matches!((x, w, h), (Some(x), Some(w), Some(h)) if x + w <= 24 && w > 0 && h > 0) {
                err(format!("{what}: bad gridPos {g}"));
            }
            if ty == "row" {
                continue;
            }
            if title.is_empty() {
                err(format!("{f}: a {ty} panel without a title"));
            }
            if p["description"].as_str().is_none_or(|s| s.len() < 20) {
                err(format!(
                    "{what}: no description a person can read at a glance"
                ));
            }
            if ["timeseries", "stat", "bargauge"].contains(&ty)
                && p["fieldConfig"]["defaults"]["unit"]
                    .as_str()
                    .is_none_or(str::is_empty)
            {
                err(format!("{what}: no unit"));
            }
            let targets = p["targets"].as_array().cloned().unwrap_or_default();
            if targets.is_empty() {
                err(format!("{what}: no queries"));
            }
            let mut refs = BTreeSet::new();
            for t in &targets {
                let ds = datasource(p, t);
                let r = t["refId"].as_str().unwrap_or("");
                if r.is_empty() || !refs.insert(r.to_string()) {
                    err(format!("{what}: missing or duplicate refId {r:?}"));
                }
                match (ds["type"].as_str(), ds["uid"].as_str()) {
                    (Some(CH_TYPE), Some(CH_UID)) => {
                        let sql = t["rawSql"].as_str().unwrap_or("");
                        let (qt, fmt) = (t["queryType"].as_str(), t["format"].as_u64());
                        if t["editorType"] != "sql" || sql.is_empty() {
                            err(format!("{what} [{r}]: want editorType \"sql\" and a rawSql"));
                        }
                        // The plugin's queryType and its backend's format (sqlds):
                        // 0 time series, 1 table, 2 logs, 3 trace.
                        let want = match ty {
                            "timeseries" => (Some("timeseries"), Some(0)),
                            "traces" => (Some("traces"), Some(3)),
                            "logs" => (Some("logs"), Some(2)),
                            _ => (Some("table"), Some(1)),
                        };
                        if (qt, fmt) != want {
                            err(format!("{what} [{r}]: queryType/format {qt:?}/{fmt:?}, want {want:?} for a {ty} panel"));
                        }
                        if !["$__timeFilter(", "$__fromTime", "$__toTime"].iter().any(|m| sql.contains(m)) {
                            err(format!("{what} [{r}]: no time range ($__timeFilter / $__fromTime / $__toTime)"));
                        }
                        for bad in ["$__timeInterval", "toStartOfInterval", "fromUnixTimestamp64Milli", "_ms(", "$__fromTime_ms", "$__toTime_ms"] {
                            if sql.contains(bad) {
                                err(format!("{what} [{r}]: uses {bad}, which ClickHouse 18.16 lacks"));
                            }
                        }
                        if sql.trim_end().ends_with(';') {
                            err(format!("{what} [{r}]: trailing ';'"));
                        }
                        if ty == "nodeGraph" && !["nodes", "edges"].contains(&r) {
                            err(format!("{what}: node graph refIds must be `nodes` and `edges` (got {r})"));
                        }
                        for v in referenced_vars(sql) {
                            if !defined.contains(&v) {
                                err(format!("{what} [{r}]: uses undefined variable ${v}"));
                            }
                        }
                    }
                    (Some(PROM_TYPE), Some(PROM_UID)) => match t["expr"].as_str() {
                        Some(e) if !e.is_empty() => {
                            for v in referenced_vars(e) {
                                if !defined.contains(&v) {
                                    err(format!("{what} [{r}]: uses undefined variable ${v}"));
                                }
                            }
                            prom_exprs.push((format!("{what} [{r}]"), e.to_string()));
                        }
                        _ => err(format!("{what} [{r}]: no expr")),
                    },
                    other => err(format!("{what} [{r}]: datasource {other:?} (want {CH_TYPE}/{CH_UID} or {PROM_TYPE}/{PROM_UID})")),
                }
            }
            if ty == "nodeGraph"
                && refs != BTreeSet::from(["edges".to_string(), "nodes".to_string()])
            {
                err(format!(
                    "{what}: node graph needs exactly the queries `nodes` and `edges`"
                ));
            }
        }
    }
    // Provisioning: both datasources with the uids the panels use, and the dashboards folder.
    let ds_yaml =
        std::fs::read_to_string(root().join("grafana/provisioning/datasources/adlog.yaml"))
            .unwrap();
    for needle in [
        format!("uid: {CH_UID}"),
        format!("type: {CH_TYPE}"),
        format!("uid: {PROM_UID}"),
        format!("type: {PROM_TYPE}"),
        "defaultDatabase: adlog".into(),
        "protocol: http".into(),
        "username: grafana".into(),
        // The plugin's own trace and log views read sql/0010's tables.
        "defaultTable: otel_traces".into(),
        "defaultTable: otel_logs".into(),
        "traceTimestampTableSuffix: _trace_id_ts".into(),
        "durationUnit: nanoseconds".into(),
    ] {
        if !ds_yaml.contains(&needle) {
            errors.push(format!(
                "grafana/provisioning/datasources/adlog.yaml: no `{needle}`"
            ));
        }
    }
    let dash_yaml =
        std::fs::read_to_string(root().join("grafana/provisioning/dashboards/adlog.yaml")).unwrap();
    if !dash_yaml.contains("type: file") {
        errors.push("grafana/provisioning/dashboards/adlog.yaml: no file provider".into());
    }
    errors.extend(check_metric_names(&prom_exprs));
    assert!(
        errors.is_empty(),
        "dashboard problems:\n  {}",
        errors.join("\n  ")
    );
    promtool_check_exprs(&prom_exprs).unwrap();
    println!(
        "{} dashboards, {} Prometheus expressions parse and name registered metrics",
        dashboards.len(),
        prom_exprs.len()
    );
}

#[test]
fn metric_name_scan_finds_names_and_strips_histogram_suffixes() {
    let m = metric_names(
        "histogram_quantile(0.99, sum by (le) (rate(adlog_ingest_freshness_seconds_bucket[5m]))) / adlog:rule \
         + adlog_joiner_misses_total + sum({__name__=~\"adlog_(ingest|joiner)_consumer_lag\"})",
    );
    let want = [
        "adlog_ingest_freshness_seconds",
        "adlog_joiner_misses_total",
        "adlog_ingest_consumer_lag",
        "adlog_joiner_consumer_lag",
    ];
    assert_eq!(
        m,
        want.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>()
    );
    assert!(known_metrics().contains("adlog_ingest_consumed_total"));
    assert!(known_metrics().contains("adlog_joiner_redis_roundtrip_seconds"));
    assert_eq!(
        referenced_vars("a $x ${y:csv} [[z]] $__interval_s"),
        BTreeSet::from(["x".into(), "y".into(), "z".into()])
    );
}

// ------------------------------------------------------ query results ---

#[derive(Debug, Clone, Default)]
struct QueryResult {
    error: Option<String>,
    meta: Vec<(String, String)>,
    data: Vec<Vec<Value>>,
    rows: u64,
    ms: f64,
}

fn parse_json_compact(v: &Value) -> QueryResult {
    QueryResult {
        error: None,
        meta: v["meta"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                (
                    m["name"].as_str().unwrap_or("").to_string(),
                    m["type"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect(),
        data: v["data"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r.as_array().cloned().unwrap_or_default())
            .collect(),
        rows: v["rows"].as_u64().unwrap_or(0),
        ms: v["ms"].as_f64().unwrap_or(0.0),
    }
}

async fn run_server(client: &::clickhouse::Client, sql: &str) -> QueryResult {
    let t0 = Instant::now();
    let res = async {
        let mut cursor = client.query_raw(sql).fetch_bytes("JSONCompact")?;
        let bytes = cursor.collect().await?;
        anyhow::Ok(serde_json::from_slice::<Value>(&bytes)?)
    }
    .await;
    match res {
        Ok(v) => {
            let mut r = parse_json_compact(&v);
            r.ms = t0.elapsed().as_secs_f64() * 1000.0;
            r
        }
        Err(e) => QueryResult {
            error: Some(format!("{e:#}")),
            ..Default::default()
        },
    }
}

fn is_numeric(t: &str) -> bool {
    let t = t
        .strip_prefix("Nullable(")
        .and_then(|t| t.strip_suffix(')'))
        .unwrap_or(t);
    t.starts_with("UInt")
        || t.starts_with("Int")
        || t.starts_with("Float")
        || t.starts_with("Decimal")
}

fn is_string(t: &str) -> bool {
    let t = t
        .strip_prefix("LowCardinality(")
        .and_then(|t| t.strip_suffix(')'))
        .unwrap_or(t);
    t == "String"
}

/// What the panel type needs from one result (`None` = fine).
fn check_shape(q: &ChQuery, r: &QueryResult) -> Vec<String> {
    let mut e = Vec::new();
    if r.rows == 0 {
        e.push("returned no rows".to_string());
    }
    let names: Vec<&str> = r.meta.iter().map(|(n, _)| n.as_str()).collect();
    for n in &names {
        if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            e.push(format!("column {n:?} has no plain name (alias it)"));
        }
    }
    match (q.panel_type.as_str(), q.format) {
        (_, 0) => {
            let time_cols: Vec<usize> = r
                .meta
                .iter()
                .enumerate()
                .filter(|(_, (_, t))| t.starts_with("DateTime"))
                .map(|(i, _)| i)
                .collect();
            if time_cols.len() != 1 {
                e.push(format!(
                    "time series wants one DateTime column, got {:?}",
                    r.meta
                ));
            }
            if !r.meta.iter().any(|(_, t)| is_numeric(t)) {
                e.push(format!(
                    "time series without a numeric column: {:?}",
                    r.meta
                ));
            }
            for (n, t) in &r.meta {
                if !t.starts_with("DateTime") && !is_numeric(t) && !is_string(t) {
                    e.push(format!(
                        "column {n} of type {t} is neither a value nor a label"
                    ));
                }
            }
            if let Some(&tc) = time_cols.first() {
                let times: Vec<String> = r.data.iter().map(|row| row[tc].to_string()).collect();
                if times.windows(2).any(|w| w[0] > w[1]) {
                    e.push("time column is not ascending (the plugin's long-to-wide conversion needs ORDER BY time)".into());
                }
            }
        }
        ("stat" | "bargauge", _) => {
            if r.rows != 1 {
                e.push(format!(
                    "a {} panel wants one row, got {}",
                    q.panel_type, r.rows
                ));
            }
            if !r.meta.iter().all(|(_, t)| is_numeric(t)) {
                e.push(format!(
                    "a {} panel wants numeric columns: {:?}",
                    q.panel_type, r.meta
                ));
            }
        }
        ("nodeGraph", _) => {
            let want: &[&str] = if q.ref_id == "nodes" {
                &["id", "title", "mainstat", "secondarystat"]
            } else {
                &["id", "source", "target", "mainstat", "secondarystat"]
            };
            for w in want {
                if !names.contains(w) {
                    e.push(format!(
                        "node graph frame `{}` lacks field {w}: {names:?}",
                        q.ref_id
                    ));
                }
            }
            for (n, t) in &r.meta {
                if (n == "mainstat" || n == "secondarystat" || n.starts_with("arc__"))
                    && !is_numeric(t)
                {
                    e.push(format!("node graph field {n} must be numeric, is {t}"));
                }
            }
        }
        ("traces", _) => e.extend(traces::exact_columns(r, traces::WATERFALL_18_16)),
        ("logs", _) => e.extend(traces::exact_columns(r, traces::LOGS_18_16)),
        ("variable", _) => {
            if r.meta.is_empty() {
                e.push("a variable query wants at least one column".into());
            }
        }
        _ => {
            if r.meta.is_empty() {
                e.push("a table wants columns".into());
            }
        }
    }
    e
}

fn column(r: &QueryResult, name: &str) -> Vec<String> {
    let Some(i) = r.meta.iter().position(|(n, _)| n == name) else {
        return Vec::new();
    };
    r.data
        .iter()
        .map(|row| match &row[i] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

/// The node graph's ends: every edge source/target is a node id; ids are unique.
fn check_graph(nodes: &QueryResult, edges: &QueryResult) -> Vec<String> {
    let mut e = Vec::new();
    let ids: Vec<String> = column(nodes, "id");
    let set: BTreeSet<&String> = ids.iter().collect();
    if set.len() != ids.len() {
        e.push(format!("duplicate node ids: {ids:?}"));
    }
    let edge_ids = column(edges, "id");
    if edge_ids.iter().collect::<BTreeSet<_>>().len() != edge_ids.len() {
        e.push(format!("duplicate edge ids: {edge_ids:?}"));
    }
    for end in ["source", "target"] {
        for v in column(edges, end) {
            if !set.contains(&v) {
                e.push(format!(
                    "edge {end} {v:?} is not a node id (nodes: {ids:?})"
                ));
            }
        }
    }
    e
}

/// A trace shown as a call tree (columns span_id, parent_span_id, depth) must be
/// in depth-first order: a line after its parent, one level deeper, with only
/// the parent's descendants in between; a line whose parent is missing at depth 0.
fn check_tree(r: &QueryResult) -> Vec<String> {
    let (spans, parents, depths) = (
        column(r, "span_id"),
        column(r, "parent_span_id"),
        column(r, "depth"),
    );
    if spans.is_empty() || parents.is_empty() || depths.is_empty() {
        return Vec::new();
    }
    let depths: Vec<u64> = depths
        .iter()
        .map(|d| d.trim_matches('"').parse().unwrap_or(u64::MAX))
        .collect();
    let mut e = Vec::new();
    for (k, p) in parents.iter().enumerate() {
        match spans.iter().position(|s| s == p).filter(|_| !p.is_empty()) {
            Some(j) => {
                if j >= k {
                    e.push(format!(
                        "line {k} ({}) comes before its parent (line {j})",
                        spans[k]
                    ));
                } else {
                    if depths[k] != depths[j] + 1 {
                        e.push(format!(
                            "line {k}: depth {} under a parent of depth {}",
                            depths[k], depths[j]
                        ));
                    }
                    if depths[j + 1..k].iter().any(|&d| d <= depths[j]) {
                        e.push(format!(
                            "line {k} is separated from its parent (line {j}) by another subtree"
                        ));
                    }
                }
            }
            None if depths[k] != 0 => e.push(format!(
                "line {k} has no parent in the trace but depth {}",
                depths[k]
            )),
            None => {}
        }
    }
    if depths.iter().max().copied().unwrap_or(0) == 0 {
        e.push("the trace has no nested calls".into());
    }
    e
}

/// The waterfall and logs panels on both engines, and the plugin's own queries
/// on chDB: exact frames, a waterfall where every span has its parent, and the
/// plugin's trace and log lines equal to the panels' (same spans, parents,
/// start, duration and status; same lines in the same order).
fn check_trace_views(
    runs: &[Run],
    chdb: &[QueryResult],
    plugin: &[(&str, &[(&str, &str)])],
    plugin_results: &[QueryResult],
    trace: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    let find = |ty: &str| {
        runs.iter()
            .position(|r| r.query.panel_type == ty && r.scenario == "all")
    };
    let (Some(wf), Some(lg)) = (find("traces"), find("logs")) else {
        return vec!["the trace dashboard has no traces and logs panels".into()];
    };
    for (engine, r) in [("18.16", &runs[wf].server), ("chDB", &chdb[wf])] {
        for e in traces::check_waterfall(r, trace) {
            out.push(format!("waterfall on {engine}: {e}"));
        }
    }
    for ((name, want), r) in plugin.iter().zip(plugin_results) {
        if let Some(err) = &r.error {
            out.push(format!("{name} on chDB: {err}"));
            continue;
        }
        if r.rows == 0 {
            out.push(format!("{name} on chDB returned no rows"));
        }
        for e in traces::exact_columns(r, want) {
            out.push(format!("{name} on chDB: {e}"));
        }
    }
    let (search, view_trace, view_logs) =
        (&plugin_results[0], &plugin_results[1], &plugin_results[2]);
    if !column(search, "traceID").iter().any(|t| t == trace) {
        out.push(format!("plugin trace search does not list trace {trace}"));
    }
    for e in traces::check_waterfall(view_trace, trace) {
        out.push(format!("plugin View trace on chDB: {e}"));
    }
    let (ours, theirs) = (traces::spans(&runs[wf].server), traces::spans(view_trace));
    if ours != theirs {
        out.push(format!(
            "plugin View trace (chDB) differs from the waterfall panel (18.16):\n  panel  {ours:?}\n  plugin {theirs:?}"
        ));
    }
    // Lines of one millisecond may come in either order from the plugin's
    // ORDER BY timestamp: compared as sorted lists.
    let lines = |r: &QueryResult| {
        let mut v: Vec<(String, String)> = column(r, "body")
            .into_iter()
            .zip(column(r, "level"))
            .collect();
        v.sort();
        v
    };
    if lines(&runs[lg].server) != lines(view_logs) || lines(view_logs).is_empty() {
        out.push(format!(
            "plugin View logs (chDB) differs from the logs panel (18.16):\n  panel  {:?}\n  plugin {:?}",
            lines(&runs[lg].server),
            lines(view_logs)
        ));
    }
    if std::env::var_os("ADLOG_SHOW_FRAMES").is_some() {
        for (name, r) in [
            ("waterfall panel, 18.16", &runs[wf].server),
            ("waterfall panel, chDB", &chdb[wf]),
            ("logs panel, 18.16", &runs[lg].server),
            ("plugin trace search, chDB", search),
            ("plugin View trace, chDB", view_trace),
            ("plugin View logs, chDB", view_logs),
        ] {
            println!("\n== {name}: {} rows\n{:?}", r.rows, r.meta);
            for row in r.data.iter().take(3) {
                println!("{}", Value::Array(row.clone()));
            }
        }
    }
    out
}

// ------------------------------------------------------------- pipeline ---

/// The joiner as a child process with a key prefix and metrics port of its own.
struct Joiner(Child);

impl Joiner {
    fn start(cfg: &common::Config) -> Joiner {
        let logs = root().join("target/test-logs");
        std::fs::create_dir_all(&logs).unwrap();
        let log =
            std::fs::File::create(logs.join(format!("{}-joiner.log", cfg.clickhouse.database)))
                .unwrap();
        let child = Command::new(bin("joiner"))
            .arg("run")
            .envs(env_of(cfg))
            .env(
                "ADLOG_JOINER__KEY_PREFIX",
                format!("{}:", cfg.clickhouse.database),
            )
            .env("ADLOG_JOINER__METRICS_LISTEN", "127.0.0.1:0")
            .env("ADLOG_JOINER__SWEEP_INTERVAL_MS", "1000")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting the joiner");
        Joiner(child)
    }
}

impl Drop for Joiner {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn scalar_u64(ch: &::clickhouse::Client, sql: &str) -> u64 {
    ch.query(sql)
        .fetch_one::<u64>()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Loads generator traffic through the real pipeline: loadgen → Kafka → joiner
/// (→ joined topic) and ingest (→ ClickHouse). Falls back to joining in SQL if
/// the joiner produced nothing (the dashboards need ods_joined rows).
async fn load_traffic(cfg: &common::Config, ch: &::clickhouse::Client) {
    let db = &cfg.clickhouse.database;
    // 30,000 events at 25 events/s of event time: ~20 minutes of traffic, so
    // that time series have many points and the minute rollups many minutes.
    let mut cfg = cfg.clone();
    cfg.loadgen.event_rate = 25.0;
    let cfg = &cfg;
    let m = generate(cfg, 30_000, 0).await.expect("loadgen traffic");
    let want_rows = m.totals.messages;
    let want_pairs = m.expected_pairs.len() as u64;
    println!("loadgen: {want_rows} messages, {want_pairs} expected joined pairs");
    let _joiner = Joiner::start(cfg);
    let mut ingest = Proc::start("ingest", &["run"], cfg).expect("starting ingest");
    let t0 = Instant::now();
    let (mut rows, mut pairs) = (0, 0);
    while t0.elapsed() < Duration::from_secs(180) {
        rows = scalar_u64(
            ch,
            &format!(
                "SELECT (SELECT count() FROM {db}.ods_request) + (SELECT count() FROM {db}.ods_exposure) \
                 + (SELECT count() FROM {db}.ods_interaction) + (SELECT count() FROM {db}.dead_letter)"
            ),
        )
        .await;
        pairs = scalar_u64(
            ch,
            &format!("SELECT uniqExact(joined_id) FROM {db}.ods_joined"),
        )
        .await;
        if rows >= want_rows && pairs >= want_pairs {
            break;
        }
        if let Ok(Some(st)) = ingest.child.try_wait() {
            panic!("ingest exited early ({st}); log: {}", ingest.name);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "pipeline: {rows}/{want_rows} rows, {pairs}/{want_pairs} joined pairs after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        rows >= want_rows,
        "ingest stored {rows} of {want_rows} rows within 180 s (log: {})",
        ingest.name
    );
    ingest.term();
    let _ = ingest.wait(Duration::from_secs(30));
    if pairs == 0 {
        eprintln!("WARNING: the joiner produced no joined events; joining exposures and interactions in SQL instead");
        ch.query(&format!(
            "INSERT INTO {db}.ods_joined SELECT cityHash64(e.mark_id, i_action, i_ts_ms), e.mark_id, e.ts, e.ts_ms, \
             e.trace_id, e.uid, e.psid, e.ad_id, e.creative_id, e.position, e.platform, e.bid_price, i_ts, i_ts_ms, \
             i_trace, i_action, toInt64(i_ts_ms) - toInt64(e.ts_ms), 'joined', 0, 0, 0, '', '', 0, now() \
             FROM {db}.ods_exposure AS e ALL INNER JOIN (SELECT mark_id, ts AS i_ts, ts_ms AS i_ts_ms, \
             trace_id AS i_trace, action AS i_action FROM {db}.ods_interaction) USING mark_id \
             WHERE i_ts_ms >= e.ts_ms AND i_ts_ms <= e.ts_ms + 3600000"
        ))
        .execute()
        .await
        .expect("joining in SQL");
    }
}

// ------------------------------------------------------------------ chDB ---

/// Exports the raw tables (TabSeparated) and runs `queries` on chDB after
/// loading them under the migrations rendered for 26.9.
async fn run_chdb(
    ch: &::clickhouse::Client,
    db: &str,
    queries: &[(String, String)],
) -> Result<(String, Vec<QueryResult>)> {
    let dir = tempfile::tempdir()?;
    let mut tables = Vec::new();
    for t in [
        "ods_request",
        "ods_exposure",
        "ods_interaction",
        "ods_joined",
        "dead_letter",
    ] {
        let cols: Vec<(String, String)> = ch
            .query("SELECT name, type FROM system.columns WHERE database = ? AND table = ?")
            .bind(db)
            .bind(t)
            .fetch_all()
            .await?;
        let structure = cols
            .iter()
            .map(|(n, ty)| format!("{n} {ty}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut cursor = ch
            .query(&format!("SELECT * FROM {db}.{t}"))
            .fetch_bytes("TabSeparated")?;
        let bytes = cursor.collect().await?;
        let path = dir.path().join(format!("{t}.tsv"));
        std::fs::write(&path, &bytes)?;
        tables.push(json!({"name": t, "path": path.to_string_lossy(), "structure": structure}));
    }
    let tz: String = ch.query("SELECT timezone()").fetch_one().await?;
    let target = ingest::migrate::Target::new(db, "", "26.9".parse().unwrap(), &[])?;
    let script = ingest::migrate::render_script(&ingest::migrate::embedded()?, &target)?;
    let req = json!({
        "script": script,
        "db": db,
        "timezone": tz,
        "tables": tables,
        "queries": queries.iter().map(|(id, sql)| json!({"id": id, "sql": sql})).collect::<Vec<_>>(),
    });
    let py = root().join("tests/grafana/chdb_panels.py");
    let mut child = Command::new("python3")
        .arg(&py)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("python3 must be installed (with `pip install chdb-core`)")?;
    let mut stdin = child.stdin.take().unwrap();
    let body = serde_json::to_vec(&req)?;
    let writer = std::thread::spawn(move || stdin.write_all(&body));
    let out = child.wait_with_output()?;
    writer.join().unwrap()?;
    ensure!(
        out.status.success(),
        "{} failed: {}",
        py.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).context("chdb_panels.py output")?;
    let results = v["results"]
        .as_array()
        .ok_or_else(|| anyhow!("no results"))?
        .iter()
        .map(|r| {
            let mut q = parse_json_compact(r);
            q.error = r["error"].as_str().map(String::from);
            q
        })
        .collect();
    println!(
        "chDB {}: tables loaded in {} s",
        v["version"].as_str().unwrap_or("?"),
        v["load_s"]
    );
    Ok((v["version"].as_str().unwrap_or("?").to_string(), results))
}

/// The Python expander (bench/queries.d/grafana_expand.py) on the same inputs.
fn python_expand(items: &[Value]) -> Result<Vec<String>> {
    let py = root().join("bench/queries.d/grafana_expand.py");
    let mut child = Command::new("python3")
        .arg(&py)
        .arg("--batch")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(items)?)?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "{} failed: {}",
        py.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

// ------------------------------------------------------------ the test ---

struct Run {
    query: ChQuery,
    scenario: &'static str,
    sql: String,
    server: QueryResult,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_clickhouse_panel_runs_on_18_16_and_chdb() {
    let cfg = test_config("dash");
    let db = cfg.clickhouse.database.clone();
    let ch = clickhouse(&cfg);
    if let Err(e) = ch.query("SELECT 1").fetch_one::<u8>().await {
        panic!(
            "ClickHouse is not reachable at {} ({e}): run `dev/stack up`",
            cfg.clickhouse.url
        );
    }
    migrate(&cfg).expect("migrations");
    let result = scenario(&cfg, &ch).await;
    if result.is_ok() || std::env::var_os("ADLOG_TEST_KEEP").is_none() {
        drop_database(&cfg).await;
    } else {
        eprintln!("keeping database {db} (ADLOG_TEST_KEEP)");
    }
    result.unwrap();
}

async fn scenario(cfg: &common::Config, ch: &::clickhouse::Client) -> Result<()> {
    let db = cfg.clickhouse.database.clone();
    // sql/0010 (otel_*) is gated on 23.3: ClickHouse 18.16 gets none of it.
    let otel: Vec<String> = ch
        .query(&format!(
            "SELECT name FROM system.tables WHERE database = '{db}' AND name LIKE 'otel%'"
        ))
        .fetch_all()
        .await?;
    ensure!(
        otel.is_empty(),
        "ClickHouse 18.16 got OpenTelemetry tables: {otel:?}"
    );
    load_traffic(cfg, ch).await;
    let chq = ch.clone().with_database(&db);

    // The time range: from just before the first event to now.
    let first: u32 = ch
        .query(&format!("SELECT toUInt32(min(ts)) FROM {db}.ods_request"))
        .fetch_one()
        .await?;
    let from_ms = (i64::from(first) - 120) * 1000;
    let to_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;

    // A user with a trace that showed ads that were interacted with.
    let (uid, trace): (u64, String) = ch
        .query(&format!(
            "SELECT uid, exposure_trace_id FROM {db}.ods_joined \
             WHERE exposure_trace_id IN (SELECT trace_id FROM {db}.trace_by_uid) \
             ORDER BY joined_id LIMIT 1"
        ))
        .fetch_one()
        .await
        .context("a joined exposure whose trace is in trace_by_uid")?;
    let busiest_psid: u32 = ch
        .query(&format!(
            "SELECT psid FROM {db}.ods_exposure GROUP BY psid ORDER BY count() DESC, psid LIMIT 1"
        ))
        .fetch_one()
        .await?;
    println!("range {from_ms}..{to_ms} ms, uid {uid}, trace {trace}, busiest psid {busiest_psid}");

    let dashboards = load_dashboards();
    let mut runs: Vec<Run> = Vec::new();
    let mut expand_checks: Vec<(Value, String)> = Vec::new();

    for d in &dashboards {
        let queries = ch_queries(d);
        // Scenario 1: every multi-value variable at All; the trace lookup at our user.
        // Scenario 2: concrete selections (values the variable queries return).
        for scenario in ["all", "selected"] {
            let mut vars: BTreeMap<String, Var> = BTreeMap::new();
            for v in d.vars() {
                let name = v["name"].as_str().unwrap().to_string();
                let var = match name.as_str() {
                    "uid" => Var::one(&uid.to_string()),
                    _ if v["includeAll"] == true => Var::all(),
                    _ => Var::one(""),
                };
                vars.insert(name, var);
            }
            let mut changed: BTreeSet<String> = BTreeSet::new();
            for q in &queries {
                let mut var_name = q.panel.strip_prefix("variable ").map(String::from);
                let ms = grafana::interval_ms(from_ms, to_ms, q.max_points, &q.min_interval)?;
                let sql = grafana::expand(&q.raw_sql, &vars, from_ms, to_ms, ms)
                    .with_context(|| format!("expanding {}", q.label()))?;
                let vars_json: BTreeMap<&String, Value> =
                    vars.iter().map(|(k, v)| (k, v.to_json())).collect();
                expand_checks.push((
                    json!({"sql": q.raw_sql, "variables": vars_json, "from_ms": from_ms, "to_ms": to_ms, "interval_ms": ms}),
                    sql.clone(),
                ));
                // In the second scenario only queries that use a changed variable run again.
                let rerun = scenario == "all"
                    || referenced_vars(&q.raw_sql)
                        .iter()
                        .any(|v| changed.contains(v));
                let server = if rerun || var_name.is_some() {
                    run_server(&chq, &sql).await
                } else {
                    QueryResult::default()
                };
                // A query variable's result sets the variable for the queries after it.
                if let Some(name) = var_name.take() {
                    let values: Vec<String> = column(
                        &server,
                        &server.meta.first().map(|m| m.0.clone()).unwrap_or_default(),
                    );
                    let var = match (scenario, name.as_str()) {
                        (_, "trace_id") => {
                            ensure!(
                                values.contains(&trace),
                                "the trace_id variable lacks trace {trace}: {values:?}"
                            );
                            Some(Var::one(&trace))
                        }
                        ("selected", "psid") => {
                            ensure!(
                                values.contains(&busiest_psid.to_string()),
                                "the psid variable of {} lacks {busiest_psid}",
                                q.dashboard
                            );
                            Some(Var::many(&[busiest_psid.to_string()]))
                        }
                        ("selected", "service") => Some(Var::many(&values[..values.len().min(2)])),
                        ("selected", "api") => Some(Var::many(&values[..values.len().min(1)])),
                        _ => None,
                    };
                    if let Some(var) = var {
                        vars.insert(name.clone(), var);
                        changed.insert(name);
                    }
                }
                if rerun {
                    runs.push(Run {
                        query: q.clone(),
                        scenario,
                        sql,
                        server,
                    });
                }
            }
        }
    }

    // Both expanders agree on every query.
    let py = python_expand(
        &expand_checks
            .iter()
            .map(|(i, _)| i.clone())
            .collect::<Vec<_>>(),
    )?;
    for ((input, rust), python) in expand_checks.iter().zip(&py) {
        ensure!(
            rust == python,
            "the Rust and Python expanders differ on {}:\n rust:   {rust}\n python: {python}",
            input["sql"]
        );
    }

    // The plugin's own trace search, "View trace" and "View logs" for the same
    // trace, on chDB only (sql/0010's tables need ClickHouse >= 23.3).
    // The search's range: the second the trace started in (its root span is
    // then among the newest 1000 of the range).
    let trace_start_s = runs
        .iter()
        .find(|r| r.query.panel_type == "traces")
        .and_then(|r| {
            column(&r.server, "startTime")
                .iter()
                .filter_map(|t| t.trim_matches('"').parse::<i64>().ok())
                .min()
        })
        .map_or(from_ms / 1000, |ms| ms / 1000);
    let plugin = [
        (
            "plugin trace search",
            traces::plugin_search_query(&db, trace_start_s, trace_start_s + 1),
            traces::PLUGIN_SEARCH,
        ),
        (
            "plugin View trace",
            traces::plugin_trace_id_query(&db, &trace),
            traces::PLUGIN_TRACE_ID,
        ),
        (
            "plugin View logs",
            traces::plugin_logs_query(&db, &trace),
            traces::PLUGIN_LOGS,
        ),
    ];
    let mut chdb_queries: Vec<(String, String)> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| (i.to_string(), r.sql.clone()))
        .collect();
    chdb_queries.extend(
        plugin
            .iter()
            .map(|(id, sql, _)| (id.to_string(), sql.clone())),
    );
    let (chdb_version, mut chdb) = run_chdb(ch, &db, &chdb_queries).await?;
    let plugin_results = chdb.split_off(runs.len());

    let mut failures = Vec::new();
    println!(
        "\n{:<60} {:>9} {:>10} {:>9} {:>9}",
        "panel [ref] (scenario)", "rows", "rows chDB", "ms 18.16", "ms chDB"
    );
    for (r, c) in runs.iter().zip(&chdb) {
        let label = format!("{} ({})", r.query.label(), r.scenario);
        println!(
            "{label:<60} {:>9} {:>10} {:>9.1} {:>9.1}",
            r.server.rows, c.rows, r.server.ms, c.ms
        );
        let mut errs = Vec::new();
        match (&r.server.error, &c.error) {
            (Some(e), _) => errs.push(format!("ClickHouse 18.16 error: {e}")),
            (_, Some(e)) => errs.push(format!("chDB {chdb_version} error: {e}")),
            _ => {
                errs.extend(
                    check_shape(&r.query, &r.server)
                        .into_iter()
                        .map(|e| format!("18.16: {e}")),
                );
                errs.extend(
                    check_shape(&r.query, c)
                        .into_iter()
                        .map(|e| format!("chDB: {e}")),
                );
                errs.extend(
                    check_tree(&r.server)
                        .into_iter()
                        .map(|e| format!("18.16 call tree: {e}")),
                );
                errs.extend(
                    check_tree(c)
                        .into_iter()
                        .map(|e| format!("chDB call tree: {e}")),
                );
                let names =
                    |q: &QueryResult| q.meta.iter().map(|m| m.0.clone()).collect::<Vec<_>>();
                if names(&r.server) != names(c) {
                    errs.push(format!(
                        "columns differ: 18.16 {:?} vs chDB {:?}",
                        names(&r.server),
                        names(c)
                    ));
                }
                if r.server.rows != c.rows {
                    errs.push(format!(
                        "row counts differ: 18.16 {} vs chDB {}",
                        r.server.rows, c.rows
                    ));
                }
            }
        }
        for e in errs {
            failures.push(format!(
                "{label}: {e}\n    SQL: {}",
                r.sql.replace('\n', "\n         ")
            ));
        }
    }
    failures.extend(check_trace_views(
        &runs,
        &chdb,
        &plugin
            .iter()
            .map(|(id, _, want)| (*id, *want))
            .collect::<Vec<_>>(),
        &plugin_results,
        &trace,
    ));
    // Node graphs: every edge end is a node id, on both engines.
    for (i, r) in runs.iter().enumerate() {
        if r.query.panel_type != "nodeGraph" || r.query.ref_id != "edges" {
            continue;
        }
        let Some(j) = runs.iter().position(|n| {
            n.query.ref_id == "nodes"
                && n.query.panel == r.query.panel
                && n.query.dashboard == r.query.dashboard
                && n.scenario == r.scenario
        }) else {
            failures.push(format!("{}: no `nodes` query", r.query.label()));
            continue;
        };
        for e in check_graph(&runs[j].server, &r.server) {
            failures.push(format!("{} 18.16: {e}", r.query.label()));
        }
        for e in check_graph(&chdb[j], &chdb[i]) {
            failures.push(format!("{} chDB: {e}", r.query.label()));
        }
    }
    println!(
        "\n{} query runs over {} dashboards on ClickHouse 18.16 and chDB {chdb_version}; {} expansions agree with the Python expander",
        runs.len(),
        dashboards.len(),
        expand_checks.len()
    );
    if !failures.is_empty() {
        bail!("{} problems:\n{}", failures.len(), failures.join("\n"));
    }
    Ok(())
}

/// The datasource's `grafana` user (dev/clickhouse/users.d/grafana.xml) accepts
/// what the plugin sends with every query (`max_execution_time`) and refuses
/// writes. Skipped, with a note, when the server has no such user (a server
/// started before the file existed: `dev/stack restart clickhouse`).
#[tokio::test]
async fn grafana_user_reads_with_the_plugin_settings_and_cannot_write() {
    let cfg = test_config("dash_user");
    let password =
        std::env::var("ADLOG_GRAFANA_CH_PASSWORD").unwrap_or_else(|_| "adlog-grafana-dev".into());
    let user = ::clickhouse::Client::default()
        .with_url(&cfg.clickhouse.url)
        .with_user("grafana")
        .with_password(password)
        .with_validation(false)
        .with_setting("max_execution_time", "60");
    match user
        .query("SELECT toUInt64(count()) FROM system.one")
        .fetch_one::<u64>()
        .await
    {
        Ok(n) => assert_eq!(n, 1),
        Err(e) => {
            let msg = e.to_string();
            if msg.contains("Unknown user")
                || msg.contains("Authentication failed")
                || msg.contains("password is incorrect")
            {
                eprintln!(
                    "skipped: the server at {} has no `grafana` user ({msg})",
                    cfg.clickhouse.url
                );
                return;
            }
            panic!("a query with the plugin's settings failed for the grafana user: {msg}");
        }
    }
    let db = cfg.clickhouse.database.clone();
    let err = user
        .query(&format!("CREATE DATABASE {db}"))
        .execute()
        .await
        .expect_err("the grafana user must not create databases");
    assert!(err.to_string().to_lowercase().contains("readonly"), "{err}");
    drop_database(&cfg).await;
}
