//! The checker: what the cluster promised, against what the load saw and what
//! the nodes hold at the end.
//!
//! Owns: the invariants and the figures of one scenario, computed from the nodes'
//! final `?o=1` archives, every POST's reply, the consumer's stream, the node kills
//! and the master monitor's samples. Pure: no I/O, so every invariant is tested on
//! hand-made inputs.
//!
//! Invariants (each failure names the invariant, with counts and examples):
//! - `identical_archives`: every node's `?o=1` is byte-identical.
//! - `acknowledged_exactly_once`: every event answered `200` is in every archive,
//!   and no marker is in any archive twice.
//! - `queued_sequenced_or_reported`: every event answered `202` is in the archive.
//!   The suite runs its nodes with `--queue-dir`, so a SIGKILL of the node that
//!   queued it excuses nothing; without a journal (`Inputs::journaled` false) such
//!   an event is counted as lost with its node, not a failure.
//! - `per_origin_order`: along the archive, each origin's `originSeq` grows, and
//!   each writer's events from one origin keep the order it sent them in.
//! - `consumer_no_duplicate`, `consumer_no_silent_hole`: the consumer's seqs only
//!   grow, each by one unless a `gap` frame reported the hole; no marker twice;
//!   every event it received is the archive's at that seq; it reached the end. A
//!   `reset` frame (the reader's history is gone) starts the count over; resets
//!   are reported as a figure.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::load::{parse_marker, Consumed, MasterSample, Outcome, Write};

/// One archive line, the fields the checker reads.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// The cluster cursor.
    pub seq: u64,
    /// When it was sequenced.
    pub ts: f64,
    /// The node that noted it.
    pub origin: String,
    /// Its position among that node's events.
    pub origin_seq: u64,
    /// The writer's marker, for the suite's own events.
    pub marker: Option<String>,
}

/// Parses a `?o=1` body; lines that do not parse are counted, not fatal.
pub fn parse_archive(bytes: &[u8]) -> (Vec<Line>, usize) {
    let mut lines = Vec::new();
    let mut bad = 0;
    for raw in bytes.split(|b| *b == b'\n') {
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(raw) else {
            bad += 1;
            continue;
        };
        let Some(seq) = v["seq"].as_u64() else {
            bad += 1;
            continue;
        };
        lines.push(Line {
            seq,
            ts: v["ts"].as_f64().unwrap_or(0.0),
            origin: v["origin"].as_str().unwrap_or("").to_owned(),
            origin_seq: v["originSeq"].as_u64().unwrap_or(0),
            marker: v["event"]
                .as_str()
                .filter(|e| e.starts_with("chaos:"))
                .map(str::to_owned),
        });
    }
    (lines, bad)
}

/// Everything the checker looks at for one scenario.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// Each node's name and final `?o=1` body.
    pub archives: Vec<(String, Vec<u8>)>,
    /// Which archive is the reference (the final master's).
    pub reference: usize,
    /// Every POST and its reply.
    pub writes: Vec<Write>,
    /// What the consumer received.
    pub consumed: Consumed,
    /// `(node, when)` of every SIGKILL of a node.
    pub kills: Vec<(usize, f64)>,
    /// The master monitor's samples.
    pub samples: Vec<MasterSample>,
    /// When the writers started and stopped, seconds since the epoch.
    pub load: (f64, f64),
    /// Whether the nodes journal their queue (`serve --queue-dir`): then an event
    /// answered `202` must be sequenced even if its node was SIGKILLed.
    pub journaled: bool,
}

/// A stretch of time with no node saying it is master.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Window {
    /// Seconds after the first sample.
    pub start: f64,
    /// How long, seconds.
    pub secs: f64,
}

/// The checker's figures and verdict for one scenario.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Verdict {
    /// Events answered `200`.
    pub acknowledged: usize,
    /// Events answered `202`.
    pub queued: usize,
    /// Events with another answer or none.
    pub unanswered: usize,
    /// Acknowledged events missing from some archive (the worst node).
    pub lost: usize,
    /// Markers present more than once in some archive (the worst node).
    pub duplicated: usize,
    /// `202`'d events in no archive, their node never killed.
    pub queued_never_sequenced: usize,
    /// `202`'d events in no archive whose node was SIGKILLed after the reply.
    pub queued_lost_with_node: usize,
    /// Unanswered events that were sequenced anyway.
    pub unanswered_sequenced: usize,
    /// Lines in the reference archive.
    pub archive_lines: usize,
    /// Whether the nodes' archives differ.
    pub divergent: bool,
    /// How they differ, per node against the reference.
    pub divergence: Vec<String>,
    /// Breaches of per-origin order.
    pub order_violations: usize,
    /// Events the consumer received.
    pub consumer_events: usize,
    /// Events the consumer received twice (by seq or marker).
    pub consumer_duplicates: usize,
    /// Seq jumps the consumer saw with no `gap` frame.
    pub consumer_silent_holes: usize,
    /// `gap` frames the consumer got.
    pub consumer_gaps_reported: usize,
    /// `reset` frames the consumer got (its history was gone; the stream started
    /// over from the archive's start).
    pub consumer_resets: usize,
    /// Events the consumer received that differ from the archive's at that seq.
    pub consumer_mismatches: usize,
    /// The consumer's last seq, and the reference archive's.
    pub consumer_last_seq: (u64, u64),
    /// The longest time, seconds, between consecutive sequenced events while the
    /// writers ran (the load's start and end count as events).
    pub longest_stall_secs: f64,
    /// Stretches with no master.
    pub no_master: Vec<Window>,
    /// Their total, seconds.
    pub no_master_secs: f64,
    /// Monitor samples in which two nodes said they were master.
    pub two_master_samples: usize,
    /// Each failed invariant: `name: what`.
    pub failures: Vec<String>,
}

const EXAMPLES: usize = 5;

fn examples<'a>(it: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = it.take(EXAMPLES).map(String::as_str).collect();
    v.join(", ")
}

/// Runs every invariant and computes the figures.
pub fn check(inputs: &Inputs) -> Verdict {
    let mut v = Verdict::default();
    let parsed: Vec<(&str, Vec<Line>, usize)> = inputs
        .archives
        .iter()
        .map(|(name, bytes)| {
            let (lines, bad) = parse_archive(bytes);
            (name.as_str(), lines, bad)
        })
        .collect();
    let reference = inputs.reference.min(parsed.len().saturating_sub(1));
    let empty = Vec::new();
    let ref_lines = parsed.get(reference).map(|p| &p.1).unwrap_or(&empty);
    v.archive_lines = ref_lines.len();

    // identical_archives
    if let Some((ref_name, ref_bytes)) = inputs.archives.get(reference) {
        for (i, (name, bytes)) in inputs.archives.iter().enumerate() {
            if i == reference || bytes == ref_bytes {
                continue;
            }
            v.divergent = true;
            v.divergence
                .push(describe_difference(name, &parsed[i].1, ref_name, ref_lines));
        }
        if v.divergent {
            v.failures
                .push(format!("identical_archives: {}", v.divergence.join("; ")));
        }
    }
    for (name, _, bad) in &parsed {
        if *bad > 0 {
            v.failures.push(format!(
                "identical_archives: {name}: {bad} unparsable lines"
            ));
        }
    }

    // acknowledged_exactly_once, queued_sequenced_or_reported
    let mut acked: Vec<&String> = Vec::new();
    let mut queued: Vec<(&String, usize, f64)> = Vec::new();
    let mut unanswered: Vec<&String> = Vec::new();
    for w in &inputs.writes {
        for m in &w.markers {
            match w.outcome {
                Outcome::Acked => acked.push(m),
                Outcome::Queued => queued.push((m, w.node, w.replied_at)),
                _ => unanswered.push(m),
            }
        }
    }
    v.acknowledged = acked.len();
    v.queued = queued.len();
    v.unanswered = unanswered.len();
    for (name, lines, _) in &parsed {
        let mut count: HashMap<&str, usize> = HashMap::new();
        for l in lines {
            if let Some(m) = &l.marker {
                *count.entry(m.as_str()).or_default() += 1;
            }
        }
        let lost: Vec<&String> = acked
            .iter()
            .copied()
            .filter(|m| !count.contains_key(m.as_str()))
            .collect();
        let mut twice: Vec<String> = count
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(m, n)| format!("{m} ×{n}"))
            .collect();
        twice.sort();
        if !lost.is_empty() {
            v.failures.push(format!(
                "acknowledged_exactly_once: {name}: {} acknowledged events missing (e.g. {})",
                lost.len(),
                examples(lost.iter().copied())
            ));
        }
        if !twice.is_empty() {
            v.failures.push(format!(
                "acknowledged_exactly_once: {name}: {} events present more than once (e.g. {})",
                twice.len(),
                examples(twice.iter())
            ));
        }
        v.lost = v.lost.max(lost.len());
        v.duplicated = v.duplicated.max(twice.len());
    }
    let in_ref: HashSet<&str> = ref_lines
        .iter()
        .filter_map(|l| l.marker.as_deref())
        .collect();
    let mut never: Vec<&String> = Vec::new();
    for (m, node, at) in &queued {
        if in_ref.contains(m.as_str()) {
            continue;
        }
        if !inputs.journaled && inputs.kills.iter().any(|(n, t)| n == node && t >= at) {
            v.queued_lost_with_node += 1;
        } else {
            never.push(m);
        }
    }
    v.queued_never_sequenced = never.len();
    if !never.is_empty() {
        v.failures.push(format!(
            "queued_sequenced_or_reported: {} events answered 202 were never sequenced, their node never killed (e.g. {})",
            never.len(),
            examples(never.into_iter())
        ));
    }
    v.unanswered_sequenced = unanswered
        .iter()
        .filter(|m| in_ref.contains(m.as_str()))
        .count();

    // per_origin_order
    let mut breaches: Vec<String> = Vec::new();
    let mut last_origin_seq: HashMap<&str, u64> = HashMap::new();
    let mut last_k: HashMap<(&str, &str), u64> = HashMap::new();
    for l in ref_lines {
        // A master's becameMaster has no originSeq: it is noted by the master as it
        // takes over, never queued nor re-sent.
        if l.origin_seq == 0 {
            continue;
        }
        if let Some(prev) = last_origin_seq.insert(&l.origin, l.origin_seq) {
            if prev >= l.origin_seq {
                breaches.push(format!(
                    "seq {}: {} originSeq {} after {prev}",
                    l.seq, l.origin, l.origin_seq
                ));
            }
        }
        if let Some((writer, k)) = l.marker.as_deref().and_then(parse_marker) {
            if let Some(prev) = last_k.insert((writer, l.origin.as_str()), k) {
                if prev >= k {
                    breaches.push(format!(
                        "seq {}: {writer} via {}: event {k} after {prev}",
                        l.seq, l.origin
                    ));
                }
            }
        }
    }
    v.order_violations = breaches.len();
    if !breaches.is_empty() {
        v.failures.push(format!(
            "per_origin_order: {} breaches (e.g. {})",
            breaches.len(),
            examples(breaches.iter())
        ));
    }

    check_consumer(inputs, ref_lines, &mut v);

    // The longest sequencing stall while the writers ran.
    let (from, to) = inputs.load;
    let mut points: Vec<f64> = ref_lines
        .iter()
        .map(|l| l.ts)
        .filter(|ts| *ts >= from && *ts <= to)
        .collect();
    points.push(from);
    points.push(to);
    points.sort_by(f64::total_cmp);
    v.longest_stall_secs = points.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);

    // Stretches without a master.
    let t0 = inputs.samples.first().map(|s| s.at).unwrap_or(0.0);
    let mut open: Option<f64> = None;
    for s in &inputs.samples {
        match (s.masters, open) {
            (0, None) => open = Some(s.at),
            (n, Some(start)) if n > 0 => {
                v.no_master.push(Window {
                    start: start - t0,
                    secs: s.at - start,
                });
                open = None;
            }
            _ => {}
        }
        if s.masters > 1 {
            v.two_master_samples += 1;
        }
    }
    if let (Some(start), Some(last)) = (open, inputs.samples.last()) {
        v.no_master.push(Window {
            start: start - t0,
            secs: last.at - start,
        });
    }
    v.no_master_secs = v.no_master.iter().fold(0.0, |sum, w| sum + w.secs);
    v
}

fn check_consumer(inputs: &Inputs, ref_lines: &[Line], v: &mut Verdict) {
    let c = &inputs.consumed;
    v.consumer_events = c.events.len();
    v.consumer_gaps_reported = c.gaps.len();
    v.consumer_resets = c.resets.len();
    let by_seq: BTreeMap<u64, &Option<String>> =
        ref_lines.iter().map(|l| (l.seq, &l.marker)).collect();
    let mut dups: Vec<String> = Vec::new();
    let mut holes: Vec<String> = Vec::new();
    let mut mismatches: Vec<String> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut prev: Option<u64> = None;
    for (i, (seq, marker)) in c.events.iter().enumerate() {
        if c.resets.contains(&i) {
            // The server said the reader's history is gone; the stream starts over.
            prev = None;
            seen.clear();
        }
        // An event counts once as a duplicate, by seq or by marker.
        let again = marker.as_ref().is_some_and(|m| !seen.insert(m.as_str()));
        if let Some(p) = prev {
            if *seq <= p {
                dups.push(format!("seq {seq} after {p}"));
            } else if again {
                dups.push(format!("{marker:?} again at seq {seq}"));
            } else if *seq > p + 1 {
                let reported = c
                    .gaps
                    .iter()
                    .any(|(from, to)| *from <= p + 1 && *to >= seq - 1);
                if !reported {
                    holes.push(format!("{} to {}", p + 1, seq - 1));
                }
            }
        }
        prev = Some(prev.map_or(*seq, |p| p.max(*seq)));
        match by_seq.get(seq) {
            Some(expected) if *expected == marker => {}
            Some(expected) => mismatches.push(format!(
                "seq {seq}: got {marker:?}, the archive has {expected:?}"
            )),
            None => mismatches.push(format!("seq {seq}: not in the archive")),
        }
    }
    let last_ref = ref_lines.last().map(|l| l.seq).unwrap_or(0);
    v.consumer_last_seq = (c.last_seq(), last_ref);
    v.consumer_duplicates = dups.len();
    v.consumer_silent_holes = holes.len();
    v.consumer_mismatches = mismatches.len();
    if !dups.is_empty() {
        v.failures.push(format!(
            "consumer_no_duplicate: {} duplicates (e.g. {})",
            dups.len(),
            examples(dups.iter())
        ));
    }
    if !holes.is_empty() {
        v.failures.push(format!(
            "consumer_no_silent_hole: {} unreported holes (e.g. seqs {})",
            holes.len(),
            examples(holes.iter())
        ));
    }
    if !mismatches.is_empty() {
        v.failures.push(format!(
            "consumer_no_silent_hole: {} events differ from the final archive (e.g. {})",
            mismatches.len(),
            examples(mismatches.iter())
        ));
    }
    if c.last_seq() < last_ref {
        v.failures.push(format!(
            "consumer_no_silent_hole: the consumer stopped at seq {} of {last_ref}",
            c.last_seq()
        ));
    }
}

/// Where `lines` (node `name`) first differs from the reference, in a sentence.
fn describe_difference(name: &str, lines: &[Line], ref_name: &str, reference: &[Line]) -> String {
    let first = lines.iter().zip(reference).position(|(a, b)| a != b);
    let extra = |lines: &[Line]| lines.last().map(|l| l.seq).unwrap_or(0);
    match first {
        Some(i) => format!(
            "{name} differs from {ref_name} from seq {} ({} lines against {})",
            lines[i].seq,
            lines.len(),
            reference.len()
        ),
        None => format!(
            "{name} has {} lines (last seq {}), {ref_name} {} (last seq {})",
            lines.len(),
            extra(lines),
            reference.len(),
            extra(reference)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::marker;

    fn line(seq: u64, origin: &str, origin_seq: u64, m: Option<&str>) -> String {
        let mut v = serde_json::json!({
            "type": "rebalanceStageEvent", "seq": seq, "ts": 1000.0 + seq as f64,
            "origin": origin, "originSeq": origin_seq, "stage": ["chaos"],
        });
        v["event"] = serde_json::json!(m.unwrap_or("other"));
        format!("{v}\n")
    }

    fn archive(lines: &[(u64, &str, u64, Option<&str>)]) -> Vec<u8> {
        lines
            .iter()
            .map(|(s, o, os, m)| line(*s, o, *os, *m))
            .collect::<String>()
            .into_bytes()
    }

    fn write(node: usize, ks: &[u64], outcome: Outcome, at: f64) -> Write {
        Write {
            node,
            markers: ks.iter().map(|k| marker("w0", *k)).collect(),
            outcome,
            replied_at: at,
        }
    }

    /// Three identical archives holding w0's events 0..3 from n0, a consumer that
    /// saw them all, writes of 0..3 acknowledged.
    fn healthy() -> Inputs {
        let a = archive(&[
            (1, "n0", 1, Some("chaos:w0:0")),
            (2, "n0", 2, Some("chaos:w0:1")),
            (3, "n0", 3, Some("chaos:w0:2")),
        ]);
        let consumed = Consumed {
            events: (1..=3).map(|s| (s, Some(marker("w0", s - 1)))).collect(),
            ..Consumed::default()
        };
        Inputs {
            archives: (0..3).map(|i| (format!("n{i}"), a.clone())).collect(),
            reference: 0,
            writes: vec![write(0, &[0, 1, 2], Outcome::Acked, 1000.0)],
            consumed,
            load: (1000.0, 1004.0),
            ..Inputs::default()
        }
    }

    #[test]
    fn a_healthy_run_passes_every_invariant() {
        let v = check(&healthy());
        assert!(v.failures.is_empty(), "{:?}", v.failures);
        assert_eq!((v.acknowledged, v.lost, v.duplicated), (3, 0, 0));
        assert!((v.longest_stall_secs - 1.0).abs() < 1e-9);
    }

    #[test]
    fn an_acknowledged_event_missing_from_a_node_is_lost_and_divergent() {
        let mut i = healthy();
        i.archives[2].1 = archive(&[
            (1, "n0", 1, Some("chaos:w0:0")),
            (2, "n0", 3, Some("chaos:w0:2")),
        ]);
        let v = check(&i);
        assert_eq!(v.lost, 1);
        assert!(v.divergent);
        assert!(v
            .failures
            .iter()
            .any(|f| f.starts_with("identical_archives")));
        assert!(v
            .failures
            .iter()
            .any(|f| f.starts_with("acknowledged_exactly_once: n2: 1 acknowledged")));
    }

    #[test]
    fn an_event_sequenced_twice_is_a_duplicate() {
        let mut i = healthy();
        let a = archive(&[
            (1, "n0", 1, Some("chaos:w0:0")),
            (2, "n0", 2, Some("chaos:w0:1")),
            (3, "n0", 3, Some("chaos:w0:2")),
            (4, "n1", 9, Some("chaos:w0:2")),
        ]);
        for arch in &mut i.archives {
            arch.1 = a.clone();
        }
        i.consumed.events.push((4, Some(marker("w0", 2))));
        let v = check(&i);
        assert_eq!(v.duplicated, 1);
        assert_eq!(v.consumer_duplicates, 1);
    }

    #[test]
    fn a_202_never_sequenced_fails_unless_its_node_was_killed_later() {
        let mut i = healthy();
        i.writes.push(write(1, &[3], Outcome::Queued, 1002.0));
        let v = check(&i);
        assert_eq!(v.queued_never_sequenced, 1);
        assert!(v
            .failures
            .iter()
            .any(|f| f.starts_with("queued_sequenced_or_reported")));
        i.kills.push((1, 1003.0));
        let v = check(&i);
        assert_eq!((v.queued_never_sequenced, v.queued_lost_with_node), (0, 1));
        assert!(v.failures.is_empty(), "{:?}", v.failures);
        // With a journaled queue, a SIGKILL excuses nothing.
        i.journaled = true;
        let v = check(&i);
        assert_eq!((v.queued_never_sequenced, v.queued_lost_with_node), (1, 0));
        assert!(!v.failures.is_empty());
    }

    #[test]
    fn events_out_of_order_within_an_origin_are_reported() {
        let mut i = healthy();
        let a = archive(&[
            (1, "n0", 1, Some("chaos:w0:1")),
            (2, "n0", 2, Some("chaos:w0:0")),
            (3, "n0", 3, Some("chaos:w0:2")),
        ]);
        for arch in &mut i.archives {
            arch.1 = a.clone();
        }
        i.consumed.events = vec![
            (1, Some(marker("w0", 1))),
            (2, Some(marker("w0", 0))),
            (3, Some(marker("w0", 2))),
        ];
        let v = check(&i);
        assert_eq!(v.order_violations, 1);
    }

    #[test]
    fn a_consumer_hole_is_silent_unless_a_gap_frame_covers_it() {
        let mut i = healthy();
        i.consumed.events.remove(1);
        let v = check(&i);
        assert_eq!(v.consumer_silent_holes, 1);
        i.consumed.gaps.push((2, 2));
        let v = check(&i);
        assert_eq!(v.consumer_silent_holes, 0);
        assert_eq!(v.consumer_gaps_reported, 1);
    }

    #[test]
    fn a_stream_that_starts_over_after_a_reset_frame_is_no_duplicate() {
        let mut i = healthy();
        i.consumed.resets.push(3);
        i.consumed
            .events
            .extend((1..=3).map(|s| (s, Some(marker("w0", s - 1)))));
        let v = check(&i);
        assert_eq!((v.consumer_duplicates, v.consumer_resets), (0, 1));
        i.consumed.resets.clear();
        assert_eq!(check(&i).consumer_duplicates, 3);
    }

    #[test]
    fn a_consumer_that_saw_another_event_at_a_seq_is_a_mismatch() {
        let mut i = healthy();
        i.consumed.events[2].1 = Some(marker("w9", 0));
        let v = check(&i);
        assert_eq!(v.consumer_mismatches, 1);
        assert!(!v.failures.is_empty());
    }

    #[test]
    fn time_without_a_master_adds_up_the_monitor_windows() {
        let mut i = healthy();
        i.samples = [1, 0, 0, 1, 1, 0, 2]
            .iter()
            .enumerate()
            .map(|(k, m)| MasterSample {
                at: k as f64,
                masters: *m,
            })
            .collect();
        let v = check(&i);
        assert_eq!(
            v.no_master,
            vec![
                Window {
                    start: 1.0,
                    secs: 2.0
                },
                Window {
                    start: 5.0,
                    secs: 1.0
                }
            ]
        );
        assert!((v.no_master_secs - 3.0).abs() < 1e-9);
        assert_eq!(v.two_master_samples, 1);
    }
}
