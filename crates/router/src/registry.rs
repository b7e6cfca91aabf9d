//! The compile-time registry of sinks and filter kinds, collected with `inventory`.
//!
//! Owns: [`SinkRegistration`] (name, description, config schema, check and build
//! functions), the [`SinkConfig`] trait that derives a registration from a typed
//! config, and the listing [`registered_sinks`]. The filter kinds' registrations
//! ([`FilterRegistration`], [`registered_filters`]) are [`crate::filter`]'s,
//! re-exported here.
//!
//! Promises: a sink's configuration is its own typed struct
//! (`DeserializeOwned + JsonSchema`, which should be `#[serde(deny_unknown_fields)]`),
//! checked when the configuration is loaded (before anything runs) and again when it
//! is built; its doc comments are the schema's descriptions.
//!
//! A registration only exists in a binary that links its crate: a plugin crate that
//! nothing references (`use some_plugin as _;`) is not linked and its registration
//! silently vanishes. Test the exact list of [`registered_sinks`] in the binary.
//!
//! Registering a sink:
//!
//! ```
//! use master_events_router::{ConfigError, EventRef, Sink, SinkConfig, SinkContext};
//!
//! /// Counts events (an example sink).
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! #[serde(deny_unknown_fields)]
//! struct CounterConfig {
//!     /// Log the count every this many events.
//!     every: u64,
//! }
//!
//! struct Counter { every: u64, seen: u64 }
//!
//! impl Sink for Counter {
//!     fn on_event(&mut self, _event: &EventRef<'_>) {
//!         self.seen += 1;
//!         if self.seen % self.every == 0 {
//!             tracing::info!(seen = self.seen, "counter");
//!         }
//!     }
//! }
//!
//! impl SinkConfig for CounterConfig {
//!     const NAME: &'static str = "counter";
//!     const DESCRIPTION: &'static str = "counts events and logs the count";
//!     fn validate(&self) -> Result<(), String> {
//!         if self.every == 0 { Err("every must be at least 1".into()) } else { Ok(()) }
//!     }
//!     fn build(self, _ctx: &SinkContext) -> Result<Box<dyn Sink>, ConfigError> {
//!         Ok(Box::new(Counter { every: self.every, seen: 0 }))
//!     }
//! }
//!
//! master_events_router::register_sink!(CounterConfig);
//!
//! assert!(master_events_router::registered_sinks().iter().any(|r| r.name == "counter"));
//! ```

use std::sync::Arc;

use schemars::{JsonSchema, Schema};
use serde::de::DeserializeOwned;

use crate::commit::CommitGate;
use crate::error::ConfigError;
pub use crate::filter::{registered_filters, FilterRegistration};
use crate::health::SinkHealth;
use crate::sink::Sink;
use crate::Router;

/// A sink type that configurations can name.
pub struct SinkRegistration {
    /// The `type` that names it in `[[sinks]]` (unique).
    pub name: &'static str,
    /// One line for listings.
    pub description: &'static str,
    /// The JSON Schema of its own configuration keys (not `type` nor `filter`).
    pub config_schema: fn() -> Schema,
    /// Checks its own configuration keys without building anything (run when the
    /// configuration is loaded).
    pub check: fn(toml::Value) -> Result<(), ConfigError>,
    /// Builds it from its own configuration keys (the entry's table without `type`
    /// and `filter`).
    pub build: SinkBuildFn,
    /// Where it runs in a cluster when its entry does not say (`run_on`).
    pub run_on: RunOn,
}

/// Where a sink runs in a cluster: the `run_on` key of a `[[sinks]]` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RunOn {
    /// On every node, each reading its own archive (a file log per node, a stream
    /// per node). What a node does alone.
    EveryNode,
    /// On the master only: one copy of each event per cluster, for sinks that hand
    /// events to a system outside the cluster. A node that becomes master starts
    /// the sink (which resumes from what it says it holds, [`crate::Sink::start_cursor`]);
    /// a node that stops being master stops it. A node outside a cluster is its own
    /// master.
    Master,
}

impl RunOn {
    /// The value as written in a configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOn::EveryNode => "every-node",
            RunOn::Master => "master",
        }
    }
}

/// The build function of a [`SinkRegistration`].
pub type SinkBuildFn = fn(toml::Value, &SinkContext) -> Result<Box<dyn Sink>, ConfigError>;

inventory::collect!(SinkRegistration);

/// A typed sink configuration, from which [`SinkRegistration::of`] derives a
/// registration (see the [module documentation](self) for an example).
pub trait SinkConfig: DeserializeOwned + JsonSchema + 'static {
    /// The sink's `type` name.
    const NAME: &'static str;
    /// One line for listings.
    const DESCRIPTION: &'static str;

    /// Where the sink runs in a cluster when its entry has no `run_on`: on every
    /// node by default; a sink that hands events to a system outside the cluster
    /// (a broker, a webhook) says [`RunOn::Master`], so that a cluster hands each
    /// event over once.
    const RUN_ON: RunOn = RunOn::EveryNode;

    /// Checks values beyond what their types say (called at load and at build).
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }

    /// Builds the sink.
    fn build(self, ctx: &SinkContext) -> Result<Box<dyn Sink>, ConfigError>;
}

fn schema_of<C: SinkConfig>() -> Schema {
    schemars::schema_for!(C)
}

fn parse_config<C: SinkConfig>(value: toml::Value) -> Result<C, ConfigError> {
    let config: C = value.try_into().map_err(|e: toml::de::Error| {
        ConfigError::Invalid(crate::error::describe_toml_error(&e))
    })?;
    config.validate().map_err(ConfigError::Invalid)?;
    Ok(config)
}

fn check_of<C: SinkConfig>(value: toml::Value) -> Result<(), ConfigError> {
    parse_config::<C>(value).map(drop)
}

fn build_of<C: SinkConfig>(
    value: toml::Value,
    ctx: &SinkContext,
) -> Result<Box<dyn Sink>, ConfigError> {
    parse_config::<C>(value)?.build(ctx)
}

impl SinkRegistration {
    /// The registration of the sink configured by `C`.
    pub const fn of<C: SinkConfig>() -> SinkRegistration {
        SinkRegistration {
            name: C::NAME,
            description: C::DESCRIPTION,
            config_schema: schema_of::<C>,
            check: check_of::<C>,
            build: build_of::<C>,
            run_on: C::RUN_ON,
        }
    }
}

/// Registers the sink configured by a [`SinkConfig`] type:
/// `master_events_router::register_sink!(MyConfig);`
#[macro_export]
macro_rules! register_sink {
    ($config:ty) => {
        $crate::inventory::submit! {
            $crate::SinkRegistration::of::<$config>()
        }
    };
}

/// Every registered sink, sorted by name.
pub fn registered_sinks() -> Vec<&'static SinkRegistration> {
    let mut all: Vec<_> = inventory::iter::<SinkRegistration>.into_iter().collect();
    all.sort_by_key(|r| r.name);
    all
}

/// The registered sink named `name`.
pub fn find_sink(name: &str) -> Option<&'static SinkRegistration> {
    inventory::iter::<SinkRegistration>
        .into_iter()
        .find(|r| r.name == name)
}

/// What a sink's build function can see.
#[derive(Clone, Debug)]
pub struct SinkContext {
    router: Router,
    index: usize,
    health: Arc<SinkHealth>,
    /// The commit gate the sink took, if it took one.
    gate: Arc<parking_lot::Mutex<Option<CommitGate>>>,
}

impl SinkContext {
    /// The context of the sink at `sinks[index]` of a configuration.
    pub fn new(router: &Router, index: usize) -> SinkContext {
        SinkContext::named(router, index, format!("sinks[{index}]"))
    }

    /// The context of the sink of type `name` at `sinks[index]`.
    pub fn named(router: &Router, index: usize, name: impl Into<String>) -> SinkContext {
        SinkContext {
            router: router.clone(),
            index,
            health: Arc::new(SinkHealth::new(name, index)),
            gate: Arc::default(),
        }
    }

    /// Makes the sink a commit gate (see [`crate::commit`]): events are committed —
    /// shown to readers, acknowledged to publishers — only once the sink marks them
    /// with the returned handle, and the sink itself reads the events before they
    /// are committed. For a sink that makes events durable (a file log with an
    /// fsync per write): it marks what it has synced. Asked again (a restart after a
    /// panic), it returns the same gate.
    pub fn commit_gate(&self) -> CommitGate {
        self.gate
            .lock()
            .get_or_insert_with(|| self.router.add_commit_gate())
            .clone()
    }

    /// Whether the sink took a commit gate.
    pub fn is_commit_gate(&self) -> bool {
        self.gate.lock().is_some()
    }

    /// Where the sink reports its state (ok, retrying, failing: see
    /// [`SinkHealth`]); the server shows it in `/cluster` and `/metrics`. A sink
    /// keeps a clone of it.
    pub fn health(&self) -> &Arc<SinkHealth> {
        &self.health
    }

    /// The router the sink will read from.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        self.router.node()
    }

    /// How many events the router's archive retains.
    pub fn archive_capacity(&self) -> usize {
        self.router.archive_capacity()
    }

    /// The sink's position in the configuration's `[[sinks]]`.
    pub fn index(&self) -> usize {
        self.index
    }
}
