//! Loading the programs embedded in the binary at build time.

use aya::{Btf, Ebpf, EbpfError};

use super::{features, uprobe_multi::MultiPrograms};

/// A loader's error, whichever loader it came from.
type Source = Box<dyn std::error::Error + Send + Sync>;

/// The probes object compiled by build.rs (empty when built without the eBPF toolchain).
static PROBES: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/spanhook-probes"));

/// Why the programs could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// This binary was built without the programs.
    #[error("this spanhook binary was built without its eBPF programs (AYA_BUILD_SKIP or no `embed-probes` feature); rebuild it after `cargo xtask setup`")]
    NotEmbedded,
    /// The process lacks the capabilities to load programs.
    #[error("loading eBPF programs needs privileges this process lacks ({missing}); run as root or grant CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH")]
    Privileges {
        /// The missing capabilities.
        missing: String,
        /// The loader's error.
        #[source]
        source: Source,
    },
    /// The kernel lacks what the programs need (see `kernel_check`), found before loading.
    #[error("this kernel cannot run spanhook's eBPF programs: {0}")]
    UnsupportedKernel(String),
    /// The kernel refused the programs.
    #[error("the kernel refused spanhook's eBPF programs: {source}")]
    Kernel {
        /// The loader's error, with the verifier log when there is one.
        #[source]
        source: Source,
    },
}

/// The socket map of opt-in propagation (`BPF_MAP_TYPE_SOCKHASH`).
const SOCKET_MAP: &str = "SOCKETS";

/// Whether this process may create socket maps and load network programs (CAP_NET_ADMIN, or
/// CAP_SYS_ADMIN which implies it).
fn net_admin() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    let caps = features::effective_capabilities();
    caps & ((1 << CAP_NET_ADMIN) | (1 << CAP_SYS_ADMIN)) != 0
}

/// Without CAP_NET_ADMIN the kernel refuses to create any socket map, and with it the whole
/// object, though only opt-in propagation (which needs CAP_NET_ADMIN anyway) uses one. So a
/// process without it loads a copy of the object whose `SOCKETS` map is a plain one-entry hash
/// map: tracing works with CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH alone,
/// and `--propagate` still fails naming CAP_NET_ADMIN. `None`: load the object as it is.
fn without_socket_map(object: &[u8]) -> Option<Vec<u8>> {
    use object::{Object, ObjectSection, ObjectSymbol};
    const BPF_MAP_TYPE_HASH: u32 = 1;
    const BPF_MAP_TYPE_SOCKHASH: u32 = 18;
    if net_admin() {
        return None;
    }
    let file = object::File::parse(object).ok()?;
    let symbol = file.symbols().find(|s| s.name() == Ok(SOCKET_MAP))?;
    let section = file.section_by_index(symbol.section_index()?).ok()?;
    if section.name() != Ok("maps") {
        return None;
    }
    // A legacy map definition: `bpf_map_def { type, key_size, value_size, max_entries, .. }`.
    let (start, size) = section.file_range()?;
    let at = usize::try_from(symbol.address().checked_add(start)?).ok()?;
    if symbol.address() + 4 > size {
        return None;
    }
    let map_type = u32::from_le_bytes(object.get(at..at + 4)?.try_into().ok()?);
    if map_type != BPF_MAP_TYPE_SOCKHASH {
        return None;
    }
    let mut patched = object.to_vec();
    patched[at..at + 4].copy_from_slice(&BPF_MAP_TYPE_HASH.to_le_bytes());
    tracing::debug!("no CAP_NET_ADMIN: {SOCKET_MAP} is a placeholder; --propagate is unavailable");
    Some(patched)
}

/// The programs in the kernel: aya's, and the uprobe programs loaded for `uprobe_multi`
/// links when those are used.
pub struct Loaded {
    /// Every program and map of the object, as aya loaded them.
    pub ebpf: Ebpf,
    /// The uprobe programs loaded for `uprobe_multi` links; `None` when uprobes are aya's
    /// perf-event uprobes (then aya loaded them).
    pub multi: Option<MultiPrograms>,
}

/// Whether uprobes are `uprobe_multi` links: where the kernel has them (6.6+), unless
/// `SPANHOOK_UPROBES=perf` asks for perf-event uprobes (to compare the two, or to work around
/// a kernel whose `uprobe_multi` misbehaves).
fn use_uprobe_multi() -> bool {
    match std::env::var("SPANHOOK_UPROBES").as_deref() {
        Ok("perf") => false,
        _ => super::uprobe_multi::supported(),
    }
}

/// A load error: the missing capabilities when there are any, else the kernel's refusal.
fn classify(source: Source) -> LoadError {
    let missing = features::missing_capabilities();
    if missing.is_empty() {
        LoadError::Kernel { source }
    } else {
        LoadError::Privileges {
            missing: missing.join(", "),
            source,
        }
    }
}

/// glibc raises its mmap threshold to the size of each large block freed, up to 32 MiB, so
/// after the loader frees its first BTF the next parse's tables land in the heap, where freed
/// memory stays resident. A fixed threshold keeps blocks of 1 MiB and more (BTF tables) in
/// mappings that are given back, and smaller ones (export batches) in the heap.
fn keep_large_allocations_out_of_the_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes the allocator's tuning.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
    }
}

/// Loads and verifies every program; attaching comes later.
pub fn load() -> Result<Loaded, LoadError> {
    if PROBES.is_empty() {
        return Err(LoadError::NotEmbedded);
    }
    // aya's loader parses the kernel's BTF when created; that copy is dropped and one parse
    // serves aya's relocations and the uprobe_multi programs'. A parse holds about 20 MB: two
    // at once made the agent's peak RSS 52 MB instead of 28.
    keep_large_allocations_out_of_the_heap();
    let mut loader = aya::EbpfLoader::new();
    loader.btf(None);
    let kernel_btf = Btf::from_sys_fs().ok();
    loader.btf(kernel_btf.as_ref());
    let placeholder;
    let object = match without_socket_map(PROBES) {
        Some(patched) => {
            placeholder = patched;
            loader.map_max_entries(SOCKET_MAP, 1);
            &placeholder[..]
        }
        None => PROBES,
    };
    let mut ebpf = loader.load(object).map_err(|e| classify(Box::new(e)))?;
    drop(loader);
    if use_uprobe_multi() {
        match MultiPrograms::load(object, &ebpf, kernel_btf.as_ref()) {
            Ok(multi) => {
                tracing::info!(
                    "uprobes: uprobe_multi links (Linux 6.6+; CAP_BPF and CAP_PERFMON suffice)"
                );
                return Ok(Loaded {
                    ebpf,
                    multi: Some(multi),
                });
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => {
                return Err(classify(Box::new(e)));
            }
            // The kernel has the links but refused these programs for them (a verifier that
            // judges the attach type differently, say): perf-event uprobes still trace.
            Err(e) => tracing::warn!("{e}; using perf-event uprobes instead"),
        }
    }
    let names: Vec<String> = ebpf.programs().map(|(n, _)| n.to_string()).collect();
    for name in names {
        let program = ebpf.program_mut(&name).expect("listed above");
        let prog: &mut aya::programs::UProbe = match program.try_into() {
            Ok(p) => p,
            // Other kinds load where they are attached.
            Err(_) => continue,
        };
        prog.load()
            .map_err(|e| classify(Box::new(EbpfError::ProgramError(e))))?;
    }
    tracing::info!("uprobes: perf-event uprobes");
    Ok(Loaded { ebpf, multi: None })
}

/// What the kernel's verifier reports for one loaded program.
#[derive(Clone, Debug, serde::Serialize)]
pub struct VerifiedProgram {
    /// Name of the program (a function in ebpf/probes).
    pub name: String,
    /// Its kind: `uprobe`, `tracepoint`, `sock_ops` or `sk_msg`.
    pub kind: &'static str,
    /// Instructions the verifier processed (`bpf_prog_info.verified_insns`, kernel 5.16+).
    pub verified_insns: Option<u32>,
    /// Size of the program after the verifier's rewrites, in bytes.
    pub xlated_bytes: Option<u32>,
    /// Size of the JIT-compiled program, in bytes.
    pub jited_bytes: Option<u32>,
}

/// Loads every embedded program of every kind into the kernel without attaching any, and
/// reads what the verifier reports for each (for `spanhook verifier` and the budget test).
/// The programs are unloaded when this returns.
pub fn load_every_program() -> Result<Vec<VerifiedProgram>, LoadError> {
    use aya::programs::Program;
    let Loaded { mut ebpf, multi } = load()?;
    let classify = |e: aya::programs::ProgramError| classify(Box::new(EbpfError::ProgramError(e)));
    let mut out = Vec::new();
    for (name, program) in ebpf.programs_mut() {
        let kind = match program {
            Program::UProbe(_) if multi.is_some() => continue,
            Program::UProbe(_) => "uprobe",
            Program::TracePoint(p) => {
                p.load().map_err(classify)?;
                "tracepoint"
            }
            Program::SockOps(p) => {
                p.load().map_err(classify)?;
                "sock_ops"
            }
            Program::SkMsg(p) => {
                p.load().map_err(classify)?;
                "sk_msg"
            }
            _ => "other",
        };
        let info = program.info().map_err(classify)?;
        out.push(VerifiedProgram {
            name: name.to_string(),
            kind,
            verified_insns: info.verified_instruction_count(),
            xlated_bytes: info.size_translated(),
            jited_bytes: Some(info.size_jitted()).filter(|&n| n > 0),
        });
    }
    for (name, stats) in multi.iter().flat_map(MultiPrograms::stats) {
        let stats = stats.map_err(|e| LoadError::Kernel {
            source: format!("reading {name}'s verifier figures: {e}").into(),
        })?;
        out.push(VerifiedProgram {
            name,
            kind: "uprobe",
            verified_insns: Some(stats.verified_insns).filter(|&n| n > 0),
            xlated_bytes: Some(stats.xlated_bytes),
            jited_bytes: Some(stats.jited_bytes).filter(|&n| n > 0),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
