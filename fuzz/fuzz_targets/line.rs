//! cargo-fuzz target `line`: see `master_events_fuzzing::line`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| master_events_fuzzing::line(data));
