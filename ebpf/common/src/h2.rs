//! `traceparent` on outgoing HTTP/2 requests: what the client probes queue for a stream and
//! what the `sk_msg` program remembers of each connection's framing.
//!
//! The header is added to a HEADERS frame's block as an HPACK "literal header field without
//! indexing, new name" ([RFC 7541 §6.2.2]): the receiver decodes it without touching its
//! dynamic table, so the connection's compression state stays the same on both ends.
//!
//! [RFC 7541 §6.2.2]: https://www.rfc-editor.org/rfc/rfc7541#section-6.2.2

use crate::{ConnKey, PendingTraceparent};

/// Bytes of an HTTP/2 frame header.
pub const FRAME_HEADER_LEN: usize = 9;
/// Frame type HEADERS.
pub const FRAME_HEADERS: u8 = 0x1;
/// Flag END_HEADERS: the block is complete in this frame (no CONTINUATION follows).
pub const FLAG_END_HEADERS: u8 = 0x4;
/// Flag PADDED: the payload ends in padding, so the block does not end the frame.
pub const FLAG_PADDED: u8 = 0x8;
/// The smallest SETTINGS_MAX_FRAME_SIZE a peer may announce: a grown frame must stay within it.
pub const MAX_FRAME_PAYLOAD: u32 = 16384;
/// Bytes of the encoded field: 0x00, name length, "traceparent", value length, the value.
pub const HPACK_TRACEPARENT_LEN: usize = 1 + 1 + 11 + 1 + 55;
/// What every HTTP/2 client connection starts with.
pub const CLIENT_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Key of a `traceparent` queued for one stream of one client connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct H2StreamKey {
    /// The connection.
    pub conn: ConnKey,
    /// HTTP/2 stream id the request opens.
    pub stream_id: u32,
    /// Explicit padding; always zero.
    pub _pad: u32,
}

/// The queued value for an [`H2StreamKey`].
pub type H2PendingTraceparent = PendingTraceparent;

/// What the `sk_msg` program knows of one HTTP/2 client connection's byte stream.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct H2ConnState {
    /// The process the connection belongs to (for clean-up when it is detached).
    pub tgid: u32,
    /// Bytes of a frame begun in an earlier write that the next write starts with.
    pub skip: u32,
    /// 1 when frame boundaries are known ([`H2ConnState::skip`] is meaningful), 0 when the
    /// connection predates the agent or a write had more frames than the program follows;
    /// a hint, or a write that is a whole number of frames, brings it back.
    pub synced: u32,
    /// A frame boundary the client probe saw coming while the framing was unknown: the
    /// HEADERS frame of stream [`H2ConnState::hint_stream`] starts `hint_at` bytes into the
    /// connection's next write (grpc-go's buffered bytes when it encoded the frame).
    pub hint_at: u32,
    /// The hinted stream, 0 for no hint.
    pub hint_stream: u32,
    /// While a write is held back (`bpf_msg_cork_bytes`) until the frame at its end is
    /// whole: that frame's HEADERS stream, or [`CORKED_CUT_HEADER`] when its header was cut;
    /// 0 when nothing is held.
    pub corked_stream: u32,
    /// Offset of that frame in the held bytes.
    pub corked_at: u32,
    /// Where the held write's first frame header is (the walk restarts there).
    pub corked_start: u32,
}

/// [`H2ConnState::corked_stream`] when the held write ended inside a frame header.
pub const CORKED_CUT_HEADER: u32 = u32::MAX;

/// Frames walked in one write at most: more than grpc-go's 32 KiB buffer can hold (a frame
/// is at least its 9-byte header). A write with more loses the framing until a hint or a
/// write of whole frames brings it back.
pub const MAX_FRAMES: u32 = 4096;
/// HEADERS frames noted in one write at most (a power of two, for the index mask); the
/// field is added to the first ones.
pub const MAX_HEADERS: u32 = 1024;

// What follows is the framing logic of the `sk_msg` program (ebpf/probes/src/socket/h2.rs)
// without its helper calls, so that the same code also runs on the host, in the `h2_hpack`
// fuzz target: the probe passes closures that read the message, the fuzz target closures that
// read a buffer.

/// One frame header ([RFC 9113 §4.1]).
///
/// [RFC 9113 §4.1]: https://www.rfc-editor.org/rfc/rfc9113#section-4.1
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length (24 bits).
    pub len: u32,
    /// Frame type.
    pub ty: u8,
    /// Flags.
    pub flags: u8,
    /// Stream id, reserved bit included.
    pub stream: u32,
}

impl FrameHeader {
    /// Decodes the nine bytes of a frame header.
    #[inline(always)]
    pub fn decode(b: &[u8; FRAME_HEADER_LEN]) -> Self {
        FrameHeader {
            len: (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32,
            ty: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]),
        }
    }

    /// Whether the header could be one a client writes ([RFC 9113 §6]): a defined type, the
    /// reserved bit clear, the stream rule and fixed length of its type, no larger than the
    /// smallest frame size a peer may allow.
    ///
    /// [RFC 9113 §6]: https://www.rfc-editor.org/rfc/rfc9113#section-6
    #[inline(always)]
    pub fn plausible(&self) -> bool {
        if self.len > MAX_FRAME_PAYLOAD || self.stream & 0x8000_0000 != 0 {
            return false;
        }
        match self.ty {
            // DATA, HEADERS, CONTINUATION.
            0 | 1 | 9 => self.stream != 0,
            // PRIORITY.
            2 => self.stream != 0 && self.len == 5,
            // RST_STREAM.
            3 => self.stream != 0 && self.len == 4,
            // SETTINGS.
            4 => self.stream == 0 && self.len.is_multiple_of(6),
            // PING.
            6 => self.stream == 0 && self.len == 8,
            // GOAWAY.
            7 => self.stream == 0 && self.len >= 8,
            // WINDOW_UPDATE.
            8 => self.len == 4,
            // PUSH_PROMISE (servers only) and anything undefined.
            _ => false,
        }
    }

    /// Whether the field can be appended to the frame's block: a HEADERS frame whose block
    /// ends with it (END_HEADERS) and is not followed by padding.
    #[inline(always)]
    pub fn takes_field(&self) -> bool {
        self.ty == FRAME_HEADERS
            && self.flags & FLAG_END_HEADERS != 0
            && self.flags & FLAG_PADDED == 0
    }

    /// The payload length with the field added, if the frame stays within
    /// [`MAX_FRAME_PAYLOAD`].
    #[inline(always)]
    pub fn grown_len(&self) -> Option<u32> {
        let len = self.len + HPACK_TRACEPARENT_LEN as u32;
        (len <= MAX_FRAME_PAYLOAD).then_some(len)
    }
}

/// The three length bytes of a frame header.
#[inline(always)]
pub fn encode_len(len: u32) -> [u8; 3] {
    [(len >> 16) as u8, (len >> 8) as u8, len as u8]
}

/// The HPACK field for a 55-byte `traceparent` value: a literal without indexing, new name
/// (0x00), name and value without Huffman coding.
#[inline(always)]
pub fn encode_field(value: &[u8], out: &mut [u8; HPACK_TRACEPARENT_LEN]) {
    out[0] = 0x00;
    out[1] = 11;
    out[2..13].copy_from_slice(b"traceparent");
    out[13] = 55;
    out[14..].copy_from_slice(value);
}

/// [`FrameWalk::outcome`] while walking.
pub const WALKING: u32 = 0;
/// [`FrameWalk::outcome`]: the walk reached the end of the write.
pub const WALKED: u32 = 1;
/// [`FrameWalk::outcome`]: the walk met an implausible or cut frame header.
pub const LOST: u32 = 2;

/// A walk over the frame headers of one write.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameWalk {
    /// Bytes in the write.
    pub size: u32,
    /// Offset of the next frame header.
    pub at: u32,
    /// Bytes of the last frame beyond the write, once walked.
    pub rest: u32,
    /// [`WALKING`], [`WALKED`] or [`LOST`].
    pub outcome: u32,
    /// What the write ends inside of: the stream of a HEADERS frame that could take a field,
    /// [`CORKED_CUT_HEADER`] for a cut frame header, 0 otherwise.
    pub split_stream: u32,
    /// Offset of that frame.
    pub split_at: u32,
}

impl FrameWalk {
    /// A walk over a write of `size` bytes from the frame header at `at`.
    #[inline(always)]
    pub fn new(size: u32, at: u32) -> Self {
        FrameWalk {
            size,
            at,
            ..FrameWalk::default()
        }
    }

    /// Takes the frame at [`FrameWalk::at`], whose header `read` gives when all nine bytes
    /// are in the write. Returns whether the walk is over (then see
    /// [`FrameWalk::outcome`]), and the offset of the frame when it is a HEADERS frame,
    /// wholly in the write, that can take the field.
    #[inline(always)]
    pub fn step(&mut self, read: impl FnOnce(u32) -> Option<FrameHeader>) -> (bool, Option<u32>) {
        let (at, size) = (self.at, self.size);
        if at == size {
            self.outcome = WALKED;
            return (true, None);
        }
        // Wrapping, as in the kernel: a start past the end is read, fails, and is lost.
        if size.wrapping_sub(at) < FRAME_HEADER_LEN as u32 {
            // The write ends inside a frame header: where the frame ends is not known yet.
            self.split_stream = CORKED_CUT_HEADER;
            self.split_at = at;
            self.outcome = LOST;
            return (true, None);
        }
        let Some(f) = read(at).filter(FrameHeader::plausible) else {
            self.outcome = LOST;
            return (true, None);
        };
        let end = at as u64 + FRAME_HEADER_LEN as u64 + f.len as u64;
        let takes_field = f.takes_field();
        let noted = (takes_field && end <= size as u64).then_some(at);
        if end >= size as u64 {
            self.rest = (end - size as u64) as u32;
            if takes_field && end > size as u64 {
                self.split_stream = f.stream;
                self.split_at = at;
            }
            self.outcome = WALKED;
            return (true, noted);
        }
        self.at = end as u32;
        (false, noted)
    }
}

/// Where the walk of a write starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteStart {
    /// The whole write lies inside a frame begun earlier: it passes as it is.
    Inside,
    /// The bytes held back came again without the frame they were held for (the kernel sent
    /// them when its message was full): the framing is lost.
    Lost,
    /// From offset `at`; `known` when that is a frame boundary rather than a guess.
    At {
        /// Offset of the first frame header.
        at: u32,
        /// Whether `at` is known to be a frame boundary.
        known: bool,
    },
}

/// What a walked write leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterWalk {
    /// Hold the write back until `until` bytes are there (`bpf_msg_cork_bytes`); the
    /// program runs again over them.
    Hold {
        /// Bytes to wait for.
        until: u32,
    },
    /// The framing is known: add the fields to the HEADERS frames noted.
    Synced,
    /// The framing is lost.
    Lost,
}

impl H2ConnState {
    /// Where to walk a write of `size` bytes from; `read` gives the frame header at an
    /// offset when all nine bytes are in the write. Takes the hint, if any.
    #[inline(always)]
    pub fn write_start(
        &mut self,
        size: u32,
        read: impl Fn(u32) -> Option<FrameHeader>,
    ) -> WriteStart {
        // A hint is good for one write: the one the client probe saw coming.
        let (hint_at, hint_stream) = (self.hint_at, self.hint_stream);
        self.hint_stream = 0;
        if self.corked_stream != 0 {
            // The bytes held back, and now more: the same frame must be where it was.
            let (stream, at) = (self.corked_stream, self.corked_at);
            self.corked_stream = 0;
            let same = read(at).is_some_and(|f| {
                f.plausible()
                    && (stream == CORKED_CUT_HEADER
                        || (f.ty == FRAME_HEADERS && f.stream == stream))
            });
            if !same {
                self.synced = 0;
                return WriteStart::Lost;
            }
            WriteStart::At {
                at: self.corked_start,
                known: true,
            }
        } else if self.synced != 0 {
            if self.skip >= size {
                self.skip -= size;
                return WriteStart::Inside;
            }
            WriteStart::At {
                at: self.skip,
                known: true,
            }
        } else if hint_stream != 0 {
            let hinted = hint_at < size
                && read(hint_at).is_some_and(|f| {
                    f.ty == FRAME_HEADERS && f.stream == hint_stream && f.plausible()
                });
            WriteStart::At {
                at: if hinted { hint_at } else { 0 },
                known: hinted,
            }
        } else {
            WriteStart::At {
                at: 0,
                known: false,
            }
        }
    }

    /// Settles a walk that started at `start` (`known`: a frame boundary): holds the write
    /// back when it ends inside a frame header, or inside a HEADERS frame whose stream has a
    /// value queued (`queued(stream)`), else records where the next write starts.
    #[inline(always)]
    pub fn after_walk(
        &mut self,
        walk: &FrameWalk,
        start: u32,
        known: bool,
        queued: impl FnOnce(u32) -> bool,
    ) -> AfterWalk {
        let split = walk.split_stream;
        let hold = (walk.outcome == WALKED || split == CORKED_CUT_HEADER)
            && known
            && match split {
                0 => false,
                CORKED_CUT_HEADER => true,
                stream => queued(stream),
            };
        if hold {
            let until = if split == CORKED_CUT_HEADER {
                walk.split_at + FRAME_HEADER_LEN as u32
            } else {
                walk.size + walk.rest
            };
            self.corked_stream = split;
            self.corked_at = walk.split_at;
            self.corked_start = start;
            return AfterWalk::Hold { until };
        }
        match walk.outcome {
            // A guessed start is confirmed by frames that end exactly with the write.
            WALKED if walk.rest == 0 => {
                self.synced = 1;
                self.skip = 0;
                self.hint_stream = 0;
                AfterWalk::Synced
            }
            // Ends inside a frame: trusted only when the walk started from a known boundary.
            WALKED if known => {
                self.synced = 1;
                self.skip = walk.rest;
                AfterWalk::Synced
            }
            _ => {
                self.synced = 0;
                AfterWalk::Lost
            }
        }
    }
}

const _: () = assert!(core::mem::size_of::<H2StreamKey>() == 32);
const _: () = assert!(core::mem::size_of::<H2ConnState>() == 32);
const _: () = assert!(core::mem::size_of::<FrameWalk>() == 24);
const _: () = assert!(HPACK_TRACEPARENT_LEN == 69);
