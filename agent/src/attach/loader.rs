//! Loading the programs embedded in the binary at build time.

use aya::{Ebpf, EbpfError};

use super::features;

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
        source: Box<EbpfError>,
    },
    /// The kernel refused the programs.
    #[error("the kernel refused spanhook's eBPF programs: {source}")]
    Kernel {
        /// The loader's error, with the verifier log when there is one.
        #[source]
        source: Box<EbpfError>,
    },
}

/// Loads and verifies every program; attaching comes later.
pub fn load() -> Result<Ebpf, LoadError> {
    if PROBES.is_empty() {
        return Err(LoadError::NotEmbedded);
    }
    let classify = |source: EbpfError| {
        let missing = features::missing_capabilities();
        let source = Box::new(source);
        if missing.is_empty() {
            LoadError::Kernel { source }
        } else {
            LoadError::Privileges {
                missing: missing.join(", "),
                source,
            }
        }
    };
    let mut ebpf = Ebpf::load(PROBES).map_err(classify)?;
    let names: Vec<String> = ebpf.programs().map(|(n, _)| n.to_string()).collect();
    for name in names {
        let program = ebpf.program_mut(&name).expect("listed above");
        let prog: &mut aya::programs::UProbe = match program.try_into() {
            Ok(p) => p,
            // Only uprobes exist today; other kinds load where they are attached.
            Err(_) => continue,
        };
        prog.load()
            .map_err(|e| classify(EbpfError::ProgramError(e)))?;
    }
    Ok(ebpf)
}
