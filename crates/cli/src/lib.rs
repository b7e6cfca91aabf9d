//! `master-events`: the command-line tool of the cluster-wide activity event router,
//! as a library, so that a team can build its own `master-events` binary with sinks
//! kept in its own repository.
//!
//! Owns: the command line (every subcommand) and [`run`], which runs it with the
//! process's arguments. `src/main.rs` is `fn main() -> ExitCode { run() }`.
//!
//! Promises:
//! - A binary that calls [`run`] is the whole `master-events` tool: every built-in
//!   sink, plus every sink registered (`register_sink!`) by a crate it links. Such a
//!   sink is listed by `sinks`, accepted by config validation and started by `serve`
//!   exactly as the built-in ones are (docs/writing-a-sink.md, "In your own
//!   repository"; `examples/own-binary/` is built and checked by the test suite).
//! - Linking this crate sets the process's global allocator (jemalloc, see the
//!   `malloc` module): a binary with its own `#[global_allocator]` cannot link it.
//!
//! Exit codes: 0 success, 1 the command found a problem (e.g. invalid lines, schema
//! drift), 2 usage or I/O errors.
#![warn(missing_docs)]

/// `println!` that returns the write error instead of panicking: a reader that
/// closes the pipe early (`master-events sinks | head -1`) ends the command quietly
/// ([`run`] treats a broken pipe as done), and any other error is reported.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        anyhow::Context::context(
            writeln!(std::io::stdout(), $($arg)*),
            "writing standard output",
        )?
    }};
}

/// `print!` with the error returned, as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        anyhow::Context::context(
            write!(std::io::stdout(), $($arg)*),
            "writing standard output",
        )?
    }};
}

mod commands;
mod malloc;

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
    /// Run a demo: a server on loopback fed by a simulated cluster rebalance.
    ///
    /// The quickest way to see master-events at work. Prints the URL and the
    /// commands to watch the stream.
    ///
    /// Examples:
    ///   master-events demo
    ///   master-events demo --rate 2000 --loop
    #[command(verbatim_doc_comment)]
    Demo(commands::demo::DemoArgs),
    /// Run a node: the event router, its sinks and the HTTP API.
    ///
    /// The first line on stdout is `listening on http://ADDR` (`https://` with
    /// --tls-cert/--tls-key; SIGHUP then reloads them). Stops cleanly on Ctrl-C or
    /// SIGTERM (streams end, everything queued reaches the sinks).
    ///
    /// Examples:
    ///   master-events serve
    ///   master-events serve --listen 127.0.0.1:0 --archive-size 81920
    ///   MASTER_EVENTS_USERS=ops:pw:admin master-events serve --listen 0.0.0.0:9898
    ///   master-events serve --config master-events.toml
    ///   master-events serve --tls-cert cert.pem --tls-key key.pem
    #[command(verbatim_doc_comment)]
    Serve(Box<commands::serve::ServeArgs>),
    /// List the sinks and filters this binary has (or one sink's config schema).
    ///
    /// Examples:
    ///   master-events sinks
    ///   master-events sinks --schema stdout
    #[command(verbatim_doc_comment)]
    Sinks(commands::sinks::SinksArgs),
    /// Write the JSON Schemas of every event type (or check a directory against them).
    ///
    /// Examples:
    ///   master-events schemas --out schemas          # (re)generate the files
    ///   master-events schemas --out schemas --check  # exit 1 if they drifted
    ///   master-events schemas --compat schemas-released  # exit 1 on a breaking change
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
    ///   curl -s 'http://127.0.0.1:9898/diag/masterEvents?o=1' | master-events validate -
    #[command(verbatim_doc_comment)]
    Validate(commands::validate::ValidateArgs),
    /// Follow a server's event stream: the retained events, then live ones.
    ///
    /// Prints each event as received, one JSON line each (or, with --pretty, a readable
    /// `#SEQ TIME TYPE key=value ...` line, time in UTC). When the connection drops or
    /// the server is unreachable it reconnects (backoff 100 ms doubling to 5 s) and
    /// resumes after the last event printed: nothing is missed or printed twice.
    /// Events the server no longer has are reported on stderr with their count.
    /// Credentials: --user NAME:PASSWORD or MASTER_EVENTS_AUTH=NAME:PASSWORD, or a token
    /// (`master-events token create`): --token TOKEN or MASTER_EVENTS_TOKEN=TOKEN.
    /// Exit code: 0 done (--once, --count or Ctrl-C), 1 credentials refused or gave
    /// up (--max-reconnects), 2 usage error.
    ///
    /// Examples:
    ///   export MASTER_EVENTS_AUTH=admin:password
    ///   master-events tail http://127.0.0.1:9898                  # follow for ever
    ///   master-events tail http://127.0.0.1:9898 --once > archive.ndjson
    ///   master-events tail http://127.0.0.1:9898 --pretty --start-now
    ///   master-events tail http://127.0.0.1:9898 --type vbucketMoveStart,vbucketMoveDone --bucket default
    ///   master-events tail http://127.0.0.1:9898 --since 1200 --count 10
    ///   master-events tail https://events.example:9443 --cacert ca.pem
    ///   master-events tail https://events.example:9443 --cacert ca.pem --cert me.pem --key me-key.pem
    ///   master-events tail nats://127.0.0.1:4222 --stream FLEET --durable me    # JetStream
    #[command(verbatim_doc_comment)]
    Tail(Box<commands::tail::TailArgs>),
    /// Send events to a server: the NDJSON lines of a file, or one event built here.
    ///
    /// Two forms:
    ///   emit URL [FILE|-]                sends each line of FILE (or standard input)
    ///   emit URL TYPE key=value ...      sends one event of TYPE with those fields
    /// Every line is checked locally first (a bad line is reported with its number
    /// and, from a file, nothing is sent); lines go in batches of --batch-lines /
    /// --batch-bytes, and the server's reply to each is printed. A value is JSON when
    /// it parses as JSON (43, true, ["a","b"]), else a string. A `ts`, `seq` or
    /// `origin` in a line is replaced by the server's own.
    /// Credentials: --user NAME:PASSWORD or MASTER_EVENTS_AUTH=NAME:PASSWORD, or a token
    /// (`master-events token create`): --token TOKEN or MASTER_EVENTS_TOKEN=TOKEN.
    /// Exit code: 0 all sent, 1 a line refused or the server unreachable, 2 usage error,
    /// 3 sent but only queued by the node (202: its master did not sequence them yet).
    ///
    /// Examples:
    ///   export MASTER_EVENTS_AUTH=admin:password
    ///   master-events emit http://127.0.0.1:9898 vbucketMoveDone vbucket=43 bucket=default
    ///   master-events emit http://127.0.0.1:9898 failover 'hosts=["10.0.0.7:8091"]'
    ///   master-events emit http://127.0.0.1:9898 master_events.log
    ///   master-events tail http://10.0.0.5:8091 --once | master-events emit http://127.0.0.1:9898 -
    #[command(verbatim_doc_comment)]
    Emit(commands::emit::EmitArgs),
    /// Reports on an event log: rebalances, moves in flight, one row per move.
    ///
    /// SOURCE is a file (this project's NDJSON stream or ns_server's
    /// master_events.log), `-` for standard input, or a server's http:// URL (its
    /// retained events, fetched once). Bad lines are skipped and summed up on stderr.
    /// Credentials for a server: --user NAME:PASSWORD or MASTER_EVENTS_AUTH.
    /// Exit code: 0 report written, 2 usage or I/O error.
    ///
    /// Examples:
    ///   master-events report rebalance master_events.log
    ///   master-events report rebalance http://127.0.0.1:9898 --svg moves.svg
    ///   master-events report inflight http://127.0.0.1:9898 --now now
    ///   master-events report moves master_events.log --format csv > moves.csv
    #[command(verbatim_doc_comment)]
    Report(commands::report::ReportArgs),
    /// Write a Chrome trace-event JSON of an event log, for Perfetto or chrome://tracing.
    ///
    /// Rebalances, stages and bucket rebalances on a `cluster` track; vbucket moves
    /// (with their backfill, takeover and wait phases nested) in lanes per node; other
    /// events as instant markers. SOURCE as for `report`.
    /// Exit code: 0 trace written, 2 usage or I/O error.
    ///
    /// Examples:
    ///   master-events trace master_events.log -o rebalance.trace.json
    ///   master-events trace http://127.0.0.1:9898 --spans-only > trace.json
    #[command(verbatim_doc_comment)]
    Trace(commands::trace::TraceArgs),
    /// Make scoped bearer tokens for the HTTP API.
    ///
    /// `token create` prints the token alone on the first line, then the
    /// `[[tokens]]` entry to add to the configuration (its digest, never the token).
    /// A token's --filter narrows every stream it reads; --expires ends it.
    ///
    /// Examples:
    ///   master-events token create --name ci --role write
    ///   master-events token create --name b1-dash --role read --filter bucket=b1 --expires 30d
    #[command(verbatim_doc_comment)]
    Token(commands::token::TokenArgs),
}

/// Runs the `master-events` command line with the process's arguments and returns
/// its exit code: the whole tool, as the `master-events` binary runs it.
///
/// A team's own binary, with its sinks linked in, is:
///
/// ```ignore
/// use their_sink as _; // registers its sink (inventory), so it must be linked
///
/// fn main() -> std::process::ExitCode {
///     master_events_cli::run()
/// }
/// ```
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Demo(args) => commands::demo::run(args),
        Command::Serve(args) => commands::serve::run(args),
        Command::Sinks(args) => commands::sinks::run(args),
        Command::Schemas(args) => commands::schemas::run(args),
        Command::Validate(args) => commands::validate::run(args),
        Command::Tail(args) => commands::tail::run(args),
        Command::Emit(args) => commands::emit::run(args),
        Command::Report(args) => commands::report::run(args),
        Command::Trace(args) => commands::trace::run(args),
        Command::Token(args) => commands::token::run(args),
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        // The reader of standard output went away (`| head`): what it wanted it has.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("master-events: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Whether an error is, at bottom, a write to a pipe whose reader has gone.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
