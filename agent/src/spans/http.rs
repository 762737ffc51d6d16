//! HTTP spans with the stable HTTP semantic conventions.

use std::sync::Arc;

use opentelemetry::{
    trace::{SpanId, SpanKind, Status, TraceId},
    KeyValue,
};
use spanhook_common::{HttpClientEvent, HttpServerEvent, Str, TraceIds};

use super::{Clock, ProcessResource, SpanRecord};

/// Methods the semantic conventions know; anything else is reported as `_OTHER`.
const KNOWN_METHODS: &[&str] = &[
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE",
];

/// Names the dynamic type of a Go error from its itab address, for `error.type`.
pub trait ErrorTypes: Send + Sync + std::fmt::Debug {
    /// The type name (e.g. `*net.OpError`), if it can be found.
    fn name(&self, itab: u64) -> Option<String>;
}

pub(crate) fn text<const N: usize>(s: &Str<N>) -> String {
    String::from_utf8_lossy(s.as_bytes()).into_owned()
}

/// Splits `host[:port]` (IPv6 in brackets) into address and port.
pub fn split_host_port(hostport: &str) -> (String, Option<u16>) {
    let (addr, port) = split_host_port_ref(hostport);
    (addr.to_string(), port)
}

/// The `http.route` from a ServeMux pattern `[METHOD ][HOST]/PATH`: the path template.
pub fn route_from_pattern(pattern: &str) -> Option<String> {
    let pattern = pattern.trim();
    let path_start = pattern.find('/')?;
    Some(pattern[path_start..].to_string())
}

pub(crate) fn semconv_method(raw: &str) -> &str {
    if KNOWN_METHODS.contains(&raw) {
        raw
    } else {
        "_OTHER"
    }
}

/// The semantic-convention method for the raw bytes the probe read, as a static string (no
/// allocation on the per-span path).
fn static_method(raw: &[u8]) -> &'static str {
    KNOWN_METHODS
        .iter()
        .find(|m| m.as_bytes() == raw)
        .copied()
        .unwrap_or("_OTHER")
}

/// `host[:port]` split like [`split_host_port`], borrowing from `hostport`.
fn split_host_port_ref(hostport: &str) -> (&str, Option<u16>) {
    if let Some(rest) = hostport.strip_prefix('[') {
        if let Some((addr, tail)) = rest.split_once(']') {
            let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
            return (addr, port);
        }
    }
    match hostport.rsplit_once(':') {
        // More than one colon and no brackets: a bare IPv6 address without a port.
        Some((addr, _)) if addr.contains(':') => (hostport, None),
        Some((addr, port)) => match port.parse() {
            Ok(p) => (addr, Some(p)),
            Err(_) => (hostport, None),
        },
        None => (hostport, None),
    }
}

pub(crate) fn ids(trace: &TraceIds) -> (TraceId, SpanId, SpanId, bool) {
    let parent = SpanId::from_bytes(trace.parent_span_id);
    (
        TraceId::from_bytes(trace.trace_id),
        SpanId::from_bytes(trace.span_id),
        parent,
        trace.origin == TraceIds::ORIGIN_HEADER,
    )
}

/// The SERVER span of one Go `net/http` request.
pub fn server_span(
    e: &HttpServerEvent,
    clock: &Clock,
    resource: Arc<ProcessResource>,
) -> SpanRecord {
    // This runs once per request: static strings and borrowed text wherever the value allows,
    // so a span costs few allocations (each attribute string is one).
    let method = static_method(e.method.as_bytes());
    // Go sends 200 when a handler writes nothing; the probe then reads 0.
    let status_code = if e.status == 0 { 200 } else { e.status as i64 };
    let scheme = if e.tls != 0 { "https" } else { "http" };
    let pattern = String::from_utf8_lossy(e.route.as_bytes());
    let route = pattern.trim().find('/').map(|i| &pattern.trim()[i..]);
    let mut attributes = Vec::with_capacity(12);
    attributes.extend([
        KeyValue::new("http.request.method", method),
        KeyValue::new("url.path", text(&e.path)),
        KeyValue::new("url.scheme", scheme),
        KeyValue::new("http.response.status_code", status_code),
        KeyValue::new("network.protocol.name", "http"),
        KeyValue::new(
            "network.protocol.version",
            protocol_version_value(e.proto_major, e.proto_minor),
        ),
    ]);
    if method == "_OTHER" {
        attributes.push(KeyValue::new(
            "http.request.method_original",
            text(&e.method),
        ));
    }
    let hostport = String::from_utf8_lossy(e.host.as_bytes());
    let (host, port) = split_host_port_ref(&hostport);
    if !host.is_empty() {
        attributes.push(KeyValue::new("server.address", host.to_string()));
    }
    let port = port.unwrap_or(if e.tls != 0 { 443 } else { 80 });
    attributes.push(KeyValue::new("server.port", port as i64));
    let remote = String::from_utf8_lossy(e.remote.as_bytes());
    let (client, client_port) = split_host_port_ref(&remote);
    if !client.is_empty() {
        attributes.push(KeyValue::new("client.address", client.to_string()));
        if let Some(p) = client_port {
            attributes.push(KeyValue::new("client.port", p as i64));
        }
    }
    if let Some(route) = route {
        attributes.push(KeyValue::new("http.route", route.to_string()));
    }
    if e.trace.origin == TraceIds::ORIGIN_HEADER_INVALID {
        attributes.push(KeyValue::new("spanhook.traceparent.invalid", true));
    }
    if e.status >= 500 {
        attributes.push(KeyValue::new("error.type", status_code.to_string()));
    }
    let name = match route {
        Some(route) => {
            let mut name = String::with_capacity(method.len() + 1 + route.len());
            name.push_str(method);
            name.push(' ');
            name.push_str(route);
            name
        }
        None => method.to_string(),
    };
    let (trace_id, span_id, parent_span_id, parent_is_remote) = ids(&e.trace);
    SpanRecord {
        trace_id,
        span_id,
        parent_span_id,
        parent_is_remote,
        sampled: e.trace.flags & 1 == 1,
        name,
        kind: SpanKind::Server,
        start: clock.wall(e.header.start_ns),
        end: clock.wall(e.header.end_ns.max(e.header.start_ns)),
        attributes,
        // Server spans are errors for 5xx only: a 4xx is the client's mistake.
        status: if e.status >= 500 {
            Status::error("")
        } else {
            Status::Unset
        },
        resource,
    }
}

/// The CLIENT span of one Go `net/http` round trip.
pub fn client_span(
    e: &HttpClientEvent,
    clock: &Clock,
    resource: Arc<ProcessResource>,
    errors: Option<&dyn ErrorTypes>,
) -> SpanRecord {
    let raw_method = text(&e.method);
    let method = semconv_method(&raw_method).to_string();
    let scheme = text(&e.scheme);
    let hostport = text(&e.host);
    let path = text(&e.path);
    let mut attributes = vec![
        KeyValue::new("http.request.method", method.clone()),
        // The query is never read, so it cannot leak into url.full.
        KeyValue::new("url.full", format!("{scheme}://{hostport}{path}")),
    ];
    if method == "_OTHER" {
        attributes.push(KeyValue::new("http.request.method_original", raw_method));
    }
    let (host, port) = split_host_port(&hostport);
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
    let failed = e.error_itab != 0;
    if !failed && e.status != 0 {
        attributes.push(KeyValue::new("http.response.status_code", e.status as i64));
        attributes.push(KeyValue::new("network.protocol.name", "http"));
        attributes.push(KeyValue::new(
            "network.protocol.version",
            protocol_version_value(e.proto_major, e.proto_minor),
        ));
    }
    // Client spans are errors for any failure to get a response and for 4xx and 5xx.
    let status = if failed {
        let kind = errors
            .and_then(|names| names.name(e.error_itab))
            .unwrap_or_else(|| "_OTHER".to_string());
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
        name: method,
        kind: SpanKind::Client,
        start: clock.wall(e.header.start_ns),
        end: clock.wall(e.header.end_ns.max(e.header.start_ns)),
        attributes,
        status,
        resource,
    }
}

/// `network.protocol.version` as an attribute value: static for the versions that exist.
fn protocol_version_value(major: u8, minor: u8) -> opentelemetry::Value {
    match (major, minor) {
        (1, 1) => "1.1".into(),
        (1, 0) => "1.0".into(),
        (2, _) => "2".into(),
        (3, _) => "3".into(),
        _ => protocol_version(major, minor).into(),
    }
}

fn protocol_version(major: u8, minor: u8) -> String {
    match (major, minor) {
        (2, _) => "2".to_string(),
        (3, _) => "3".to_string(),
        (major, minor) => format!("{major}.{minor}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::tests::{server_event, str_of};
    use std::path::Path;

    fn resource() -> Arc<ProcessResource> {
        Arc::new(ProcessResource::from_parts(
            4242,
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

    #[test]
    fn server_span_has_semconv_attributes() {
        let clock = Clock::with_offset_ns(0);
        let s = server_span(&server_event("GET", "/hello", 0), &clock, resource());
        assert_eq!(s.name, "GET");
        assert_eq!(s.kind, SpanKind::Server);
        assert_eq!(attr(&s, "http.request.method").as_deref(), Some("GET"));
        assert_eq!(attr(&s, "url.path").as_deref(), Some("/hello"));
        assert_eq!(attr(&s, "url.scheme").as_deref(), Some("http"));
        assert_eq!(
            s.attribute("http.response.status_code"),
            Some(&opentelemetry::Value::I64(200))
        );
        assert_eq!(attr(&s, "server.address").as_deref(), Some("localhost"));
        assert_eq!(
            s.attribute("server.port"),
            Some(&opentelemetry::Value::I64(8080))
        );
        assert_eq!(attr(&s, "client.address").as_deref(), Some("127.0.0.1"));
        assert_eq!(attr(&s, "network.protocol.version").as_deref(), Some("1.1"));
        assert_eq!(s.status, Status::Unset);
        assert_eq!(s.duration(), std::time::Duration::from_micros(2500));
        assert_eq!(s.parent_span_id, SpanId::INVALID);
        assert!(s.sampled);
    }

    #[test]
    fn five_hundreds_are_errors_and_routes_name_the_span() {
        let clock = Clock::with_offset_ns(0);
        let mut e = server_event("POST", "/items/42", 503);
        e.route = str_of("POST /items/{id}");
        let s = server_span(&e, &clock, resource());
        assert_eq!(s.name, "POST /items/{id}");
        assert_eq!(attr(&s, "http.route").as_deref(), Some("/items/{id}"));
        assert!(matches!(s.status, Status::Error { .. }));
        assert_eq!(attr(&s, "error.type").as_deref(), Some("503"));
        let s = server_span(&server_event("GET", "/x", 404), &clock, resource());
        assert_eq!(s.status, Status::Unset);
    }

    #[test]
    fn unknown_methods_become_other() {
        let clock = Clock::with_offset_ns(0);
        let s = server_span(&server_event("BREW", "/pot", 418), &clock, resource());
        assert_eq!(s.name, "_OTHER");
        assert_eq!(
            attr(&s, "http.request.method_original").as_deref(),
            Some("BREW")
        );
    }

    #[test]
    fn incoming_parent_is_remote() {
        let clock = Clock::with_offset_ns(0);
        let mut e = server_event("GET", "/", 200);
        e.trace.parent_span_id = [1, 2, 3, 4, 5, 6, 7, 8];
        e.trace.origin = TraceIds::ORIGIN_HEADER;
        e.trace.flags = 0;
        let s = server_span(&e, &clock, resource());
        assert_eq!(
            s.parent_span_id,
            SpanId::from_bytes([1, 2, 3, 4, 5, 6, 7, 8])
        );
        assert!(s.parent_is_remote);
        assert!(!s.sampled);
    }

    #[derive(Debug)]
    struct Names;
    impl ErrorTypes for Names {
        fn name(&self, itab: u64) -> Option<String> {
            (itab == 0x1234).then(|| "*net.OpError".to_string())
        }
    }

    #[test]
    fn client_span_has_semconv_attributes_and_its_parent() {
        let clock = Clock::with_offset_ns(0);
        let e = crate::events::tests::client_event("GET", "backend:8081", "/items/7", 200);
        let s = client_span(&e, &clock, resource(), None);
        assert_eq!(s.name, "GET");
        assert_eq!(s.kind, SpanKind::Client);
        assert_eq!(
            attr(&s, "url.full").as_deref(),
            Some("http://backend:8081/items/7")
        );
        assert_eq!(attr(&s, "server.address").as_deref(), Some("backend"));
        assert_eq!(
            s.attribute("server.port"),
            Some(&opentelemetry::Value::I64(8081))
        );
        assert_eq!(
            s.attribute("http.response.status_code"),
            Some(&opentelemetry::Value::I64(200))
        );
        assert_eq!(s.parent_span_id, SpanId::from_bytes([8; 8]));
        assert!(!s.parent_is_remote);
        assert_eq!(s.status, Status::Unset);
    }

    #[test]
    fn failed_calls_and_error_statuses_are_errors() {
        let clock = Clock::with_offset_ns(0);
        let mut e = crate::events::tests::client_event("GET", "localhost", "/", 0);
        e.error_itab = 0x1234;
        let s = client_span(&e, &clock, resource(), Some(&Names));
        assert!(matches!(s.status, Status::Error { .. }));
        assert_eq!(attr(&s, "error.type").as_deref(), Some("*net.OpError"));
        assert_eq!(s.attribute("http.response.status_code"), None);
        assert_eq!(
            s.attribute("server.port"),
            Some(&opentelemetry::Value::I64(80))
        );
        e.error_itab = 0x9999;
        let s = client_span(&e, &clock, resource(), Some(&Names));
        assert_eq!(attr(&s, "error.type").as_deref(), Some("_OTHER"));
        let e = crate::events::tests::client_event("DELETE", "h:1", "/x", 404);
        let s = client_span(&e, &clock, resource(), None);
        assert!(matches!(s.status, Status::Error { .. }));
        assert_eq!(attr(&s, "error.type").as_deref(), Some("404"));
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(
            split_host_port("example.com:8443"),
            ("example.com".into(), Some(8443))
        );
        assert_eq!(split_host_port("example.com"), ("example.com".into(), None));
        assert_eq!(split_host_port("[::1]:80"), ("::1".into(), Some(80)));
        assert_eq!(split_host_port("::1"), ("::1".into(), None));
        assert_eq!(split_host_port("h:notaport"), ("h:notaport".into(), None));
        assert_eq!(
            route_from_pattern("GET example.com/a/{b}"),
            Some("/a/{b}".into())
        );
        assert_eq!(route_from_pattern("/hello"), Some("/hello".into()));
        assert_eq!(route_from_pattern(""), None);
    }
}
