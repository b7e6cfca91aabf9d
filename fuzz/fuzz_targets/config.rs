//! cargo-fuzz target `config`: see `master_events_fuzzing::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| master_events_fuzzing::config(data));
