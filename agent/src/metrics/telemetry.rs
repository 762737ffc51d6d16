//! The agent's reports on itself: named counters and gauges, each with a few labels, shared by
//! the export pipeline, the exporters and the run loop; exported beside the RED metrics and
//! summarized in the log at exit.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, OnceLock,
    },
};

/// Labels of one series, sorted by key.
pub type Labels = Vec<(&'static str, String)>;

/// Series behind the lock: (name, labels) → (value, is a counter).
type SeriesMap = BTreeMap<(&'static str, Labels), (u64, bool)>;

/// One series: its name, labels and value.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Instrument name (OTLP style, dots).
    pub name: &'static str,
    /// What it counts.
    pub description: &'static str,
    /// Labels.
    pub labels: Labels,
    /// Value.
    pub value: u64,
    /// A monotonic counter (else a gauge).
    pub counter: bool,
}

/// Spans built from kernel events (before sampling).
pub const SPANS_SEEN: &str = "spanhook.spans.seen";
/// Spans the sampler dropped.
pub const SPANS_UNSAMPLED: &str = "spanhook.spans.unsampled";
/// Spans put into the export queue.
pub const SPANS_QUEUED: &str = "spanhook.spans.queued";
/// Spans an exporter sent successfully (label `exporter`).
pub const SPANS_EXPORTED: &str = "spanhook.spans.exported";
/// Spans lost, by `reason` (and `exporter` once the queue handed them over).
pub const SPANS_DROPPED: &str = "spanhook.spans.dropped";
/// Failed export attempts, by `signal` and `error`.
pub const EXPORT_ERRORS: &str = "spanhook.export.errors";
/// Retried export attempts, by `signal`.
pub const EXPORT_RETRIES: &str = "spanhook.export.retries";
/// Kernel-side counters (ring buffer full, …), by `counter`.
pub const PROBE_EVENTS: &str = "spanhook.probe.events";
/// Uprobes and tracepoints attached.
pub const PROBES_ATTACHED: &str = "spanhook.probes.attached";
/// Processes traced.
pub const TARGETS_TRACED: &str = "spanhook.targets.traced";
/// Metric series folded into the overflow series, by `metric`.
pub const METRIC_OVERFLOW: &str = "spanhook.metrics.overflow";

fn description(name: &str) -> &'static str {
    match name {
        SPANS_SEEN => "Spans built from kernel events, before sampling",
        SPANS_UNSAMPLED => "Spans not kept by the sampler",
        SPANS_QUEUED => "Spans put into the export queue",
        SPANS_EXPORTED => "Spans an exporter delivered",
        SPANS_DROPPED => "Spans lost, by reason",
        EXPORT_ERRORS => "Failed export attempts, by signal and error",
        EXPORT_RETRIES => "Export attempts retried",
        PROBE_EVENTS => "Kernel probe counters (ring_buffer_full is events lost)",
        PROBES_ATTACHED => "Uprobes attached",
        TARGETS_TRACED => "Processes traced",
        METRIC_OVERFLOW => "Measurements folded into the overflow series",
        _ => "",
    }
}

/// The agent's counters. Hot-path counts are atomics; the rest sit behind one lock that is
/// taken once per batch or per second.
#[derive(Debug, Default)]
pub struct Telemetry {
    /// See [`SPANS_SEEN`].
    pub seen: AtomicU64,
    /// See [`SPANS_UNSAMPLED`].
    pub unsampled: AtomicU64,
    /// See [`SPANS_QUEUED`].
    pub queued: AtomicU64,
    /// Spans dropped because the queue was full.
    pub queue_full: AtomicU64,
    series: Mutex<SeriesMap>,
}

impl Telemetry {
    /// The process's telemetry.
    pub fn global() -> Arc<Telemetry> {
        static GLOBAL: OnceLock<Arc<Telemetry>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| Arc::new(Telemetry::default()))
            .clone()
    }

    /// Adds `n` to a counter.
    pub fn add(&self, name: &'static str, labels: &[(&'static str, &str)], n: u64) {
        let key = (name, owned(labels));
        let mut map = self.series.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key).or_insert((0, true)).0 += n;
    }

    /// Sets a gauge (or a counter read from elsewhere, with `counter`).
    pub fn set(&self, name: &'static str, labels: &[(&'static str, &str)], v: u64, counter: bool) {
        let key = (name, owned(labels));
        let mut map = self.series.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(key, (v, counter));
    }

    /// A counter's value (0 when never touched).
    pub fn get(&self, name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
        match name {
            SPANS_SEEN => return self.seen.load(Ordering::Relaxed),
            SPANS_UNSAMPLED => return self.unsampled.load(Ordering::Relaxed),
            SPANS_QUEUED => return self.queued.load(Ordering::Relaxed),
            SPANS_DROPPED if labels == [("reason", "queue_full")] => {
                return self.queue_full.load(Ordering::Relaxed)
            }
            _ => {}
        }
        let map = self.series.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(name, owned(labels))).map_or(0, |v| v.0)
    }

    /// Sum over every series of `name` whose labels include `filter`.
    pub fn sum(&self, name: &'static str, filter: &[(&'static str, &str)]) -> u64 {
        self.snapshot()
            .into_iter()
            .filter(|s| {
                s.name == name
                    && filter
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// Every series now.
    pub fn snapshot(&self) -> Vec<Series> {
        let mut out = vec![
            series(SPANS_SEEN, vec![], self.seen.load(Ordering::Relaxed), true),
            series(
                SPANS_UNSAMPLED,
                vec![],
                self.unsampled.load(Ordering::Relaxed),
                true,
            ),
            series(
                SPANS_QUEUED,
                vec![],
                self.queued.load(Ordering::Relaxed),
                true,
            ),
            series(
                SPANS_DROPPED,
                vec![("reason", "queue_full".to_string())],
                self.queue_full.load(Ordering::Relaxed),
                true,
            ),
        ];
        let map = self.series.lock().unwrap_or_else(|e| e.into_inner());
        out.extend(
            map.iter()
                .map(|((name, labels), (v, counter))| series(name, labels.clone(), *v, *counter)),
        );
        out
    }
}

fn series(name: &'static str, labels: Labels, value: u64, counter: bool) -> Series {
    Series {
        name,
        description: description(name),
        labels,
        value,
        counter,
    }
}

fn owned(labels: &[(&'static str, &str)]) -> Labels {
    let mut l: Labels = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
    l.sort();
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_by_label() {
        let t = Telemetry::default();
        t.add(
            SPANS_DROPPED,
            &[("reason", "rejected"), ("exporter", "a")],
            3,
        );
        t.add(
            SPANS_DROPPED,
            &[("exporter", "a"), ("reason", "rejected")],
            2,
        );
        t.add(
            SPANS_DROPPED,
            &[("reason", "shutdown"), ("exporter", "a")],
            1,
        );
        t.queue_full.fetch_add(4, Ordering::Relaxed);
        assert_eq!(
            t.get(SPANS_DROPPED, &[("exporter", "a"), ("reason", "rejected")]),
            5
        );
        assert_eq!(t.sum(SPANS_DROPPED, &[("exporter", "a")]), 6);
        assert_eq!(t.sum(SPANS_DROPPED, &[]), 10);
    }
}
