//! cargo-fuzz target `warm`: see `master_events_fuzzing::warm`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| master_events_fuzzing::warm(data));
