//! The probes spanhook knows, described as data: symbol, kernel programs, fields they read.

use spanhook_common::{GoField, TargetConfig};

/// Something spanhook can trace in a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// Go `net/http` server requests (HTTP/1.x and the bundled HTTP/2).
    GoHttpServer,
}

impl Capability {
    /// A short name for messages and `inspect`.
    pub const fn name(self) -> &'static str {
        match self {
            Capability::GoHttpServer => "http server",
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
}

/// Every Go probe, in the order capabilities are reported.
pub const GO_PROBES: &[GoProbe] = &[GoProbe {
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
        GoField::ConnRemoteAddr,
        GoField::BufioReaderBuf,
        GoField::BufioReaderPos,
        GoField::Http2ResponseWriterState,
        GoField::Http2WriterStateStatus,
    ],
    flags: TargetConfig::FLAG_SERVER_TRACEPARENT,
}];
