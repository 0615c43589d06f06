//! The tiny template language of the `sql/` migrations (documented for humans at
//! the top of `sql/README.md`; keep the two in sync).
//!
//! A migration file is split into statements at every `;` that ends a line
//! (outside strings and comments). Each statement is then rendered for one
//! [`Target`] (database, single server or cluster, server version, variables):
//!
//! | in the file | rendered |
//! |---|---|
//! | `{db}` | the database holding the migration's tables and views: `clickhouse.database`, or on a cluster its shard-local twin `<database>_local` |
//! | `{dist_db}` | the database users and workers query: `clickhouse.database` (on a cluster it holds the Distributed tables) |
//! | `{on_cluster}` | `""`, or `" ON CLUSTER <cluster>"` |
//! | `{cluster}` | the cluster name (`""` on a single server) |
//! | `{engine:MergeTree}`, `{engine:ReplacingMergeTree(ver)}` | `MergeTree()`, `ReplacingMergeTree(ver)` — or on a cluster `ReplicatedMergeTree('/clickhouse/tables/{shard}/<database>_local/<table>', '{replica}')`, `ReplicatedReplacingMergeTree('…', '{replica}', ver)` |
//! | `{lc:String}` | `LowCardinality(String)` if the server is ≥ 20.3, else `String` |
//! | `{codec:ZSTD(1)}` | ` CODEC(ZSTD(1))` if the server is ≥ 20.3, else nothing |
//! | `{name}` | the value of variable `name` (see [`DEFAULT_VARS`]) |
//! | `{{`, `}}` | `{`, `}` |
//! | `/*@since 20.3: fragment */` | the fragment (rendered, trimmed) if the server is ≥ 20.3 |
//! | `/*@before 20.3: fragment */` | the fragment if the server is < 20.3 |
//! | `/*@cluster: fragment */`, `/*@single: fragment */` | the fragment only with / without a cluster |
//! | `/*@since 22.3 cluster: fragment */` | several conditions: the fragment only if all hold |
//! | `-- …`, `/* … */` | removed |
//!
//! A statement that renders to nothing (only comments, or a gate that is off) is
//! dropped, so a whole statement can be gated: `/*@cluster: CREATE TABLE … */;`.
//!
//! **Cluster layout.** On a single server `{db}` and `{dist_db}` are the same
//! database. On a cluster, everything a migration creates with `{db}` (the
//! replicated tables and the materialized views that feed them) lives in the
//! shard-local database `<database>_local` on every node, and `/*@cluster: */`
//! sections add a `Distributed` table with the *same name* in `<database>`
//! (`{dist_db}`) on top of each. So users, Grafana and the workers use the same
//! names everywhere: `adlog.ods_request` is the table on a single server and
//! the Distributed table over `adlog_local.ods_request` on a cluster.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Variables every migration may use, with their defaults and meaning.
/// Override with `ingest migrate --var name=value`.
pub const DEFAULT_VARS: &[(&str, &str, &str)] = &[
    (
        "raw_ttl_days",
        "30",
        "retention of the raw ods_* tables, days",
    ),
    (
        "dead_letter_ttl_days",
        "14",
        "retention of dead_letter, days",
    ),
];

/// First version in which `{lc:…}` becomes `LowCardinality(…)` and `{codec:…}` a
/// `CODEC(…)` clause. Both exist earlier (LowCardinality experimental in 18.x,
/// GA in 19.x; codecs since 19.1); 20.3 is the first LTS where they, TTL and
/// `ttl_only_drop_parts` are all mature, so every gate in `sql/` uses it.
pub const MODERN: ServerVersion = ServerVersion([20, 3, 0, 0]);

/// A ClickHouse version such as `18.16.1` or `26.9.2.1` (missing parts are 0;
/// anything after the numeric prefix, e.g. `-testing`, is ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion(pub [u32; 4]);

impl FromStr for ServerVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let numeric: &str = s
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .next()
            .unwrap_or("");
        let mut parts = [0u32; 4];
        let mut n = 0;
        for p in numeric.split('.').filter(|p| !p.is_empty()) {
            if n == 4 {
                break;
            }
            parts[n] = p.parse().map_err(|_| format!("bad version {s:?}"))?;
            n += 1;
        }
        if n < 2 {
            return Err(format!(
                "bad version {s:?}: expected MAJOR.MINOR[.PATCH[.BUILD]], e.g. 18.16 or 26.9.2.1"
            ));
        }
        Ok(ServerVersion(parts))
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.0;
        match (c, d) {
            (0, 0) => write!(f, "{a}.{b}"),
            (_, 0) => write!(f, "{a}.{b}.{c}"),
            _ => write!(f, "{a}.{b}.{c}.{d}"),
        }
    }
}

/// What a migration is rendered for.
#[derive(Debug, Clone)]
pub struct Target {
    pub db: String,
    /// Empty = a single server.
    pub cluster: String,
    pub version: ServerVersion,
    pub vars: BTreeMap<String, String>,
}

impl Target {
    /// Validates names (they are spliced into SQL unquoted) and merges `overrides`
    /// into the [`DEFAULT_VARS`]; an override of an unknown variable is an error.
    pub fn new(
        db: &str,
        cluster: &str,
        version: ServerVersion,
        overrides: &[(String, String)],
    ) -> Result<Target, TemplateError> {
        if !is_identifier(db) {
            return Err(TemplateError::Config(format!(
                "database name {db:?} must match [A-Za-z_][A-Za-z0-9_]*"
            )));
        }
        if !cluster.is_empty() && !is_identifier(cluster) {
            return Err(TemplateError::Config(format!(
                "cluster name {cluster:?} must match [A-Za-z_][A-Za-z0-9_]*"
            )));
        }
        let mut vars: BTreeMap<String, String> = DEFAULT_VARS
            .iter()
            .map(|(k, v, _)| (k.to_string(), v.to_string()))
            .collect();
        for (k, v) in overrides {
            if !vars.contains_key(k) {
                let known: Vec<&str> = DEFAULT_VARS.iter().map(|(k, _, _)| *k).collect();
                return Err(TemplateError::Config(format!(
                    "unknown variable {k:?} (known: {})",
                    known.join(", ")
                )));
            }
            if v.is_empty()
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
            {
                return Err(TemplateError::Config(format!(
                    "variable {k} = {v:?}: values must match [A-Za-z0-9_.]+"
                )));
            }
            vars.insert(k.clone(), v.clone());
        }
        Ok(Target {
            db: db.to_string(),
            cluster: cluster.to_string(),
            version,
            vars,
        })
    }

    fn is_cluster(&self) -> bool {
        !self.cluster.is_empty()
    }

    /// The database the migrations' tables live in (`{db}`): the database
    /// itself on a single server, `<database>_local` on a cluster.
    pub fn storage_db(&self) -> String {
        storage_database(&self.db, &self.cluster)
    }
}

/// The database holding the tables (`{db}` in migrations) for `database` on
/// `cluster` (empty = single server): `database`, or `<database>_local`.
pub fn storage_database(database: &str, cluster: &str) -> String {
    if cluster.is_empty() {
        database.to_string()
    } else {
        format!("{database}_local")
    }
}

fn is_identifier(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TemplateError {
    #[error("line {line}: {msg}")]
    At { line: usize, msg: String },
    #[error("{0}")]
    Config(String),
}

fn at(line: usize, msg: impl Into<String>) -> TemplateError {
    TemplateError::At {
        line,
        msg: msg.into(),
    }
}

/// One statement of a migration file, not yet rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct RawStatement<'a> {
    /// 1-based line of the file where the statement's text starts.
    pub line: usize,
    pub text: &'a str,
}

#[derive(Clone, Copy, PartialEq)]
enum State {
    Normal,
    Quoted(u8),
    LineComment,
    BlockComment,
}

/// Splits a file at each `;` that ends a line (outside strings and comments).
/// A `;` followed by more text on its line is an error (one statement per `;`
/// at line end keeps files diffable and splitting unambiguous). Trailing text
/// without a `;` is a last statement; comment-only pieces are kept here and
/// dropped by [`render`].
pub fn split_statements(src: &str) -> Result<Vec<RawStatement<'_>>, TemplateError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut state = State::Normal;
    let (mut i, mut line, mut start, mut start_line) = (0usize, 1usize, 0usize, 1usize);
    let mut state_line = 1;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        match state {
            State::Normal => match c {
                b'\'' | b'"' | b'`' => {
                    state = State::Quoted(c);
                    state_line = line;
                }
                b'-' if next == Some(b'-') => {
                    state = State::LineComment;
                    i += 2;
                    continue;
                }
                b'/' if next == Some(b'*') => {
                    state = State::BlockComment;
                    state_line = line;
                    i += 2;
                    continue;
                }
                b';' => {
                    let rest_of_line = src[i + 1..].split('\n').next().unwrap_or("");
                    if !rest_of_line.trim().is_empty() {
                        return Err(at(
                            line,
                            "';' must end its line (statements are split at ';' + newline)",
                        ));
                    }
                    out.push(RawStatement {
                        line: start_line,
                        text: &src[start..i],
                    });
                    start = i + 1;
                    start_line = line;
                }
                _ => {}
            },
            State::Quoted(q) => {
                if c == b'\\' {
                    i += 2;
                    continue;
                }
                if c == q {
                    if next == Some(q) {
                        i += 2;
                        continue;
                    }
                    state = State::Normal;
                }
            }
            State::LineComment => {
                if c == b'\n' {
                    state = State::Normal;
                }
            }
            State::BlockComment => {
                if c == b'*' && next == Some(b'/') {
                    state = State::Normal;
                    i += 2;
                    continue;
                }
            }
        }
        if c == b'\n' {
            line += 1;
        }
        i += 1;
    }
    match state {
        State::Quoted(q) => {
            return Err(at(state_line, format!("unterminated {} quote", q as char)))
        }
        State::BlockComment => return Err(at(state_line, "unterminated /* comment")),
        _ => {}
    }
    if !src[start..].trim().is_empty() {
        out.push(RawStatement {
            line: start_line,
            text: &src[start..],
        });
    }
    // Point each statement's line at its first non-blank line.
    for s in &mut out {
        let lead = s.text.len() - s.text.trim_start().len();
        s.line += s.text[..lead].matches('\n').count();
        s.text = &s.text[lead..];
    }
    Ok(out)
}

/// Renders one statement for `target`; `None` if nothing is left of it.
pub fn render(stmt: &RawStatement<'_>, target: &Target) -> Result<Option<String>, TemplateError> {
    let table = created_table(stmt.text);
    let mut out = String::with_capacity(stmt.text.len() + 64);
    render_into(
        &mut out,
        stmt.text,
        stmt.line,
        target,
        table.as_deref(),
        true,
    )?;
    // Tidy: gates and comments leave blank lines and trailing spaces behind.
    let mut tidy = String::with_capacity(out.len());
    for l in out.lines() {
        let l = l.trim_end();
        if !l.trim().is_empty() {
            tidy.push_str(l);
            tidy.push('\n');
        }
    }
    let tidy = tidy.trim();
    Ok((!tidy.is_empty()).then(|| tidy.to_string()))
}

fn render_into(
    out: &mut String,
    text: &str,
    first_line: usize,
    target: &Target,
    table: Option<&str>,
    gates_allowed: bool,
) -> Result<(), TemplateError> {
    let b = text.as_bytes();
    let mut state = State::Normal;
    let mut line = first_line;
    let mut i = 0;
    // `out` gets verbatim runs of `text` copied in one go from `run` to `i`.
    let mut run = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        match state {
            State::Normal | State::Quoted(_) if c == b'{' => {
                out.push_str(&text[run..i]);
                if next == Some(b'{') {
                    out.push('{');
                    i += 2;
                } else {
                    let end = text[i..]
                        .find(['}', '\n'])
                        .filter(|e| b[i + e] == b'}')
                        .ok_or_else(|| {
                            at(
                                line,
                                "'{' without '}' on the same line (write '{{' for a literal '{')",
                            )
                        })?;
                    let inner = &text[i + 1..i + end];
                    out.push_str(&placeholder(inner, target, table).map_err(|m| at(line, m))?);
                    i += end + 1;
                }
                run = i;
                continue;
            }
            State::Normal | State::Quoted(_) if c == b'}' && next == Some(b'}') => {
                out.push_str(&text[run..i]);
                out.push('}');
                i += 2;
                run = i;
                continue;
            }
            State::Normal => match c {
                b'\'' | b'"' | b'`' => state = State::Quoted(c),
                b'-' if next == Some(b'-') => {
                    out.push_str(&text[run..i]);
                    let end = text[i..].find('\n').map_or(b.len(), |e| i + e);
                    i = end;
                    run = i;
                    continue;
                }
                b'/' if next == Some(b'*') => {
                    out.push_str(&text[run..i]);
                    let end = text[i + 2..]
                        .find("*/")
                        .map(|e| i + 2 + e)
                        .ok_or_else(|| at(line, "unterminated /* comment"))?;
                    let body = &text[i + 2..end];
                    if let Some(gate) = body.strip_prefix('@') {
                        if !gates_allowed {
                            return Err(at(line, "gates cannot be nested"));
                        }
                        if let Some(fragment) =
                            gate_fragment(gate, target).map_err(|m| at(line, m))?
                        {
                            if fragment.contains("/*") {
                                return Err(at(line, "a gate's fragment cannot contain '/*'"));
                            }
                            // Fragment starts after "@<header>:" in the comment body.
                            // Trimmed: `/*@since 20.3: TTL … */` gives `TTL …`.
                            let trimmed = fragment.trim();
                            let skipped = body.len() - fragment.len()
                                + (fragment.len() - fragment.trim_start().len());
                            let frag_line = line + body[..skipped].matches('\n').count();
                            // A whole gated `CREATE TABLE {db}.<name>` names its own table.
                            let gated_table = created_table(trimmed);
                            let table = table.or(gated_table.as_deref());
                            render_into(out, trimmed, frag_line, target, table, false)?;
                        }
                    }
                    line += body.matches('\n').count();
                    // Keep line structure roughly intact for readable output.
                    if body.contains('\n') && !out.ends_with('\n') {
                        out.push('\n');
                    }
                    i = end + 2;
                    run = i;
                    continue;
                }
                _ => {}
            },
            State::Quoted(q) => {
                if c == b'\\' && i + 1 < b.len() {
                    if next == Some(b'\n') {
                        line += 1;
                    }
                    i += 2;
                    continue;
                }
                if c == q {
                    if next == Some(q) {
                        i += 2;
                        continue;
                    }
                    state = State::Normal;
                }
            }
            State::LineComment | State::BlockComment => unreachable!("comments are skipped whole"),
        }
        if c == b'\n' {
            line += 1;
        }
        i += 1;
    }
    out.push_str(&text[run..]);
    Ok(())
}

/// `since 20.3: frag`, `before 20.3: frag`, `cluster: frag`, `single: frag` →
/// `Some(frag)` if the gate is open for `target`. Conditions combine (all must
/// hold): `since 22.3 cluster: frag` is open on a cluster of servers ≥ 22.3,
/// since gates do not nest.
fn gate_fragment<'a>(gate: &'a str, target: &Target) -> Result<Option<&'a str>, String> {
    let (header, fragment) = gate
        .split_once(':')
        .ok_or_else(|| format!("gate /*@{} */ lacks ':' after its condition", gate.trim()))?;
    let bad = || {
        format!(
            "unknown gate /*@{}: …*/ (use since X.Y, before X.Y, cluster or single, or several of them)",
            header.trim()
        )
    };
    let mut words = header.split_whitespace();
    let mut open = true;
    let mut any = false;
    while let Some(kind) = words.next() {
        any = true;
        open &= match kind {
            "since" | "before" => {
                let v: ServerVersion = words.next().ok_or_else(bad)?.parse()?;
                (target.version >= v) == (kind == "since")
            }
            "cluster" => target.is_cluster(),
            "single" => !target.is_cluster(),
            _ => return Err(bad()),
        };
    }
    if !any {
        return Err(bad());
    }
    Ok(open.then_some(fragment))
}

fn placeholder(inner: &str, target: &Target, table: Option<&str>) -> Result<String, String> {
    let (name, arg) = match inner.split_once(':') {
        Some((n, a)) => (n.trim(), Some(a.trim())),
        None => (inner.trim(), None),
    };
    let modern = target.version >= MODERN;
    Ok(match (name, arg) {
        ("db", None) => target.storage_db(),
        ("dist_db", None) => target.db.clone(),
        ("cluster", None) => target.cluster.clone(),
        ("on_cluster", None) if target.is_cluster() => format!(" ON CLUSTER {}", target.cluster),
        ("on_cluster", None) => String::new(),
        ("lc", Some(t)) if !t.is_empty() => {
            if modern {
                format!("LowCardinality({t})")
            } else {
                t.to_string()
            }
        }
        ("codec", Some(c)) if !c.is_empty() => {
            if modern {
                format!(" CODEC({c})")
            } else {
                String::new()
            }
        }
        ("engine", Some(spec)) => engine(spec, target, table)?,
        (var, None) if target.vars.contains_key(var) => target.vars[var].clone(),
        _ => {
            let vars: Vec<&str> = target.vars.keys().map(String::as_str).collect();
            return Err(format!(
                "unknown placeholder {{{inner}}} (known: db, dist_db, cluster, on_cluster, engine:…, \
                 lc:…, codec:…, {}; write {{{{ for a literal '{{')",
                vars.join(", ")
            ));
        }
    })
}

fn engine(spec: &str, target: &Target, table: Option<&str>) -> Result<String, String> {
    let (name, args) = match spec.find('(') {
        Some(p) if spec.ends_with(')') => (&spec[..p], &spec[p + 1..spec.len() - 1]),
        Some(_) => return Err(format!("bad engine {spec:?}")),
        None => (spec, ""),
    };
    let name = name.trim();
    let args = args.trim();
    if !name.ends_with("MergeTree") || name.starts_with("Replicated") || !is_identifier(name) {
        return Err(format!(
            "{{engine:{spec}}}: expected a non-replicated *MergeTree engine (the cluster \
             variant is derived from it)"
        ));
    }
    if !target.is_cluster() {
        return Ok(format!("{name}({args})"));
    }
    let table = table.ok_or_else(|| {
        "{engine:…} is only allowed in a CREATE TABLE [IF NOT EXISTS] {db}.<name> statement"
            .to_string()
    })?;
    let path = format!(
        "'/clickhouse/tables/{{shard}}/{}/{table}', '{{replica}}'",
        target.storage_db()
    );
    Ok(if args.is_empty() {
        format!("Replicated{name}({path})")
    } else {
        format!("Replicated{name}({path}, {args})")
    })
}

/// The `<name>` of a `CREATE TABLE [IF NOT EXISTS] {db}.<name>` statement.
fn created_table(text: &str) -> Option<String> {
    let mut code = String::new();
    // Comments and gates out, so that their words do not count.
    let mut rest = text;
    while !rest.is_empty() {
        let cut = [rest.find("--"), rest.find("/*")]
            .into_iter()
            .flatten()
            .min();
        match cut {
            None => {
                code.push_str(rest);
                break;
            }
            Some(p) => {
                code.push_str(&rest[..p]);
                code.push(' ');
                let end_marker = if rest[p..].starts_with("--") {
                    "\n"
                } else {
                    "*/"
                };
                rest = match rest[p..].find(end_marker) {
                    Some(e) => &rest[p + e + end_marker.len()..],
                    None => "",
                };
            }
        }
    }
    let words: Vec<&str> = code.split_whitespace().collect();
    let mut i = words.iter().position(|w| w.eq_ignore_ascii_case("TABLE"))?;
    if i == 0 || !words[i - 1].eq_ignore_ascii_case("CREATE") {
        return None;
    }
    i += 1;
    if words.get(i).is_some_and(|w| w.eq_ignore_ascii_case("IF")) {
        i += 3;
    }
    let w = *words.get(i)?;
    let w = w.strip_prefix("{db}.").unwrap_or(w);
    let name: String = w
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(version: &str, cluster: &str) -> Target {
        Target::new("adlog", cluster, version.parse().unwrap(), &[]).unwrap()
    }

    fn render_all(src: &str, t: &Target) -> Vec<String> {
        split_statements(src)
            .unwrap()
            .iter()
            .filter_map(|s| render(s, t).unwrap())
            .collect()
    }

    #[test]
    fn versions_parse_and_compare() {
        let v = |s: &str| s.parse::<ServerVersion>().unwrap();
        assert_eq!(v("18.16.1"), ServerVersion([18, 16, 1, 0]));
        assert_eq!(v("26.9.2.1"), ServerVersion([26, 9, 2, 1]));
        assert_eq!(v("21.8.1.7409-testing"), ServerVersion([21, 8, 1, 7409]));
        assert!(v("18.16.1") < MODERN);
        assert!(v("20.3") >= MODERN);
        assert!(v("20.2.9") < MODERN);
        assert!(v("26.9") >= MODERN);
        assert!("18".parse::<ServerVersion>().is_err());
        assert!("x.y".parse::<ServerVersion>().is_err());
        assert_eq!(v("26.9").to_string(), "26.9");
        assert_eq!(v("18.16.1").to_string(), "18.16.1");
    }

    #[test]
    fn splits_at_semicolon_line_ends_only() {
        let src = "-- head; not a split\nCREATE TABLE a (s String DEFAULT ';\n') ENGINE = Memory;\n\n/* x;\n */ SELECT 1 ;  \nSELECT 2";
        let s = split_statements(src).unwrap();
        assert_eq!(s.len(), 3);
        assert!(s[0].text.contains("DEFAULT ';\n')"));
        assert_eq!(s[0].line, 1);
        assert_eq!(s[1].line, 5);
        assert_eq!(s[2].text.trim(), "SELECT 2");
        assert_eq!(s[2].line, 7);
        let err = split_statements("SELECT 1; SELECT 2;\n").unwrap_err();
        assert_eq!(
            err,
            at(
                1,
                "';' must end its line (statements are split at ';' + newline)"
            )
        );
        assert!(split_statements("SELECT 'x;\n").is_err());
        assert!(split_statements("SELECT 1 /* x;\n").is_err());
    }

    const TABLE: &str = "-- comment {not a placeholder}\n\
        CREATE TABLE IF NOT EXISTS {db}.t{on_cluster}\n\
        (\n    a {lc:String},\n    b UInt64{codec:Delta, ZSTD(1)}\n)\n\
        ENGINE = {engine:ReplacingMergeTree(b)}\n\
        ORDER BY a\n\
        /*@since 20.3: TTL toDateTime(b) + INTERVAL {raw_ttl_days} DAY */\n\
        /*@before 20.3: SETTINGS index_granularity = 4096*/;\n";

    #[test]
    fn renders_for_old_single_server() {
        let r = render_all(TABLE, &target("18.16.1", ""));
        assert_eq!(
            r,
            vec![
                "CREATE TABLE IF NOT EXISTS adlog.t\n(\n    a String,\n    b UInt64\n)\n\
                  ENGINE = ReplacingMergeTree(b)\nORDER BY a\nSETTINGS index_granularity = 4096"
            ]
        );
    }

    #[test]
    fn renders_for_current_cluster() {
        let t = Target::new(
            "adlog",
            "main",
            "26.9".parse().unwrap(),
            &[("raw_ttl_days".into(), "7".into())],
        )
        .unwrap();
        let r = render_all(TABLE, &t);
        assert_eq!(
            r,
            vec!["CREATE TABLE IF NOT EXISTS adlog_local.t ON CLUSTER main\n(\n    a LowCardinality(String),\n    \
                  b UInt64 CODEC(Delta, ZSTD(1))\n)\n\
                  ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/adlog_local/t', '{replica}', b)\n\
                  ORDER BY a\nTTL toDateTime(b) + INTERVAL 7 DAY"]
        );
    }

    #[test]
    fn whole_statement_gates_and_escapes() {
        let src = "/*@cluster: CREATE TABLE IF NOT EXISTS {dist_db}.t{on_cluster} AS {db}.t ENGINE = Distributed({cluster}, {db}, t, rand()) */;\n\
                   SELECT '{{x}}', {{y}}, '{db}', '{dist_db}';\n-- only a comment\n";
        let single = render_all(src, &target("18.16", ""));
        assert_eq!(single, vec!["SELECT '{x}', {y}, 'adlog', 'adlog'"]);
        let cluster = render_all(src, &target("18.16", "c1"));
        assert_eq!(
            cluster,
            vec![
                "CREATE TABLE IF NOT EXISTS adlog.t ON CLUSTER c1 AS adlog_local.t ENGINE = Distributed(c1, adlog_local, t, rand())",
                "SELECT '{x}', {y}, 'adlog_local', 'adlog'"
            ]
        );
    }

    #[test]
    fn combined_gates_and_gated_create_table() {
        let src = "/*@since 22.3: CREATE TABLE IF NOT EXISTS {db}.o{on_cluster} (a UInt8) ENGINE = {engine:MergeTree} ORDER BY a */;\n\
                   /*@since 22.3 cluster: CREATE TABLE IF NOT EXISTS {dist_db}.o{on_cluster} AS {db}.o ENGINE = Distributed({cluster}, {db}, o) */;\n";
        assert!(render_all(src, &target("18.16", "")).is_empty());
        assert!(render_all(src, &target("18.16", "c1")).is_empty());
        assert_eq!(
            render_all(src, &target("26.9", "")),
            vec!["CREATE TABLE IF NOT EXISTS adlog.o (a UInt8) ENGINE = MergeTree() ORDER BY a"]
        );
        assert_eq!(
            render_all(src, &target("26.9", "c1")),
            vec![
                "CREATE TABLE IF NOT EXISTS adlog_local.o ON CLUSTER c1 (a UInt8) ENGINE = \
                 ReplicatedMergeTree('/clickhouse/tables/{shard}/adlog_local/o', '{replica}') ORDER BY a",
                "CREATE TABLE IF NOT EXISTS adlog.o ON CLUSTER c1 AS adlog_local.o ENGINE = Distributed(c1, adlog_local, o)"
            ]
        );
        let t = target("26.9", "");
        for bad in [
            "/*@since: x */",
            "/*@ : x */",
            "/*@since 22.3 sometimes: x */",
        ] {
            let s = split_statements(bad).unwrap();
            assert!(render(&s[0], &t).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_name_the_line() {
        let t = target("26.9", "");
        let one = |src: &str| {
            let s = split_statements(src).unwrap();
            render(&s[0], &t).unwrap_err()
        };
        assert_eq!(
            one("\n\nSELECT {nope}"),
            at(3, "unknown placeholder {nope} (known: db, dist_db, cluster, on_cluster, engine:…, lc:…, codec:…, dead_letter_ttl_days, raw_ttl_days; write {{ for a literal '{')")
        );
        assert!(matches!(
            one("SELECT 1\n/*@sinc 1.2: x*/"),
            TemplateError::At { line: 2, .. }
        ));
        assert!(matches!(
            one("SELECT 1 /*@since x: y */"),
            TemplateError::At { line: 1, .. }
        ));
        assert!(matches!(
            one("SELECT {db"),
            TemplateError::At { line: 1, .. }
        ));
        assert!(matches!(
            one("CREATE TABLE {db}.t (a UInt8) ENGINE = {engine:Log}"),
            TemplateError::At { line: 1, .. }
        ));
        let c = target("26.9", "c");
        let s = split_statements("SELECT {engine:MergeTree}").unwrap();
        assert!(
            render(&s[0], &c).is_err(),
            "engine outside CREATE TABLE on a cluster"
        );
    }

    #[test]
    fn target_validates_names_and_vars() {
        let v: ServerVersion = "26.9".parse().unwrap();
        assert!(Target::new("bad-name", "", v, &[]).is_err());
        assert!(Target::new("db", "x y", v, &[]).is_err());
        assert!(Target::new("db", "", v, &[("nope".into(), "1".into())]).is_err());
        assert!(Target::new("db", "", v, &[("raw_ttl_days".into(), "1; DROP".into())]).is_err());
        let t = Target::new("db", "", v, &[("raw_ttl_days".into(), "90".into())]).unwrap();
        assert_eq!(t.vars["raw_ttl_days"], "90");
        assert_eq!(t.vars["dead_letter_ttl_days"], "14");
    }

    #[test]
    fn created_table_ignores_comments() {
        assert_eq!(
            created_table("-- CREATE TABLE x\nCREATE TABLE IF NOT EXISTS {db}.abc{on_cluster} ("),
            Some("abc".into())
        );
        assert_eq!(created_table("create table {db}.t2 ("), Some("t2".into()));
        assert_eq!(
            created_table("CREATE MATERIALIZED VIEW {db}.v TO {db}.t AS SELECT 1"),
            None
        );
    }
}
