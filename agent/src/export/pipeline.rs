//! The export task: spans in through a bounded queue, batched, fanned out to every exporter.
//!
//! The event reader never waits for the network: when the queue is full a span is dropped and
//! counted, and the count is reported.

use std::time::Duration;

use tokio::{sync::mpsc, task::JoinHandle, time::Instant};

use super::Exporter;
use crate::spans::SpanRecord;

/// Spans sent in one batch at most.
const MAX_BATCH: usize = 512;
/// Longest a span waits in a partial batch.
const MAX_DELAY: Duration = Duration::from_millis(200);

/// What the export task did, per exporter.
#[derive(Clone, Debug, Default)]
pub struct PipelineStats {
    /// Spans taken from the queue.
    pub received: u64,
    /// Per exporter: name, spans exported, spans that failed.
    pub exporters: Vec<(String, u64, u64)>,
}

/// Handle to the running export task.
pub struct Pipeline {
    tx: mpsc::Sender<SpanRecord>,
    task: JoinHandle<PipelineStats>,
    dropped: u64,
}

impl Pipeline {
    /// Starts the export task with a queue of `capacity` spans.
    pub fn start(exporters: Vec<Box<dyn Exporter>>, capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity);
        let task = tokio::spawn(run(exporters, rx));
        Self {
            tx,
            task,
            dropped: 0,
        }
    }

    /// Queues a span; when the queue is full the span is dropped and counted.
    pub fn send(&mut self, span: SpanRecord) {
        if self.tx.try_send(span).is_err() {
            self.dropped += 1;
        }
    }

    /// Spans dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Closes the queue, exports everything queued, flushes every exporter.
    pub async fn shutdown(self) -> PipelineStats {
        drop(self.tx);
        self.task.await.unwrap_or_default()
    }
}

async fn run(
    mut exporters: Vec<Box<dyn Exporter>>,
    mut rx: mpsc::Receiver<SpanRecord>,
) -> PipelineStats {
    let mut stats = PipelineStats {
        received: 0,
        exporters: exporters.iter().map(|e| (e.name(), 0, 0)).collect(),
    };
    let mut batch: Vec<SpanRecord> = Vec::with_capacity(MAX_BATCH);
    let mut oldest: Option<Instant> = None;
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            span = rx.recv() => match span {
                Some(span) => {
                    stats.received += 1;
                    oldest.get_or_insert_with(Instant::now);
                    batch.push(span);
                    if batch.len() >= MAX_BATCH {
                        send(&mut exporters, &mut stats, &mut batch).await;
                        oldest = None;
                    }
                }
                None => break,
            },
            _ = ticker.tick() => {
                if oldest.is_some_and(|t| t.elapsed() >= MAX_DELAY) {
                    send(&mut exporters, &mut stats, &mut batch).await;
                    oldest = None;
                }
                for e in exporters.iter_mut() {
                    e.tick();
                }
            }
        }
    }
    send(&mut exporters, &mut stats, &mut batch).await;
    for e in exporters.iter_mut() {
        if let Err(err) = e.flush().await {
            tracing::warn!("flushing {}: {err}", e.name());
        }
    }
    stats
}

async fn send(
    exporters: &mut [Box<dyn Exporter>],
    stats: &mut PipelineStats,
    batch: &mut Vec<SpanRecord>,
) {
    if batch.is_empty() {
        return;
    }
    for (e, s) in exporters.iter_mut().zip(stats.exporters.iter_mut()) {
        match e.export(batch).await {
            Ok(()) => s.1 += batch.len() as u64,
            Err(err) => {
                s.2 += batch.len() as u64;
                tracing::warn!("{} spans not exported by {}: {err}", batch.len(), e.name());
            }
        }
    }
    batch.clear();
}
