//! Embeds the workspace's `sql/NNNN_name.sql` migrations into the binary, so that
//! `ingest migrate` is self-contained (`--sql-dir` still overrides at run time).
//! Generates `$OUT_DIR/migrations.rs`: `&[(file name, contents)]`, sorted by name.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let sql_dir = manifest.join("..").join("sql");
    // A directory as rerun-if-changed: cargo re-runs when any file in it changes,
    // or one is added or removed.
    println!("cargo:rerun-if-changed={}", sql_dir.display());

    let mut files: Vec<(String, PathBuf)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&sql_dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".sql") && e.path().is_file() {
                files.push((name, e.path().canonicalize().unwrap()));
            }
        }
    }
    files.sort();

    let mut out = String::from("&[\n");
    for (name, path) in &files {
        out.push_str(&format!(
            "    ({name:?}, include_str!({:?})),\n",
            path.display().to_string()
        ));
    }
    out.push_str("]\n");
    let dest = PathBuf::from(std::env::var_os("OUT_DIR").unwrap()).join("migrations.rs");
    std::fs::write(dest, out).unwrap();
}
