//! Sliding-window statistics per operation: rate, error rate and exact p50/p95/p99.
//!
//! Every span leaves a small fact (when it arrived, its operation, duration and status) in a
//! queue ordered by arrival; facts older than the window fall off the front. The table is
//! computed from the facts when it is shown, so any filter applies to it exactly, and the
//! percentiles are exact rather than bucketed. The queue is capped so memory stays bounded
//! under any load: at the cap the oldest facts go first and the rate is computed over the
//! period still held.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use opentelemetry::trace::SpanKind;

use super::{
    filter::{is_error, status_code, Filter},
    format,
};
use crate::spans::SpanRecord;

/// Facts held at most: 120 s at 5000 spans/s, about 14 MB.
pub const MAX_FACTS: usize = 600_000;

/// What makes an operation: the service, the span kind and the span name (which holds the
/// route, `GET /items/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// `service.name` of the process.
    pub service: Arc<str>,
    /// `server`, `client`, ….
    pub kind: &'static str,
    /// The span name.
    pub name: String,
}

/// One span, as the window keeps it.
#[derive(Clone, Copy, Debug)]
struct Fact {
    /// Milliseconds since the window's epoch.
    at_ms: u64,
    op: u32,
    duration_us: u32,
    code: u16,
    error: bool,
}

/// One row of the operations table.
#[derive(Clone, Debug, PartialEq)]
pub struct OperationStats {
    /// Index of the operation, stable for the life of the window.
    pub op: u32,
    /// The operation.
    pub operation: Operation,
    /// Spans in the window that passed the filter.
    pub count: u64,
    /// Of those, spans with status ERROR.
    pub errors: u64,
    /// Spans per second over the period held.
    pub rate: f64,
    /// Median latency, µs.
    pub p50_us: u64,
    /// 95th percentile latency, µs.
    pub p95_us: u64,
    /// 99th percentile latency, µs.
    pub p99_us: u64,
}

impl OperationStats {
    /// Error rate in percent as the table prints it.
    pub fn error_percent(&self) -> String {
        format::percent(self.errors, self.count)
    }
}

/// The window of recent spans.
pub struct Window {
    epoch: Instant,
    span: Duration,
    cap: usize,
    operations: Vec<Operation>,
    // service → name → one slot per span kind; lookups by &str need no allocation per span.
    index: HashMap<Arc<str>, HashMap<String, [Option<u32>; 5]>>,
    facts: VecDeque<Fact>,
    // Arrival (ms since epoch) of the newest fact dropped for the cap, not for its age.
    capped_until_ms: Option<u64>,
}

fn kind_slot(kind: &SpanKind) -> usize {
    match kind {
        SpanKind::Server => 0,
        SpanKind::Client => 1,
        SpanKind::Producer => 2,
        SpanKind::Consumer => 3,
        SpanKind::Internal => 4,
    }
}

impl Window {
    /// A window over the last `span` of time, holding at most `cap` facts; `epoch` is when
    /// watching began (rates never count time before it).
    pub fn new(span: Duration, cap: usize, epoch: Instant) -> Self {
        Self {
            epoch,
            span,
            cap: cap.max(1),
            operations: Vec::new(),
            index: HashMap::new(),
            facts: VecDeque::new(),
            capped_until_ms: None,
        }
    }

    /// The length of the window.
    pub fn span(&self) -> Duration {
        self.span
    }

    /// Facts held.
    pub fn len(&self) -> usize {
        self.facts.len()
    }

    /// Whether no fact is held.
    pub fn is_empty(&self) -> bool {
        self.facts.is_empty()
    }

    fn ms(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn operation(&mut self, span: &SpanRecord) -> u32 {
        let service = &span.resource.service_name;
        let slot = kind_slot(&span.kind);
        if let Some(Some(op)) = self
            .index
            .get(service.as_str())
            .and_then(|names| names.get(&span.name))
            .map(|slots| slots[slot])
        {
            return op;
        }
        let op = self.operations.len() as u32;
        let service: Arc<str> = match self.index.get_key_value(service.as_str()) {
            Some((k, _)) => k.clone(),
            None => Arc::from(service.as_str()),
        };
        self.operations.push(Operation {
            service: service.clone(),
            kind: format::kind(&span.kind),
            name: span.name.clone(),
        });
        self.index
            .entry(service)
            .or_default()
            .entry(span.name.clone())
            .or_default()[slot] = Some(op);
        op
    }

    /// Records a span that arrived at `at` (arrivals must not go backwards).
    pub fn record(&mut self, span: &SpanRecord, at: Instant) {
        let op = self.operation(span);
        let fact = Fact {
            at_ms: self.ms(at),
            op,
            duration_us: span.duration().as_micros().min(u32::MAX as u128) as u32,
            code: status_code(span),
            error: is_error(span),
        };
        if self.facts.len() >= self.cap {
            if let Some(old) = self.facts.pop_front() {
                self.capped_until_ms = Some(old.at_ms);
            }
        }
        self.facts.push_back(fact);
    }

    /// Drops the facts that are out of the window as of `oldest_needed` (now, or the moment
    /// the view was paused).
    pub fn expire(&mut self, oldest_needed: Instant) {
        let horizon = self
            .ms(oldest_needed)
            .saturating_sub(self.span.as_millis() as u64);
        while self.facts.front().is_some_and(|f| f.at_ms < horizon) {
            self.facts.pop_front();
        }
    }

    /// The window as of `as_of` in ms since the epoch, and the seconds its counts cover: the
    /// window, less what was never seen or was capped (at least one second, so a first span
    /// does not read as a burst).
    fn period(&self, as_of: Instant) -> (u64, u64, f64) {
        let end = self.ms(as_of);
        let start = end.saturating_sub(self.span.as_millis() as u64);
        let from = start.max(self.capped_until_ms.unwrap_or(0));
        let seconds = ((end - from.min(end)) as f64 / 1000.0).max(1.0);
        (start, end, seconds)
    }

    /// Spans per second over the window as of `as_of`, every operation, nothing filtered.
    pub fn rate(&self, as_of: Instant) -> f64 {
        let (start, end, seconds) = self.period(as_of);
        let first = self.facts.partition_point(|f| f.at_ms < start);
        let last = self.facts.partition_point(|f| f.at_ms <= end);
        (last - first) as f64 / seconds
    }

    /// The table as of `as_of`: one row per operation with spans passing `filter`, unsorted.
    pub fn stats(&self, filter: &Filter, as_of: Instant) -> Vec<OperationStats> {
        let (start, end, seconds) = self.period(as_of);
        let wanted: Vec<bool> = self
            .operations
            .iter()
            .map(|o| filter.matches_operation(&o.service, &o.name))
            .collect();
        let first = self.facts.partition_point(|f| f.at_ms < start);
        let last = self.facts.partition_point(|f| f.at_ms <= end);
        let mut durations: HashMap<u32, (Vec<u32>, u64)> = HashMap::new();
        for f in self.facts.range(first..last) {
            if !wanted[f.op as usize]
                || !filter.matches_outcome(f.code, f.error, f.duration_us as u64)
            {
                continue;
            }
            let entry = durations.entry(f.op).or_default();
            entry.0.push(f.duration_us);
            entry.1 += f.error as u64;
        }
        durations
            .into_iter()
            .map(|(op, (mut d, errors))| {
                let (p50, p95, p99) = percentiles(&mut d);
                OperationStats {
                    op,
                    operation: self.operations[op as usize].clone(),
                    count: d.len() as u64,
                    errors,
                    rate: d.len() as f64 / seconds,
                    p50_us: p50,
                    p95_us: p95,
                    p99_us: p99,
                }
            })
            .collect()
    }
}

/// Nearest-rank p50, p95 and p99 of `values` (reordered in place); zeros when empty.
fn percentiles(values: &mut [u32]) -> (u64, u64, u64) {
    if values.is_empty() {
        return (0, 0, 0);
    }
    let n = values.len();
    let rank = |p: f64| ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
    let (i50, i95, i99) = (rank(0.50), rank(0.95), rank(0.99));
    // Three selections on shrinking slices: linear time, no full sort.
    let (_, p50, upper) = values.select_nth_unstable(i50);
    let p50 = *p50;
    let p95 = if i95 == i50 {
        p50
    } else {
        *upper.select_nth_unstable(i95 - i50 - 1).1
    };
    let p99 = if i99 == i95 {
        p95
    } else {
        let base = i95 + 1;
        values[base..].select_nth_unstable(i99 - base).1.to_owned()
    };
    (p50 as u64, p95 as u64, p99 as u64)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::spans::ProcessResource;
    use opentelemetry::{
        trace::{SpanId, Status, TraceId},
        KeyValue,
    };
    use std::{path::Path, time::SystemTime};

    /// A server span of `service` named `name`, lasting `ms`, with HTTP `code`.
    pub(crate) fn span(service: &str, name: &str, ms: f64, code: i64) -> SpanRecord {
        let resource = Arc::new(ProcessResource::from_parts(
            4242,
            Path::new("/bin/svc"),
            format!("OTEL_SERVICE_NAME={service}\0").as_bytes(),
            b"",
            None,
            &[],
        ));
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        SpanRecord {
            trace_id: TraceId::from_bytes([1; 16]),
            span_id: SpanId::from_bytes([2; 8]),
            parent_span_id: SpanId::INVALID,
            parent_is_remote: false,
            sampled: true,
            name: name.into(),
            kind: SpanKind::Server,
            start,
            end: start + Duration::from_secs_f64(ms / 1000.0),
            attributes: vec![KeyValue::new("http.response.status_code", code)],
            status: if code >= 500 {
                Status::error("")
            } else {
                Status::Unset
            },
            resource,
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<u32> = (1..=100).rev().collect();
        assert_eq!(percentiles(&mut v), (50, 95, 99));
        let mut one = vec![7];
        assert_eq!(percentiles(&mut one), (7, 7, 7));
        let mut two = vec![9, 1];
        assert_eq!(percentiles(&mut two), (1, 9, 9));
        assert_eq!(percentiles(&mut []), (0, 0, 0));
    }

    #[test]
    fn counts_rates_errors_and_filters() {
        let t0 = Instant::now();
        let mut w = Window::new(Duration::from_secs(10), 1000, t0);
        let at = t0 + Duration::from_secs(5);
        for i in 0..10 {
            w.record(&span("checkout", "GET /hello", 1.0 + i as f64, 200), at);
        }
        for _ in 0..4 {
            w.record(&span("checkout", "GET /error", 0.5, 500), at);
        }
        w.record(&span("catalog", "GET /hello", 3.0, 200), at);
        let mut rows = w.stats(&Filter::default(), t0 + Duration::from_secs(10));
        rows.sort_by_key(|r| std::cmp::Reverse(r.count));
        assert_eq!(rows.len(), 3);
        let hello = &rows[0];
        assert_eq!(&*hello.operation.service, "checkout");
        assert_eq!(hello.operation.name, "GET /hello");
        assert_eq!(hello.operation.kind, "server");
        assert_eq!(hello.count, 10);
        assert_eq!(hello.p50_us, 5_000);
        assert_eq!(hello.p99_us, 10_000);
        assert!((hello.rate - 1.0).abs() < 1e-9, "10 spans over 10 s");
        assert!((w.rate(t0 + Duration::from_secs(10)) - 1.5).abs() < 1e-9);
        assert_eq!(rows[1].errors, 4);
        assert_eq!(rows[1].error_percent(), "100.0");

        let errors: Filter = "status=5xx".parse().unwrap();
        let rows = w.stats(&errors, t0 + Duration::from_secs(10));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].operation.name, "GET /error");
        let slow: Filter = "min=6ms".parse().unwrap();
        let rows = w.stats(&slow, t0 + Duration::from_secs(10));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].count, 5);
        let catalog: Filter = "service=catalog".parse().unwrap();
        assert_eq!(w.stats(&catalog, t0 + Duration::from_secs(10))[0].count, 1);
    }

    #[test]
    fn old_spans_leave_the_window() {
        let t0 = Instant::now();
        let mut w = Window::new(Duration::from_secs(10), 1000, t0);
        w.record(&span("s", "GET /a", 1.0, 200), t0);
        w.record(&span("s", "GET /b", 1.0, 200), t0 + Duration::from_secs(8));
        let later = t0 + Duration::from_secs(15);
        // Until expired, an as-of query still sees only its own window.
        assert_eq!(w.stats(&Filter::default(), later).len(), 1);
        w.expire(later);
        assert_eq!(w.len(), 1);
        // As of an earlier moment (a paused view), the older span still counts.
        let rows = w.stats(&Filter::default(), t0 + Duration::from_secs(9));
        assert_eq!(rows.len(), 1, "expired facts are gone for good");
    }

    #[test]
    fn the_cap_bounds_memory_and_the_rate_covers_what_is_held() {
        let t0 = Instant::now();
        let mut w = Window::new(Duration::from_secs(60), 100, t0);
        for i in 0..1000u64 {
            w.record(
                &span("s", "GET /a", 1.0, 200),
                t0 + Duration::from_millis(i * 10),
            );
        }
        assert_eq!(w.len(), 100);
        let rows = w.stats(&Filter::default(), t0 + Duration::from_millis(9990));
        // 100 spans over the last second held: 100/s, as fed, not 100 over 10 s.
        assert_eq!(rows[0].count, 100);
        assert!(
            rows[0].rate > 90.0 && rows[0].rate <= 100.0,
            "{}",
            rows[0].rate
        );
    }
}
