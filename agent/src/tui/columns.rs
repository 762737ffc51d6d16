//! The columns of both tables: titles, widths for an 80-column terminal, and how each sorts.
//!
//! Numbers sort largest first and text A→Z when a column is chosen (what `top` users expect:
//! the busiest or slowest on top); `r` reverses. Ties fall back to service and name so rows do
//! not jump around between refreshes.

use std::{cmp::Ordering, str::FromStr, sync::Arc};

use ratatui::layout::Constraint;

use super::{traces::Trace, window::OperationStats};

/// A column of the operations table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpColumn {
    /// `service.name`.
    Service,
    /// Span kind.
    Kind,
    /// Span name (method and route).
    Operation,
    /// Spans in the window.
    Count,
    /// Spans per second.
    Rate,
    /// Share of spans with status ERROR.
    Errors,
    /// Median latency.
    P50,
    /// 95th percentile latency.
    P95,
    /// 99th percentile latency.
    P99,
}

/// A column of the trace list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceColumn {
    /// When the trace started.
    Time,
    /// Trace id.
    Trace,
    /// The root span's name.
    Root,
    /// Services the trace went through.
    Services,
    /// Spans held.
    Spans,
    /// First start to last end.
    Duration,
    /// The root span's status.
    Status,
}

/// What both tables' columns offer.
pub trait Column: Copy + PartialEq + 'static {
    /// Every column, left to right.
    const ALL: &'static [Self];
    /// The header.
    fn title(self) -> &'static str;
    /// Its width.
    fn width(self) -> Constraint;
    /// Whether values are numbers (sorted largest first when chosen).
    fn numeric(self) -> bool;
    /// Whether the text is right-aligned.
    fn right(self) -> bool {
        self.numeric()
    }
    /// The column `n` places to the right (negative: left), wrapping around.
    fn step(self, n: isize) -> Self {
        let all = Self::ALL;
        let i = all.iter().position(|c| *c == self).unwrap_or(0) as isize;
        all[(i + n).rem_euclid(all.len() as isize) as usize]
    }
}

impl Column for OpColumn {
    const ALL: &'static [Self] = &[
        OpColumn::Service,
        OpColumn::Kind,
        OpColumn::Operation,
        OpColumn::Count,
        OpColumn::Rate,
        OpColumn::Errors,
        OpColumn::P50,
        OpColumn::P95,
        OpColumn::P99,
    ];

    fn title(self) -> &'static str {
        match self {
            OpColumn::Service => "SERVICE",
            OpColumn::Kind => "KIND",
            OpColumn::Operation => "OPERATION",
            OpColumn::Count => "COUNT",
            OpColumn::Rate => "RATE/s",
            OpColumn::Errors => "ERR%",
            OpColumn::P50 => "P50",
            OpColumn::P95 => "P95",
            OpColumn::P99 => "P99",
        }
    }

    fn width(self) -> Constraint {
        match self {
            OpColumn::Service => Constraint::Length(10),
            OpColumn::Kind => Constraint::Length(6),
            OpColumn::Operation => Constraint::Min(12),
            OpColumn::Count => Constraint::Length(6),
            OpColumn::Rate => Constraint::Length(7),
            OpColumn::Errors => Constraint::Length(6),
            OpColumn::P50 | OpColumn::P95 | OpColumn::P99 => Constraint::Length(7),
        }
    }

    fn numeric(self) -> bool {
        !matches!(
            self,
            OpColumn::Service | OpColumn::Kind | OpColumn::Operation
        )
    }
}

impl Column for TraceColumn {
    const ALL: &'static [Self] = &[
        TraceColumn::Time,
        TraceColumn::Trace,
        TraceColumn::Root,
        TraceColumn::Services,
        TraceColumn::Spans,
        TraceColumn::Duration,
        TraceColumn::Status,
    ];

    fn title(self) -> &'static str {
        match self {
            TraceColumn::Time => "START",
            TraceColumn::Trace => "TRACE",
            TraceColumn::Root => "ROOT SPAN",
            TraceColumn::Services => "SERVICES",
            TraceColumn::Spans => "SPANS",
            TraceColumn::Duration => "DURATION",
            TraceColumn::Status => "STATUS",
        }
    }

    fn width(self) -> Constraint {
        match self {
            TraceColumn::Time => Constraint::Length(12),
            TraceColumn::Trace => Constraint::Length(8),
            TraceColumn::Root => Constraint::Min(14),
            TraceColumn::Services => Constraint::Length(14),
            TraceColumn::Spans => Constraint::Length(6),
            TraceColumn::Duration => Constraint::Length(9),
            TraceColumn::Status => Constraint::Length(7),
        }
    }

    fn numeric(self) -> bool {
        // The newest trace first, like the slowest.
        !matches!(
            self,
            TraceColumn::Trace | TraceColumn::Root | TraceColumn::Services
        )
    }

    fn right(self) -> bool {
        matches!(self, TraceColumn::Spans | TraceColumn::Duration)
    }
}

impl FromStr for OpColumn {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let want = s.to_ascii_lowercase();
        let alias = match want.as_str() {
            "err" | "errors" | "error" | "err%" => "err%",
            "rate" | "rate/s" => "rate/s",
            "op" | "name" | "route" => "operation",
            other => other,
        };
        OpColumn::ALL
            .iter()
            .copied()
            .find(|c| c.title().to_ascii_lowercase() == alias)
            .ok_or_else(|| {
                format!(
                    "unknown column {s:?}: use one of {}",
                    OpColumn::ALL
                        .iter()
                        .map(|c| c.title().to_ascii_lowercase())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }
}

/// Which column a table is sorted by, and which way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sort<C> {
    /// The column.
    pub column: C,
    /// Largest (or Z) first.
    pub descending: bool,
}

impl<C: Column> Sort<C> {
    /// Sorted by `column` in its natural direction.
    pub fn by(column: C) -> Self {
        Self {
            column,
            descending: column.numeric(),
        }
    }

    /// The marker shown after the sorted column's title.
    pub fn arrow(&self) -> &'static str {
        if self.descending {
            "▼"
        } else {
            "▲"
        }
    }

    fn apply(&self, o: Ordering) -> Ordering {
        if self.descending {
            o.reverse()
        } else {
            o
        }
    }
}

fn cmp_f64(a: f64, b: f64) -> Ordering {
    a.partial_cmp(&b).unwrap_or(Ordering::Equal)
}

/// Sorts operation rows.
pub fn sort_operations(rows: &mut [OperationStats], sort: Sort<OpColumn>) {
    rows.sort_by(|a, b| {
        let (x, y) = (&a.operation, &b.operation);
        let primary = match sort.column {
            OpColumn::Service => x.service.cmp(&y.service),
            OpColumn::Kind => x.kind.cmp(y.kind),
            OpColumn::Operation => x.name.cmp(&y.name),
            OpColumn::Count => a.count.cmp(&b.count),
            OpColumn::Rate => cmp_f64(a.rate, b.rate),
            OpColumn::Errors => cmp_f64(
                a.errors as f64 / a.count.max(1) as f64,
                b.errors as f64 / b.count.max(1) as f64,
            ),
            OpColumn::P50 => a.p50_us.cmp(&b.p50_us),
            OpColumn::P95 => a.p95_us.cmp(&b.p95_us),
            OpColumn::P99 => a.p99_us.cmp(&b.p99_us),
        };
        sort.apply(primary)
            .then_with(|| x.service.cmp(&y.service))
            .then_with(|| x.name.cmp(&y.name))
            .then_with(|| x.kind.cmp(y.kind))
    });
}

/// Sorts traces.
pub fn sort_traces(rows: &mut [Arc<Trace>], sort: Sort<TraceColumn>) {
    // Keys computed once per trace: a trace's summary walks its spans.
    let mut keyed: Vec<(TraceKey, Arc<Trace>)> = rows
        .iter()
        .map(|t| (TraceKey::of(t, sort.column), t.clone()))
        .collect();
    keyed.sort_by(|(ka, a), (kb, b)| {
        sort.apply(ka.cmp(kb))
            .then_with(|| b.start().cmp(&a.start()))
            .then_with(|| a.id.to_bytes().cmp(&b.id.to_bytes()))
    });
    for (slot, (_, t)) in rows.iter_mut().zip(keyed) {
        *slot = t;
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum TraceKey {
    Number(u128),
    Text(String),
}

impl TraceKey {
    fn of(t: &Trace, column: TraceColumn) -> Self {
        match column {
            TraceColumn::Time => TraceKey::Number(
                t.start()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos(),
            ),
            TraceColumn::Trace => TraceKey::Text(t.id.to_string()),
            TraceColumn::Root => {
                TraceKey::Text(t.root().map(|s| s.name.clone()).unwrap_or_default())
            }
            TraceColumn::Services => TraceKey::Text(t.services().join(",")),
            TraceColumn::Spans => TraceKey::Number(t.spans.len() as u128),
            TraceColumn::Duration => TraceKey::Number(t.duration().as_nanos()),
            TraceColumn::Status => TraceKey::Number(t.status_code() as u128),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::window::{Operation, OperationStats};

    fn row(name: &str, count: u64, p99: u64) -> OperationStats {
        OperationStats {
            op: 0,
            operation: Operation {
                service: "svc".into(),
                kind: "server",
                name: name.into(),
            },
            count,
            errors: 0,
            rate: count as f64,
            p50_us: p99 / 2,
            p95_us: p99,
            p99_us: p99,
        }
    }

    fn names(rows: &[OperationStats]) -> Vec<&str> {
        rows.iter().map(|r| r.operation.name.as_str()).collect()
    }

    #[test]
    fn numbers_sort_largest_first_text_a_to_z_and_r_reverses() {
        let mut rows = vec![row("b", 1, 90), row("a", 5, 10), row("c", 3, 50)];
        sort_operations(&mut rows, Sort::by(OpColumn::Count));
        assert_eq!(names(&rows), ["a", "c", "b"]);
        sort_operations(&mut rows, Sort::by(OpColumn::P99));
        assert_eq!(names(&rows), ["b", "c", "a"]);
        sort_operations(&mut rows, Sort::by(OpColumn::Operation));
        assert_eq!(names(&rows), ["a", "b", "c"]);
        let mut reversed = Sort::by(OpColumn::Count);
        reversed.descending = !reversed.descending;
        sort_operations(&mut rows, reversed);
        assert_eq!(names(&rows), ["b", "c", "a"]);
    }

    #[test]
    fn ties_keep_a_stable_order() {
        let mut rows = vec![row("z", 1, 1), row("m", 1, 1), row("a", 1, 1)];
        sort_operations(&mut rows, Sort::by(OpColumn::Count));
        assert_eq!(names(&rows), ["a", "m", "z"]);
    }

    /// A title with its sort arrow must fit, or the arrow pushes the title out of its column.
    fn titles_fit<C: Column + std::fmt::Debug>() {
        for &c in C::ALL {
            let room = match c.width() {
                Constraint::Length(n) | Constraint::Min(n) => n as usize,
                other => panic!("{c:?}: {other:?}"),
            };
            assert!(
                c.title().chars().count() < room,
                "{c:?} is too narrow for its title"
            );
        }
    }

    #[test]
    fn every_title_and_its_arrow_fit() {
        titles_fit::<OpColumn>();
        titles_fit::<TraceColumn>();
    }

    #[test]
    fn columns_step_and_parse() {
        assert_eq!(OpColumn::P99.step(1), OpColumn::Service);
        assert_eq!(OpColumn::Service.step(-1), OpColumn::P99);
        assert_eq!("p95".parse::<OpColumn>(), Ok(OpColumn::P95));
        assert_eq!("errors".parse::<OpColumn>(), Ok(OpColumn::Errors));
        assert_eq!("RATE".parse::<OpColumn>(), Ok(OpColumn::Rate));
        assert!("colour".parse::<OpColumn>().is_err());
    }
}
