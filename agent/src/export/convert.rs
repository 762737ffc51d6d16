//! [`SpanRecord`] → the OpenTelemetry SDK and protocol types.

use std::{collections::BTreeMap, sync::Arc};

use opentelemetry::{
    trace::{SpanContext, TraceFlags, TraceState},
    InstrumentationScope,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, trace::v1::ResourceSpans,
};
use opentelemetry_sdk::{
    trace::{SpanData, SpanEvents, SpanLinks},
    Resource,
};

use crate::spans::{ProcessResource, SpanRecord};

/// The instrumentation scope every span carries.
pub fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("spanhook")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

/// The SDK resource of a process.
pub fn resource(r: &ProcessResource) -> Resource {
    Resource::builder_empty()
        .with_attributes(r.attributes.iter().cloned())
        .build()
}

/// The SDK's exportable form of a span.
pub fn span_data(s: &SpanRecord, scope: &InstrumentationScope) -> SpanData {
    let flags = if s.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    SpanData {
        span_context: SpanContext::new(s.trace_id, s.span_id, flags, false, TraceState::default()),
        parent_span_id: s.parent_span_id,
        parent_span_is_remote: s.parent_is_remote,
        span_kind: s.kind.clone(),
        name: s.name.clone().into(),
        start_time: s.start,
        end_time: s.end,
        attributes: s.attributes.clone(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: s.status.clone(),
        instrumentation_scope: scope.clone(),
    }
}

/// Spans grouped by the process that produced them, in first-seen order.
pub fn by_resource(spans: &[SpanRecord]) -> Vec<(Arc<ProcessResource>, Vec<&SpanRecord>)> {
    let mut order: Vec<(Arc<ProcessResource>, Vec<&SpanRecord>)> = Vec::new();
    let mut index: BTreeMap<u32, usize> = BTreeMap::new();
    for s in spans {
        let i = *index.entry(s.resource.pid).or_insert_with(|| {
            order.push((s.resource.clone(), Vec::new()));
            order.len() - 1
        });
        order[i].1.push(s);
    }
    order
}

/// One OTLP request holding `spans`, one `ResourceSpans` per process.
pub fn export_request(spans: &[SpanRecord]) -> ExportTraceServiceRequest {
    let scope = scope();
    let resource_spans: Vec<ResourceSpans> = by_resource(spans)
        .into_iter()
        .flat_map(|(res, group)| {
            let data: Vec<SpanData> = group.iter().map(|s| span_data(s, &scope)).collect();
            let sdk_resource = resource(&res);
            opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope(
                data,
                &(&sdk_resource).into(),
            )
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}
