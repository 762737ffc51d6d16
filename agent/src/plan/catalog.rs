//! The probes spanhook knows, described as data: symbol, kernel programs, fields they read.

use spanhook_common::{GoField, TargetConfig};

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
}

impl Capability {
    /// A short name for messages and `inspect`.
    pub const fn name(self) -> &'static str {
        match self {
            Capability::GoHttpServer => "http server",
            Capability::GoHttpClient => "http client",
            Capability::GoHttpPropagation => "propagation",
        }
    }
}

/// One Go function probe: an entry program and, optionally, a program on every RET.
#[derive(Debug)]
pub struct GoProbe {
    /// What it traces.
    pub capability: Capability,
    /// The Go function, as `.gopclntab` names it.
    pub symbol: &'static str,
    /// Kernel program attached at the function's entry.
    pub entry_program: &'static str,
    /// Kernel program attached at each RET instruction (never a uretprobe: Go moves stacks).
    pub return_program: Option<&'static str>,
    /// Fields without which the capability cannot work.
    pub required: &'static [GoField],
    /// Fields that add detail when known.
    pub optional: &'static [GoField],
    /// `TargetConfig` flags to set when this probe is attached.
    pub flags: u32,
    /// Attached only when the user asks for it (`--propagate`).
    pub opt_in: bool,
}

/// Every Go probe, in the order capabilities are reported.
pub const GO_PROBES: &[GoProbe] = &[
    GoProbe {
        capability: Capability::GoHttpServer,
        symbol: "net/http.serverHandler.ServeHTTP",
        entry_program: "go_http_server_enter",
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
    },
    GoProbe {
        capability: Capability::GoHttpClient,
        symbol: "net/http.(*Transport).roundTrip",
        entry_program: "go_http_client_enter",
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
    },
    GoProbe {
        capability: Capability::GoHttpPropagation,
        symbol: "net/http.(*persistConn).roundTrip",
        entry_program: "go_http_client_conn",
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
    },
];
