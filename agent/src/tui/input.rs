//! Keys, as users of `top`, `htop` and k9s expect them: `q` quits, arrows and `j`/`k` move,
//! Enter opens, Esc goes back, `/` filters, `p` or Space pauses, `?` shows every binding.
//!
//! [`BINDINGS`] is the one list of bindings; the help box and the README are written from it.

use std::time::Instant;

use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::{
    app::{App, Focus, Overlay},
    columns::{Column, OpColumn, Sort, TraceColumn},
    filter::Filter,
};

/// Every key binding, as (keys, what they do), in the order the help box lists them.
pub const BINDINGS: &[(&str, &str)] = &[
    (
        "q  Ctrl-C",
        "quit (spans already sent are flushed to every exporter)",
    ),
    (
        "p  Space",
        "pause / resume the display (spans keep being counted)",
    ),
    ("Tab", "switch between operations and traces"),
    ("↑ ↓  j k", "move the selection"),
    ("PgUp PgDn  g G", "page up / down, first / last row"),
    (
        "Enter",
        "open the selected trace (on an operation: its traces)",
    ),
    ("Esc  ←  Backspace", "close the trace, the help or the log"),
    ("s  >  S  <", "sort by the next / previous column"),
    ("1 … 9", "sort by that column"),
    ("r", "reverse the sort order"),
    (
        "/",
        "filter: service=NAME route=TEXT status=5xx|404|error|ok min=50ms",
    ),
    ("x", "clear the filter"),
    ("l", "show the log"),
    ("?", "show this help"),
];

impl App {
    /// Acts on a terminal event.
    pub fn handle_event(&mut self, event: Event, now: Instant) {
        // Only presses: a terminal reporting releases would otherwise act twice.
        if let Event::Key(key) = event {
            if key.kind != KeyEventKind::Release {
                self.handle_key(key, now);
            }
        }
    }

    /// Acts on one key press.
    pub fn handle_key(&mut self, key: KeyEvent, now: Instant) {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = true;
            return;
        }
        if self.editing.is_some() {
            self.edit_filter(key, now);
            return;
        }
        self.message = None;
        if self.overlay.is_some() {
            match key.code {
                KeyCode::Char('q') => self.quit = true,
                KeyCode::Char('?')
                | KeyCode::Char('l')
                | KeyCode::Esc
                | KeyCode::Enter
                | KeyCode::Backspace
                | KeyCode::Left => self.overlay = None,
                _ => {}
            }
            return;
        }
        match key.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('p') | KeyCode::Char(' ') => self.toggle_pause(now),
            KeyCode::Char('?') => self.overlay = Some(Overlay::Help),
            KeyCode::Char('l') => self.overlay = Some(Overlay::Log),
            KeyCode::Char('/') => self.editing = Some(self.filter.to_string()),
            KeyCode::Char('x') => self.set_filter(Filter::default(), now),
            _ if self.detail.is_some() => self.detail_key(key),
            _ => self.main_key(key, now),
        }
    }

    fn detail_key(&mut self, key: KeyEvent) {
        let page = self.page;
        let Some(detail) = self.detail.as_mut() else {
            return;
        };
        let state = &mut detail.state;
        let len = detail.rows.len();
        match key.code {
            KeyCode::Esc | KeyCode::Backspace | KeyCode::Left | KeyCode::Char('h') => {
                self.detail = None
            }
            KeyCode::Up | KeyCode::Char('k') => move_by(state, len, -1),
            KeyCode::Down | KeyCode::Char('j') => move_by(state, len, 1),
            KeyCode::PageUp => move_by(state, len, -(page as isize)),
            KeyCode::PageDown => move_by(state, len, page as isize),
            KeyCode::Home | KeyCode::Char('g') => move_by(state, len, isize::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => move_by(state, len, isize::MAX / 2),
            _ => {}
        }
    }

    fn main_key(&mut self, key: KeyEvent, now: Instant) {
        let page = self.page as isize;
        let (state, len) = match self.focus {
            Focus::Operations => (&mut self.op_state, self.operations.len()),
            Focus::Traces => (&mut self.trace_state, self.traces.len()),
        };
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => move_by(state, len, -1),
            KeyCode::Down | KeyCode::Char('j') => move_by(state, len, 1),
            KeyCode::PageUp => move_by(state, len, -page),
            KeyCode::PageDown => move_by(state, len, page),
            KeyCode::Home | KeyCode::Char('g') => move_by(state, len, isize::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => move_by(state, len, isize::MAX / 2),
            KeyCode::Tab | KeyCode::BackTab => {
                self.focus = match self.focus {
                    Focus::Operations => Focus::Traces,
                    Focus::Traces => Focus::Operations,
                }
            }
            KeyCode::Enter => match self.focus {
                Focus::Traces => self.open_selected_trace(),
                Focus::Operations => self.drill_into_operation(now),
            },
            KeyCode::Char('s') | KeyCode::Char('>') => self.sort_step(1, now),
            KeyCode::Char('S') | KeyCode::Char('<') => self.sort_step(-1, now),
            KeyCode::Char('r') => {
                match self.focus {
                    Focus::Operations => self.op_sort.descending = !self.op_sort.descending,
                    Focus::Traces => self.trace_sort.descending = !self.trace_sort.descending,
                }
                self.recompute(now);
            }
            KeyCode::Char(c @ '1'..='9') => {
                let n = c as usize - '1' as usize;
                match self.focus {
                    Focus::Operations => {
                        if let Some(&col) = OpColumn::ALL.get(n) {
                            self.op_sort = Sort::by(col);
                        }
                    }
                    Focus::Traces => {
                        if let Some(&col) = TraceColumn::ALL.get(n) {
                            self.trace_sort = Sort::by(col);
                        }
                    }
                }
                self.recompute(now);
            }
            _ => {}
        }
    }

    fn sort_step(&mut self, n: isize, now: Instant) {
        match self.focus {
            Focus::Operations => self.op_sort = Sort::by(self.op_sort.column.step(n)),
            Focus::Traces => self.trace_sort = Sort::by(self.trace_sort.column.step(n)),
        }
        self.recompute(now);
    }

    /// Enter on an operation: show its traces (filter on its service and name).
    fn drill_into_operation(&mut self, now: Instant) {
        let Some(op) = self.selected_operation() else {
            return;
        };
        let filter = Filter {
            service: Some(op.operation.service.to_string()),
            route: Some(op.operation.name.clone()),
            ..self.filter.clone()
        };
        self.set_filter(filter, now);
        self.focus = Focus::Traces;
    }

    fn edit_filter(&mut self, key: KeyEvent, now: Instant) {
        let Some(text) = self.editing.as_mut() else {
            return;
        };
        match key.code {
            KeyCode::Esc => self.editing = None,
            KeyCode::Enter => match text.parse::<Filter>() {
                Ok(f) => {
                    self.editing = None;
                    self.set_filter(f, now);
                }
                // Keep the text so it can be corrected.
                Err(e) => self.message = Some(e.to_string()),
            },
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => text.clear(),
            KeyCode::Char(c) => {
                self.message = None;
                text.push(c);
            }
            _ => {}
        }
    }
}

fn move_by(state: &mut ratatui::widgets::TableState, len: usize, by: isize) {
    if len == 0 {
        state.select(None);
        return;
    }
    let at = state.selected().unwrap_or(0) as isize;
    let to = at.saturating_add(by).clamp(0, len as isize - 1);
    state.select(Some(to as usize));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::{app::Settings, feed::FeedMessage, logs::LogLines, window::tests::span};
    use opentelemetry::trace::TraceId;
    use std::time::Duration;

    fn press(app: &mut App, keys: &str, now: Instant) {
        for c in keys.chars() {
            let code = match c {
                '\n' => KeyCode::Enter,
                '\t' => KeyCode::Tab,
                '\u{1b}' => KeyCode::Esc,
                c => KeyCode::Char(c),
            };
            app.handle_key(KeyEvent::new(code, KeyModifiers::NONE), now);
        }
    }

    fn app() -> (App, Instant) {
        let t0 = Instant::now();
        let settings = Settings {
            window: Duration::from_secs(60),
            refresh: Duration::from_secs(1),
            filter: Filter::default(),
            sort: OpColumn::Rate,
            pids: vec![1],
            exporting: String::new(),
        };
        let mut app = App::new(settings, LogLines::default(), t0);
        let mut spans = Vec::new();
        for (i, (name, n, ms, code)) in [
            ("GET /hello", 5, 1.0, 200),
            ("GET /slow", 2, 80.0, 200),
            ("GET /error", 3, 0.5, 500),
        ]
        .into_iter()
        .enumerate()
        {
            for k in 0..n {
                let mut s = span("svc", name, ms, code);
                s.trace_id = TraceId::from_bytes([(i * 10 + k) as u8 + 1; 16]);
                spans.push(s);
            }
        }
        app.take(FeedMessage::Spans(spans, t0));
        app.refresh(t0);
        (app, t0)
    }

    fn names(app: &App) -> Vec<&str> {
        app.operations
            .iter()
            .map(|o| o.operation.name.as_str())
            .collect()
    }

    #[test]
    fn sort_keys() {
        let (mut app, t0) = app();
        assert_eq!(names(&app), ["GET /hello", "GET /error", "GET /slow"]);
        press(&mut app, "9", t0); // P99
        assert_eq!(names(&app), ["GET /slow", "GET /hello", "GET /error"]);
        press(&mut app, "r", t0);
        assert_eq!(names(&app), ["GET /error", "GET /hello", "GET /slow"]);
        press(&mut app, "s", t0); // wraps to SERVICE, then ties by name
        assert_eq!(app.op_sort.column, OpColumn::Service);
        press(&mut app, "<<", t0);
        assert_eq!(app.op_sort.column, OpColumn::P95);
    }

    #[test]
    fn filter_typing_applies_on_enter_and_errors_keep_the_text() {
        let (mut app, t0) = app();
        press(&mut app, "/status=5xx\n", t0);
        assert_eq!(names(&app), ["GET /error"]);
        assert_eq!(app.traces.len(), 3);
        press(&mut app, "/ colour=red\n", t0);
        assert!(app.message.as_deref().unwrap().contains("colour"));
        assert!(app.editing.is_some());
        press(&mut app, "\u{1b}x", t0);
        assert_eq!(app.operations.len(), 3);
        assert!(app.filter.is_empty());
    }

    #[test]
    fn enter_on_an_operation_shows_its_traces_and_enter_on_a_trace_opens_it() {
        let (mut app, t0) = app();
        press(&mut app, "j\n", t0);
        assert_eq!(app.focus, Focus::Traces);
        assert_eq!(app.traces.len(), 3, "the three GET /error traces");
        press(&mut app, "\n", t0);
        let detail = app.detail.as_ref().unwrap();
        assert_eq!(detail.rows[0].span.name, "GET /error");
        press(&mut app, "\u{1b}", t0);
        assert!(app.detail.is_none());
        press(&mut app, "q", t0);
        assert!(app.quit_requested());
    }
}
