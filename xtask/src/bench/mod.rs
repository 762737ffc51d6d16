//! `cargo xtask bench`: where spanhook stands against the floor (a bare uprobe on the same
//! functions) and against the reference agent (OBI) and hand instrumentation (otelhttp),
//! measured side by side in one run and reported as ratios.
//!
//! Sections, each a file: per-hit cost ([`hitcost`]), probe hits per request and throughput /
//! latency under wrk ([`load`]), the agent's own CPU and memory ([`agentcost`]), analysing and
//! attaching to a large binary ([`attachcost`]). [`scenario`] runs a server under one tracer
//! the same way for every section; [`receiver`] is the Collector every tracer exports to;
//! [`report`] prints the tables and writes BENCHMARKS.md and its plots.
//!
//! Everything the bench starts is stopped, and every uprobe it places removed, even when it
//! fails or is interrupted (Ctrl-C): processes run in their own process groups and die with
//! the bench; bare uprobes live in one tracefs group that is removed on exit and at start.

mod agentcost;
mod attachcost;
mod hitcost;
mod load;
mod machine;
mod obi;
mod plot;
mod process;
mod receiver;
mod report;
mod rust;
mod scale;
mod scenario;
mod tracefs;
mod wrk;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{collector, fixtures, setup};

/// Options of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// OBI's binary (`ebpf-instrument`) to compare against [default: $SPANHOOK_BENCH_OBI].
    #[arg(long, value_name = "PATH")]
    pub obi: Option<PathBuf>,
    /// Seconds of each measured load run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Runs of each measurement; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Only these sections (hitcost, hits, load, agent, attach, scale, rust) [default: all].
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Let the server and the load generator share CPUs instead of pinning them apart.
    #[arg(long)]
    pub no_pin: bool,
    /// Print the results only; leave BENCHMARKS.md and docs/ alone.
    #[arg(long)]
    pub no_write: bool,
}

const SECTIONS: &[&str] = &[
    "hitcost", "hits", "load", "agent", "attach", "scale", "rust",
];

/// The median of `values` (NaN when empty).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs the benchmarks.
pub fn run(args: &Args) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the benchmarks load eBPF programs and place uprobes: run `cargo xtask bench` as root"
        );
    }
    for s in &args.only {
        if !SECTIONS.contains(&s.as_str()) {
            bail!("unknown section {s:?}; sections: {}", SECTIONS.join(", "));
        }
    }
    if args.repeat == 0 || args.seconds == 0 {
        bail!("--repeat and --seconds must be at least 1");
    }
    let wants = |s: &str| args.only.is_empty() || args.only.iter().any(|o| o == s);
    let obi = args
        .obi
        .clone()
        .or_else(|| std::env::var_os("SPANHOOK_BENCH_OBI").map(PathBuf::from));
    if let Some(o) = &obi {
        if !o.is_file() {
            bail!("the OBI binary {} does not exist", o.display());
        }
    }
    let started = Instant::now();
    process::install_interrupt_handler()?;

    let tools = setup::run()?;
    let newest = fixtures::GO_RELEASES
        .last()
        .context("no Go release in the matrix")?
        .to_string();
    let programs = [
        "bench-loop",
        "bench-server",
        "bench-otelhttp",
        "bench-biggen",
    ];
    let built = fixtures::build(
        &tools,
        &fixtures::Args {
            go: vec![newest.clone()],
            variant: Vec::new(),
            program: programs.iter().map(|p| p.to_string()).collect(),
        },
    )?;
    let fixture = |name: &str| {
        built
            .iter()
            .find(|b| b.program == name)
            .map(|b| b.path.clone())
            .with_context(|| format!("the fixture {name} was not built"))
    };
    let otelcol = collector::ensure(&tools)?;
    eprintln!("bench: building spanhook (release)");
    let spanhook = crate::release_agent()?;
    if args.only == ["scale"] {
        return scale::run(&spanhook, &fixture("bench-server")?, args.no_write);
    }
    let big = if wants("attach") {
        Some(attachcost::build(
            &tools,
            &fixture("bench-biggen")?,
            &newest,
        )?)
    } else {
        None
    };
    let setup_time = started.elapsed();

    let facts = machine::facts(&newest);
    eprintln!(
        "bench: {} ({} CPUs{}), kernel {}, load {}",
        facts.cpu,
        facts.cores,
        if facts.virtualised {
            ", virtualised"
        } else {
            ""
        },
        facts.kernel,
        facts.load
    );
    if machine::load1() > 1.0 {
        eprintln!(
            "bench: warning: the machine is busy (load {}); absolute figures will be low and \
             noisy — the ratios, measured side by side, still compare",
            facts.load
        );
    }
    tracefs::remove_stale()?;
    if obi.is_some() {
        machine::securityfs()?;
    }
    let (server_cpu, load_cpu) = if args.no_pin || facts.cores < 2 {
        (None, None)
    } else {
        (Some(0), Some(1))
    };

    let scratch = receiver::scratch_dir("run");
    std::fs::create_dir_all(&scratch)?;
    let receiver = receiver::Receiver::start(&otelcol, &scratch)?;
    let rust_beside_go = |server: &std::path::Path| -> Result<()> {
        let rust_server = crate::fixtures_rust::build_release("httpchain")?;
        rust::run(
            &rust::Setup {
                spanhook: &spanhook,
                endpoint: receiver.endpoint(),
                scratch: &scratch,
                server_cpu,
                load_cpu,
                duration: Duration::from_secs(args.seconds),
            },
            &[
                rust::Server {
                    label: "Go net/http (bench-server)",
                    binary: server,
                    path: "/hello",
                },
                rust::Server {
                    label: "Rust axum/hyper (httpchain)",
                    binary: &rust_server,
                    path: "/leaf/1",
                },
            ],
            args.no_write,
        )
    };
    if args.only == ["rust"] {
        return rust_beside_go(&fixture("bench-server")?);
    }
    let server = fixture("bench-server")?;
    let bed = scenario::Bed {
        spanhook: spanhook.clone(),
        server_sites: server_sites(&server)?,
        server,
        otelhttp: fixture("bench-otelhttp")?,
        obi: obi.clone(),
        receiver: &receiver,
        scratch: scratch.clone(),
        server_cpu,
        load_cpu,
    };
    let mut agents = vec![scenario::Scenario::Spanhook];
    if obi.is_some() {
        agents.push(scenario::Scenario::Obi);
    }
    let duration = Duration::from_secs(args.seconds);
    let mut results = report::Results {
        command: command_line(args, obi.as_deref()),
        facts,
        setup_time,
        obi: obi.clone(),
        obi_settings: obi::settings(0, &receiver.endpoint()),
        ..Default::default()
    };

    if let Some(big) = &big {
        eprintln!("bench: analysis and attach, large binary");
        let small = attachcost::measure(&spanhook, &bed.server, args.repeat + 2)?;
        let large = attachcost::measure(&spanhook, &big.path, args.repeat + 2)?;
        results.attach = Some(report::Attach {
            big_size: big.size,
            big_functions: big.functions,
            small_size: std::fs::metadata(&bed.server)?.len(),
            small,
            large,
            runs: args.repeat + 2,
        });
    }
    if wants("hitcost") {
        eprintln!("bench: per-hit cost");
        results.hitcost = Some(hitcost::run(
            &spanhook,
            &fixture("bench-loop")?,
            args.repeat + 2,
            load_cpu,
        )?);
    }
    if wants("hits") {
        eprintln!("bench: probe hits per request");
        results.hits = load::hits(&bed, &agents)?;
    }
    if wants("load") {
        let mut scenarios = vec![
            scenario::Scenario::NoAgent,
            scenario::Scenario::Bare,
            scenario::Scenario::Spanhook,
        ];
        if obi.is_some() {
            scenarios.push(scenario::Scenario::Obi);
        }
        scenarios.push(scenario::Scenario::Otelhttp);
        results.load = load::run(&bed, &scenarios, args.repeat, duration)?;
    }
    if wants("agent") {
        for &agent in &agents {
            results
                .agent
                .extend(agentcost::run(&bed, agent, &[1_000, 10_000], duration * 2)?);
        }
        // The RED metrics' share of the agent's CPU: the same runs with them off.
        results.agent.extend(agentcost::run(
            &bed,
            scenario::Scenario::SpanhookNoMetrics,
            &[1_000, 10_000],
            duration * 2,
        )?);
    }
    if wants("rust") {
        rust_beside_go(&bed.server)?;
    }
    results.malformed = receiver.malformed();
    results.total_time = started.elapsed();
    let markdown = report::markdown(&results);
    println!("{markdown}");
    if !args.no_write {
        report::write(&results, &markdown)?;
    }
    if wants("scale") {
        scale::run(&spanhook, &fixture("bench-server")?, args.no_write)?;
    }
    Ok(())
}

/// File offsets where spanhook probes the server (entry and RETs of `ServeHTTP`), for the
/// bare-uprobe floor.
fn server_sites(server: &std::path::Path) -> Result<Vec<u64>> {
    let elf = spanhook::inspect::elf::ElfFile::open(server)?;
    let (_, plan) = spanhook::plan::target::plan_file(
        &elf,
        &spanhook::plan::OffsetTable::embedded(),
        Default::default(),
    )
    .with_context(|| format!("planning {}", server.display()))?;
    if plan.sites.is_empty() {
        bail!("spanhook plans no probe in {}", server.display());
    }
    Ok(plan.sites.iter().map(|s| s.offset).collect())
}

fn command_line(args: &Args, obi: Option<&std::path::Path>) -> String {
    let mut c = String::from("cargo xtask bench");
    if let Some(o) = obi {
        c.push_str(&format!(" --obi {}", o.display()));
    }
    if args.seconds != 5 {
        c.push_str(&format!(" --seconds {}", args.seconds));
    }
    if args.repeat != 3 {
        c.push_str(&format!(" --repeat {}", args.repeat));
    }
    if !args.only.is_empty() {
        c.push_str(&format!(" --only {}", args.only.join(",")));
    }
    if args.no_pin {
        c.push_str(" --no-pin");
    }
    c
}
