//! One module per subcommand; each exposes its clap `Args` and a `run` that returns
//! the process exit code.

pub mod client;
pub mod demo;
pub mod emit;
pub mod node;
pub mod report;
pub mod schemas;
pub mod serve;
pub mod sinks;
pub mod source;
pub mod tail;
pub mod tail_nats;
pub mod token;
pub mod trace;
pub mod validate;
