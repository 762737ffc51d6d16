//! Spans of Rust programs (hyper HTTP/1 server and client), with the same semantic conventions
//! and status rules as the Go HTTP spans.
//!
//! A server span covers the request from the moment hyper's `role::Server::parse` is handed the
//! complete request head (the head is read; the body may still be coming) to the return of
//! `role::Server::encode` for its response (the response head is serialized into the write
//! buffer; the body follows). A client span covers a reqwest call from `try_uri` (the request
//! handed to the client, before any connection is chosen or opened) to the response head
//! handed to `role::Client::parse`, or to the error the call returns; a request written by a
//! hyper client connection without reqwest covers `role::Client::encode` to the response head.

use std::sync::Arc;

use opentelemetry::{
    trace::{SpanKind, Status},
    KeyValue,
};
use spanhook_common::{RustHttpClientEvent, RustHttpServerEvent, TraceIds};

use super::{
    http::{ids, semconv_method, split_host_port, text, ErrorTypes},
    Clock, ProcessResource, SpanRecord,
};
use crate::inspect::rust::RustSymbols;

/// `error_fn` of a call that ended without a response and without an error object the probes
/// saw (the kernel's `NO_RESPONSE`).
pub const NO_RESPONSE: u64 = 1;

/// The SERVER span of one request served by hyper.
pub fn server_span(
    e: &RustHttpServerEvent,
    clock: &Clock,
    resource: Arc<ProcessResource>,
) -> SpanRecord {
    let raw_method = text(&e.method);
    let method = semconv_method(&raw_method).to_string();
    let mut attributes = vec![
        KeyValue::new("http.request.method", method.clone()),
        KeyValue::new("url.path", text(&e.path)),
        KeyValue::new("url.scheme", "http"),
        KeyValue::new("network.protocol.name", "http"),
        KeyValue::new("network.protocol.version", format!("1.{}", e.minor.min(9))),
    ];
    if method == "_OTHER" {
        attributes.push(KeyValue::new("http.request.method_original", raw_method));
    }
    if e.status != 0 {
        attributes.push(KeyValue::new("http.response.status_code", e.status as i64));
    }
    let (host, port) = split_host_port(&text(&e.host));
    if !host.is_empty() {
        attributes.push(KeyValue::new("server.address", host));
        attributes.push(KeyValue::new("server.port", port.unwrap_or(80) as i64));
    }
    if e.trace.origin == TraceIds::ORIGIN_HEADER_INVALID {
        attributes.push(KeyValue::new("spanhook.traceparent.invalid", true));
    }
    let error = e.status >= 500;
    if error {
        attributes.push(KeyValue::new("error.type", e.status.to_string()));
    }
    let (trace_id, span_id, parent_span_id, parent_is_remote) = ids(&e.trace);
    SpanRecord {
        trace_id,
        span_id,
        parent_span_id,
        parent_is_remote,
        sampled: e.trace.flags & 1 == 1,
        name: method,
        kind: SpanKind::Server,
        start: clock.wall(e.header.start_ns),
        end: clock.wall(e.header.end_ns.max(e.header.start_ns)),
        attributes,
        status: if error {
            Status::error("")
        } else {
            Status::Unset
        },
        resource,
    }
}

/// The CLIENT span of one call made with hyper's client (through reqwest or directly).
pub fn client_span(
    e: &RustHttpClientEvent,
    clock: &Clock,
    resource: Arc<ProcessResource>,
    errors: Option<&dyn ErrorTypes>,
) -> SpanRecord {
    let raw_method = text(&e.method);
    // A call that failed before its request was written has no method on record; reqwest's
    // default is GET, but nothing says so: `_OTHER` would be a guess too, so the method is
    // left out and the span is named after the operation.
    let method = (!raw_method.is_empty()).then(|| semconv_method(&raw_method).to_string());
    let target = text(&e.url);
    let host_header = text(&e.host);
    let url = if e.full_url != 0 || target.contains("://") {
        target
    } else {
        format!("http://{host_header}{target}")
    };
    let mut attributes = vec![KeyValue::new("url.full", url.clone())];
    if let Some(m) = &method {
        attributes.push(KeyValue::new("http.request.method", m.clone()));
        if m == "_OTHER" {
            attributes.push(KeyValue::new(
                "http.request.method_original",
                raw_method.clone(),
            ));
        }
    }
    let (scheme, authority) = match url.split_once("://") {
        Some((scheme, rest)) => (scheme.to_string(), rest.split('/').next().unwrap_or("")),
        None => ("http".to_string(), host_header.as_str()),
    };
    // Userinfo never goes into an attribute.
    let authority = authority.rsplit('@').next().unwrap_or("");
    let (host, port) = split_host_port(authority);
    if !host.is_empty() {
        attributes.push(KeyValue::new("server.address", host));
    }
    let port = port.or(match scheme.as_str() {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    });
    if let Some(port) = port {
        attributes.push(KeyValue::new("server.port", port as i64));
    }
    let failed = e.failed != 0 || e.status == 0;
    if !failed {
        attributes.push(KeyValue::new("http.response.status_code", e.status as i64));
        attributes.push(KeyValue::new("network.protocol.name", "http"));
        attributes.push(KeyValue::new(
            "network.protocol.version",
            format!("1.{}", e.minor.min(9)),
        ));
    }
    let status = if failed {
        let kind = if e.error_fn[0] == NO_RESPONSE {
            // reqwest's own timeout builds its error inline, so no probe sees it; a call that
            // ended without a response and without an error the probes saw timed out or was
            // dropped by its caller.
            "timeout_or_canceled".to_string()
        } else {
            errors
                .and_then(|names| e.error_fn.iter().find_map(|&f| names.name(f)))
                .unwrap_or_else(|| "_OTHER".to_string())
        };
        attributes.push(KeyValue::new("error.type", kind));
        Status::error("")
    } else if e.status >= 400 {
        attributes.push(KeyValue::new("error.type", e.status.to_string()));
        Status::error("")
    } else {
        Status::Unset
    };
    let (trace_id, span_id, parent_span_id, _) = ids(&e.trace);
    SpanRecord {
        trace_id,
        span_id,
        parent_span_id,
        parent_is_remote: false,
        sampled: e.trace.flags & 1 == 1,
        name: method.unwrap_or_else(|| "HTTP".to_string()),
        kind: SpanKind::Client,
        start: clock.wall(e.header.start_ns),
        end: clock.wall(e.header.end_ns.max(e.header.start_ns)),
        attributes,
        status,
        resource,
    }
}

/// Names the source type of a Rust error from the address of its `Debug::fmt` (what the probes
/// read from the error's vtable): `<reqwest::error::TimedOut as core::fmt::Debug>::fmt` names
/// `reqwest::error::TimedOut`.
#[derive(Debug)]
pub struct RustErrorTypes {
    symbols: Arc<RustSymbols>,
    bias: u64,
}

impl RustErrorTypes {
    /// A namer for a program loaded `bias` bytes from its link addresses.
    pub fn new(symbols: Arc<RustSymbols>, bias: u64) -> Self {
        Self { symbols, bias }
    }
}

impl ErrorTypes for RustErrorTypes {
    fn name(&self, addr: u64) -> Option<String> {
        if addr == 0 {
            return None;
        }
        let at = addr.wrapping_sub(self.bias);
        let name = self.symbols.name_of(at);
        tracing::debug!("error source at {addr:#x} (file address {at:#x}): {name:?}");
        type_of_debug_fmt(name?)
    }
}

/// `T` from `<T as core::fmt::Debug>::fmt`.
pub fn type_of_debug_fmt(name: &str) -> Option<String> {
    let inner = name.strip_prefix('<')?.strip_suffix(">::fmt")?;
    let (ty, _) = inner.rsplit_once(" as core::fmt::Debug")?;
    Some(ty.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::tests::str_of;
    use spanhook_common::{EventHeader, EventKind, Str};
    use std::path::Path;

    fn resource() -> Arc<ProcessResource> {
        Arc::new(ProcessResource::from_parts(
            7,
            Path::new("/bin/svc"),
            b"",
            b"",
            None,
            &[],
        ))
    }

    fn attr(s: &SpanRecord, k: &str) -> Option<String> {
        s.attribute(k).map(|v| v.as_str().into_owned())
    }

    fn int(s: &SpanRecord, k: &str) -> Option<i64> {
        match s.attribute(k) {
            Some(opentelemetry::Value::I64(i)) => Some(*i),
            _ => None,
        }
    }

    fn header(kind: EventKind) -> EventHeader {
        EventHeader {
            kind: kind as u16,
            _pad: 0,
            tgid: 7,
            start_ns: 1_000,
            end_ns: 5_000,
        }
    }

    fn trace() -> TraceIds {
        TraceIds {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: [0; 8],
            flags: 1,
            origin: TraceIds::ORIGIN_NEW,
            _pad: [0; 6],
        }
    }

    pub(crate) fn server(method: &str, path: &str, host: &str, status: u16) -> RustHttpServerEvent {
        RustHttpServerEvent {
            header: header(EventKind::RustHttpServer),
            trace: trace(),
            task: 0x1000,
            status,
            minor: 1,
            _pad: [0; 5],
            method: str_of(method),
            path: str_of(path),
            host: str_of(host),
            _tail: 0,
        }
    }

    pub(crate) fn client(method: &str, url: &str, host: &str, status: u16) -> RustHttpClientEvent {
        RustHttpClientEvent {
            header: header(EventKind::RustHttpClient),
            trace: trace(),
            task: 0x1000,
            error_fn: [0; 4],
            status,
            minor: 1,
            failed: 0,
            propagated: 0,
            full_url: url.contains("://") as u8,
            _pad: [0; 2],
            method: str_of(method),
            url: str_of(url),
            host: str_of(host),
            _tail: 0,
        }
    }

    #[test]
    fn server_spans_follow_the_conventions() {
        let clock = Clock::with_offset_ns(0);
        let s = server_span(
            &server("GET", "/leaf/1", "127.0.0.1:8080", 200),
            &clock,
            resource(),
        );
        assert_eq!(s.name, "GET");
        assert_eq!(s.kind, SpanKind::Server);
        assert_eq!(attr(&s, "url.path").as_deref(), Some("/leaf/1"));
        assert_eq!(attr(&s, "server.address").as_deref(), Some("127.0.0.1"));
        assert_eq!(int(&s, "server.port"), Some(8080));
        assert_eq!(int(&s, "http.response.status_code"), Some(200));
        assert_eq!(attr(&s, "network.protocol.version").as_deref(), Some("1.1"));
        assert_eq!(s.status, Status::Unset);
        let s = server_span(&server("BREW", "/", "h", 503), &clock, resource());
        assert_eq!(s.name, "_OTHER");
        assert!(matches!(s.status, Status::Error { .. }));
        assert_eq!(attr(&s, "error.type").as_deref(), Some("503"));
        assert_eq!(int(&s, "server.port"), Some(80));
        let s = server_span(&server("GET", "/", "h", 404), &clock, resource());
        assert_eq!(s.status, Status::Unset);
    }

    #[test]
    fn client_spans_from_reqwest_and_from_the_wire() {
        let clock = Clock::with_offset_ns(0);
        let s = client_span(
            &client("POST", "http://api:9000/v1/items", "api:9000", 201),
            &clock,
            resource(),
            None,
        );
        assert_eq!(s.name, "POST");
        assert_eq!(
            attr(&s, "url.full").as_deref(),
            Some("http://api:9000/v1/items")
        );
        assert_eq!(attr(&s, "server.address").as_deref(), Some("api"));
        assert_eq!(int(&s, "server.port"), Some(9000));
        assert_eq!(int(&s, "http.response.status_code"), Some(201));
        let s = client_span(
            &client("GET", "/x", "example.com", 404),
            &clock,
            resource(),
            None,
        );
        assert_eq!(
            attr(&s, "url.full").as_deref(),
            Some("http://example.com/x")
        );
        assert_eq!(int(&s, "server.port"), Some(80));
        assert!(matches!(s.status, Status::Error { .. }));
        assert_eq!(attr(&s, "error.type").as_deref(), Some("404"));
        let s = client_span(
            &client("GET", "https://u:p@secure.example/a", "", 200),
            &clock,
            resource(),
            None,
        );
        assert_eq!(
            attr(&s, "server.address").as_deref(),
            Some("secure.example")
        );
        assert_eq!(int(&s, "server.port"), Some(443));
    }

    #[derive(Debug)]
    struct Names;
    impl ErrorTypes for Names {
        fn name(&self, addr: u64) -> Option<String> {
            (addr == 0x42).then(|| "reqwest::error::TimedOut".into())
        }
    }

    #[test]
    fn failed_calls_are_errors_with_their_type() {
        let clock = Clock::with_offset_ns(0);
        let mut e = client("", "http://127.0.0.1:1/leaf/f", "", 0);
        e.failed = 1;
        e.error_fn = [0x42, 0, 0, 0];
        e.method = Str::default();
        let s = client_span(&e, &clock, resource(), Some(&Names));
        assert!(matches!(s.status, Status::Error { .. }));
        assert_eq!(
            attr(&s, "error.type").as_deref(),
            Some("reqwest::error::TimedOut")
        );
        assert_eq!(s.attribute("http.response.status_code"), None);
        assert_eq!(int(&s, "server.port"), Some(1));
        e.error_fn = [7, 0, 0, 0];
        let s = client_span(&e, &clock, resource(), Some(&Names));
        assert_eq!(attr(&s, "error.type").as_deref(), Some("_OTHER"));
    }

    #[test]
    fn names_types_from_debug_fmt() {
        assert_eq!(
            type_of_debug_fmt("<reqwest::error::TimedOut as core::fmt::Debug>::fmt").as_deref(),
            Some("reqwest::error::TimedOut")
        );
        assert_eq!(
            type_of_debug_fmt("<hyper_util::client::legacy::Error as core::fmt::Debug>::fmt")
                .as_deref(),
            Some("hyper_util::client::legacy::Error")
        );
        assert_eq!(type_of_debug_fmt("core::fmt::write"), None);
    }
}
