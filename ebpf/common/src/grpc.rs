//! gRPC (grpc-go) events and in-flight state.

use crate::event::{EventHeader, Plain, Str, TraceIds};

/// A status code meaning "not seen" (the server never wrote a status, or it was unreadable).
pub const STATUS_UNKNOWN: i32 = -1;

/// One RPC served by grpc-go: `Server.handleStream` from entry to return.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GrpcServerEvent {
    /// Kind [`EventKind::GrpcServer`](crate::EventKind::GrpcServer), process, start, end.
    pub header: EventHeader,
    /// The server span's trace context.
    pub trace: TraceIds,
    /// Goroutine id of the handler.
    pub goid: u64,
    /// The gRPC status code written, or [`STATUS_UNKNOWN`].
    pub status: i32,
    /// HTTP/2 stream id.
    pub stream_id: u32,
    /// `/package.Service/Method`.
    pub method: Str<128>,
    /// The request's `:authority`.
    pub authority: Str<120>,
}

/// One RPC made by a grpc-go client: `newClientStream` to `clientStream.finish` (or to the
/// failed return of `newClientStream`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GrpcClientEvent {
    /// Kind [`EventKind::GrpcClient`](crate::EventKind::GrpcClient), process, start, end.
    pub header: EventHeader,
    /// The client span's trace context.
    pub trace: TraceIds,
    /// Goroutine id of the caller.
    pub goid: u64,
    /// The itab of the error the RPC ended with, 0 for none.
    pub error_itab: u64,
    /// The status code read as if the error were a `*status.Error`; user space trusts it only
    /// when the itab names that type.
    pub error_code: i32,
    /// 1 when the error is `io.EOF` (how a finished stream ends successfully).
    pub error_eof: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 3],
    /// `/package.Service/Method`.
    pub method: Str<128>,
    /// The `ClientConn`'s dial target.
    pub target: Str<120>,
}

/// A gRPC call in progress on the server, keyed by goroutine.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcServerInflight {
    /// The transport stream.
    pub stream: u64,
    /// Entry time, `CLOCK_MONOTONIC` nanoseconds.
    pub start_ns: u64,
    /// The server span's trace context.
    pub trace: TraceIds,
    /// Data word of the stream's context when registered for children (0: not registered).
    pub context: u64,
    /// The server transport, to find the stream's request headers again.
    pub transport: u64,
    /// HTTP/2 stream id.
    pub stream_id: u32,
    /// Explicit padding; always zero.
    pub _pad: u32,
}

/// What a server learned from a stream's request headers before its handler started.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GrpcRequestHeaders {
    /// Context from an incoming `traceparent` (origin says whether it was valid).
    pub trace: TraceIds,
    /// `:authority`.
    pub authority: Str<120>,
    /// Explicit padding; always zero.
    pub _pad: u32,
}

/// Key of [`GrpcRequestHeaders`]: a stream of one server transport.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GrpcStreamKey {
    /// Thread-group id.
    pub tgid: u32,
    /// HTTP/2 stream id.
    pub stream_id: u32,
    /// Address of the server transport (`*http2Server`).
    pub transport: u64,
}

/// A client RPC in progress: under its goroutine until `newClientStream` returns, then under
/// its `*clientStream`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GrpcClientInflight {
    /// Entry time, `CLOCK_MONOTONIC` nanoseconds.
    pub start_ns: u64,
    /// The client span's trace context.
    pub trace: TraceIds,
    /// `/package.Service/Method`.
    pub method: Str<128>,
    /// The dial target.
    pub target: Str<120>,
}

/// Key of the `traceparent` a client RPC's header fields carry to the connection's writer:
/// the backing array of the `[]hpack.HeaderField` grpc-go built for the stream.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GrpcHeaderFieldsKey {
    /// Thread-group id.
    pub tgid: u32,
    /// Explicit padding; always zero.
    pub _pad: u32,
    /// Address of the slice's first element.
    pub fields: u64,
}

// SAFETY: #[repr(C)], integers and byte arrays only, padding explicit.
unsafe impl Plain for GrpcServerEvent {}
// SAFETY: as above.
unsafe impl Plain for GrpcClientEvent {}

const _: () = assert!(core::mem::size_of::<GrpcServerEvent>() == 336);
const _: () = assert!(core::mem::size_of::<GrpcClientEvent>() == 344);
const _: () = assert!(core::mem::size_of::<GrpcServerInflight>() == 80);
const _: () = assert!(core::mem::size_of::<GrpcRequestHeaders>() == 168);
const _: () = assert!(core::mem::size_of::<GrpcStreamKey>() == 16);
const _: () = assert!(core::mem::size_of::<GrpcHeaderFieldsKey>() == 16);
const _: () = assert!(core::mem::size_of::<GrpcClientInflight>() == 304);
