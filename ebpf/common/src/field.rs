//! Slots for the struct-field offsets the probes read from Go programs.
//!
//! User space resolves each slot for a target (from DWARF or the generated table) and stores
//! the result in that target's [`TargetConfig`](crate::TargetConfig); the probes index the
//! array by these slots. Slots are append-only so that numbering never changes meaning; 35 and
//! up are for grpc-go.

/// Offset value meaning "this field does not exist in this target's version".
pub const OFFSET_ABSENT: u16 = u16::MAX;

/// Maximum number of offset slots a target carries.
pub const MAX_FIELDS: usize = 64;

macro_rules! go_fields {
    ($($(#[$doc:meta])* $variant:ident = $idx:literal => ($module:expr, $ty:literal, $field:literal),)*) => {
        /// A field of a Go runtime or library struct whose offset a probe needs.
        #[repr(u16)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum GoField {
            $($(#[$doc])* $variant = $idx,)*
        }

        impl GoField {
            /// Every field, in slot order.
            pub const ALL: &'static [GoField] = &[$(GoField::$variant,)*];

            /// The Go module that defines the struct (`std` for the standard library).
            pub const fn module(self) -> &'static str {
                match self { $(GoField::$variant => $module,)* }
            }

            /// The struct's fully qualified Go type name, as DWARF spells it.
            pub const fn type_name(self) -> &'static str {
                match self { $(GoField::$variant => $ty,)* }
            }

            /// The field's name, as DWARF spells it.
            pub const fn field_name(self) -> &'static str {
                match self { $(GoField::$variant => $field,)* }
            }
        }
    };
}

go_fields! {
    /// `runtime.g.goid`: the goroutine id.
    GoroutineId = 0 => ("std", "runtime.g", "goid"),
    /// `net/http.Request.Method` (string).
    RequestMethod = 1 => ("std", "net/http.Request", "Method"),
    /// `net/http.Request.URL` (*url.URL).
    RequestUrl = 2 => ("std", "net/http.Request", "URL"),
    /// `net/http.Request.ProtoMajor` (int).
    RequestProtoMajor = 3 => ("std", "net/http.Request", "ProtoMajor"),
    /// `net/http.Request.ProtoMinor` (int).
    RequestProtoMinor = 4 => ("std", "net/http.Request", "ProtoMinor"),
    /// `net/http.Request.Host` (string).
    RequestHost = 5 => ("std", "net/http.Request", "Host"),
    /// `net/http.Request.Pattern` (string, Go 1.23 and later): the ServeMux route.
    RequestPattern = 6 => ("std", "net/http.Request", "Pattern"),
    /// `net/http.Request.TLS` (*tls.ConnectionState): non-nil on HTTPS.
    RequestTls = 7 => ("std", "net/http.Request", "TLS"),
    /// `net/http.Request.ctx` (context.Context).
    RequestCtx = 8 => ("std", "net/http.Request", "ctx"),
    /// `net/url.URL.Path` (string).
    UrlPath = 9 => ("std", "net/url.URL", "Path"),
    /// `net/http.response.status` (int): the status written by the handler.
    ResponseStatus = 10 => ("std", "net/http.response", "status"),
    /// `net/http.response.conn` (*conn).
    ResponseConn = 11 => ("std", "net/http.response", "conn"),
    /// `net/http.conn.bufr` (*bufio.Reader): holds the raw request head.
    ConnBufReader = 12 => ("std", "net/http.conn", "bufr"),
    /// `net/http.conn.remoteAddr` (string).
    ConnRemoteAddr = 13 => ("std", "net/http.conn", "remoteAddr"),
    /// `bufio.Reader.buf` ([]byte).
    BufioReaderBuf = 14 => ("std", "bufio.Reader", "buf"),
    /// `bufio.Reader.r` (int): read position.
    BufioReaderPos = 15 => ("std", "bufio.Reader", "r"),
    /// `net/http.http2responseWriter.rws` (*http2responseWriterState).
    Http2ResponseWriterState = 16 => ("std", "net/http.http2responseWriter", "rws"),
    /// `net/http.http2responseWriterState.status` (int).
    Http2WriterStateStatus = 17 => ("std", "net/http.http2responseWriterState", "status"),
    /// `runtime.g.parentGoid` (Go 1.21+): the goid of the goroutine that started this one.
    GoroutineParentId = 18 => ("std", "runtime.g", "parentGoid"),
    /// `net/url.URL.Scheme` (string).
    UrlScheme = 19 => ("std", "net/url.URL", "Scheme"),
    /// `net/url.URL.Host` (string).
    UrlHost = 20 => ("std", "net/url.URL", "Host"),
    /// `net/http.Response.StatusCode` (int).
    ResponseStatusCode = 21 => ("std", "net/http.Response", "StatusCode"),
    /// `net/http.Response.ProtoMajor` (int).
    ResponseProtoMajor = 22 => ("std", "net/http.Response", "ProtoMajor"),
    /// `net/http.Response.ProtoMinor` (int).
    ResponseProtoMinor = 23 => ("std", "net/http.Response", "ProtoMinor"),
    /// `net/http.persistConn.conn` (net.Conn): the connection a client request goes out on.
    PersistConnConn = 24 => ("std", "net/http.persistConn", "conn"),
    /// `net/http.persistConn.tlsState` (*tls.ConnectionState): non-nil for HTTPS.
    PersistConnTlsState = 25 => ("std", "net/http.persistConn", "tlsState"),
    /// `net.conn.fd` (*netFD), embedded first in `net.TCPConn`.
    NetConnFd = 26 => ("std", "net.conn", "fd"),
    /// `net.netFD.laddr` (net.Addr).
    NetFdLocalAddr = 27 => ("std", "net.netFD", "laddr"),
    /// `net.netFD.raddr` (net.Addr).
    NetFdRemoteAddr = 28 => ("std", "net.netFD", "raddr"),
    /// `net.TCPAddr.IP` ([]byte, 4 or 16 bytes).
    TcpAddrIp = 29 => ("std", "net.TCPAddr", "IP"),
    /// `net.TCPAddr.Port` (int).
    TcpAddrPort = 30 => ("std", "net.TCPAddr", "Port"),
    /// `net/http.Request.RemoteAddr` (string): the peer, for HTTP/1 and HTTP/2 alike.
    RequestRemoteAddr = 31 => ("std", "net/http.Request", "RemoteAddr"),
    /// `net/http.http2ResponseWriter.ResponseWriter` (Go 1.27+: the bundled HTTP/2 moved to
    /// net/http/internal/http2, and net/http wraps its writer).
    Http2ResponseWriterInner = 32 => ("std", "net/http.http2ResponseWriter", "ResponseWriter"),
    /// `net/http/internal/http2.responseWriter.rws` (Go 1.27+).
    Http2InternalWriterState = 33 => ("std", "net/http/internal/http2.responseWriter", "rws"),
    /// `net/http/internal/http2.responseWriterState.status` (Go 1.27+).
    Http2InternalStateStatus = 34 => ("std", "net/http/internal/http2.responseWriterState", "status"),
    /// grpc-go `transport.Stream.method` (string): `/package.Service/Method`.
    GrpcStreamMethod = 35 => (GRPC, "google.golang.org/grpc/internal/transport.Stream", "method"),
    /// grpc-go `transport.Stream.id` (uint32): the HTTP/2 stream id.
    GrpcStreamId = 36 => (GRPC, "google.golang.org/grpc/internal/transport.Stream", "id"),
    /// grpc-go `transport.ServerStream.Stream` (1.69+: the server stream embeds `Stream`).
    GrpcServerStreamStream = 37 => (GRPC, "google.golang.org/grpc/internal/transport.ServerStream", "Stream"),
    /// grpc-go `ClientConn.target` (string): the dial target.
    GrpcClientConnTarget = 38 => (GRPC, "google.golang.org/grpc.ClientConn", "target"),
    /// grpc-go `internal/status.Status.s` (*spb.Status).
    GrpcStatusProto = 39 => (GRPC, "google.golang.org/grpc/internal/status.Status", "s"),
    /// grpc-go `internal/status.Error.s` (*Status).
    GrpcErrorStatus = 40 => (GRPC, "google.golang.org/grpc/internal/status.Error", "s"),
    /// `google.rpc.Status.Code` (int32), as genproto generates it.
    GrpcProtoStatusCode = 41 => (GRPC, "google.golang.org/genproto/googleapis/rpc/status.Status", "Code"),
    /// x/net `http2.MetaHeadersFrame.Fields` ([]hpack.HeaderField): decoded headers.
    GrpcMetaHeadersFields = 42 => (GRPC, "golang.org/x/net/http2.MetaHeadersFrame", "Fields"),
    /// x/net `http2.MetaHeadersFrame.HeadersFrame` (*HeadersFrame, embedded).
    GrpcMetaHeadersFrame = 43 => (GRPC, "golang.org/x/net/http2.MetaHeadersFrame", "HeadersFrame"),
    /// x/net `http2.FrameHeader.StreamID` (uint32).
    GrpcFrameStreamId = 44 => (GRPC, "golang.org/x/net/http2.FrameHeader", "StreamID"),
    /// x/net `hpack.HeaderField.Name` (string).
    GrpcHeaderFieldName = 45 => (GRPC, "golang.org/x/net/http2/hpack.HeaderField", "Name"),
    /// x/net `hpack.HeaderField.Value` (string).
    GrpcHeaderFieldValue = 46 => (GRPC, "golang.org/x/net/http2/hpack.HeaderField", "Value"),
    /// grpc-go `transport.Stream.ctx` (context.Context): the RPC's context on the server.
    GrpcStreamCtx = 47 => (GRPC, "google.golang.org/grpc/internal/transport.Stream", "ctx"),
    /// grpc-go `transport.loopyWriter.framer` (*framer): the connection's frame writer.
    GrpcLoopyFramer = 48 => (GRPC, "google.golang.org/grpc/internal/transport.loopyWriter", "framer"),
    /// grpc-go `transport.framer.writer` (*bufWriter).
    GrpcFramerWriter = 49 => (GRPC, "google.golang.org/grpc/internal/transport.framer", "writer"),
    /// grpc-go `transport.bufWriter.conn` (net.Conn, an io.Writer from v1.77): the connection.
    GrpcBufWriterConn = 50 => (GRPC, "google.golang.org/grpc/internal/transport.bufWriter", "conn"),
    /// grpc-go `transport.bufWriter.offset` (int): bytes buffered for the connection's next write.
    GrpcBufWriterOffset = 51 => (GRPC, "google.golang.org/grpc/internal/transport.bufWriter", "offset"),
}

/// Module path the gRPC fields are keyed by: their layouts are read from builds of each
/// grpc-go release with the dependencies that release resolves to.
const GRPC: &str = "google.golang.org/grpc";

impl GoField {
    /// Number of defined slots.
    pub const COUNT: usize = Self::ALL.len();

    /// The slot index in [`TargetConfig::offsets`](crate::TargetConfig::offsets).
    pub const fn slot(self) -> usize {
        self as usize
    }
}

const _: () = assert!(GoField::COUNT <= MAX_FIELDS);
