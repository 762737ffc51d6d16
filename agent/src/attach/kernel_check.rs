//! What the running kernel lets spanhook do, found out at start and explained before anything
//! is loaded: kernel lockdown (`/sys/kernel/security/lockdown`), kernel BTF, and — probed for
//! real by loading two-instruction programs, never guessed from the version number, since
//! distributions backport BPF features — the ring buffer map, the `bpf_loop`,
//! `bpf_probe_read_user` and `bpf_probe_read_kernel` helpers, the uprobe PMU and tracefs.
//!
//! What each lockdown level blocks (Linux `include/linux/security.h`, `kernel/trace/bpf_trace.c`,
//! `fs/tracefs/inode.c`):
//!
//! * `integrity` blocks `bpf_probe_write_user` (`LOCKDOWN_BPF_WRITE_USER`), which spanhook does
//!   not use (propagation writes with `sk_msg` helpers, not into the target's memory): nothing
//!   is limited.
//! * `confidentiality` also takes away `bpf_probe_read_kernel` (`LOCKDOWN_BPF_READ_KERNEL`) and
//!   tracefs (`LOCKDOWN_TRACEFS`). Uprobes and `bpf_probe_read_user` are not covered by
//!   lockdown, so the symbol-level Go and Rust programs would verify; but the socket-level
//!   programs, the libssl uprobes and the propagation `sk_msg` program read kernel socket
//!   structures with `bpf_probe_read_kernel`, syscall and exec/exit tracepoints are found
//!   through tracefs, and this build loads every uprobe program (the libssl ones included)
//!   at start: it cannot start there, and says so instead of failing in the verifier.

use std::path::Path;

/// Where the kernel publishes its lockdown level (the `lockdown` LSM).
pub const LOCKDOWN_FILE: &str = "/sys/kernel/security/lockdown";
/// The kernel's own BTF, which CO-RE relocations are resolved against.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
/// The perf PMU uprobes are created through.
const UPROBE_PMU: &str = "/sys/bus/event_source/devices/uprobe/type";
/// A tracepoint id file, in either place tracefs is mounted.
const TRACEFS_PROBE: &[&str] = &[
    "/sys/kernel/tracing/events/sched/sched_process_exec/id",
    "/sys/kernel/debug/tracing/events/sched/sched_process_exec/id",
];

/// The kernel lockdown level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lockdown {
    /// No lockdown LSM in this kernel (the file is absent).
    Absent,
    /// `none`.
    None,
    /// `integrity`: the kernel may not be modified from user space.
    Integrity,
    /// `confidentiality`: neither modified nor read.
    Confidentiality,
}

impl Lockdown {
    /// Parses the file's content, e.g. `none [integrity] confidentiality`: the level in
    /// brackets is the active one. `None` when no bracketed level is recognised.
    pub fn parse(text: &str) -> Option<Lockdown> {
        let active = text
            .split_whitespace()
            .find_map(|w| w.strip_prefix('[')?.strip_suffix(']'))?;
        match active {
            "none" => Some(Lockdown::None),
            "integrity" => Some(Lockdown::Integrity),
            "confidentiality" => Some(Lockdown::Confidentiality),
            _ => None,
        }
    }

    /// Reads the running kernel's level.
    pub fn read() -> Lockdown {
        match std::fs::read_to_string(LOCKDOWN_FILE) {
            Ok(text) => Lockdown::parse(&text).unwrap_or(Lockdown::None),
            Err(_) => Lockdown::Absent,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Lockdown::Absent => "no lockdown LSM",
            Lockdown::None => "none",
            Lockdown::Integrity => "integrity",
            Lockdown::Confidentiality => "confidentiality",
        }
    }
}

/// `major.minor.patch` of a release string such as `6.18.44-fc-v509` or `5.4.0-150-generic`.
pub fn parse_release(release: &str) -> Option<(u32, u32, u32)> {
    let numeric = release
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()?;
    let mut parts = numeric.split('.').filter(|p| !p.is_empty());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    Some((major, minor, patch))
}

/// What was found about the running kernel. A probed feature is `None` when it could not be
/// probed (no privilege to load a program): the loader's own error then says why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelFacts {
    /// `uname -r`.
    pub release: String,
    /// Lockdown level.
    pub lockdown: Lockdown,
    /// `/sys/kernel/btf/vmlinux` is there.
    pub btf: bool,
    /// `BPF_MAP_TYPE_RINGBUF` can be created (Linux 5.8).
    pub ringbuf: Option<bool>,
    /// `bpf_loop` is callable from a kprobe/uprobe program (Linux 5.17).
    pub bpf_loop: Option<bool>,
    /// `bpf_probe_read_user` is callable from a kprobe/uprobe program (Linux 5.5).
    pub probe_read_user: Option<bool>,
    /// `bpf_probe_read_kernel` is callable from a kprobe/uprobe program (Linux 5.5; taken
    /// away by `confidentiality` lockdown).
    pub probe_read_kernel: Option<bool>,
    /// The uprobe perf PMU exists (`CONFIG_UPROBE_EVENTS`).
    pub uprobe_pmu: bool,
    /// A tracepoint id can be read from tracefs.
    pub tracefs: bool,
}

/// What the facts mean for spanhook.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assessment {
    /// Reasons the programs cannot load here at all; empty when they can.
    pub unsupported: Vec<String>,
    /// What does not work here, and what still does.
    pub limits: Vec<String>,
    /// One line on what was found.
    pub summary: String,
}

impl KernelFacts {
    /// Looks at the running kernel (a few milliseconds: four tiny programs and a map).
    pub fn detect() -> KernelFacts {
        use aya::{
            maps::MapType,
            programs::ProgramType,
            sys::{is_helper_supported, is_map_supported, BpfHelper},
        };
        // Without CAP_BPF and CAP_PERFMON nothing can be probed (a refusal would read as
        // "unsupported"); the loader names the missing capability instead.
        let missing = super::features::missing_capabilities();
        let may_probe = !missing.contains(&"CAP_BPF") && !missing.contains(&"CAP_PERFMON");
        let helper = |h: BpfHelper| {
            may_probe
                .then(|| is_helper_supported(ProgramType::KProbe, h).ok())
                .flatten()
        };
        KernelFacts {
            release: release(),
            lockdown: Lockdown::read(),
            btf: Path::new(VMLINUX_BTF).exists(),
            ringbuf: may_probe
                .then(|| is_map_supported(MapType::RingBuf).ok())
                .flatten(),
            bpf_loop: helper(BpfHelper::BPF_FUNC_loop),
            probe_read_user: helper(BpfHelper::BPF_FUNC_probe_read_user),
            probe_read_kernel: helper(BpfHelper::BPF_FUNC_probe_read_kernel),
            uprobe_pmu: Path::new(UPROBE_PMU).exists(),
            tracefs: TRACEFS_PROBE
                .iter()
                .any(|p| std::fs::read_to_string(p).is_ok()),
        }
    }

    /// Decides what works. Only features probed as absent make the kernel unsupported.
    pub fn assess(&self) -> Assessment {
        let mut a = Assessment::default();
        let version = parse_release(&self.release)
            .map(|(x, y, _)| format!("Linux {x}.{y}"))
            .unwrap_or_else(|| format!("kernel {}", self.release));
        if self.ringbuf == Some(false) {
            a.unsupported.push(format!(
                "{version} has no BPF ring buffer (BPF_MAP_TYPE_RINGBUF, Linux 5.8 or a distribution backport), which every probe sends its events through"
            ));
        }
        if self.bpf_loop == Some(false) {
            a.unsupported.push(format!(
                "{version} has no bpf_loop helper (Linux 5.17), which the gRPC, hyper and HTTP/2 programs loop with"
            ));
        }
        if self.probe_read_user == Some(false) {
            a.unsupported.push(format!(
                "{version} has no bpf_probe_read_user helper (Linux 5.5), which every uprobe reads the target's memory with"
            ));
        }
        if !self.uprobe_pmu {
            a.unsupported.push(format!(
                "{version} has no uprobe PMU ({UPROBE_PMU}; CONFIG_UPROBE_EVENTS), through which uprobes are created"
            ));
        }
        match self.probe_read_kernel {
            Some(false) if self.lockdown == Lockdown::Confidentiality => {
                a.unsupported.push(
                    "kernel lockdown is `confidentiality`: the kernel refuses bpf_probe_read_kernel and tracefs to BPF programs. Uprobes reading user memory are not affected, so symbol-level Go and Rust tracing would verify, but the libssl uprobes this build loads at start, the socket-level capture and --propagate read kernel socket structures, and syscall and exec/exit tracepoints are found through tracefs. Boot with lockdown=integrity (or none) to trace here".to_string(),
                );
            }
            Some(false) => a.unsupported.push(format!(
                "{version} refuses bpf_probe_read_kernel to kprobe/uprobe programs, which the socket-level and libssl programs read socket structures with"
            )),
            _ => {}
        }
        if !self.btf {
            a.limits.push(format!(
                "no kernel BTF ({VMLINUX_BTF}): the socket-level, libssl and propagation programs read kernel structures through CO-RE and may fail to load or attach; Go and Rust symbol-level tracing does not read kernel structures"
            ));
        }
        if !self.tracefs && self.lockdown != Lockdown::Confidentiality {
            a.limits.push(
                "tracefs is not mounted or not readable (/sys/kernel/tracing): syscall tracepoints (`--capture sockets`) cannot attach, and `spanhook daemon` polls /proc instead of using exec/exit events".to_string(),
            );
        }
        let lockdown = match self.lockdown {
            Lockdown::Integrity => {
                "lockdown integrity (blocks only bpf_probe_write_user, which spanhook does not use: nothing is limited)"
                    .to_string()
            }
            other => format!("lockdown {}", other.name()),
        };
        let yes_no = |name: &str, v: Option<bool>| match v {
            Some(true) => name.to_string(),
            Some(false) => format!("no {name}"),
            None => format!("{name} not probed"),
        };
        a.summary = format!(
            "{version} ({}): {}, {}, {}, {}, {}, {}, {}; {lockdown}",
            self.release,
            if self.btf { "BTF" } else { "no BTF" },
            yes_no("ring buffer", self.ringbuf),
            yes_no("bpf_loop", self.bpf_loop),
            yes_no("bpf_probe_read_user", self.probe_read_user),
            yes_no("bpf_probe_read_kernel", self.probe_read_kernel),
            if self.uprobe_pmu {
                "uprobes"
            } else {
                "no uprobes"
            },
            if self.tracefs {
                "tracefs"
            } else {
                "no tracefs"
            },
        );
        a
    }
}

/// `uname -r` of the running kernel.
fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// Looks at the kernel, logs what was found and what does not work, and returns why the
/// programs cannot load here, if they cannot.
pub fn check_at_start() -> Result<(), String> {
    let facts = KernelFacts::detect();
    let a = facts.assess();
    tracing::info!("kernel: {}", a.summary);
    for limit in &a.limits {
        tracing::warn!("kernel: {limit}");
    }
    if a.unsupported.is_empty() {
        Ok(())
    } else {
        Err(a.unsupported.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modern() -> KernelFacts {
        KernelFacts {
            release: "6.18.44-fc-v509".into(),
            lockdown: Lockdown::None,
            btf: true,
            ringbuf: Some(true),
            bpf_loop: Some(true),
            probe_read_user: Some(true),
            probe_read_kernel: Some(true),
            uprobe_pmu: true,
            tracefs: true,
        }
    }

    #[test]
    fn lockdown_levels_parse() {
        assert_eq!(
            Lockdown::parse("[none] integrity confidentiality\n"),
            Some(Lockdown::None)
        );
        assert_eq!(
            Lockdown::parse("none [integrity] confidentiality\n"),
            Some(Lockdown::Integrity)
        );
        assert_eq!(
            Lockdown::parse("none integrity [confidentiality]"),
            Some(Lockdown::Confidentiality)
        );
        assert_eq!(Lockdown::parse("none integrity confidentiality"), None);
        assert_eq!(Lockdown::parse(""), None);
        assert_eq!(Lockdown::parse("[bogus]"), None);
    }

    #[test]
    fn releases_parse() {
        assert_eq!(parse_release("6.18.44-fc-v509"), Some((6, 18, 44)));
        assert_eq!(parse_release("5.4.0-150-generic"), Some((5, 4, 0)));
        assert_eq!(parse_release("4.18.0-553.el8_10.x86_64"), Some((4, 18, 0)));
        assert_eq!(parse_release("6.1"), Some((6, 1, 0)));
        assert_eq!(parse_release("6.10.0+"), Some((6, 10, 0)));
        assert_eq!(parse_release("unknown"), None);
        assert_eq!(parse_release(""), None);
    }

    #[test]
    fn a_modern_kernel_is_supported_without_limits() {
        let a = modern().assess();
        assert!(a.unsupported.is_empty(), "{a:?}");
        assert!(a.limits.is_empty(), "{a:?}");
        assert!(a.summary.starts_with("Linux 6.18 (6.18.44-fc-v509): BTF"));
    }

    #[test]
    fn integrity_lockdown_limits_nothing() {
        let a = KernelFacts {
            lockdown: Lockdown::Integrity,
            ..modern()
        }
        .assess();
        assert!(a.unsupported.is_empty() && a.limits.is_empty(), "{a:?}");
        assert!(a
            .summary
            .contains("lockdown integrity (blocks only bpf_probe_write_user"));
    }

    #[test]
    fn confidentiality_lockdown_is_explained() {
        let a = KernelFacts {
            lockdown: Lockdown::Confidentiality,
            probe_read_kernel: Some(false),
            tracefs: false,
            ..modern()
        }
        .assess();
        assert_eq!(a.unsupported.len(), 1, "{a:?}");
        let why = &a.unsupported[0];
        assert!(why.contains("confidentiality"), "{why}");
        assert!(why.contains("symbol-level Go and Rust tracing would verify"));
        assert!(why.contains("lockdown=integrity"));
        // tracefs is explained by the lockdown, not reported twice.
        assert!(a.limits.is_empty(), "{a:?}");
    }

    #[test]
    fn old_kernels_name_the_missing_feature_and_its_release() {
        let a = KernelFacts {
            release: "5.4.0-150-generic".into(),
            ringbuf: Some(false),
            bpf_loop: Some(false),
            btf: false,
            ..modern()
        }
        .assess();
        assert_eq!(a.unsupported.len(), 2, "{a:?}");
        assert!(a.unsupported[0].contains("Linux 5.4 has no BPF ring buffer"));
        assert!(a.unsupported[1].contains("no bpf_loop helper (Linux 5.17)"));
        assert_eq!(a.limits.len(), 1);
        assert!(a.limits[0].contains("no kernel BTF"));
    }

    #[test]
    fn unprobed_features_are_not_held_against_the_kernel() {
        // Without the privilege to load a program nothing can be probed; the loader then
        // names the missing capability.
        let a = KernelFacts {
            release: "4.18.0-553.el8_10.x86_64".into(),
            ringbuf: None,
            bpf_loop: None,
            probe_read_user: None,
            probe_read_kernel: None,
            ..modern()
        }
        .assess();
        assert!(a.unsupported.is_empty(), "{a:?}");
        assert!(a.summary.contains("ring buffer not probed"));
    }

    #[test]
    fn missing_uprobes_and_tracefs_are_named() {
        let a = KernelFacts {
            uprobe_pmu: false,
            tracefs: false,
            ..modern()
        }
        .assess();
        assert!(a.unsupported[0].contains("CONFIG_UPROBE_EVENTS"));
        assert!(a.limits[0].contains("polls /proc"));
    }
}
