//! The lines around the panes: header, status line, help line, and the help and log boxes.

use ratatui::{
    layout::Rect,
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Clear, Paragraph},
    Frame,
};

use super::{accent, centered, dim, error};
use crate::tui::{
    app::{App, Overlay},
    format,
    input::BINDINGS,
};

/// `spanhook top · pid 4242,4343 · LIVE · 1,234 spans · 41.2/s`.
pub(super) fn header(frame: &mut Frame, area: Rect, app: &App) {
    let pids: Vec<String> = app.settings.pids.iter().map(u32::to_string).collect();
    let state = match (&app.paused, app.live) {
        (Some(_), _) => Span::styled(
            " PAUSED ",
            Style::new()
                .fg(Color::Black)
                .bg(Color::Yellow)
                .add_modifier(Modifier::BOLD),
        ),
        (None, true) => Span::styled(" LIVE ", Style::new().fg(Color::Black).bg(Color::Green)),
        (None, false) => Span::styled(" attaching… ", Style::new().fg(Color::Yellow)),
    };
    let total = app.model.total();
    let mut spans = vec![
        Span::styled("spanhook top", accent()),
        Span::raw(format!(
            " · pid {} ",
            if pids.is_empty() {
                "-".into()
            } else {
                pids.join(",")
            }
        )),
        state,
        Span::raw(format!(
            " {} span{} · {}/s",
            format::count(total),
            if total == 1 { "" } else { "s" },
            format::rate(app.rate)
        )),
    ];
    if app.dropped > 0 {
        spans.push(Span::styled(
            format!(" · {} not shown (view behind)", format::count(app.dropped)),
            error(),
        ));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// The filter being typed, a message, the filter in force, or the newest log line.
pub(super) fn status(frame: &mut Frame, area: Rect, app: &App) {
    let line = if let Some(text) = &app.editing {
        let mut spans = vec![
            Span::styled("filter> ", accent()),
            Span::raw(text.clone()),
            Span::styled("█", accent()),
        ];
        if let Some(m) = &app.message {
            spans.push(Span::styled(format!("  {m}"), error()));
        }
        Line::from(spans)
    } else if let Some(m) = &app.message {
        Line::styled(m.clone(), error())
    } else if !app.filter.is_empty() {
        Line::from(vec![
            Span::styled("filter: ", accent()),
            Span::raw(app.filter.to_string()),
            Span::styled("  (x clears, / edits)", dim()),
        ])
    } else if let Some(log) = app.logs.last() {
        Line::styled(log, dim())
    } else if !app.settings.exporting.is_empty() {
        Line::styled(
            format!("also exporting to {}", app.settings.exporting),
            dim(),
        )
    } else {
        Line::default()
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// The keys that matter where the user is, always on the last line.
pub(super) fn help_line(frame: &mut Frame, area: Rect, app: &App) {
    let keys: &[(&str, &str)] = if app.editing.is_some() {
        &[
            ("⏎", "apply"),
            ("esc", "cancel"),
            ("", "service= route= status=5xx min=50ms"),
        ]
    } else if app.overlay.is_some() {
        &[("esc", "close"), ("q", "quit")]
    } else if app.detail.is_some() {
        &[
            ("q", "quit"),
            ("esc", "back"),
            ("↑↓", "span"),
            (
                "p",
                if app.paused.is_some() {
                    "resume"
                } else {
                    "pause"
                },
            ),
            ("l", "log"),
            ("?", "help"),
        ]
    } else {
        &[
            ("q", "quit"),
            (
                "p",
                if app.paused.is_some() {
                    "resume"
                } else {
                    "pause"
                },
            ),
            ("tab", "pane"),
            ("↑↓", "move"),
            ("⏎", "open"),
            ("s/r", "sort"),
            ("/", "filter"),
            ("x", "clear"),
            ("?", "help"),
        ]
    };
    let mut spans = Vec::new();
    for (key, what) in keys {
        if !key.is_empty() {
            spans.push(Span::styled(
                *key,
                accent().add_modifier(Modifier::REVERSED),
            ));
            spans.push(Span::raw(" "));
        }
        spans.push(Span::raw(format!("{what}  ")));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// The help or log box over the panes.
pub(super) fn overlay(frame: &mut Frame, area: Rect, app: &App, overlay: Overlay) {
    let (title, lines): (&str, Vec<Line>) = match overlay {
        Overlay::Help => (
            " Keys ",
            BINDINGS
                .iter()
                .map(|(k, what)| {
                    Line::from(vec![
                        Span::styled(format!(" {k:<18}"), accent()),
                        Span::raw(what.to_string()),
                    ])
                })
                .collect(),
        ),
        Overlay::Log => {
            let rows = area.height.saturating_sub(2) as usize;
            let mut lines: Vec<Line> = app
                .logs
                .tail(rows)
                .into_iter()
                .map(|l| Line::raw(format!(" {l}")))
                .collect();
            if lines.is_empty() {
                lines.push(Line::styled(" nothing logged since the view opened", dim()));
            }
            (" Log (newest last) ", lines)
        }
    };
    let width = match overlay {
        Overlay::Help => 80,
        Overlay::Log => area.width,
    };
    let height = match overlay {
        Overlay::Help => lines.len() as u16 + 2,
        Overlay::Log => area.height,
    };
    let rect = centered(area, width, height);
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::new()
                .borders(Borders::ALL)
                .border_style(accent())
                .title(Span::styled(title, accent())),
        ),
        rect,
    );
}
