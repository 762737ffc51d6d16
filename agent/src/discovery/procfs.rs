//! What `/proc` says about a process, read once per decision: executable, name, command line,
//! environment, cgroup, and (only when a selector asks) its listening TCP ports.

use std::{cell::OnceCell, collections::HashSet, path::PathBuf};

use super::{container::ContainerInfo, kube::PodFacts};

/// Every process id in `/proc`.
pub fn pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The process's start time (clock ticks after boot, `/proc/PID/stat` field 22): with the
/// pid, it names one process for good, whatever reuses the pid later.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// How long ago a process that started at `start` (clock ticks after boot, as
/// [`start_time`] gives it) started.
pub fn age(start: u64) -> Option<std::time::Duration> {
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    let up: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks <= 0 {
        return None;
    }
    let started = start as f64 / ticks as f64;
    Some(std::time::Duration::from_secs_f64((up - started).max(0.0)))
}

/// Whether the process `pid` that started at `start` still runs: not gone, not a zombie
/// waiting to be reaped, and not replaced by another process under the same pid.
pub fn running(pid: u32, start: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z" | "X" | "x")) && parse_start_time(&stat) == Some(start)
}

fn parse_start_time(stat: &str) -> Option<u64> {
    // The name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The facts selectors look at.
#[derive(Debug, Default)]
pub struct ProcessFacts {
    /// Process id.
    pub pid: u32,
    /// Executable path (as the process sees it; " (deleted)" removed).
    pub exe: PathBuf,
    /// `/proc/PID/comm` (at most 15 bytes).
    pub comm: String,
    /// Command line arguments.
    pub cmdline: Vec<String>,
    /// Environment.
    pub env: Vec<(String, String)>,
    /// cgroup path, container and pod.
    pub container: ContainerInfo,
    /// The pod, as the Kubernetes watch knows it (filled by the daemon, not by [`Self::read`]).
    pub pod: PodFacts,
    /// Listening TCP ports, read on first use.
    pub(super) ports: OnceCell<Vec<u16>>,
}

impl ProcessFacts {
    /// Reads `/proc/PID`; `None` for kernel threads and processes that are gone.
    pub fn read(pid: u32) -> Option<Self> {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let exe = std::fs::read_link(proc.join("exe")).ok()?;
        let exe = PathBuf::from(
            exe.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_string(),
        );
        let comm = std::fs::read_to_string(proc.join("comm"))
            .unwrap_or_default()
            .trim_end()
            .to_string();
        let split = |bytes: Vec<u8>| -> Vec<String> {
            bytes
                .split(|&b| b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        };
        let cmdline = split(std::fs::read(proc.join("cmdline")).unwrap_or_default());
        let env = split(std::fs::read(proc.join("environ")).unwrap_or_default())
            .into_iter()
            .filter_map(|e| {
                let (k, v) = e.split_once('=')?;
                Some((k.to_string(), v.to_string()))
            })
            .collect();
        let container = ContainerInfo::from_proc_cgroup(
            &std::fs::read_to_string(proc.join("cgroup")).unwrap_or_default(),
        );
        Some(Self {
            pid,
            exe,
            comm,
            cmdline,
            env,
            container,
            pod: PodFacts::None,
            ports: OnceCell::new(),
        })
    }

    /// Facts given directly (tests).
    pub fn with_ports(mut self, ports: Vec<u16>) -> Self {
        self.ports = OnceCell::from(ports);
        self
    }

    /// The executable's file name.
    pub fn exe_name(&self) -> String {
        self.exe
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The value of environment variable `key`.
    pub fn env(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// TCP ports the process listens on (IPv4 and IPv6, in its own network namespace).
    pub fn ports(&self) -> &[u16] {
        self.ports.get_or_init(|| listening_ports(self.pid))
    }
}

/// Ports of the listening TCP sockets that `pid` holds a descriptor for.
pub fn listening_ports(pid: u32) -> Vec<u16> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let inodes: HashSet<u64> = fds
        .filter_map(|e| {
            let link = std::fs::read_link(e.ok()?.path()).ok()?;
            let link = link.to_str()?;
            link.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    if inodes.is_empty() {
        return Vec::new();
    }
    let mut ports: Vec<u16> = ["tcp", "tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(format!("/proc/{pid}/net/{f}")).ok())
        .flat_map(|text| parse_listening(&text))
        .filter(|(inode, _)| inodes.contains(inode))
        .map(|(_, port)| port)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// `(inode, local port)` of each LISTEN socket in a `/proc/net/tcp{,6}` table.
pub fn parse_listening(text: &str) -> Vec<(u64, u16)> {
    const LISTEN: &str = "0A";
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 || cols[3] != LISTEN {
                return None;
            }
            let port = u16::from_str_radix(cols[1].rsplit(':').next()?, 16).ok()?;
            Some((cols[9].parse().ok()?, port))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_are_read_from_the_tcp_tables() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1
";
        assert_eq!(parse_listening(tcp), vec![(4242, 8080)]);
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:2328 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99 1 0000000000000000 100 0 0 10 0
";
        assert_eq!(parse_listening(tcp6), vec![(99, 9000)]);
    }

    #[test]
    fn start_time_skips_names_with_spaces_and_parentheses() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987654));
    }

    #[test]
    fn this_process_reads_as_itself() {
        let me = ProcessFacts::read(std::process::id()).unwrap();
        assert_eq!(me.exe, std::env::current_exe().unwrap());
        assert!(!me.comm.is_empty());
        let start = start_time(std::process::id()).unwrap();
        assert!(running(std::process::id(), start));
        assert!(!running(std::process::id(), start + 1));
        assert!(pids().contains(&std::process::id()));
        // This test process started moments ago; pid 1 started with the machine.
        let mine = age(start).unwrap();
        assert!(mine < std::time::Duration::from_secs(600), "{mine:?}");
        let init = age(start_time(1).unwrap()).unwrap();
        assert!(init >= mine, "{init:?} < {mine:?}");
    }
}
