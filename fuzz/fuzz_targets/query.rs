//! cargo-fuzz target `query`: see `master_events_fuzzing::query`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| master_events_fuzzing::query(data));
