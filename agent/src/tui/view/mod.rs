//! Drawing the view. The screen, top to bottom: a header (what is traced, live or paused,
//! totals), the operations table and the recent traces (or one trace's tree), a status line
//! (the filter being typed, the filter in force, or the newest log line) and the help line,
//! which is always there.
//!
//! Every width is chosen so 80×24 shows all columns; larger terminals give the names room.

mod chrome;
mod tables;
mod waterfall;

use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::Line,
    widgets::Paragraph,
    Frame,
};

use super::app::App;

/// Smallest terminal the view draws in; below it, it says so.
pub const MIN_WIDTH: u16 = 40;
/// See [`MIN_WIDTH`].
pub const MIN_HEIGHT: u16 = 10;

pub(crate) fn accent() -> Style {
    Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD)
}

pub(crate) fn dim() -> Style {
    Style::new().fg(Color::DarkGray)
}

pub(crate) fn error() -> Style {
    Style::new().fg(Color::Red)
}

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, app: &mut App) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let text = format!(
            "spanhook top needs at least {MIN_WIDTH}×{MIN_HEIGHT} (this is {}×{}); q quits",
            area.width, area.height
        );
        frame.render_widget(
            Paragraph::new(Line::from(text)).wrap(ratatui::widgets::Wrap { trim: true }),
            area,
        );
        return;
    }
    let [header, body, status, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(4),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    chrome::header(frame, header, app);
    // Rows a page key moves: the body less a title and a header row.
    app.page = (body.height as usize / 2).saturating_sub(2).max(1);
    if app.detail.is_some() {
        app.page = body.height.saturating_sub(4).max(1) as usize / 2;
        waterfall::draw(frame, body, app);
    } else {
        let [ops, traces] =
            Layout::vertical([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(body);
        tables::operations(frame, ops, app);
        tables::traces(frame, traces, app);
    }
    chrome::status(frame, status, app);
    chrome::help_line(frame, help, app);
    if let Some(overlay) = app.overlay {
        chrome::overlay(frame, body, app, overlay);
    }
}

/// A rectangle of `width`×`height` centred in `area` (clipped to it).
pub(crate) fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::{
        app::Settings, columns::OpColumn, feed::FeedMessage, filter::Filter, logs::LogLines,
        window::tests::span,
    };
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use opentelemetry::trace::{SpanId, TraceId};
    use ratatui::{backend::TestBackend, Terminal};
    use std::time::{Duration, Instant};

    fn screen(terminal: &Terminal<TestBackend>) -> Vec<String> {
        let buf = terminal.backend().buffer();
        (0..buf.area.height)
            .map(|y| {
                (0..buf.area.width)
                    .map(|x| buf[(x, y)].symbol().to_string())
                    .collect::<String>()
            })
            .collect()
    }

    fn app_with_tree() -> (App, Instant) {
        let t0 = Instant::now();
        let settings = Settings {
            window: Duration::from_secs(60),
            refresh: Duration::from_secs(1),
            filter: Filter::default(),
            sort: OpColumn::Rate,
            pids: vec![4242, 4343],
            exporting: "file spans.jsonl".into(),
        };
        let mut app = App::new(settings, LogLines::default(), t0);
        let mut spans = Vec::new();
        for (id, parent, name, service, at, ms, code) in [
            (1u8, 0u8, "GET /items/", "checkout", 0u64, 12.0, 200),
            (2, 1, "GET /hello", "catalog", 2, 4.0, 200),
            (3, 2, "GET /error", "checkout", 3, 1.0, 500),
        ] {
            let mut s = span(service, name, ms, code);
            s.trace_id = TraceId::from_bytes([9; 16]);
            s.span_id = SpanId::from_bytes([id; 8]);
            s.parent_span_id = if parent == 0 {
                SpanId::INVALID
            } else {
                SpanId::from_bytes([parent; 8])
            };
            s.start += Duration::from_millis(at);
            s.end += Duration::from_millis(at);
            spans.push(s);
        }
        app.take(FeedMessage::Spans(spans, t0));
        app.refresh(t0);
        (app, t0)
    }

    #[test]
    fn every_column_and_the_help_line_fit_80_by_24() {
        let (mut app, _) = app_with_tree();
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
        terminal.draw(|f| draw(f, &mut app)).unwrap();
        let lines = screen(&terminal);
        let text = lines.join("\n");
        for title in [
            "SERVICE",
            "KIND",
            "OPERATION",
            "COUNT",
            "RATE/s",
            "ERR%",
            "P50",
            "P95",
            "P99",
            "START",
            "TRACE",
            "ROOT SPAN",
            "SPANS",
            "DURATION",
            "STATUS",
        ] {
            assert!(text.contains(title), "{title} missing:\n{text}");
        }
        assert!(lines[0].contains("spanhook top"), "{text}");
        assert!(
            lines[23].contains("q quit") && lines[23].contains("? help"),
            "{text}"
        );
        assert!(
            text.contains("GET /items/") && text.contains("checkout"),
            "{text}"
        );
    }

    #[test]
    fn an_open_trace_shows_its_tree_and_the_selected_span() {
        let (mut app, t0) = app_with_tree();
        app.open_trace(TraceId::from_bytes([9; 16]));
        app.handle_key(KeyEvent::new(KeyCode::Down, KeyModifiers::NONE), t0);
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
        terminal.draw(|f| draw(f, &mut app)).unwrap();
        let lines = screen(&terminal);
        let text = lines.join("\n");
        let at = |needle: &str| {
            lines
                .iter()
                .position(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("{needle} missing:\n{text}"))
        };
        assert!(at("GET /items/") < at("└─ GET /hello"), "{text}");
        assert!(at("└─ GET /hello") < at("   └─ GET /error"), "{text}");
        assert!(
            text.contains("Span GET /hello"),
            "the selected span:\n{text}"
        );
        assert!(text.contains("catalog[4242]"), "{text}");
        assert!(text.contains("█"), "bars are drawn:\n{text}");
        assert!(
            text.contains("url.path") || text.contains("http.response.status_code"),
            "{text}"
        );
        assert!(lines[23].contains("esc back"), "{text}");
    }

    #[test]
    fn a_tiny_terminal_gets_a_message_not_a_panic() {
        let (mut app, _) = app_with_tree();
        for (w, h) in [(20, 5), (40, 10), (200, 60)] {
            let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
            terminal.draw(|f| draw(f, &mut app)).unwrap();
        }
    }
}
