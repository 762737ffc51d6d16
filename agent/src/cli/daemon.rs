//! `spanhook daemon`: trace every process of the node that the configuration selects, from
//! its start to its exit.
//!
//! Discovery is an initial scan of /proc, then the `sched_process_exec` and
//! `sched_process_exit` tracepoints (see `attach::lifecycle`): a selected program is attached
//! as soon as it has exec'd, before it serves anything, and detached when it exits. If the
//! tracepoints cannot attach, or `discovery.mode: poll`, /proc is scanned instead. Selectors
//! on listening ports are re-checked twice a second until the process listens. Everything
//! after planning (exporters, the probes, the event and socket readers, resources, the exit
//! watch by pidfd) is the same machinery as `attach`.

mod health;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::{Args, Parser, ValueEnum as _};
use opentelemetry::KeyValue;
use tokio::{signal::unix::SignalKind, sync::mpsc};

use super::{
    attach::{self, AttachArgs, ReadStats},
    sockets::SocketTracing,
};
use crate::{
    attach::{
        binaries::{FileIdentity, SharedBinaries},
        lifecycle::{decode_process_event, ProcessChange},
        AttachRequest, EventReader, Probes,
    },
    discovery::{
        config::DiscoveryMode,
        kube::{PodFacts, PodMatch},
        kube_watch::{KubeSettings, PodWatch},
        procfs::{self, ProcessFacts},
        ContainerInfo, DaemonConfig, Settings, Verdict,
    },
    export::Pipeline,
    inspect::{elf::ElfFile, process::Process},
    plan::{self, Language, OffsetTable, PlannedTarget},
    spans::{
        http::ErrorTypes, resource::parse_resource_attributes, Assembler, Clock, ProcessResource,
    },
};
use health::Metrics;
use spanhook_common::ProcessEventKind;

/// How often processes waiting for a listening port are looked at again.
const PENDING_RECHECK: Duration = Duration::from_millis(500);

/// Flags of `spanhook daemon`. The exporter flags override the file's `export:` section.
#[derive(Args, Debug, Clone)]
pub struct DaemonArgs {
    /// YAML configuration: selectors, exclusions, export, health endpoint.
    #[arg(long, env = "SPANHOOK_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
    /// Serve /healthz, /readyz and /metrics (Prometheus) here, e.g. 0.0.0.0:9464.
    #[arg(long, env = "SPANHOOK_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Print what the configuration selects among the running processes, and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// OTLP endpoint (default: the file's, else OTEL_EXPORTER_OTLP_ENDPOINT).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// OTLP transport.
    #[arg(long, value_name = "PROTOCOL", value_parser = ["grpc", "http/protobuf"])]
    pub otlp_protocol: Option<String>,
    /// Also write spans as OTLP/JSON lines.
    #[arg(long, value_name = "PATH")]
    pub output_file: Option<PathBuf>,
    /// Print each finished trace as a tree.
    #[arg(long)]
    pub console: bool,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Write `traceparent` into outgoing requests of traced clients.
    #[arg(long)]
    pub propagate: bool,
    /// How to trace HTTP (default: the file's `capture`, else auto).
    #[arg(long, value_enum)]
    pub capture: Option<plan::CaptureMode>,
}

/// `attach`'s flags, parsed by clap from the daemon's settings, so every exporter `attach`
/// has (and any it gains) is built the same way.
#[derive(Parser)]
#[command(no_binary_name = true)]
struct AttachFlags {
    #[command(flatten)]
    args: AttachArgs,
}

fn attach_args(args: &DaemonArgs, settings: &Settings) -> Result<AttachArgs> {
    let export = &settings.raw.export;
    let mut argv: Vec<String> = vec!["--pid".into(), "1".into()];
    let mut flag = |name: &str, value: Option<String>| {
        if let Some(v) = value {
            argv.push(name.into());
            argv.push(v);
        }
    };
    flag(
        "--otlp-endpoint",
        args.otlp_endpoint.clone().or(export.otlp_endpoint.clone()),
    );
    flag(
        "--otlp-protocol",
        args.otlp_protocol.clone().or(export.otlp_protocol.clone()),
    );
    flag(
        "--output-file",
        args.output_file
            .clone()
            .or(export.output_file.clone())
            .map(|p| p.to_string_lossy().into_owned()),
    );
    let capture = match (&args.capture, &settings.raw.capture) {
        (Some(c), _) => Some(c.to_possible_value().map(|v| v.get_name().to_string())),
        (None, Some(c)) => Some(Some(c.clone())),
        (None, None) => None,
    };
    flag("--capture", capture.flatten());
    if args.console || export.console {
        argv.push("--console".into());
    }
    if args.propagate || settings.raw.propagate {
        argv.push("--propagate".into());
    }
    let parsed = AttachFlags::try_parse_from(&argv)
        .map_err(|e| anyhow::anyhow!("{}: {}", settings.path.display(), e.render()))?;
    Ok(parsed.args)
}

/// One traced process.
struct Target {
    start: u64,
    selector: String,
}

/// A target in a container whose pod the watch did not know when it was attached: its
/// resource gets the pod's attributes as soon as the watch does.
struct AwaitingPod {
    container: ContainerInfo,
    env: Vec<(String, String)>,
    resource: Arc<ProcessResource>,
    errors: Option<Arc<dyn ErrorTypes>>,
}

/// What was decided about a process that is not traced, until it execs or exits.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Not selected, or excluded, or not traceable: not looked at again.
    Settled,
    /// Selected but for its listening port: looked at again.
    Pending,
}

/// The daemon's state between events.
struct Daemon {
    settings: Settings,
    args: AttachArgs,
    table: OffsetTable,
    probes: Probes,
    assembler: Assembler,
    sockets: SocketTracing,
    extra: Vec<(String, String)>,
    exit_tx: mpsc::UnboundedSender<u32>,
    targets: HashMap<u32, Target>,
    seen: HashMap<u32, (u64, PathBuf, Seen)>,
    metrics: Arc<Metrics>,
    pods: Option<PodWatch>,
    awaiting_pod: HashMap<u32, AwaitingPod>,
    /// Executables' probes, attached once per file for all of its processes.
    shared: SharedBinaries,
    /// Each executable's analysis (language and probe plan), by file identity, while a
    /// target runs it: the 2nd to 200th replica of a service is not parsed again.
    analyses: HashMap<FileIdentity, Analysis>,
}

/// What reading an executable found, the same for every process of it.
struct Analysis {
    elf: Arc<ElfFile>,
    language: Language,
    plan: plan::TargetPlan,
}

impl Daemon {
    /// Decides for `pid` and attaches when it is selected.
    fn consider(&mut self, pid: u32) {
        if self.targets.contains_key(&pid) {
            return;
        }
        let Some(start) = procfs::start_time(pid) else {
            self.seen.remove(&pid);
            return;
        };
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        if let Some((s, e, Seen::Settled)) = self.seen.get(&pid) {
            // Same process, same program: nothing changed.
            if *s == start && *e == exe {
                return;
            }
        }
        let Some(mut facts) = ProcessFacts::read(pid) else {
            // A kernel thread, or gone.
            self.seen.insert(pid, (start, exe, Seen::Settled));
            return;
        };
        if let Some(pods) = &self.pods {
            let age = procfs::age(start).unwrap_or_default();
            facts.pod = pods.facts(&facts.container).settle(age, pods.synced());
        }
        match self.settings.selection.verdict(&facts) {
            Verdict::Trace(selector) => self.attach(pid, start, exe, &facts, selector),
            Verdict::Pending => {
                if self
                    .seen
                    .get(&pid)
                    .is_none_or(|(.., s)| *s != Seen::Pending)
                {
                    tracing::debug!(
                        "pid {pid} ({}): selected once it listens on a selected port",
                        facts.exe.display()
                    );
                }
                self.seen.insert(pid, (start, exe, Seen::Pending));
            }
            Verdict::NotSelected => {
                self.seen.insert(pid, (start, exe, Seen::Settled));
            }
            Verdict::Excluded(by) => {
                tracing::debug!("pid {pid} ({}): excluded by {by}", facts.exe.display());
                self.seen.insert(pid, (start, exe, Seen::Settled));
            }
        }
    }

    fn attach(
        &mut self,
        pid: u32,
        start: u64,
        exe: PathBuf,
        facts: &ProcessFacts,
        selector: String,
    ) {
        let started = Instant::now();
        let options = plan::PlanOptions {
            propagate: self.args.propagate,
            capture: self.args.capture,
        };
        let refuse = |d: &mut Self, why: String| {
            tracing::info!(
                "pid {pid} ({}) is selected by {selector} but not traced: {why}",
                facts.exe.display()
            );
            d.metrics.attach_failures.fetch_add(1, Ordering::Relaxed);
            d.seen.insert(pid, (start, exe.clone(), Seen::Settled));
        };
        let identity = FileIdentity::of(Path::new(&format!("/proc/{pid}/exe"))).ok();
        let t = match self.plan(pid, identity, options) {
            Ok(t) => t,
            Err(e) => return refuse(self, e),
        };
        for w in &t.plan.warnings {
            tracing::warn!("pid {pid}: {w}");
        }
        // Watch for exit before attaching so an exit in between is not missed.
        if let Err(e) = attach::watch_exit(pid, self.exit_tx.clone()) {
            return refuse(self, format!("{e:#}"));
        }
        let request = AttachRequest {
            pid,
            binary: t.process.exe_link.clone(),
            config: t.plan.config,
            sites: t.plan.sites.clone(),
        };
        let attached = match identity {
            Some(id) => self.shared.attach(&mut self.probes, &request, id).map(Some),
            None => self.probes.attach(&request).map(|()| None),
        };
        let shared = match attached {
            Ok(s) => s,
            Err(e) => return refuse(self, e.to_string()),
        };
        let mut resource = ProcessResource::from_proc(pid, Some(t.language.runtime()), &self.extra);
        let mut add = |key: &'static str, value: &Option<String>| {
            if let Some(v) = value {
                if resource.attribute(key).is_none() {
                    resource.attributes.push(KeyValue::new(key, v.clone()));
                }
            }
        };
        add("container.id", &facts.container.container_id);
        add("k8s.pod.uid", &facts.container.pod_uid);
        if let PodFacts::Known(m) = &facts.pod {
            resource.add_pod(&facts.env, &m.attributes(), m.pod.service_name());
        }
        let resource = Arc::new(resource);
        attach::log_plan(&t, &resource.service_name);
        let errors = t.error_types();
        if facts.pod == PodFacts::Unknown && self.pods.is_some() {
            self.awaiting_pod.insert(
                pid,
                AwaitingPod {
                    container: facts.container.clone(),
                    env: facts.env.clone(),
                    resource: resource.clone(),
                    errors: errors.clone(),
                },
            );
        }
        self.assembler.add_process(resource.clone(), errors);
        if let Err(e) = self.sockets.add(&mut self.probes, &t) {
            tracing::warn!("pid {pid}: {e:#}");
        }
        t.elf.release_pages();
        if self.args.propagate
            && (t.plan.traces(plan::Capability::GoHttpPropagation)
                || t.plan.traces(plan::Capability::GoGrpcPropagation)
                || t.plan.traces(plan::Capability::RustHttpPropagation))
        {
            if let Err(e) = self.probes.enable_propagation(&[pid]) {
                tracing::warn!("pid {pid}: propagation cannot work here: {e}");
            }
        }
        tracing::info!(
            "pid {pid} attached (selector {selector}, service {}, {} uprobes in {} BPF links{}{}) in {} ms",
            resource.service_name,
            self.shared.uprobe_count(&self.probes, pid),
            self.shared.link_count(&self.probes, pid),
            match shared {
                Some(s) if !s.first => " shared with its binary's other processes",
                _ => "",
            },
            facts
                .container
                .container_id
                .as_deref()
                .map(|c| format!(", container {}", &c[..12.min(c.len())]))
                .unwrap_or_default(),
            started.elapsed().as_millis()
        );
        self.seen.remove(&pid);
        self.targets.insert(pid, Target { start, selector });
        self.metrics.attached.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .targets
            .store(self.targets.len() as u64, Ordering::Relaxed);
    }

    /// Plans `pid`, reading its executable only when no target runs the same file.
    fn plan(
        &mut self,
        pid: u32,
        identity: Option<FileIdentity>,
        options: plan::PlanOptions,
    ) -> Result<PlannedTarget, String> {
        let Some(id) = identity else {
            return plan::plan_pid(pid, &self.table, options).map_err(|e| e.to_string());
        };
        let process = Process::open(pid).map_err(|e| e.to_string())?;
        if !self.analyses.contains_key(&id) {
            // The whole analysis through the usual path, so errors read the same.
            let t = plan::plan_pid(pid, &self.table, options).map_err(|e| e.to_string())?;
            // A plan with probes in a library the process maps (libssl) depends on the
            // process: only plans of the executable alone are reused.
            if t.plan.sites.iter().all(|s| s.binary.is_none()) {
                self.analyses.insert(
                    id,
                    Analysis {
                        elf: t.elf.clone(),
                        language: t.language.clone(),
                        plan: t.plan.clone(),
                    },
                );
            }
            return Ok(t);
        }
        let a = &self.analyses[&id];
        let mut plan = a.plan.clone();
        plan::socket::for_process(pid, &mut plan);
        Ok(PlannedTarget {
            process,
            elf: a.elf.clone(),
            language: a.language.clone(),
            plan,
        })
    }

    /// Detaches `pid` if it is a target and `still_ours` says so.
    fn detach(&mut self, pid: u32, why: &str) {
        let Some(target) = self.targets.remove(&pid) else {
            return;
        };
        self.shared.detach(&mut self.probes, pid);
        self.analyses.retain(|id, _| self.shared.in_use(id));
        self.assembler.remove_process(pid);
        self.awaiting_pod.remove(&pid);
        self.sockets.remove_process(pid);
        tracing::info!(
            "pid {pid} {why} (selector {}); its probes are detached",
            target.selector
        );
        self.metrics.detached.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .targets
            .store(self.targets.len() as u64, Ordering::Relaxed);
    }

    /// A process may have exited: detach it if it did.
    fn exited(&mut self, pid: u32) {
        let gone = self
            .targets
            .get(&pid)
            .is_some_and(|t| !procfs::running(pid, t.start));
        if gone {
            self.detach(pid, "exited");
        }
        if procfs::start_time(pid).is_none() {
            self.seen.remove(&pid);
        }
    }

    /// `pid` exec'd a new program (same pid): decide again.
    fn exec(&mut self, pid: u32) {
        self.metrics.execs.fetch_add(1, Ordering::Relaxed);
        if self.targets.contains_key(&pid) {
            self.detach(pid, "replaced its program");
        }
        self.seen.remove(&pid);
        self.consider(pid);
    }

    /// Looks at every process in /proc; forgets the ones that are gone.
    fn scan(&mut self) {
        let pids = procfs::pids();
        for &pid in &pids {
            self.consider(pid);
        }
        let live: std::collections::HashSet<u32> = pids.into_iter().collect();
        self.seen.retain(|pid, _| live.contains(pid));
        let gone: Vec<u32> = self
            .targets
            .keys()
            .filter(|p| !live.contains(p))
            .copied()
            .collect();
        for pid in gone {
            self.exited(pid);
        }
    }

    /// Gives targets whose pod was unknown at attach their pod's attributes once the watch
    /// knows it; the spans before that carry `container.id` and `k8s.pod.uid` only.
    fn complete_pods(&mut self) {
        let Some(pods) = &self.pods else {
            return;
        };
        let found: Vec<(u32, PodMatch)> = self
            .awaiting_pod
            .iter()
            .filter_map(|(pid, a)| match pods.facts(&a.container) {
                PodFacts::Known(m) => Some((*pid, m)),
                _ => None,
            })
            .collect();
        for (pid, m) in found {
            let Some(a) = self.awaiting_pod.remove(&pid) else {
                continue;
            };
            let mut resource = (*a.resource).clone();
            resource.add_pod(&a.env, &m.attributes(), m.pod.service_name());
            tracing::info!(
                "pid {pid}: in pod {}/{} (service {})",
                m.pod.namespace,
                m.pod.name,
                resource.service_name
            );
            self.assembler.add_process(Arc::new(resource), a.errors);
        }
    }

    fn recheck_pending(&mut self) {
        let pending: Vec<u32> = self
            .seen
            .iter()
            .filter(|(_, (.., s))| *s == Seen::Pending)
            .map(|(p, _)| *p)
            .collect();
        for pid in pending {
            self.consider(pid);
        }
    }
}

/// Runs `spanhook daemon`.
pub async fn run(args: DaemonArgs) -> Result<ExitCode> {
    let own_pid = std::process::id();
    let settings = DaemonConfig::read(args.config.clone())?.validate(
        args.config.clone(),
        args.listen.as_deref(),
        own_pid,
    )?;
    let pods = match settings.kubernetes {
        true => Some(PodWatch::start(&kube_settings(&settings)).await?),
        false => None,
    };
    if args.dry_run {
        return Ok(dry_run(&settings, pods.as_ref()));
    }
    let attach_args = attach_args(&args, &settings)?;
    let exporters = attach::build_exporters(&attach_args, None)?;
    let exporter_names: Vec<String> = exporters.iter().map(|e| e.name()).collect();
    let metrics = Arc::new(Metrics::default());
    if let Some(addr) = settings.listen {
        health::serve(addr, metrics.clone())
            .await
            .with_context(|| format!("cannot serve the health endpoint on {addr}"))?;
        tracing::info!("health endpoint on http://{addr} (/healthz, /readyz, /metrics)");
    }

    let mut probes = Probes::load()?;
    let mut lifecycle: Option<EventReader> = match settings.raw.discovery.mode {
        DiscoveryMode::Poll => None,
        DiscoveryMode::Events => match probes.process_events() {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!("exec/exit tracepoints unavailable ({e}); polling /proc instead");
                None
            }
        },
    };
    let tick_every = match lifecycle {
        Some(_) => {
            tracing::info!(
                "discovery: sched_process_exec/exit tracepoints, /proc rescanned every {:?}",
                settings.rescan_interval
            );
            PENDING_RECHECK
        }
        None => {
            tracing::info!(
                "discovery: polling /proc every {:?}",
                settings.poll_interval
            );
            settings.poll_interval
        }
    };
    let (exit_tx, mut exit_rx) = mpsc::unbounded_channel();
    let sockets = SocketTracing::start(&mut probes, &[])?;
    let mut reader = probes.event_reader()?;
    let mut daemon = Daemon {
        extra: std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .map(|s| parse_resource_attributes(&s))
            .unwrap_or_default(),
        table: OffsetTable::embedded(),
        assembler: Assembler::new(Clock::now()),
        args: attach_args,
        settings,
        probes,
        sockets,
        exit_tx,
        targets: HashMap::new(),
        seen: HashMap::new(),
        metrics: metrics.clone(),
        pods,
        awaiting_pod: HashMap::new(),
        shared: SharedBinaries::default(),
        analyses: HashMap::new(),
    };
    let mut pipeline = Pipeline::start(exporters, attach::QUEUE_SPANS);
    let scan_started = Instant::now();
    daemon.scan();
    tracing::info!(
        "initial scan: {} processes traced, {} waiting for a port, in {} ms",
        daemon.targets.len(),
        daemon
            .seen
            .values()
            .filter(|(.., s)| *s == Seen::Pending)
            .count(),
        scan_started.elapsed().as_millis()
    );
    // Handlers before readiness is announced: a signal that follows it must flush and detach.
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    metrics.ready.store(true, Ordering::Relaxed);
    tracing::info!("exporting to {}", exporter_names.join(", "));
    let deadline = async {
        match args.duration {
            Some(secs) => tokio::time::sleep(Duration::from_secs_f64(secs.max(0.0))).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(tick_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_scan = Instant::now();
    let mut stats = ReadStats::default();
    let poll_mode = lifecycle.is_none();
    let reason = loop {
        let mut exited = Vec::new();
        let mut changes: Vec<ProcessChange> = Vec::new();
        let mut tick = false;
        let stop = tokio::select! {
            _ = reader.ready() => None,
            _ = daemon.sockets.ready() => None,
            _ = lifecycle_ready(&mut lifecycle) => None,
            Some(pid) = exit_rx.recv() => { exited.push(pid); None }
            _ = ticker.tick() => { tick = true; None }
            _ = sigint.recv() => Some("interrupted"),
            _ = sigterm.recv() => Some("terminated"),
            _ = &mut deadline => Some("duration reached"),
        };
        while let Ok(pid) = exit_rx.try_recv() {
            exited.push(pid);
        }
        if let Some(l) = &mut lifecycle {
            l.drain(|bytes| changes.extend(decode_process_event(bytes)));
        }
        // Spans first: the last requests of a process that exited are still in the ring.
        attach::drain(&mut reader, &daemon.assembler, &mut pipeline, &mut stats);
        daemon
            .sockets
            .drain(&mut daemon.probes, &daemon.assembler, &mut pipeline);
        // Socket-level spans are batched like the others: hand them over now, not at the
        // next symbol-level drain.
        pipeline.flush();
        for c in changes {
            match c.kind {
                ProcessEventKind::Exec => daemon.exec(c.pid),
                ProcessEventKind::Exit => daemon.exited(c.pid),
            }
        }
        for pid in exited {
            daemon.exited(pid);
        }
        if tick {
            if poll_mode || last_scan.elapsed() >= daemon.settings.rescan_interval {
                daemon.scan();
                last_scan = Instant::now();
            } else {
                daemon.recheck_pending();
            }
            daemon.complete_pods();
            metrics.update(
                &daemon.probes,
                stats.events,
                stats.undecodable,
                pipeline.dropped(),
            );
        }
        if let Some(reason) = stop {
            break reason;
        }
    };
    tracing::debug!("run loop ended: {reason}");
    metrics.ready.store(false, Ordering::Relaxed);
    attach::drain(&mut reader, &daemon.assembler, &mut pipeline, &mut stats);
    daemon
        .sockets
        .drain(&mut daemon.probes, &daemon.assembler, &mut pipeline);
    daemon.sockets.report();
    let pids: Vec<u32> = daemon.targets.keys().copied().collect();
    for pid in pids {
        daemon.detach(pid, "is left as it was");
    }
    let dropped_queue = pipeline.dropped();
    let out = pipeline.shutdown().await;
    tracing::info!(
        "stopping ({reason}): {} processes attached in all, {} events read, {} spans queued, {} dropped at the queue, {} undecodable",
        metrics.attached.load(Ordering::Relaxed),
        stats.events,
        out.received,
        dropped_queue,
        stats.undecodable
    );
    for (name, ok, failed) in &out.exporters {
        tracing::info!("{name}: {ok} spans exported, {failed} failed");
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the pod watch connects and which node it watches.
fn kube_settings(settings: &Settings) -> KubeSettings {
    let k = &settings.raw.kubernetes;
    let node = k
        .node_name
        .clone()
        .or_else(|| {
            // The DaemonSet sets it from the downward API's spec.nodeName.
            ["NODE_NAME", "K8S_NODE_NAME"]
                .iter()
                .find_map(|v| std::env::var(v).ok().filter(|n| !n.is_empty()))
        })
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_default();
    KubeSettings {
        kubeconfig: k.kubeconfig.clone(),
        node,
        sync_timeout: Duration::from_secs(k.sync_timeout_secs),
    }
}

async fn lifecycle_ready(reader: &mut Option<EventReader>) {
    match reader {
        Some(r) => r.ready().await,
        None => std::future::pending().await,
    }
}

/// `--dry-run`: the verdict for every running process that is not simply unselected.
fn dry_run(settings: &Settings, pods: Option<&PodWatch>) -> ExitCode {
    println!("{:>8}  {:<40}  EXECUTABLE", "PID", "VERDICT");
    let mut pids = procfs::pids();
    pids.sort_unstable();
    for pid in pids {
        let Some(mut facts) = ProcessFacts::read(pid) else {
            continue;
        };
        if let Some(pods) = pods {
            facts.pod = pods.facts(&facts.container);
        }
        let verdict = match settings.selection.verdict(&facts) {
            Verdict::NotSelected => continue,
            Verdict::Trace(s) => format!("trace ({s})"),
            Verdict::Pending => "waits for a selected port or its pod".to_string(),
            Verdict::Excluded(by) => format!("excluded ({by})"),
        };
        println!("{pid:>8}  {verdict:<40}  {}", facts.exe.display());
    }
    ExitCode::SUCCESS
}
