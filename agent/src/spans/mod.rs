//! Events → OpenTelemetry spans: trace context, semantic-convention attributes, resource.
//!
//! Trace and span ids are decided in the kernel (children started later in the same request
//! need their parent's ids before user space sees anything); this stage turns times into wall
//! clock, names the span, and attaches attributes and the process's resource.

pub mod clock;
pub mod errors;
pub mod grpc;
pub mod http;
pub mod resource;
pub mod rust;
pub mod rust_grpc;
pub mod socket;

use std::{sync::Arc, time::SystemTime};

use opentelemetry::{
    trace::{SpanId, SpanKind, Status, TraceId},
    KeyValue,
};

pub use clock::Clock;
pub use resource::ProcessResource;

use crate::events::Event;

/// A finished span, ready for any exporter.
#[derive(Clone, Debug)]
pub struct SpanRecord {
    /// Trace id.
    pub trace_id: TraceId,
    /// This span's id.
    pub span_id: SpanId,
    /// Parent span id; `SpanId::INVALID` for a root span.
    pub parent_span_id: SpanId,
    /// Whether the parent came from another process (an incoming `traceparent`).
    pub parent_is_remote: bool,
    /// W3C sampled flag.
    pub sampled: bool,
    /// Span name, following the semantic conventions.
    pub name: String,
    /// Span kind.
    pub kind: SpanKind,
    /// Start, wall clock.
    pub start: SystemTime,
    /// End, wall clock.
    pub end: SystemTime,
    /// Semantic-convention attributes.
    pub attributes: Vec<KeyValue>,
    /// Span status.
    pub status: Status,
    /// The traced process.
    pub resource: Arc<ProcessResource>,
}

impl SpanRecord {
    /// The value of attribute `key`, if set.
    pub fn attribute(&self, key: &str) -> Option<&opentelemetry::Value> {
        self.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    /// Duration from start to end (zero if the clock went backwards).
    pub fn duration(&self) -> std::time::Duration {
        self.end.duration_since(self.start).unwrap_or_default()
    }
}

/// What the assembler knows about one traced process.
#[derive(Debug)]
struct Process {
    resource: Arc<ProcessResource>,
    errors: Option<Arc<dyn http::ErrorTypes>>,
}

/// Turns events into spans for a set of known processes.
#[derive(Debug)]
pub struct Assembler {
    clock: Clock,
    processes: foldhash::HashMap<u32, Process>,
}

impl Assembler {
    /// An assembler with no processes yet.
    pub fn new(clock: Clock) -> Self {
        Self {
            clock,
            processes: foldhash::HashMap::default(),
        }
    }

    /// Registers a traced process: its resource, and how to name its error types.
    pub fn add_process(
        &mut self,
        resource: Arc<ProcessResource>,
        errors: Option<Arc<dyn http::ErrorTypes>>,
    ) {
        self.processes
            .insert(resource.pid, Process { resource, errors });
    }

    /// Forgets a process (after it exited and its last events were read).
    pub fn remove_process(&mut self, pid: u32) {
        self.processes.remove(&pid);
    }

    /// The span for `event`, or `None` when the event's process is not registered.
    pub fn span(&self, event: &Event) -> Option<SpanRecord> {
        let process = self.processes.get(&event.header().tgid)?;
        let resource = process.resource.clone();
        Some(match event {
            Event::HttpServer(e) => http::server_span(e, &self.clock, resource),
            Event::HttpClient(e) => {
                http::client_span(e, &self.clock, resource, process.errors.as_deref())
            }
            Event::GrpcServer(e) => grpc::server_span(e, &self.clock, resource),
            Event::GrpcClient(e) => {
                grpc::client_span(e, &self.clock, resource, process.errors.as_deref())
            }
            Event::RustHttpServer(e) => rust::server_span(e, &self.clock, resource),
            Event::RustHttpClient(e) => {
                rust::client_span(e, &self.clock, resource, process.errors.as_deref())
            }
            Event::RustGrpcServer(e) => rust_grpc::server_span(e, &self.clock, resource),
            Event::RustGrpcClient(e) => rust_grpc::client_span(e, &self.clock, resource),
        })
    }
}
