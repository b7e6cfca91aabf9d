//! One module per subcommand; each exposes its clap `Args` and a `run` that returns
//! the process exit code.

pub mod schemas;
pub mod validate;
