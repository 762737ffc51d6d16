//! The export task: spans in through a bounded queue, batched, fanned out to every exporter.
//!
//! Each span handed to [`Pipeline::send`] is first counted in the RED metrics (every request
//! counts, sampled or not), then sampled, then queued. The event reader never waits for the
//! network: when the queue is full the span is dropped and counted (`queue_full`). An exporter
//! that gives a batch up counts it under its reason (`rejected`, `retries_exhausted`,
//! `shutdown`, `write_failed`), and what is still queued when the shutdown deadline passes is
//! counted as `shutdown`. So for every exporter:
//! `queued + queue_full = seen − unsampled` and `queued = exported + dropped by the exporter`.

use std::{sync::Arc, time::Duration};

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

/// Handle to the running export task.
pub struct Pipeline {
    tx: mpsc::Sender<SpanRecord>,
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
        let (tx, rx) = mpsc::channel(config.capacity);
        let deadline = Deadline::default();
        for e in exporters.iter_mut() {
            e.set_deadline(deadline.clone());
        }
        let names = exporters.iter().map(|e| e.name()).collect();
        let task = tokio::spawn(run(
            exporters,
            rx,
            config.clone(),
            deadline.clone(),
            telemetry.clone(),
        ));
        Self {
            tx,
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
    /// span is dropped and counted.
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
        if self.tx.try_send(span).is_err() {
            self.dropped += 1;
            self.telemetry.queue_full.fetch_add(1, Relaxed);
        } else {
            self.telemetry.queued.fetch_add(1, Relaxed);
        }
    }

    /// Spans dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Closes the queue and exports everything queued, within the shutdown timeout: after
    /// it no retry starts, and what is still queued is counted as dropped (`shutdown`).
    pub async fn shutdown(self) -> PipelineStats {
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
    mut rx: mpsc::Receiver<SpanRecord>,
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
    let mut ticker = tokio::time::interval(Duration::from_millis(100).min(config.max_delay));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            span = rx.recv() => match span {
                Some(span) => {
                    stats.received += 1;
                    oldest.get_or_insert_with(Instant::now);
                    batch.push(span);
                    if batch.len() >= config.max_batch {
                        send(&mut exporters, &mut stats, &mut batch, &deadline, &telemetry).await;
                        oldest = None;
                    }
                }
                None => break,
            },
            _ = ticker.tick() => {
                if oldest.is_some_and(|t| t.elapsed() >= config.max_delay) {
                    send(&mut exporters, &mut stats, &mut batch, &deadline, &telemetry).await;
                    oldest = None;
                }
                for e in exporters.iter_mut() {
                    e.tick();
                }
            }
        }
    }
    send(
        &mut exporters,
        &mut stats,
        &mut batch,
        &deadline,
        &telemetry,
    )
    .await;
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
    deadline: &Deadline,
    telemetry: &Telemetry,
) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    for (e, s) in exporters.iter_mut().zip(stats.exporters.iter_mut()) {
        let result = if deadline.passed() {
            Err(ExportError::Dropped {
                endpoint: s.0.clone(),
                reason: "shutdown",
                message: "the shutdown deadline passed before the batch was sent".into(),
            })
        } else {
            e.export(batch).await
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
    batch.clear();
}
