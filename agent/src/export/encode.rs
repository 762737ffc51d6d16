//! OTLP protobuf written straight from [`SpanRecord`]s into a reused buffer.
//!
//! The general route (`SpanRecord` → SDK `SpanData` → `opentelemetry-proto` structs → prost)
//! rebuilt every span twice with freshly allocated strings and vectors, and allocation, copying
//! and dropping took more than half of the agent's CPU per span. Here each span is read once
//! and its bytes appended to one buffer that lives as long as the exporter; the resource and
//! scope of a process are encoded once and copied. The bytes are what prost writes for the
//! same `ExportTraceServiceRequest` built by [`super::convert::export_request`] (the tests
//! decode them with `opentelemetry-proto`'s types and compare).

use std::{sync::Arc, time::SystemTime};

use opentelemetry::{
    trace::{SpanId, SpanKind, Status},
    Array, KeyValue, Value,
};
use prost::encoding::{encode_varint, encoded_len_varint};

use crate::spans::{ProcessResource, SpanRecord};

/// Wire types of the protobuf encoding.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

/// `Span.flags` bit: the parent's remoteness is known (OTLP `SpanFlags`).
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
/// `Span.flags` bit: the parent is remote.
const FLAG_IS_REMOTE: u32 = 0x200;

#[inline]
fn key(tag: u32, wire: u32, buf: &mut Vec<u8>) {
    encode_varint(u64::from(tag << 3 | wire), buf);
}

#[inline]
fn key_len(tag: u32) -> usize {
    encoded_len_varint(u64::from(tag << 3))
}

/// Length of a length-delimited field holding `n` bytes.
#[inline]
fn delimited_len(tag: u32, n: usize) -> usize {
    key_len(tag) + encoded_len_varint(n as u64) + n
}

#[inline]
fn put_delimited(tag: u32, bytes: &[u8], buf: &mut Vec<u8>) {
    key(tag, LEN, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

/// A proto3 string field: left out when empty.
#[inline]
fn string_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        delimited_len(tag, s.len())
    }
}

#[inline]
fn put_string(tag: u32, s: &str, buf: &mut Vec<u8>) {
    if !s.is_empty() {
        put_delimited(tag, s.as_bytes(), buf);
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// `AnyValue` body length.
fn any_len(v: &Value) -> usize {
    match v {
        Value::Bool(_) => 2,
        Value::I64(i) => 1 + encoded_len_varint(*i as u64),
        Value::F64(_) => 9,
        Value::String(s) => delimited_len(1, s.as_str().len()),
        Value::Array(a) => delimited_len(5, array_len(a)),
        other => delimited_len(1, other.as_str().len()),
    }
}

/// `ArrayValue` body length: one `AnyValue` per element.
fn array_len(a: &Array) -> usize {
    let each = |n: usize| delimited_len(1, n);
    match a {
        Array::Bool(v) => v.len() * each(2),
        Array::I64(v) => v
            .iter()
            .map(|i| each(1 + encoded_len_varint(*i as u64)))
            .sum(),
        Array::F64(v) => v.len() * each(9),
        Array::String(v) => v
            .iter()
            .map(|s| each(delimited_len(1, s.as_str().len())))
            .sum(),
        // Element kinds added after this was written: sent as one string, as put_array does.
        other => each(delimited_len(1, other.to_string().len())),
    }
}

fn put_any(v: &Value, buf: &mut Vec<u8>) {
    match v {
        Value::Bool(b) => {
            key(2, VARINT, buf);
            buf.push(u8::from(*b));
        }
        Value::I64(i) => {
            key(3, VARINT, buf);
            encode_varint(*i as u64, buf);
        }
        Value::F64(f) => {
            key(4, FIXED64, buf);
            buf.extend_from_slice(&f.to_le_bytes());
        }
        Value::String(s) => put_delimited(1, s.as_str().as_bytes(), buf),
        Value::Array(a) => {
            key(5, LEN, buf);
            encode_varint(array_len(a) as u64, buf);
            put_array(a, buf);
        }
        other => put_delimited(1, other.as_str().as_bytes(), buf),
    }
}

fn put_array(a: &Array, buf: &mut Vec<u8>) {
    let element = |v: Value, buf: &mut Vec<u8>| {
        key(1, LEN, buf);
        encode_varint(any_len(&v) as u64, buf);
        put_any(&v, buf);
    };
    match a {
        Array::Bool(v) => v.iter().for_each(|b| element(Value::Bool(*b), buf)),
        Array::I64(v) => v.iter().for_each(|i| element(Value::I64(*i), buf)),
        Array::F64(v) => v.iter().for_each(|f| element(Value::F64(*f), buf)),
        Array::String(v) => v
            .iter()
            .for_each(|s| element(Value::String(s.clone()), buf)),
        other => element(Value::from(other.to_string()), buf),
    }
}

/// `KeyValue` body length.
fn kv_len(kv: &KeyValue) -> usize {
    string_len(1, kv.key.as_str()) + delimited_len(2, any_len(&kv.value))
}

fn put_kv(tag: u32, kv: &KeyValue, buf: &mut Vec<u8>) {
    key(tag, LEN, buf);
    encode_varint(kv_len(kv) as u64, buf);
    put_string(1, kv.key.as_str(), buf);
    key(2, LEN, buf);
    encode_varint(any_len(&kv.value) as u64, buf);
    put_any(&kv.value, buf);
}

fn kind_number(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

/// `Status` body: the message (errors only) and the code, each left out when empty or zero.
fn status_parts(status: &Status) -> (&str, u64) {
    match status {
        Status::Unset => ("", 0),
        Status::Ok => ("", 1),
        Status::Error { description } => (description, 2),
    }
}

fn status_len(status: &Status) -> usize {
    let (message, code) = status_parts(status);
    string_len(2, message) + if code == 0 { 0 } else { 2 }
}

/// `Span` body length.
fn span_len(s: &SpanRecord) -> usize {
    let mut n = delimited_len(1, 16) + delimited_len(2, 8);
    if s.parent_span_id != SpanId::INVALID {
        n += delimited_len(4, 8);
    }
    n += string_len(5, &s.name);
    n += key_len(6) + 1;
    if nanos(s.start) != 0 {
        n += key_len(7) + 8;
    }
    if nanos(s.end) != 0 {
        n += key_len(8) + 8;
    }
    n += s
        .attributes
        .iter()
        .map(|kv| delimited_len(9, kv_len(kv)))
        .sum::<usize>();
    n += delimited_len(15, status_len(&s.status));
    n + key_len(16) + 4
}

fn put_span(s: &SpanRecord, len: usize, buf: &mut Vec<u8>) {
    key(2, LEN, buf);
    encode_varint(len as u64, buf);
    let start = buf.len();
    put_delimited(1, &s.trace_id.to_bytes(), buf);
    put_delimited(2, &s.span_id.to_bytes(), buf);
    if s.parent_span_id != SpanId::INVALID {
        put_delimited(4, &s.parent_span_id.to_bytes(), buf);
    }
    put_string(5, &s.name, buf);
    key(6, VARINT, buf);
    encode_varint(kind_number(&s.kind), buf);
    for (tag, t) in [(7, s.start), (8, s.end)] {
        let ns = nanos(t);
        if ns != 0 {
            key(tag, FIXED64, buf);
            buf.extend_from_slice(&ns.to_le_bytes());
        }
    }
    for kv in &s.attributes {
        put_kv(9, kv, buf);
    }
    key(15, LEN, buf);
    encode_varint(status_len(&s.status) as u64, buf);
    let (message, code) = status_parts(&s.status);
    put_string(2, message, buf);
    if code != 0 {
        key(3, VARINT, buf);
        encode_varint(code, buf);
    }
    let mut flags = FLAG_HAS_IS_REMOTE | u32::from(s.sampled);
    if s.parent_is_remote {
        flags |= FLAG_IS_REMOTE;
    }
    key(16, FIXED32, buf);
    buf.extend_from_slice(&flags.to_le_bytes());
    debug_assert_eq!(buf.len() - start, len, "span length mismatch");
}

/// The `Resource` message body of a process: its attributes, each key once (the last value
/// wins, as in the SDK's resource).
fn resource_body(r: &ProcessResource) -> Vec<u8> {
    let mut buf = Vec::new();
    for (i, kv) in r.attributes.iter().enumerate() {
        if r.attributes[i + 1..]
            .iter()
            .any(|later| later.key == kv.key)
        {
            continue;
        }
        put_kv(1, kv, &mut buf);
    }
    buf
}

/// The `InstrumentationScope` message body every span carries.
fn scope_body() -> Vec<u8> {
    let mut buf = Vec::new();
    put_string(1, "spanhook", &mut buf);
    put_string(2, env!("CARGO_PKG_VERSION"), &mut buf);
    buf
}

/// A process's resource, encoded once.
struct CachedResource {
    resource: Arc<ProcessResource>,
    body: Vec<u8>,
}

/// Writes `ExportTraceServiceRequest`s; keeps its buffers between batches.
pub struct TraceEncoder {
    buf: Vec<u8>,
    scope: Vec<u8>,
    resources: Vec<CachedResource>,
    /// Per span of the batch: its body length.
    lens: Vec<usize>,
    /// Per span of the batch: the index of its resource in `resources`.
    groups: Vec<usize>,
    /// Resources in this batch, in first-seen order.
    order: Vec<usize>,
}

impl Default for TraceEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl TraceEncoder {
    /// An encoder with empty buffers.
    pub fn new() -> Self {
        Self {
            buf: Vec::new(),
            scope: scope_body(),
            resources: Vec::new(),
            lens: Vec::new(),
            groups: Vec::new(),
            order: Vec::new(),
        }
    }

    /// The index of `r` in the resource cache, encoding it on first sight. A process whose
    /// pid was reused gets a new `Arc`, so the cache compares the `Arc`s, not the pids.
    /// Indices stay valid until the next [`Self::forget_unused`].
    fn resource_index(&mut self, r: &Arc<ProcessResource>) -> usize {
        if let Some(i) = self
            .resources
            .iter()
            .position(|c| Arc::ptr_eq(&c.resource, r))
        {
            return i;
        }
        self.resources.push(CachedResource {
            resource: r.clone(),
            body: resource_body(r),
        });
        self.resources.len() - 1
    }

    /// Forgets processes that neither the assembler nor a pending span refers to any more, so
    /// the cache stays as small as the set of live targets.
    fn forget_unused(&mut self) {
        self.resources
            .retain(|c| Arc::strong_count(&c.resource) > 1);
    }

    /// The request holding `spans`, one `ResourceSpans` per process in first-seen order; the
    /// bytes stay valid until the next call.
    pub fn encode(&mut self, spans: &[SpanRecord]) -> &[u8] {
        // Only here, before any index is handed out: evicting while the batch is grouped
        // would shift the indices already given to its earlier spans onto other processes.
        self.forget_unused();
        self.lens.clear();
        self.groups.clear();
        self.order.clear();
        for s in spans {
            let g = self.resource_index(&s.resource);
            if !self.order.contains(&g) {
                self.order.push(g);
            }
            self.groups.push(g);
            self.lens.push(span_len(s));
        }
        self.buf.clear();
        let scope_field = delimited_len(1, self.scope.len());
        for &g in &self.order {
            let spans_len: usize = self
                .groups
                .iter()
                .zip(&self.lens)
                .filter(|(sg, _)| **sg == g)
                .map(|(_, len)| delimited_len(2, *len))
                .sum();
            let scope_spans = scope_field + spans_len;
            let resource = &self.resources[g].body;
            let resource_spans = delimited_len(1, resource.len()) + delimited_len(2, scope_spans);
            key(1, LEN, &mut self.buf);
            encode_varint(resource_spans as u64, &mut self.buf);
            put_delimited(1, resource, &mut self.buf);
            key(2, LEN, &mut self.buf);
            encode_varint(scope_spans as u64, &mut self.buf);
            put_delimited(1, &self.scope, &mut self.buf);
            for ((s, sg), len) in spans.iter().zip(&self.groups).zip(&self.lens) {
                if *sg == g {
                    put_span(s, *len, &mut self.buf);
                }
            }
        }
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use opentelemetry::trace::TraceId;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;

    use super::*;

    fn resource(pid: u32, service: &str) -> Arc<ProcessResource> {
        Arc::new(ProcessResource {
            pid,
            service_name: service.into(),
            attributes: vec![
                KeyValue::new("service.name", service.to_string()),
                KeyValue::new("process.pid", i64::from(pid)),
                KeyValue::new("telemetry.distro.name", "spanhook"),
            ],
        })
    }

    fn span(n: u8, resource: &Arc<ProcessResource>) -> SpanRecord {
        let start = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        SpanRecord {
            trace_id: TraceId::from_bytes([n; 16]),
            span_id: SpanId::from_bytes([n.wrapping_add(1); 8]),
            parent_span_id: if n.is_multiple_of(2) {
                SpanId::INVALID
            } else {
                SpanId::from_bytes([9; 8])
            },
            parent_is_remote: n.is_multiple_of(3),
            sampled: n % 4 != 1,
            name: if n == 5 {
                String::new()
            } else {
                format!("GET /items/{{id}}/{n}")
            },
            kind: [SpanKind::Server, SpanKind::Client, SpanKind::Internal][usize::from(n % 3)]
                .clone(),
            start,
            end: start + Duration::from_micros(u64::from(n) * 1000 + 7),
            attributes: vec![
                KeyValue::new("http.request.method", "GET"),
                KeyValue::new("url.path", format!("/items/{n}")),
                KeyValue::new("http.response.status_code", 200 + i64::from(n)),
                KeyValue::new("negative", -i64::from(n) - 1),
                KeyValue::new("zero", 0i64),
                KeyValue::new("empty", ""),
                KeyValue::new("flag", n.is_multiple_of(2)),
                KeyValue::new("ratio", f64::from(n) / 3.0),
                KeyValue::new("list", Value::Array(Array::I64(vec![1, -2, 300]))),
                KeyValue::new(
                    "names",
                    Value::Array(Array::String(vec!["a".into(), "".into()])),
                ),
                KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
                KeyValue::new("floats", Value::Array(Array::F64(vec![0.5]))),
            ],
            status: match n % 3 {
                0 => Status::Unset,
                1 => Status::error("upstream failed"),
                _ => Status::Ok,
            },
            resource: resource.clone(),
        }
    }

    /// Resource attributes in a fixed order: the SDK's resource keeps them in a hash map.
    fn normalized(mut r: ExportTraceServiceRequest) -> ExportTraceServiceRequest {
        for rs in &mut r.resource_spans {
            if let Some(res) = &mut rs.resource {
                res.attributes.sort_by(|a, b| a.key.cmp(&b.key));
            }
        }
        r
    }

    #[test]
    fn bytes_decode_to_what_the_sdk_route_builds() {
        let a = resource(10, "frontend");
        let b = resource(20, "pricing");
        let spans: Vec<SpanRecord> = (0..12u8)
            .map(|n| span(n, if n % 5 == 2 { &b } else { &a }))
            .collect();
        let mut encoder = TraceEncoder::new();
        let bytes = encoder.encode(&spans).to_vec();
        let ours = ExportTraceServiceRequest::decode(&bytes[..]).unwrap();
        let sdk = super::super::convert::export_request(&spans);
        assert_eq!(normalized(ours.clone()), normalized(sdk));
        assert_eq!(ours.resource_spans.len(), 2);
        assert_eq!(ours.resource_spans[0].scope_spans[0].spans.len(), 10);
        let first = &ours.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(first.flags, 0x301, "sampled, parent known to be remote");
        assert_eq!(first.start_time_unix_nano, 1_700_000_000_123_456_789);
        // The buffer is reused: a second, smaller batch gives just its own spans.
        let again = encoder.encode(&spans[..1]).to_vec();
        let one = ExportTraceServiceRequest::decode(&again[..]).unwrap();
        assert_eq!(
            normalized(one),
            normalized(super::super::convert::export_request(&spans[..1]))
        );
    }

    #[test]
    fn repeated_resource_keys_keep_the_last_value() {
        let r = Arc::new(ProcessResource {
            pid: 1,
            service_name: "b".into(),
            attributes: vec![
                KeyValue::new("service.name", "a"),
                KeyValue::new("service.name", "b"),
            ],
        });
        let mut encoder = TraceEncoder::new();
        let bytes = encoder.encode(&[span(2, &r)]).to_vec();
        let decoded = ExportTraceServiceRequest::decode(&bytes[..]).unwrap();
        let attrs = &decoded.resource_spans[0]
            .resource
            .as_ref()
            .unwrap()
            .attributes;
        assert_eq!(attrs.len(), 1);
        assert_eq!(
            attrs[0].value.as_ref().unwrap().value,
            Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue("b".into()))
        );
    }

    /// Service names of the decoded request, each with the trace id bytes of its spans.
    fn spans_by_service(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        let decoded = ExportTraceServiceRequest::decode(bytes).unwrap();
        let mut out = Vec::new();
        for rs in decoded.resource_spans {
            let service = rs
                .resource
                .unwrap()
                .attributes
                .into_iter()
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value?.value? {
                    Value::StringValue(s) => Some(s),
                    _ => None,
                })
                .unwrap();
            for span in &rs.scope_spans[0].spans {
                out.push((service.clone(), vec![span.trace_id[0]]));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_process_that_exited_does_not_move_spans_to_another() {
        // The cache holds a process that has since gone (only the cache refers to it) and
        // one that is still traced; a batch with a span of the traced one and then one of a
        // new process must keep each span under its own resource.
        let mut encoder = TraceEncoder::new();
        let gone = resource(1, "gone");
        let live = resource(2, "live");
        encoder.encode(&[span(1, &gone), span(2, &live)]);
        drop(gone);
        let new = resource(3, "new");
        let bytes = encoder.encode(&[span(4, &live), span(6, &new)]).to_vec();
        assert_eq!(
            spans_by_service(&bytes),
            vec![("live".to_string(), vec![4]), ("new".to_string(), vec![6])]
        );
        // And the cache forgot the process that is gone.
        assert_eq!(encoder.resources.len(), 2);
    }

    #[test]
    fn an_empty_batch_is_an_empty_request() {
        let mut encoder = TraceEncoder::new();
        assert!(encoder.encode(&[]).is_empty());
    }
}
