//! A small HTTP/2 client framing (RFC 9113) for the watchers scenario: this
//! project's streams, many on one cleartext connection (prior knowledge), read by
//! one task a connection.
//!
//! Owns: the bytes the client sends (the preface with its settings and a window
//! large enough that the server never waits for a `WINDOW_UPDATE`
//! ([`client_preface`]), a `GET` as a `HEADERS` frame ([`get`]), the answers the
//! protocol requires ([`settings_ack`], [`ping_ack`], [`window_update`])) and the
//! frames it reads ([`take_frames`]).
//!
//! Promises:
//! - [`take_frames`] takes only whole frames and hands each to its caller once,
//!   whatever the cut of its input; a frame over the size the client allows (the
//!   default 16 KiB) or a padding longer than its frame is an error naming it.
//! - Header blocks are not decoded: the server's answer to a `GET` is accepted
//!   only when its block starts with the static table's `:status: 200` (index 8),
//!   which is how an encoder writes it ([`is_status_200`]).
//!
//! Why not a full client: with 100,000 streams a client object and task per
//! stream cost the harness more CPU than the server spends on them, on the same
//! two cores (the NATS and Redis streams are read by small decoders too).

use anyhow::{bail, Result};

/// What a client sends first.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The largest frame payload a client accepts without saying otherwise.
pub const MAX_FRAME: usize = 16_384;
/// The largest flow-control window.
pub const MAX_WINDOW: u32 = (1 << 31) - 1;
/// A window's start before any `WINDOW_UPDATE`.
const INITIAL_WINDOW: u32 = 65_535;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// One frame read, borrowing from the input.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Body bytes of a stream (padding removed); `end` when the stream ends.
    Data {
        /// The stream.
        stream: u32,
        /// The bytes.
        data: &'a [u8],
        /// The last frame of the stream.
        end: bool,
        /// Bytes it counts against the flow-control windows (padding included).
        flow: usize,
    },
    /// A header block (padding and priority removed) of a stream.
    Headers {
        /// The stream.
        stream: u32,
        /// The HPACK block (or its first part).
        block: &'a [u8],
        /// The stream ends with it.
        end: bool,
    },
    /// The server's settings (to acknowledge), or its acknowledgement of ours.
    Settings {
        /// An acknowledgement.
        ack: bool,
    },
    /// A ping (to answer), or the answer to one of ours.
    Ping {
        /// An answer.
        ack: bool,
        /// Its 8 bytes.
        payload: [u8; 8],
    },
    /// A stream reset by the server.
    Reset {
        /// The stream.
        stream: u32,
        /// The error code.
        code: u32,
    },
    /// The connection is being closed by the server.
    GoAway {
        /// The error code.
        code: u32,
        /// Its debug data, if any.
        debug: &'a [u8],
    },
    /// Any other frame (`WINDOW_UPDATE`, `PRIORITY`, `CONTINUATION`, unknown
    /// types): nothing for this client to do.
    Other,
}

fn frame_head(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & MAX_WINDOW).to_be_bytes());
}

/// The client's preface: the magic, `SETTINGS` (no push, the largest stream
/// window) and a `WINDOW_UPDATE` that opens the connection's window as wide.
pub fn client_preface(out: &mut Vec<u8>) {
    out.extend_from_slice(PREFACE);
    frame_head(out, 12, SETTINGS, 0, 0);
    // SETTINGS_ENABLE_PUSH = 0, SETTINGS_INITIAL_WINDOW_SIZE = 2^31 - 1.
    out.extend_from_slice(&[0, 2, 0, 0, 0, 0]);
    out.extend_from_slice(&[0, 4]);
    out.extend_from_slice(&MAX_WINDOW.to_be_bytes());
    window_update(out, 0, MAX_WINDOW - INITIAL_WINDOW);
}

/// A `WINDOW_UPDATE` of `stream` (0: the connection) by `increment`.
pub fn window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    frame_head(out, 4, WINDOW_UPDATE, 0, stream);
    out.extend_from_slice(&(increment & MAX_WINDOW).to_be_bytes());
}

/// The acknowledgement of the server's `SETTINGS`.
pub fn settings_ack(out: &mut Vec<u8>) {
    frame_head(out, 0, SETTINGS, ACK, 0);
}

/// The answer to the server's `PING`.
pub fn ping_ack(out: &mut Vec<u8>, payload: [u8; 8]) {
    frame_head(out, 8, PING, ACK, 0);
    out.extend_from_slice(&payload);
}

/// HPACK: a string literal, not Huffman-coded.
fn hpack_string(out: &mut Vec<u8>, s: &str) {
    hpack_int(out, 0, 7, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// HPACK: an integer with an `n`-bit prefix after the bits `first`.
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// `GET http://authority/path` on `stream` (odd, growing), as one `HEADERS`
/// frame that also ends the request.
pub fn get(out: &mut Vec<u8>, stream: u32, authority: &str, path: &str) {
    let mut block = vec![0x82, 0x86]; // :method GET, :scheme http (static 2 and 6)
    block.push(0x04); // :path (static 4), literal value, not indexed
    hpack_string(&mut block, path);
    block.push(0x01); // :authority (static 1), literal value, not indexed
    hpack_string(&mut block, authority);
    frame_head(out, block.len(), HEADERS, END_STREAM | END_HEADERS, stream);
    out.extend_from_slice(&block);
}

/// Whether a response's header block says `:status: 200` first (static index 8).
pub fn is_status_200(block: &[u8]) -> bool {
    block.first() == Some(&0x88)
}

/// Takes the whole frames at the start of `input`, handing each to `on`; returns
/// how many bytes it took.
pub fn take_frames(input: &[u8], mut on: impl FnMut(Frame<'_>) -> Result<()>) -> Result<usize> {
    let mut at = 0;
    while input.len() - at >= 9 {
        let head = &input[at..at + 9];
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & MAX_WINDOW;
        if len > MAX_FRAME {
            bail!("a frame of type {kind} with {len} bytes, over the {MAX_FRAME} allowed");
        }
        if input.len() - at - 9 < len {
            break;
        }
        let payload = &input[at + 9..at + 9 + len];
        at += 9 + len;
        let frame = match kind {
            DATA => Frame::Data {
                stream,
                data: unpad(kind, flags, payload)?,
                end: flags & END_STREAM != 0,
                flow: len,
            },
            HEADERS => {
                let mut block = unpad(kind, flags, payload)?;
                if flags & PRIORITY != 0 {
                    if block.len() < 5 {
                        bail!("a HEADERS frame too short for its priority");
                    }
                    block = &block[5..];
                }
                Frame::Headers {
                    stream,
                    block,
                    end: flags & END_STREAM != 0,
                }
            }
            SETTINGS => Frame::Settings {
                ack: flags & ACK != 0,
            },
            PING => {
                let Ok(payload) = <[u8; 8]>::try_from(payload) else {
                    bail!("a PING of {len} bytes, not 8");
                };
                Frame::Ping {
                    ack: flags & ACK != 0,
                    payload,
                }
            }
            RST_STREAM if len == 4 => Frame::Reset {
                stream,
                code: u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]),
            },
            GOAWAY if len >= 8 => Frame::GoAway {
                code: u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]),
                debug: &payload[8..],
            },
            RST_STREAM | GOAWAY => bail!("a frame of type {kind} with {len} bytes"),
            _ => Frame::Other,
        };
        on(frame)?;
    }
    Ok(at)
}

/// A frame's payload without its padding.
fn unpad(kind: u8, flags: u8, payload: &[u8]) -> Result<&[u8]> {
    if flags & PADDED == 0 {
        return Ok(payload);
    }
    let Some((&pad, rest)) = payload.split_first() else {
        bail!("a padded frame of type {kind} without its pad length");
    };
    match rest.len().checked_sub(usize::from(pad)) {
        Some(keep) => Ok(&rest[..keep]),
        None => bail!("a frame of type {kind} with {pad} bytes of padding, longer than itself"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame_head(&mut out, payload.len(), kind, flags, stream);
        out.extend_from_slice(payload);
        out
    }

    /// What `take_frames` hands over, as owned values.
    #[derive(Debug, PartialEq, Eq)]
    enum Seen {
        Data(u32, Vec<u8>, bool, usize),
        Headers(u32, Vec<u8>),
        Settings(bool),
        Ping(bool, [u8; 8]),
        Reset(u32, u32),
        GoAway(u32),
        Other,
    }

    fn seen(f: Frame<'_>) -> Seen {
        match f {
            Frame::Data {
                stream,
                data,
                end,
                flow,
            } => Seen::Data(stream, data.to_vec(), end, flow),
            Frame::Headers { stream, block, .. } => Seen::Headers(stream, block.to_vec()),
            Frame::Settings { ack } => Seen::Settings(ack),
            Frame::Ping { ack, payload } => Seen::Ping(ack, payload),
            Frame::Reset { stream, code } => Seen::Reset(stream, code),
            Frame::GoAway { code, .. } => Seen::GoAway(code),
            Frame::Other => Seen::Other,
        }
    }

    #[test]
    fn frames_split_anywhere_are_each_taken_once_and_whole() {
        let mut wire = frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 200]);
        wire.extend(frame(
            HEADERS,
            END_HEADERS | PRIORITY,
            1,
            &[0, 0, 0, 0, 16, 0x88, 0x5f],
        ));
        wire.extend(frame(DATA, 0, 1, b"{\"seq\":1}\n"));
        // Padded: pad length 3, then the data, then 3 bytes of padding.
        wire.extend(frame(DATA, PADDED, 3, b"\x03abc\0\0\0"));
        wire.extend(frame(WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]));
        wire.extend(frame(PING, 0, 0, b"12345678"));
        wire.extend(frame(RST_STREAM, 0, 5, &[0, 0, 0, 8]));
        wire.extend(frame(GOAWAY, 0, 0, &[0, 0, 0, 7, 0, 0, 0, 2, b'x']));
        let want = vec![
            Seen::Settings(false),
            Seen::Headers(1, vec![0x88, 0x5f]),
            Seen::Data(1, b"{\"seq\":1}\n".to_vec(), false, 10),
            Seen::Data(3, b"abc".to_vec(), false, 7),
            Seen::Other,
            Seen::Ping(false, *b"12345678"),
            Seen::Reset(5, 8),
            Seen::GoAway(2),
        ];
        for cut in 0..=wire.len() {
            let mut got = Vec::new();
            let mut pending = wire[..cut].to_vec();
            let taken = take_frames(&pending, |f| {
                got.push(seen(f));
                Ok(())
            })
            .expect("valid");
            pending.drain(..taken);
            pending.extend_from_slice(&wire[cut..]);
            let taken = take_frames(&pending, |f| {
                got.push(seen(f));
                Ok(())
            })
            .expect("valid");
            assert_eq!(taken, pending.len(), "cut at {cut}");
            assert_eq!(got, want, "cut at {cut}");
        }
    }

    #[test]
    fn an_oversized_frame_or_padding_longer_than_its_frame_is_an_error() {
        let mut big = Vec::new();
        frame_head(&mut big, MAX_FRAME + 1, DATA, 0, 1);
        let e = take_frames(&big, |_| Ok(())).expect_err("too big");
        assert!(format!("{e:#}").contains("16385 bytes"), "{e:#}");
        let bad = frame(DATA, PADDED, 1, b"\x09abc");
        let e = take_frames(&bad, |_| Ok(())).expect_err("padding too long");
        assert!(format!("{e:#}").contains("padding"), "{e:#}");
    }

    #[test]
    fn a_get_is_one_headers_frame_ending_the_request() {
        let mut out = Vec::new();
        get(&mut out, 3, "127.0.0.1:80", "/diag/masterEvents?start=now");
        let mut frames = Vec::new();
        let taken = take_frames(&out, |f| {
            if let Frame::Headers { stream, block, end } = f {
                frames.push((stream, block.to_vec(), end));
            }
            Ok(())
        })
        .expect("valid");
        assert_eq!(taken, out.len());
        let [(stream, block, end)] = frames.as_slice() else {
            panic!("one HEADERS frame, got {frames:?}");
        };
        assert_eq!(*stream, 3);
        assert!(*end);
        let mut want = vec![0x82, 0x86, 0x04, 28];
        want.extend_from_slice(b"/diag/masterEvents?start=now");
        want.extend_from_slice(&[0x01, 12]);
        want.extend_from_slice(b"127.0.0.1:80");
        assert_eq!(*block, want);
    }

    #[test]
    fn hpack_integers_past_their_prefix_continue_in_seven_bit_groups() {
        // RFC 7541 C.1.2: 1337 with a 5-bit prefix.
        let mut out = Vec::new();
        hpack_int(&mut out, 0, 5, 1337);
        assert_eq!(out, [31, 154, 10]);
        let mut small = Vec::new();
        hpack_int(&mut small, 0x80, 7, 10);
        assert_eq!(small, [0x8a]);
    }

    #[test]
    fn the_preface_opens_both_windows_to_the_largest() {
        let mut out = Vec::new();
        client_preface(&mut out);
        assert!(out.starts_with(PREFACE));
        let mut seen_frames = Vec::new();
        take_frames(&out[PREFACE.len()..], |f| {
            seen_frames.push(seen(f));
            Ok(())
        })
        .expect("valid");
        assert_eq!(seen_frames, [Seen::Settings(false), Seen::Other]);
        let update = &out[out.len() - 4..];
        assert_eq!(
            u32::from_be_bytes([update[0], update[1], update[2], update[3]]) + INITIAL_WINDOW,
            MAX_WINDOW
        );
    }
}
