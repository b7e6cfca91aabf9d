//! `master-events tail nats://HOST:PORT`: follows a JetStream stream the nats sink
//! fills — one cluster's, or a fleet's (docs/scaling.md) — printing each message's
//! line (an event, or a gap the sink announced) as `tail` prints a server's.
//!
//! Owns: the JetStream consumer of `tail` and what it prints.
//!
//! Promises:
//! - Every message of the stream (or of `--subject`) is printed once, in the
//!   stream's order; with `--durable NAME` a message is acknowledged only once
//!   printed and flushed, so a tail that stops (Ctrl-C, `--count`, a crash) and is
//!   started again with the same name resumes after the last line it printed.
//! - `--once` prints what the stream holds now and exits 0; `--count N` exits 0
//!   after N lines; `--type` keeps the lines of those types (by subject,
//!   `<prefix>.<type>`); `--pretty` prints events as `tail` does.
//! - A flag that has no meaning here (`--since`, `--start-now`, `--bucket`, ...) is
//!   refused naming it, not ignored. Errors name the server and the stream; they
//!   never quote credentials (`--nats-user`, `--nats-token`, `--nats-creds`).

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use futures_util::StreamExt;

use super::client::Credentials;
use super::tail::TailArgs;

/// The stream `tail nats://` reads when `--stream` is not given: the nats sink's
/// JetStream example name.
pub const DEFAULT_STREAM: &str = "MASTER_EVENTS";

/// Messages asked for at a time.
const BATCH: usize = 256;

/// How long a message delivered to a tail and not acknowledged (it stopped before
/// printing it) waits before it is delivered again.
const ACK_WAIT: Duration = Duration::from_secs(5);

/// Whether `url` names a NATS server rather than a master-events one.
pub fn is_nats_url(url: &str) -> bool {
    url.starts_with("nats://") || url.starts_with("tls://")
}

/// Refuses the flags that mean something only for a master-events server.
fn check_flags(args: &TailArgs) -> Result<()> {
    let mut unsupported = Vec::new();
    if args.since.is_some() {
        unsupported.push("--since (use --durable to resume)");
    }
    if args.start_now {
        unsupported.push("--start-now");
    }
    if args.bucket.is_some() {
        unsupported.push("--bucket");
    }
    if !args.vbucket.is_empty() {
        unsupported.push("--vbucket");
    }
    if args.node.is_some() {
        unsupported.push("--node");
    }
    if args.max_reconnects.is_some() {
        unsupported.push("--max-reconnects");
    }
    if !unsupported.is_empty() {
        bail!(
            "with a nats:// URL, tail reads a JetStream stream: {} {} for a master-events \
             server (http:// or https://); --stream, --subject, --durable, --type, --once, \
             --count and --pretty apply here",
            unsupported.join(", "),
            if unsupported.len() == 1 { "is" } else { "are" }
        );
    }
    Ok(())
}

/// Runs `tail` against a NATS server; returns the exit code.
pub fn run(args: &TailArgs) -> Result<i32> {
    check_flags(args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let url = args.url.as_str();
        let client = connect(args)
            .await
            .with_context(|| format!("cannot connect to the NATS server {url}"))?;
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let code = tokio::select! {
            biased;
            () = super::tail::ctrl_c() => Ok(0),
            code = follow(&client, args, &mut out) => code,
        };
        // Acknowledgements are sent asynchronously: make sure the server has the
        // ones of every line printed before the process ends (else they come again).
        if let Err(e) = tokio::time::timeout(Duration::from_secs(5), client.flush())
            .await
            .map_err(|_| "timed out".to_owned())
            .and_then(|r| r.map_err(|e| e.to_string()))
        {
            eprintln!(
                "master-events tail: the last acknowledgements may not have reached {url} ({e}): \
                 a tail resumed with the same --durable may print those lines again"
            );
        }
        super::tail::finish_output(&mut out, code)
    })
}

/// Connects with the credentials and TLS files given: `--nats-user`, `--nats-token`
/// or `--nats-creds` (one of them), `--cacert` (trust these CAs, and require TLS),
/// `--cert`/`--key` (a client certificate). Errors never quote a secret.
async fn connect(args: &TailArgs) -> Result<async_nats::Client> {
    let user = args.nats_user.as_ref().filter(|s| !s.expose().is_empty());
    let token = args.nats_token.as_ref().filter(|s| !s.expose().is_empty());
    let given = [user.is_some(), token.is_some(), args.nats_creds.is_some()];
    if given.iter().filter(|g| **g).count() > 1 {
        bail!("give one of --nats-user, --nats-token and --nats-creds, not several");
    }
    let mut options = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(5);
    if let Some(user) = user {
        // The same NAME:PASSWORD form (and error, never quoting it) as --user.
        let Credentials::Basic { user, password } =
            Credentials::parse(user.expose()).context("--nats-user / MASTER_EVENTS_NATS_AUTH")?
        else {
            bail!("--nats-user / MASTER_EVENTS_NATS_AUTH must be NAME:PASSWORD");
        };
        options = options.user_and_password(user, password);
    }
    if let Some(token) = token {
        options = options.token(token.expose().to_owned());
    }
    if let Some(creds) = &args.nats_creds {
        options = options.credentials_file(creds).await.with_context(|| {
            format!(
                "--nats-creds {}: not a NATS credentials file",
                creds.display()
            )
        })?;
    }
    if let Some(ca) = &args.auth.cacert {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let Some((cert, key)) = args.auth.identity() {
        options = options.add_client_certificate(cert.to_owned(), key.to_owned());
    }
    Ok(options.connect(args.url.as_str()).await?)
}

async fn follow(client: &async_nats::Client, args: &TailArgs, out: &mut impl Write) -> Result<i32> {
    let url = args.url.as_str();
    let name = args.stream.as_deref().unwrap_or(DEFAULT_STREAM);
    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream(name).await.with_context(|| {
        format!("no JetStream stream {name:?} on {url} (name it with --stream)")
    })?;
    let config = pull::Config {
        durable_name: args.durable.clone(),
        filter_subject: args.subject.clone().unwrap_or_default(),
        ack_policy: AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        deliver_policy: DeliverPolicy::All,
        ..Default::default()
    };
    let consumer = match &args.durable {
        Some(durable) => stream
            .get_or_create_consumer(durable, config)
            .await
            .with_context(|| format!("the durable consumer {durable:?} of stream {name:?}"))?,
        None => stream
            .create_consumer(config)
            .await
            .with_context(|| format!("a consumer of stream {name:?}"))?,
    };
    if args.verbose {
        eprintln!("master-events tail: reading stream {name} on {url}");
    }
    let mut printed = 0u64;
    loop {
        // Ask for no more than is wanted: what is delivered and not printed waits
        // ACK_WAIT before it is delivered again (to a tail started again).
        let want = match args.count {
            Some(n) => (n - printed).min(BATCH as u64) as usize,
            None => BATCH,
        };
        let mut batch = consumer
            .batch()
            .max_messages(want)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .with_context(|| format!("reading stream {name:?}"))?;
        let mut got = 0;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| anyhow::anyhow!("reading stream {name:?}: {e}"))?;
            got += 1;
            let event_type = message.subject.rsplit('.').next().unwrap_or("");
            let wanted =
                args.types.is_empty() || args.types.iter().any(|t| t.as_str() == event_type);
            if wanted {
                let line = String::from_utf8_lossy(&message.payload);
                let line = line.trim_end();
                match serde_json::from_str::<serde_json::Value>(line) {
                    Ok(serde_json::Value::Object(event)) if args.pretty => {
                        writeln!(out, "{}", super::tail::pretty_line(&event))?
                    }
                    _ => writeln!(out, "{line}")?,
                }
                out.flush()?;
                printed += 1;
            }
            // Printed and flushed: only now is it acknowledged.
            message
                .ack()
                .await
                .map_err(|e| anyhow::anyhow!("acknowledging a message of stream {name:?}: {e}"))?;
            if args.count.is_some_and(|n| printed >= n) {
                return Ok(0);
            }
        }
        if args.once && got == 0 {
            // Nothing came for a second: done, unless messages another tail took
            // without acknowledging them are still to come back.
            let mut consumer = consumer.clone();
            let info = consumer
                .info()
                .await
                .with_context(|| format!("stream {name:?}: its consumer's state"))?;
            if info.num_pending == 0 && info.num_ack_pending == 0 {
                return Ok(0);
            }
        }
    }
}
