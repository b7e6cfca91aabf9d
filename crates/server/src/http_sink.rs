//! The `http` sink entry of the configuration: what every stream of the HTTP
//! server does by default (heartbeat, most streams at once, a filter).
//!
//! Owns: [`HttpSinkConfig`] (registered as `http`). Promises: the entry consumes
//! nothing (the server's connections read the ring themselves); a bad value is
//! refused at start, naming it.

use super::*;

/// The `http` sink: its configuration sets what every stream of the HTTP server
/// does by default. The streams themselves are served per connection by the server,
/// so the sink built from this entry consumes nothing.
#[derive(Deserialize, schemars::JsonSchema, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// Default idle heartbeat interval of streams, in seconds (0 = off); a client's
    /// `?heartbeat=` overrides it.
    #[serde(default = "default_heartbeat_secs")]
    pub heartbeat: f64,
    /// Most stream connections open at once; more are answered 503.
    #[serde(default = "default_max_streams")]
    pub max_streams: usize,
}

pub(crate) fn default_heartbeat_secs() -> f64 {
    DEFAULT_HEARTBEAT.as_secs_f64()
}

pub(crate) fn default_max_streams() -> usize {
    ServerConfig::default().max_streams
}

pub(crate) struct HttpSink;

impl master_events_router::Sink for HttpSink {
    fn run(
        self: Box<Self>,
        _input: master_events_router::SinkInput,
    ) -> master_events_router::SinkFuture {
        // The server's connections read the ring themselves; this entry only carries
        // their settings, so its own subscription is released at once.
        Box::pin(async {})
    }
}

impl master_events_router::SinkConfig for HttpSinkConfig {
    const NAME: &'static str = "http";
    const DESCRIPTION: &'static str =
        "the NDJSON / Server-Sent Events streams of GET /diag/masterEvents (settings and filter for every stream)";

    fn validate(&self) -> Result<(), String> {
        if !self.heartbeat.is_finite() || !(0.0..=86_400.0).contains(&self.heartbeat) {
            return Err(format!(
                "heartbeat must be 0 to 86400 seconds, not {}",
                self.heartbeat
            ));
        }
        if self.max_streams == 0 {
            return Err("max_streams must be at least 1".into());
        }
        Ok(())
    }

    fn build(
        self,
        _ctx: &master_events_router::SinkContext,
    ) -> Result<Box<dyn master_events_router::Sink>, master_events_router::ConfigError> {
        Ok(Box::new(HttpSink))
    }
}

master_events_router::register_sink!(HttpSinkConfig);

impl HttpSinkConfig {
    /// Applies this entry (and its filter) to a server configuration.
    pub fn apply_to(&self, config: &mut ServerConfig, filter: Option<Filter>) {
        config.heartbeat = (self.heartbeat > 0.0).then(|| Duration::from_secs_f64(self.heartbeat));
        config.max_streams = self.max_streams;
        config.stream_filter = filter;
    }
}
