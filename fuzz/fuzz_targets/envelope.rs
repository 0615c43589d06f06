//! `Envelope::parse` on arbitrary Kafka values; see `src/lib.rs` for the oracles.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    adlog_fuzz::check_envelope(data);
});
