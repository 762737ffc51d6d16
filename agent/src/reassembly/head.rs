//! HTTP/1 message heads: the request line or status line and the few header fields the
//! reconstruction needs, parsed from raw bytes that may be anything.
//!
//! Only what a span needs is kept: method, path without the query, version, `Host`,
//! `traceparent`, and the framing fields (`Content-Length`, `Transfer-Encoding`,
//! `Connection`, `Upgrade`). Every other header value, the query string and the bodies are
//! read past and never stored.

/// Longest method token accepted (the longest registered method is 17 bytes).
const MAX_METHOD: usize = 24;

/// Whether the bytes at a message boundary can start a message of the kind looked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The first line is complete and well formed.
    Yes,
    /// What is there is a consistent prefix; more bytes are needed to decide.
    NeedMore,
    /// Not a message start.
    No,
}

/// What kind of message a stream carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Request heads (a server's ingress, a client's egress).
    Request,
    /// Response heads.
    Response,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `bytes` (from a message boundary) can begin a message of `kind`.
pub fn start(bytes: &[u8], kind: Kind) -> Start {
    let line_end = bytes.iter().position(|&b| b == b'\n');
    let line = match line_end {
        Some(n) => &bytes[..n],
        None => bytes,
    };
    let complete = line_end.is_some();
    let ok = match kind {
        Kind::Request => request_line_prefix(line, complete),
        Kind::Response => status_line_prefix(line, complete),
    };
    match (ok, complete) {
        (false, _) => Start::No,
        (true, true) => Start::Yes,
        (true, false) => Start::NeedMore,
    }
}

/// Whether `line` (without its `\n`) is a request line, or a prefix of one when incomplete.
fn request_line_prefix(line: &[u8], complete: bool) -> bool {
    // An incomplete line may end with the CR of its CRLF.
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // METHOD
    let method_end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let method = &line[..method_end];
    if method.len() > MAX_METHOD
        || !method
            .iter()
            .all(|&b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
    {
        return false;
    }
    if method_end == line.len() {
        return !complete;
    }
    if method.is_empty() {
        return false;
    }
    // SP target
    let rest = &line[method_end + 1..];
    let target_end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    let target = &rest[..target_end];
    if target.first() == Some(&b' ') || !target.iter().all(|&b| b.is_ascii_graphic()) {
        return false;
    }
    if target_end == rest.len() {
        return !complete;
    }
    if target.is_empty() {
        return false;
    }
    // SP HTTP/1.d
    let version = &rest[target_end + 1..];
    version_prefix(version, complete)
}

/// Whether `v` is `HTTP/1.0` or `HTTP/1.1` (or a prefix of one when incomplete).
fn version_prefix(v: &[u8], complete: bool) -> bool {
    const FULL: &[u8] = b"HTTP/1.";
    if v.len() <= FULL.len() {
        return !complete && FULL.starts_with(v);
    }
    v.starts_with(FULL) && matches!(v[FULL.len()], b'0' | b'1') && v.len() == FULL.len() + 1
}

/// Whether `line` is a status line (or a prefix of one when incomplete).
fn status_line_prefix(line: &[u8], complete: bool) -> bool {
    // An incomplete line may end with the CR of its CRLF.
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let n = line.len().min(8);
    if !version_prefix(&line[..n], complete && line.len() == 8) {
        return false;
    }
    if line.len() <= 8 {
        return !complete;
    }
    if line[8] != b' ' {
        return false;
    }
    let code = &line[9..line.len().min(12)];
    if !code.iter().all(u8::is_ascii_digit) {
        return false;
    }
    if line.len() < 12 {
        return !complete;
    }
    line.len() == 12 || line[12] == b' '
}

/// Where the head starting at `bytes[0]` ends (the index just past its blank line).
pub fn head_end(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(n) = bytes[i..].iter().position(|&b| b == b'\n') {
        let nl = i + n;
        let next = nl + 1;
        match bytes.get(next) {
            Some(b'\n') => return Some(next + 1),
            Some(b'\r') if bytes.get(next + 1) == Some(&b'\n') => return Some(next + 2),
            _ => {}
        }
        i = next;
    }
    None
}

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Framing {
    /// No body.
    #[default]
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (a response without length).
    UntilClose,
    /// The connection stops carrying HTTP/1 (`101 Switching Protocols`, `CONNECT` 2xx).
    Tunnel,
}

/// An incoming `traceparent`, as W3C Trace Context level 1 reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Traceparent {
    /// No `traceparent` header.
    #[default]
    Absent,
    /// A valid value: trace id, parent span id, flags.
    Valid {
        /// Trace id.
        trace_id: [u8; 16],
        /// The caller's span id.
        parent_id: [u8; 8],
        /// Trace flags (bit 0: sampled).
        flags: u8,
    },
    /// Present but malformed (or repeated): ignored, a new trace is started.
    Invalid,
}

fn hex_bytes<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = digit(s[2 * i])? << 4 | digit(s[2 * i + 1])?;
    }
    Some(out)
}

impl Traceparent {
    /// Parses a header value: `00-<32 hex>-<16 hex>-<2 hex>`, lowercase, ids not all zero;
    /// a later version may append fields after a `-`; version `ff` is invalid.
    pub fn parse(value: &[u8]) -> Traceparent {
        let value = value.trim_ascii();
        if value.len() < 55 {
            return Traceparent::Invalid;
        }
        let (Some(version), true, true, true) = (
            hex_bytes::<1>(&value[..2]),
            value[2] == b'-',
            value[35] == b'-',
            value[52] == b'-',
        ) else {
            return Traceparent::Invalid;
        };
        let version = version[0];
        if version == 0xff || (version == 0 && value.len() != 55) {
            return Traceparent::Invalid;
        }
        if value.len() > 55 && value[55] != b'-' {
            return Traceparent::Invalid;
        }
        let (Some(trace_id), Some(parent_id), Some(flags)) = (
            hex_bytes::<16>(&value[3..35]),
            hex_bytes::<8>(&value[36..52]),
            hex_bytes::<1>(&value[53..55]),
        ) else {
            return Traceparent::Invalid;
        };
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return Traceparent::Invalid;
        }
        Traceparent::Valid {
            trace_id,
            parent_id,
            flags: flags[0],
        }
    }
}

/// The facts of a request head a span needs.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RequestHead {
    /// The method as sent.
    pub method: String,
    /// The target's path: origin-form up to `?`, the path of an absolute-form target, `*`
    /// for asterisk-form, the authority for `CONNECT`.
    pub path: String,
    /// `(major, minor)`.
    pub version: (u8, u8),
    /// The `Host` header, if any.
    pub host: Option<String>,
    /// The `traceparent` header.
    pub traceparent: Traceparent,
    /// How the request body is delimited.
    pub framing: Framing,
    /// `Connection: close`, or HTTP/1.0 without `keep-alive`.
    pub close: bool,
}

/// The facts of a response head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// `(major, minor)`.
    pub version: (u8, u8),
    /// How the body is delimited (given the request's method).
    pub framing: Framing,
}

/// Why a head is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// The first line is not a request or status line.
    #[error("malformed first line")]
    FirstLine,
    /// A header line is not `name: value`.
    #[error("malformed header line")]
    HeaderLine,
    /// `Content-Length` is not a number, or two disagree.
    #[error("invalid Content-Length")]
    ContentLength,
}

/// The header fields framing and tracing depend on.
#[derive(Default)]
struct Fields {
    content_length: Option<u64>,
    chunked: bool,
    transfer_encoding: bool,
    host: Option<String>,
    traceparent: Traceparent,
    connection_close: bool,
    connection_keep_alive: bool,
}

/// Splits a head into lines without their line ending (the blank line excluded).
fn lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    head.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .take_while(|l| !l.is_empty())
}

fn header_fields<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Result<Fields, HeadError> {
    let mut f = Fields::default();
    let mut traceparents = 0;
    for line in lines {
        if line[0] == b' ' || line[0] == b'\t' {
            // Obsolete line folding continues the previous field: nothing we read.
            continue;
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(HeadError::HeaderLine)?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().copied().all(is_tchar) {
            return Err(HeadError::HeaderLine);
        }
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            let n: u64 = std::str::from_utf8(value)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse().ok())
                .ok_or(HeadError::ContentLength)?;
            if f.content_length.is_some_and(|m| m != n) {
                return Err(HeadError::ContentLength);
            }
            f.content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            f.transfer_encoding = true;
            // Chunked is the final coding when present.
            let last = value
                .rsplit(|&b| b == b',')
                .next()
                .unwrap_or(b"")
                .trim_ascii();
            f.chunked = last.eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"host") {
            f.host = Some(String::from_utf8_lossy(value).into_owned());
        } else if name.eq_ignore_ascii_case(b"traceparent") {
            traceparents += 1;
            f.traceparent = if traceparents == 1 {
                Traceparent::parse(value)
            } else {
                Traceparent::Invalid
            };
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    f.connection_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    f.connection_keep_alive = true;
                }
            }
        }
    }
    Ok(f)
}

fn version_of(v: &[u8]) -> Option<(u8, u8)> {
    match v {
        b"HTTP/1.0" => Some((1, 0)),
        b"HTTP/1.1" => Some((1, 1)),
        _ => None,
    }
}

/// The path of a request target, without query or fragment.
fn target_path(method: &str, target: &[u8]) -> String {
    let text = String::from_utf8_lossy(target);
    if method == "CONNECT" || text == "*" {
        return text.into_owned();
    }
    let mut path: &str = &text;
    // absolute-form: scheme "://" authority path
    if let Some(i) = path.find("://") {
        if path[..i]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            let rest = &path[i + 3..];
            path = rest.find('/').map_or("/", |j| &rest[j..]);
        }
    }
    let end = path.find(['?', '#']).unwrap_or(path.len());
    path[..end].to_string()
}

/// Parses a complete request head (through its blank line).
pub fn parse_request(head: &[u8]) -> Result<RequestHead, HeadError> {
    let mut lines = lines(head);
    let first = lines.next().ok_or(HeadError::FirstLine)?;
    let mut parts = first.splitn(3, |&b| b == b' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::FirstLine);
    };
    if !request_line_prefix(first, true) {
        return Err(HeadError::FirstLine);
    }
    let version = version_of(version).ok_or(HeadError::FirstLine)?;
    let method = String::from_utf8_lossy(method).into_owned();
    let f = header_fields(lines)?;
    // RFC 9112 §6.3: chunked wins over Content-Length; a request with another final coding
    // cannot be delimited.
    let framing = if f.transfer_encoding {
        if f.chunked {
            Framing::Chunked
        } else {
            return Err(HeadError::ContentLength);
        }
    } else {
        match f.content_length {
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        }
    };
    let close = f.connection_close || (version == (1, 0) && !f.connection_keep_alive);
    Ok(RequestHead {
        path: target_path(&method, target),
        method,
        version,
        host: f.host,
        traceparent: f.traceparent,
        framing,
        close,
    })
}

/// Parses a complete response head to a request made with `method`.
pub fn parse_response(head: &[u8], method: Option<&str>) -> Result<ResponseHead, HeadError> {
    let mut lines = lines(head);
    let first = lines.next().ok_or(HeadError::FirstLine)?;
    if !status_line_prefix(first, true) {
        return Err(HeadError::FirstLine);
    }
    let version = version_of(&first[..8]).ok_or(HeadError::FirstLine)?;
    let status: u16 = std::str::from_utf8(&first[9..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(HeadError::FirstLine)?;
    let f = header_fields(lines)?;
    let framing = if status == 101 || (method == Some("CONNECT") && (200..300).contains(&status)) {
        Framing::Tunnel
    } else if (100..200).contains(&status)
        || status == 204
        || status == 304
        || method == Some("HEAD")
    {
        Framing::None
    } else if f.transfer_encoding {
        if f.chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        match f.content_length {
            Some(0) => Framing::None,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    Ok(ResponseHead {
        status,
        version,
        framing,
    })
}

/// Parses a chunk-size line (without its line ending): hex size, optional extensions.
pub fn chunk_size(line: &[u8]) -> Option<u64> {
    let end = line
        .iter()
        .position(|&b| b == b';' || b == b' ' || b == b'\t')
        .unwrap_or(line.len());
    let hex = &line[..end];
    if hex.is_empty() || hex.len() > 15 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_starts() {
        assert_eq!(start(b"GET / HTTP/1.1\r\n", Kind::Request), Start::Yes);
        assert_eq!(start(b"GET / HTTP/1.0\n", Kind::Request), Start::Yes);
        assert_eq!(start(b"G", Kind::Request), Start::NeedMore);
        assert_eq!(start(b"GET /a?b HTT", Kind::Request), Start::NeedMore);
        assert_eq!(start(b"", Kind::Request), Start::NeedMore);
        assert_eq!(start(b"get / HTTP/1.1\r\n", Kind::Request), Start::No);
        assert_eq!(start(b"GET / HTTP/2.0\r\n", Kind::Request), Start::No);
        assert_eq!(start(b"PRI * HTTP/2.0\r\n", Kind::Request), Start::No);
        assert_eq!(start(b"GET  / HTTP/1.1\r\n", Kind::Request), Start::No);
        assert_eq!(start(b"\x16\x03\x01\x02\x00", Kind::Request), Start::No);
        assert_eq!(start(b"GET / HTTP/1.1 x\r\n", Kind::Request), Start::No);
        assert_eq!(start(b"HTTP/1.1 200 OK\r\n", Kind::Request), Start::No);
    }

    #[test]
    fn response_starts() {
        assert_eq!(start(b"HTTP/1.1 200 OK\r\n", Kind::Response), Start::Yes);
        assert_eq!(start(b"HTTP/1.1 204\r\n", Kind::Response), Start::Yes);
        assert_eq!(
            start(b"HTTP/1.0 404 Not Found\n", Kind::Response),
            Start::Yes
        );
        assert_eq!(start(b"HTTP/1.1 20", Kind::Response), Start::NeedMore);
        assert_eq!(start(b"HTT", Kind::Response), Start::NeedMore);
        assert_eq!(start(b"HTTP/1.1 2x0 OK\r\n", Kind::Response), Start::No);
        assert_eq!(start(b"HTTP/2 200\r\n", Kind::Response), Start::No);
        assert_eq!(start(b"GET / HTTP/1.1\r\n", Kind::Response), Start::No);
    }

    #[test]
    fn heads_end_at_the_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\nbody"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r"), None);
    }

    #[test]
    fn parses_requests_and_keeps_only_what_spans_need() {
        let r = parse_request(
            b"POST /items/7?secret=1 HTTP/1.1\r\nHost: api:8080\r\nCookie: a=b\r\nContent-Length: 12\r\n\
              traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/items/7");
        assert_eq!(r.host.as_deref(), Some("api:8080"));
        assert_eq!(r.framing, Framing::Length(12));
        assert!(matches!(r.traceparent, Traceparent::Valid { flags: 1, .. }));
        assert!(!r.close);
        let r = parse_request(
            b"GET http://example.com:81/a/b?q HTTP/1.0\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.path, "/a/b");
        assert_eq!(r.framing, Framing::Chunked);
        assert!(r.close);
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(HeadError::ContentLength)
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            Err(HeadError::ContentLength)
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n"),
            Err(HeadError::HeaderLine)
        );
    }

    #[test]
    fn response_framing_depends_on_the_request() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
        assert_eq!(
            parse_response(head, Some("GET")).unwrap().framing,
            Framing::Length(10)
        );
        assert_eq!(
            parse_response(head, Some("HEAD")).unwrap().framing,
            Framing::None
        );
        let r = parse_response(b"HTTP/1.1 204 No Content\r\n\r\n", Some("DELETE")).unwrap();
        assert_eq!((r.status, r.framing), (204, Framing::None));
        let r = parse_response(b"HTTP/1.0 200 OK\r\n\r\n", Some("GET")).unwrap();
        assert_eq!(r.framing, Framing::UntilClose);
        let r = parse_response(b"HTTP/1.1 101 Switching\r\nUpgrade: x\r\n\r\n", None).unwrap();
        assert_eq!(r.framing, Framing::Tunnel);
        let r = parse_response(b"HTTP/1.1 100 Continue\r\n\r\n", Some("PUT")).unwrap();
        assert_eq!(r.framing, Framing::None);
    }

    #[test]
    fn traceparent_follows_w3c() {
        let ok = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert!(matches!(Traceparent::parse(ok), Traceparent::Valid { .. }));
        let bad: &[&[u8]] = &[
            b"00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",
            b"00-00000000000000000000000000000000-b7ad6b7169203331-01",
            b"00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            b"ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            b"00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ];
        for b in bad {
            assert_eq!(
                Traceparent::parse(b),
                Traceparent::Invalid,
                "{}",
                String::from_utf8_lossy(b)
            );
        }
        // A future version may add fields.
        assert!(matches!(
            Traceparent::parse(b"01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra"),
            Traceparent::Valid { .. }
        ));
        let twice = parse_request(
            b"GET / HTTP/1.1\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\
              Traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n",
        )
        .unwrap();
        assert_eq!(twice.traceparent, Traceparent::Invalid);
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size(b"1a"), Some(26));
        assert_eq!(chunk_size(b"0"), Some(0));
        assert_eq!(chunk_size(b"10;ext=1"), Some(16));
        assert_eq!(chunk_size(b""), None);
        assert_eq!(chunk_size(b"zz"), None);
        assert_eq!(chunk_size(b"ffffffffffffffffff"), None);
    }
}
