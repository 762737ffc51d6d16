//! Records the probes write to the `EVENTS` ring buffer.
//!
//! Each record starts with an [`EventHeader`] whose `kind` says which struct follows; user
//! space checks the kind and the record length before it reads anything else.

/// Which struct a ring-buffer record holds. Values are stable and grouped by capability:
/// 1–9 Go HTTP, 10–19 Go gRPC, 20–29 Rust, 30–39 socket level.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// [`HttpServerEvent`]: one request handled by a Go `net/http` server.
    HttpServer = 1,
    /// [`HttpClientEvent`]: one request made by a Go `net/http` client.
    HttpClient = 2,
    /// [`GrpcServerEvent`](crate::GrpcServerEvent): one RPC served by grpc-go.
    GrpcServer = 10,
    /// [`GrpcClientEvent`](crate::GrpcClientEvent): one RPC made by a grpc-go client.
    GrpcClient = 11,
    /// [`RustHttpServerEvent`](crate::RustHttpServerEvent): one request served by hyper (HTTP/1).
    RustHttpServer = 20,
    /// [`RustHttpClientEvent`](crate::RustHttpClientEvent): one request made by a hyper client.
    RustHttpClient = 21,
    /// [`RustGrpcServerEvent`](crate::RustGrpcServerEvent): one RPC served by tonic/h2.
    RustGrpcServer = 22,
    /// [`RustGrpcClientEvent`](crate::RustGrpcClientEvent): one RPC made by a tonic client.
    RustGrpcClient = 23,
}

impl EventKind {
    /// Maps the raw `kind` of a header back to the enum.
    pub const fn from_raw(raw: u16) -> Option<Self> {
        match raw {
            1 => Some(EventKind::HttpServer),
            2 => Some(EventKind::HttpClient),
            10 => Some(EventKind::GrpcServer),
            11 => Some(EventKind::GrpcClient),
            20 => Some(EventKind::RustHttpServer),
            21 => Some(EventKind::RustHttpClient),
            22 => Some(EventKind::RustGrpcServer),
            23 => Some(EventKind::RustGrpcClient),
            _ => None,
        }
    }
}

/// Marks event records that can be read from any byte pattern of their size.
///
/// # Safety
/// Implementors must be `#[repr(C)]` and consist only of integers and arrays of integers,
/// with all padding explicit, so every bit pattern is a valid value.
pub unsafe trait Plain: Copy {}

/// Reads a `T` from the start of `bytes`, or `None` when there are too few bytes.
pub fn read_plain<T: Plain>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < core::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: the length was checked, `read_unaligned` has no alignment requirement and
    // `T: Plain` accepts any bit pattern.
    Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// The common start of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventHeader {
    /// An [`EventKind`] as its raw value.
    pub kind: u16,
    /// Explicit padding; always zero.
    pub _pad: u16,
    /// Process (thread-group) id of the traced program.
    pub tgid: u32,
    /// Start of the operation, `CLOCK_MONOTONIC` nanoseconds.
    pub start_ns: u64,
    /// End of the operation, `CLOCK_MONOTONIC` nanoseconds.
    pub end_ns: u64,
}

/// W3C trace context of one span, decided in the kernel so that spans started later in the
/// same request can name it as their parent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceIds {
    /// Trace id (16 bytes, big-endian as in the `traceparent` header).
    pub trace_id: [u8; 16],
    /// This span's id.
    pub span_id: [u8; 8],
    /// The parent span's id; all zero for a root span.
    pub parent_span_id: [u8; 8],
    /// W3C trace flags (bit 0: sampled).
    pub flags: u8,
    /// A `TraceIds::ORIGIN_*` value: where the trace id came from.
    pub origin: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 6],
}

impl TraceIds {
    /// A new trace started here (no usable incoming context).
    pub const ORIGIN_NEW: u8 = 0;
    /// The trace id and parent came from an incoming `traceparent` header.
    pub const ORIGIN_HEADER: u8 = 1;
    /// An incoming `traceparent` was present but malformed; a new trace was started.
    pub const ORIGIN_HEADER_INVALID: u8 = 2;
    /// The parent was found through the request's `context.Context` chain.
    pub const ORIGIN_CONTEXT: u8 = 3;
    /// The parent is the server request running on the same goroutine.
    pub const ORIGIN_GOROUTINE: u8 = 4;
    /// The parent is the server request of the goroutine that started this one.
    pub const ORIGIN_PARENT_GOROUTINE: u8 = 5;
}

/// A string copied from the target, truncated to `N` bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Str<const N: usize> {
    /// The string's length in the target (may exceed `N`: then the copy is truncated).
    pub len: u32,
    /// The first `min(len, N)` bytes.
    pub bytes: [u8; N],
}

impl<const N: usize> Str<N> {
    /// The copied bytes.
    pub fn as_bytes(&self) -> &[u8] {
        let n = if (self.len as usize) < N {
            self.len as usize
        } else {
            N
        };
        &self.bytes[..n]
    }

    /// Whether the target's string was longer than the copy.
    pub fn truncated(&self) -> bool {
        self.len as usize > N
    }
}

impl<const N: usize> Default for Str<N> {
    fn default() -> Self {
        Self {
            len: 0,
            bytes: [0; N],
        }
    }
}

/// One request handled by a Go `net/http` server (HTTP/1.x or the bundled HTTP/2).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HttpServerEvent {
    /// Kind [`EventKind::HttpServer`], process, start and end.
    pub header: EventHeader,
    /// The server span's trace context.
    pub trace: TraceIds,
    /// Goroutine id of the handler.
    pub goid: u64,
    /// Status code written by the handler; 0 when it wrote nothing (Go then sends 200).
    pub status: u16,
    /// `Request.ProtoMajor`.
    pub proto_major: u8,
    /// `Request.ProtoMinor`.
    pub proto_minor: u8,
    /// 1 when the request came over TLS.
    pub tls: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 3],
    /// `Request.Method`.
    pub method: Str<16>,
    /// `Request.URL.Path` (already without the query string).
    pub path: Str<256>,
    /// `Request.Host` (the Host header or `:authority`).
    pub host: Str<128>,
    /// `Request.Pattern`: the ServeMux route that matched (Go 1.23+), else empty.
    pub route: Str<128>,
    /// The peer's `ip:port` (`Request.RemoteAddr`).
    pub remote: Str<64>,
}

/// One request made by a Go `net/http` client (`Transport.roundTrip`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HttpClientEvent {
    /// Kind [`EventKind::HttpClient`], process, start and end.
    pub header: EventHeader,
    /// The client span's trace context; the parent is the span that caused the call.
    pub trace: TraceIds,
    /// Goroutine id of the caller.
    pub goid: u64,
    /// When the call failed: the address of the error's itab (its dynamic type), else 0.
    pub error_itab: u64,
    /// `Response.StatusCode`, 0 without a response.
    pub status: u16,
    /// `Response.ProtoMajor`.
    pub proto_major: u8,
    /// `Response.ProtoMinor`.
    pub proto_minor: u8,
    /// 1 when a `traceparent` was queued for the wire (`--propagate`).
    pub propagated: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 3],
    /// `Request.Method`.
    pub method: Str<16>,
    /// `Request.URL.Scheme`.
    pub scheme: Str<16>,
    /// `Request.URL.Host` (`host[:port]`).
    pub host: Str<128>,
    /// `Request.URL.Path` (the query is never read).
    pub path: Str<256>,
}

// SAFETY: #[repr(C)], integers and byte arrays only, padding explicit.
unsafe impl Plain for EventHeader {}
// SAFETY: as above.
unsafe impl Plain for HttpClientEvent {}
// SAFETY: as above.
unsafe impl Plain for HttpServerEvent {}

const _: () = assert!(core::mem::size_of::<EventHeader>() == 24);
const _: () = assert!(core::mem::size_of::<TraceIds>() == 40);
const _: () = assert!(core::mem::size_of::<HttpServerEvent>() == 696);
const _: () = assert!(core::mem::size_of::<HttpClientEvent>() == 520);
