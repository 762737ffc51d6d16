//! One server under one way of tracing it: started, made ready, driven, stopped, and its
//! requests and spans counted. Every load figure comes from here, so every scenario is run
//! the same way.

use std::{
    fs,
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{
    obi,
    process::{self, Proc},
    receiver::{Receiver, Spans},
    tracefs::BareProbes,
};

/// How the server is traced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    /// Nothing attached.
    NoAgent,
    /// Bare tracefs uprobes on the sites spanhook probes: the floor for any uprobe agent.
    Bare,
    /// spanhook exporting OTLP/gRPC to the Collector.
    Spanhook,
    /// The same with the RED metrics off (`OTEL_METRICS_EXPORTER=none`, no `--prometheus`:
    /// spans are not aggregated), for the metrics' own cost.
    SpanhookNoMetrics,
    /// OpenTelemetry eBPF Instrumentation exporting OTLP/gRPC to the Collector.
    Obi,
    /// The same server instrumented by hand with the OpenTelemetry Go SDK (otelhttp).
    Otelhttp,
}

impl Scenario {
    /// Name in tables.
    pub fn label(self) -> &'static str {
        match self {
            Scenario::NoAgent => "no agent",
            Scenario::Bare => "bare uprobes (floor)",
            Scenario::Spanhook => "spanhook",
            Scenario::SpanhookNoMetrics => "spanhook, metrics off",
            Scenario::Obi => "OBI",
            Scenario::Otelhttp => "otelhttp (Go SDK)",
        }
    }

    /// Whether spans are expected.
    pub fn traces(self) -> bool {
        matches!(
            self,
            Scenario::Spanhook | Scenario::SpanhookNoMetrics | Scenario::Obi | Scenario::Otelhttp
        )
    }
}

/// What the bench built and started, shared by every scenario.
pub struct Bed<'a> {
    /// `target/release/spanhook`.
    pub spanhook: PathBuf,
    /// The bench-server binary.
    pub server: PathBuf,
    /// The bench-otelhttp binary.
    pub otelhttp: PathBuf,
    /// OBI's binary, when given.
    pub obi: Option<PathBuf>,
    /// The Collector and span counter.
    pub receiver: &'a Receiver,
    /// Scratch directory (logs, scripts).
    pub scratch: PathBuf,
    /// File offsets of the sites spanhook probes in the server binary (entry and RETs).
    pub server_sites: Vec<u64>,
    /// CPU the server is pinned to.
    pub server_cpu: Option<usize>,
    /// CPU the load generator is pinned to.
    pub load_cpu: Option<usize>,
}

/// A server process of the bench.
pub struct Server {
    proc: Proc,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Server {
    /// Starts `binary` (pinned to `cpu`) on a free port and waits until it listens.
    pub fn start(binary: &Path, cpu: Option<usize>, env: &[(&str, String)]) -> Result<Server> {
        let mut cmd = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string()]).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        cmd.args(["-addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let name = binary
            .file_name()
            .map_or("server".into(), |n| n.to_string_lossy().into_owned());
        let mut proc = Proc::spawn(&name, &mut cmd)?;
        let addr = proc.expect_line("listening on", Duration::from_secs(20))?;
        let port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("{name} printed an unreadable address {addr:?}"))?;
        Ok(Server { proc, port })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Requests the server has answered so far (it counts outside net/http).
    pub fn served(&mut self) -> Result<u64> {
        self.proc.signal(libc::SIGUSR1);
        let n = self.proc.expect_line("served", Duration::from_secs(10))?;
        n.parse()
            .with_context(|| format!("unreadable request count {n:?}"))
    }

    /// A URL on the server.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// One GET request, answered or not.
    fn get(&self, path: &str) -> Result<()> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )?;
        let mut sink = Vec::new();
        s.read_to_end(&mut sink)?;
        Ok(())
    }
}

enum Agent {
    None,
    Bare(BareProbes),
    Process { proc: Proc, log: PathBuf },
    InProcess,
}

/// What spanhook reported about itself when it stopped.
#[derive(Clone, Debug, Default)]
pub struct SelfReport {
    /// Spans it exported.
    pub exported: u64,
    /// Spans it failed to export.
    pub failed: u64,
    /// Spans dropped at its queue.
    pub queue_dropped: u64,
    /// Events it read from the ring buffer.
    pub events: u64,
    /// Its probes' loss counters that were not zero ("ringbuf_full=3").
    pub counters: Vec<String>,
}

impl SelfReport {
    /// Events lost before export, by the agent's own count.
    pub fn lost(&self) -> u64 {
        self.failed
            + self.queue_dropped
            + self
                .counters
                .iter()
                .filter(|c| {
                    c.starts_with("ringbuf_full=") || c.starts_with("inflight_insert_failed=")
                })
                .filter_map(|c| c.split_once('=').and_then(|(_, n)| n.parse::<u64>().ok()))
                .sum::<u64>()
    }
}

/// A traced server, ready for load.
pub struct Running<'a> {
    bed: &'a Bed<'a>,
    scenario: Scenario,
    /// The server.
    pub server: Server,
    agent: Agent,
    served0: u64,
    spans0: Spans,
}

/// The counts of a finished run.
#[derive(Clone, Debug, Default)]
pub struct Counted {
    /// Requests the server answered while the tracer was ready.
    pub requests: u64,
    /// Spans the receiver got for them (none for untraced scenarios).
    pub spans: Option<Spans>,
    /// spanhook's own report.
    pub report: Option<SelfReport>,
    /// CPU time of the agent process over its whole life.
    pub agent_cpu: Option<Duration>,
}

impl Counted {
    /// Server spans per request.
    pub fn ratio(&self) -> Option<f64> {
        let spans = self.spans?;
        (self.requests > 0).then(|| spans.server as f64 / self.requests as f64)
    }
}

/// Starts the server for `scenario` and its tracer, and waits until requests are traced.
pub fn start<'a>(bed: &'a Bed<'a>, scenario: Scenario) -> Result<Running<'a>> {
    let receiver = bed.receiver;
    let server = match scenario {
        Scenario::Otelhttp => Server::start(
            &bed.otelhttp,
            bed.server_cpu,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
                ("OTEL_EXPORTER_OTLP_INSECURE", "true".into()),
                ("OTEL_SERVICE_NAME", "bench-otelhttp".into()),
            ],
        )?,
        _ => Server::start(&bed.server, bed.server_cpu, &[])?,
    };
    let spans0 = receiver.spans();
    let agent = match scenario {
        Scenario::NoAgent => Agent::None,
        Scenario::Bare => Agent::Bare(BareProbes::attach(&bed.server, &bed.server_sites)?),
        Scenario::Spanhook | Scenario::SpanhookNoMetrics => {
            let log = bed.scratch.join("spanhook.log");
            let mut cmd = Command::new(&bed.spanhook);
            cmd.args(["attach", "--pid", &server.pid().to_string()])
                .args(["--otlp-endpoint", &receiver.endpoint()])
                .args(["--otlp-protocol", "grpc"])
                .env("NO_COLOR", "1")
                .stdout(Stdio::null())
                .stderr(fs::File::create(&log)?);
            if scenario == Scenario::SpanhookNoMetrics {
                cmd.env("OTEL_METRICS_EXPORTER", "none");
            }
            Agent::Process {
                proc: Proc::spawn("spanhook", &mut cmd)?,
                log,
            }
        }
        Scenario::Obi => {
            let binary = bed
                .obi
                .as_ref()
                .context("the OBI scenario needs --obi PATH")?;
            let log = bed.scratch.join("obi.log");
            let file = fs::File::create(&log)?;
            let mut cmd = obi::command(binary, server.port, &receiver.endpoint());
            // OBI logs to standard output.
            cmd.stdout(file.try_clone()?).stderr(file);
            Agent::Process {
                proc: Proc::spawn("OBI", &mut cmd)?,
                log,
            }
        }
        Scenario::Otelhttp => Agent::InProcess,
    };
    let mut running = Running {
        bed,
        scenario,
        server,
        agent,
        served0: 0,
        spans0,
    };
    if matches!(
        scenario,
        Scenario::Spanhook | Scenario::SpanhookNoMetrics | Scenario::Obi
    ) {
        running.wait_traced()?;
    }
    Ok(running)
}

impl Running<'_> {
    /// The agent's process id, for agents that run as their own process.
    pub fn agent_pid(&self) -> Option<u32> {
        match &self.agent {
            Agent::Process { proc, .. } => Some(proc.pid()),
            _ => None,
        }
    }

    /// Sends single requests until the receiver gets a server span, then lets the pipeline go
    /// quiet; requests from then on are the ones counted.
    fn wait_traced(&mut self) -> Result<()> {
        let receiver = self.bed.receiver;
        let end = Instant::now() + Duration::from_secs(90);
        loop {
            if let Agent::Process { proc, log } = &mut self.agent {
                if let Some(exit) = proc.exited()? {
                    bail!(
                        "{} exited with {} before tracing anything; see {}",
                        self.scenario.label(),
                        exit.status,
                        log.display()
                    );
                }
            }
            let _ = self.server.get("/hello");
            if (receiver.spans() - self.spans0).server > 0 {
                break;
            }
            if Instant::now() > end {
                bail!(
                    "{} traced no request within 90 s of starting",
                    self.scenario.label()
                );
            }
            process::sleep(Duration::from_millis(250))?;
        }
        receiver.settle(self.spans0, u64::MAX, Duration::from_secs(2))?;
        self.served0 = self.server.served()?;
        self.spans0 = receiver.spans();
        Ok(())
    }

    /// Stops the tracer (letting it flush) and the server; counts requests and spans.
    pub fn finish(mut self) -> Result<Counted> {
        let receiver = self.bed.receiver;
        let requests = self.server.served()? - self.served0;
        let mut counted = Counted {
            requests,
            ..Default::default()
        };
        match std::mem::replace(&mut self.agent, Agent::None) {
            Agent::None => {}
            Agent::Bare(probes) => drop(probes),
            Agent::Process { mut proc, log } => {
                receiver.settle(self.spans0, requests, Duration::from_secs(2))?;
                if matches!(
                    self.scenario,
                    Scenario::Spanhook | Scenario::SpanhookNoMetrics
                ) {
                    let exit = proc.stop(libc::SIGINT, Duration::from_secs(30))?;
                    counted.agent_cpu = Some(exit.cpu);
                    counted.report = Some(read_report(&log)?);
                } else {
                    // Another agent's slow shutdown is not ours to wait for (OBI takes ≈ 10 s
                    // to exit): its spans were counted above; it is killed after a grace time.
                    proc.signal(libc::SIGTERM);
                    match proc.wait(Duration::from_secs(3)) {
                        Ok(exit) => counted.agent_cpu = Some(exit.cpu),
                        Err(_) => {
                            proc.kill();
                            eprintln!(
                                "bench:   {} did not exit within 3 s of SIGTERM; killed",
                                self.scenario.label()
                            );
                        }
                    }
                }
            }
            Agent::InProcess => {
                self.server.proc.signal(libc::SIGTERM);
                self.server
                    .proc
                    .expect_line("flushed", Duration::from_secs(30))?;
            }
        }
        if self.scenario.traces() {
            counted.spans = Some(receiver.settle(self.spans0, requests, Duration::from_secs(2))?);
        }
        self.server.proc.kill();
        Ok(counted)
    }
}

/// Reads what spanhook logged when it stopped.
/// What spanhook said about itself in its log when it stopped.
pub fn read_report(log: &Path) -> Result<SelfReport> {
    let text = fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    let mut report = SelfReport::default();
    let number_before = |line: &str, marker: &str| -> Option<u64> {
        let head = &line[..line.find(marker)?];
        head.split_whitespace().last()?.parse().ok()
    };
    let mut stopped = false;
    for line in text.lines() {
        if let Some(n) = number_before(line, " spans exported") {
            report.exported += n;
            report.failed += number_before(line, " failed").unwrap_or(0);
        }
        if line.contains("stopping (") {
            stopped = true;
            report.events = number_before(line, " events read").unwrap_or(0);
            report.queue_dropped = number_before(line, " dropped at the queue").unwrap_or(0);
        }
        if let Some((_, rest)) = line.split_once("probe counters: ") {
            report.counters = rest.split(", ").map(|c| c.trim().to_string()).collect();
        }
    }
    if !stopped {
        bail!(
            "spanhook did not log its stop summary; see {}",
            log.display()
        );
    }
    Ok(report)
}
