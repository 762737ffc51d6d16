//! The only stage that talks to the kernel: load the embedded programs, attach them where a
//! plan says, read their events, detach.
//!
//! Everything a probe needs to know about a process goes into the `TARGETS` map before its
//! uprobes are attached, and is removed after they are detached, so a probe never runs
//! against a process it has no configuration for.

pub mod binaries;
pub mod features;
pub mod kernel_check;
pub mod lifecycle;
pub mod links;
pub mod loader;
pub mod propagate;
pub mod ringbuf;
pub mod socket;
pub mod uprobe_multi;

use std::{
    collections::HashMap,
    num::NonZeroU32,
    path::{Path, PathBuf},
};

use aya::{
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::{uprobe::UProbeScope, UProbe},
    Ebpf,
};
use spanhook_common::{
    ConnKey, ContextKey, Counter, GoidKey, GoroutineKey, HttpClientInflight, HttpServerInflight,
    PendingTraceparent, TargetConfig, TraceIds,
};

pub use lifecycle::LifecycleError;
use links::{UprobeLink, UprobeLinks};
pub use loader::LoadError;
pub use propagate::{PropagationError, PropagationReport};
pub use ringbuf::EventReader;
pub use socket::SocketCaptureError;

/// One uprobe to attach: a program at a file offset of a process's executable.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct UprobeSite {
    /// Name of the kernel program (a function in ebpf/probes).
    pub program: &'static str,
    /// File offset in the executable.
    pub offset: u64,
    /// Symbol and role, for messages ("net/http.serverHandler.ServeHTTP+0x1f2 (return)").
    pub label: String,
    /// The file the offset refers to when it is not the executable (a shared library the
    /// process maps, e.g. libssl), as a path that opens it from here (`/proc/PID/root/…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary: Option<PathBuf>,
}

/// What to attach for one process.
#[derive(Clone, Debug)]
pub struct AttachRequest {
    /// The process.
    pub pid: u32,
    /// The file the offsets refer to (normally `/proc/PID/exe`).
    pub binary: PathBuf,
    /// Configuration for the probes.
    pub config: TargetConfig,
    /// Every uprobe.
    pub sites: Vec<UprobeSite>,
}

/// Why attaching failed.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The program is not in the embedded object.
    #[error("eBPF program {0} is missing from the embedded object (agent and probes out of step)")]
    MissingProgram(&'static str),
    /// A map is missing or of the wrong type.
    #[error("eBPF map {name}: {source}")]
    Map {
        /// Map name.
        name: &'static str,
        /// Cause.
        #[source]
        source: aya::maps::MapError,
    },
    /// Attaching one uprobe failed.
    #[error("cannot attach {label} at offset {offset:#x} of {binary} for pid {pid}: {source}")]
    Uprobe {
        /// The process.
        pid: u32,
        /// The file.
        binary: PathBuf,
        /// The probe.
        label: String,
        /// The offset.
        offset: u64,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The kernel refused to create a uprobe for lack of a capability.
    #[error("cannot attach {label} for pid {pid}: the kernel refused to create the uprobe ({source}); creating uprobes through perf_event_open needs CAP_SYS_ADMIN on this kernel (Linux reverted CAP_PERFMON's access to them in 6.16, also in the stable releases since July 2025), which this process lacks; uprobe_multi links (Linux 6.6+, used unless SPANHOOK_UPROBES=perf) need only CAP_BPF and CAP_PERFMON")]
    UprobeNeedsSysAdmin {
        /// The process.
        pid: u32,
        /// The probe.
        label: String,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The process is already traced.
    #[error("pid {0} is already attached")]
    AlreadyAttached(u32),
    /// A pid of 0 was given.
    #[error("pid 0 is not a process")]
    InvalidPid,
}

/// Loaded programs and the uprobes attached for each process.
pub struct Probes {
    ebpf: Ebpf,
    /// The uprobe programs loaded for `uprobe_multi` links, when uprobes are those.
    multi: Option<uprobe_multi::MultiPrograms>,
    links: HashMap<u32, UprobeLinks>,
    /// Whether the propagation programs are loaded and attached.
    propagation: bool,
}

impl Probes {
    /// Loads the embedded programs into the kernel.
    pub fn load() -> Result<Self, LoadError> {
        kernel_check::check_at_start().map_err(LoadError::UnsupportedKernel)?;
        let loader::Loaded { ebpf, multi } = loader::load()?;
        Ok(Self {
            ebpf,
            multi,
            links: HashMap::new(),
            propagation: false,
        })
    }

    fn program(&mut self, name: &'static str) -> Result<&mut UProbe, AttachError> {
        self.ebpf
            .program_mut(name)
            .and_then(|p| <&mut UProbe>::try_from(p).ok())
            .ok_or(AttachError::MissingProgram(name))
    }

    fn targets(&mut self) -> Result<BpfHashMap<&mut MapData, u32, TargetConfig>, AttachError> {
        let map = self.ebpf.map_mut("TARGETS").ok_or(AttachError::Map {
            name: "TARGETS",
            source: aya::maps::MapError::InvalidName {
                name: "TARGETS".into(),
            },
        })?;
        BpfHashMap::try_from(map).map_err(|source| AttachError::Map {
            name: "TARGETS",
            source,
        })
    }

    /// Attaches every site of `req`; on any failure nothing of `req` stays attached.
    pub fn attach(&mut self, req: &AttachRequest) -> Result<(), AttachError> {
        let pid = NonZeroU32::new(req.pid).ok_or(AttachError::InvalidPid)?;
        if self.links.contains_key(&req.pid) {
            return Err(AttachError::AlreadyAttached(req.pid));
        }
        self.targets()?
            .insert(req.pid, req.config, 0)
            .map_err(|source| AttachError::Map {
                name: "TARGETS",
                source,
            })?;
        match self.attach_sites(req, &req.sites, Some(pid)) {
            Ok(links) => {
                self.links.insert(req.pid, links);
                Ok(())
            }
            Err(e) => {
                self.detach(req.pid);
                Err(e)
            }
        }
    }

    /// Attaches `sites` of `req` for `pid` only, or (None) for every process that runs the
    /// file; on failure nothing of them stays attached.
    fn attach_sites(
        &mut self,
        req: &AttachRequest,
        sites: &[UprobeSite],
        pid: Option<NonZeroU32>,
    ) -> Result<UprobeLinks, AttachError> {
        if self.multi.is_some() {
            return self.attach_multi(req, sites, pid);
        }
        let scope = pid.map_or(UProbeScope::AllProcesses, UProbeScope::OneProcess);
        let mut links = UprobeLinks::default();
        for site in sites {
            let binary = site.binary.as_ref().unwrap_or(&req.binary);
            let prog = self.program(site.program)?;
            let link = prog
                .attach(site.offset, binary, scope)
                .and_then(|id| prog.take_link(id))
                .map_err(|source| uprobe_error(req, site, binary, Box::new(source), true))?;
            links.push(UprobeLink::Perf(link), 1);
        }
        Ok(links)
    }

    /// One `uprobe_multi` link per program and file, holding all its offsets.
    fn attach_multi(
        &self,
        req: &AttachRequest,
        sites: &[UprobeSite],
        pid: Option<NonZeroU32>,
    ) -> Result<UprobeLinks, AttachError> {
        let multi = self.multi.as_ref().expect("checked by the caller");
        let mut groups: Vec<((&'static str, &Path), Vec<&UprobeSite>)> = Vec::new();
        for site in sites {
            if !multi.contains(site.program) {
                return Err(AttachError::MissingProgram(site.program));
            }
            let key = (site.program, site.binary.as_deref().unwrap_or(&req.binary));
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, group)) => group.push(site),
                None => groups.push((key, vec![site])),
            }
        }
        let mut links = UprobeLinks::default();
        for ((program, binary), group) in groups {
            let offsets: Vec<u64> = group.iter().map(|s| s.offset).collect();
            match multi.attach(program, binary, &offsets, pid) {
                Ok(fd) => links.push(UprobeLink::Multi(fd), offsets.len()),
                Err(e) => {
                    // Name the offset the kernel refused: try each alone.
                    let culprit = group
                        .iter()
                        .find_map(|s| {
                            multi
                                .attach(program, binary, &[s.offset], pid)
                                .err()
                                .map(|e| (*s, e))
                        })
                        .unwrap_or((group[0], e));
                    let (site, source) = culprit;
                    return Err(uprobe_error(req, site, binary, Box::new(source), false));
                }
            }
        }
        Ok(links)
    }

    /// Detaches every uprobe of `pid` and forgets its configuration and in-flight state.
    pub fn detach(&mut self, pid: u32) {
        if let Some(links) = self.links.remove(&pid) {
            let started = std::time::Instant::now();
            let n = links.links();
            drop(links);
            tracing::debug!(
                "pid {pid}: {n} uprobe links closed in {:?}",
                started.elapsed()
            );
        }
        if let Ok(mut targets) = self.targets() {
            let _ = targets.remove(&pid);
        }
        self.forget_inflight(pid);
        self.forget_socket_state(pid);
    }

    /// Removes every map entry that belongs to `pid`: a process that is gone must leave
    /// nothing behind, and a new process that reuses its pid must not inherit anything.
    fn forget_inflight(&mut self, pid: u32) {
        self.remove_keys::<GoroutineKey, HttpServerInflight>("HTTP_SERVER_INFLIGHT", |k, _| {
            k.tgid == pid
        });
        self.remove_keys::<GoroutineKey, HttpClientInflight>("HTTP_CLIENT_INFLIGHT", |k, _| {
            k.tgid == pid
        });
        self.remove_keys::<ContextKey, TraceIds>("CONTEXT_SPANS", |k, _| k.tgid == pid);
        self.remove_keys::<GoidKey, TraceIds>("GOID_SPANS", |k, _| k.tgid == pid);
        self.remove_keys::<ConnKey, PendingTraceparent>("PENDING_TRACEPARENT", |_, v| {
            v.tgid == pid
        });
    }

    fn remove_keys<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &str,
        belongs: impl Fn(&K, &V) -> bool,
    ) {
        let Some(map) = self.ebpf.map_mut(name) else {
            return;
        };
        let Ok(mut map) = BpfHashMap::<_, K, V>::try_from(map) else {
            return;
        };
        let stale: Vec<K> = map
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, v)| belongs(k, v))
            .map(|(k, _)| k)
            .collect();
        for k in stale {
            let _ = map.remove(&k);
        }
    }

    /// Processes with probes attached.
    pub fn attached(&self) -> impl Iterator<Item = u32> + '_ {
        self.links.keys().copied()
    }

    /// Number of uprobes attached for `pid`.
    pub fn uprobe_count(&self, pid: u32) -> usize {
        self.links.get(&pid).map_or(0, UprobeLinks::uprobes)
    }

    /// Number of kernel links holding `pid`'s uprobes (one per uprobe for perf-event
    /// uprobes, one per program and file for `uprobe_multi` links).
    pub fn link_count(&self, pid: u32) -> usize {
        self.links.get(&pid).map_or(0, UprobeLinks::links)
    }

    /// Takes the event ring buffer; call once.
    pub fn event_reader(&mut self) -> Result<EventReader, AttachError> {
        let map = self.ebpf.take_map("EVENTS").ok_or(AttachError::Map {
            name: "EVENTS",
            source: aya::maps::MapError::InvalidName {
                name: "EVENTS".into(),
            },
        })?;
        let ring = RingBuf::try_from(map).map_err(|source| AttachError::Map {
            name: "EVENTS",
            source,
        })?;
        EventReader::new(ring).map_err(|e| AttachError::Map {
            name: "EVENTS",
            source: aya::maps::MapError::IoError(e),
        })
    }

    /// The probes' loss and failure counters, summed over CPUs.
    pub fn counters(&self) -> Vec<(Counter, u64)> {
        let Some(map) = self.ebpf.map("COUNTERS") else {
            return Vec::new();
        };
        let Ok(array) = PerCpuArray::<_, u64>::try_from(map) else {
            return Vec::new();
        };
        Counter::ALL
            .iter()
            .map(|&c| {
                let total = array
                    .get(&(c as u32), 0)
                    .map(|per_cpu| per_cpu.iter().sum())
                    .unwrap_or(0);
                (c, total)
            })
            .collect()
    }
}

/// The error for a uprobe the kernel refused at `site` of `binary`, naming the missing
/// capability when that is the reason (perf-event uprobes only need CAP_SYS_ADMIN).
fn uprobe_error(
    req: &AttachRequest,
    site: &UprobeSite,
    binary: &std::path::Path,
    source: Box<dyn std::error::Error + Send + Sync>,
    perf_event: bool,
) -> AttachError {
    if perf_event && permission_denied(source.as_ref()) && !features::has_sys_admin() {
        return AttachError::UprobeNeedsSysAdmin {
            pid: req.pid,
            label: site.label.clone(),
            source,
        };
    }
    AttachError::Uprobe {
        pid: req.pid,
        binary: binary.to_path_buf(),
        label: site.label.clone(),
        offset: site.offset,
        source,
    }
}

/// Whether `e` (or an error it wraps) is the kernel's EACCES or EPERM.
fn permission_denied(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

impl Drop for Probes {
    fn drop(&mut self) {
        let pids: Vec<u32> = self.links.keys().copied().collect();
        for pid in pids {
            self.detach(pid);
        }
    }
}
