//! The sink test kit, run against the `file` sink. The target is a FIFO in place of
//! the log file: what the sink writes is read back as it comes, and a stall is a
//! reader that stops reading, so the sink's writes really block (as on a hung disk).

// Links the crate, so that its registration is there (an unreferenced crate's is not).
use master_events_sink_file as _;
use master_events_sinktest::fifo::Fifo;
use master_events_sinktest::{observe_ndjson, Observed, Target};

struct LogTarget(Fifo);

impl LogTarget {
    fn new() -> LogTarget {
        LogTarget(Fifo::new(master_events_sink_file::DEFAULT_FILE_NAME).expect("a FIFO"))
    }
}

impl Target for LogTarget {
    fn config(&self) -> String {
        // A FIFO cannot be synced: the policy is the OS's here.
        format!("dir = {:?}\nfsync = \"never\"", self.0.dir())
    }

    fn observed(&self) -> Vec<Observed> {
        observe_ndjson(&self.0.bytes())
    }

    fn stall(&self) {
        self.0.stall();
    }

    fn resume(&self) {
        self.0.resume();
    }
}

master_events_sinktest::kit_tests!(sink = "file", target = LogTarget::new());
