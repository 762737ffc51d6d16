//! What the agent itself costs: CPU time per span and peak memory at fixed request rates, and
//! whether every request became a span (spans ÷ requests, with the agent's own loss counts).

use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{
    machine,
    process::{self},
    scenario::{self, Bed, Scenario, SelfReport},
    wrk::{self, Load, Plan},
};

/// One agent at one rate.
#[derive(Clone, Debug)]
pub struct Cost {
    /// Which agent.
    pub scenario: Scenario,
    /// The rate asked for.
    pub target_rate: u32,
    /// What the load generator achieved.
    pub load: Load,
    /// Requests the server answered during the measured window.
    pub window_requests: u64,
    /// Agent CPU time (user + system) during the window.
    pub cpu: Duration,
    /// Peak RSS of the agent over its life, bytes.
    pub peak_rss: u64,
    /// Server spans ÷ requests over the whole traced run.
    pub ratio: f64,
    /// Server spans and requests behind `ratio`.
    pub spans: u64,
    /// Requests behind `ratio`.
    pub requests: u64,
    /// spanhook's own report.
    pub report: Option<SelfReport>,
}

impl Cost {
    /// Agent CPU per span, in microseconds (CPU in the window ÷ spans for its requests).
    pub fn cpu_per_span_us(&self) -> f64 {
        let spans = self.window_requests as f64 * self.ratio;
        if spans == 0.0 {
            return f64::NAN;
        }
        self.cpu.as_secs_f64() * 1e6 / spans
    }
}

/// Runs `scenario` at each of `rates` for `duration`.
pub fn run(bed: &Bed, scenario: Scenario, rates: &[u32], duration: Duration) -> Result<Vec<Cost>> {
    let mut out = Vec::new();
    for &rate in rates {
        eprintln!(
            "bench: agent cost, {} at {rate} req/s (load {})",
            scenario.label(),
            machine::load()
        );
        let mut running = scenario::start(bed, scenario)?;
        let pid = running
            .agent_pid()
            .context("agent cost is measured for agents that run as a process")?;
        let mut plan = Plan::paced(running.server.url("/hello"), rate, duration, bed.load_cpu);
        calibrate(&mut plan, rate, &bed.scratch)?;
        let served0 = running.server.served()?;
        let cpu0 = process::cpu_ns(pid)?;
        let load = wrk::run(&plan, &bed.scratch)?;
        // The spans of the last requests are exported within the pipeline's batching delay.
        process::sleep(Duration::from_millis(1500))?;
        let cpu1 = process::cpu_ns(pid)?;
        let peak_rss = process::peak_rss(pid)?;
        let window_requests = running.server.served()? - served0;
        let counted = running.finish()?;
        let Some(spans) = counted.spans else {
            bail!("{} produced no span count", scenario.label());
        };
        out.push(Cost {
            scenario,
            target_rate: rate,
            load,
            window_requests,
            cpu: Duration::from_nanos(cpu1.saturating_sub(cpu0)),
            peak_rss,
            ratio: counted.ratio().unwrap_or(0.0),
            spans: spans.server,
            requests: counted.requests,
            report: counted.report,
        });
    }
    Ok(out)
}

/// Paced wrk reaches less than the rate asked when responses are slow (each connection waits
/// for its answer before its delay starts): a short run measures the shortfall and adds
/// connections to make it up.
fn calibrate(plan: &mut Plan, rate: u32, scratch: &std::path::Path) -> Result<()> {
    let probe = Plan {
        duration: Duration::from_secs(2),
        ..plan.clone()
    };
    let got = wrk::run(&probe, scratch)?.rps;
    if got > 0.0 && got < 0.95 * f64::from(rate) {
        let scaled = f64::from(plan.connections) * f64::from(rate) / got * 1.05;
        plan.connections = (scaled.ceil() as u32).clamp(plan.connections, 1000);
    }
    Ok(())
}
