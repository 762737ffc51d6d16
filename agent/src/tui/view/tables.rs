//! The operations table and the recent traces list.

use ratatui::{
    layout::{Constraint, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState},
    Frame,
};

use super::{accent, dim, error};
use crate::tui::{
    app::{App, Focus},
    columns::{Column, OpColumn, Sort, TraceColumn},
    filter::is_error,
    format,
};

fn header_row<C: Column>(sort: Sort<C>) -> Row<'static> {
    Row::new(C::ALL.iter().map(|&c| {
        let mut title = c.title().to_string();
        let mut style = Style::new().add_modifier(Modifier::BOLD);
        if c == sort.column {
            title.push_str(sort.arrow());
            style = style.add_modifier(Modifier::UNDERLINED);
        }
        let line = Line::from(title).style(style);
        Cell::from(if c.right() {
            line.right_aligned()
        } else {
            line
        })
    }))
}

fn cell<C: Column>(column: C, text: String, style: Style) -> Cell<'static> {
    let line = Line::from(Span::styled(text, style));
    Cell::from(if column.right() {
        line.right_aligned()
    } else {
        line
    })
}

fn block(title: String, focused: bool) -> Block<'static> {
    let style = if focused { accent() } else { Style::new() };
    Block::new()
        .borders(Borders::TOP)
        .title(Span::styled(title, style))
        .border_style(if focused { accent() } else { dim() })
}

fn highlight(focused: bool) -> Style {
    if focused {
        // Explicit colours rather than reversed ones: a dim or red cell stays readable.
        Style::new()
            .fg(Color::Black)
            .bg(Color::Cyan)
            .add_modifier(Modifier::BOLD)
    } else {
        Style::new().add_modifier(Modifier::BOLD)
    }
}

fn widths<C: Column>() -> Vec<Constraint> {
    C::ALL.iter().map(|c| c.width()).collect()
}

fn empty(frame: &mut Frame, area: Rect, block: Block<'static>, text: &str) {
    frame.render_widget(
        Paragraph::new(Line::styled(text.to_string(), dim())).block(block),
        area,
    );
}

/// The operations table.
pub(super) fn operations(frame: &mut Frame, area: Rect, app: &mut App) {
    let focused = app.focus == Focus::Operations && app.detail.is_none();
    let title = format!(
        " Operations ({}) · last {}s · sorted by {} ",
        app.operations.len(),
        app.model.window().as_secs(),
        app.op_sort.column.title()
    );
    let block = block(title, focused);
    if app.operations.is_empty() {
        let text = if app.model.total() == 0 {
            " waiting for spans…"
        } else {
            " no operation matches the filter in this window"
        };
        empty(frame, area, block, text);
        return;
    }
    let rows = app.operations.iter().map(|o| {
        let err_style = if o.errors > 0 { error() } else { Style::new() };
        Row::new(OpColumn::ALL.iter().map(|&c| {
            let (text, style) = match c {
                OpColumn::Service => (o.operation.service.to_string(), Style::new()),
                OpColumn::Kind => (o.operation.kind.to_string(), dim()),
                OpColumn::Operation => (o.operation.name.clone(), Style::new()),
                OpColumn::Count => (o.count.to_string(), Style::new()),
                OpColumn::Rate => (format::rate(o.rate), Style::new()),
                OpColumn::Errors => (o.error_percent(), err_style),
                OpColumn::P50 => (format::latency_us(o.p50_us), Style::new()),
                OpColumn::P95 => (format::latency_us(o.p95_us), Style::new()),
                OpColumn::P99 => (format::latency_us(o.p99_us), Style::new()),
            };
            cell(c, text, style)
        }))
    });
    let table = Table::new(rows, widths::<OpColumn>())
        .header(header_row(app.op_sort))
        .column_spacing(1)
        .row_highlight_style(highlight(focused))
        .block(block);
    frame.render_stateful_widget(table, area, &mut app.op_state);
}

/// The recent traces.
pub(super) fn traces(frame: &mut Frame, area: Rect, app: &mut App) {
    let focused = app.focus == Focus::Traces && app.detail.is_none();
    let title = format!(
        " Recent traces ({}) · sorted by {} · Enter opens ",
        app.traces.len(),
        app.trace_sort.column.title()
    );
    let block = block(title, focused);
    if app.traces.is_empty() {
        let text = if app.model.total() == 0 {
            " waiting for spans…"
        } else {
            " no trace matches the filter"
        };
        empty(frame, area, block, text);
        return;
    }
    // Only the rows that can be seen are formatted: thousands of traces may be held.
    let visible = area.height.saturating_sub(2) as usize;
    let selected = app.trace_state.selected().unwrap_or(0);
    let mut offset = app
        .trace_state
        .offset()
        .min(app.traces.len().saturating_sub(1));
    if selected < offset {
        offset = selected;
    } else if selected >= offset + visible.max(1) {
        offset = selected + 1 - visible.max(1);
    }
    let end = (offset + visible).min(app.traces.len());
    let rows = app.traces[offset..end].iter().map(|t| {
        let root = t.root();
        let status = t.status_code();
        let failed = root.is_some_and(|s| is_error(s));
        TraceColumn::ALL.iter().map(move |&c| {
            let (text, style) = match c {
                TraceColumn::Time => (format::clock(t.start()), dim()),
                TraceColumn::Trace => (t.id.to_string()[..8].to_string(), dim()),
                TraceColumn::Root => {
                    let mut name = root.map(|s| s.name.clone()).unwrap_or_default();
                    if t.continues_remote_parent() {
                        name.push_str(" ↖");
                    }
                    (name, Style::new())
                }
                TraceColumn::Services => (t.services().join(","), Style::new()),
                TraceColumn::Spans => (t.spans.len().to_string(), Style::new()),
                TraceColumn::Duration => (format::latency(t.duration()), Style::new()),
                TraceColumn::Status => (
                    match (status, failed) {
                        (0, true) => "ERROR".into(),
                        (0, false) => "-".into(),
                        (code, _) => code.to_string(),
                    },
                    if failed || t.errors() > 0 {
                        error()
                    } else {
                        Style::new()
                    },
                ),
            };
            cell(c, text, style)
        })
    });
    let rows: Vec<Row> = rows.map(Row::new).collect();
    let mut state = TableState::new().with_selected(Some(selected - offset));
    let table = Table::new(rows, widths::<TraceColumn>())
        .header(header_row(app.trace_sort))
        .column_spacing(1)
        .row_highlight_style(highlight(focused))
        .block(block);
    frame.render_stateful_widget(table, area, &mut state);
    *app.trace_state.offset_mut() = offset;
}
