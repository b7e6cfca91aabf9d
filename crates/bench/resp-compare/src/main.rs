//! Measures what the Redis reader of the benchmark spends parsing `XREAD` replies:
//! the benchmark's own RESP cursor (`crates/bench/src/systems/resp.rs`, included
//! as is) against the `redis` crate's parser (`redis::parse_redis_value`, which
//! builds a `Value` tree), on the same reply — 1,024 entries of one ~200-byte field,
//! as the benchmark's readers get them — extracting the same thing (each entry's id
//! and payload length). Prints ns per entry for each, medians of 9 rounds.

#[allow(dead_code)]
#[path = "../../src/systems/resp.rs"]
mod resp;

use std::hint::black_box;
use std::time::Instant;

/// An `XREAD ... STREAMS bench ID` reply with `n` entries.
fn reply(n: usize) -> Vec<u8> {
    let payload = vec![b'x'; 200];
    let mut out = Vec::new();
    out.extend_from_slice(b"*1\r\n*2\r\n$5\r\nbench\r\n");
    out.extend_from_slice(format!("*{n}\r\n").as_bytes());
    for i in 0..n {
        let id = format!("1700000000000-{i}");
        out.extend_from_slice(b"*2\r\n");
        out.extend_from_slice(format!("${}\r\n{id}\r\n", id.len()).as_bytes());
        out.extend_from_slice(b"*2\r\n$1\r\ne\r\n");
        out.extend_from_slice(format!("${}\r\n", payload.len()).as_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The benchmark's way: find the end, then walk without allocating.
fn ours(buf: &[u8]) -> anyhow::Result<(usize, usize)> {
    let end = resp::value_end(buf, 0)?.ok_or_else(|| anyhow::anyhow!("incomplete"))?;
    let mut c = resp::Cursor::new(&buf[..end]);
    let (mut entries, mut bytes) = (0, 0);
    c.array()?;
    c.array()?;
    c.skip()?;
    let n = c.array()?.unwrap_or(0);
    for _ in 0..n {
        c.array()?;
        let id = c.bulk()?.unwrap_or_default();
        c.array()?;
        c.skip()?;
        let payload = c.bulk()?.unwrap_or_default();
        entries += 1;
        bytes += id.len() + payload.len();
    }
    Ok((entries, bytes))
}

/// The `redis` crate's way: parse into a `Value` tree, then walk it.
fn theirs(buf: &[u8]) -> anyhow::Result<(usize, usize)> {
    use redis::Value;
    let value = redis::parse_redis_value(buf)?;
    let (mut entries, mut bytes) = (0, 0);
    let Value::Array(streams) = value else {
        anyhow::bail!("not an array")
    };
    for stream in streams {
        let Value::Array(key_entries) = stream else {
            anyhow::bail!("not an array")
        };
        let Some(Value::Array(list)) = key_entries.into_iter().nth(1) else {
            anyhow::bail!("no entries")
        };
        for entry in list {
            let Value::Array(parts) = entry else {
                anyhow::bail!("not an entry")
            };
            let mut parts = parts.into_iter();
            let Some(Value::BulkString(id)) = parts.next() else {
                anyhow::bail!("no id")
            };
            let Some(Value::Array(fields)) = parts.next() else {
                anyhow::bail!("no fields")
            };
            let Some(Value::BulkString(payload)) = fields.into_iter().nth(1) else {
                anyhow::bail!("no payload")
            };
            entries += 1;
            bytes += id.len() + payload.len();
        }
    }
    Ok((entries, bytes))
}

fn median_ns_per_entry(f: fn(&[u8]) -> anyhow::Result<(usize, usize)>, buf: &[u8]) -> f64 {
    const ITERS: usize = 2_000;
    let mut rounds = Vec::new();
    for _ in 0..9 {
        let start = Instant::now();
        let mut entries = 0;
        for _ in 0..ITERS {
            let (n, _) = f(black_box(buf)).expect("parses");
            entries += n;
        }
        rounds.push(start.elapsed().as_nanos() as f64 / entries as f64);
    }
    rounds.sort_by(f64::total_cmp);
    rounds[rounds.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let buf = reply(1024);
    let (a, b) = (ours(&buf)?, theirs(&buf)?);
    anyhow::ensure!(a == b, "the two disagree: {a:?} vs {b:?}");
    let ours_ns = median_ns_per_entry(ours, &buf);
    let theirs_ns = median_ns_per_entry(theirs, &buf);
    println!(
        "XREAD reply of {} entries ({} bytes): benchmark cursor {ours_ns:.1} ns/entry, redis::parse_redis_value {theirs_ns:.1} ns/entry ({:.1}x)",
        a.0,
        buf.len(),
        theirs_ns / ours_ns
    );
    Ok(())
}
