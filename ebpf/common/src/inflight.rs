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
}

const _: () = assert!(core::mem::size_of::<HttpServerInflight>() == 64);
