//! Helpers shared by the integration tests: the hand-written logs under
//! `tests/data/report/` and the time arithmetic their known answers use.
#![allow(dead_code)]

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::time::Duration;

use master_events_events::Timestamp;
use master_events_report::LogReader;

/// The second every hand-written log counts from: `ts` = `T0 + offset`.
pub const T0: i64 = 1_700_000_000;

/// The path of a file under `tests/data/report/`.
pub fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/report")
        .join(name)
}

/// A reader of a file under `tests/data/report/`.
pub fn reader(name: &str) -> LogReader<'static, BufReader<File>> {
    let file = File::open(data(name)).unwrap_or_else(|e| panic!("open {name}: {e}"));
    LogReader::new(BufReader::new(file))
}

/// `T0 + offset` seconds.
pub fn at(offset: f64) -> Timestamp {
    Timestamp::from_micros(T0 * 1_000_000 + (offset * 1e6).round() as i64)
}

/// `x` seconds.
pub fn secs(x: f64) -> Duration {
    Duration::from_micros((x * 1e6).round() as u64)
}
