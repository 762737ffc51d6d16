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
    ($($(#[$doc:meta])* $variant:ident = $idx:literal => ($module:literal, $ty:literal, $field:literal),)*) => {
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
}

impl GoField {
    /// Number of defined slots.
    pub const COUNT: usize = Self::ALL.len();

    /// The slot index in [`TargetConfig::offsets`](crate::TargetConfig::offsets).
    pub const fn slot(self) -> usize {
        self as usize
    }
}

const _: () = assert!(GoField::COUNT <= MAX_FIELDS);
