//! The view's state: what is shown (the rows as of the last refresh), which pane has focus,
//! what is selected, sorted and filtered, and whether the display is paused.
//!
//! Rows are recomputed from the model once per refresh interval, and at once when the user
//! changes what is shown (a filter, a sort), so a key press never waits for the next refresh.
//! Selections follow their operation or trace, not their row number, while rows move.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use opentelemetry::trace::{SpanId, TraceId};
use ratatui::widgets::TableState;

use super::{
    columns::{sort_operations, sort_traces, OpColumn, Sort, TraceColumn},
    feed::FeedMessage,
    filter::Filter,
    logs::LogLines,
    model::{filter_traces, Model},
    traces::{Trace, TreeRow},
    window::OperationStats,
};

/// How the view starts.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Length of the sliding window for rates and percentiles.
    pub window: Duration,
    /// Time between refreshes of the rows.
    pub refresh: Duration,
    /// The filter in force at the start.
    pub filter: Filter,
    /// The operations table's sort column at the start.
    pub sort: OpColumn,
    /// The traced processes, for the header.
    pub pids: Vec<u32>,
    /// Where spans are also exported, for the status line ("otlp http://…, file spans.jsonl").
    pub exporting: String,
}

/// Which pane takes the arrow keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    /// The operations table.
    Operations,
    /// The recent traces.
    Traces,
}

/// A box drawn over the panes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overlay {
    /// Every key binding.
    Help,
    /// The captured log lines.
    Log,
}

/// An open trace: its tree and the selected span.
pub struct Detail {
    pub(crate) trace: Arc<Trace>,
    pub(crate) rows: Vec<TreeRow>,
    pub(crate) state: TableState,
}

impl Detail {
    fn new(trace: Arc<Trace>, keep: Option<SpanId>) -> Self {
        let rows = trace.tree();
        let selected = keep
            .and_then(|id| rows.iter().position(|r| r.span.span_id == id))
            .unwrap_or(0);
        Self {
            trace,
            rows,
            state: TableState::new().with_selected(Some(selected)),
        }
    }

    /// The selected span's row.
    pub(crate) fn selected(&self) -> Option<&TreeRow> {
        self.state.selected().and_then(|i| self.rows.get(i))
    }
}

/// A frozen display: the moment it was paused and the traces held then.
pub(crate) struct Paused {
    pub(crate) at: Instant,
    traces: Vec<Arc<Trace>>,
}

/// The whole state of the view.
pub struct App {
    pub(crate) model: Model,
    pub(crate) settings: Settings,
    pub(crate) filter: Filter,
    pub(crate) op_sort: Sort<OpColumn>,
    pub(crate) trace_sort: Sort<TraceColumn>,
    pub(crate) focus: Focus,
    pub(crate) operations: Vec<OperationStats>,
    pub(crate) op_state: TableState,
    pub(crate) traces: Vec<Arc<Trace>>,
    pub(crate) trace_state: TableState,
    pub(crate) paused: Option<Paused>,
    pub(crate) detail: Option<Detail>,
    /// The filter being typed after `/`.
    pub(crate) editing: Option<String>,
    pub(crate) overlay: Option<Overlay>,
    /// A note for the status line (a filter that did not parse), until the next key.
    pub(crate) message: Option<String>,
    pub(crate) logs: LogLines,
    pub(crate) live: bool,
    /// Spans the view could not take because it fell behind.
    pub(crate) dropped: u64,
    /// Rows visible in each pane at the last draw, for page up/down.
    pub(crate) page: usize,
    pub(crate) quit: bool,
    /// Spans per second over the window at the last refresh, unfiltered, for the header.
    pub(crate) rate: f64,
}

impl App {
    /// A view with no spans yet, starting at `now`.
    pub fn new(settings: Settings, logs: LogLines, now: Instant) -> Self {
        Self {
            model: Model::new(settings.window, now),
            filter: settings.filter.clone(),
            op_sort: Sort::by(settings.sort),
            trace_sort: Sort::by(TraceColumn::Time),
            settings,
            focus: Focus::Operations,
            operations: Vec::new(),
            op_state: TableState::new(),
            traces: Vec::new(),
            trace_state: TableState::new(),
            paused: None,
            detail: None,
            editing: None,
            overlay: None,
            message: None,
            logs,
            live: false,
            dropped: 0,
            page: 10,
            quit: false,
            rate: 0.0,
        }
    }

    /// Takes a message from the pipeline.
    pub fn take(&mut self, message: FeedMessage) {
        match message {
            FeedMessage::Started => self.live = true,
            FeedMessage::Spans(spans, at) => {
                self.live = true;
                self.model.ingest(spans, at);
            }
        }
    }

    /// Whether the user asked to quit.
    pub fn quit_requested(&self) -> bool {
        self.quit
    }

    /// Time between refreshes.
    pub fn refresh_interval(&self) -> Duration {
        self.settings.refresh
    }

    /// The periodic refresh: new rows from the model, unless the display is paused.
    pub fn refresh(&mut self, now: Instant) {
        match &self.paused {
            Some(p) => self.model.expire(p.at),
            None => {
                self.model.expire(now);
                self.recompute(now);
            }
        }
    }

    /// Rows for the current filter and sort, as of now or of the pause.
    pub(crate) fn recompute(&mut self, now: Instant) {
        let as_of = self.paused.as_ref().map_or(now, |p| p.at);
        self.rate = self.model.rate(as_of);
        let keep_op = self.selected_operation().map(|o| o.op);
        let mut ops = self.model.operations(&self.filter, as_of);
        sort_operations(&mut ops, self.op_sort);
        self.operations = ops;
        let at = keep_op.and_then(|id| self.operations.iter().position(|o| o.op == id));
        reselect(&mut self.op_state, at, self.operations.len());

        // At the top of the list the selection stays there, following the newest trace as
        // `tail -f` would; anywhere else it stays on its trace while rows move.
        let at_top = self.trace_state.selected().is_none_or(|i| i == 0);
        let keep_trace = self.selected_trace().map(|t| t.id).filter(|_| !at_top);
        let source = match &self.paused {
            Some(p) => p.traces.clone(),
            None => self.model.all_traces(),
        };
        let mut traces = filter_traces(source, &self.filter);
        sort_traces(&mut traces, self.trace_sort);
        self.traces = traces;
        let at = match keep_trace {
            Some(id) => self.traces.iter().position(|t| t.id == id),
            None => Some(0),
        };
        reselect(&mut self.trace_state, at, self.traces.len());

        // An open trace picks up spans that arrived since (children in other processes).
        if self.paused.is_none() {
            if let Some(d) = &self.detail {
                if let Some(t) = self.model.trace(&d.trace.id) {
                    if !Arc::ptr_eq(&t, &d.trace) {
                        let keep = d.selected().map(|r| r.span.span_id);
                        self.detail = Some(Detail::new(t, keep));
                    }
                }
            }
        }
    }

    /// The selected operation, if any.
    pub(crate) fn selected_operation(&self) -> Option<&OperationStats> {
        self.op_state
            .selected()
            .and_then(|i| self.operations.get(i))
    }

    /// The selected trace, if any.
    pub(crate) fn selected_trace(&self) -> Option<&Arc<Trace>> {
        self.trace_state.selected().and_then(|i| self.traces.get(i))
    }

    /// Freezes or unfreezes the display; spans keep being counted either way.
    pub(crate) fn toggle_pause(&mut self, now: Instant) {
        if self.paused.take().is_none() {
            self.paused = Some(Paused {
                at: now,
                traces: self.model.all_traces(),
            });
        }
        self.recompute(now);
    }

    /// Opens the selected trace.
    pub(crate) fn open_selected_trace(&mut self) {
        if let Some(t) = self.selected_trace().cloned() {
            self.detail = Some(Detail::new(t, None));
        }
    }

    /// Opens the trace `id` if it is held.
    pub fn open_trace(&mut self, id: TraceId) -> bool {
        match self.model.trace(&id) {
            Some(t) => {
                self.detail = Some(Detail::new(t, None));
                true
            }
            None => false,
        }
    }

    /// Replaces the filter and recomputes.
    pub(crate) fn set_filter(&mut self, filter: Filter, now: Instant) {
        self.filter = filter;
        self.recompute(now);
        self.op_state.select(if self.operations.is_empty() {
            None
        } else {
            Some(0)
        });
        self.trace_state.select(if self.traces.is_empty() {
            None
        } else {
            Some(0)
        });
    }
}

/// Selects row `at`, or keeps the index in range when the selected item is gone.
fn reselect(state: &mut TableState, at: Option<usize>, len: usize) {
    if len == 0 {
        state.select(None);
        return;
    }
    let i = at.or(state.selected()).unwrap_or(0).min(len - 1);
    state.select(Some(i));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::window::tests::span;

    pub(crate) fn settings() -> Settings {
        Settings {
            window: Duration::from_secs(60),
            refresh: Duration::from_secs(1),
            filter: Filter::default(),
            sort: OpColumn::Rate,
            pids: vec![4242],
            exporting: String::new(),
        }
    }

    fn traced(name: &str, trace: u8, ms: f64, code: i64) -> crate::spans::SpanRecord {
        let mut s = span("svc", name, ms, code);
        s.trace_id = TraceId::from_bytes([trace; 16]);
        s
    }

    #[test]
    fn selection_follows_its_item_across_refreshes() {
        let t0 = Instant::now();
        let mut app = App::new(settings(), LogLines::default(), t0);
        app.take(FeedMessage::Spans(
            vec![traced("GET /a", 1, 1.0, 200), traced("GET /b", 2, 1.0, 200)],
            t0,
        ));
        app.refresh(t0);
        assert_eq!(app.operations.len(), 2);
        app.op_state.select(Some(1));
        let chosen = app.selected_operation().unwrap().operation.name.clone();
        // The other operation overtakes the chosen one; the selection moves with it.
        let more: Vec<_> = (0..5)
            .map(|i| {
                traced(
                    if chosen == "GET /a" {
                        "GET /b"
                    } else {
                        "GET /a"
                    },
                    10 + i,
                    1.0,
                    200,
                )
            })
            .collect();
        app.take(FeedMessage::Spans(more, t0));
        app.refresh(t0 + Duration::from_secs(1));
        assert_eq!(app.selected_operation().unwrap().operation.name, chosen);
    }

    #[test]
    fn the_trace_list_follows_the_newest_from_the_top_and_stays_put_elsewhere() {
        let t0 = Instant::now();
        let mut app = App::new(settings(), LogLines::default(), t0);
        let at = |trace: u8, secs: u64| {
            let mut s = traced("GET /a", trace, 1.0, 200);
            s.start += Duration::from_secs(secs);
            s.end += Duration::from_secs(secs);
            s
        };
        app.take(FeedMessage::Spans(vec![at(1, 1), at(2, 2)], t0));
        app.refresh(t0);
        assert_eq!(
            app.selected_trace().unwrap().id,
            TraceId::from_bytes([2; 16])
        );
        app.take(FeedMessage::Spans(vec![at(3, 3)], t0));
        app.refresh(t0 + Duration::from_secs(1));
        assert_eq!(
            app.selected_trace().unwrap().id,
            TraceId::from_bytes([3; 16]),
            "at the top: the newest"
        );
        app.trace_state.select(Some(1));
        app.take(FeedMessage::Spans(vec![at(4, 4)], t0));
        app.refresh(t0 + Duration::from_secs(2));
        assert_eq!(
            app.selected_trace().unwrap().id,
            TraceId::from_bytes([2; 16]),
            "below the top: the same trace"
        );
        assert_eq!(app.trace_state.selected(), Some(2));
    }

    #[test]
    fn a_paused_view_keeps_its_rows_but_counts_new_spans() {
        let t0 = Instant::now();
        let mut app = App::new(settings(), LogLines::default(), t0);
        app.take(FeedMessage::Spans(vec![traced("GET /a", 1, 1.0, 200)], t0));
        app.refresh(t0);
        app.toggle_pause(t0);
        let later = t0 + Duration::from_millis(500);
        app.take(FeedMessage::Spans(
            vec![traced("GET /b", 2, 1.0, 200)],
            later,
        ));
        app.refresh(t0 + Duration::from_secs(1));
        assert_eq!(app.operations.len(), 1);
        assert_eq!(app.traces.len(), 1);
        // Filters still apply to the frozen rows.
        app.set_filter("route=/b".parse().unwrap(), t0);
        assert!(app.operations.is_empty() && app.traces.is_empty());
        app.set_filter(Filter::default(), t0);
        app.toggle_pause(t0 + Duration::from_secs(1));
        assert_eq!(app.operations.len(), 2);
        assert_eq!(app.model.total(), 2);
    }

    #[test]
    fn an_open_trace_picks_up_late_spans() {
        let t0 = Instant::now();
        let mut app = App::new(settings(), LogLines::default(), t0);
        app.take(FeedMessage::Spans(vec![traced("GET /a", 1, 1.0, 200)], t0));
        app.refresh(t0);
        app.open_selected_trace();
        let mut child = traced("GET /b", 1, 1.0, 200);
        child.span_id = SpanId::from_bytes([3; 8]);
        child.parent_span_id = SpanId::from_bytes([2; 8]);
        app.take(FeedMessage::Spans(vec![child], t0));
        app.refresh(t0 + Duration::from_secs(1));
        let rows = &app.detail.as_ref().unwrap().rows;
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].span.name, "GET /b");
    }
}
