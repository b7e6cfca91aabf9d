//! `master-events`: the command-line tool of the cluster-wide activity event router.
//!
//! Exit codes: 0 success, 1 the command found a problem (e.g. invalid lines, schema
//! drift), 2 usage or I/O errors.

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Cluster-wide activity events: stream, validate and route the "master activity
/// events" of a cluster (the vocabulary of Couchbase Server's /diag/masterEvents).
#[derive(Parser, Debug)]
#[command(name = "master-events", version, about, long_about = None)]
#[command(after_help = "Start with `master-events demo`, then `master-events <command> --help`.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write the JSON Schemas of every event type (or check a directory against them).
    ///
    /// Examples:
    ///   master-events schemas --out schemas          # (re)generate the files
    ///   master-events schemas --out schemas --check  # exit 1 if they drifted
    #[command(verbatim_doc_comment)]
    Schemas(commands::schemas::SchemasArgs),
    /// Check every line of an NDJSON file against the published schemas.
    ///
    /// Works on this project's streams and on ns_server's master_events.log. Prints
    /// each bad line's number, type and reason, then a count of lines per type.
    /// Exit code: 0 all lines valid, 1 some invalid, 2 usage or I/O error.
    ///
    /// Examples:
    ///   master-events validate master_events.log
    ///   curl -s 'http://127.0.0.1:8091/diag/masterEvents?o=1' | master-events validate -
    #[command(verbatim_doc_comment)]
    Validate(commands::validate::ValidateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Schemas(args) => commands::schemas::run(args),
        Command::Validate(args) => commands::validate::run(args),
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("master-events: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
