//! Maps of the Rust probes.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray},
};
use spanhook_common::{
    rust::RUST_HEAD_WINDOW, PendingTraceparent, RustClientInflight, RustEncodeStash, RustLearned,
    RustPtrKey, RustServerInflight, Str, TraceIds,
};

/// The tokio task each thread is polling, by `pid_tgid` (set at every `task::raw::poll`).
#[map]
pub static RUST_CURRENT_TASK: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);

/// Server spans in progress by the task that serves them (a hyper connection task runs its
/// handlers), so calls made by a handler find their parent.
#[map]
pub static RUST_TASK_SPANS: LruHashMap<RustPtrKey, TraceIds> =
    LruHashMap::with_max_entries(16384, 0);

/// hyper server requests between head and response, by connection pointer. LRU: a request
/// whose response is never written (the peer went away) must not fill the map.
#[map]
pub static RUST_SERVER_INFLIGHT: LruHashMap<RustPtrKey, RustServerInflight> =
    LruHashMap::with_max_entries(16384, 0);

/// hyper client requests between the written head and the response, by connection pointer.
#[map]
pub static RUST_CLIENT_INFLIGHT: LruHashMap<RustPtrKey, RustClientInflight> =
    LruHashMap::with_max_entries(16384, 0);

/// Calls made by a caller (reqwest) and not yet written by a connection, by task.
#[map]
pub static RUST_CALLS: LruHashMap<RustPtrKey, RustClientInflight> =
    LruHashMap::with_max_entries(16384, 0);

/// The task of each such call, by the address of its request's path bytes: reqwest builds the
/// request's `Uri` on the caller's task, and the connection task writes the same bytes.
#[map]
pub static RUST_CALL_PATHS: LruHashMap<RustPtrKey, u64> = LruHashMap::with_max_entries(16384, 0);

/// The connection a caller's call was written on, by the caller's task (for errors that end
/// the call after the request was written, e.g. a timeout).
#[map]
pub static RUST_TASK_CONN: LruHashMap<RustPtrKey, u64> = LruHashMap::with_max_entries(16384, 0);

/// `traceparent` values queued by a Rust client's writing thread, by `pid_tgid`.
#[map]
pub static RUST_PENDING_BY_THREAD: LruHashMap<u64, PendingTraceparent> =
    LruHashMap::with_max_entries(16384, 0);

/// The hidden return pointer of a URL parse (`try_uri`, `Uri::from_shared`) at its entry, for
/// its return, by `pid_tgid`.
#[map]
pub static RUST_URI_RESULT: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);

/// What an `encode` entry leaves for its return, by `pid_tgid`.
#[map]
pub static RUST_ENCODE_STASH: LruHashMap<u64, RustEncodeStash> =
    LruHashMap::with_max_entries(16384, 0);

/// Learned argument words, by tgid.
#[map]
pub static RUST_LEARNED: HashMap<u32, RustLearned> = HashMap::with_max_entries(4096, 0);

/// Mask of every scratch index (a power of two above the window and its padding).
pub const MASK: usize = 2047;

/// Where a head scan is, kept in map memory so `bpf_loop` verifies its body once.
#[repr(C)]
pub struct HeadScan {
    pub cursor: u64,
    pub limit: u64,
    pub line: u64,
    pub sp1: u64,
    pub sp2: u64,
    pub query: u64,
    pub line_end: u64,
    pub host: u64,
    pub host_end: u64,
    pub head_end: u64,
    pub slashes: u64,
    pub path: u64,
}

/// LTO probes: where each value was found (see lto.rs).
#[repr(C)]
pub struct LtoScan {
    pub mode: u64,
    pub want: u64,
    pub base: [u64; 8],
    pub found: u64,
    pub value: u64,
    pub value2: u64,
    pub kind: u64,
    /// The stack pointer at the probed function's entry (0: unknown); a value found behind a
    /// register that points into this stack is a stale local, not the connection's.
    pub sp: u64,
}

/// Where the LTO probes found their values in a process (position + 1; 0 unknown).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LtoLearned {
    pub path: u16,
    pub response: u16,
    pub request: u16,
    pub buffer: u16,
    /// Argument register holding the request's `MessageHead` in `write_head` (+ 1).
    pub head_reg: u16,
    pub _pad: [u16; 3],
}

/// `Conn::write_head`'s argument registers, for its return.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LtoStash {
    pub regs: [u64; 6],
    pub start_ns: u64,
    /// The stack pointer at entry.
    pub sp: u64,
}

/// Learned positions by tgid.
#[map]
pub static RUST_LTO_LEARNED: HashMap<u32, LtoLearned> = HashMap::with_max_entries(4096, 0);

/// `write_head` entries by `pid_tgid`.
#[map]
pub static RUST_LTO_STASH: LruHashMap<u64, LtoStash> = LruHashMap::with_max_entries(16384, 0);

/// The connection a client task writes on (LTO), by task.
#[map]
pub static RUST_LTO_CONN: LruHashMap<RustPtrKey, u64> = LruHashMap::with_max_entries(16384, 0);

/// Per-CPU scratch: a copy of a head, after eight bytes of padding, with room past the mask
/// for every fixed-length copy out of it.
#[repr(C)]
pub struct RustScratch {
    pub scan: HeadScan,
    pub lto: LtoScan,
    pub server: RustServerInflight,
    pub client: RustClientInflight,
    pub target: Str<256>,
    pub words: [u64; 32],
    pub head: [u8; MASK + 1 + 512],
}

const _: () = assert!(RUST_HEAD_WINDOW + 8 <= MASK);

/// One [`RustScratch`] per CPU.
#[map]
pub static RUST_SCRATCH: PerCpuArray<RustScratch> = PerCpuArray::with_max_entries(1, 0);
