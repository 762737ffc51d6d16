//! A readable tree per finished trace, for a terminal or a log.
//!
//! Spans of one trace arrive over time (children before parents, since parents end last).
//! A trace is printed once it has a local root and has been quiet for a short while, so the
//! tree is whole; whatever is left is printed at shutdown.

use std::{
    collections::HashMap,
    fmt::Write as _,
    io::Write,
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use opentelemetry::trace::{SpanId, SpanKind, Status, TraceId};

use super::{ExportError, Exporter};
use crate::spans::SpanRecord;

/// How long a trace must be quiet before it is printed.
const QUIET: Duration = Duration::from_millis(300);

struct Pending {
    spans: Vec<SpanRecord>,
    last_seen: Instant,
}

/// Prints traces as trees.
pub struct ConsoleExporter {
    out: Box<dyn Write + Send>,
    pending: HashMap<TraceId, Pending>,
}

impl ConsoleExporter {
    /// Prints to standard output.
    pub fn stdout() -> Self {
        Self::new(Box::new(std::io::stdout()))
    }

    /// Prints to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out,
            pending: HashMap::new(),
        }
    }

    fn print_ready(&mut self, force: bool) {
        let now = Instant::now();
        let mut ready: Vec<TraceId> = self
            .pending
            .iter()
            .filter(|(_, p)| force || now.duration_since(p.last_seen) >= QUIET)
            .map(|(id, _)| *id)
            .collect();
        ready.sort_by_key(|id| self.pending[id].spans.iter().map(|s| s.start).min());
        for id in ready {
            if let Some(p) = self.pending.remove(&id) {
                let text = render_trace(id, p.spans);
                // A closed pipe must not stop tracing; the other exporters still run.
                let _ = self.out.write_all(text.as_bytes());
            }
        }
        let _ = self.out.flush();
    }
}

fn kind_label(kind: &SpanKind) -> &'static str {
    match kind {
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
        SpanKind::Internal => "internal",
    }
}

fn status_text(s: &SpanRecord) -> String {
    let code = s
        .attribute("http.response.status_code")
        .or_else(|| s.attribute("rpc.grpc.status_code"))
        .map(|v| v.as_str().into_owned())
        .unwrap_or_else(|| "-".into());
    match s.status {
        Status::Error { .. } => format!("{code} ERROR"),
        _ => code,
    }
}

/// What the span touched, beyond its name: the path of a server request, the URL of a call.
fn detail(s: &SpanRecord) -> String {
    s.attribute("url.full")
        .or_else(|| s.attribute("url.path"))
        .map(|v| v.as_str().into_owned())
        .unwrap_or_default()
}

fn format_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        format!("{ms:.2} ms")
    }
}

/// Renders one trace as an indented tree, children ordered by start time.
pub fn render_trace(trace_id: TraceId, mut spans: Vec<SpanRecord>) -> String {
    spans.sort_by_key(|s| s.start);
    let ids: HashMap<SpanId, usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id, i))
        .collect();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        match ids.get(&s.parent_span_id) {
            Some(&p) if p != i => children.entry(p).or_default().push(i),
            _ => roots.push(i),
        }
    }
    let mut text = String::new();
    let remote = roots
        .first()
        .map(|&r| spans[r].parent_is_remote)
        .unwrap_or(false);
    let _ = writeln!(
        text,
        "trace {trace_id}  ({} span{}{})",
        spans.len(),
        if spans.len() == 1 { "" } else { "s" },
        if remote {
            ", continues a remote parent"
        } else {
            ""
        }
    );
    fn walk(
        text: &mut String,
        spans: &[SpanRecord],
        children: &HashMap<usize, Vec<usize>>,
        i: usize,
        prefix: &str,
        last: bool,
    ) {
        let s = &spans[i];
        let branch = if last { "└─ " } else { "├─ " };
        let label = format!("{prefix}{branch}{}", s.name);
        let line = format!(
            "{label:<40} {:<6} {:>10}  {:<10} {:<24} {}",
            kind_label(&s.kind),
            format_duration(s.duration()),
            status_text(s),
            format!("{}[{}]", s.resource.service_name, s.resource.pid),
            detail(s),
        );
        text.push_str(line.trim_end());
        text.push('\n');
        let kids = children.get(&i).cloned().unwrap_or_default();
        let next_prefix = format!("{prefix}{}", if last { "   " } else { "│  " });
        for (k, &c) in kids.iter().enumerate() {
            walk(text, spans, children, c, &next_prefix, k + 1 == kids.len());
        }
    }
    for (k, &r) in roots.iter().enumerate() {
        walk(&mut text, &spans, &children, r, "", k + 1 == roots.len());
    }
    text
}

impl Exporter for ConsoleExporter {
    fn name(&self) -> String {
        "console".into()
    }

    fn export<'a>(&'a mut self, spans: &'a [SpanRecord]) -> BoxFuture<'a, Result<(), ExportError>> {
        let now = Instant::now();
        for s in spans {
            let p = self.pending.entry(s.trace_id).or_insert_with(|| Pending {
                spans: Vec::new(),
                last_seen: now,
            });
            p.spans.push(s.clone());
            p.last_seen = now;
        }
        Box::pin(async { Ok(()) })
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<(), ExportError>> {
        self.print_ready(true);
        Box::pin(async { Ok(()) })
    }

    fn tick(&mut self) {
        self.print_ready(false);
    }

    fn needs_tick(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        events::tests::server_event,
        spans::{http::server_span, Clock, ProcessResource},
    };
    use std::{path::Path, sync::Arc};

    #[test]
    fn renders_parent_and_child() {
        let resource = Arc::new(ProcessResource::from_parts(
            4242,
            Path::new("/bin/svc"),
            b"",
            b"",
            None,
            &[],
        ));
        let clock = Clock::with_offset_ns(0);
        let root = server_span(&server_event("GET", "/a", 200), &clock, resource.clone());
        let mut child_event = server_event("GET", "/b", 503);
        child_event.trace.span_id = [9; 8];
        child_event.trace.parent_span_id = [8; 8];
        child_event.header.start_ns += 10;
        let child = server_span(&child_event, &clock, resource);
        let text = render_trace(root.trace_id, vec![child, root]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("trace 07070707070707070707070707070707  (2 spans"));
        assert!(lines[1].starts_with("└─ GET "), "{text}");
        assert!(
            lines[1].contains("server")
                && lines[1].contains("2.50 ms")
                && lines[1].contains("svc[4242]")
        );
        assert!(lines[2].starts_with("   └─ GET "), "{text}");
        assert!(lines[2].contains("503 ERROR"), "{text}");
    }
}
