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
}

impl TargetConfig {
    // Flag bits by capability: 0–7 Go HTTP, 8–15 Go gRPC, 16–23 Rust, 24–31 socket level.

    /// Read the incoming `traceparent` from the connection's read buffer (HTTP/1 servers).
    pub const FLAG_SERVER_TRACEPARENT: u32 = 1 << 0;
    /// Outgoing HTTP/1 requests get a `traceparent` on the wire (opt-in `--propagate`).
    pub const FLAG_PROPAGATE: u32 = 1 << 1;

    /// A configuration with every offset absent and no flags.
    pub const fn empty() -> Self {
        Self {
            offsets: [OFFSET_ABSENT; MAX_FIELDS],
            flags: 0,
            _pad: 0,
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

const _: () = assert!(core::mem::size_of::<TargetConfig>() == MAX_FIELDS * 2 + 8);
