//! `master-events sinks`: lists the sinks and filter keys this binary has, or prints
//! one sink's configuration schema.
//!
//! Promises: the list is read from the compile-time registry, so it is exactly what
//! a configuration can name in this binary.

use anyhow::{bail, Result};
use clap::Args;
use master_events_plugins::{registered_filters, registered_sinks};

/// Arguments of `sinks`.
#[derive(Args, Debug)]
pub struct SinksArgs {
    /// Print the JSON Schema of this sink's configuration keys instead of the list.
    #[arg(long, value_name = "NAME")]
    pub schema: Option<String>,
}

/// Runs the command; returns the process exit code.
pub fn run(args: &SinksArgs) -> Result<i32> {
    let sinks = registered_sinks();
    if let Some(name) = &args.schema {
        let Some(reg) = sinks.iter().find(|r| r.name == name) else {
            let names: Vec<&str> = sinks.iter().map(|r| r.name).collect();
            bail!(
                "no sink named {name:?}; registered sinks: {}",
                names.join(", ")
            );
        };
        outln!(
            "{}",
            serde_json::to_string_pretty(&(reg.config_schema)().to_value())?
        );
        return Ok(0);
    }
    outln!("sinks (use in [[sinks]] as type = \"NAME\"; `--schema NAME` shows the keys):");
    let width = sinks.iter().map(|r| r.name.len()).max().unwrap_or(0);
    for reg in &sinks {
        outln!("  {:<width$}  {}", reg.name, reg.description);
    }
    outln!();
    outln!("filter keys (in a sink's filter = {{ ... }}; OR within a key, AND across keys):");
    let filters = registered_filters();
    let width = filters.iter().map(|r| r.name.len()).max().unwrap_or(0);
    for reg in &filters {
        outln!("  {:<width$}  {}", reg.name, reg.description);
    }
    Ok(0)
}
