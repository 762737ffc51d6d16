//! Per-hit cost: a Go function called in a tight loop (fixtures/go/bench-loop), timed with no
//! probe, with bare tracefs uprobes on its entry and RETs (what any tool attaches to "the
//! function"), with bare uprobes at the sites spanhook picks (the entry probe moved to the
//! first prologue instruction the kernel emulates, see `spanhook::inspect::entry`), and with
//! spanhook's HTTP server programs at those sites (`spanhook probe-cost`), attached as
//! `uprobe_multi` links (the default) and as perf-event uprobes. The loop runs inside a real
//! request's handler and passes that request to the function, so spanhook's programs do their
//! real work.

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use spanhook::inspect::{elf::ElfFile, entry, golang, returns};

use super::{
    machine::{self, BpfStats},
    median,
    process::Proc,
    tracefs::BareProbes,
};

/// The probed function of bench-loop.
pub const FUNCTION: &str = "main.server.handle";

/// Calls per timed run: long enough (≈ 0.5 s with probes) to average out scheduling noise.
const CALLS: u64 = 25_000;

/// What the section measured.
#[derive(Clone, Debug, Default)]
pub struct HitCost {
    /// Uprobe sites (entry + RETs).
    pub sites: usize,
    /// Probe hits per call (entry + the RET taken), from the kernel's run counts.
    pub hits_per_call: f64,
    /// Where spanhook's entry probe sits, in bytes from the function's entry.
    pub entry_site: u64,
    /// Median ns per call, per mode: none, bare on the function, bare at spanhook's sites,
    /// spanhook.
    pub none_ns: f64,
    /// With bare uprobes on the function's entry and RETs.
    pub bare_ns: f64,
    /// With bare uprobes at spanhook's sites.
    pub bare_sites_ns: f64,
    /// With spanhook's programs (`uprobe_multi` links).
    pub ours_ns: f64,
    /// With spanhook's programs as perf-event uprobes (`SPANHOOK_UPROBES=perf`).
    pub ours_perf_ns: f64,
    /// Every run, per mode, for the report.
    pub runs: Vec<(&'static str, Vec<f64>)>,
    /// Average run time of spanhook's entry and return programs (ns), from BPF statistics.
    pub prog_ns: Vec<(String, f64)>,
    /// Events spanhook read in the statistics run ÷ calls made.
    pub events_per_call: f64,
}

impl HitCost {
    /// Cost of one bare uprobe hit (ns).
    pub fn bare_hit(&self) -> f64 {
        (self.bare_ns - self.none_ns) / self.hits_per_call
    }

    /// Cost of one bare uprobe hit at spanhook's sites (ns).
    pub fn bare_sites_hit(&self) -> f64 {
        (self.bare_sites_ns - self.none_ns) / self.hits_per_call
    }

    /// Cost of one hit with spanhook's program (ns).
    pub fn ours_hit(&self) -> f64 {
        (self.ours_ns - self.none_ns) / self.hits_per_call
    }

    /// Cost of one hit with spanhook's program as a perf-event uprobe (ns).
    pub fn ours_perf_hit(&self) -> f64 {
        (self.ours_perf_ns - self.none_ns) / self.hits_per_call
    }

    /// Our cost ÷ the bare probe's on the same function.
    pub fn ratio(&self) -> f64 {
        self.ours_hit() / self.bare_hit()
    }

    /// Our cost ÷ the bare probe's at the same instructions: what the programs add.
    pub fn program_ratio(&self) -> f64 {
        self.ours_hit() / self.bare_sites_hit()
    }
}

/// File offsets of `function`'s entry and RET instructions in `binary`, and the same with the
/// entry moved where spanhook puts it; and that site's distance from the entry.
pub fn sites(binary: &Path, function: &str) -> Result<(Vec<u64>, Vec<u64>, u64)> {
    let elf = ElfFile::open(binary).with_context(|| format!("reading {}", binary.display()))?;
    let found = golang::find_functions(&elf, &[function])?;
    let func = *found
        .get(function)
        .with_context(|| format!("{function} is not in {}", binary.display()))?;
    let rets = returns::function_returns(&elf, func)?;
    let site = entry::entry_site(&elf, func);
    let offsets = |first: u64| -> Result<Vec<u64>> {
        std::iter::once(first)
            .chain(rets.iter().copied())
            .map(|v| {
                elf.vaddr_to_offset(v)
                    .with_context(|| format!("{v:#x} in {} is not file-backed", binary.display()))
            })
            .collect()
    };
    Ok((offsets(func.entry)?, offsets(site)?, site - func.entry))
}

struct Loop {
    proc: Proc,
}

impl Loop {
    fn start(binary: &Path, cpu: Option<usize>) -> Result<Loop> {
        let mut cmd = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string()]).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut proc = Proc::spawn("bench-loop", &mut cmd)?;
        proc.expect_line("ready", Duration::from_secs(20))?;
        Ok(Loop { proc })
    }

    /// Runs `calls` calls; returns the loop thread's CPU time per call (ns), which a busy
    /// machine does not inflate the way it inflates wall-clock time.
    fn run(&mut self, calls: u64) -> Result<f64> {
        let stdin = self.proc.stdin().context("bench-loop has no stdin")?;
        writeln!(stdin, "run {calls}")?;
        stdin.flush()?;
        let line = self.proc.expect_line("ns/call", Duration::from_secs(120))?;
        line.split_whitespace()
            .nth(1)
            .and_then(|cpu| cpu.parse().ok())
            .with_context(|| format!("unreadable \"ns/call WALL CPU\" line {line:?}"))
    }
}

struct Ours {
    proc: Proc,
}

impl Ours {
    /// `perf_event`: perf-event uprobes instead of `uprobe_multi` links.
    fn attach(spanhook: &Path, pid: u32, perf_event: bool) -> Result<Ours> {
        let mut cmd = Command::new(spanhook);
        if perf_event {
            cmd.env("SPANHOOK_UPROBES", "perf");
        }
        cmd.args([
            "probe-cost",
            "--pid",
            &pid.to_string(),
            "--function",
            FUNCTION,
        ])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut proc = Proc::spawn("spanhook probe-cost", &mut cmd)?;
        proc.expect_line("attached", Duration::from_secs(30))?;
        Ok(Ours { proc })
    }

    /// Detaches and returns the events read.
    fn finish(mut self) -> Result<u64> {
        self.proc.signal(libc::SIGINT);
        let events = self.proc.expect_line("events", Duration::from_secs(30))?;
        self.proc.wait(Duration::from_secs(10))?;
        events
            .parse()
            .with_context(|| format!("unreadable event count {events:?}"))
    }
}

/// Runs the section: `rounds` rounds of (none, bare on the function, bare at spanhook's sites,
/// spanhook, spanhook with perf-event uprobes), rotated, medians reported.
pub fn run(spanhook: &Path, binary: &Path, rounds: usize, cpu: Option<usize>) -> Result<HitCost> {
    let (sites, our_sites, entry_site) = sites(binary, FUNCTION)?;
    let mut lp = Loop::start(binary, cpu)?;
    // Warm up: page in the code and let the CPU settle.
    lp.run(CALLS * 100)?;

    // Probe hits per call and the programs' own run time, in a separate run: statistics add
    // two clock reads to every program run, which the timed runs must not pay.
    let (hits_per_call, prog_ns, events_per_call) = {
        let _stats = BpfStats::enable()?;
        let ours = Ours::attach(spanhook, lp.proc.pid(), false)?;
        let before = machine::programs_of(ours.proc.pid())?;
        lp.run(CALLS)?;
        let after = machine::programs_of(ours.proc.pid())?;
        let events = ours.finish()?;
        let mut runs = 0;
        let mut prog_ns = Vec::new();
        for (name, a) in &after {
            let b = before.get(name).copied().unwrap_or_default();
            let (r, ns) = (a.runs - b.runs, a.ns - b.ns);
            if r > 0 {
                runs += r;
                prog_ns.push((name.clone(), ns as f64 / r as f64));
            }
        }
        if runs == 0 {
            bail!("spanhook's programs never ran on {FUNCTION}");
        }
        (
            runs as f64 / CALLS as f64,
            prog_ns,
            events as f64 / CALLS as f64,
        )
    };

    let mut none = Vec::new();
    let mut bare = Vec::new();
    let mut bare_sites = Vec::new();
    let mut ours = Vec::new();
    let mut ours_perf = Vec::new();
    for round in 0..rounds {
        for step in 0..5 {
            match (round + step) % 5 {
                0 => none.push(lp.run(CALLS)?),
                1 => {
                    let probes = BareProbes::attach(binary, &sites)?;
                    bare.push(lp.run(CALLS)?);
                    drop(probes);
                }
                2 => {
                    let probes = BareProbes::attach(binary, &our_sites)?;
                    bare_sites.push(lp.run(CALLS)?);
                    drop(probes);
                }
                3 => {
                    let attached = Ours::attach(spanhook, lp.proc.pid(), false)?;
                    ours.push(lp.run(CALLS)?);
                    attached.finish()?;
                }
                _ => {
                    let attached = Ours::attach(spanhook, lp.proc.pid(), true)?;
                    ours_perf.push(lp.run(CALLS)?);
                    attached.finish()?;
                }
            }
        }
    }
    let result = HitCost {
        sites: sites.len(),
        hits_per_call,
        entry_site,
        none_ns: median(&none),
        bare_ns: median(&bare),
        bare_sites_ns: median(&bare_sites),
        ours_ns: median(&ours),
        ours_perf_ns: median(&ours_perf),
        runs: vec![
            ("no probe", none),
            ("bare uprobe on the function", bare),
            ("bare uprobe at spanhook's sites", bare_sites),
            ("spanhook", ours),
            ("spanhook, perf-event uprobes", ours_perf),
        ],
        prog_ns,
        events_per_call,
    };
    let stdin = lp.proc.stdin().context("bench-loop has no stdin")?;
    let _ = writeln!(stdin, "quit");
    let _ = lp.proc.wait(Duration::from_secs(10));
    Ok(result)
}
