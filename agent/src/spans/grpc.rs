//! gRPC spans with the RPC semantic conventions.

use std::sync::Arc;

use opentelemetry::{
    trace::{SpanId, SpanKind, Status, TraceId},
    KeyValue,
};
use spanhook_common::{grpc::STATUS_UNKNOWN, GrpcClientEvent, GrpcServerEvent, TraceIds};

use super::{
    http::{split_host_port, ErrorTypes},
    Clock, ProcessResource, SpanRecord,
};

/// The canonical name of a gRPC status code.
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "_OTHER",
    }
}

/// Whether a server span with this status is an error: the codes that mean the server failed,
/// not the caller (the semantic conventions' list).
pub fn server_error(code: i32) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// `("pkg.Service/Method", "pkg.Service", "Method")` from `/pkg.Service/Method`.
pub fn split_method(full: &str) -> (String, String, String) {
    let trimmed = full.trim_start_matches('/');
    match trimmed.split_once('/') {
        Some((service, method)) => (trimmed.to_string(), service.to_string(), method.to_string()),
        None => (trimmed.to_string(), String::new(), trimmed.to_string()),
    }
}

/// The host and port of a gRPC dial target (`dns:///host:port`, `passthrough:///h:p`, `h:p`).
pub fn target_address(target: &str) -> (String, Option<u16>) {
    let rest = match target.split_once("://") {
        Some((_, rest)) => rest.trim_start_matches('/'),
        None => target.strip_prefix("dns:").unwrap_or(target),
    };
    // dns://authority/host:port keeps the host after the last slash.
    let hostport = rest.rsplit('/').next().unwrap_or(rest);
    split_host_port(hostport)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub(super) fn rpc_attributes(method: &str) -> (String, Vec<KeyValue>) {
    let (name, service, rpc_method) = split_method(method);
    let mut attributes = vec![KeyValue::new("rpc.system", "grpc")];
    if !service.is_empty() {
        attributes.push(KeyValue::new("rpc.service", service));
    }
    if !rpc_method.is_empty() {
        attributes.push(KeyValue::new("rpc.method", rpc_method));
    }
    // A span name is never empty: a method that could not be read names the span by its
    // RPC system, as the semantic conventions do when the method is unknown.
    let name = if name.is_empty() {
        "grpc".to_string()
    } else {
        name
    };
    (name, attributes)
}

fn address(attributes: &mut Vec<KeyValue>, host: String, port: Option<u16>) {
    if !host.is_empty() {
        attributes.push(KeyValue::new("server.address", host));
    }
    if let Some(port) = port {
        attributes.push(KeyValue::new("server.port", port as i64));
    }
}

/// The SERVER span of one grpc-go RPC.
pub fn server_span(
    e: &GrpcServerEvent,
    clock: &Clock,
    resource: Arc<ProcessResource>,
) -> SpanRecord {
    let (name, mut attributes) = rpc_attributes(&text(e.method.as_bytes()));
    let (host, port) = split_host_port(&text(e.authority.as_bytes()));
    address(&mut attributes, host, port);
    let status = if e.status == STATUS_UNKNOWN {
        Status::Unset
    } else {
        attributes.push(KeyValue::new("rpc.grpc.status_code", e.status as i64));
        if server_error(e.status) {
            attributes.push(KeyValue::new("error.type", code_name(e.status)));
            Status::error("")
        } else {
            Status::Unset
        }
    };
    if e.trace.origin == TraceIds::ORIGIN_HEADER_INVALID {
        attributes.push(KeyValue::new("spanhook.traceparent.invalid", true));
    }
    SpanRecord {
        trace_id: TraceId::from_bytes(e.trace.trace_id),
        span_id: SpanId::from_bytes(e.trace.span_id),
        parent_span_id: SpanId::from_bytes(e.trace.parent_span_id),
        parent_is_remote: e.trace.origin == TraceIds::ORIGIN_HEADER,
        sampled: e.trace.flags & 1 == 1,
        name,
        kind: SpanKind::Server,
        start: clock.wall(e.header.start_ns),
        end: clock.wall(e.header.end_ns.max(e.header.start_ns)),
        attributes,
        status,
        resource,
    }
}

/// The status code a client RPC ended with.
pub fn client_code(e: &GrpcClientEvent, errors: Option<&dyn ErrorTypes>) -> i32 {
    if e.error_itab == 0 {
        return 0;
    }
    let type_name = errors.and_then(|names| names.name(e.error_itab));
    match type_name.as_deref() {
        // grpc-go's own error type: the code read from it is real.
        Some("*status.Error") if e.error_code >= 0 => e.error_code,
        // How a stream that ran to its end reports success.
        _ if e.error_eof == 1 => 0,
        Some(_) => 2,
        // Unnamed type: trust a plausible code, which only a status error yields.
        None if (0..=16).contains(&e.error_code) => e.error_code,
        None => 2,
    }
}

/// The CLIENT span of one grpc-go RPC.
pub fn client_span(
    e: &GrpcClientEvent,
    clock: &Clock,
    resource: Arc<ProcessResource>,
    errors: Option<&dyn ErrorTypes>,
) -> SpanRecord {
    let (name, mut attributes) = rpc_attributes(&text(e.method.as_bytes()));
    let (host, port) = target_address(&text(e.target.as_bytes()));
    address(&mut attributes, host, port);
    let code = client_code(e, errors);
    attributes.push(KeyValue::new("rpc.grpc.status_code", code as i64));
    // A client span is an error for any status but OK.
    let status = if code != 0 {
        attributes.push(KeyValue::new("error.type", code_name(code)));
        Status::error("")
    } else {
        Status::Unset
    };
    SpanRecord {
        trace_id: TraceId::from_bytes(e.trace.trace_id),
        span_id: SpanId::from_bytes(e.trace.span_id),
        parent_span_id: SpanId::from_bytes(e.trace.parent_span_id),
        parent_is_remote: false,
        sampled: e.trace.flags & 1 == 1,
        name,
        kind: SpanKind::Client,
        start: clock.wall(e.header.start_ns),
        end: clock.wall(e.header.end_ns.max(e.header.start_ns)),
        attributes,
        status,
        resource,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_targets_split() {
        assert_eq!(
            split_method("/spanhook.test.Echo/Unary"),
            (
                "spanhook.test.Echo/Unary".into(),
                "spanhook.test.Echo".into(),
                "Unary".into()
            )
        );
        assert_eq!(
            target_address("dns:///svc.ns:50051"),
            ("svc.ns".into(), Some(50051))
        );
        assert_eq!(
            target_address("passthrough:///127.0.0.1:9000"),
            ("127.0.0.1".into(), Some(9000))
        );
        assert_eq!(target_address("localhost:1"), ("localhost".into(), Some(1)));
        assert_eq!(
            target_address("dns://8.8.8.8/api:443"),
            ("api".into(), Some(443))
        );
    }

    #[test]
    fn an_rpc_whose_method_was_not_read_is_still_named() {
        // Regression: `cargo xtask fuzz --target event_decode` found a gRPC server record with
        // an empty method, which made a span with an empty name.
        for method in ["", "/"] {
            let (name, attributes) = rpc_attributes(method);
            assert_eq!(name, "grpc");
            assert!(attributes.iter().all(|kv| kv.key.as_str() != "rpc.method"));
        }
        assert_eq!(rpc_attributes("/a.B/C").0, "a.B/C");
    }

    #[test]
    fn server_errors_follow_the_conventions() {
        for code in [2, 4, 12, 13, 14, 15] {
            assert!(server_error(code), "{code}");
        }
        for code in [0, 1, 3, 5, 6, 7, 8, 9, 10, 11, 16] {
            assert!(!server_error(code), "{code}");
        }
        assert_eq!(code_name(5), "NOT_FOUND");
    }
}
