//! The machine under test: what it is (for the report), the kernel file systems the bench needs
//! (tracefs, securityfs), and BPF run-time statistics per program.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::cmd;

/// What the report says about the machine.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// CPU model name.
    pub cpu: String,
    /// Online CPUs.
    pub cores: usize,
    /// Memory in GiB.
    pub memory_gib: f64,
    /// `uname -r`.
    pub kernel: String,
    /// Whether a hypervisor is present (the `hypervisor` CPU flag).
    pub virtualised: bool,
    /// Load averages (1, 5, 15 min) when the measurements started.
    pub load: String,
    /// The Go release the fixtures were built with.
    pub go: String,
    /// `rustc --version`.
    pub rustc: String,
    /// The source measured: `git describe --always --dirty` of the workspace.
    pub revision: String,
}

/// Reads the machine facts.
pub fn facts(go: &str) -> Facts {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let virtualised = cpuinfo
        .lines()
        .any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "hypervisor"));
    let memory_gib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    Facts {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib,
        kernel: cmd::stdout(Command::new("uname").arg("-r")).unwrap_or_default(),
        virtualised,
        load: load(),
        go: go.to_string(),
        rustc: cmd::stdout(Command::new("rustc").arg("--version")).unwrap_or_default(),
        revision: cmd::stdout(
            Command::new("git")
                .current_dir(crate::root())
                .args(["describe", "--always", "--dirty"]),
        )
        .unwrap_or_else(|_| "not a git checkout".into()),
    }
}

/// The load averages, as `/proc/loadavg` shows them.
pub fn load() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The one-minute load average.
pub fn load1() -> f64 {
    load()
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn mounted(path: &Path, fstype: &str) -> bool {
    fs::read_to_string("/proc/mounts").is_ok_and(|m| {
        m.lines().any(|l| {
            let mut f = l.split_whitespace();
            let (_, at, kind) = (f.next(), f.next(), f.next());
            at == Some(&*path.to_string_lossy()) && kind == Some(fstype)
        })
    })
}

fn ensure_mounted(path: &Path, fstype: &str) -> Result<()> {
    if mounted(path, fstype) {
        return Ok(());
    }
    cmd::run(
        Command::new("mount")
            .args(["-t", fstype, "nodev"])
            .arg(path),
    )
    .with_context(|| format!("mounting {fstype} at {}", path.display()))
}

/// The tracefs directory, mounted if it is not yet.
pub fn tracefs() -> Result<PathBuf> {
    let path = PathBuf::from("/sys/kernel/tracing");
    ensure_mounted(&path, "tracefs")?;
    if !path.join("uprobe_events").is_file() {
        bail!(
            "{} has no uprobe_events: this kernel has no uprobe events (CONFIG_UPROBE_EVENTS)",
            path.display()
        );
    }
    Ok(path)
}

/// Mounts securityfs, where OBI reads the kernel lockdown mode (without it, OBI loads programs
/// that write to user memory, which a locked-down kernel refuses).
pub fn securityfs() -> Result<()> {
    ensure_mounted(Path::new("/sys/kernel/security"), "securityfs")
}

/// BPF run-time statistics (`kernel.bpf_stats_enabled`) on while the guard lives.
pub struct BpfStats {
    before: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    /// Turns statistics on.
    pub fn enable() -> Result<BpfStats> {
        let before = fs::read_to_string(BPF_STATS)
            .with_context(|| format!("reading {BPF_STATS}"))?
            .trim()
            .to_string();
        fs::write(BPF_STATS, "1").with_context(|| format!("writing 1 to {BPF_STATS}"))?;
        Ok(BpfStats { before })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = fs::write(BPF_STATS, &self.before);
    }
}

/// Run count and total run time of one BPF program.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProgStats {
    /// Times it ran.
    pub runs: u64,
    /// Nanoseconds it ran, in total.
    pub ns: u64,
}

/// Statistics of every BPF program held by process `pid`, by program name (summed over
/// programs of the same name). Needs [`BpfStats`] enabled for non-zero values.
///
/// The programs are found through the process's file descriptors (`/proc/PID/fdinfo` holds
/// each program's id and run counters); bpftool names them.
pub fn programs_of(pid: u32) -> Result<BTreeMap<String, ProgStats>> {
    let mut by_id: BTreeMap<u64, ProgStats> = BTreeMap::new();
    let fds = format!("/proc/{pid}/fd");
    for entry in fs::read_dir(&fds).with_context(|| format!("reading {fds}"))? {
        let entry = entry?;
        let is_prog =
            fs::read_link(entry.path()).is_ok_and(|l| l.to_string_lossy() == "anon_inode:bpf-prog");
        if !is_prog {
            continue;
        }
        let info = format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy());
        let Ok(text) = fs::read_to_string(&info) else {
            continue; // closed meanwhile
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim_start_matches(':').trim().parse::<u64>().ok())
        };
        if let Some(id) = field("prog_id") {
            by_id.insert(
                id,
                ProgStats {
                    runs: field("run_cnt").unwrap_or(0),
                    ns: field("run_time_ns").unwrap_or(0),
                },
            );
        }
    }
    let names = program_names().unwrap_or_default();
    let mut stats: BTreeMap<String, ProgStats> = BTreeMap::new();
    for (id, s) in by_id {
        let name = names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("prog {id}"));
        let total = stats.entry(name).or_default();
        total.runs += s.runs;
        total.ns += s.ns;
    }
    Ok(stats)
}

/// Every loaded program's name by id, from bpftool.
fn program_names() -> Result<BTreeMap<u64, String>> {
    let out = cmd::stdout(Command::new(bpftool()).args(["prog", "show", "--json"]))?;
    let progs: serde_json::Value =
        serde_json::from_str(&out).context("parsing `bpftool prog show --json`")?;
    Ok(progs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["id"].as_u64()?, p["name"].as_str()?.to_string())))
        .collect())
}

fn bpftool() -> PathBuf {
    if cmd::on_path("bpftool") {
        PathBuf::from("bpftool")
    } else {
        PathBuf::from("/usr/sbin/bpftool")
    }
}
