//! One trace: its spans as a tree (parents above children, across processes), each with a bar
//! on a time axis shared by the whole trace, and the attributes of the selected span.

use std::time::SystemTime;

use opentelemetry::trace::{SpanId, Status};
use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Paragraph, Row, Table},
    Frame,
};

use super::{accent, dim, error};
use crate::{
    spans::SpanRecord,
    tui::{app::App, filter::is_error, format},
};

/// Columns: the tree, the process, the duration, the bar.
const COLUMNS: [Constraint; 4] = [
    Constraint::Fill(3),
    Constraint::Length(16),
    Constraint::Length(7),
    Constraint::Fill(2),
];

fn offset_ns(t: SystemTime, from: SystemTime) -> f64 {
    t.duration_since(from).unwrap_or_default().as_nanos() as f64
}

/// The bar of a span from `start` to `end` on an axis of `width` cells over `[t0, t0+total]`:
/// (blank cells before, cells of bar). Every span gets at least one cell.
pub(crate) fn bar(
    start: SystemTime,
    end: SystemTime,
    t0: SystemTime,
    total_ns: f64,
    width: usize,
) -> (usize, usize) {
    if width == 0 {
        return (0, 0);
    }
    let scale = width as f64 / total_ns.max(1.0);
    let from = ((offset_ns(start, t0) * scale).floor() as usize).min(width - 1);
    let to = ((offset_ns(end, t0) * scale).ceil() as usize).clamp(from + 1, width);
    (from, to - from)
}

fn kind_colour(span: &SpanRecord) -> Color {
    if is_error(span) {
        return Color::Red;
    }
    match span.kind {
        opentelemetry::trace::SpanKind::Client => Color::Magenta,
        _ => Color::Green,
    }
}

/// Draws the open trace.
pub(super) fn draw(frame: &mut Frame, area: Rect, app: &mut App) {
    let Some(detail) = app.detail.as_mut() else {
        return;
    };
    let trace = detail.trace.clone();
    let attrs_height = (area.height / 2).clamp(3, 12);
    let [tree_area, attrs_area] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(attrs_height)]).areas(area);

    let services = trace.services().join(", ");
    let mut title = format!(
        " Trace {} · {} span{} · {} · {} ",
        trace.id,
        trace.spans.len(),
        if trace.spans.len() == 1 { "" } else { "s" },
        format::latency(trace.duration()),
        services
    );
    if trace.continues_remote_parent() {
        title.push_str("· remote parent ");
    }
    if trace.spans_not_held > 0 {
        title.push_str(&format!("· {} more spans not held ", trace.spans_not_held));
    }
    let block = Block::new()
        .borders(Borders::TOP)
        .border_style(accent())
        .title(Span::styled(title, accent()));
    let inner = block.inner(tree_area);
    // The bar column's width, to scale bars to it (the table lays out the same way).
    let cols = Layout::horizontal(COLUMNS).spacing(1).split(inner);
    let bar_width = cols[3].width as usize;
    let t0 = trace.start();
    let total_ns = offset_ns(trace.end(), t0);
    let axis_end = format::latency(trace.duration());
    let axis = format!(
        "0{}{axis_end}",
        " ".repeat(bar_width.saturating_sub(1 + axis_end.chars().count()))
    );
    let header = Row::new([
        Cell::from("SPAN"),
        Cell::from("PROCESS"),
        Cell::from(Line::from("TIME").right_aligned()),
        Cell::from(axis),
    ])
    .style(Style::new().add_modifier(Modifier::BOLD));
    let selected = detail.state.selected();
    let rows = detail.rows.iter().enumerate().map(|(i, r)| {
        let s = &r.span;
        let (before, len) = bar(s.start, s.end, t0, total_ns, bar_width);
        let colour = kind_colour(s);
        let name_style = if is_error(s) { error() } else { Style::new() };
        let row = Row::new([
            Cell::from(Line::from(vec![
                Span::styled(r.prefix.clone(), dim()),
                Span::styled(s.name.clone(), name_style),
            ])),
            Cell::from(format!("{}[{}]", s.resource.service_name, s.resource.pid)),
            Cell::from(Line::from(format::latency(s.duration())).right_aligned()),
            Cell::from(Line::from(vec![
                Span::raw(" ".repeat(before)),
                Span::styled("█".repeat(len), Style::new().fg(colour)),
            ])),
        ]);
        // The selection is the row's style, under the cells' own: the bar keeps its colour.
        if Some(i) == selected {
            row.style(
                Style::new()
                    .bg(Color::Cyan)
                    .fg(Color::Black)
                    .add_modifier(Modifier::BOLD),
            )
        } else {
            row
        }
    });
    let table = Table::new(rows, COLUMNS)
        .header(header)
        .column_spacing(1)
        .block(block);
    frame.render_stateful_widget(table, tree_area, &mut detail.state);

    let selected = detail.selected().map(|r| r.span.clone());
    let block = Block::new()
        .borders(Borders::TOP)
        .border_style(dim())
        .title(match &selected {
            Some(s) => format!(" Span {} · ↑↓ selects ", s.name),
            None => " Span ".into(),
        });
    let lines = match &selected {
        Some(s) => {
            let parent = trace.spans.iter().find(|p| p.span_id == s.parent_span_id);
            attribute_lines(s, parent.map(|p| &**p))
        }
        None => vec![],
    };
    frame.render_widget(Paragraph::new(lines).block(block), attrs_area);
}

fn pair(key: &str, value: String) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{key:<28} "), dim()),
        Span::raw(value),
    ])
}

/// What the attributes pane lists for a span: its identity, parent, timing and status, then
/// every attribute it carries.
fn attribute_lines(s: &SpanRecord, parent: Option<&SpanRecord>) -> Vec<Line<'static>> {
    let parent = match parent {
        _ if s.parent_span_id == SpanId::INVALID => "none: a root".to_string(),
        // The parent may be in another traced process: say which.
        Some(p) => format!(
            "{} · {} in {}[{}]",
            p.span_id, p.name, p.resource.service_name, p.resource.pid
        ),
        None if s.parent_is_remote => format!("{} (remote, not traced here)", s.parent_span_id),
        None => format!("{} (not seen)", s.parent_span_id),
    };
    let status = match &s.status {
        Status::Error { description } if !description.is_empty() => {
            format!("ERROR: {description}")
        }
        Status::Error { .. } => "ERROR".into(),
        Status::Ok => "OK".into(),
        Status::Unset => "unset".into(),
    };
    let mut lines = vec![
        pair(
            "service.name / process.pid",
            format!("{} / {}", s.resource.service_name, s.resource.pid),
        ),
        pair(
            "kind · duration · start",
            format!(
                "{} · {} · {}",
                format::kind(&s.kind),
                format::latency(s.duration()),
                format::clock(s.start)
            ),
        ),
        pair("span id", s.span_id.to_string()),
        pair("parent", parent),
        pair("status", status),
    ];
    for kv in &s.attributes {
        lines.push(pair(kv.key.as_str(), kv.value.as_str().into_owned()));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn bars_share_one_axis() {
        let t0 = UNIX_EPOCH + Duration::from_secs(100);
        let ms = |n| t0 + Duration::from_millis(n);
        let total = 10_000_000.0; // 10 ms
        assert_eq!(bar(ms(0), ms(10), t0, total, 20), (0, 20));
        assert_eq!(bar(ms(5), ms(10), t0, total, 20), (10, 10));
        assert_eq!(bar(ms(2), ms(3), t0, total, 20), (4, 2));
        // A span too short for a cell still shows one.
        assert_eq!(bar(ms(10), ms(10), t0, total, 20), (19, 1));
        assert_eq!(bar(ms(0), ms(1), t0, total, 0), (0, 0));
    }
}
