//! RED histograms and self-telemetry → one OTLP `ExportMetricsServiceRequest` (cumulative
//! temporality): a `ResourceMetrics` per traced process, and one for the agent itself.

use std::time::SystemTime;

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue},
    metrics::v1::{
        metric::Data, number_data_point, AggregationTemporality, Gauge, Histogram,
        HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    },
    resource::v1::Resource,
};

use super::{
    red::{AttrValue, Point, BOUNDS},
    telemetry::Series,
};

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn attr(key: &str, v: &AttrValue) -> KeyValue {
    kv(
        key,
        match v {
            AttrValue::Str(s) => any_value::Value::StringValue(s.clone()),
            AttrValue::Int(i) => any_value::Value::IntValue(*i),
            AttrValue::Bool(b) => any_value::Value::BoolValue(*b),
        },
    )
}

fn otel_value(v: &opentelemetry::Value) -> any_value::Value {
    match v {
        opentelemetry::Value::I64(i) => any_value::Value::IntValue(*i),
        opentelemetry::Value::Bool(b) => any_value::Value::BoolValue(*b),
        opentelemetry::Value::F64(f) => any_value::Value::DoubleValue(*f),
        other => any_value::Value::StringValue(other.as_str().into_owned()),
    }
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "spanhook".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    })
}

/// The request for the RED `points` and the agent's `telemetry` series; `agent` is the agent's
/// own resource attributes.
pub fn request(
    points: &[Point],
    telemetry: &[Series],
    agent: &[(String, String)],
    start: SystemTime,
    now: SystemTime,
) -> ExportMetricsServiceRequest {
    let (start, now) = (nanos(start), nanos(now));
    let mut resource_metrics = Vec::new();
    let mut i = 0;
    while i < points.len() {
        let pid = points[i].resource.pid;
        let group: Vec<&Point> = points[i..]
            .iter()
            .take_while(|p| p.resource.pid == pid)
            .collect();
        i += group.len();
        let resource = Resource {
            attributes: group[0]
                .resource
                .attributes
                .iter()
                .map(|a| kv(a.key.as_str(), otel_value(&a.value)))
                .collect(),
            ..Default::default()
        };
        let mut metrics: Vec<Metric> = Vec::new();
        for p in group {
            let data_point = HistogramDataPoint {
                attributes: p.attrs.iter().map(|(k, v)| attr(k, v)).collect(),
                start_time_unix_nano: start,
                time_unix_nano: now,
                count: p.histogram.count,
                sum: Some(p.histogram.sum),
                bucket_counts: p.histogram.buckets.to_vec(),
                explicit_bounds: BOUNDS.to_vec(),
                min: (p.histogram.count > 0).then_some(p.histogram.min),
                max: (p.histogram.count > 0).then_some(p.histogram.max),
                ..Default::default()
            };
            let name = p.instrument.name();
            match metrics.iter_mut().find(|m| m.name == name) {
                Some(Metric {
                    data: Some(Data::Histogram(h)),
                    ..
                }) => h.data_points.push(data_point),
                _ => metrics.push(Metric {
                    name: name.into(),
                    description: p.instrument.description().into(),
                    unit: "s".into(),
                    data: Some(Data::Histogram(Histogram {
                        data_points: vec![data_point],
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    })),
                    ..Default::default()
                }),
            }
        }
        resource_metrics.push(ResourceMetrics {
            resource: Some(resource),
            scope_metrics: vec![ScopeMetrics {
                scope: scope(),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    if !telemetry.is_empty() {
        let mut metrics: Vec<Metric> = Vec::new();
        for s in telemetry {
            let point = NumberDataPoint {
                attributes: s
                    .labels
                    .iter()
                    .map(|(k, v)| kv(k, any_value::Value::StringValue(v.clone())))
                    .collect(),
                start_time_unix_nano: if s.counter { start } else { 0 },
                time_unix_nano: now,
                value: Some(number_data_point::Value::AsInt(s.value as i64)),
                ..Default::default()
            };
            match metrics.iter_mut().find(|m| m.name == s.name) {
                Some(Metric {
                    data: Some(Data::Sum(sum)),
                    ..
                }) => sum.data_points.push(point),
                Some(Metric {
                    data: Some(Data::Gauge(g)),
                    ..
                }) => g.data_points.push(point),
                _ => metrics.push(Metric {
                    name: s.name.into(),
                    description: s.description.into(),
                    unit: "1".into(),
                    data: Some(if s.counter {
                        Data::Sum(Sum {
                            data_points: vec![point],
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                            is_monotonic: true,
                        })
                    } else {
                        Data::Gauge(Gauge {
                            data_points: vec![point],
                        })
                    }),
                    ..Default::default()
                }),
            }
        }
        let mut attributes = vec![kv(
            "service.name",
            any_value::Value::StringValue("spanhook".into()),
        )];
        attributes.push(kv(
            "service.version",
            any_value::Value::StringValue(env!("CARGO_PKG_VERSION").into()),
        ));
        attributes.push(kv(
            "process.pid",
            any_value::Value::IntValue(std::process::id() as i64),
        ));
        for (k, v) in agent {
            if k != "service.name" {
                attributes.push(kv(k, any_value::Value::StringValue(v.clone())));
            }
        }
        resource_metrics.push(ResourceMetrics {
            resource: Some(Resource {
                attributes,
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: scope(),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    ExportMetricsServiceRequest { resource_metrics }
}
