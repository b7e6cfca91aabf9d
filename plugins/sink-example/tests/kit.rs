//! The sink test kit, run against the example `tsv` sink (a FIFO stands in for
//! its file, so that a stall really blocks its writes).

// Links the crate, so that its registration is there.
use master_events_sink_example as _;
use master_events_sinktest::fifo::Fifo;
use master_events_sinktest::{Observed, Target};

struct TsvTarget(Fifo);

impl Target for TsvTarget {
    fn config(&self) -> String {
        format!("path = {:?}", self.0.path())
    }

    /// `seq<TAB>type<TAB>...` is an event, `#gap<TAB>from<TAB>to<TAB>reason` a gap.
    fn observed(&self) -> Vec<Observed> {
        let bytes = self.0.bytes();
        let text = String::from_utf8_lossy(&bytes);
        text.split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .filter_map(|line| {
                let cols: Vec<&str> = line.trim_end_matches('\n').split('\t').collect();
                match cols.as_slice() {
                    ["#gap", from, to, ..] => Some(Observed::Gap {
                        from_seq: from.parse().ok()?,
                        to_seq: to.parse().ok()?,
                    }),
                    [seq, event_type, ..] => Some(Observed::Event {
                        seq: seq.parse().ok()?,
                        event_type: (*event_type).to_owned(),
                    }),
                    _ => None,
                }
            })
            .collect()
    }

    fn stall(&self) {
        self.0.stall();
    }

    fn resume(&self) {
        self.0.resume();
    }
}

master_events_sinktest::kit_tests!(
    sink = "tsv",
    target = TsvTarget(Fifo::new("events.tsv").expect("a FIFO"))
);
