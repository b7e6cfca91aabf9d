//! The results of a run, as JSON and as a markdown report.
//!
//! Owns: [`Results`] (everything a run measured, with the machine, the load and the
//! settings) and its rendering ([`Results::markdown`]).
//!
//! Promises: a row that failed is listed with its error, never dropped; every
//! comparison column is "this row ÷ the best other system in the same row group",
//! with the direction (higher or lower is better) in its heading.

use std::fmt::Write as _;

use serde::Serialize;

use crate::proc::Machine;
use crate::scenarios::{IdleRow, LatencyRow, RetainedRow, ThroughputRow};
use crate::systems::Kind;
use crate::workload::MixSummary;

/// The settings a run used.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// `--quick`.
    pub quick: bool,
    /// Producer time per throughput row, seconds.
    pub throughput_secs: f64,
    /// Producer time per latency row, seconds.
    pub latency_secs: f64,
    /// Latency warm-up, seconds (not recorded).
    pub warmup_secs: f64,
    /// Reader counts.
    pub readers: Vec<usize>,
    /// Offered load of latency rows, events/s.
    pub latency_eps: f64,
    /// Events retained (archive size, MAXLEN ~, JetStream max_messages).
    pub retain: usize,
    /// Idle connections asked for.
    pub idle_connections: usize,
    /// Events per ingest request / XADD pipeline batch.
    pub batch: usize,
    /// Requests / batches in flight.
    pub window: usize,
    /// The soft open-file limit after raising it.
    pub nofile: u64,
}

/// A row that failed.
#[derive(Debug, Clone, Serialize)]
pub struct RowError {
    /// Which scenario.
    pub scenario: String,
    /// Which system.
    pub system: Kind,
    /// Readers, when the scenario has them.
    pub readers: Option<usize>,
    /// What went wrong.
    pub error: String,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// The command line.
    pub command: String,
    /// Unix time the run started.
    pub started_unix: u64,
    /// Seconds the run took.
    pub elapsed_secs: f64,
    /// The machine.
    pub machine: Machine,
    /// /proc/loadavg at the start and at the end.
    pub loadavg_start: String,
    /// /proc/loadavg at the end.
    pub loadavg_end: String,
    /// The event mix.
    pub mix: MixSummary,
    /// The settings.
    pub settings: Settings,
    /// Throughput rows.
    pub throughput: Vec<ThroughputRow>,
    /// Latency rows.
    pub latency: Vec<LatencyRow>,
    /// Memory with the store full.
    pub retained: Vec<RetainedRow>,
    /// Memory per idle connection.
    pub idle: Vec<IdleRow>,
    /// Rows that failed.
    pub errors: Vec<RowError>,
}

/// Events/s, short.
fn eps(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Bytes, short.
fn bytes(v: f64) -> String {
    if v >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", v / 1024.0 / 1024.0)
    } else if v >= 1024.0 {
        format!("{:.1} KiB", v / 1024.0)
    } else {
        format!("{v:.0} B")
    }
}

/// Microseconds, short.
fn us(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v >= 10_000.0 {
        format!("{:.1} ms", v / 1e3)
    } else {
        format!("{v:.0} µs")
    }
}

/// `mine ÷ best of others`: the best is the max when higher is better, else the min.
fn vs_best(mine: f64, others: &[f64], higher_is_better: bool) -> String {
    let others: Vec<f64> = others.iter().copied().filter(|v| v.is_finite()).collect();
    let best = if higher_is_better {
        others.iter().copied().fold(f64::NAN, f64::max)
    } else {
        others.iter().copied().fold(f64::NAN, f64::min)
    };
    if !best.is_finite() || best == 0.0 || !mine.is_finite() {
        return "–".into();
    }
    format!("{:.2}×", mine / best)
}

impl Results {
    /// The report as markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(s, "# master-events vs Redis Streams vs NATS\n");
        let _ = writeln!(s, "Command: `{}`\n", self.command);
        let _ = writeln!(
            s,
            "Machine: {} CPUs ({}), {:.1} GiB RAM, Linux {}; {}; {}.\n",
            m.cpus,
            m.cpu_model,
            m.mem_gib,
            m.kernel,
            m.redis_version.as_deref().unwrap_or("redis-server ?"),
            m.nats_version.as_deref().unwrap_or("nats-server ?"),
        );
        let _ = writeln!(
            s,
            "Load: /proc/loadavg `{}` at the start, `{}` at the end ({:.0} s). \
             \"Other CPU\" is the number of cores that processes other than the harness \
             and the server under test kept busy while the row ran (other \
             builds); \"CPU s\" is the CPU time the server and the harness (producer \
             and readers, on the same 2 cores) used during the row.\n",
            self.loadavg_start, self.loadavg_end, self.elapsed_secs
        );
        let mix = &self.mix;
        let _ = writeln!(
            s,
            "Mix: {} events of {} types from `master-events-sim`'s default scenario, \
             {:.0} bytes a line on average ({}–{}), {:.0}% carrying a latency stamp; \
             every system gets the same bytes per event.\n",
            mix.events,
            mix.types,
            mix.mean_line_bytes,
            mix.min_line_bytes,
            mix.max_line_bytes,
            mix.stamped_fraction * 100.0
        );

        if !self.throughput.is_empty() {
            let st = &self.settings;
            let _ = writeln!(
                s,
                "## Throughput\n\nOne producer for {:.0} s (batches of {}, {} in flight), K \
                 readers; delivered = events received summed over readers ÷ time from the \
                 first send to the last receipt. Lost = announced by a gap frame / silent \
                 (a hole nobody announced) / undelivered (still missing at the end).\n",
                st.throughput_secs, st.batch, st.window
            );
            let _ = writeln!(
                s,
                "| K | system | producer ev/s | delivered ev/s | delivered ÷ best other (higher is better) | lost (announced / silent / undelivered) | CPU s: server / harness | other CPU |"
            );
            let _ = writeln!(s, "|---:|---|---:|---:|---:|---|---:|---:|");
            for r in &self.throughput {
                let others: Vec<f64> = self
                    .throughput
                    .iter()
                    .filter(|o| o.readers == r.readers && o.system != r.system)
                    .map(|o| o.delivered_eps)
                    .collect();
                let t = &r.totals;
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} ({} / {} / {}) | {:.1} / {:.1} | {:.2} |",
                    r.readers,
                    r.system.name(),
                    eps(r.producer_eps),
                    eps(r.delivered_eps),
                    vs_best(r.delivered_eps, &others, true),
                    r.lost,
                    t.announced,
                    t.silent,
                    t.undelivered,
                    r.server_cpu_secs,
                    r.harness_cpu_secs,
                    r.other_cpu
                );
            }
            s.push('\n');
        }

        if !self.latency.is_empty() {
            let st = &self.settings;
            let _ = writeln!(
                s,
                "## Latency\n\nOffered load {} ev/s for {:.0} s (sent every millisecond, \
                 stamped at send), produce → receipt over all readers, after a {:.1} s \
                 warm-up.\n",
                eps(st.latency_eps),
                st.latency_secs,
                st.warmup_secs
            );
            let _ = writeln!(
                s,
                "| K | system | achieved ev/s | samples | p50 | p99 | p99.9 | max | p99 ÷ best other (lower is better) | lost | CPU s: server / harness | other CPU |"
            );
            let _ = writeln!(
                s,
                "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
            for r in &self.latency {
                let others: Vec<f64> = self
                    .latency
                    .iter()
                    .filter(|o| o.readers == r.readers && o.system != r.system)
                    .map(|o| o.p99_us)
                    .collect();
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} / {:.1} | {:.2} |",
                    r.readers,
                    r.system.name(),
                    eps(r.achieved_eps),
                    r.samples,
                    us(r.p50_us),
                    us(r.p99_us),
                    us(r.p999_us),
                    us(r.max_us),
                    vs_best(r.p99_us, &others, false),
                    r.lost,
                    r.server_cpu_secs,
                    r.harness_cpu_secs,
                    r.other_cpu
                );
            }
            s.push('\n');
        }

        if !self.retained.is_empty() {
            let _ = writeln!(
                s,
                "## Memory: {} events retained\n\nThe server's RSS (VmRSS) before and after \
                 producing twice that many events (so the store is full and evicting); line \
                 bytes = retained × mean line length. Own account: this project's archive \
                 bytes, Redis's `MEMORY USAGE` of the stream, the JetStream stream's bytes \
                 (NATS retains in a JetStream memory stream; core NATS retains nothing).\n",
                self.settings.retain
            );
            let _ = writeln!(
                s,
                "| system | retained | line bytes | RSS empty | RSS full | RSS growth ÷ line bytes | own account ÷ line bytes | growth ÷ best other (lower is better) |"
            );
            let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
            for r in &self.retained {
                let others: Vec<f64> = self
                    .retained
                    .iter()
                    .filter(|o| o.system != r.system)
                    .map(|o| o.rss_ratio)
                    .collect();
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {:.2} | {} | {} |",
                    r.system.name(),
                    r.retained,
                    bytes(r.line_bytes as f64),
                    bytes(r.rss_empty as f64),
                    bytes(r.rss_full as f64),
                    r.rss_ratio,
                    r.store_ratio
                        .map(|v| format!("{v:.2}"))
                        .unwrap_or_else(|| "–".into()),
                    vs_best(r.rss_ratio, &others, false)
                );
            }
            s.push('\n');
        }

        if !self.idle.is_empty() {
            let _ = writeln!(
                s,
                "## Memory: idle stream connections\n\nRSS growth of the server with that many \
                 idle readers (this project: `GET /diag/masterEvents?start=now&heartbeat=0`; \
                 Redis: `XREAD BLOCK 0`; NATS: `SUB`), each its own TCP connection.\n"
            );
            let _ = writeln!(
                s,
                "| system | open / asked | RSS before | RSS after | per connection | ÷ best other (lower is better) | note |"
            );
            let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---|");
            for r in &self.idle {
                let others: Vec<f64> = self
                    .idle
                    .iter()
                    .filter(|o| o.system != r.system)
                    .map(|o| o.bytes_per_connection)
                    .collect();
                let _ = writeln!(
                    s,
                    "| {} | {} / {} | {} | {} | {} | {} | {} |",
                    r.system.name(),
                    r.opened,
                    r.requested,
                    bytes(r.rss_before as f64),
                    bytes(r.rss_after as f64),
                    bytes(r.bytes_per_connection),
                    vs_best(r.bytes_per_connection, &others, false),
                    r.note.as_deref().unwrap_or("")
                );
            }
            s.push('\n');
        }

        if !self.errors.is_empty() {
            let _ = writeln!(s, "## Rows that failed\n");
            for e in &self.errors {
                let _ = writeln!(
                    s,
                    "- {} / {}{}: {}",
                    e.scenario,
                    e.system.name(),
                    e.readers.map(|k| format!(" / K={k}")).unwrap_or_default(),
                    e.error.replace('\n', " ")
                );
            }
            s.push('\n');
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_point_the_right_way() {
        assert_eq!(vs_best(2.0, &[1.0, 0.5], true), "2.00×");
        assert_eq!(vs_best(2.0, &[1.0, 4.0], false), "2.00×");
        assert_eq!(vs_best(2.0, &[], true), "–");
        assert_eq!(vs_best(2.0, &[f64::NAN], true), "–");
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(eps(1_234_567.0), "1.23 M");
        assert_eq!(eps(45_600.0), "46 k");
        assert_eq!(bytes(20.0 * 1024.0), "20.0 KiB");
        assert_eq!(us(350.0), "350 µs");
        assert_eq!(us(25_000.0), "25.0 ms");
    }
}
