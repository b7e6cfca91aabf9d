//! The run's report: a table on standard output and a JSON file.
//!
//! Owns: the report's shape ([`Report`]) and the table's columns (fault,
//! acknowledged, lost, duplicated, 202'd never sequenced, divergence, consumer
//! holes and duplicates, longest stall, time without a master, verdict).

use serde::Serialize;

use crate::scenario::Outcome;

/// Everything one run of the suite found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The run's seed.
    pub seed: u64,
    /// The command line that replays the run.
    pub command: String,
    /// The `master-events` binary.
    pub bin: String,
    /// The lease TTL, seconds.
    pub lease_ttl: f64,
    /// The writers' rate, events per second.
    pub rate: f64,
    /// Each scenario's outcome.
    pub scenarios: Vec<Outcome>,
}

impl Report {
    /// Whether every scenario passed.
    pub fn passed(&self) -> bool {
        self.scenarios.iter().all(|s| s.passed)
    }

    /// The table, one row per scenario (Markdown, so it can go into the docs).
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| scenario | fault | acknowledged | lost | duplicated | 202 never sequenced | archives | consumer holes / dups / mismatches / resets | longest stall | time without master | result |\n\
             |---|---|---:|---:|---:|---:|---|---|---:|---:|---|\n",
        );
        for s in &self.scenarios {
            let v = &s.verdict;
            let longest = v.no_master.iter().map(|w| w.secs).fold(0.0, f64::max);
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} / {} / {} / {} | {:.2} s | {:.2} s ({} windows, longest {:.2} s) | {} |\n",
                s.scenario,
                s.fault,
                v.acknowledged,
                v.lost,
                v.duplicated,
                v.queued_never_sequenced,
                if v.divergent { "diverged" } else { "identical" },
                v.consumer_silent_holes,
                v.consumer_duplicates,
                v.consumer_mismatches,
                v.consumer_resets,
                v.longest_stall_secs,
                v.no_master_secs,
                v.no_master.len(),
                longest,
                if s.passed { "pass" } else { "FAIL" },
            ));
        }
        out
    }

    /// Each failed scenario's failed invariants and step errors, with the seed.
    pub fn failures(&self) -> String {
        let mut out = String::new();
        for s in self.scenarios.iter().filter(|s| !s.passed) {
            out.push_str(&format!(
                "{} FAILED (replay: --scenario {} --seed {}):\n",
                s.scenario, s.scenario, self.seed
            ));
            for f in &s.verdict.failures {
                out.push_str(&format!("  - {f}\n"));
            }
            for e in &s.step_errors {
                out.push_str(&format!("  - fault step: {e}\n"));
            }
        }
        out
    }
}
