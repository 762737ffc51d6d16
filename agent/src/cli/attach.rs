//! `spanhook attach`: trace running processes until interrupted, their exit, or a deadline.

use std::{
    collections::{BTreeSet, HashMap},
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use clap::Args;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::SignalKind,
    sync::{mpsc, oneshot},
};

use crate::{
    attach::{AttachRequest, Probes},
    events,
    export::{
        console::ConsoleExporter,
        file::FileExporter,
        otlp::{self, OtlpConfig, OtlpExporter, OtlpProtocol},
        Exporter, Pipeline,
    },
    plan::{self, OffsetTable, PlannedTarget},
    spans::{resource::parse_resource_attributes, Assembler, Clock, ProcessResource},
};

/// Spans held between the event reader and the exporters at most.
pub(crate) const QUEUE_SPANS: usize = 65_536;

/// Flags of `spanhook attach`.
#[derive(Args, Debug, Clone)]
pub struct AttachArgs {
    /// Process to trace (repeat for several).
    #[arg(long = "pid", required = true, value_name = "PID")]
    pub pids: Vec<u32>,
    /// OTLP endpoint, e.g. http://localhost:4317 (default: OTEL_EXPORTER_OTLP_ENDPOINT).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// OTLP transport (default: OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf).
    #[arg(long, value_name = "PROTOCOL", value_parser = ["grpc", "http/protobuf"])]
    pub otlp_protocol: Option<String>,
    /// Also write spans as OTLP/JSON lines (one ExportTraceServiceRequest per line).
    #[arg(long, value_name = "PATH")]
    pub output_file: Option<PathBuf>,
    /// Print each finished trace as a tree (the default when no other exporter is set).
    #[arg(long)]
    pub console: bool,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Write `traceparent` into outgoing HTTP/1 requests of the traced Go clients, so the
    /// next service joins the trace (inserted on the network path; needs CAP_NET_ADMIN).
    #[arg(long)]
    pub propagate: bool,
    /// How to trace HTTP: `symbols` (uprobes on the program's own functions), `sockets`
    /// (its TCP socket system calls and libssl, for any language), or `auto` — symbols when
    /// the binary allows them, sockets otherwise.
    #[arg(long, value_enum, default_value = "auto")]
    pub capture: plan::CaptureMode,
    /// Serve metrics in the Prometheus text format on `PORT` (loopback) or `ADDRESS:PORT`.
    #[arg(long, value_name = "ADDR")]
    pub prometheus: Option<String>,
}

pub(crate) fn build_exporters(
    args: &AttachArgs,
    extra: Option<Box<dyn Exporter>>,
) -> Result<Vec<Box<dyn Exporter>>> {
    let mut exporters: Vec<Box<dyn Exporter>> = Vec::new();
    let protocol = match &args.otlp_protocol {
        Some(p) => Some(OtlpProtocol::parse(p).context("unknown --otlp-protocol")?),
        None => None,
    };
    if args.otlp_endpoint.is_some() || protocol.is_some() || otlp::configured_by_env() {
        let protocol = match protocol {
            Some(p) => p,
            None => OtlpProtocol::from_env()?,
        };
        let config = OtlpConfig {
            endpoint: args.otlp_endpoint.clone(),
            protocol,
        };
        exporters.push(Box::new(OtlpExporter::build(&config)?));
    }
    if let Some(path) = &args.output_file {
        exporters.push(Box::new(FileExporter::create(path.clone())?));
    }
    // The console is the default only when nothing else shows the spans: beside the `top`
    // view it would print over the screen.
    if args.console || (exporters.is_empty() && extra.is_none()) {
        exporters.push(Box::new(ConsoleExporter::stdout()));
    }
    exporters.extend(extra);
    Ok(exporters)
}

/// Runs `spanhook attach`.
pub async fn run(args: AttachArgs) -> Result<ExitCode> {
    run_with(args, None, None).await
}

/// The run loop of `attach`, shared with `spanhook top`: `extra` is one more exporter fed by
/// the same pipeline (the live view), and `stop` ends the run like a signal, with its message
/// as the reason (the view's quit key). A dropped `stop` sender ends the run too.
pub(crate) async fn run_with(
    args: AttachArgs,
    extra: Option<Box<dyn Exporter>>,
    stop: Option<oneshot::Receiver<&'static str>>,
) -> Result<ExitCode> {
    let table = OffsetTable::embedded();
    let unique: BTreeSet<u32> = args.pids.iter().copied().collect();
    let mut targets: Vec<PlannedTarget> = Vec::new();
    for pid in unique {
        let options = plan::PlanOptions {
            propagate: args.propagate,
            capture: args.capture,
        };
        let target = plan::plan_pid(pid, &table, options)?;
        // Before the programs load (their BTF parsing is the agent's peak), not after.
        target.elf.release_pages();
        targets.push(target);
    }
    let exporters = build_exporters(&args, extra)?;
    let exporter_names: Vec<String> = exporters.iter().map(|e| e.name()).collect();

    let mut probes = Probes::load()?;
    let extra = std::env::var("OTEL_RESOURCE_ATTRIBUTES")
        .map(|s| parse_resource_attributes(&s))
        .unwrap_or_default();
    let mut assembler = Assembler::new(Clock::now());
    let (exit_tx, mut exit_rx) = mpsc::unbounded_channel();
    for t in &targets {
        for w in &t.plan.warnings {
            tracing::warn!("pid {}: {w}", t.process.pid);
        }
        let request = AttachRequest {
            pid: t.process.pid,
            binary: t.process.exe_link.clone(),
            config: t.plan.config,
            sites: t.plan.sites.clone(),
        };
        // Watch for exit before attaching so an exit in between is not missed.
        watch_exit(t.process.pid, exit_tx.clone())
            .with_context(|| format!("cannot watch pid {}", t.process.pid))?;
        probes.attach(&request)?;
        let resource = Arc::new(ProcessResource::from_proc(
            t.process.pid,
            Some(t.language.runtime()),
            &extra,
        ));
        log_plan(t, &resource.service_name);
        let errors = t.error_types();
        if errors.is_none() {
            tracing::debug!("pid {}: error types will not be named", t.process.pid);
        }
        assembler.add_process(resource, errors);
        t.elf.release_pages();
    }
    if args.propagate {
        let pids: Vec<u32> = targets
            .iter()
            .filter(|t| {
                t.plan.traces(plan::Capability::GoHttpPropagation)
                    || t.plan.traces(plan::Capability::GoGrpcPropagation)
                    || t.plan.traces(plan::Capability::RustHttpPropagation)
            })
            .map(|t| t.process.pid)
            .collect();
        if pids.is_empty() {
            tracing::warn!(
                "--propagate: no traced process has a Go or Rust HTTP/1 client or a grpc-go client to propagate from"
            );
        } else {
            let report = probes
                .enable_propagation(&pids)
                .context("--propagate was asked for but cannot work here")?;
            tracing::info!(
                "propagation on for pids {pids:?}: traceparent goes into outgoing HTTP/1 requests and gRPC HEADERS frames (sock_ops on {}, {} open connections adopted)",
                report.cgroup.display(),
                report.adopted
            );
            for p in report.problems {
                tracing::warn!("propagation: cannot adopt open connections of {p}");
            }
        }
    }
    let mut sockets = super::sockets::SocketTracing::start(&mut probes, &targets)?;
    // Handlers before anything announces readiness: a SIGINT that follows "exporting to"
    // must flush and detach, never kill the process with its probes in place.
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;

    let mut reader = probes.event_reader()?;
    let metrics = crate::metrics::start_for_cli(
        args.otlp_endpoint.as_deref(),
        args.otlp_protocol.as_deref(),
        args.prometheus.as_deref(),
    )
    .await?;
    let probes_attached = |probes: &Probes| probes.attached().map(|p| probes.uprobe_count(p)).sum();
    metrics.observe_targets(targets.len(), probes_attached(&probes));
    let mut last_counters = std::time::Instant::now();
    let mut pipeline = Pipeline::start(exporters, QUEUE_SPANS).with_metrics(metrics.clone());
    tracing::info!("sampler: {:?}", pipeline.sampler());
    tracing::info!("exporting to {}", exporter_names.join(", "));
    let deadline = async {
        match args.duration {
            Some(secs) => tokio::time::sleep(Duration::from_secs_f64(secs.max(0.0))).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let stop = async {
        match stop {
            Some(rx) => rx.await.unwrap_or("view closed"),
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stop);

    let mut live: BTreeSet<u32> = targets.iter().map(|t| t.process.pid).collect();
    let mut stats = ReadStats::default();
    let reason = loop {
        let mut exited = Vec::new();
        let stop = tokio::select! {
            _ = reader.ready() => None,
            _ = sockets.ready() => None,
            _ = sigint.recv() => Some("interrupted"),
            _ = sigterm.recv() => Some("terminated"),
            _ = &mut deadline => Some("duration reached"),
            reason = &mut stop => Some(reason),
            Some(pid) = exit_rx.recv() => { exited.push(pid); None }
        };
        while let Ok(pid) = exit_rx.try_recv() {
            exited.push(pid);
        }
        drain(&mut reader, &assembler, &mut pipeline, &mut stats);
        sockets.drain(&mut probes, &assembler, &mut pipeline);
        pipeline.flush();
        for pid in exited {
            if live.remove(&pid) {
                tracing::info!("pid {pid} exited; its probes are detached");
                probes.detach(pid);
                assembler.remove_process(pid);
                sockets.remove_process(pid);
            }
        }
        if last_counters.elapsed() >= Duration::from_secs(1) {
            last_counters = std::time::Instant::now();
            metrics.observe_counters(&probes.counters());
            metrics.observe_targets(live.len(), probes_attached(&probes));
        }
        if let Some(reason) = stop {
            break reason;
        }
        if live.is_empty() {
            break "every traced process exited";
        }
    };
    tracing::debug!("run loop ended: {reason}");
    drain(&mut reader, &assembler, &mut pipeline, &mut stats);
    sockets.drain(&mut probes, &assembler, &mut pipeline);
    sockets.report();
    for pid in live.iter().copied().collect::<Vec<_>>() {
        probes.detach(pid);
    }
    let dropped_queue = pipeline.dropped();
    tracing::debug!("probes detached; flushing exporters");
    let out = pipeline.shutdown().await;
    metrics.observe_counters(&probes.counters());
    metrics.shutdown(Duration::from_secs(5)).await;
    metrics.log_summary();
    let lost: Vec<String> = probes
        .counters()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(c, n)| format!("{}={n}", c.name()))
        .collect();
    tracing::info!(
        "stopping ({reason}): {} events read, {} spans queued, {} dropped at the queue, {} undecodable",
        stats.events,
        out.received,
        dropped_queue,
        stats.undecodable
    );
    for (name, ok, failed) in &out.exporters {
        tracing::info!("{name}: {ok} spans exported, {failed} failed");
    }
    if !lost.is_empty() {
        tracing::warn!("probe counters: {}", lost.join(", "));
    }
    drop(probes);
    Ok(ExitCode::SUCCESS)
}

/// Logs what will be traced in `t` and how, and what will not be and why.
pub(crate) fn log_plan(t: &PlannedTarget, service: &str) {
    for c in &t.plan.capabilities {
        match &c.outcome {
            plan::CapabilityOutcome::Traced {
                symbol,
                entry_offset,
                returns,
            } => tracing::info!(
                "pid {} ({}, service {}, {}): {} traced at {symbol} (entry {entry_offset:#x}, {returns} RET sites)",
                t.process.pid,
                t.process.exe.display(),
                service,
                t.language.describe(),
                c.capability.name(),
            ),
            plan::CapabilityOutcome::NotTraced { reason } => tracing::info!(
                "pid {}: {} not traced: {reason}",
                t.process.pid,
                c.capability.name()
            ),
            plan::CapabilityOutcome::Sockets { via, reason } => tracing::info!(
                "pid {} ({}, service {}, {}): {} traced at socket level by {via}; why: {reason}",
                t.process.pid,
                t.process.exe.display(),
                service,
                t.language.describe(),
                c.capability.name(),
            ),
        }
    }
}

#[derive(Default)]
pub(crate) struct ReadStats {
    pub(crate) events: u64,
    pub(crate) undecodable: u64,
    unsampled: u64,
    unknown_process: u64,
    last_error: HashMap<String, u64>,
}

/// Turns every record in the ring into a span for the pipeline, then flushes the pipeline:
/// the spans of one drain cross to the export task together.
pub(crate) fn drain(
    reader: &mut crate::attach::EventReader,
    assembler: &Assembler,
    pipeline: &mut Pipeline,
    stats: &mut ReadStats,
) {
    // Spans other sources sent since the last drain (socket-level ones) go first.
    pipeline.flush();
    reader.drain(|bytes| {
        stats.events += 1;
        match events::decode(bytes) {
            Ok(event) => match assembler.span(&event) {
                // Parent-based sampling (a caller that did not sample the trace gets no span
                // from us) is the pipeline's, after the span is counted in the metrics.
                Some(span) => {
                    stats.unsampled += u64::from(!span.sampled);
                    pipeline.send(span)
                }
                None => stats.unknown_process += 1,
            },
            Err(e) => {
                stats.undecodable += 1;
                let n = stats.last_error.entry(e.to_string()).or_insert(0);
                if *n == 0 {
                    tracing::warn!("undecodable event: {e}");
                }
                *n += 1;
            }
        }
    });
    pipeline.flush();
}

/// A pidfd becomes readable when its process exits; no polling of /proc.
struct PidFd(std::os::fd::OwnedFd);

impl std::os::fd::AsRawFd for PidFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

pub(crate) fn watch_exit(pid: u32, tx: mpsc::UnboundedSender<u32>) -> Result<()> {
    // SAFETY: plain syscall; the result is checked before use.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            bail!("pid {pid} exited before it could be traced");
        }
        return Err(err).context("pidfd_open");
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    // SAFETY: the OwnedFd keeps the descriptor open for the AsyncFd's lifetime.
    let afd =
        unsafe { AsyncFd::register_with_interest(PidFd(owned), tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
    tokio::spawn(async move {
        let _ = afd.readable().await;
        let _ = tx.send(pid);
    });
    Ok(())
}
