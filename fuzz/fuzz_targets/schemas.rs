//! cargo-fuzz target `schemas`: see `master_events_fuzzing::schemas`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| master_events_fuzzing::schemas(data));
