//! `master-events token create`: makes a scoped bearer token.
//!
//! Owns: the command line of `token` and what it prints.
//!
//! Promises: the token is drawn from the operating system's random generator (32
//! bytes; `met_` and their base64url) and printed alone on the first line of
//! standard output, then the `[[tokens]]` entry to add to the configuration, which
//! holds its SHA-256 digest, never the token. The name, the filter and the
//! expiry are checked as `serve` will check the entry, so an entry printed here
//! starts a server. Nothing is written to a file: the token exists only on that
//! standard output.

use std::time::SystemTime;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use master_events_server::auth::Role;
use master_events_server::tokens::{self, NewToken, TokenConfigError};
use rand::TryRngCore as _;

/// Arguments of `token`.
#[derive(Args, Debug)]
pub struct TokenArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: TokenCommand,
}

/// The `token` subcommands.
#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a token: prints it alone on the first line, then its `[[tokens]]` entry.
    ///
    /// Examples:
    ///   master-events token create --name ci --role write
    ///   master-events token create --name b1-dash --role read --filter bucket=b1 --expires 30d
    ///   master-events token create --name rebalances --role read \
    ///       --filter 'type=rebalanceStart,rebalanceEnd&bucket=x' --expires 12h
    #[command(verbatim_doc_comment)]
    Create(CreateArgs),
}

/// Arguments of `token create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The token's name, as logs and errors call it (1 to 64 letters, digits, '-',
    /// '_', '.', '@').
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// What it may do: read (streams, schemas, /ui), write (ingest) or admin.
    #[arg(long, value_name = "ROLE", value_parser = parse_role)]
    pub role: Role,
    /// What it may read, in the stream's query form: `bucket=b1`,
    /// `type=rebalanceStart,rebalanceEnd&bucket=x` (keys type, bucket, vbucket, node).
    /// ANDed with every stream it asks for. Without it: every event.
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// How long it is accepted: 90m, 12h, 30d, 2w, 1d12h. Without it: until its entry
    /// is removed.
    #[arg(long, value_name = "DURATION", value_parser = tokens::parse_duration)]
    pub expires: Option<std::time::Duration>,
}

fn parse_role(text: &str) -> Result<Role, String> {
    text.parse::<Role>().map_err(|e| e.to_string())
}

/// Runs the command; returns the process exit code.
pub fn run(args: &TokenArgs) -> Result<i32> {
    match &args.command {
        TokenCommand::Create(create) => run_create(create),
    }
}

fn run_create(args: &CreateArgs) -> Result<i32> {
    let mut random = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut random)
        .context("cannot draw random bytes from the operating system")?;
    let expires = match args.expires {
        Some(d) => Some(
            SystemTime::now()
                .checked_add(d)
                .context("--expires is too far in the future")?,
        ),
        None => None,
    };
    let made = NewToken::new(
        random,
        &args.name,
        args.role,
        args.filter.as_deref(),
        expires,
    )
    .map_err(in_flag_terms)?;
    let entry = toml::to_string(&made.entry).context("cannot write the [[tokens]] entry")?;
    outln!("{}", made.token());
    outln!();
    outln!("[[tokens]]");
    out!("{entry}");
    eprintln!(
        "The first line is the token: it is shown only now, keep it secret (a client sends \
         it as `Authorization: Bearer TOKEN`). Add the [[tokens]] entry to the configuration \
         of every node that should accept it, then restart them."
    );
    Ok(0)
}

/// An entry's error in the terms of the command line (the entry is made from it).
fn in_flag_terms(e: TokenConfigError) -> anyhow::Error {
    match e {
        TokenConfigError::BadName { name, .. } => {
            anyhow::anyhow!("--name: 1 to 64 letters, digits, '-', '_', '.' or '@', found {name:?}")
        }
        TokenConfigError::BadFilter { reason, .. } => anyhow::anyhow!("--filter: {reason}"),
        TokenConfigError::BadExpires { reason, .. } => anyhow::anyhow!("--expires: {reason}"),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_a_wrong_one_is_named() {
        assert_eq!(parse_role("read"), Ok(Role::Read));
        assert_eq!(parse_role("admin"), Ok(Role::Admin));
        assert!(parse_role("root").is_err_and(|e| e.contains("root")));
    }
}
