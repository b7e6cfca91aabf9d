//! The kit, run against the built-in `stdout` sink, built from its TOML but
//! writing into a capture that can hang (a writer that blocks while stalled).

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use master_events_router::sinks::stdout::{StdoutConfig, StdoutSink};
use master_events_router::{ConfigError, Sink, SinkContext};
use master_events_sinktest::{observe_ndjson, Observed, Target};

#[derive(Default)]
struct State {
    bytes: Vec<u8>,
    stalled: bool,
}

#[derive(Clone, Default)]
struct Capture(Arc<(Mutex<State>, Condvar)>);

impl Capture {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0 .0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut st = self.lock();
        while st.stalled {
            st = self.0 .1.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Target for Capture {
    fn config(&self) -> String {
        "format = \"json\"".into()
    }

    fn observed(&self) -> Vec<Observed> {
        observe_ndjson(&self.lock().bytes)
    }

    fn stall(&self) {
        self.lock().stalled = true;
    }

    fn resume(&self) {
        self.lock().stalled = false;
        self.0 .1.notify_all();
    }

    fn build(
        &self,
        settings: toml::Value,
        _ctx: &SinkContext,
    ) -> Option<Result<Box<dyn Sink>, ConfigError>> {
        Some(
            settings
                .try_into::<StdoutConfig>()
                .map_err(|e| ConfigError::Invalid(e.to_string()))
                .map(|config| {
                    Box::new(StdoutSink::new(config.format, Box::new(self.clone())))
                        as Box<dyn Sink>
                }),
        )
    }
}

master_events_sinktest::kit_tests!(sink = "stdout", target = Capture::default());
