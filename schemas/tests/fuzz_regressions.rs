//! The fuzz targets' oracles (`fuzz/src/lib.rs`), on every `cargo test`:
//! replays the committed seeds (`fuzz/seeds/<target>/`) and every input that
//! once failed (`fuzz/regressions/<target>/`) without libFuzzer, so a fixed
//! parser bug stays fixed on the stable toolchain. `bench/fuzz` runs the
//! fuzzers themselves.

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod oracle;

use std::path::Path;

use schemas::LogType;

fn replay(dir: &str, check: impl Fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("fuzz");
    let mut n = 0;
    for base in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(base).join(dir)) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            let data = std::fs::read(&p).unwrap();
            eprintln!("{}", p.display());
            check(&data);
            n += 1;
        }
    }
    n
}

#[test]
fn fuzz_seeds_and_regressions_pass_the_oracles() {
    let mut total = 0;
    total += replay("envelope", oracle::check_envelope);
    for (dir, t) in [
        ("request", LogType::Request),
        ("exposure", LogType::Exposure),
        ("interaction", LogType::Interaction),
        ("joined", LogType::Joined),
    ] {
        total += replay(dir, |d| oracle::check_line(t, d));
    }
    assert!(
        total >= 10,
        "only {total} inputs found under fuzz/seeds and fuzz/regressions"
    );
}

/// A few hand-picked edge cases of the kind the fuzzers explore, pinned.
#[test]
fn edge_cases_pass_the_oracles() {
    for line in [
        // -0.0 is a non-negative JSON number: accepted, and round-trips.
        r#"{"time":"2026-11-21 10:00:00.123","trace_id":"a","span_id":"b","parent_span_id":"","service":"s","caller":"","api":"/x","uid":1,"psid":1,"status":200,"latency_ms":-0.0,"host":"h","idc":"i"}"#,
        // Subnormal and huge floats.
        "2026-11-21 10:00:00.123\ta\tb\t\ts\t\t/x\t1\t1\t200\t5e-324\th\ti\t",
        "2026-11-21 10:00:00.123\ta\tb\t\ts\t\t/x\t1\t1\t200\t1.7976931348623157e308\th\ti\t",
        // Escapes in extras, `=` in a value.
        "2026-11-21 10:00:00.123\ta\tb\t\ts\t\t/x\t1\t1\t200\t1\th\ti\tk=a\\tb\\\\c=d",
    ] {
        oracle::check_line(LogType::Request, line.as_bytes());
    }
    oracle::check_envelope(br#"{"message":"x","log":{"offset":18446744073709551615}}"#);
    oracle::check_envelope(b"\xff\xfe");
}
