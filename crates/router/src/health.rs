//! What each running sink says about itself: ok, retrying or failing (with the
//! reason), and how often it panicked and was restarted.
//!
//! Owns: [`SinkHealth`], one per configured sink, handed to the sink's build function
//! through [`crate::SinkContext::health`] and kept by the [`crate::SinkSet`], so the
//! server can show every sink's state (`/cluster`, `/metrics`) without knowing the
//! sinks.
//!
//! Promises:
//! - A change of state is logged once, at the level an operator sees: `retrying` at
//!   WARN, `failing` at ERROR, back to `ok` at INFO ("recovered") — never once per
//!   retry. Reporting the same state again (even with a new reason) logs nothing,
//!   except that a sink retrying for a new cause ([`SinkHealth::retrying_because`]:
//!   another failing step, not other words for the same one) is a WARN again.
//! - Reading a snapshot never blocks a sink for longer than a copy of its reason.
//! - The reason is the sink's own words; a sink must not put a secret in it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use serde::Serialize;

/// The state a sink reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SinkState {
    /// Delivering.
    Ok,
    /// Delivery fails for now and is retried; nothing is lost yet.
    Retrying,
    /// Delivery fails and events are being (or were) dropped, or the sink stopped.
    Failing,
    /// Not running here, by configuration: a sink that runs on the master only, on a
    /// node that is not the master. Nothing is lost: the master's copy delivers.
    Standby,
}

impl SinkState {
    /// The state's name as shown in `/cluster` and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkState::Ok => "ok",
            SinkState::Retrying => "retrying",
            SinkState::Failing => "failing",
            SinkState::Standby => "standby",
        }
    }
}

struct Current {
    state: SinkState,
    reason: Option<String>,
    since: Instant,
    /// The cause named by the last [`SinkHealth::retrying_because`] while retrying.
    cause: Option<String>,
}

/// One sink's health: its state, the reason, and its panics (cheap to share).
pub struct SinkHealth {
    name: String,
    index: usize,
    current: Mutex<Current>,
    panics: AtomicU64,
}

/// A copy of a sink's health, for `/cluster` and metrics.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SinkStatus {
    /// The sink's `type`.
    pub name: String,
    /// Its position in the configuration's `[[sinks]]`.
    pub index: usize,
    /// Its state.
    pub state: SinkState,
    /// Why it is not ok (absent when ok).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Seconds since it entered this state.
    pub for_secs: f64,
    /// How many times it panicked (and was restarted) since the process started.
    pub panics: u64,
}

impl SinkHealth {
    /// The health of the sink `name` at `index` of the configuration, `ok`.
    pub fn new(name: impl Into<String>, index: usize) -> SinkHealth {
        SinkHealth {
            name: name.into(),
            index,
            current: Mutex::new(Current {
                state: SinkState::Ok,
                reason: None,
                since: Instant::now(),
                cause: None,
            }),
            panics: AtomicU64::new(0),
        }
    }

    /// The sink's `type`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Delivering again (logs "recovered" at INFO when it was not ok).
    pub fn ok(&self) {
        self.set(SinkState::Ok, None);
    }

    /// Delivery fails for now and is retried (logs at WARN on the change).
    pub fn retrying(&self, reason: impl Into<String>) {
        self.set(SinkState::Retrying, Some(reason.into()));
    }

    /// [`SinkHealth::retrying`], and a WARN also when `cause` (a short, stable name of
    /// what fails, e.g. the failing step) is not the one named last: a sink that
    /// keeps failing for a new reason says so, one WARN per cause, however often it
    /// retries. `reason` is the whole story, which may vary from try to try.
    pub fn retrying_because(&self, cause: &str, reason: impl Into<String>) {
        let reason = reason.into();
        {
            let mut current = self.current.lock();
            if current.state == SinkState::Retrying && current.cause.as_deref() != Some(cause) {
                current.cause = Some(cause.to_owned());
                current.reason = Some(reason.clone());
                drop(current);
                tracing::warn!(sink = %self.name, index = self.index, %reason, "sink retrying, for another cause");
                return;
            }
            current.cause = Some(cause.to_owned());
        }
        self.retrying(reason);
    }

    /// Delivery fails and events are lost, or the sink stopped (logs at ERROR on the
    /// change).
    pub fn failing(&self, reason: impl Into<String>) {
        self.set(SinkState::Failing, Some(reason.into()));
    }

    /// Not running on this node by configuration (logs at INFO on the change).
    pub fn standby(&self, reason: impl Into<String>) {
        self.set(SinkState::Standby, Some(reason.into()));
    }

    /// The current state.
    pub fn state(&self) -> SinkState {
        self.current.lock().state
    }

    /// Counts a panic of the sink (the supervisor restarts it).
    pub(crate) fn panicked(&self) -> u64 {
        self.panics.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// How many times the sink panicked.
    pub fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }

    /// A copy of the current health.
    pub fn snapshot(&self) -> SinkStatus {
        let current = self.current.lock();
        SinkStatus {
            name: self.name.clone(),
            index: self.index,
            state: current.state,
            reason: current.reason.clone(),
            for_secs: current.since.elapsed().as_secs_f64(),
            panics: self.panics(),
        }
    }

    fn set(&self, state: SinkState, reason: Option<String>) {
        let mut current = self.current.lock();
        let changed = current.state != state;
        current.reason = reason;
        if state != SinkState::Retrying {
            current.cause = None;
        }
        if !changed {
            return;
        }
        let before = current.state;
        current.state = state;
        current.since = Instant::now();
        let reason = current.reason.clone().unwrap_or_default();
        drop(current);
        let (sink, index) = (self.name.as_str(), self.index);
        match state {
            SinkState::Ok => tracing::info!(sink, index, was = before.as_str(), "sink recovered"),
            SinkState::Retrying => tracing::warn!(sink, index, %reason, "sink retrying"),
            SinkState::Failing => tracing::error!(sink, index, %reason, "sink failing"),
            SinkState::Standby => tracing::info!(sink, index, %reason, "sink on standby"),
        }
    }
}

impl std::fmt::Debug for SinkHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkHealth")
            .field("name", &self.name)
            .field("index", &self.index)
            .field("state", &self.state())
            .field("panics", &self.panics())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_change_is_kept_with_its_reason_and_a_repeat_keeps_the_time() {
        let h = SinkHealth::new("file", 2);
        assert_eq!(h.snapshot().state, SinkState::Ok);
        h.retrying("No space left on device (os error 28)");
        let first = h.snapshot();
        assert_eq!(first.state, SinkState::Retrying);
        assert_eq!(
            first.reason.as_deref(),
            Some("No space left on device (os error 28)")
        );
        h.retrying("still full");
        let again = h.snapshot();
        assert_eq!(again.reason.as_deref(), Some("still full"));
        assert!(
            again.for_secs >= first.for_secs,
            "the same state keeps its start"
        );
        h.ok();
        let ok = h.snapshot();
        assert_eq!((ok.state, ok.reason), (SinkState::Ok, None));
        let json = serde_json::to_value(h.snapshot()).expect("serialises");
        assert_eq!(json["state"], "ok");
        assert_eq!(json["name"], "file");
    }

    /// Every log line written while `f` runs, as text.
    fn logged(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buffer(std::sync::Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8_lossy(&buffer.0.lock()).into_owned();
        text
    }

    #[test]
    fn a_new_cause_is_one_warn_and_other_words_for_the_same_cause_are_none() {
        let h = SinkHealth::new("kafka", 0);
        let text = logged(|| {
            h.retrying_because("initialising transactions", "brokers down (1/1)");
            h.retrying_because("initialising transactions", "brokers down (0/1)");
            h.retrying_because("committing", "fenced");
            h.retrying_because("committing", "fenced again");
            h.ok();
            h.retrying_because("committing", "fenced after recovering");
        });
        let warns = text.lines().filter(|l| l.contains("WARN")).count();
        assert_eq!(
            warns, 3,
            "one per new cause, and one after recovering:\n{text}"
        );
        assert_eq!(
            h.snapshot().reason.as_deref(),
            Some("fenced after recovering")
        );
    }
}
