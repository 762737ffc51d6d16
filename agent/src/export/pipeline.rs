//! The export task: spans in through a bounded queue, batched, fanned out to every exporter.
//!
//! Each span handed to [`Pipeline::send`] is first counted in the RED metrics (every request
//! counts, sampled or not), then sampled, then queued. The event reader never waits for the
//! network: when the queue is full the span is dropped and counted (`queue_full`). Spans cross
//! to the export task in batches, one per [`Pipeline::flush`] (the reader flushes after each
//! drain of the ring buffer): one channel message and one task wakeup per drain instead of
//! per span. The queue's capacity still counts spans, those waiting for the flush included. An exporter
//! that gives a batch up counts it under its reason (`rejected`, `retries_exhausted`,
//! `shutdown`, `write_failed`), and what is still queued when the shutdown deadline passes is
//! counted as `shutdown`. So for every exporter:
//! `queued + queue_full = seen − unsampled` and `queued = exported + dropped by the exporter`.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{sync::mpsc, task::JoinHandle, time::Instant};

use super::{
    sampling::{Sampler, SamplerKind},
    Deadline, ExportError, Exporter,
};
use crate::{
    metrics::{telemetry, Metrics, Telemetry},
    spans::SpanRecord,
};

/// Queue, batch and shutdown settings.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Spans held in the queue at most (`OTEL_BSP_MAX_QUEUE_SIZE`).
    pub capacity: usize,
    /// Spans per export request at most (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, default 512).
    pub max_batch: usize,
    /// Longest a span waits in a partial batch (`OTEL_BSP_SCHEDULE_DELAY`, default 200 ms).
    pub max_delay: Duration,
    /// Time allowed at shutdown to send what is queued (`SPANHOOK_SHUTDOWN_TIMEOUT` seconds,
    /// default 10).
    pub shutdown_timeout: Duration,
}

impl PipelineConfig {
    /// The settings from the environment, with `capacity` as the default queue size.
    pub fn from_env(capacity: usize) -> Self {
        let num = |var: &str| {
            std::env::var(var)
                .ok()
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        PipelineConfig {
            capacity: num("OTEL_BSP_MAX_QUEUE_SIZE").map_or(capacity, |n| n.max(1.0) as usize),
            max_batch: num("OTEL_BSP_MAX_EXPORT_BATCH_SIZE").map_or(512, |n| n.max(1.0) as usize),
            max_delay: num("OTEL_BSP_SCHEDULE_DELAY").map_or(Duration::from_millis(200), |ms| {
                Duration::from_millis(ms.max(1.0) as u64)
            }),
            shutdown_timeout: num("SPANHOOK_SHUTDOWN_TIMEOUT")
                .map_or(Duration::from_secs(10), |s| {
                    Duration::from_secs_f64(s.max(0.0))
                }),
        }
    }
}

/// What the export task did, per exporter.
#[derive(Clone, Debug, Default)]
pub struct PipelineStats {
    /// Spans taken from the queue.
    pub received: u64,
    /// Per exporter: name, spans exported, spans that failed.
    pub exporters: Vec<(String, u64, u64)>,
}

/// Spans held back for one flush at most: a drain of a full ring buffer still goes over in
/// a few large messages.
const FLUSH_SPANS: usize = 1024;

/// Handle to the running export task.
pub struct Pipeline {
    tx: mpsc::UnboundedSender<Vec<SpanRecord>>,
    /// Spans sent to the export task and not yet taken by it.
    in_channel: Arc<AtomicUsize>,
    /// Spans accepted since the last flush.
    pending: Vec<SpanRecord>,
    task: JoinHandle<PipelineStats>,
    dropped: u64,
    sampler: Sampler,
    metrics: Option<Arc<Metrics>>,
    telemetry: Arc<Telemetry>,
    deadline: Deadline,
    config: PipelineConfig,
    names: Vec<String>,
}

impl Pipeline {
    /// Starts the export task with a queue of `capacity` spans (unless `OTEL_BSP_*` says
    /// otherwise) and the sampler of `OTEL_TRACES_SAMPLER`; an unusable sampler setting is
    /// logged and the default (parent-based, always on) used.
    pub fn start(exporters: Vec<Box<dyn Exporter>>, capacity: usize) -> Self {
        let kind = SamplerKind::from_env().unwrap_or_else(|e| {
            tracing::warn!("{e}; sampling with parentbased_always_on");
            SamplerKind::ParentBased(super::sampling::Root::AlwaysOn)
        });
        Self::start_with(
            exporters,
            PipelineConfig::from_env(capacity),
            Sampler::new(kind),
            Telemetry::global(),
        )
    }

    /// Starts the export task with explicit settings.
    pub fn start_with(
        mut exporters: Vec<Box<dyn Exporter>>,
        config: PipelineConfig,
        sampler: Sampler,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let in_channel = Arc::new(AtomicUsize::new(0));
        let deadline = Deadline::default();
        for e in exporters.iter_mut() {
            e.set_deadline(deadline.clone());
        }
        let names = exporters.iter().map(|e| e.name()).collect();
        let task = tokio::spawn(run(
            exporters,
            rx,
            in_channel.clone(),
            config.clone(),
            deadline.clone(),
            telemetry.clone(),
        ));
        Self {
            tx,
            in_channel,
            pending: Vec::new(),
            task,
            dropped: 0,
            sampler,
            metrics: None,
            telemetry,
            deadline,
            config,
            names,
        }
    }

    /// Counts every span in `metrics` before sampling (when anything reads them).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics).filter(|m| m.aggregating());
        self
    }

    /// The sampler in use.
    pub fn sampler(&self) -> SamplerKind {
        self.sampler.kind()
    }

    /// Records `span` in the metrics, samples it, and queues it; when the queue is full the
    /// span is dropped and counted. The span reaches the exporters after the next
    /// [`flush`](Self::flush).
    pub fn send(&mut self, span: SpanRecord) {
        use std::sync::atomic::Ordering::Relaxed;
        self.telemetry.seen.fetch_add(1, Relaxed);
        if let Some(m) = &self.metrics {
            m.red.record(&span);
        }
        if !self.sampler.sample(&span) {
            self.telemetry.unsampled.fetch_add(1, Relaxed);
            return;
        }
        let queued = self.in_channel.load(Relaxed) + self.pending.len();
        if queued >= self.config.capacity || self.tx.is_closed() {
            self.dropped += 1;
            self.telemetry.queue_full.fetch_add(1, Relaxed);
            return;
        }
        self.telemetry.queued.fetch_add(1, Relaxed);
        if self.pending.capacity() == 0 {
            self.pending.reserve(64);
        }
        self.pending.push(span);
        if self.pending.len() >= FLUSH_SPANS {
            self.flush();
        }
    }

    /// Hands the spans queued since the last flush to the export task.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        let n = batch.len();
        self.in_channel.fetch_add(n, Ordering::Relaxed);
        if self.tx.send(batch).is_err() {
            // The export task is gone (it only ends at shutdown): the spans cannot go out.
            self.in_channel.fetch_sub(n, Ordering::Relaxed);
            self.dropped += n as u64;
            self.telemetry
                .queue_full
                .fetch_add(n as u64, Ordering::Relaxed);
            self.telemetry.queued.fetch_sub(n as u64, Ordering::Relaxed);
        }
    }

    /// Spans dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Closes the queue and exports everything queued, within the shutdown timeout: after
    /// it no retry starts, and what is still queued is counted as dropped (`shutdown`).
    pub async fn shutdown(mut self) -> PipelineStats {
        self.flush();
        let timeout = self.config.shutdown_timeout;
        self.deadline.set(std::time::Instant::now() + timeout);
        drop(self.tx);
        let mut task = self.task;
        // The last request may still be in flight at the deadline: give it its own timeout
        // at most, then give up on the task.
        match tokio::time::timeout(timeout + Duration::from_secs(12), &mut task).await {
            Ok(stats) => stats.unwrap_or_default(),
            Err(_) => {
                task.abort();
                tracing::warn!("export did not finish in time; its remaining spans are lost");
                PipelineStats {
                    received: self
                        .telemetry
                        .queued
                        .load(std::sync::atomic::Ordering::Relaxed),
                    exporters: self.names.into_iter().map(|n| (n, 0, 0)).collect(),
                }
            }
        }
    }
}

async fn run(
    mut exporters: Vec<Box<dyn Exporter>>,
    mut rx: mpsc::UnboundedReceiver<Vec<SpanRecord>>,
    in_channel: Arc<AtomicUsize>,
    config: PipelineConfig,
    deadline: Deadline,
    telemetry: Arc<Telemetry>,
) -> PipelineStats {
    let mut stats = PipelineStats {
        received: 0,
        exporters: exporters.iter().map(|e| (e.name(), 0, 0)).collect(),
    };
    let mut batch: Vec<SpanRecord> = Vec::with_capacity(config.max_batch);
    let mut oldest: Option<Instant> = None;
    // The console prints finished traces on a clock; other exporters need no wake-up while
    // nothing waits, and a waiting batch needs one only when its delay runs out.
    let tick_every = Duration::from_millis(100).min(config.max_delay);
    let always_tick = exporters.iter().any(|e| e.needs_tick());
    let wake = tokio::time::sleep(tick_every);
    tokio::pin!(wake);
    // Every exporter hears once, at start, that the pipeline runs: it starts after the probes
    // are attached, which the live view waits for.
    for e in exporters.iter_mut() {
        e.tick();
    }
    loop {
        tokio::select! {
            spans = rx.recv() => match spans {
                Some(mut spans) => {
                    in_channel.fetch_sub(spans.len(), Ordering::Relaxed);
                    stats.received += spans.len() as u64;
                    if oldest.is_none() {
                        let now = Instant::now();
                        oldest = Some(now);
                        if !always_tick {
                            wake.as_mut().reset(now + config.max_delay);
                        }
                    }
                    if batch.is_empty() && batch.capacity() < spans.capacity() {
                        std::mem::swap(&mut batch, &mut spans);
                    } else {
                        batch.append(&mut spans);
                    }
                    while batch.len() >= config.max_batch {
                        send(&mut exporters, &mut stats, &mut batch, config.max_batch, &deadline, &telemetry).await;
                    }
                    if batch.is_empty() {
                        oldest = None;
                    }
                }
                None => break,
            },
            () = &mut wake, if always_tick || oldest.is_some() => {
                if oldest.is_some_and(|t| t.elapsed() >= config.max_delay) {
                    while !batch.is_empty() {
                        send(&mut exporters, &mut stats, &mut batch, config.max_batch, &deadline, &telemetry).await;
                    }
                    oldest = None;
                }
                for e in exporters.iter_mut() {
                    e.tick();
                }
                let next = match oldest {
                    Some(t) if !always_tick => t + config.max_delay,
                    _ => Instant::now() + tick_every,
                };
                wake.as_mut().reset(next);
            }
        }
    }
    while !batch.is_empty() {
        send(
            &mut exporters,
            &mut stats,
            &mut batch,
            config.max_batch,
            &deadline,
            &telemetry,
        )
        .await;
    }
    for e in exporters.iter_mut() {
        if let Err(err) = e.flush().await {
            tracing::warn!("flushing {}: {err}", e.name());
        }
    }
    stats
}

/// Exports the first `max` spans of `batch` (all when fewer) and removes them.
async fn send(
    exporters: &mut [Box<dyn Exporter>],
    stats: &mut PipelineStats,
    batch: &mut Vec<SpanRecord>,
    max: usize,
    deadline: &Deadline,
    telemetry: &Telemetry,
) {
    if batch.is_empty() {
        return;
    }
    let count = batch.len().min(max.max(1));
    let spans = &batch[..count];
    let n = count as u64;
    for (e, s) in exporters.iter_mut().zip(stats.exporters.iter_mut()) {
        let result = if deadline.passed() {
            Err(ExportError::Dropped {
                endpoint: s.0.clone(),
                reason: "shutdown",
                message: "the shutdown deadline passed before the batch was sent".into(),
            })
        } else {
            e.export(spans).await
        };
        match result {
            Ok(()) => {
                s.1 += n;
                telemetry.add(telemetry::SPANS_EXPORTED, &[("exporter", &s.0)], n);
            }
            Err(err) => {
                s.2 += n;
                telemetry.add(
                    telemetry::SPANS_DROPPED,
                    &[("exporter", &s.0), ("reason", err.drop_reason())],
                    n,
                );
                if !deadline.passed() {
                    tracing::warn!("{n} spans not exported by {}: {err}", s.0);
                }
            }
        }
    }
    batch.drain(..count);
}
