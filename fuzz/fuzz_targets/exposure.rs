//! `Exposure::parse` (TSV and JSON forms) on arbitrary bytes; see `src/lib.rs` for the oracles.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    adlog_fuzz::check_line(schemas::LogType::Exposure, data);
});
