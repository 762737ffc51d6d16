//! The probes spanhook knows, described as data: candidate functions, kernel programs, the
//! fields they read, and argument layouts that differ between library releases.

use spanhook_common::{ArgSlot, GoField, TargetConfig};

/// Something spanhook can trace in a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// Go `net/http` server requests (HTTP/1.x and the bundled HTTP/2).
    GoHttpServer,
    /// Go `net/http` client requests.
    GoHttpClient,
    /// `traceparent` on outgoing HTTP/1 requests of Go clients (opt-in).
    GoHttpPropagation,
    /// grpc-go server RPCs.
    GoGrpcServer,
    /// grpc-go client RPCs.
    GoGrpcClient,
    /// `traceparent` in the HEADERS of outgoing grpc-go RPCs (opt-in).
    GoGrpcPropagation,
    /// hyper HTTP/1 server requests (axum, warp, plain hyper) in Rust programs.
    RustHttpServer,
    /// hyper HTTP/1 client requests (reqwest, hyper-util's client) in Rust programs.
    RustHttpClient,
    /// Which tokio task runs each probe, so a call links to the request its task serves.
    RustTaskLinking,
    /// `traceparent` on outgoing HTTP/1 requests of Rust clients (opt-in).
    RustHttpPropagation,
    /// tonic/h2 gRPC server RPCs in Rust programs.
    RustGrpcServer,
    /// tonic gRPC client RPCs in Rust programs.
    RustGrpcClient,
    /// HTTP/1 server requests read from the process's TCP socket system calls (any language).
    SocketHttpServer,
    /// HTTP/1 client requests read from the process's TCP socket system calls.
    SocketHttpClient,
    /// The plaintext of the process's TLS connections, at libssl's `SSL_read`/`SSL_write`.
    SocketTls,
}

impl Capability {
    /// A short name for messages and `inspect`.
    pub const fn name(self) -> &'static str {
        match self {
            Capability::GoHttpServer => "http server",
            Capability::GoHttpClient => "http client",
            Capability::GoHttpPropagation => "propagation",
            Capability::GoGrpcServer => "grpc server",
            Capability::GoGrpcClient => "grpc client",
            Capability::GoGrpcPropagation => "grpc propagation",
            Capability::RustHttpServer => "http server",
            Capability::RustHttpClient => "http client",
            Capability::RustTaskLinking => "task linking",
            Capability::RustHttpPropagation => "propagation",
            Capability::RustGrpcServer => "grpc server",
            Capability::RustGrpcClient => "grpc client",
            Capability::SocketHttpServer => "socket server",
            Capability::SocketHttpClient => "socket client",
            Capability::SocketTls => "socket tls",
        }
    }
}

/// A function a probe may go on, with what is particular to it.
#[derive(Debug)]
pub struct Candidate {
    /// The Go function, as `.gopclntab` names it.
    pub symbol: &'static str,
    /// Argument positions the kernel program must use with this function.
    pub args: &'static [(ArgSlot, u8)],
    /// Only for these releases of a module: (module path, first minor, last minor).
    pub releases: Option<(&'static str, &'static str, &'static str)>,
}

impl Candidate {
    /// A function with nothing particular to it.
    pub const fn plain(symbol: &'static str) -> Self {
        Self {
            symbol,
            args: &[],
            releases: None,
        }
    }
}

/// One Go function probe: an entry program and, optionally, a program on every RET.
#[derive(Debug)]
pub struct GoProbe {
    /// What it traces.
    pub capability: Capability,
    /// Functions to probe, best first; the first the binary has (and whose release range
    /// matches) is used.
    pub candidates: &'static [Candidate],
    /// Kernel program attached at the function's entry, if any.
    pub entry_program: Option<&'static str>,
    /// Kernel program attached at each RET instruction (never a uretprobe: Go moves stacks).
    pub return_program: Option<&'static str>,
    /// Fields without which the probe cannot work.
    pub required: &'static [GoField],
    /// Fields that add detail when known.
    pub optional: &'static [GoField],
    /// `TargetConfig` flags to set when this probe is attached.
    pub flags: u32,
    /// Attached only when the user asks for it (`--propagate`).
    pub opt_in: bool,
    /// Adds detail to its capability (incoming context, status) without being needed for it:
    /// when it cannot be attached the capability is still traced, with a warning.
    pub auxiliary: bool,
}

/// Flags set by library release: (module, first minor, last minor, `TargetConfig` flag).
/// For layout changes DWARF offsets alone do not tell (a pointer embedded at the same offset).
pub const RELEASE_FLAGS: &[(&str, &str, &str, u32)] = &[(
    "google.golang.org/grpc",
    "1.69",
    "1.76",
    TargetConfig::FLAG_GRPC_STREAM_POINTER,
)];

/// Every Go probe, in the order capabilities are reported.
pub const GO_PROBES: &[GoProbe] = &[
    GoProbe {
        capability: Capability::GoHttpServer,
        candidates: &[Candidate::plain("net/http.serverHandler.ServeHTTP")],
        entry_program: Some("go_http_server_enter"),
        return_program: Some("go_http_server_return"),
        required: &[
            GoField::RequestMethod,
            GoField::RequestUrl,
            GoField::UrlPath,
            GoField::RequestProtoMajor,
            GoField::ResponseStatus,
        ],
        optional: &[
            GoField::GoroutineId,
            GoField::RequestProtoMinor,
            GoField::RequestHost,
            GoField::RequestPattern,
            GoField::RequestTls,
            GoField::ResponseConn,
            GoField::ConnBufReader,
            GoField::RequestRemoteAddr,
            GoField::BufioReaderBuf,
            GoField::BufioReaderPos,
            GoField::Http2ResponseWriterState,
            GoField::Http2WriterStateStatus,
            GoField::Http2ResponseWriterInner,
            GoField::Http2InternalWriterState,
            GoField::Http2InternalStateStatus,
        ],
        flags: TargetConfig::FLAG_SERVER_TRACEPARENT,
        opt_in: false,
        auxiliary: false,
    },
    GoProbe {
        capability: Capability::GoHttpClient,
        candidates: &[Candidate::plain("net/http.(*Transport).roundTrip")],
        entry_program: Some("go_http_client_enter"),
        return_program: Some("go_http_client_return"),
        required: &[
            GoField::RequestMethod,
            GoField::RequestUrl,
            GoField::UrlScheme,
            GoField::UrlHost,
            GoField::UrlPath,
            GoField::ResponseStatusCode,
        ],
        optional: &[
            GoField::GoroutineId,
            GoField::GoroutineParentId,
            GoField::RequestCtx,
            GoField::ResponseProtoMajor,
            GoField::ResponseProtoMinor,
        ],
        flags: 0,
        opt_in: false,
        auxiliary: false,
    },
    GoProbe {
        capability: Capability::GoHttpPropagation,
        candidates: &[Candidate::plain("net/http.(*persistConn).roundTrip")],
        entry_program: Some("go_http_client_conn"),
        return_program: None,
        required: &[
            GoField::PersistConnConn,
            GoField::PersistConnTlsState,
            GoField::NetConnFd,
            GoField::NetFdLocalAddr,
            GoField::NetFdRemoteAddr,
            GoField::TcpAddrIp,
            GoField::TcpAddrPort,
        ],
        optional: &[],
        flags: TargetConfig::FLAG_PROPAGATE,
        opt_in: true,
        auxiliary: false,
    },
    GoProbe {
        capability: Capability::GoGrpcServer,
        candidates: &[Candidate::plain(
            "google.golang.org/grpc.(*Server).handleStream",
        )],
        entry_program: Some("go_grpc_server_enter"),
        return_program: Some("go_grpc_server_return"),
        required: &[GoField::GrpcStreamMethod, GoField::GrpcStreamId],
        optional: &[
            GoField::GoroutineId,
            GoField::GoroutineParentId,
            GoField::GrpcServerStreamStream,
            GoField::GrpcStreamCtx,
        ],
        flags: 0,
        opt_in: false,
        auxiliary: false,
    },
    GoProbe {
        capability: Capability::GoGrpcServer,
        candidates: &[
            // From v1.69 `ServerStream.WriteStatus` is a one-line wrapper the compiler inlines
            // into its callers; the transport's own `writeStatus` does the work.
            Candidate {
                symbol: "google.golang.org/grpc/internal/transport.(*http2Server).writeStatus",
                args: &[
                    (ArgSlot::GrpcStatusStream, 1),
                    (ArgSlot::GrpcStatusValue, 2),
                ],
                releases: None,
            },
            Candidate {
                symbol: "google.golang.org/grpc/internal/transport.(*http2Server).WriteStatus",
                args: &[
                    (ArgSlot::GrpcStatusStream, 1),
                    (ArgSlot::GrpcStatusValue, 2),
                ],
                releases: None,
            },
        ],
        entry_program: Some("go_grpc_server_status"),
        return_program: None,
        required: &[GoField::GrpcStatusProto, GoField::GrpcProtoStatusCode],
        optional: &[],
        flags: 0,
        opt_in: false,
        auxiliary: true,
    },
    GoProbe {
        capability: Capability::GoGrpcServer,
        candidates: &[
            // v1.60 added a context parameter before the frame.
            Candidate {
                symbol: "google.golang.org/grpc/internal/transport.(*http2Server).operateHeaders",
                args: &[(ArgSlot::GrpcHeadersFrame, 3)],
                releases: Some(("google.golang.org/grpc", "1.60", "")),
            },
            Candidate {
                symbol: "google.golang.org/grpc/internal/transport.(*http2Server).operateHeaders",
                args: &[(ArgSlot::GrpcHeadersFrame, 1)],
                releases: Some(("google.golang.org/grpc", "", "1.59")),
            },
        ],
        entry_program: Some("go_grpc_server_headers"),
        return_program: None,
        required: &[
            GoField::GrpcMetaHeadersFields,
            GoField::GrpcMetaHeadersFrame,
            GoField::GrpcFrameStreamId,
            GoField::GrpcHeaderFieldName,
            GoField::GrpcHeaderFieldValue,
        ],
        optional: &[],
        flags: 0,
        opt_in: false,
        auxiliary: true,
    },
    GoProbe {
        capability: Capability::GoGrpcClient,
        // Not newClientStream: from v1.84 it returns the stream in a wrapper, while
        // newClientStreamWithParams returns the *clientStream that `finish` later gets.
        candidates: &[Candidate::plain(
            "google.golang.org/grpc.newClientStreamWithParams",
        )],
        entry_program: Some("go_grpc_client_enter"),
        return_program: Some("go_grpc_client_created"),
        required: &[GoField::GrpcClientConnTarget],
        optional: &[
            GoField::GoroutineId,
            GoField::GoroutineParentId,
            GoField::GrpcErrorStatus,
            GoField::GrpcStatusProto,
            GoField::GrpcProtoStatusCode,
        ],
        flags: 0,
        opt_in: false,
        auxiliary: false,
    },
    GoProbe {
        capability: Capability::GoGrpcClient,
        candidates: &[Candidate::plain(
            "google.golang.org/grpc.(*clientStream).finish",
        )],
        entry_program: Some("go_grpc_client_finish"),
        return_program: None,
        required: &[],
        optional: &[],
        flags: 0,
        opt_in: false,
        // Without it a client span would never end: required in effect, so not auxiliary.
        auxiliary: false,
    },
    GoProbe {
        capability: Capability::GoGrpcPropagation,
        // Its RETs: the header fields built for a new stream, in the caller's goroutine.
        candidates: &[Candidate::plain(
            "google.golang.org/grpc/internal/transport.(*http2Client).createHeaderFields",
        )],
        entry_program: None,
        return_program: Some("go_grpc_client_fields"),
        required: &[],
        optional: &[],
        flags: TargetConfig::FLAG_PROPAGATE | TargetConfig::FLAG_GRPC_PROPAGATE,
        opt_in: true,
        auxiliary: false,
    },
    GoProbe {
        capability: Capability::GoGrpcPropagation,
        candidates: &[Candidate::plain(
            "google.golang.org/grpc/internal/transport.(*loopyWriter).writeHeader",
        )],
        entry_program: Some("go_grpc_write_header"),
        return_program: None,
        required: &[
            GoField::GrpcLoopyFramer,
            GoField::GrpcFramerWriter,
            GoField::GrpcBufWriterConn,
            GoField::GrpcBufWriterOffset,
            GoField::GrpcHeaderFieldName,
            GoField::NetConnFd,
            GoField::NetFdLocalAddr,
            GoField::NetFdRemoteAddr,
            GoField::TcpAddrIp,
            GoField::TcpAddrPort,
        ],
        optional: &[],
        flags: 0,
        opt_in: true,
        auxiliary: false,
    },
];
