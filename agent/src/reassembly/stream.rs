//! One direction of a connection: HTTP/1 message framing over a byte stream that arrives in
//! pieces (one per call), of which only a prefix of each piece may have been copied.
//!
//! Byte counts are always known (the call's return value), so bodies are skipped by count
//! whether or not their bytes were copied: a body is never parsed, and bytes in it that look
//! like HTTP cannot start a message. Heads, chunk-size lines and trailers must be copied to
//! be read; when one falls where bytes are missing, the stream has lost its place and waits
//! for the next call that begins with a message start.

use super::head::{self, chunk_size, Framing, Kind, Start};

/// Longest head accepted; a longer one is malformed traffic (servers refuse 8–64 KB).
pub const MAX_HEAD_BYTES: usize = 32 << 10;
/// Longest chunk-size or trailer line accepted.
const MAX_LINE_BYTES: usize = 1024;

/// When a piece of a stream was seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Time {
    /// The call's entry, `CLOCK_MONOTONIC` nanoseconds.
    pub start_ns: u64,
    /// The call's return.
    pub end_ns: u64,
}

/// Why a stream lost its place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lost {
    /// Bytes of a head were not copied (a head longer than the copied prefix of its call,
    /// too many iovecs, a body sent from a file where a head was due).
    HeadNotCaptured,
    /// A head longer than [`MAX_HEAD_BYTES`].
    HeadTooLong,
    /// A head, chunk line or trailer that is not HTTP/1.
    Malformed,
}

impl Lost {
    /// A short reason for spans and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Lost::HeadNotCaptured => "bytes of the message head were not captured",
            Lost::HeadTooLong => "message head too long",
            Lost::Malformed => "malformed message",
        }
    }
}

/// What a stream tells the connection.
pub trait Framer {
    /// A complete head (through its blank line) began at `first` and ended in `time`; returns
    /// how its body is delimited, or `None` when it is not a usable head of this kind.
    fn head(&mut self, kind: Kind, head: &[u8], first: Time, time: Time) -> Option<Framing>;
    /// The message whose head was last accepted ended in `time`.
    fn complete(&mut self, kind: Kind, time: Time);
    /// The stream lost its place. `head` holds what had been read of a head that could not
    /// be finished (empty when the loss is in a body).
    fn lost(&mut self, kind: Kind, why: Lost, head: &[u8], first: Time, time: Time);
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// The next byte begins a message, or the stream waits for a call that begins with one.
    Boundary,
    /// Reading a head.
    Head,
    /// `left` bytes of a `Content-Length` body.
    Body { left: u64 },
    /// Reading a chunk-size line.
    ChunkSize,
    /// `left` bytes of chunk data.
    ChunkData { left: u64 },
    /// The line ending after chunk data (`cr`: its CR was read).
    ChunkEnd { cr: bool },
    /// Trailer lines until a blank one; `empty` while the current line has no content yet.
    Trailer { empty: bool },
    /// The body runs until the connection closes.
    UntilClose,
    /// A chunked body whose framing fell in bytes that were not copied: it ends at a call
    /// that finishes with the last chunk (`0` CRLF CRLF), before a call that starts the next
    /// message, or at the close.
    Blind,
    /// No HTTP/1 any more (`101`, `CONNECT`).
    Tunnel,
}

/// One direction of a connection.
#[derive(Debug)]
pub struct Stream {
    /// What the stream carries.
    pub kind: Kind,
    state: State,
    /// Bytes of the head, chunk line or trailer line being read.
    buf: Vec<u8>,
    /// The piece where the head being read began.
    first: Time,
    /// The last piece seen.
    pub last: Time,
    /// The piece before it.
    previous: Time,
    /// Calls in a row that began with something other than a message start.
    pub misses: u32,
    /// Messages whose head was accepted.
    pub messages: u64,
}

impl Stream {
    /// A stream of `kind` waiting for its first message.
    pub fn new(kind: Kind) -> Self {
        Stream {
            kind,
            state: State::Boundary,
            buf: Vec::new(),
            first: Time::default(),
            last: Time::default(),
            previous: Time::default(),
            misses: 0,
            messages: 0,
        }
    }

    /// Starts over as a stream of `kind` (when the connection's role becomes known).
    pub fn reset(&mut self, kind: Kind) {
        *self = Stream {
            last: self.last,
            ..Stream::new(kind)
        };
    }

    /// Whether the body in progress ends with the connection's close (delimited by it, or
    /// chunked with its framing lost).
    pub fn until_close(&self) -> bool {
        matches!(self.state, State::UntilClose | State::Blind)
    }

    /// Whether a message is in progress (head read, body not finished).
    pub fn in_message(&self) -> bool {
        !matches!(self.state, State::Boundary | State::Tunnel)
    }

    /// Stops reading HTTP/1 on this stream.
    pub fn tunnel(&mut self) {
        self.state = State::Tunnel;
        self.buf = Vec::new();
    }

    /// Whether the stream stopped carrying HTTP/1.
    pub fn is_tunnel(&self) -> bool {
        self.state == State::Tunnel
    }

    fn lose(&mut self, why: Lost, time: Time, f: &mut dyn Framer) {
        let head = if self.state == State::Head {
            std::mem::take(&mut self.buf)
        } else {
            Vec::new()
        };
        f.lost(self.kind, why, &head, self.first, time);
        self.buf.clear();
        self.state = State::Boundary;
    }

    fn body(&mut self, framing: Framing, time: Time, f: &mut dyn Framer) {
        self.state = match framing {
            Framing::None => {
                f.complete(self.kind, time);
                State::Boundary
            }
            Framing::Length(left) => State::Body { left },
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
            Framing::Tunnel => State::Tunnel,
        }
    }

    /// Feeds one call's piece: `len` bytes moved, of which `bytes` (a prefix) were copied.
    pub fn feed(&mut self, bytes: &[u8], len: u64, time: Time, f: &mut dyn Framer) {
        self.previous = self.last;
        self.last = time;
        let captured = (bytes.len() as u64).min(len);
        let mut p = 0u64;
        if self.state == State::Blind {
            if head::start(bytes, self.kind) == Start::Yes {
                // The next message: the body ended with the call before.
                self.state = State::Boundary;
                f.complete(self.kind, self.previous);
            } else {
                // The last chunk (and no trailer) ends the call: the body ends here.
                let last = bytes == b"0\r\n\r\n" || bytes.ends_with(b"\r\n0\r\n\r\n");
                if captured == len && last {
                    self.state = State::Boundary;
                    f.complete(self.kind, time);
                }
                return;
            }
        }
        while p < len {
            let avail: &[u8] = if p < captured {
                &bytes[p as usize..captured as usize]
            } else {
                &[]
            };
            match self.state {
                State::Tunnel | State::UntilClose | State::Blind => return,
                State::Boundary => {
                    if avail.is_empty() {
                        // A message boundary inside bytes that were not copied.
                        self.misses += 1;
                        return;
                    }
                    match head::start(avail, self.kind) {
                        Start::No => {
                            self.misses += 1;
                            return;
                        }
                        Start::Yes | Start::NeedMore => {
                            self.state = State::Head;
                            self.buf.clear();
                            self.first = time;
                        }
                    }
                }
                State::Head => {
                    if avail.is_empty() {
                        self.lose(Lost::HeadNotCaptured, time, f);
                        return;
                    }
                    let before = self.buf.len();
                    let room = MAX_HEAD_BYTES.saturating_sub(before);
                    let take = avail.len().min(room);
                    self.buf.extend_from_slice(&avail[..take]);
                    // Only the new bytes (and the three before them) can end the head.
                    let from = before.saturating_sub(3);
                    match head::head_end(&self.buf[from..]) {
                        Some(end) => {
                            let end = from + end;
                            p += (end - before) as u64;
                            self.buf.truncate(end);
                            let head = std::mem::take(&mut self.buf);
                            match f.head(self.kind, &head, self.first, time) {
                                Some(framing) => {
                                    self.misses = 0;
                                    self.messages += 1;
                                    self.body(framing, time, f);
                                }
                                None => {
                                    // Not a message after all: skip the rest of this call.
                                    self.state = State::Boundary;
                                    self.misses += 1;
                                    return;
                                }
                            }
                            self.buf = head;
                            self.buf.clear();
                        }
                        None => {
                            if head::start(&self.buf, self.kind) == Start::No {
                                self.buf.clear();
                                self.state = State::Boundary;
                                self.misses += 1;
                                return;
                            }
                            if take < avail.len() || self.buf.len() >= MAX_HEAD_BYTES {
                                self.lose(Lost::HeadTooLong, time, f);
                                return;
                            }
                            p += take as u64;
                        }
                    }
                }
                State::Body { left } => {
                    let n = left.min(len - p);
                    p += n;
                    if n == left {
                        self.state = State::Boundary;
                        f.complete(self.kind, time);
                    } else {
                        self.state = State::Body { left: left - n };
                    }
                }
                State::ChunkData { left } => {
                    let n = left.min(len - p);
                    p += n;
                    self.state = if n == left {
                        State::ChunkEnd { cr: false }
                    } else {
                        State::ChunkData { left: left - n }
                    };
                }
                State::ChunkEnd { cr } => {
                    let Some(&b) = avail.first() else {
                        // Not copied: when exactly the line ending is left of this call, the
                        // next chunk-size line starts the next call (one chunk per write).
                        self.state = if len - p == 2 - cr as u64 {
                            State::ChunkSize
                        } else {
                            State::Blind
                        };
                        return;
                    };
                    p += 1;
                    match b {
                        b'\r' if !cr => self.state = State::ChunkEnd { cr: true },
                        b'\n' => self.state = State::ChunkSize,
                        _ => {
                            self.lose(Lost::Malformed, time, f);
                            return;
                        }
                    }
                }
                State::ChunkSize => {
                    if avail.is_empty() {
                        self.state = State::Blind;
                        return;
                    }
                    match avail.iter().position(|&b| b == b'\n') {
                        Some(n) => {
                            p += n as u64 + 1;
                            self.buf.extend_from_slice(&avail[..n]);
                            let line = std::mem::take(&mut self.buf);
                            let line = line.strip_suffix(b"\r").unwrap_or(&line);
                            match chunk_size(line) {
                                Some(0) => self.state = State::Trailer { empty: true },
                                Some(size) => self.state = State::ChunkData { left: size },
                                None => {
                                    self.lose(Lost::Malformed, time, f);
                                    return;
                                }
                            }
                        }
                        None => {
                            p += avail.len() as u64;
                            self.buf.extend_from_slice(avail);
                            if self.buf.len() > MAX_LINE_BYTES {
                                self.lose(Lost::Malformed, time, f);
                                return;
                            }
                        }
                    }
                }
                State::Trailer { empty } => {
                    let Some(&b) = avail.first() else {
                        self.state = State::Blind;
                        return;
                    };
                    p += 1;
                    match b {
                        b'\n' if empty => {
                            self.buf.clear();
                            self.state = State::Boundary;
                            f.complete(self.kind, time);
                        }
                        b'\n' => {
                            self.buf.clear();
                            self.state = State::Trailer { empty: true };
                        }
                        b'\r' => {}
                        _ => {
                            self.buf.push(b);
                            if self.buf.len() > MAX_LINE_BYTES {
                                self.lose(Lost::Malformed, time, f);
                                return;
                            }
                            self.state = State::Trailer { empty: false };
                        }
                    }
                }
            }
        }
    }
}
