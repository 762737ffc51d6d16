//! Events → OpenTelemetry spans: trace context, semantic-convention attributes, resource.
//!
//! Trace and span ids are decided in the kernel (children started later in the same request
//! need their parent's ids before user space sees anything); this stage turns times into wall
//! clock, names the span, and attaches attributes and the process's resource.

pub mod clock;
pub mod http;
pub mod resource;

use std::{collections::HashMap, sync::Arc, time::SystemTime};

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

/// Turns events into spans for a set of known processes.
#[derive(Debug)]
pub struct Assembler {
    clock: Clock,
    resources: HashMap<u32, Arc<ProcessResource>>,
}

impl Assembler {
    /// An assembler with no processes yet.
    pub fn new(clock: Clock) -> Self {
        Self {
            clock,
            resources: HashMap::new(),
        }
    }

    /// Registers the resource of a traced process.
    pub fn add_process(&mut self, resource: Arc<ProcessResource>) {
        self.resources.insert(resource.pid, resource);
    }

    /// Forgets a process (after it exited and its last events were read).
    pub fn remove_process(&mut self, pid: u32) {
        self.resources.remove(&pid);
    }

    /// The span for `event`, or `None` when the event's process is not registered.
    pub fn span(&self, event: &Event) -> Option<SpanRecord> {
        let resource = self.resources.get(&event.header().tgid)?.clone();
        Some(match event {
            Event::HttpServer(e) => http::server_span(e, &self.clock, resource),
        })
    }
}
