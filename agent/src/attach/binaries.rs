//! One attach per executable file, shared by every traced process of it (daemon mode).
//!
//! A uprobe is registered on a file's inode: attached for all processes (no pid filter in
//! the kernel's uprobe), it fires in every process that runs the file, and the programs
//! themselves keep only the processes in `TARGETS` (each looks its tgid up first). So the
//! daemon attaches a binary's probes once, when its first selected process appears, puts each
//! further process of it in `TARGETS` only, and detaches the probes when the last one exits.
//! A node running 200 replicas of one service pays for one set of uprobes, not 200.
//!
//! Probes in other files than the executable (libssl's, for socket-level TLS) stay per
//! process: a shared library is mapped by processes that are not targets, and each of those
//! would otherwise take the trap.

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt,
    path::Path,
};

use super::{links::UprobeLinks, AttachError, AttachRequest, Probes};

/// Which file an executable is: the same device and inode, unchanged since (size and
/// modification time), so a binary replaced in place by a new release is a new file.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct FileIdentity {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// `st_size`.
    pub size: u64,
    /// `st_mtime` in nanoseconds.
    pub mtime_ns: i128,
}

impl FileIdentity {
    /// The identity of the file `path` leads to (`/proc/PID/exe` works, even when the file
    /// was deleted since).
    pub fn of(path: &Path) -> std::io::Result<Self> {
        let m = std::fs::metadata(path)?;
        Ok(Self {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }
}

/// The probes of one executable and the processes that use them.
struct Binary {
    links: UprobeLinks,
    users: HashSet<u32>,
}

/// Shared attachments by file identity.
#[derive(Default)]
pub struct SharedBinaries {
    binaries: HashMap<FileIdentity, Binary>,
    pids: HashMap<u32, FileIdentity>,
}

/// The outcome of [`SharedBinaries::attach`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedAttach {
    /// Uprobes on the executable, shared with the binary's other processes.
    pub shared: usize,
    /// Whether this process attached them (the binary's first process).
    pub first: bool,
}

impl SharedBinaries {
    /// Traces `req.pid`: its configuration into `TARGETS`, the executable's probes attached
    /// once for `binary`, the other files' probes for this process only. On failure nothing
    /// of `req` stays.
    pub fn attach(
        &mut self,
        probes: &mut Probes,
        req: &AttachRequest,
        binary: FileIdentity,
    ) -> Result<SharedAttach, AttachError> {
        let pid = req.pid;
        if self.pids.contains_key(&pid) {
            return Err(AttachError::AlreadyAttached(pid));
        }
        let (own, shared): (Vec<_>, Vec<_>) =
            req.sites.iter().cloned().partition(|s| s.binary.is_some());
        // The process's own part (TARGETS and any libssl probes) through the usual path.
        probes.attach(&AttachRequest {
            pid,
            binary: req.binary.clone(),
            config: req.config,
            sites: own,
        })?;
        let first = !self.binaries.contains_key(&binary);
        if first {
            match probes.attach_sites(req, &shared, None) {
                Ok(links) => {
                    tracing::debug!(
                        "{}: {} uprobes attached for every process of it",
                        req.binary.display(),
                        links.uprobes()
                    );
                    self.binaries.insert(
                        binary,
                        Binary {
                            links,
                            users: HashSet::new(),
                        },
                    );
                }
                Err(e) => {
                    probes.detach(pid);
                    return Err(e);
                }
            }
        }
        let entry = self.binaries.get_mut(&binary).expect("inserted above");
        entry.users.insert(pid);
        self.pids.insert(pid, binary);
        Ok(SharedAttach {
            shared: entry.links.uprobes(),
            first,
        })
    }

    /// Stops tracing `pid`: out of `TARGETS` with its in-flight state, and the binary's
    /// probes detached if it was the last process of it. Returns the number of shared
    /// uprobes detached.
    pub fn detach(&mut self, probes: &mut Probes, pid: u32) -> usize {
        probes.detach(pid);
        let Some(id) = self.pids.remove(&pid) else {
            return 0;
        };
        let Some(binary) = self.binaries.get_mut(&id) else {
            return 0;
        };
        binary.users.remove(&pid);
        if !binary.users.is_empty() {
            return 0;
        }
        let binary = self.binaries.remove(&id).expect("present above");
        binary.links.uprobes()
    }

    /// The links on `pid`'s executable, shared with the binary's other processes.
    fn shared_links(&self, pid: u32) -> Option<&UprobeLinks> {
        let id = self.pids.get(&pid)?;
        self.binaries.get(id).map(|b| &b.links)
    }

    /// Uprobes on `pid`'s executable (shared) plus its own.
    pub fn uprobe_count(&self, probes: &Probes, pid: u32) -> usize {
        self.shared_links(pid).map_or(0, UprobeLinks::uprobes) + probes.uprobe_count(pid)
    }

    /// Kernel links holding the uprobes of [`Self::uprobe_count`].
    pub fn link_count(&self, probes: &Probes, pid: u32) -> usize {
        self.shared_links(pid).map_or(0, UprobeLinks::links) + probes.link_count(pid)
    }

    /// Whether a traced process runs the file `id`.
    pub fn in_use(&self, id: &FileIdentity) -> bool {
        self.binaries.contains_key(id)
    }

    /// Executables with probes attached.
    pub fn binaries(&self) -> usize {
        self.binaries.len()
    }

    /// Uprobes attached on executables, all binaries together.
    pub fn shared_uprobes(&self) -> usize {
        self.binaries.values().map(|b| b.links.uprobes()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_replaced_in_place_is_a_new_binary() {
        let dir = std::env::temp_dir().join(format!("spanhook-identity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("svc");
        std::fs::write(&path, b"one").unwrap();
        let a = FileIdentity::of(&path).unwrap();
        assert_eq!(a, FileIdentity::of(&path).unwrap());
        let link = dir.join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert_eq!(
            a,
            FileIdentity::of(&link).unwrap(),
            "links lead to the file"
        );
        std::fs::write(&path, b"second").unwrap();
        assert_ne!(a, FileIdentity::of(&path).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
