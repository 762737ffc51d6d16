//! Opt-in propagation on the network path: load the `sock_ops` and `sk_msg` programs, attach
//! them, and adopt the client connections a target opened before we started.
//!
//! Sockets created from now on are put in the `SOCKETS` map by `sock_ops` at connect time;
//! connections that already exist never pass that point, so their descriptors are borrowed
//! from the target with `pidfd_getfd` and inserted directly.

use std::{
    collections::HashSet,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::PathBuf,
};

use aya::{
    maps::SockHash,
    programs::{links::CgroupAttachMode, SkMsg, SockOps},
};

use super::Probes;

/// Why propagation cannot be enabled.
#[derive(Debug, thiserror::Error)]
pub enum PropagationError {
    /// No cgroup v2 hierarchy to attach `sock_ops` to.
    #[error("propagation needs a cgroup v2 hierarchy to attach to, and none is mounted (mount one, e.g. `mount -t cgroup2 none /sys/fs/cgroup/unified`)")]
    NoCgroup2,
    /// The cgroup cannot be opened.
    #[error("cannot open cgroup {path}: {source}")]
    Cgroup {
        /// The cgroup directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A program could not be loaded or attached.
    #[error(
        "cannot {what}: {source}; propagation needs CAP_NET_ADMIN besides the tracing capabilities"
    )]
    Program {
        /// What failed.
        what: &'static str,
        /// Cause.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A program or map is missing from the embedded object.
    #[error("eBPF object lacks {0} (agent and probes out of step)")]
    Missing(&'static str),
}

/// What enabling propagation did.
#[derive(Debug, Default)]
pub struct PropagationReport {
    /// The cgroup `sock_ops` is attached to.
    pub cgroup: PathBuf,
    /// Connections that existed before the agent started and were adopted.
    pub adopted: usize,
    /// Existing connections that could not be adopted (and why), per pid.
    pub problems: Vec<String>,
}

/// The mount point of the cgroup v2 hierarchy, from `/proc/self/mountinfo`.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        // "... mount-point ... - fstype source options"
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

impl Probes {
    /// Loads and attaches the propagation programs, then adopts `pids`' open client
    /// connections. Idempotent per pid.
    pub fn enable_propagation(
        &mut self,
        pids: &[u32],
    ) -> Result<PropagationReport, PropagationError> {
        let mut report = PropagationReport::default();
        if !self.propagation {
            let cgroup = cgroup2_mount().ok_or(PropagationError::NoCgroup2)?;
            let cgroup_dir =
                std::fs::File::open(&cgroup).map_err(|source| PropagationError::Cgroup {
                    path: cgroup.clone(),
                    source,
                })?;
            let program_err = |what| {
                move |e: aya::programs::ProgramError| PropagationError::Program {
                    what,
                    source: Box::new(e),
                }
            };
            let ops: &mut SockOps = self
                .ebpf
                .program_mut("propagate_sock_ops")
                .and_then(|p| p.try_into().ok())
                .ok_or(PropagationError::Missing("propagate_sock_ops"))?;
            ops.load()
                .map_err(program_err("load the sock_ops program"))?;
            // A BPF link (kernel 5.7+) coexists with other programs on the cgroup by itself;
            // link creation rejects the multi-attach flag, so the default mode is asked for.
            ops.attach(&cgroup_dir, CgroupAttachMode::Single)
                .map_err(program_err("attach sock_ops to the cgroup v2 root"))?;
            let map_fd = {
                let map = self
                    .ebpf
                    .map("SOCKETS")
                    .ok_or(PropagationError::Missing("SOCKETS"))?;
                let sockets: SockHash<_, u64> =
                    SockHash::try_from(map).map_err(|_| PropagationError::Missing("SOCKETS"))?;
                sockets
                    .fd()
                    .try_clone()
                    .map_err(|e| PropagationError::Program {
                        what: "duplicate the SOCKETS map descriptor",
                        source: Box::new(aya::programs::ProgramError::IOError(e)),
                    })?
            };
            let msg: &mut SkMsg = self
                .ebpf
                .program_mut("propagate_sk_msg")
                .and_then(|p| p.try_into().ok())
                .ok_or(PropagationError::Missing("propagate_sk_msg"))?;
            msg.load().map_err(program_err("load the sk_msg program"))?;
            msg.attach(&map_fd)
                .map_err(program_err("attach sk_msg to the socket map"))?;
            self.propagation = true;
            report.cgroup = cgroup;
        }
        for &pid in pids {
            match self.adopt_connections(pid) {
                Ok(n) => report.adopted += n,
                Err(e) => report.problems.push(format!("pid {pid}: {e}")),
            }
        }
        Ok(report)
    }

    /// Inserts the established client connections of `pid` into `SOCKETS`.
    fn adopt_connections(&mut self, pid: u32) -> std::io::Result<usize> {
        let conns = client_socket_fds(pid)?;
        if conns.is_empty() {
            return Ok(0);
        }
        let map = self
            .ebpf
            .map_mut("SOCKETS")
            .ok_or_else(|| std::io::Error::other("no SOCKETS map"))?;
        let mut sockets: SockHash<_, u64> =
            SockHash::try_from(map).map_err(std::io::Error::other)?;
        // SAFETY: plain syscall; the result is checked.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
        if pidfd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a new descriptor nobody else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
        let mut adopted = 0;
        for target_fd in conns {
            // SAFETY: plain syscall; the result is checked.
            let fd =
                unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target_fd, 0) };
            if fd < 0 {
                continue;
            }
            // SAFETY: a new descriptor nobody else owns; closed when dropped (the map keeps
            // its own reference to the socket).
            let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
            let Some(cookie) = socket_cookie(&fd) else {
                continue;
            };
            if sockets.insert(cookie, fd.as_raw_fd(), 0).is_ok() {
                adopted += 1;
            }
        }
        Ok(adopted)
    }
}

fn socket_cookie(fd: &OwnedFd) -> Option<u64> {
    let mut cookie = 0u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: valid out-pointers of the right size.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cookie)
}

/// File descriptors in `pid` of established TCP connections it opened (its local port is
/// not one it listens on).
pub fn client_socket_fds(pid: u32) -> std::io::Result<Vec<i32>> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let mut listening = HashSet::new();
    let mut established = std::collections::HashMap::new();
    for table in ["net/tcp", "net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(proc.join(table)) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 {
                continue;
            }
            let local_port = cols[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            let Some(local_port) = local_port else {
                continue;
            };
            match cols[3] {
                "0A" => {
                    listening.insert(local_port);
                }
                "01" => {
                    if let Ok(inode) = cols[9].parse::<u64>() {
                        established.insert(inode, local_port);
                    }
                }
                _ => {}
            }
        }
    }
    let mut fds = Vec::new();
    for entry in std::fs::read_dir(proc.join("fd"))? {
        let entry = entry?;
        let Ok(link) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let link = link.to_string_lossy();
        let Some(inode) = link
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        if let Some(port) = established.get(&inode) {
            if !listening.contains(port) {
                if let Ok(fd) = entry.file_name().to_string_lossy().parse() {
                    fds.push(fd);
                }
            }
        }
    }
    Ok(fds)
}
