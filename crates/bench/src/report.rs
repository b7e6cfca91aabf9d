//! The results of a run, as JSON and as a markdown report.
//!
//! Owns: [`Results`] (everything a run measured, with the machine, the load and the
//! settings) and its rendering ([`Results::markdown`]).
//!
//! Promises: a row that failed is listed with its error, never dropped; every
//! comparison column is "this row ÷ the best other system in the same row group",
//! with the direction (higher or lower is better) in its heading. With several
//! rounds (`--repeat`), each system's figures are its median row (for an even
//! count, the worse of the two middle rows), compared with the other systems'
//! medians, next to the range over the rounds; losses are summed over all rounds,
//! so a loss in any round shows; every round's row is listed as well.

use std::fmt::Write as _;

use serde::Serialize;

use crate::proc::Machine;
use crate::scenarios::{IdleRow, LatencyRow, RetainedRow, ThroughputRow};
use crate::systems::Kind;
use crate::watchers::WatchersRow;
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
    /// How this project's producer sent (`--master-events-ingest`).
    pub master_events_ingest: crate::systems::IngestMode,
    /// Rounds of every throughput and latency row (`--repeat`).
    pub repeat: usize,
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
    /// Very many streams at once.
    pub watchers: Vec<WatchersRow>,
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

/// The rows of one group (same system, same K), in the order they ran.
fn group<T>(rows: &[T], of: impl Fn(&T) -> (Kind, usize), key: (Kind, usize)) -> Vec<&T> {
    rows.iter().filter(|r| of(r) == key).collect()
}

/// The distinct (system, K) groups of `rows`, in the order they first ran, sorted by K.
fn groups<T>(rows: &[T], of: impl Fn(&T) -> (Kind, usize)) -> Vec<(Kind, usize)> {
    let mut keys: Vec<(Kind, usize)> = Vec::new();
    for r in rows {
        if !keys.contains(&of(r)) {
            keys.push(of(r));
        }
    }
    keys.sort_by_key(|&(_, k)| k);
    keys
}

/// The median of `rows` by `key`: the middle row when they are ordered best first,
/// and for an even count the worse of the two middle rows. A figure that is not a
/// number counts as the worst.
fn median_row<'a, T>(
    rows: &[&'a T],
    key: impl Fn(&T) -> f64,
    higher_is_better: bool,
) -> Option<&'a T> {
    let worst = if higher_is_better {
        f64::NEG_INFINITY
    } else {
        f64::INFINITY
    };
    let mut sorted: Vec<(f64, &'a T)> = rows
        .iter()
        .map(|&r| (Some(key(r)).filter(|v| !v.is_nan()).unwrap_or(worst), r))
        .collect();
    sorted.sort_by(|a, b| {
        if higher_is_better {
            b.0.total_cmp(&a.0)
        } else {
            a.0.total_cmp(&b.0)
        }
    });
    sorted.get(sorted.len() / 2).map(|&(_, r)| r)
}

/// One (system, K) group of rows over the rounds.
struct Group<'a, T> {
    key: (Kind, usize),
    rows: Vec<&'a T>,
    median: Option<&'a T>,
}

/// Each (system, K) group of `rows`, with its median row by `key`.
fn medians<'a, T>(
    rows: &'a [T],
    of: impl Fn(&T) -> (Kind, usize) + Copy,
    key: impl Fn(&T) -> f64 + Copy,
    higher_is_better: bool,
) -> Vec<Group<'a, T>> {
    groups(rows, of)
        .into_iter()
        .map(|g| {
            let rows = group(rows, of, g);
            let median = median_row(&rows, key, higher_is_better);
            Group {
                key: g,
                rows,
                median,
            }
        })
        .collect()
}

/// The median figures of the other systems with the same K as `(system, k)`.
fn others<T>(
    medians: &[Group<'_, T>],
    (system, k): (Kind, usize),
    key: impl Fn(&T) -> f64,
) -> Vec<f64> {
    medians
        .iter()
        .filter(|g| g.key.1 == k && g.key.0 != system)
        .filter_map(|g| g.median.map(&key))
        .collect()
}

/// `lo–hi` of `values` with `fmt`, or `–` when none is a number.
fn range(values: impl Iterator<Item = f64>, fmt: fn(f64) -> String) -> String {
    let finite: Vec<f64> = values.filter(|v| v.is_finite()).collect();
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if finite.is_empty() {
        "–".into()
    } else {
        format!("{}–{}", fmt(lo), fmt(hi))
    }
}

impl Results {
    /// Whether the report summarizes several rounds.
    fn rounds(&self) -> bool {
        self.settings.repeat > 1
    }

    /// The heading of the round column of a per-row table, when there are rounds.
    fn round_heading(&self) -> &'static str {
        if self.rounds() {
            "round | "
        } else {
            ""
        }
    }

    /// The alignment cell of the round column, when there are rounds.
    fn round_rule(&self) -> &'static str {
        if self.rounds() {
            "---:|"
        } else {
            ""
        }
    }

    /// A row's round cell, when there are rounds.
    fn round_cell(&self, round: usize) -> String {
        if self.rounds() {
            format!("{round} | ")
        } else {
            String::new()
        }
    }

    /// Medians of the throughput rows over the rounds.
    fn throughput_summary(&self, s: &mut String) {
        let of = |r: &ThroughputRow| (r.system, r.readers);
        let key = |r: &ThroughputRow| r.delivered_eps;
        let medians = medians(&self.throughput, of, key, true);
        let _ = writeln!(
            s,
            "Medians of {} rounds (the systems took turns within each round):\n",
            self.settings.repeat
        );
        let _ = writeln!(
            s,
            "| K | system | rounds | delivered ev/s, median | range | median ÷ best other median (higher is better) | producer ev/s | lost, all rounds (announced / silent / undelivered) | CPU s: server / harness |"
        );
        let _ = writeln!(s, "|---:|---|---:|---:|---:|---:|---:|---|---:|");
        for g in &medians {
            let (system, k) = g.key;
            let rows = &g.rows;
            let Some(m) = g.median else { continue };
            let others = others(&medians, g.key, key);
            let sum = |f: fn(&ThroughputRow) -> u64| rows.iter().map(|r| f(r)).sum::<u64>();
            let _ = writeln!(
                s,
                "| {k} | {} | {} | {} | {} | {} | {} | {} ({} / {} / {}) | {:.1} / {:.1} |",
                system.name(),
                rows.len(),
                eps(m.delivered_eps),
                range(rows.iter().map(|r| r.delivered_eps), eps),
                vs_best(m.delivered_eps, &others, true),
                eps(m.producer_eps),
                sum(|r| r.lost),
                sum(|r| r.totals.announced),
                sum(|r| r.totals.silent),
                sum(|r| r.totals.undelivered),
                m.server_cpu_secs,
                m.harness_cpu_secs,
            );
        }
        let _ = writeln!(s, "\nEvery round:\n");
    }

    /// Medians of the latency rows over the rounds.
    fn latency_summary(&self, s: &mut String) {
        let of = |r: &LatencyRow| (r.system, r.readers);
        let key = |r: &LatencyRow| r.p99_us;
        let medians = medians(&self.latency, of, key, false);
        let _ = writeln!(
            s,
            "Medians of {} rounds by p99 (the systems took turns within each round):\n",
            self.settings.repeat
        );
        let _ = writeln!(
            s,
            "| K | system | rounds | p99, median | range | median ÷ best other median (lower is better) | p50 | p99.9 | max, all rounds | lost, all rounds |"
        );
        let _ = writeln!(s, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for g in &medians {
            let (system, k) = g.key;
            let rows = &g.rows;
            let Some(m) = g.median else { continue };
            let others = others(&medians, g.key, key);
            let _ = writeln!(
                s,
                "| {k} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                system.name(),
                rows.len(),
                us(m.p99_us),
                range(rows.iter().map(|r| r.p99_us), us),
                vs_best(m.p99_us, &others, false),
                us(m.p50_us),
                us(m.p999_us),
                us(rows.iter().map(|r| r.max_us).fold(f64::NAN, f64::max)),
                rows.iter().map(|r| r.lost).sum::<u64>(),
            );
        }
        let _ = writeln!(s, "\nEvery round:\n");
    }

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
                "## Throughput\n\nOne producer for {:.0} s (batches of {}, {} in flight; \
                 master-events sending {}), K readers; delivered = events received summed \
                 over readers ÷ time from the first send to the last receipt. Lost = \
                 announced by a gap frame / silent (a hole nobody announced) / undelivered \
                 (still missing at the end).\n",
                st.throughput_secs,
                st.batch,
                st.window,
                st.master_events_ingest.describe()
            );
            if self.rounds() {
                self.throughput_summary(&mut s);
            }
            let _ = writeln!(
                s,
                "| {}K | system | producer ev/s | delivered ev/s | delivered ÷ best other (higher is better) | lost (announced / silent / undelivered) | CPU s: server / harness | other CPU |",
                self.round_heading()
            );
            let _ = writeln!(
                s,
                "|{}---:|---|---:|---:|---:|---|---:|---:|",
                self.round_rule()
            );
            for r in &self.throughput {
                let others: Vec<f64> = self
                    .throughput
                    .iter()
                    .filter(|o| {
                        o.readers == r.readers && o.round == r.round && o.system != r.system
                    })
                    .map(|o| o.delivered_eps)
                    .collect();
                let t = &r.totals;
                let _ = writeln!(
                    s,
                    "| {}{} | {} | {} | {} | {} | {} ({} / {} / {}) | {:.1} / {:.1} | {:.2} |",
                    self.round_cell(r.round),
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
                 stamped at send; master-events sending {}), produce → receipt over all \
                 readers, after a {:.1} s warm-up.\n",
                eps(st.latency_eps),
                st.latency_secs,
                st.master_events_ingest.describe(),
                st.warmup_secs
            );
            if self.rounds() {
                self.latency_summary(&mut s);
            }
            let _ = writeln!(
                s,
                "| {}K | system | achieved ev/s | samples | p50 | p99 | p99.9 | max | p99 ÷ best other (lower is better) | lost | CPU s: server / harness | other CPU |",
                self.round_heading()
            );
            let _ = writeln!(
                s,
                "|{}---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
                self.round_rule()
            );
            for r in &self.latency {
                let others: Vec<f64> = self
                    .latency
                    .iter()
                    .filter(|o| {
                        o.readers == r.readers && o.round == r.round && o.system != r.system
                    })
                    .map(|o| o.p99_us)
                    .collect();
                let _ = writeln!(
                    s,
                    "| {}{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} / {:.1} | {:.2} |",
                    self.round_cell(r.round),
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
                 producing twice that many events (so the store is full and evicting), read \
                 once it settles (at least 3 s, then two looks within 0.5%); line bytes = \
                 retained × mean line length. Own account: what this project's archive says \
                 its lines take in memory (older blocks compressed), Redis's `MEMORY USAGE` \
                 of the stream, the JetStream stream's bytes \
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

        if !self.watchers.is_empty() {
            let _ = writeln!(
                s,
                "## Watchers: very many streams at once\n\nThat many streams open at once \
                 (from 127.0.0.2, 127.0.0.3, ...; master-events: \
                 `GET /diag/masterEvents?start=now&heartbeat=0`, Redis: a connection looping \
                 on `XREAD BLOCK 0`, NATS: a connection with one `SUB`; with several streams a \
                 connection, master-events' are HTTP/2 streams and NATS's are `SUB`s on one \
                 connection, and Redis is not run), then one producer at a slow rate; every stream must get every event, in order, each once. Latency \
                 is produce → receipt of the stamped events over all streams.\n"
            );
            let _ = writeln!(
                s,
                "| system | streams open / asked | connections (streams each) | opened in | ev/s offered | events | streams with every event | p50 | p99 | max | RSS before → idle → after | per idle stream | CPU s: server / harness |"
            );
            let _ = writeln!(
                s,
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"
            );
            for r in &self.watchers {
                let _ = writeln!(
                    s,
                    "| {} | {} / {} | {} ({}) | {:.1} s | {} | {} | {} | {} | {} | {} | {} → {} → {} | {} | {:.1} / {:.1} |",
                    r.system.name(),
                    r.opened,
                    r.streams,
                    r.connections,
                    r.per_connection,
                    r.open_secs,
                    r.rate_eps,
                    r.produced,
                    r.complete,
                    us(r.p50_us),
                    us(r.p99_us),
                    us(r.max_us),
                    bytes(r.rss_before as f64),
                    bytes(r.rss_idle as f64),
                    bytes(r.rss_after as f64),
                    bytes(r.bytes_per_stream),
                    r.server_cpu_secs,
                    r.harness_cpu_secs
                );
                if let Some(e) = &r.first_error {
                    let _ = writeln!(s, "\nFirst fault: {}", e.replace('\n', " "));
                }
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
    use crate::tally::Totals;

    #[test]
    fn ratios_point_the_right_way() {
        assert_eq!(vs_best(2.0, &[1.0, 0.5], true), "2.00×");
        assert_eq!(vs_best(2.0, &[1.0, 4.0], false), "2.00×");
        assert_eq!(vs_best(2.0, &[], true), "–");
        assert_eq!(vs_best(2.0, &[f64::NAN], true), "–");
    }

    #[test]
    fn median_row_is_the_middle_and_the_worse_of_two_middles() {
        let v = [1.0, 3.0, 2.0];
        let rows: Vec<&f64> = v.iter().collect();
        assert_eq!(median_row(&rows, |x| *x, true), Some(&2.0));
        assert_eq!(median_row(&rows, |x| *x, false), Some(&2.0));
        let two = [1.0, 2.0];
        let rows: Vec<&f64> = two.iter().collect();
        assert_eq!(median_row(&rows, |x| *x, true), Some(&1.0));
        assert_eq!(median_row(&rows, |x| *x, false), Some(&2.0));
        let nan = [f64::NAN, 5.0, 6.0];
        let rows: Vec<&f64> = nan.iter().collect();
        assert_eq!(median_row(&rows, |x| *x, true), Some(&5.0));
        assert_eq!(median_row(&rows, |x| *x, false), Some(&6.0));
        assert_eq!(median_row::<f64>(&[], |x| *x, true), None);
    }

    fn results(repeat: usize) -> Results {
        Results {
            command: "master-events-bench".into(),
            started_unix: 0,
            elapsed_secs: 1.0,
            machine: Machine {
                cpus: 2,
                cpu_model: "test".into(),
                mem_gib: 1.0,
                kernel: "6".into(),
                redis_version: None,
                nats_version: None,
            },
            loadavg_start: String::new(),
            loadavg_end: String::new(),
            mix: MixSummary {
                events: 1,
                types: 1,
                mean_line_bytes: 200.0,
                min_line_bytes: 200,
                max_line_bytes: 200,
                stamped_fraction: 0.2,
            },
            settings: Settings {
                quick: false,
                throughput_secs: 1.0,
                latency_secs: 1.0,
                warmup_secs: 0.1,
                readers: vec![1],
                latency_eps: 10_000.0,
                retain: 10,
                idle_connections: 10,
                batch: 10,
                window: 2,
                master_events_ingest: crate::systems::IngestMode::Requests,
                repeat,
                nofile: 1024,
            },
            throughput: Vec::new(),
            latency: Vec::new(),
            retained: Vec::new(),
            idle: Vec::new(),
            watchers: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn throughput(system: Kind, round: usize, delivered: f64, silent: u64) -> ThroughputRow {
        ThroughputRow {
            system,
            round,
            readers: 1,
            produce_secs: 1.0,
            produced: 100,
            producer_eps: delivered,
            totals: Totals {
                silent,
                ..Totals::default()
            },
            delivered_eps: delivered,
            lost: silent,
            other_cpu: 0.0,
            server_cpu_secs: 1.0,
            harness_cpu_secs: 1.0,
            load1: 0.0,
        }
    }

    #[test]
    fn rounds_lead_with_each_systems_median_and_sum_losses_over_all_rounds() {
        let mut r = results(3);
        for (round, me, nats, lost) in [
            (1, 1.2e6, 0.9e6, 0),
            (2, 0.8e6, 1.0e6, 7),
            (3, 1.0e6, 0.5e6, 0),
        ] {
            r.throughput
                .push(throughput(Kind::MasterEvents, round, me, 0));
            r.throughput.push(throughput(Kind::Nats, round, nats, lost));
        }
        let md = r.markdown();
        let line = |system: &str| {
            md.lines()
                .find(|l| l.starts_with(&format!("| 1 | {system} | 3 |")))
                .unwrap_or_else(|| panic!("no summary line for {system} in\n{md}"))
                .to_owned()
        };
        // master-events: median 1.00 M of 0.8–1.2 M, against NATS's median 0.9 M.
        assert!(
            line("master-events").contains("| 1.00 M | 800 k–1.20 M | 1.11× |"),
            "{md}"
        );
        // NATS lost 7 in one round: the summary shows it although its median round lost none.
        assert!(line("nats").contains("| 7 (0 / 7 / 0) |"), "{md}");
        // Every round is listed too, each compared with the same round's other system.
        assert!(
            md.contains("| 2 | 1 | master-events | 800 k | 800 k | 0.80× |"),
            "{md}"
        );
    }

    #[test]
    fn one_round_keeps_the_plain_table() {
        let mut r = results(1);
        r.throughput
            .push(throughput(Kind::MasterEvents, 1, 1.2e6, 0));
        r.throughput.push(throughput(Kind::Nats, 1, 0.6e6, 0));
        let md = r.markdown();
        assert!(!md.contains("Medians of"), "{md}");
        assert!(
            md.contains("| 1 | master-events | 1.20 M | 1.20 M | 2.00× |"),
            "{md}"
        );
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
