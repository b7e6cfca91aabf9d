//! The sink test kit's summary checks, run against the example `counts` sink (a FIFO
//! stands in for its file, so that a stall really blocks its writes).

// Links the crate, so that its registration is there.
use master_events_sink_example as _;
use master_events_sinktest::fifo::Fifo;
use master_events_sinktest::{SummaryTarget, Totals};

struct CountsTarget(Fifo);

impl SummaryTarget for CountsTarget {
    /// Reports every 20 ms, so that the kit's waits are short.
    fn config(&self) -> String {
        format!("path = {:?}\nevery_ms = 20", self.0.path())
    }

    /// The last complete line: `{"last_seq":N,"missed":M,"counts":{TYPE:N,...}}`.
    fn totals(&self) -> Option<Totals> {
        let bytes = self.0.bytes();
        let text = String::from_utf8_lossy(&bytes);
        let last = text.split_inclusive('\n').rfind(|l| l.ends_with('\n'))?;
        let report: serde_json::Value = serde_json::from_str(last).ok()?;
        let counts = report["counts"]
            .as_object()?
            .iter()
            .map(|(t, n)| Some((t.clone(), n.as_u64()?)))
            .collect::<Option<_>>()?;
        Some(Totals {
            counts,
            missed: report["missed"].as_u64()?,
        })
    }

    fn stall(&self) {
        self.0.stall();
    }

    fn resume(&self) {
        self.0.resume();
    }
}

master_events_sinktest::summary_kit_tests!(
    sink = "counts",
    target = CountsTarget(Fifo::new("counts.ndjson").expect("a FIFO"))
);

/// A period of zero is refused when the sink is built, naming the key.
#[tokio::test]
async fn every_ms_of_zero_is_refused_saying_what_to_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "[[sinks]]\ntype = \"counts\"\npath = {:?}\nevery_ms = 0\n",
        dir.path().join("c.ndjson")
    );
    let config = master_events_router::load_config(&text).expect("the keys are known");
    let router = master_events_router::Router::start(master_events_router::RouterConfig::default());
    let ctx = master_events_router::SinkContext::new(&router, 0);
    let entry = &config.sinks[0];
    let built = (entry.registration().build)(toml::Value::Table(entry.settings.clone()), &ctx);
    let Err(e) = built else {
        panic!("every_ms = 0 was accepted")
    };
    assert!(e.to_string().contains("every_ms"), "{e}");
}
