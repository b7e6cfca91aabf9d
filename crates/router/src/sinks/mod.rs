//! The built-in sinks: `archiver` (the ring itself) and `stdout`.
//!
//! Each is a config struct (its doc comments are its schema) with a
//! [`SinkConfig`](crate::SinkConfig) implementation, registered with
//! [`register_sink!`](crate::register_sink).

pub mod archiver;
pub mod stdout;
