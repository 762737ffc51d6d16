//! The view without a terminal (standard output is a pipe or a file, or `--batch`), like
//! `top -b`: every interval, and once more when tracing stops, a block of plain text with the
//! operations table over the sliding window, sorted and filtered as asked. Log lines stay on
//! stderr.
//!
//! ```text
//! spanhook top 15:04:05 · pid 4242 · window 60s · 1,234 spans seen · 20.6/s
//! SERVICE      KIND    OPERATION        COUNT   RATE/s   ERR%     P50     P95     P99
//! checkout     server  GET /hello         912     15.2    0.0   812µs  1.94ms  3.10ms
//! checkout     server  GET /error          12      0.2  100.0   402µs   690µs   690µs
//! ```

use std::{
    io::{self, Write},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant, SystemTime},
};

use super::{
    app::Settings,
    columns::{sort_operations, Column, OpColumn, Sort},
    feed::{FeedMessage, FeedReceiver},
    format,
    model::Model,
};

/// Writes a summary to `out` every `settings.refresh` until `stop` is set, then a last one.
pub fn run(
    out: &mut dyn Write,
    feed: FeedReceiver,
    settings: Settings,
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut model = Model::new(settings.window, Instant::now());
    let mut next = Instant::now() + settings.refresh;
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let wait = next
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(50));
        // Once stopping, the pipeline has flushed: take everything, then print the last table.
        let message = if stopping {
            feed.try_recv()
        } else {
            feed.recv_timeout(wait)
        };
        match message {
            Some(FeedMessage::Spans(spans, at)) => {
                model.ingest(spans, at);
                continue;
            }
            Some(FeedMessage::Started) => continue,
            None => {}
        }
        let now = Instant::now();
        if stopping || now >= next {
            model.expire(now);
            out.write_all(summary(&model, &settings, now, SystemTime::now()).as_bytes())?;
            out.flush()?;
            next = now + settings.refresh;
        }
        if stopping {
            return Ok(());
        }
    }
}

/// One block of plain text: a header line, the table, a blank line.
pub fn summary(model: &Model, settings: &Settings, now: Instant, wall: SystemTime) -> String {
    let mut rows = model.operations(&settings.filter, now);
    sort_operations(&mut rows, Sort::by(settings.sort));
    let rate = model.rate(now);
    let pids: Vec<String> = settings.pids.iter().map(u32::to_string).collect();
    let mut text = format!(
        "spanhook top {} · pid {} · window {}s · {} spans seen · {}/s",
        &format::clock(wall)[..8],
        pids.join(","),
        model.window().as_secs(),
        format::count(model.total()),
        format::rate(rate),
    );
    if !settings.filter.is_empty() {
        text.push_str(&format!(" · filter {}", settings.filter));
    }
    text.push('\n');
    let service_w = rows
        .iter()
        .map(|r| r.operation.service.chars().count())
        .chain([10])
        .max()
        .unwrap_or(10)
        .min(40);
    let name_w = rows
        .iter()
        .map(|r| r.operation.name.chars().count())
        .chain([16])
        .max()
        .unwrap_or(16)
        .min(80);
    let cells = |values: [String; 9]| -> String {
        let mut line = format!(
            "{:<service_w$}  {:<6}  {:<name_w$}",
            values[0], values[1], values[2]
        );
        for v in &values[3..] {
            line.push_str(&format!(" {v:>7}"));
        }
        line.trim_end().to_string() + "\n"
    };
    text.push_str(&cells(std::array::from_fn(|i| {
        OpColumn::ALL[i].title().to_string()
    })));
    if rows.is_empty() {
        text.push_str(if model.total() == 0 {
            "(no spans yet)\n"
        } else {
            "(no operation matches in this window)\n"
        });
    }
    for r in &rows {
        text.push_str(&cells([
            r.operation.service.to_string(),
            r.operation.kind.to_string(),
            r.operation.name.clone(),
            r.count.to_string(),
            format::rate(r.rate),
            r.error_percent(),
            format::latency_us(r.p50_us),
            format::latency_us(r.p95_us),
            format::latency_us(r.p99_us),
        ]));
    }
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::{feed::feed, filter::Filter, window::tests::span};
    use std::sync::Arc;

    fn settings(filter: &str) -> Settings {
        Settings {
            window: Duration::from_secs(60),
            refresh: Duration::from_millis(20),
            filter: filter.parse::<Filter>().unwrap(),
            sort: OpColumn::Count,
            pids: vec![4242],
            exporting: String::new(),
        }
    }

    #[test]
    fn prints_the_table_sorted_and_filtered() {
        let now = Instant::now();
        let mut model = Model::new(Duration::from_secs(60), now);
        let mut spans = vec![span("checkout", "GET /error", 1.0, 500)];
        spans.extend((0..3).map(|_| span("checkout", "GET /hello", 2.0, 200)));
        model.ingest(spans, now);
        let text = summary(&model, &settings(""), now, SystemTime::now());
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("spanhook top "), "{text}");
        assert!(lines[0].contains("4 spans seen"), "{text}");
        assert!(
            lines[1].starts_with("SERVICE") && lines[1].ends_with("P99"),
            "{text}"
        );
        assert!(
            lines[2].contains("GET /hello") && lines[2].contains(" 3 "),
            "{text}"
        );
        assert!(
            lines[3].contains("GET /error") && lines[3].contains("100.0"),
            "{text}"
        );
        let text = summary(&model, &settings("status=5xx"), now, SystemTime::now());
        assert!(
            !text.contains("GET /hello") && text.contains("GET /error"),
            "{text}"
        );
        assert!(text.lines().next().unwrap().contains("filter status=5xx"));
    }

    #[test]
    fn prints_periodically_and_once_more_at_the_end() {
        let (mut tx, rx) = feed();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let printer = std::thread::spawn(move || {
            let mut out = Vec::new();
            run(&mut out, rx, settings(""), &flag).unwrap();
            String::from_utf8(out).unwrap()
        });
        tx.push(&[span("svc", "GET /a", 1.0, 200)]);
        std::thread::sleep(Duration::from_millis(100));
        tx.push(&[span("svc", "GET /b", 1.0, 200)]);
        stop.store(true, Ordering::SeqCst);
        let text = printer.join().unwrap();
        assert!(text.matches("spanhook top").count() >= 2, "{text}");
        let last = text.rsplit("spanhook top").next().unwrap();
        assert!(last.contains("GET /a") && last.contains("GET /b"), "{text}");
    }
}
