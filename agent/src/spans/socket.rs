//! Socket-level exchanges → SERVER and CLIENT spans with the attributes of the symbol-level
//! paths (the same functions build them), plus what only the socket knows.
//!
//! Trace and span ids are drawn here, in user space, from a CSPRNG (`rand`'s `ThreadRng`,
//! ChaCha seeded from the OS): no kernel-side child needs them. A server span joins the trace
//! of a valid incoming `traceparent` (W3C rules: see `reassembly::head::Traceparent`); an
//! invalid one is ignored and marked. A client span whose request already carries a valid
//! `traceparent` (a proxy forwarding it, an instrumented caller) joins that trace under the
//! span the header names. Extra attributes: `spanhook.capture` (`socket` or `libssl`),
//! `network.peer.address`/`network.peer.port`, and for an incomplete exchange
//! `spanhook.partial` with `spanhook.partial.reason`.

use std::sync::Arc;

use opentelemetry::{
    trace::{SpanId, Status},
    KeyValue,
};
use rand::Rng;
use spanhook_common::{EventHeader, EventKind, HttpClientEvent, HttpServerEvent, Str, TraceIds};

use super::{http, Assembler, Clock, ProcessResource, SpanRecord};
use crate::reassembly::{Exchange, Role, Traceparent};

impl Assembler {
    /// The span of a socket-level exchange, or `None` when its process is not registered.
    pub fn exchange_span(&self, exchange: &Exchange) -> Option<SpanRecord> {
        let process = self.processes.get(&exchange.tgid)?;
        Some(exchange_span(
            exchange,
            &self.clock,
            process.resource.clone(),
        ))
    }
}

fn str_of<const N: usize>(s: &str) -> Str<N> {
    let mut out = Str::<N>::default();
    let n = s.len().min(N);
    out.bytes[..n].copy_from_slice(&s.as_bytes()[..n]);
    out.len = s.len().min(u32::MAX as usize) as u32;
    out
}

fn random_span_id(rng: &mut impl Rng) -> [u8; 8] {
    loop {
        // One fill, not a draw per byte (which `random::<[u8; N]>()` makes).
        let mut id = [0u8; 8];
        rng.fill_bytes(&mut id);
        if id != [0; 8] {
            return id;
        }
    }
}

fn random_trace_id(rng: &mut impl Rng) -> [u8; 16] {
    loop {
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        if id != [0; 16] {
            return id;
        }
    }
}

/// The span's trace context from the request's `traceparent`.
fn trace_ids(traceparent: Traceparent, rng: &mut impl Rng) -> TraceIds {
    let mut ids = TraceIds {
        span_id: random_span_id(rng),
        ..TraceIds::default()
    };
    match traceparent {
        Traceparent::Valid {
            trace_id,
            parent_id,
            flags,
        } => {
            ids.trace_id = trace_id;
            ids.parent_span_id = parent_id;
            ids.flags = flags;
            ids.origin = TraceIds::ORIGIN_HEADER;
        }
        Traceparent::Absent | Traceparent::Invalid => {
            ids.trace_id = random_trace_id(rng);
            ids.flags = 1;
            ids.origin = if traceparent == Traceparent::Invalid {
                TraceIds::ORIGIN_HEADER_INVALID
            } else {
                TraceIds::ORIGIN_NEW
            };
        }
    }
    ids
}

fn header(kind: EventKind, ex: &Exchange) -> EventHeader {
    EventHeader {
        kind: kind as u16,
        _pad: 0,
        tgid: ex.tgid,
        start_ns: ex.start_ns,
        end_ns: ex.end_ns,
    }
}

/// The span of one exchange.
pub fn exchange_span(ex: &Exchange, clock: &Clock, resource: Arc<ProcessResource>) -> SpanRecord {
    let mut rng = rand::rng();
    let trace = trace_ids(ex.request.traceparent, &mut rng);
    let req = &ex.request;
    let mut span = match ex.role {
        Role::Server => {
            // Without a Host header the server is named by the socket it answered on.
            let host = req
                .host
                .clone()
                .or_else(|| ex.local.map(|a| a.to_string()))
                .unwrap_or_default();
            let event = HttpServerEvent {
                header: header(EventKind::HttpServer, ex),
                trace,
                goid: 0,
                status: ex.status.unwrap_or(0),
                proto_major: req.version.0,
                proto_minor: req.version.1,
                tls: ex.tls as u8,
                _pad: [0; 3],
                method: str_of(&req.method),
                path: str_of(&req.path),
                host: str_of(&host),
                route: Str::default(),
                remote: str_of(&ex.remote.map(|a| a.to_string()).unwrap_or_default()),
            };
            let mut span = http::server_span(&event, clock, resource);
            // A request that got no response has no status (server_span reads 0 as Go's
            // implicit 200).
            if ex.status.is_none() {
                span.attributes
                    .retain(|kv| kv.key.as_str() != "http.response.status_code");
            }
            span
        }
        Role::Client => {
            let host = req
                .host
                .clone()
                .or_else(|| ex.remote.map(|a| a.to_string()))
                .unwrap_or_default();
            let (major, minor) = ex.response_version.unwrap_or(req.version);
            let event = HttpClientEvent {
                header: header(EventKind::HttpClient, ex),
                trace,
                goid: 0,
                error_itab: 0,
                status: ex.status.unwrap_or(0),
                proto_major: major,
                proto_minor: minor,
                propagated: 0,
                _pad: [0; 3],
                method: str_of(&req.method),
                scheme: str_of(if ex.tls { "https" } else { "http" }),
                host: str_of(&host),
                path: str_of(&req.path),
            };
            let mut span = http::client_span(&event, clock, resource, None);
            // The parent of a client span is the caller named in its own outgoing header,
            // which lives in another process or library: not remote in the W3C sense of an
            // incoming context, but not ours either.
            if trace.origin == TraceIds::ORIGIN_HEADER {
                span.parent_span_id = SpanId::from_bytes(trace.parent_span_id);
            }
            if ex.status.is_none() {
                span.attributes.push(KeyValue::new("error.type", "_OTHER"));
                span.status = Status::error("no response");
            }
            span
        }
    };
    span.attributes.push(KeyValue::new(
        "spanhook.capture",
        if ex.tls { "libssl" } else { "socket" },
    ));
    if let Some(peer) = ex.remote {
        span.attributes
            .push(KeyValue::new("network.peer.address", peer.ip().to_string()));
        span.attributes
            .push(KeyValue::new("network.peer.port", peer.port() as i64));
    }
    if let Some(reason) = ex.partial {
        span.attributes
            .push(KeyValue::new("spanhook.partial", true));
        span.attributes
            .push(KeyValue::new("spanhook.partial.reason", reason));
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reassembly::RequestHead;
    use opentelemetry::trace::{SpanKind, TraceId};

    fn resource() -> Arc<ProcessResource> {
        Arc::new(ProcessResource::from_parts(
            7,
            std::path::Path::new("/usr/sbin/nginx"),
            b"",
            b"",
            None,
            &[],
        ))
    }

    fn exchange(role: Role, status: Option<u16>) -> Exchange {
        Exchange {
            tgid: 7,
            role,
            request: RequestHead {
                method: "GET".into(),
                path: "/items/1".into(),
                version: (1, 1),
                host: Some("shop:8443".into()),
                ..RequestHead::default()
            },
            status,
            response_version: Some((1, 1)),
            start_ns: 1_000,
            end_ns: 5_000,
            partial: None,
            tls: true,
            local: Some("10.0.0.1:8443".parse().unwrap()),
            remote: Some("10.0.0.9:41000".parse().unwrap()),
        }
    }

    fn attr(s: &SpanRecord, k: &str) -> Option<String> {
        s.attribute(k).map(|v| v.as_str().into_owned())
    }

    #[test]
    fn server_spans_carry_the_symbol_level_attributes() {
        let s = exchange_span(
            &exchange(Role::Server, Some(503)),
            &Clock::with_offset_ns(0),
            resource(),
        );
        assert_eq!(s.kind, SpanKind::Server);
        assert_eq!(s.name, "GET");
        assert_eq!(attr(&s, "url.path").as_deref(), Some("/items/1"));
        assert_eq!(attr(&s, "url.scheme").as_deref(), Some("https"));
        assert_eq!(attr(&s, "server.address").as_deref(), Some("shop"));
        assert_eq!(
            s.attribute("server.port"),
            Some(&opentelemetry::Value::I64(8443))
        );
        assert_eq!(attr(&s, "client.address").as_deref(), Some("10.0.0.9"));
        assert_eq!(
            s.attribute("client.port"),
            Some(&opentelemetry::Value::I64(41000))
        );
        assert_eq!(attr(&s, "spanhook.capture").as_deref(), Some("libssl"));
        assert!(matches!(s.status, Status::Error { .. }));
        assert_ne!(s.trace_id, TraceId::INVALID);
        assert_eq!(s.parent_span_id, SpanId::INVALID);
        assert!(s.sampled);
    }

    #[test]
    fn incoming_context_is_honoured_and_invalid_context_ignored() {
        let mut ex = exchange(Role::Server, Some(200));
        ex.request.traceparent = Traceparent::Valid {
            trace_id: [3; 16],
            parent_id: [4; 8],
            flags: 0,
        };
        let s = exchange_span(&ex, &Clock::with_offset_ns(0), resource());
        assert_eq!(s.trace_id, TraceId::from_bytes([3; 16]));
        assert_eq!(s.parent_span_id, SpanId::from_bytes([4; 8]));
        assert!(s.parent_is_remote);
        assert!(!s.sampled);
        ex.request.traceparent = Traceparent::Invalid;
        let s = exchange_span(&ex, &Clock::with_offset_ns(0), resource());
        assert_ne!(s.trace_id, TraceId::from_bytes([3; 16]));
        assert_eq!(s.parent_span_id, SpanId::INVALID);
        assert_eq!(
            s.attribute("spanhook.traceparent.invalid"),
            Some(&opentelemetry::Value::Bool(true))
        );
    }

    #[test]
    fn partial_and_client_spans() {
        let mut ex = exchange(Role::Server, None);
        ex.partial = Some("connection closed before a response");
        ex.request.host = None;
        ex.tls = false;
        let s = exchange_span(&ex, &Clock::with_offset_ns(0), resource());
        assert_eq!(s.attribute("http.response.status_code"), None);
        assert_eq!(
            s.attribute("spanhook.partial"),
            Some(&opentelemetry::Value::Bool(true))
        );
        assert_eq!(attr(&s, "server.address").as_deref(), Some("10.0.0.1"));
        let s = exchange_span(
            &exchange(Role::Client, Some(200)),
            &Clock::with_offset_ns(0),
            resource(),
        );
        assert_eq!(s.kind, SpanKind::Client);
        assert_eq!(
            attr(&s, "url.full").as_deref(),
            Some("https://shop:8443/items/1")
        );
        assert_eq!(
            attr(&s, "network.peer.address").as_deref(),
            Some("10.0.0.9")
        );
        let s = exchange_span(
            &exchange(Role::Client, None),
            &Clock::with_offset_ns(0),
            resource(),
        );
        assert!(matches!(s.status, Status::Error { .. }));
    }
}
