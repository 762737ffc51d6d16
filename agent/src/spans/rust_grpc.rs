//! Spans of Rust gRPC (tonic over h2), with the attributes and status rules of the Go gRPC
//! spans (agent/src/spans/grpc.rs).
//!
//! A server span covers an RPC from its request HEADERS decoded by h2
//! (`server::Peer::convert_poll_message`) to the HEADERS frame carrying its `grpc-status` built on
//! the stream's task (h2's `Headers::trailers`, or the response HEADERS of a trailers-only
//! response; with fat LTO, tonic's `Status::add_header` and h2's `SendResponse::send_response`),
//! or to the client's reset of the stream before any (Cancelled, as gRPC servers report it). A
//! client span covers a tonic call from `GrpcConfig::prepare_request` on the caller's task to the
//! `grpc-status` tonic reads on that task (`Status::from_header_map`), or, for a call that failed
//! without one (connection refused, past its deadline, reset), to the status tonic made of the
//! error (`Status::from_error`: Unavailable for a refused connection, Cancelled for a deadline
//! tonic enforced), which is what the caller got; such a call has no `server.address` when it never
//! reached the wire. Where `from_header_map` is inlined, the status is the code tonic parses
//! (`Code::from_bytes`).

use std::sync::Arc;

use opentelemetry::{
    trace::{SpanKind, Status},
    KeyValue,
};
use spanhook_common::{
    rust::RUST_GRPC_STATUS_NONE, RustGrpcClientEvent, RustGrpcServerEvent, Str, TraceIds,
};

use super::{
    grpc::{code_name, rpc_attributes, server_error},
    http::{ids, split_host_port},
    Clock, ProcessResource, SpanRecord,
};

fn text<const N: usize>(s: &Str<N>) -> String {
    String::from_utf8_lossy(s.as_bytes()).into_owned()
}

fn address(attributes: &mut Vec<KeyValue>, authority: &str) {
    let (host, port) = split_host_port(authority);
    if !host.is_empty() {
        attributes.push(KeyValue::new("server.address", host));
        if let Some(port) = port {
            attributes.push(KeyValue::new("server.port", port as i64));
        }
    }
}

/// The SERVER span of one RPC served by tonic/h2.
pub fn server_span(
    e: &RustGrpcServerEvent,
    clock: &Clock,
    resource: Arc<ProcessResource>,
) -> SpanRecord {
    let (name, mut attributes) = rpc_attributes(&text(&e.method));
    address(&mut attributes, &text(&e.authority));
    let status = if e.status == RUST_GRPC_STATUS_NONE {
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
        status,
        resource,
    }
}

/// The CLIENT span of one RPC made by a tonic client.
pub fn client_span(
    e: &RustGrpcClientEvent,
    clock: &Clock,
    resource: Arc<ProcessResource>,
) -> SpanRecord {
    let (name, mut attributes) = rpc_attributes(&text(&e.method));
    address(&mut attributes, &text(&e.authority));
    // The kernel reports a status it could not parse as Unknown, as tonic does.
    let code = if e.status == RUST_GRPC_STATUS_NONE {
        2
    } else {
        e.status
    };
    attributes.push(KeyValue::new("rpc.grpc.status_code", code as i64));
    // A client span is an error for any status but OK.
    let status = if code != 0 {
        attributes.push(KeyValue::new("error.type", code_name(code)));
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
    use crate::events::tests::str_of;
    use spanhook_common::{EventHeader, EventKind};
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

    fn attr(s: &SpanRecord, k: &str) -> Option<String> {
        s.attribute(k).map(|v| v.as_str().into_owned())
    }

    fn int(s: &SpanRecord, k: &str) -> Option<i64> {
        match s.attribute(k) {
            Some(opentelemetry::Value::I64(i)) => Some(*i),
            _ => None,
        }
    }

    fn server(status: i32) -> RustGrpcServerEvent {
        RustGrpcServerEvent {
            header: header(EventKind::RustGrpcServer),
            trace: trace(),
            task: 0x1000,
            stream_id: 3,
            status,
            method: str_of("/spanhook.test.Chain/Unary"),
            authority: str_of("127.0.0.1:50051"),
        }
    }

    #[test]
    fn server_spans_follow_the_grpc_conventions() {
        let clock = Clock::with_offset_ns(0);
        let s = server_span(&server(0), &clock, resource());
        assert_eq!(s.name, "spanhook.test.Chain/Unary");
        assert_eq!(s.kind, SpanKind::Server);
        assert_eq!(attr(&s, "rpc.system").as_deref(), Some("grpc"));
        assert_eq!(
            attr(&s, "rpc.service").as_deref(),
            Some("spanhook.test.Chain")
        );
        assert_eq!(attr(&s, "rpc.method").as_deref(), Some("Unary"));
        assert_eq!(int(&s, "rpc.grpc.status_code"), Some(0));
        assert_eq!(attr(&s, "server.address").as_deref(), Some("127.0.0.1"));
        assert_eq!(int(&s, "server.port"), Some(50051));
        assert_eq!(s.status, Status::Unset);
        // NOT_FOUND is the caller's problem; INTERNAL the server's.
        let s = server_span(&server(5), &clock, resource());
        assert_eq!(s.status, Status::Unset);
        let s = server_span(&server(13), &clock, resource());
        assert!(matches!(s.status, Status::Error { .. }));
        assert_eq!(attr(&s, "error.type").as_deref(), Some("INTERNAL"));
    }

    #[test]
    fn client_spans_are_errors_for_every_non_ok_code() {
        let clock = Clock::with_offset_ns(0);
        let mut e = RustGrpcClientEvent {
            header: header(EventKind::RustGrpcClient),
            trace: trace(),
            task: 0x1000,
            status: 0,
            stream_id: 0,
            method: str_of("/spanhook.test.Chain/Bidi"),
            authority: str_of(""),
        };
        let s = client_span(&e, &clock, resource());
        assert_eq!(s.kind, SpanKind::Client);
        assert_eq!(s.name, "spanhook.test.Chain/Bidi");
        assert_eq!(s.status, Status::Unset);
        assert_eq!(s.attribute("server.address"), None);
        e.status = 5;
        let s = client_span(&e, &clock, resource());
        assert!(matches!(s.status, Status::Error { .. }));
        assert_eq!(attr(&s, "error.type").as_deref(), Some("NOT_FOUND"));
        e.status = RUST_GRPC_STATUS_NONE;
        let s = client_span(&e, &clock, resource());
        assert_eq!(int(&s, "rpc.grpc.status_code"), Some(2));
    }
}
