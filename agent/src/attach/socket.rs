//! Socket-level capture in the kernel: the syscall tracepoint programs, the socket ring
//! buffer, and what is cleaned up per process.
//!
//! Tracepoints are global, unlike uprobes: they are loaded and attached once, when the first
//! process traced at socket level arrives, and filter in the kernel on `TARGETS` (a process
//! is captured only while its entry carries `FLAG_SOCKET_CAPTURE`). When the last such
//! process is detached they are detached and unloaded too, so other processes pay nothing.
//! The libssl uprobes are ordinary per-process uprobe sites (see `plan::socket`).
//!
//! The programs find the kernel's socket structures through CO-RE relocations
//! (ebpf/probes/c/core_read.c), which aya applies against the running kernel's BTF when it
//! loads them: without that BTF they would read at the offsets they were compiled with, so
//! capture refuses to start.

use aya::{
    maps::{HashMap as BpfHashMap, MapData, RingBuf},
    programs::TracePoint,
};
use spanhook_common::{IgnoredSock, SocketCall, SslCall, SslKey, TargetConfig};

use super::{kernel_check::VMLINUX_BTF, EventReader, Probes};

/// Each tracepoint program and the `syscalls:` tracepoints it runs on.
pub const TRACEPOINTS: &[(&str, &[&str])] = &[
    ("socket_read_enter", &["sys_enter_read"]),
    ("socket_recvfrom_enter", &["sys_enter_recvfrom"]),
    ("socket_write_enter", &["sys_enter_write"]),
    ("socket_sendto_enter", &["sys_enter_sendto"]),
    ("socket_readv_enter", &["sys_enter_readv"]),
    ("socket_writev_enter", &["sys_enter_writev"]),
    ("socket_recvmsg_enter", &["sys_enter_recvmsg"]),
    ("socket_sendmsg_enter", &["sys_enter_sendmsg"]),
    ("socket_sendfile_enter", &["sys_enter_sendfile64"]),
    ("socket_close_enter", &["sys_enter_close"]),
    (
        "socket_exit",
        &[
            "sys_exit_read",
            "sys_exit_recvfrom",
            "sys_exit_write",
            "sys_exit_sendto",
            "sys_exit_readv",
            "sys_exit_writev",
            "sys_exit_recvmsg",
            "sys_exit_sendmsg",
            "sys_exit_sendfile64",
        ],
    ),
];

/// Why socket-level capture cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SocketCaptureError {
    /// The kernel publishes no BTF, which the programs' CO-RE relocations are resolved with.
    #[error("cannot read the kernel's BTF at {path} (socket-level tracing needs a kernel built with CONFIG_DEBUG_INFO_BTF): {source}")]
    NoBtf {
        /// The file.
        path: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A program or map is missing from the embedded object.
    #[error("eBPF object lacks {0} (agent and probes out of step)")]
    Missing(&'static str),
    /// A map could not be written.
    #[error("cannot write eBPF map {name}: {source}")]
    Map {
        /// The map.
        name: &'static str,
        /// Cause.
        #[source]
        source: aya::maps::MapError,
    },
    /// A tracepoint program could not be loaded or attached.
    #[error("cannot {what} {program}{at}: {source}")]
    Program {
        /// What failed.
        what: &'static str,
        /// The program.
        program: &'static str,
        /// The tracepoint, when attaching.
        at: String,
        /// Cause.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
}

impl Probes {
    fn tracepoint(&mut self, name: &'static str) -> Result<&mut TracePoint, SocketCaptureError> {
        self.ebpf
            .program_mut(name)
            .and_then(|p| <&mut TracePoint>::try_from(p).ok())
            .ok_or(SocketCaptureError::Missing(name))
    }

    /// Whether the socket tracepoints are attached.
    pub fn socket_capture_enabled(&self) -> bool {
        self.ebpf
            .program(TRACEPOINTS[0].0)
            .and_then(|p| <&TracePoint>::try_from(p).ok())
            .is_some_and(|p| p.fd().is_ok())
    }

    /// Loads and attaches the socket tracepoints (once; later calls do nothing). Returns
    /// whether they were attached by this call.
    pub fn enable_socket_capture(&mut self) -> Result<bool, SocketCaptureError> {
        if self.socket_capture_enabled() {
            return Ok(false);
        }
        std::fs::metadata(VMLINUX_BTF).map_err(|source| SocketCaptureError::NoBtf {
            path: VMLINUX_BTF,
            source,
        })?;
        let result = (|| {
            for (program, points) in TRACEPOINTS {
                let prog = self.tracepoint(program)?;
                if prog.fd().is_err() {
                    prog.load().map_err(|e| SocketCaptureError::Program {
                        what: "load",
                        program,
                        at: String::new(),
                        source: Box::new(e),
                    })?;
                }
                for point in *points {
                    prog.attach("syscalls", point)
                        .map_err(|e| SocketCaptureError::Program {
                            what: "attach",
                            program,
                            at: format!(" to syscalls:{point}"),
                            source: Box::new(e),
                        })?;
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            self.disable_socket_capture();
            return Err(e);
        }
        Ok(true)
    }

    /// Detaches and unloads the socket tracepoints.
    pub fn disable_socket_capture(&mut self) {
        let started = std::time::Instant::now();
        for (program, _) in TRACEPOINTS {
            if let Ok(prog) = self.tracepoint(program) {
                if prog.fd().is_ok() {
                    if let Err(e) = prog.unload() {
                        tracing::warn!("unloading {program}: {e}");
                    }
                }
            }
        }
        tracing::debug!("socket tracepoints detached in {:?}", started.elapsed());
    }

    /// Takes the socket ring buffer; call once.
    pub fn socket_reader(&mut self) -> Result<EventReader, SocketCaptureError> {
        let map = self
            .ebpf
            .take_map("SOCKET_EVENTS")
            .ok_or(SocketCaptureError::Missing("SOCKET_EVENTS"))?;
        let ring = RingBuf::try_from(map).map_err(|source| SocketCaptureError::Map {
            name: "SOCKET_EVENTS",
            source,
        })?;
        EventReader::new(ring).map_err(|e| SocketCaptureError::Map {
            name: "SOCKET_EVENTS",
            source: aya::maps::MapError::IoError(e),
        })
    }

    /// Tells the kernel to stop copying connection `sock` of `tgid` (it is not HTTP/1), as
    /// long as `sock` holds the connection of `ports` (local, remote).
    pub fn ignore_socket(&mut self, tgid: u32, sock: u64, (local_port, remote_port): (u16, u16)) {
        let Some(map) = self.ebpf.map_mut("IGNORED_SOCKS") else {
            return;
        };
        if let Ok(mut map) = BpfHashMap::<&mut MapData, u64, IgnoredSock>::try_from(map) {
            let value = IgnoredSock {
                tgid,
                local_port,
                remote_port,
            };
            let _ = map.insert(sock, value, 0);
        }
    }

    /// Removes the socket-level state of `pid` from the kernel's maps, and detaches the
    /// tracepoints when no traced process needs them any more.
    pub(super) fn forget_socket_state(&mut self, pid: u32) {
        let started = std::time::Instant::now();
        self.remove_keys::<u64, SocketCall>("SOCKET_CALLS", |k, _| (k >> 32) as u32 == pid);
        self.remove_keys::<u64, SslCall>("SSL_CALLS", |k, _| (k >> 32) as u32 == pid);
        self.remove_keys::<SslKey, i32>("SSL_FDS", |k, _| k.tgid == pid);
        self.remove_keys::<u64, IgnoredSock>("IGNORED_SOCKS", |_, v| v.tgid == pid);
        tracing::debug!(
            "pid {pid}: socket-level map entries removed in {:?}",
            started.elapsed()
        );
        if !self.socket_capture_enabled() {
            return;
        }
        let any_left = self.targets().is_ok_and(|t| {
            t.iter()
                .filter_map(Result::ok)
                .any(|(_, cfg)| cfg.flags & TargetConfig::FLAG_SOCKET_CAPTURE != 0)
        });
        if !any_left {
            self.disable_socket_capture();
        }
    }
}
