//! Throughput and latency of the Go net/http bench server under wrk, for a trivial handler and
//! a 1 ms handler, in every scenario; and probe hits per traced request.

use std::time::Duration;

use anyhow::Result;

use super::{
    machine::{self, BpfStats},
    median, process,
    scenario::{self, Bed, Counted, Scenario},
    wrk::{self, Load, Plan},
};

/// A handler of the bench server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handler {
    /// `/hello`: writes five bytes.
    Trivial,
    /// `/sleep`: waits 1 ms first.
    Sleep1ms,
}

impl Handler {
    /// Both handlers, in report order.
    pub const ALL: [Handler; 2] = [Handler::Trivial, Handler::Sleep1ms];

    /// The route.
    pub fn path(self) -> &'static str {
        match self {
            Handler::Trivial => "/hello",
            Handler::Sleep1ms => "/sleep",
        }
    }

    /// Name in tables.
    pub fn label(self) -> &'static str {
        match self {
            Handler::Trivial => "trivial handler",
            Handler::Sleep1ms => "1 ms handler",
        }
    }
}

/// Load-generator connections (as in the design's figures).
pub const CONNECTIONS: u32 = 16;

/// One scenario's result for one handler: medians over the repeats.
#[derive(Clone, Debug)]
pub struct Row {
    /// The scenario.
    pub scenario: Scenario,
    /// Median of each figure.
    pub load: Load,
    /// Every run's requests per second.
    pub rps_runs: Vec<f64>,
    /// Server spans ÷ requests, per run.
    pub ratios: Vec<f64>,
    /// All spans (any kind) ÷ requests, per run.
    pub all_ratios: Vec<f64>,
    /// Agent-reported losses, summed over runs (spanhook only).
    pub lost: Option<u64>,
    /// Median server CPU time per request (µs).
    pub server_cpu_us: f64,
    /// Median agent CPU time per request (µs), for agents running as a process.
    pub agent_cpu_us: Option<f64>,
    /// Requests counted over all runs.
    pub requests: u64,
}

/// Every scenario for one handler.
#[derive(Clone, Debug)]
pub struct Table {
    /// The handler.
    pub handler: Handler,
    /// One row per scenario, in scenario order.
    pub rows: Vec<Row>,
}

impl Table {
    /// The row of `scenario`.
    pub fn row(&self, scenario: Scenario) -> Option<&Row> {
        self.rows.iter().find(|r| r.scenario == scenario)
    }
}

struct Sample {
    load: Load,
    counted: Counted,
    /// Server CPU time per request in the measured run (µs).
    server_cpu_us: f64,
    /// Agent CPU time per request in the measured run (µs), for agents running as a process.
    agent_cpu_us: Option<f64>,
}

fn one_run(bed: &Bed, scenario: Scenario, handler: Handler, duration: Duration) -> Result<Sample> {
    let mut running = scenario::start(bed, scenario)?;
    let url = running.server.url(handler.path());
    // Warm-up: the server's goroutines, buffers and the tracer's maps reach steady state.
    let warm = Plan {
        url: url.clone(),
        connections: CONNECTIONS,
        duration: Duration::from_secs(1),
        delay_ms: None,
        cpu: bed.load_cpu,
    };
    wrk::run(&warm, &bed.scratch)?;
    let plan = Plan { duration, ..warm };
    // CPU time per request does not depend on how busy the rest of the machine is, which
    // throughput and latency do: it is the steadier measure of what tracing costs.
    let server_pid = running.server.pid();
    let agent_pid = running.agent_pid();
    let mut server = running.server.served()?;
    let server_cpu = process::cpu_ns(server_pid)?;
    let agent_cpu = agent_pid.map(process::cpu_ns).transpose()?;
    let load = wrk::run(&plan, &bed.scratch)?;
    let server_cpu = process::cpu_ns(server_pid)? - server_cpu;
    let agent_cpu = match (agent_pid, agent_cpu) {
        (Some(pid), Some(before)) => Some(process::cpu_ns(pid)? - before),
        _ => None,
    };
    server = running.server.served()? - server;
    let per_request = |ns: u64| ns as f64 / 1e3 / server.max(1) as f64;
    let counted = running.finish()?;
    Ok(Sample {
        load,
        counted,
        server_cpu_us: per_request(server_cpu),
        agent_cpu_us: agent_cpu.map(per_request),
    })
}

/// Runs every scenario `repeat` times per handler, interleaved so that drift in the machine's
/// speed spreads over all of them.
pub fn run(
    bed: &Bed,
    scenarios: &[Scenario],
    repeat: usize,
    duration: Duration,
) -> Result<Vec<Table>> {
    let mut tables = Vec::new();
    for handler in Handler::ALL {
        let mut samples: Vec<(Scenario, Sample)> = Vec::new();
        for round in 0..repeat {
            for i in 0..scenarios.len() {
                let scenario = scenarios[(i + round) % scenarios.len()];
                eprintln!(
                    "bench: load, {}, {} (run {}/{repeat}; load {})",
                    handler.label(),
                    scenario.label(),
                    round + 1,
                    machine::load()
                );
                let began = std::time::Instant::now();
                let sample = one_run(bed, scenario, handler, duration)?;
                eprintln!(
                    "bench:   {:.0} req/s in {:.0} s",
                    sample.load.rps,
                    began.elapsed().as_secs_f64()
                );
                samples.push((scenario, sample));
            }
        }
        let rows = scenarios
            .iter()
            .map(|&scenario| {
                let mine: Vec<&Sample> = samples
                    .iter()
                    .filter(|(s, _)| *s == scenario)
                    .map(|(_, x)| x)
                    .collect();
                let pick = |f: fn(&Load) -> f64| {
                    median(&mine.iter().map(|s| f(&s.load)).collect::<Vec<_>>())
                };
                Row {
                    scenario,
                    load: Load {
                        requests: mine.iter().map(|s| s.load.requests).sum(),
                        rps: pick(|l| l.rps),
                        p50_us: pick(|l| l.p50_us),
                        p99_us: pick(|l| l.p99_us),
                        errors: mine.iter().map(|s| s.load.errors).sum(),
                    },
                    rps_runs: mine.iter().map(|s| s.load.rps).collect(),
                    ratios: mine.iter().filter_map(|s| s.counted.ratio()).collect(),
                    all_ratios: mine
                        .iter()
                        .filter_map(|s| {
                            let spans = s.counted.spans?;
                            (s.counted.requests > 0)
                                .then(|| spans.all as f64 / s.counted.requests as f64)
                        })
                        .collect(),
                    lost: mine
                        .iter()
                        .map(|s| s.counted.report.as_ref().map(|r| r.lost()))
                        .sum(),
                    requests: mine.iter().map(|s| s.counted.requests).sum(),
                    server_cpu_us: median(
                        &mine.iter().map(|s| s.server_cpu_us).collect::<Vec<_>>(),
                    ),
                    agent_cpu_us: mine
                        .iter()
                        .map(|s| s.agent_cpu_us)
                        .collect::<Option<Vec<_>>>()
                        .map(|v| median(&v)),
                }
            })
            .collect();
        tables.push(Table { handler, rows });
    }
    Ok(tables)
}

/// Probe hits per request of one agent on one route.
#[derive(Clone, Debug)]
pub struct Hits {
    /// Who.
    pub scenario: Scenario,
    /// What the request does.
    pub what: &'static str,
    /// BPF program runs ÷ outer requests.
    pub per_request: f64,
    /// Runs per program name.
    pub by_program: Vec<(String, f64)>,
}

/// Probe hits per request: BPF run counts of the agent's programs over a fixed load, for a
/// server-only request (`/hello`) and a request whose handler makes one client call to the same
/// server (`/call` → `/hello`: two server requests and one client request).
pub fn hits(bed: &Bed, scenarios: &[Scenario]) -> Result<Vec<Hits>> {
    let mut out = Vec::new();
    let _stats = BpfStats::enable()?;
    for &scenario in scenarios {
        for (path, what, server_requests_per_request) in [
            ("/hello", "server", 1.0),
            ("/call", "server + client (/call → /hello)", 2.0),
        ] {
            let mut running = scenario::start(bed, scenario)?;
            let Some(pid) = running.agent_pid() else {
                continue;
            };
            let served0 = running.server.served()?;
            let before = machine::programs_of(pid)?;
            let plan = Plan {
                url: running.server.url(path),
                connections: 4,
                duration: Duration::from_secs(2),
                delay_ms: None,
                cpu: bed.load_cpu,
            };
            wrk::run(&plan, &bed.scratch)?;
            process::sleep(Duration::from_millis(200))?;
            let after = machine::programs_of(pid)?;
            let served = running.server.served()? - served0;
            running.finish()?;
            let outer = served as f64 / server_requests_per_request;
            let mut by_program = Vec::new();
            let mut total = 0;
            for (name, a) in &after {
                let b = before.get(name).copied().unwrap_or_default();
                let runs = a.runs - b.runs;
                if runs > 0 {
                    total += runs;
                    by_program.push((name.clone(), runs as f64 / outer));
                }
            }
            out.push(Hits {
                scenario,
                what,
                per_request: total as f64 / outer,
                by_program,
            });
        }
    }
    Ok(out)
}
