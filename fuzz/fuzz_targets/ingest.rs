//! cargo-fuzz target `ingest`: see `master_events_fuzzing::ingest`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| master_events_fuzzing::ingest(data));
