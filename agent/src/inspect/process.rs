//! A running process as `/proc` shows it: its executable and whether it is still there.

use std::path::PathBuf;

/// Why a process cannot be inspected.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// No such process.
    #[error("no process with pid {pid}")]
    NotFound {
        /// The pid.
        pid: u32,
    },
    /// The process exists but its executable cannot be read.
    #[error("cannot read the executable of pid {pid} ({path}): {source}; reading another user's process needs root or CAP_SYS_PTRACE")]
    Unreadable {
        /// The pid.
        pid: u32,
        /// The path tried.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A kernel thread or zombie: no executable.
    #[error("pid {pid} has no executable (a kernel thread or a process that is exiting)")]
    NoExecutable {
        /// The pid.
        pid: u32,
    },
}

/// A process to trace.
#[derive(Clone, Debug)]
pub struct Process {
    /// Process id.
    pub pid: u32,
    /// The executable's path as the process sees it (may not exist in our mount namespace).
    pub exe: PathBuf,
    /// A path to the same file that works from here: `/proc/PID/exe`.
    pub exe_link: PathBuf,
}

impl Process {
    /// Looks up `pid`.
    pub fn open(pid: u32) -> Result<Self, ProcessError> {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        if pid == 0 || !proc.exists() {
            return Err(ProcessError::NotFound { pid });
        }
        let exe_link = proc.join("exe");
        let exe = match std::fs::read_link(&exe_link) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(if proc.exists() {
                    ProcessError::NoExecutable { pid }
                } else {
                    ProcessError::NotFound { pid }
                })
            }
            Err(source) => {
                return Err(ProcessError::Unreadable {
                    pid,
                    path: exe_link,
                    source,
                })
            }
        };
        Ok(Self { pid, exe, exe_link })
    }

    /// How far the process loaded its executable from the addresses the file was linked at:
    /// 0 for a non-PIE program. Runtime addresses minus this are the file's addresses.
    pub fn load_bias(&self, elf: &crate::inspect::elf::ElfFile) -> Option<u64> {
        use std::os::unix::fs::MetadataExt;
        let inode = std::fs::metadata(&self.exe_link).ok()?.ino();
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", self.pid)).ok()?;
        for line in maps.lines() {
            // start-end perms offset dev inode path
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 6 || cols[4].parse::<u64>().ok()? != inode {
                continue;
            }
            let start = u64::from_str_radix(cols[0].split('-').next()?, 16).ok()?;
            let offset = u64::from_str_radix(cols[2], 16).ok()?;
            let linked = elf.offset_to_vaddr(offset)?;
            // Mappings start on a page; the segment may start mid-page.
            return Some(start.wrapping_sub(linked & !0xfff));
        }
        None
    }

    /// Whether the process still exists (and is not a zombie).
    pub fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
            .is_some_and(|zombie| !zombie)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_this_process() {
        let me = Process::open(std::process::id()).unwrap();
        assert_eq!(me.exe, std::env::current_exe().unwrap());
        assert!(Process::alive(std::process::id()));
    }

    #[test]
    fn missing_pid_is_a_clear_error() {
        // Above the kernel's pid_max ceiling (4194304), so never a real process.
        let err = Process::open(4_194_305).unwrap_err();
        assert_eq!(err.to_string(), "no process with pid 4194305");
        assert!(!Process::alive(4_194_305));
        assert!(matches!(
            Process::open(0),
            Err(ProcessError::NotFound { pid: 0 })
        ));
    }
}
