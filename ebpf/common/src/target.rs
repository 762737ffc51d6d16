//! Per-process configuration user space writes for the probes.

use crate::field::{GoField, MAX_FIELDS, OFFSET_ABSENT};

/// What the probes need to know about one traced process, keyed by its tgid in `TARGETS`.
/// A process without an entry is ignored by every probe, which is also how probes attached
/// to a shared executable are limited to the processes the user selected.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetConfig {
    /// Field offsets, indexed by [`GoField::slot`]; [`OFFSET_ABSENT`] where unknown.
    pub offsets: [u16; MAX_FIELDS],
    /// Bit set of `TargetConfig::FLAG_*`.
    pub flags: u32,
    /// Explicit padding; always zero.
    pub _pad: u32,
    /// Argument positions that differ between library releases, indexed by [`ArgSlot`].
    pub args: [u8; 8],
}

/// Which argument word of a probed function holds a value, where releases disagree.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgSlot {
    /// The `*MetaHeadersFrame` of grpc-go's `http2Server.operateHeaders` (1 before v1.60,
    /// 3 after, when a context parameter came first).
    GrpcHeadersFrame = 0,
    /// The stream passed to grpc-go's `WriteStatus` (1 on `http2Server`, 0 on `ServerStream`
    /// from v1.69).
    GrpcStatusStream = 1,
    /// The `*status.Status` passed to `WriteStatus`.
    GrpcStatusValue = 2,
}

impl TargetConfig {
    // Flag bits by capability: 0–7 Go HTTP, 8–15 Go gRPC, 16–23 Rust, 24–31 socket level.

    /// Read the incoming `traceparent` from the connection's read buffer (HTTP/1 servers).
    pub const FLAG_SERVER_TRACEPARENT: u32 = 1 << 0;
    /// Outgoing HTTP/1 requests get a `traceparent` on the wire (opt-in `--propagate`).
    pub const FLAG_PROPAGATE: u32 = 1 << 1;
    /// grpc-go's server stream embeds `*Stream` (a pointer, v1.69–v1.76) rather than `Stream`.
    pub const FLAG_GRPC_STREAM_POINTER: u32 = 1 << 8;
    /// Outgoing grpc-go RPCs get a `traceparent` in their HEADERS frame (opt-in `--propagate`).
    pub const FLAG_GRPC_PROPAGATE: u32 = 1 << 9;

    /// A configuration with every offset absent and no flags.
    pub const fn empty() -> Self {
        Self {
            offsets: [OFFSET_ABSENT; MAX_FIELDS],
            flags: 0,
            _pad: 0,
            args: [0; 8],
        }
    }

    /// The offset of `field`, or `None` when this target does not have it.
    #[inline(always)]
    pub fn offset(&self, field: GoField) -> Option<u64> {
        match self.offsets.get(field.slot()) {
            Some(&off) if off != OFFSET_ABSENT => Some(off as u64),
            _ => None,
        }
    }

    /// The argument word number recorded for `slot`.
    #[inline(always)]
    pub fn arg(&self, slot: ArgSlot) -> usize {
        match self.args.get(slot as usize) {
            Some(&n) => n as usize,
            None => 0,
        }
    }

    /// Records the offset of `field`.
    pub fn set_offset(&mut self, field: GoField, offset: u16) {
        self.offsets[field.slot()] = offset;
    }
}

impl Default for TargetConfig {
    fn default() -> Self {
        Self::empty()
    }
}

const _: () = assert!(core::mem::size_of::<TargetConfig>() == MAX_FIELDS * 2 + 16);
