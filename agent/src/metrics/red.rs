//! Request rate, errors and duration from the spans themselves (no extra probe hits): the
//! semantic-convention histograms `http.server.request.duration`,
//! `http.client.request.duration`, `rpc.server.call.duration` and `rpc.client.call.duration`,
//! in seconds, with the conventions' bucket boundaries and attributes (the route template,
//! never the raw path). Each traced process keeps at most `limit` attribute sets per
//! instrument; later new sets are counted in one series marked `otel.metric.overflow=true`.
//!
//! Recording is on the agent's per-span path: a span whose series exists already is counted
//! without allocating (its attribute values are hashed and compared where they lie in the span).

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use opentelemetry::{trace::SpanKind, Value};

use super::telemetry::{Telemetry, METRIC_OVERFLOW};
use crate::spans::{ProcessResource, SpanRecord};

/// The explicit bucket boundaries the semantic conventions give for these durations (s).
pub const BOUNDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Attribute sets per process and instrument before overflow.
pub const DEFAULT_LIMIT: usize = 2000;

/// The four instruments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Instrument {
    /// `http.server.request.duration`.
    HttpServer,
    /// `http.client.request.duration`.
    HttpClient,
    /// `rpc.server.call.duration`.
    RpcServer,
    /// `rpc.client.call.duration`.
    RpcClient,
}

impl Instrument {
    /// Every instrument.
    pub const ALL: [Instrument; 4] = [
        Instrument::HttpServer,
        Instrument::HttpClient,
        Instrument::RpcServer,
        Instrument::RpcClient,
    ];

    /// The semantic-convention name.
    pub fn name(self) -> &'static str {
        match self {
            Instrument::HttpServer => "http.server.request.duration",
            Instrument::HttpClient => "http.client.request.duration",
            Instrument::RpcServer => "rpc.server.call.duration",
            Instrument::RpcClient => "rpc.client.call.duration",
        }
    }

    /// Its description.
    pub fn description(self) -> &'static str {
        match self {
            Instrument::HttpServer => "Duration of HTTP server requests.",
            Instrument::HttpClient => "Duration of HTTP client requests.",
            Instrument::RpcServer => "Duration of RPC calls served.",
            Instrument::RpcClient => "Duration of RPC calls made.",
        }
    }

    /// The span attributes copied onto the measurement.
    fn keys(self) -> &'static [&'static str] {
        match self {
            Instrument::HttpServer => &[
                "http.request.method",
                "http.response.status_code",
                "http.route",
                "url.scheme",
                "network.protocol.name",
                "network.protocol.version",
                "error.type",
            ],
            Instrument::HttpClient => &[
                "http.request.method",
                "http.response.status_code",
                "server.address",
                "server.port",
                "url.scheme",
                "network.protocol.name",
                "network.protocol.version",
                "error.type",
            ],
            Instrument::RpcServer => &[
                "rpc.system",
                "rpc.service",
                "rpc.method",
                "rpc.grpc.status_code",
                "error.type",
            ],
            Instrument::RpcClient => &[
                "rpc.system",
                "rpc.service",
                "rpc.method",
                "rpc.grpc.status_code",
                "server.address",
                "server.port",
                "error.type",
            ],
        }
    }

    /// The instrument a span counts in, if any.
    pub fn of(span: &SpanRecord) -> Option<Instrument> {
        let rpc = span.attribute("rpc.system").is_some();
        match (&span.kind, rpc) {
            (SpanKind::Server, false) => Some(Instrument::HttpServer),
            (SpanKind::Client, false) => Some(Instrument::HttpClient),
            (SpanKind::Server, true) => Some(Instrument::RpcServer),
            (SpanKind::Client, true) => Some(Instrument::RpcClient),
            _ => None,
        }
    }
}

/// An attribute value as a map key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttrValue {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
}

impl AttrValue {
    fn of(v: &Value) -> Self {
        match v {
            Value::I64(i) => AttrValue::Int(*i),
            Value::Bool(b) => AttrValue::Bool(*b),
            other => AttrValue::Str(other.as_str().into_owned()),
        }
    }

    fn as_ref(&self) -> AttrRef<'_> {
        match self {
            AttrValue::Str(s) => AttrRef::Str(s),
            AttrValue::Int(i) => AttrRef::Int(*i),
            AttrValue::Bool(b) => AttrRef::Bool(*b),
        }
    }

    /// As text (Prometheus labels).
    pub fn text(&self) -> String {
        match self {
            AttrValue::Str(s) => s.clone(),
            AttrValue::Int(i) => i.to_string(),
            AttrValue::Bool(b) => b.to_string(),
        }
    }
}

/// Attributes of one series, in the instrument's key order.
pub type Attrs = Vec<(&'static str, AttrValue)>;

/// An [`AttrValue`] borrowed from where it lies (a span's attribute or a stored series).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum AttrRef<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
}

impl<'a> AttrRef<'a> {
    /// The value as [`AttrValue::of`] would store it, when that needs no formatting.
    fn of(v: &'a Value) -> Option<Self> {
        match v {
            Value::I64(i) => Some(AttrRef::Int(*i)),
            Value::Bool(b) => Some(AttrRef::Bool(*b)),
            Value::String(s) => Some(AttrRef::Str(s.as_str())),
            _ => None,
        }
    }
}

/// Attributes copied onto a measurement at most (the longest key list is 8).
const MAX_KEYS: usize = 8;

/// The lookup key of a series: a hash of the instrument and its attributes. Equal attribute
/// sets hash alike whether they are borrowed from a span or stored.
fn series_hash<'a>(
    instrument: Instrument,
    attrs: impl Iterator<Item = (&'static str, AttrRef<'a>)>,
) -> u64 {
    // Fixed keys: the hash only has to be stable within this process.
    let mut h = std::hash::BuildHasher::build_hasher(&foldhash::fast::FixedState::default());
    instrument.hash(&mut h);
    for (k, v) in attrs {
        k.hash(&mut h);
        v.hash(&mut h);
    }
    h.finish()
}

/// One histogram series.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// Counts per bucket (`BOUNDS.len() + 1` of them; the last is above 10 s).
    pub buckets: [u64; BOUNDS.len() + 1],
    /// Measurements.
    pub count: u64,
    /// Their sum, seconds.
    pub sum: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: [0; BOUNDS.len() + 1],
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Histogram {
    fn record(&mut self, v: f64) {
        // Buckets are upper-inclusive, as OTLP and Prometheus define them.
        let i = BOUNDS.partition_point(|b| *b < v);
        self.buckets[i] += 1;
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }
}

/// One stored series.
#[derive(Debug)]
struct Stored {
    instrument: Instrument,
    attrs: Attrs,
    histogram: Histogram,
}

impl Stored {
    fn matches(&self, instrument: Instrument, attrs: &[(&'static str, AttrRef<'_>)]) -> bool {
        self.instrument == instrument
            && self.attrs.len() == attrs.len()
            && self
                .attrs
                .iter()
                .zip(attrs)
                .all(|((k, v), (k2, v2))| k == k2 && v.as_ref() == *v2)
    }
}

#[derive(Debug, Default)]
struct PerProcess {
    resource: Option<Arc<ProcessResource>>,
    /// Series by [`series_hash`]; a collision shares the bucket.
    series: foldhash::HashMap<u64, Vec<Stored>>,
    /// Series per instrument, indexed like [`Instrument::ALL`].
    per_instrument: [usize; 4],
}

impl PerProcess {
    fn find(
        &mut self,
        hash: u64,
        instrument: Instrument,
        attrs: &[(&'static str, AttrRef<'_>)],
    ) -> Option<&mut Histogram> {
        self.series
            .get_mut(&hash)?
            .iter_mut()
            .find(|s| s.matches(instrument, attrs))
            .map(|s| &mut s.histogram)
    }
}

/// One series in a snapshot.
#[derive(Clone, Debug)]
pub struct Point {
    /// The process.
    pub resource: Arc<ProcessResource>,
    /// The instrument.
    pub instrument: Instrument,
    /// Attributes.
    pub attrs: Attrs,
    /// Cumulative histogram since `start`.
    pub histogram: Histogram,
}

/// The RED aggregation of every traced process (cumulative).
#[derive(Debug)]
pub struct RedMetrics {
    processes: Mutex<HashMap<u32, PerProcess>>,
    limit: usize,
    /// When aggregation started (the cumulative start time).
    pub start: SystemTime,
    telemetry: Arc<Telemetry>,
}

impl RedMetrics {
    /// An empty aggregation with `limit` attribute sets per process and instrument.
    pub fn new(limit: usize, telemetry: Arc<Telemetry>) -> Self {
        Self {
            processes: Mutex::new(HashMap::new()),
            limit: limit.max(1),
            start: SystemTime::now(),
            telemetry,
        }
    }

    /// Counts `span` (sampled or not).
    pub fn record(&self, span: &SpanRecord) {
        let Some(instrument) = Instrument::of(span) else {
            return;
        };
        let mut values: [Option<&Value>; MAX_KEYS] = [None; MAX_KEYS];
        for (slot, key) in values.iter_mut().zip(instrument.keys()) {
            *slot = span.attribute(key);
        }
        let present = || {
            instrument
                .keys()
                .iter()
                .zip(values)
                .filter_map(|(k, v)| Some((*k, v?)))
        };
        let seconds = span.duration().as_secs_f64();
        // Values stored as text after formatting (floats, arrays) are rare: those spans take
        // the allocating way.
        let mut borrowed = [("", AttrRef::Bool(false)); MAX_KEYS];
        let mut n = 0;
        let mut simple = true;
        for (k, v) in present() {
            match AttrRef::of(v) {
                Some(r) => {
                    borrowed[n] = (k, r);
                    n += 1;
                }
                None => simple = false,
            }
        }
        let owned: Attrs;
        let refs: &[(&'static str, AttrRef<'_>)];
        let owned_refs: Vec<(&'static str, AttrRef<'_>)>;
        if simple {
            refs = &borrowed[..n];
        } else {
            owned = present().map(|(k, v)| (k, AttrValue::of(v))).collect();
            owned_refs = owned.iter().map(|(k, v)| (*k, v.as_ref())).collect();
            refs = &owned_refs;
        }
        let hash = series_hash(instrument, refs.iter().copied());
        let mut processes = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        let p = processes.entry(span.resource.pid).or_default();
        if p.resource.is_none() {
            p.resource = Some(span.resource.clone());
        }
        if let Some(h) = p.find(hash, instrument, refs) {
            h.record(seconds);
            return;
        }
        let slot = &mut p.per_instrument[instrument as usize];
        let (hash, attrs) = if *slot < self.limit {
            *slot += 1;
            let attrs: Attrs = refs
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        AttrRef::Str(s) => AttrValue::Str((*s).to_string()),
                        AttrRef::Int(i) => AttrValue::Int(*i),
                        AttrRef::Bool(b) => AttrValue::Bool(*b),
                    };
                    (*k, v)
                })
                .collect();
            (hash, attrs)
        } else {
            self.telemetry
                .add(METRIC_OVERFLOW, &[("metric", instrument.name())], 1);
            let overflow = [("otel.metric.overflow", AttrRef::Bool(true))];
            let hash = series_hash(instrument, overflow.iter().copied());
            if let Some(h) = p.find(hash, instrument, &overflow) {
                h.record(seconds);
                return;
            }
            (hash, vec![("otel.metric.overflow", AttrValue::Bool(true))])
        };
        let mut histogram = Histogram::default();
        histogram.record(seconds);
        p.series.entry(hash).or_default().push(Stored {
            instrument,
            attrs,
            histogram,
        });
    }

    /// Every series now.
    pub fn snapshot(&self) -> Vec<Point> {
        let processes = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for p in processes.values() {
            let Some(resource) = &p.resource else {
                continue;
            };
            for s in p.series.values().flatten() {
                out.push(Point {
                    resource: resource.clone(),
                    instrument: s.instrument,
                    attrs: s.attrs.clone(),
                    histogram: s.histogram.clone(),
                });
            }
        }
        out.sort_by(|a, b| {
            (a.resource.pid, a.instrument, &a.attrs).cmp(&(b.resource.pid, b.instrument, &b.attrs))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use opentelemetry::{
        trace::{SpanId, Status, TraceId},
        KeyValue,
    };

    use super::*;

    fn span(kind: SpanKind, route: &str, status: i64, ms: u64) -> SpanRecord {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        SpanRecord {
            trace_id: TraceId::from_bytes([1; 16]),
            span_id: SpanId::from_bytes([2; 8]),
            parent_span_id: SpanId::INVALID,
            parent_is_remote: false,
            sampled: true,
            name: "GET".into(),
            kind,
            start,
            end: start + Duration::from_millis(ms),
            attributes: vec![
                KeyValue::new("http.request.method", "GET"),
                KeyValue::new("http.route", route.to_string()),
                KeyValue::new("url.path", format!("{route}/raw")),
                KeyValue::new("http.response.status_code", status),
            ],
            status: Status::Unset,
            resource: Arc::new(ProcessResource {
                pid: 7,
                service_name: "svc".into(),
                attributes: vec![KeyValue::new("service.name", "svc")],
            }),
        }
    }

    #[test]
    fn series_by_route_and_status_with_standard_buckets() {
        let red = RedMetrics::new(10, Arc::new(Telemetry::default()));
        red.record(&span(SpanKind::Server, "/a", 200, 3));
        red.record(&span(SpanKind::Server, "/a", 200, 5));
        red.record(&span(SpanKind::Server, "/a", 500, 20_000));
        red.record(&span(SpanKind::Client, "/a", 200, 1));
        let s = red.snapshot();
        assert_eq!(s.len(), 3);
        let ok = s
            .iter()
            .find(|p| {
                p.instrument == Instrument::HttpServer
                    && p.attrs
                        .contains(&("http.response.status_code", AttrValue::Int(200)))
            })
            .unwrap();
        assert_eq!(ok.histogram.count, 2);
        // 5 ms lands in the first bucket: upper bounds are inclusive.
        assert_eq!(ok.histogram.buckets[0], 2);
        assert!(!ok.attrs.iter().any(|(k, _)| *k == "url.path"));
        let slow = s
            .iter()
            .find(|p| {
                p.attrs
                    .contains(&("http.response.status_code", AttrValue::Int(500)))
            })
            .unwrap();
        assert_eq!(slow.histogram.buckets[BOUNDS.len()], 1);
    }

    #[test]
    fn cardinality_is_bounded_with_an_overflow_series() {
        let t = Arc::new(Telemetry::default());
        let red = RedMetrics::new(3, t.clone());
        for i in 0..10 {
            red.record(&span(SpanKind::Server, &format!("/r{i}"), 200, 1));
        }
        let s = red.snapshot();
        assert_eq!(s.len(), 4);
        let overflow = s
            .iter()
            .find(|p| p.attrs == vec![("otel.metric.overflow", AttrValue::Bool(true))])
            .unwrap();
        assert_eq!(overflow.histogram.count, 7);
        assert_eq!(s.iter().map(|p| p.histogram.count).sum::<u64>(), 10);
        assert_eq!(
            t.get(
                METRIC_OVERFLOW,
                &[("metric", "http.server.request.duration")]
            ),
            7
        );
    }
}
