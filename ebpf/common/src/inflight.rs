//! Values the probes keep between a function's entry and its return.

use crate::event::TraceIds;

/// A Go HTTP server request between `serverHandler.ServeHTTP` entry and its return.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpServerInflight {
    /// Address of the `*http.Request`.
    pub request: u64,
    /// Data word of the `http.ResponseWriter` interface (`*http.response` for HTTP/1).
    pub response: u64,
    /// Entry time, `CLOCK_MONOTONIC` nanoseconds.
    pub start_ns: u64,
    /// The server span's trace context, fixed at entry so that children can use it.
    pub trace: TraceIds,
    /// Data word of the request's context when the span was registered under it (0: not
    /// registered); kept so the return removes exactly what the entry added.
    pub context: u64,
}

const _: () = assert!(core::mem::size_of::<HttpServerInflight>() == 72);

/// A Go HTTP client request between `Transport.roundTrip` entry and its return.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpClientInflight {
    /// Address of the `*http.Request`.
    pub request: u64,
    /// Entry time, `CLOCK_MONOTONIC` nanoseconds.
    pub start_ns: u64,
    /// The client span's trace context.
    pub trace: TraceIds,
}

/// A `traceparent` waiting for the next HTTP/1 request written on a connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingTraceparent {
    /// The client span whose id goes on the wire.
    pub trace: TraceIds,
    /// When it was set, `CLOCK_MONOTONIC` nanoseconds; stale entries are ignored.
    pub set_ns: u64,
    /// The process that will write the request.
    pub tgid: u32,
    /// Explicit padding; always zero.
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<HttpClientInflight>() == 56);
const _: () = assert!(core::mem::size_of::<PendingTraceparent>() == 56);
