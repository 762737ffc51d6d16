//! Every map the programs share, in one place so their sizes are easy to review.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use spanhook_common::{GoroutineKey, HttpServerInflight, TargetConfig};

/// Size of the event ring buffer in bytes (a power of two, multiple of the page size).
pub const EVENTS_BYTES: u32 = 4 << 20;

/// Finished operations, read by user space.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Processes being traced and what the probes need to know about each, keyed by tgid.
#[map]
pub static TARGETS: HashMap<u32, TargetConfig> = HashMap::with_max_entries(4096, 0);

/// Go HTTP server requests in progress, keyed by goroutine. LRU so that requests whose
/// handler never returns (a panic unwinds past the return probe) cannot fill the map.
#[map]
pub static HTTP_SERVER_INFLIGHT: LruHashMap<GoroutineKey, HttpServerInflight> =
    LruHashMap::with_max_entries(16384, 0);

/// Loss and failure counters, one slot per [`spanhook_common::Counter`].
#[map]
pub static COUNTERS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(spanhook_common::Counter::COUNT, 0);

/// Size of the window of the request head scanned for `traceparent`.
pub const HEAD_WINDOW: usize = 1024;

/// Mask applied to every scratch index; a power of two above the window and its padding.
pub const SCAN_MASK: usize = 2047;

/// Per-CPU scratch space: the BPF stack is 512 bytes, too small for a request head.
#[repr(C)]
pub struct Scratch {
    /// Copy of the end of the connection's read buffer, after eight bytes of padding. It
    /// extends past [`SCAN_MASK`] by more than any look-ahead (a header value is 55 bytes),
    /// so masked indices never need a bounds check.
    pub head: [u8; SCAN_MASK + 1 + 128],
}

/// One [`Scratch`] per CPU.
#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);
