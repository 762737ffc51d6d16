//! Socket-level capture: the bytes a traced process reads from and writes to its TCP sockets
//! (syscall tracepoints) and the plaintext of its libssl calls (uprobes), for programs whose
//! symbols spanhook cannot use.
//!
//! These records travel on their own ring buffer (`SOCKET_EVENTS`), apart from the fixed-size
//! records of the symbol-level probes: they vary in length, and a flood of socket bytes must
//! not crowd out the other events. Their kinds come from `EventKind`'s reserved range 30–39,
//! so a record read from the wrong ring is recognised for what it is.

use crate::{event::Plain, EventHeader, TargetConfig};

impl TargetConfig {
    /// Capture the process's TCP socket reads and writes (syscall tracepoints).
    pub const FLAG_SOCKET_CAPTURE: u32 = 1 << 24;
    /// The process's libssl calls are probed: a syscall made inside `SSL_read`/`SSL_write`
    /// carries ciphertext, so it teaches the probes the descriptor of the `SSL` and is not
    /// captured itself.
    pub const FLAG_SOCKET_TLS: u32 = 1 << 25;
}

/// Bytes copied from one call at most (a bounded prefix of its buffer).
pub const SOCKET_CAPTURE_BYTES: usize = 4096;

/// Kind of a socket record (values from `EventKind`'s socket range, 30–39).
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketRecordKind {
    /// [`SocketDataHeader`] followed by `captured` bytes.
    Data = 30,
    /// [`SocketDataHeader`] of a TCP descriptor being closed (no bytes).
    Close = 31,
}

impl SocketRecordKind {
    /// Maps a raw kind back to the enum.
    pub const fn from_raw(raw: u16) -> Option<Self> {
        match raw {
            30 => Some(SocketRecordKind::Data),
            31 => Some(SocketRecordKind::Close),
            _ => None,
        }
    }
}

/// Where the bytes of a record were seen.
pub mod source {
    /// A socket system call (`read`, `write`, `readv`, `writev`, `recvfrom`, `sendto`,
    /// `recvmsg`, `sendmsg`, `sendfile`): the bytes on the wire.
    pub const SYSCALL: u8 = 0;
    /// libssl's `SSL_read`/`SSL_write` (and `_ex`): the plaintext of a TLS connection.
    pub const TLS: u8 = 1;
}

/// Which way the bytes went, seen from the traced process.
pub mod direction {
    /// Read by the process (`read`, `recvfrom`, `SSL_read`, …).
    pub const INGRESS: u8 = 0;
    /// Written by the process (`write`, `sendto`, `SSL_write`, `sendfile`, …).
    pub const EGRESS: u8 = 1;
}

/// `SocketDataHeader::flags` bits.
pub mod flags {
    /// The call moved bytes the probe did not copy although they fell inside the capture
    /// prefix (more iovecs than the probe walks, or a failed read of the process's memory).
    pub const INCOMPLETE: u8 = 1 << 0;
    /// The bytes came from a file (`sendfile`); none are copied, only counted.
    pub const FROM_FILE: u8 = 1 << 1;
}

/// The fixed start of every socket record; for [`SocketRecordKind::Data`] the first
/// `captured` bytes of the call's buffer follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketDataHeader {
    /// Kind (a [`SocketRecordKind`]), process, and the call's entry and return times.
    pub header: EventHeader,
    /// Address of the kernel's `struct sock`: the connection's identity while it lives (a new
    /// connection on a reused descriptor has another), 0 when unknown.
    pub sock: u64,
    /// Address of the `SSL` object for [`source::TLS`], else 0.
    pub ssl: u64,
    /// Bytes the call moved (its return value).
    pub len: u64,
    /// Thread that made the call.
    pub tid: u32,
    /// The descriptor, -1 when unknown (a TLS call before its descriptor was learnt).
    pub fd: i32,
    /// Bytes copied after this header (`min(len, SOCKET_CAPTURE_BYTES)` unless INCOMPLETE).
    pub captured: u16,
    /// Address family of the socket (`AF_INET` 2, `AF_INET6` 10), 0 when unknown.
    pub family: u16,
    /// Local port (host byte order).
    pub local_port: u16,
    /// Remote port (host byte order).
    pub remote_port: u16,
    /// A [`source`] value.
    pub source: u8,
    /// A [`direction`] value.
    pub direction: u8,
    /// [`flags`] bits.
    pub flags: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 5],
    /// Local address: IPv4 in the first four bytes (network order), or IPv6.
    pub local_addr: [u8; 16],
    /// Remote address, as `local_addr`.
    pub remote_addr: [u8; 16],
}

// SAFETY: #[repr(C)], integers and byte arrays only, padding explicit.
unsafe impl Plain for SocketDataHeader {}

const _: () = assert!(core::mem::size_of::<SocketDataHeader>() == 104);

/// A socket call between its entry and its return, keyed by thread (`pid_tgid`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketCall {
    /// Entry time, `CLOCK_MONOTONIC` nanoseconds.
    pub start_ns: u64,
    /// The `struct sock` the descriptor refers to.
    pub sock: u64,
    /// The buffer (plain calls) or the iovec array (vectored calls).
    pub buf: u64,
    /// Number of iovecs (vectored calls), else 0.
    pub iovlen: u64,
    /// The descriptor.
    pub fd: i32,
    /// A [`direction`] value.
    pub direction: u8,
    /// 1 when `buf` is an iovec array.
    pub vectored: u8,
    /// 1 for `sendfile` (bytes from a file: counted, not copied).
    pub from_file: u8,
    /// Explicit padding; always zero.
    pub _pad: u8,
}

const _: () = assert!(core::mem::size_of::<SocketCall>() == 40);

/// An `SSL_read`/`SSL_write` (or `_ex`) call between its entry and its return, by thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SslCall {
    /// Entry time, `CLOCK_MONOTONIC` nanoseconds.
    pub start_ns: u64,
    /// The `SSL *`.
    pub ssl: u64,
    /// The plaintext buffer.
    pub buf: u64,
    /// For the `_ex` variants, where the byte count is written; else 0.
    pub count_out: u64,
    /// A [`direction`] value.
    pub direction: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 7],
}

const _: () = assert!(core::mem::size_of::<SslCall>() == 40);

/// An `SSL` object of one process.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SslKey {
    /// Thread-group id.
    pub tgid: u32,
    /// Explicit padding; always zero.
    pub _pad: u32,
    /// The `SSL *`.
    pub ssl: u64,
}

const _: () = assert!(core::mem::size_of::<SslKey>() == 16);

/// A connection user space found not to carry HTTP/1, in `IGNORED_SOCKS` (keyed by its
/// `struct sock`). The ports tell the connection apart from a later one the kernel builds in
/// the same `struct sock` (freed and reused, which happens within milliseconds): the verdict
/// reaches the kernel asynchronously, possibly after the connection was closed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IgnoredSock {
    /// Thread-group id of the process.
    pub tgid: u32,
    /// Local port (host byte order) of the connection judged.
    pub local_port: u16,
    /// Remote port (host byte order) of the connection judged.
    pub remote_port: u16,
}

const _: () = assert!(core::mem::size_of::<IgnoredSock>() == 8);
