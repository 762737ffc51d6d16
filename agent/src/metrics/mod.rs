//! Metrics from the same span events (no extra probe hits) and the agent's reports on itself:
//! aggregated in memory ([`red`], [`telemetry`]), exported over OTLP every
//! `OTEL_METRIC_EXPORT_INTERVAL` ms ([`otlp`]) and, when asked for, served in the Prometheus
//! text format ([`prometheus`]).
//!
//! `OTEL_METRICS_EXPORTER=none` turns the OTLP metrics export off.

pub mod otlp;
pub mod prometheus;
pub mod red;
pub mod telemetry;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use tokio::{sync::watch, task::JoinHandle};

pub use red::RedMetrics;
pub use telemetry::Telemetry;

use crate::export::{
    config::OtlpSettings,
    transport::{send_with_retry, Backoff, OtlpClient, Payload},
    Deadline,
};

/// Default export interval (`OTEL_METRIC_EXPORT_INTERVAL`, the specification's 60 s).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// How metrics leave the agent.
#[derive(Clone, Debug)]
pub struct MetricsConfig {
    /// OTLP metrics export, if on.
    pub otlp: Option<OtlpSettings>,
    /// Export interval.
    pub interval: Duration,
    /// Prometheus scrape address, if on.
    pub prometheus: Option<SocketAddr>,
    /// Attribute sets per process and instrument before overflow.
    pub cardinality_limit: usize,
    /// The agent's own resource attributes (`OTEL_RESOURCE_ATTRIBUTES`).
    pub agent_resource: Vec<(String, String)>,
}

impl MetricsConfig {
    /// Interval and limit from `OTEL_METRIC_EXPORT_INTERVAL` and
    /// `OTEL_METRICS_CARDINALITY_LIMIT` (defaults 60 s and 2000).
    pub fn from_env(otlp: Option<OtlpSettings>, prometheus: Option<SocketAddr>) -> Self {
        let ms = |var: &str| {
            std::env::var(var)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let otlp = match std::env::var("OTEL_METRICS_EXPORTER").ok().as_deref() {
            Some("none") => None,
            _ => otlp,
        };
        MetricsConfig {
            otlp,
            interval: ms("OTEL_METRIC_EXPORT_INTERVAL")
                .map(|m| Duration::from_millis(m.max(100)))
                .unwrap_or(DEFAULT_INTERVAL),
            prometheus,
            cardinality_limit: ms("OTEL_METRICS_CARDINALITY_LIMIT")
                .map(|n| n as usize)
                .unwrap_or(red::DEFAULT_LIMIT),
            agent_resource: std::env::var("OTEL_RESOURCE_ATTRIBUTES")
                .map(|s| crate::spans::resource::parse_resource_attributes(&s))
                .unwrap_or_default(),
        }
    }
}

/// The running metrics: aggregation, and the tasks that export it.
pub struct Metrics {
    /// RED histograms.
    pub red: RedMetrics,
    /// Self-telemetry.
    pub telemetry: Arc<Telemetry>,
    config: MetricsConfig,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    stop: watch::Sender<bool>,
    deadline: Deadline,
    client: Option<Arc<OtlpClient>>,
}

impl Metrics {
    /// Aggregation only, nothing exported (metrics off).
    pub fn new(config: MetricsConfig, telemetry: Arc<Telemetry>) -> Self {
        Metrics {
            red: RedMetrics::new(config.cardinality_limit, telemetry.clone()),
            telemetry,
            config,
            tasks: Mutex::new(Vec::new()),
            stop: watch::channel(false).0,
            deadline: Deadline::default(),
            client: None,
        }
    }

    /// Starts the OTLP export and the Prometheus endpoint that `config` asks for. Returns
    /// the Prometheus address actually bound.
    pub async fn start(
        config: MetricsConfig,
        telemetry: Arc<Telemetry>,
    ) -> Result<(Arc<Metrics>, Option<SocketAddr>), crate::export::ExportError> {
        let mut m = Metrics::new(config, telemetry);
        if let Some(settings) = &m.config.otlp {
            m.client = Some(Arc::new(OtlpClient::build(settings.clone())?));
        }
        let m = Arc::new(m);
        let mut bound = None;
        if let Some(addr) = m.config.prometheus {
            let (addr, task) = prometheus::serve(addr, m.clone()).await.map_err(|e| {
                crate::export::ExportError::Config(format!(
                    "cannot serve Prometheus metrics on {addr}: {e}"
                ))
            })?;
            bound = Some(addr);
            m.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(task);
        }
        if m.client.is_some() {
            let task = tokio::spawn(export_loop(m.clone(), m.stop.subscribe()));
            m.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(task);
        }
        Ok((m, bound))
    }

    /// Whether anything reads the RED histograms (OTLP metrics or the Prometheus endpoint);
    /// when nothing does, spans are not aggregated at all.
    pub fn aggregating(&self) -> bool {
        self.client.is_some() || self.config.prometheus.is_some()
    }

    /// Where OTLP metrics go, if anywhere.
    pub fn otlp_endpoint(&self) -> Option<&str> {
        self.config.otlp.as_ref().map(|s| s.endpoint.as_str())
    }

    /// The Prometheus text of every series now.
    pub fn prometheus_text(&self) -> String {
        prometheus::render(&self.red.snapshot(), &self.telemetry.snapshot())
    }

    /// Exports the current state once over OTLP; whether it was delivered.
    pub async fn export_once(&self) -> bool {
        let Some(client) = &self.client else {
            return false;
        };
        let request = otlp::request(
            &self.red.snapshot(),
            &self.telemetry.snapshot(),
            &self.config.agent_resource,
            self.red.start,
            SystemTime::now(),
        );
        let telemetry = self.telemetry.clone();
        let backoff = Backoff {
            max_elapsed: self.config.interval.min(Duration::from_secs(30)),
            ..Backoff::default()
        };
        match send_with_retry(
            client,
            &Payload::Metrics(request),
            &backoff,
            &self.deadline,
            |e, retried| count_error(&telemetry, "metrics", e, retried),
        )
        .await
        {
            Ok(_) => true,
            Err(f) => {
                tracing::warn!(
                    "metrics not exported to {} ({}): {}",
                    client.settings().endpoint,
                    f.reason(),
                    f.error().message
                );
                false
            }
        }
    }

    /// Stops the periodic export after one last export (bounded by `timeout`).
    pub async fn shutdown(&self, timeout: Duration) {
        let _ = self.stop.send(true);
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            t.abort();
        }
        if self.client.is_some() {
            self.deadline.set(std::time::Instant::now() + timeout);
            let _ = tokio::time::timeout(timeout, self.export_once()).await;
        }
    }
}

/// Counts one failed attempt under `spanhook.export.errors` (and retries).
pub fn count_error(
    telemetry: &Telemetry,
    signal: &str,
    e: &crate::export::transport::SendError,
    retried: bool,
) {
    telemetry.add(
        telemetry::EXPORT_ERRORS,
        &[("signal", signal), ("error", &e.kind)],
        1,
    );
    if retried {
        telemetry.add(telemetry::EXPORT_RETRIES, &[("signal", signal)], 1);
    }
}

async fn export_loop(m: Arc<Metrics>, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(m.config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => { m.export_once().await; }
            _ = stop.changed() => return,
        }
    }
}

impl Metrics {
    /// Records the kernel probes' counters (ring-buffer losses among them).
    pub fn observe_counters(&self, counters: &[(spanhook_common::Counter, u64)]) {
        for (c, n) in counters {
            self.telemetry
                .set(telemetry::PROBE_EVENTS, &[("counter", c.name())], *n, true);
        }
    }

    /// Records how many processes are traced and how many probes are attached.
    pub fn observe_targets(&self, targets: usize, probes: usize) {
        self.telemetry
            .set(telemetry::TARGETS_TRACED, &[], targets as u64, false);
        self.telemetry
            .set(telemetry::PROBES_ATTACHED, &[], probes as u64, false);
    }

    /// Logs what happened to the spans, one line per exporter, at exit.
    pub fn log_summary(&self) {
        log_summary(&self.telemetry);
    }
}

/// Logs the span accounting: `seen = unsampled + queue_full + queued`, and per exporter
/// `queued = exported + dropped`.
pub fn log_summary(t: &Telemetry) {
    use std::sync::atomic::Ordering::Relaxed;
    let snapshot = t.snapshot();
    tracing::info!(
        "span accounting: seen={} unsampled={} queue_full={} queued={}",
        t.seen.load(Relaxed),
        t.unsampled.load(Relaxed),
        t.queue_full.load(Relaxed),
        t.queued.load(Relaxed),
    );
    let mut exporters: Vec<&str> = snapshot
        .iter()
        .filter(|s| s.name == telemetry::SPANS_EXPORTED || s.name == telemetry::SPANS_DROPPED)
        .filter_map(|s| {
            s.labels
                .iter()
                .find(|(k, _)| *k == "exporter")
                .map(|(_, v)| v.as_str())
        })
        .collect();
    exporters.sort_unstable();
    exporters.dedup();
    for e in exporters {
        let exported = t.get(telemetry::SPANS_EXPORTED, &[("exporter", e)]);
        let drops: Vec<String> = snapshot
            .iter()
            .filter(|s| {
                s.name == telemetry::SPANS_DROPPED
                    && s.labels.iter().any(|(k, v)| *k == "exporter" && v == e)
            })
            .map(|s| {
                let reason = s
                    .labels
                    .iter()
                    .find(|(k, _)| *k == "reason")
                    .map_or("?", |(_, v)| v.as_str());
                format!("{reason}={}", s.value)
            })
            .collect();
        let dropped: u64 = t.sum(telemetry::SPANS_DROPPED, &[("exporter", e)]);
        tracing::info!(
            "span accounting: exporter=\"{e}\" exported={exported} dropped={dropped} {}",
            drops.join(" ")
        );
    }
    let errors: Vec<String> = snapshot
        .iter()
        .filter(|s| s.name == telemetry::EXPORT_ERRORS)
        .map(|s| {
            let label = |key: &str| {
                s.labels
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map_or("?", |(_, v)| v.as_str())
            };
            format!("{}/{}={}", label("signal"), label("error"), s.value)
        })
        .collect();
    if !errors.is_empty() {
        tracing::info!("export errors: {}", errors.join(" "));
    }
}

/// Starts metrics as `spanhook attach` asks: OTLP metrics beside OTLP spans (same flags, the
/// `METRICS_` variables), and the Prometheus endpoint at `prometheus` (`PORT` binds loopback).
pub async fn start_for_cli(
    otlp_endpoint: Option<&str>,
    otlp_protocol: Option<&str>,
    prometheus: Option<&str>,
) -> anyhow::Result<Arc<Metrics>> {
    use anyhow::Context;

    use crate::export::{config::Signal, otlp};
    let protocol = otlp_protocol.and_then(otlp::OtlpProtocol::parse);
    let on = otlp_endpoint.is_some()
        || protocol.is_some()
        || otlp::configured_by_env()
        || std::env::var("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").is_ok_and(|v| !v.is_empty());
    let settings = if on {
        Some(OtlpSettings::from_env(
            Signal::Metrics,
            otlp_endpoint,
            protocol,
        )?)
    } else {
        None
    };
    let prometheus = match prometheus {
        None => None,
        Some(p) => Some(match p.trim().parse::<u16>() {
            Ok(port) => SocketAddr::from(([127, 0, 0, 1], port)),
            Err(_) => p
                .trim()
                .parse::<SocketAddr>()
                .with_context(|| format!("--prometheus {p} is not PORT or ADDRESS:PORT"))?,
        }),
    };
    let (metrics, bound) = Metrics::start(
        MetricsConfig::from_env(settings, prometheus),
        Telemetry::global(),
    )
    .await?;
    if let Some(addr) = bound {
        tracing::info!("prometheus metrics on http://{addr}/metrics");
    }
    if let Some(ep) = metrics.otlp_endpoint() {
        tracing::info!("metrics to {ep} every {:?}", metrics.config.interval);
    }
    Ok(metrics)
}
