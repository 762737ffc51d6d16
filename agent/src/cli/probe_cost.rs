//! `spanhook probe-cost` (hidden; for developers and `cargo xtask bench`): spanhook's real HTTP
//! server programs on any Go function of a running process, to measure what they cost per hit.
//!
//! It attaches the server's entry program where `spanhook attach` would put it (the entry, or
//! the cheaper prologue instruction `inspect::entry` picks) and its return program at each of
//! the function's RET instructions, with the configuration (struct offsets, flags) the
//! process would get from `spanhook attach`. Events are read and discarded, so the cost seen is
//! the kernel side plus the reader's wakeups, not span export. It runs until SIGINT or SIGTERM,
//! then prints `events N` and the probes' counters on stdout.
//!
//! The function should have the argument layout of `net/http.serverHandler.ServeHTTP` (a
//! one-word receiver, a `ResponseWriter`, a `*Request`) for the programs to read what they read
//! in production; on any other function they read nothing and fail softly, which is cheaper.

use std::{io::Write, process::ExitCode};

use anyhow::{bail, Context, Result};
use clap::Args;
use tokio::signal::unix::SignalKind;

use crate::{
    attach::{AttachRequest, Probes},
    inspect::{elf::ElfFile, golang, process::Process},
    plan::{self, catalog::GO_PROBES, Capability, OffsetTable},
};

/// Flags of `spanhook probe-cost`.
#[derive(Args, Debug)]
pub struct ProbeCostArgs {
    /// The process whose executable holds the function.
    #[arg(long)]
    pub pid: u32,
    /// The Go function, as Go's function table names it (e.g. `main.server.handle`).
    #[arg(long)]
    pub function: String,
}

/// Runs `spanhook probe-cost`.
pub async fn run(args: ProbeCostArgs) -> Result<ExitCode> {
    let process = Process::open(args.pid)?;
    let elf = ElfFile::open(&process.exe_link)
        .with_context(|| format!("cannot read the executable of pid {}", args.pid))?;
    let (_, go_plan) = plan::target::plan_file(&elf, &OffsetTable::embedded(), Default::default())
        .with_context(|| format!("pid {} ({})", args.pid, process.exe.display()))?;
    let probe = GO_PROBES
        .iter()
        .find(|p| p.capability == Capability::GoHttpServer)
        .context("the catalog has no HTTP server probe")?;
    let (Some(entry_program), Some(return_program)) = (probe.entry_program, probe.return_program)
    else {
        bail!("the HTTP server probe lacks an entry or a return program");
    };
    let mut config = go_plan.config;
    config.flags |= probe.flags;

    let functions = golang::find_functions(&elf, &[args.function.as_str()])
        .with_context(|| format!("reading the function table of {}", process.exe.display()))?;
    let Some(&func) = functions.get(&args.function) else {
        bail!(
            "{} is not in {} (name it as Go's function table does, e.g. main.server.handle)",
            args.function,
            process.exe.display()
        );
    };
    let sites = plan::resolve::function_sites(
        &elf,
        &args.function,
        func,
        Some(entry_program),
        Some(return_program),
    )
    .map_err(anyhow::Error::msg)?;

    let mut probes = Probes::load()?;
    probes.attach(&AttachRequest {
        pid: args.pid,
        binary: process.exe_link.clone(),
        config,
        sites: sites.clone(),
    })?;
    let mut reader = probes.event_reader()?;
    tracing::info!(
        "pid {}: {} uprobes on {} ({} RET sites); reading events until interrupted",
        args.pid,
        sites.len(),
        args.function,
        sites.len() - 1
    );
    println!("attached {}", sites.len());
    std::io::stdout().flush()?;

    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut events: u64 = 0;
    loop {
        let stop = tokio::select! {
            _ = reader.ready() => false,
            _ = sigint.recv() => true,
            _ = sigterm.recv() => true,
        };
        events += reader.drain(|_| {}) as u64;
        if stop {
            break;
        }
    }
    probes.detach(args.pid);
    let counters: Vec<String> = probes
        .counters()
        .into_iter()
        .map(|(c, n)| format!("{}={n}", c.name()))
        .collect();
    println!("events {events}");
    println!("counters {}", counters.join(" "));
    Ok(ExitCode::SUCCESS)
}
