//! A minimal RESP2 codec: what the Redis driver needs and nothing more.
//!
//! Owns: encoding commands (arrays of bulk strings), finding where a reply ends in
//! a buffer ([`value_end`]), and walking a complete reply without allocating
//! ([`Cursor`]).
//!
//! Promises: [`value_end`] never reads past the buffer and says `None` for an
//! incomplete reply, so a caller can read more and look again; malformed input is
//! an error, never a panic.
//!
//! Why not the `redis` crate: the benchmark must measure Redis, not its client, and
//! a reader at a million entries a second on a 2-core machine has ~1 µs per entry
//! for everything. `redis::parse_redis_value` builds a `Value` tree (a `Vec` per
//! array, a copy per bulk string): 722 ns per `XREAD` entry against 125 ns for
//! [`value_end`] plus a [`Cursor`] walk, on the same 1,024-entry reply of ~200-byte
//! payloads (5.8×; `redis` 0.32.7, medians of 9 rounds of 2,000 replies). Measured
//! by `crates/bench/resp-compare` (outside the workspace, so the suite does not
//! build `redis`):
//! `CARGO_TARGET_DIR=target/resp-compare cargo run --release --manifest-path crates/bench/resp-compare/Cargo.toml`.

use anyhow::{anyhow, bail, Result};

/// Appends a command (an array of bulk strings) to `out`.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    push_int(out, args.len() as u64);
    out.extend_from_slice(b"\r\n");
    for a in args {
        bulk_header(out, a.len());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends `$len\r\n` (the caller then writes `len` bytes and `\r\n`).
pub fn bulk_header(out: &mut Vec<u8>, len: usize) {
    out.push(b'$');
    push_int(out, len as u64);
    out.extend_from_slice(b"\r\n");
}

fn push_int(out: &mut Vec<u8>, n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Where the line starting at `pos` ends (the index of its `\r`), if complete.
fn line_end(buf: &[u8], pos: usize) -> Option<usize> {
    let rel = memchr::memchr(b'\r', buf.get(pos..)?)?;
    let end = pos + rel;
    (buf.len() > end + 1).then_some(end)
}

fn parse_int(digits: &[u8]) -> Result<i64> {
    let text = std::str::from_utf8(digits).map_err(|_| anyhow!("non-ASCII RESP length"))?;
    text.parse()
        .map_err(|_| anyhow!("bad RESP integer {text:?}"))
}

/// The index one past the reply starting at `pos`, or `None` if the buffer does not
/// hold all of it yet.
pub fn value_end(buf: &[u8], pos: usize) -> Result<Option<usize>> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let Some(eol) = line_end(buf, pos + 1) else {
        return Ok(None);
    };
    let after = eol + 2;
    match kind {
        b'+' | b'-' | b':' => Ok(Some(after)),
        b'$' => {
            let len = parse_int(&buf[pos + 1..eol])?;
            if len < 0 {
                return Ok(Some(after));
            }
            let end = usize::try_from(len)
                .ok()
                .and_then(|l| after.checked_add(l)?.checked_add(2))
                .ok_or_else(|| anyhow!("RESP bulk length {len} out of range"))?;
            Ok((buf.len() >= end).then_some(end))
        }
        b'*' => {
            let n = parse_int(&buf[pos + 1..eol])?;
            let mut p = after;
            for _ in 0..n.max(0) {
                match value_end(buf, p)? {
                    Some(e) => p = e,
                    None => return Ok(None),
                }
            }
            Ok(Some(p))
        }
        other => bail!("unexpected RESP type byte {:?}", other as char),
    }
}

/// Walks a complete reply.
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `buf`, which holds a complete reply.
    pub fn new(buf: &'a [u8]) -> Cursor<'a> {
        Cursor { buf, pos: 0 }
    }

    fn header(&mut self, want: u8) -> Result<i64> {
        let kind = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| anyhow!("reply ends early"))?;
        let eol = line_end(self.buf, self.pos + 1).ok_or_else(|| anyhow!("reply ends early"))?;
        let text = &self.buf[self.pos + 1..eol];
        if kind == b'-' {
            bail!("Redis error: {}", String::from_utf8_lossy(text));
        }
        if kind != want {
            bail!("expected RESP {:?}, found {:?}", want as char, kind as char);
        }
        self.pos = eol + 2;
        parse_int(text)
    }

    /// An array's length; `None` for a null array.
    pub fn array(&mut self) -> Result<Option<usize>> {
        let n = self.header(b'*')?;
        Ok((n >= 0).then_some(n as usize))
    }

    /// A bulk string; `None` for a null one.
    pub fn bulk(&mut self) -> Result<Option<&'a [u8]>> {
        let n = self.header(b'$')?;
        if n < 0 {
            return Ok(None);
        }
        let start = self.pos;
        let end = start.saturating_add(usize::try_from(n).unwrap_or(usize::MAX));
        if self.buf.len().saturating_sub(2) < end {
            bail!("bulk string ends early");
        }
        self.pos = end + 2;
        Ok(Some(&self.buf[start..end]))
    }

    /// Skips one value of any type.
    pub fn skip(&mut self) -> Result<()> {
        match value_end(self.buf, self.pos)? {
            Some(e) => {
                self.pos = e;
                Ok(())
            }
            None => bail!("reply ends early"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        command(&mut out, &[b"XADD", b"k", b"*", b"e", b"v"]);
        assert_eq!(
            out,
            b"*5\r\n$4\r\nXADD\r\n$1\r\nk\r\n$1\r\n*\r\n$1\r\ne\r\n$1\r\nv\r\n"
        );
    }

    #[test]
    fn value_end_waits_for_a_complete_reply() {
        let reply =
            b"*1\r\n*2\r\n$1\r\nk\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\ne\r\n$2\r\nab\r\n";
        for cut in 0..reply.len() {
            assert_eq!(value_end(&reply[..cut], 0).ok(), Some(None), "cut at {cut}");
        }
        assert_eq!(value_end(reply, 0).ok(), Some(Some(reply.len())));
        assert_eq!(value_end(b"*-1\r\n", 0).ok(), Some(Some(5)));
        assert_eq!(value_end(b"$-1\r\n", 0).ok(), Some(Some(5)));
        assert!(value_end(b"?x\r\n", 0).is_err());

        let mut c = Cursor::new(reply);
        assert_eq!(c.array().ok(), Some(Some(1)));
        assert_eq!(c.array().ok(), Some(Some(2)));
        assert_eq!(c.bulk().ok(), Some(Some(&b"k"[..])));
        assert_eq!(c.array().ok(), Some(Some(1)));
        assert_eq!(c.array().ok(), Some(Some(2)));
        assert_eq!(c.bulk().ok(), Some(Some(&b"1-0"[..])));
        assert_eq!(c.array().ok(), Some(Some(2)));
        assert!(c.skip().is_ok());
        assert_eq!(c.bulk().ok(), Some(Some(&b"ab"[..])));
    }

    #[test]
    fn errors_are_reported() {
        let mut c = Cursor::new(b"-ERR nope\r\n");
        let e = c.array().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("ERR nope"), "{e}");
    }
}
