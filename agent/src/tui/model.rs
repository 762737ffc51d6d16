//! Everything the view knows about the traced processes: the operations window, the recent
//! traces, and totals. It keeps taking spans while the display is paused, so nothing is missed
//! and the figures are right the moment the display resumes.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    filter::Filter,
    traces::{Trace, TraceStore, MAX_TRACES},
    window::{OperationStats, Window, MAX_FACTS},
};
use crate::spans::SpanRecord;

/// The view's data.
pub struct Model {
    window: Window,
    traces: TraceStore,
    started: Instant,
    total: u64,
}

impl Model {
    /// A model with a sliding window of `window`, starting at `now`.
    pub fn new(window: Duration, now: Instant) -> Self {
        Self::with_limits(window, now, MAX_FACTS, MAX_TRACES)
    }

    /// As [`Model::new`] with explicit bounds (for tests).
    pub fn with_limits(window: Duration, now: Instant, facts: usize, traces: usize) -> Self {
        Self {
            window: Window::new(window, facts, now),
            traces: TraceStore::new(traces),
            started: now,
            total: 0,
        }
    }

    /// Takes spans that arrived at `at`.
    pub fn ingest(&mut self, spans: Vec<SpanRecord>, at: Instant) {
        for span in spans {
            self.window.record(&span, at);
            self.traces.add(Arc::new(span));
            self.total += 1;
        }
    }

    /// Forgets the window's facts that no view still needs (older than the window before
    /// `oldest_needed`).
    pub fn expire(&mut self, oldest_needed: Instant) {
        self.window.expire(oldest_needed);
    }

    /// The operations table as of `as_of`, unsorted.
    pub fn operations(&self, filter: &Filter, as_of: Instant) -> Vec<OperationStats> {
        self.window.stats(filter, as_of)
    }

    /// Spans per second over the window as of `as_of`, unfiltered.
    pub fn rate(&self, as_of: Instant) -> f64 {
        self.window.rate(as_of)
    }

    /// The traces held that have at least one span passing `filter`, unsorted.
    pub fn traces(&self, filter: &Filter) -> Vec<Arc<Trace>> {
        filter_traces(self.traces.all(), filter)
    }

    /// The trace `id`, if still held.
    pub fn trace(&self, id: &opentelemetry::trace::TraceId) -> Option<Arc<Trace>> {
        self.traces.get(id)
    }

    /// Every trace held.
    pub fn all_traces(&self) -> Vec<Arc<Trace>> {
        self.traces.all()
    }

    /// Spans taken since the start.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// When watching began.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The sliding window's length.
    pub fn window(&self) -> Duration {
        self.window.span()
    }
}

/// The traces among `traces` with at least one span passing `filter`.
pub fn filter_traces(traces: Vec<Arc<Trace>>, filter: &Filter) -> Vec<Arc<Trace>> {
    if filter.is_empty() {
        return traces;
    }
    traces
        .into_iter()
        .filter(|t| t.spans.iter().any(|s| filter.matches_span(s)))
        .collect()
}
