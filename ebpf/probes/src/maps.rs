//! Every map the programs share, in one place so their sizes are easy to review.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf, SockHash},
};
use spanhook_common::{
    ConnKey, ContextKey, GoidKey, GoroutineKey, H2ConnState, H2StreamKey, HttpClientInflight,
    HttpServerInflight, PendingTraceparent, TargetConfig, TraceIds,
};

/// Size of the event ring buffer in bytes (a power of two, multiple of the page size).
/// ≈ 3 000 server records. User space maps the data pages twice and all of them are resident
/// in the agent, so this size counts double in its RSS.
pub const EVENTS_BYTES: u32 = 2 << 20;

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

/// Go HTTP client requests in progress, keyed by the calling goroutine.
#[map]
pub static HTTP_CLIENT_INFLIGHT: LruHashMap<GoroutineKey, HttpClientInflight> =
    LruHashMap::with_max_entries(16384, 0);

/// Server spans in progress by the address of their request's `context.Context`: a client
/// call whose context descends from it is its child, whichever goroutine makes it.
#[map]
pub static CONTEXT_SPANS: LruHashMap<ContextKey, TraceIds> = LruHashMap::with_max_entries(16384, 0);

/// Server spans in progress by goid, for calls made by goroutines the handler started.
#[map]
pub static GOID_SPANS: LruHashMap<GoidKey, TraceIds> = LruHashMap::with_max_entries(16384, 0);

/// `traceparent` values waiting to be written into the next request on a connection.
#[map]
pub static PENDING_TRACEPARENT: LruHashMap<ConnKey, PendingTraceparent> =
    LruHashMap::with_max_entries(16384, 0);

/// `traceparent` values waiting for the HEADERS frame of one HTTP/2 stream.
#[map]
pub static H2_PENDING: LruHashMap<H2StreamKey, PendingTraceparent> =
    LruHashMap::with_max_entries(16384, 0);

/// HTTP/2 client connections whose frames the `sk_msg` program follows.
#[map]
pub static H2_CONNS: LruHashMap<ConnKey, H2ConnState> = LruHashMap::with_max_entries(16384, 0);

/// Sockets of traced processes whose `connect()` is in progress, by socket cookie.
#[map]
pub static CONNECTING: LruHashMap<u64, u32> = LruHashMap::with_max_entries(16384, 0);

/// Client sockets of traced processes with propagation on; the `sk_msg` program runs on them.
#[map]
pub static SOCKETS: SockHash<u64> = SockHash::with_max_entries(65536, 0);

/// Loss and failure counters, one slot per [`spanhook_common::Counter`].
#[map]
pub static COUNTERS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(spanhook_common::Counter::COUNT, 0);

/// Size of the window of the request head scanned for `traceparent`.
pub const HEAD_WINDOW: usize = 1024;

/// Mask applied to every scratch index; a power of two above the window and its padding.
pub const SCAN_MASK: usize = 2047;

/// Cursor and result of a head scan, kept in map memory (see scan.rs).
#[repr(C)]
pub struct ScanState {
    /// What the scan looks for.
    pub mode: u64,
    /// Current position (padded index).
    pub cursor: u64,
    /// End of the copied bytes for forward scans (padded index).
    pub limit: u64,
    /// Result (padded index), 0 when nothing was found.
    pub found: u64,
}

/// Per-CPU scratch space: the BPF stack is 512 bytes, too small for a request head.
#[repr(C)]
pub struct Scratch {
    /// State of the scan in progress.
    pub scan: ScanState,
    /// Copy of a request head, after eight bytes of padding. It extends past [`SCAN_MASK`] by
    /// more than any look-ahead (a header value is 55 bytes), so masked indices never need a
    /// bounds check.
    pub head: [u8; SCAN_MASK + 1 + 128],
}

/// One [`Scratch`] per CPU.
#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);
