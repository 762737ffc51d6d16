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

const _: () = assert!(core::mem::size_of::<H2StreamKey>() == 32);
const _: () = assert!(core::mem::size_of::<H2ConnState>() == 32);
const _: () = assert!(HPACK_TRACEPARENT_LEN == 69);
