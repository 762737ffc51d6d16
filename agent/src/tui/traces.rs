//! Recent traces, bounded: spans grouped by trace id, the oldest trace forgotten first, and the
//! tree of a trace (parents above children, siblings by start time, across processes).
//!
//! Entries are shared (`Arc`) and copied on write, so a paused view or an open trace keeps
//! what it shows while new spans keep arriving.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
    time::{Duration, SystemTime},
};

use opentelemetry::trace::{SpanId, TraceId};

use super::filter::{is_error, status_code};
use crate::spans::SpanRecord;

/// Traces held at most.
pub const MAX_TRACES: usize = 2_000;
/// Spans held per trace at most; more are counted, not kept.
pub const MAX_SPANS_PER_TRACE: usize = 500;

/// The spans of one trace seen so far.
#[derive(Clone, Debug)]
pub struct Trace {
    /// The trace id.
    pub id: TraceId,
    /// Spans in arrival order.
    pub spans: Vec<Arc<SpanRecord>>,
    /// Spans that arrived beyond [`MAX_SPANS_PER_TRACE`].
    pub spans_not_held: u64,
}

/// One line of a trace's tree.
#[derive(Clone, Debug)]
pub struct TreeRow {
    /// Depth below the local root(s).
    pub depth: usize,
    /// The drawing before the name: `│  ├─ `.
    pub prefix: String,
    /// The span.
    pub span: Arc<SpanRecord>,
}

impl Trace {
    fn new(id: TraceId) -> Self {
        Self {
            id,
            spans: Vec::new(),
            spans_not_held: 0,
        }
    }

    /// Earliest start of any span.
    pub fn start(&self) -> SystemTime {
        self.spans
            .iter()
            .map(|s| s.start)
            .min()
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// Latest end of any span.
    pub fn end(&self) -> SystemTime {
        self.spans
            .iter()
            .map(|s| s.end)
            .max()
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// From the first start to the last end.
    pub fn duration(&self) -> Duration {
        self.end().duration_since(self.start()).unwrap_or_default()
    }

    /// The span the trace starts with here: the earliest span whose parent was not seen.
    pub fn root(&self) -> Option<&Arc<SpanRecord>> {
        let ids: HashSet<SpanId> = self.spans.iter().map(|s| s.span_id).collect();
        self.spans
            .iter()
            .filter(|s| !ids.contains(&s.parent_span_id) || s.parent_span_id == s.span_id)
            .min_by_key(|s| s.start)
            .or_else(|| self.spans.iter().min_by_key(|s| s.start))
    }

    /// Services seen in the trace, in order of first start.
    pub fn services(&self) -> Vec<&str> {
        let mut spans: Vec<&Arc<SpanRecord>> = self.spans.iter().collect();
        spans.sort_by_key(|s| s.start);
        let mut out: Vec<&str> = Vec::new();
        for s in spans {
            let name = s.resource.service_name.as_str();
            if !out.contains(&name) {
                out.push(name);
            }
        }
        out
    }

    /// Spans with status ERROR.
    pub fn errors(&self) -> usize {
        self.spans.iter().filter(|s| is_error(s)).count()
    }

    /// The root span's status code (0: none).
    pub fn status_code(&self) -> u16 {
        self.root().map(|s| status_code(s)).unwrap_or(0)
    }

    /// Whether the local root continues a parent from elsewhere (an incoming `traceparent`).
    pub fn continues_remote_parent(&self) -> bool {
        self.root().is_some_and(|s| s.parent_is_remote)
    }

    /// The tree, depth first: each span after its parent, siblings by start time. Spans whose
    /// parent was not seen are roots; a parent loop cannot hide a span.
    pub fn tree(&self) -> Vec<TreeRow> {
        let mut spans: Vec<&Arc<SpanRecord>> = self.spans.iter().collect();
        spans.sort_by(|a, b| a.start.cmp(&b.start).then(a.end.cmp(&b.end).reverse()));
        let index: HashMap<SpanId, usize> = spans
            .iter()
            .enumerate()
            .map(|(i, s)| (s.span_id, i))
            .collect();
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); spans.len()];
        let mut roots = Vec::new();
        for (i, s) in spans.iter().enumerate() {
            match index.get(&s.parent_span_id) {
                Some(&p) if p != i => children[p].push(i),
                _ => roots.push(i),
            }
        }
        let mut rows = Vec::with_capacity(spans.len());
        let mut visited = vec![false; spans.len()];
        let walk_from = |start: usize, rows: &mut Vec<TreeRow>, visited: &mut Vec<bool>| {
            // (span, depth, prefix of its children, is it the last sibling)
            let mut stack = vec![(start, 0usize, String::new(), true, true)];
            while let Some((i, depth, prefix, last, root)) = stack.pop() {
                if std::mem::replace(&mut visited[i], true) {
                    continue;
                }
                let branch = if root {
                    ""
                } else if last {
                    "└─ "
                } else {
                    "├─ "
                };
                rows.push(TreeRow {
                    depth,
                    prefix: format!("{prefix}{branch}"),
                    span: spans[i].clone(),
                });
                let child_prefix = if root {
                    String::new()
                } else {
                    format!("{prefix}{}", if last { "   " } else { "│  " })
                };
                let kids = &children[i];
                for (k, &c) in kids.iter().enumerate().rev() {
                    stack.push((
                        c,
                        depth + 1,
                        child_prefix.clone(),
                        k + 1 == kids.len(),
                        false,
                    ));
                }
            }
        };
        for &r in &roots {
            walk_from(r, &mut rows, &mut visited);
        }
        for i in 0..spans.len() {
            if !visited[i] {
                walk_from(i, &mut rows, &mut visited);
            }
        }
        rows
    }
}

/// The recent traces.
pub struct TraceStore {
    cap: usize,
    traces: HashMap<TraceId, Arc<Trace>>,
    // First arrival order; a trace leaves when it is the oldest and the store is full.
    order: VecDeque<TraceId>,
    evicted: u64,
}

impl TraceStore {
    /// A store of at most `cap` traces.
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            traces: HashMap::new(),
            order: VecDeque::new(),
            evicted: 0,
        }
    }

    /// Adds a span to its trace.
    pub fn add(&mut self, span: Arc<SpanRecord>) {
        let id = span.trace_id;
        let trace = match self.traces.get_mut(&id) {
            Some(t) => t,
            None => {
                if self.traces.len() >= self.cap {
                    if let Some(old) = self.order.pop_front() {
                        self.traces.remove(&old);
                        self.evicted += 1;
                    }
                }
                self.order.push_back(id);
                self.traces
                    .entry(id)
                    .or_insert_with(|| Arc::new(Trace::new(id)))
            }
        };
        // Copies the trace only when a paused view or an open tree still holds it.
        let trace = Arc::make_mut(trace);
        if trace.spans.len() < MAX_SPANS_PER_TRACE {
            trace.spans.push(span);
        } else {
            trace.spans_not_held += 1;
        }
    }

    /// The trace `id`, if still held.
    pub fn get(&self, id: &TraceId) -> Option<Arc<Trace>> {
        self.traces.get(id).cloned()
    }

    /// Every trace held, in no particular order.
    pub fn all(&self) -> Vec<Arc<Trace>> {
        self.traces.values().cloned().collect()
    }

    /// Traces held.
    pub fn len(&self) -> usize {
        self.traces.len()
    }

    /// Whether no trace is held.
    pub fn is_empty(&self) -> bool {
        self.traces.is_empty()
    }

    /// Traces forgotten to stay within the cap.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::window::tests::span;

    fn child(
        trace: u8,
        id: u8,
        parent: u8,
        name: &str,
        service: &str,
        start_ms: u64,
    ) -> Arc<SpanRecord> {
        let mut s = span(service, name, 2.0, 200);
        s.trace_id = TraceId::from_bytes([trace; 16]);
        s.span_id = SpanId::from_bytes([id; 8]);
        s.parent_span_id = if parent == 0 {
            SpanId::INVALID
        } else {
            SpanId::from_bytes([parent; 8])
        };
        s.start += Duration::from_millis(start_ms);
        s.end += Duration::from_millis(start_ms);
        Arc::new(s)
    }

    #[test]
    fn tree_puts_parents_first_and_siblings_by_start() {
        let mut store = TraceStore::new(10);
        // Children arrive before their parents, as they end first.
        store.add(child(1, 4, 2, "GET /error", "checkout", 3));
        store.add(child(1, 3, 1, "GET /slow", "catalog", 5));
        store.add(child(1, 2, 1, "GET /hello", "catalog", 1));
        store.add(child(1, 1, 0, "GET /items/", "checkout", 0));
        let trace = store.get(&TraceId::from_bytes([1; 16])).unwrap();
        let rows = trace.tree();
        let lines: Vec<String> = rows
            .iter()
            .map(|r| format!("{}{}", r.prefix, r.span.name))
            .collect();
        assert_eq!(
            lines,
            [
                "GET /items/",
                "├─ GET /hello",
                "│  └─ GET /error",
                "└─ GET /slow",
            ]
        );
        assert_eq!(
            rows.iter().map(|r| r.depth).collect::<Vec<_>>(),
            [0, 1, 2, 1]
        );
        assert_eq!(trace.root().unwrap().name, "GET /items/");
        assert_eq!(trace.services(), ["checkout", "catalog"]);
        assert_eq!(trace.duration(), Duration::from_millis(7));
    }

    #[test]
    fn orphans_and_loops_still_show() {
        let mut store = TraceStore::new(10);
        store.add(child(2, 1, 9, "orphan", "a", 0));
        store.add(child(2, 5, 6, "loop a", "a", 1));
        store.add(child(2, 6, 5, "loop b", "a", 2));
        let rows = store.get(&TraceId::from_bytes([2; 16])).unwrap().tree();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].span.name, "orphan");
    }

    #[test]
    fn the_oldest_trace_leaves_first_and_held_copies_survive() {
        let mut store = TraceStore::new(2);
        store.add(child(1, 1, 0, "one", "a", 0));
        let held = store.get(&TraceId::from_bytes([1; 16])).unwrap();
        store.add(child(1, 2, 1, "one-child", "a", 1));
        assert_eq!(held.spans.len(), 1, "a held copy does not change");
        store.add(child(2, 1, 0, "two", "a", 0));
        store.add(child(3, 1, 0, "three", "a", 0));
        assert_eq!(store.len(), 2);
        assert_eq!(store.evicted(), 1);
        assert!(store.get(&TraceId::from_bytes([1; 16])).is_none());
        assert!(store.get(&TraceId::from_bytes([3; 16])).is_some());
    }
}
