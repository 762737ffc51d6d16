//! Maps of socket-level capture, in one place so their sizes are easy to review.

use aya_ebpf::{
    macros::map,
    maps::{LruHashMap, PerCpuArray, RingBuf},
};
use spanhook_common::{
    socket::SOCKET_CAPTURE_BYTES, IgnoredSock, SocketCall, SocketDataHeader, SslCall, SslKey,
};

/// Size of the socket ring buffer in bytes (a power of two, multiple of the page size). Its
/// own ring, so that a flood of socket bytes cannot crowd out the symbol-level events.
pub const SOCKET_EVENTS_BYTES: u32 = 8 << 20;

/// Socket records ([`SocketDataHeader`] + bytes), read by user space.
#[map]
pub static SOCKET_EVENTS: RingBuf = RingBuf::with_byte_size(SOCKET_EVENTS_BYTES, 0);

/// Socket calls between their entry and their return, by thread (`pid_tgid`). LRU so that a
/// call whose return is never seen (probes detached meanwhile) cannot fill the map.
#[map]
pub static SOCKET_CALLS: LruHashMap<u64, SocketCall> = LruHashMap::with_max_entries(16384, 0);

/// libssl calls between their entry and their return, by thread (`pid_tgid`).
#[map]
pub static SSL_CALLS: LruHashMap<u64, SslCall> = LruHashMap::with_max_entries(16384, 0);

/// The descriptor under each `SSL` object, learnt from the socket calls libssl makes inside
/// `SSL_read`/`SSL_write`.
#[map]
pub static SSL_FDS: LruHashMap<SslKey, i32> = LruHashMap::with_max_entries(65536, 0);

/// A record being built: the header, then room for a prefix copied at any offset below
/// [`SOCKET_CAPTURE_BYTES`] with any length up to it, so masked offsets need no bounds check.
#[repr(C)]
pub struct SocketScratch {
    /// The record's header.
    pub header: SocketDataHeader,
    /// The copied bytes.
    pub data: [u8; 2 * SOCKET_CAPTURE_BYTES],
}

/// One [`SocketScratch`] per CPU (the BPF stack is 512 bytes).
#[map]
pub static SOCKET_SCRATCH: PerCpuArray<SocketScratch> = PerCpuArray::with_max_entries(1, 0);

/// Connections user space found not to carry HTTP/1 (`struct sock` → process and ports):
/// their calls are dropped before anything is copied. Removed when the descriptor is closed,
/// or when the `struct sock` turns out to hold another connection.
#[map]
pub static IGNORED_SOCKS: LruHashMap<u64, IgnoredSock> = LruHashMap::with_max_entries(65536, 0);
