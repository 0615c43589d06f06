//! `ingest migrate` command line, without a server (`--print`).

use std::process::{Command, Output};

fn ingest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ingest"))
        .args(args)
        // Independent of the environment the tests run in.
        .env("ADLOG_CLICKHOUSE__DATABASE", "adlog_cli")
        .env("ADLOG_CLICKHOUSE__CLUSTER", "")
        .env_remove("ADLOG_CONFIG")
        .output()
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn print_renders_per_version() {
    let old = ingest(&["migrate", "--print", "--server-version", "18.16"]);
    let (out, err) = text(&old);
    assert!(old.status.success(), "{err}");
    assert!(
        out.contains("CREATE TABLE IF NOT EXISTS adlog_cli.ods_request\n"),
        "{out}"
    );
    assert!(
        out.contains("CREATE TABLE IF NOT EXISTS adlog_cli.schema_migrations"),
        "{out}"
    );
    assert!(
        !out.contains("TTL") && !out.contains("LowCardinality"),
        "{out}"
    );

    let new = ingest(&[
        "migrate",
        "--print",
        "--server-version",
        "26.9",
        "--var",
        "raw_ttl_days=90",
    ]);
    let (out, err) = text(&new);
    assert!(new.status.success(), "{err}");
    assert!(out.contains("TTL ts + INTERVAL 90 DAY"), "{out}");
    assert!(out.contains("TTL ts + INTERVAL 14 DAY"), "{out}");
}

#[test]
fn print_on_a_cluster_uses_replicated_engines() {
    let o = Command::new(env!("CARGO_BIN_EXE_ingest"))
        .args(["migrate", "--print", "--server-version", "18.16"])
        .env("ADLOG_CLICKHOUSE__CLUSTER", "c1")
        .env("ADLOG_CLICKHOUSE__DATABASE", "adlog")
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    // Shard-local replicated tables in adlog_local, Distributed ones of the
    // same names in adlog (sql/README.md, "Cluster layout").
    assert!(
        out.contains("CREATE TABLE IF NOT EXISTS adlog_local.ods_request ON CLUSTER c1\n"),
        "{out}"
    );
    assert!(
        out.contains("ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/adlog_local/ods_request', '{replica}')"),
        "{out}"
    );
    assert!(
        out.contains("CREATE TABLE IF NOT EXISTS adlog.ods_request ON CLUSTER c1 AS adlog_local.ods_request\nENGINE = Distributed(c1, adlog_local, ods_request, _partition)"),
        "{out}"
    );
}

#[test]
fn bad_arguments_are_explained() {
    let o = ingest(&["migrate", "--print"]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("--server-version"), "{}", text(&o).1);

    let o = ingest(&[
        "migrate",
        "--print",
        "--server-version",
        "26.9",
        "--var",
        "nope=1",
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).1.contains("unknown variable \"nope\""),
        "{}",
        text(&o).1
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("0001_x.sql"), "SELECT {nope};\n").unwrap();
    let o = ingest(&[
        "migrate",
        "--print",
        "--server-version",
        "26.9",
        "--sql-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = text(&o).1;
    assert!(
        err.contains("0001_x.sql: line 1: unknown placeholder {nope}"),
        "{err}"
    );
}
