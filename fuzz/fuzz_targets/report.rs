//! cargo-fuzz target `report`: see `master_events_fuzzing::report`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| master_events_fuzzing::report(data));
