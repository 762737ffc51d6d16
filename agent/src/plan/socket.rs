//! The socket-level path, and the choice between it and the symbol-level probes.
//!
//! Symbol-level probes are used when the binary allows them for HTTP (they know routes,
//! link client calls to the request that caused them, and can propagate context); when it
//! does not — a C or C++ server, an interpreter, a stripped Rust program, a Go program
//! without `net/http` or of an unsupported release — its HTTP/1 is read from the system
//! calls on its TCP sockets, and its TLS plaintext from the libssl it links or maps. Each
//! capability says which path it takes and why; `--capture symbols|sockets` forces a path.

use std::path::Path;

use spanhook_common::TargetConfig;

use super::{
    catalog::Capability,
    resolve::{CapabilityOutcome, CapabilityPlan, TargetPlan},
    target::{FileError, Language},
};
use crate::{
    attach::UprobeSite,
    inspect::{
        elf::ElfFile,
        golang,
        native::{self, NativeBinary, SocketUse, Tls, SSL_FUNCTIONS},
    },
};

/// Which path to trace HTTP with (`--capture`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CaptureMode {
    /// Symbol-level probes when the binary allows them for HTTP, socket level otherwise.
    #[default]
    Auto,
    /// Symbol-level probes only (a program without usable symbols is refused).
    Symbols,
    /// Socket level only, even where symbols could be used.
    Sockets,
}

/// What the socket-level capture attaches, for messages.
pub const SYSCALLS: &str = "syscall tracepoints on read, write, readv, writev, recvfrom, sendto, recvmsg, sendmsg, sendfile and close, filtered in the kernel to this process and its TCP sockets";

/// The kernel program for each libssl function's entry (its return is `ssl_return`).
fn ssl_program(function: &str) -> Option<&'static str> {
    Some(match function {
        "SSL_read" => "ssl_read_enter",
        "SSL_write" => "ssl_write_enter",
        "SSL_read_ex" => "ssl_read_ex_enter",
        "SSL_write_ex" => "ssl_write_ex_enter",
        _ => return None,
    })
}

/// Capabilities whose symbol-level tracing covers HTTP/1 (the socket path would duplicate).
fn is_http(c: Capability) -> bool {
    matches!(
        c,
        Capability::GoHttpServer
            | Capability::GoHttpClient
            | Capability::RustHttpServer
            | Capability::RustHttpClient
    )
}

fn traced(c: &CapabilityPlan) -> bool {
    !matches!(c.outcome, CapabilityOutcome::NotTraced { .. })
}

/// Applies `mode` to the symbol-level result for `elf`.
pub fn select(
    elf: &ElfFile,
    mode: CaptureMode,
    symbols: Result<(Language, TargetPlan), FileError>,
) -> Result<(Language, TargetPlan), FileError> {
    if mode == CaptureMode::Symbols {
        return symbols;
    }
    let (language, mut plan, why) = match symbols {
        Ok((language, plan)) => {
            let http = plan
                .capabilities
                .iter()
                .any(|c| is_http(c.capability) && traced(c));
            if http && mode == CaptureMode::Auto {
                let mut plan = plan;
                let reason = "not used: symbol-level probes trace this program's HTTP (richer: routes, parent links, propagation); `--capture sockets` reads its sockets instead".to_string();
                for capability in [
                    Capability::SocketHttpServer,
                    Capability::SocketHttpClient,
                    Capability::SocketTls,
                ] {
                    plan.capabilities.push(CapabilityPlan {
                        capability,
                        outcome: CapabilityOutcome::NotTraced {
                            reason: reason.clone(),
                        },
                    });
                }
                return Ok((language, plan));
            }
            let why = if mode == CaptureMode::Sockets {
                "--capture sockets".to_string()
            } else {
                let reasons: Vec<String> = plan
                    .capabilities
                    .iter()
                    .filter(|c| is_http(c.capability))
                    .filter_map(|c| match &c.outcome {
                        CapabilityOutcome::NotTraced { reason } => Some(reason.clone()),
                        _ => None,
                    })
                    .collect();
                if reasons.is_empty() {
                    "no HTTP symbol-level probe applies".to_string()
                } else {
                    format!("no usable HTTP symbols ({})", reasons.join("; "))
                }
            };
            // Symbol-level sites stay off: one path per program.
            let mut plan = plan;
            if mode == CaptureMode::Sockets {
                plan.sites.clear();
                plan.config.flags = 0;
                for c in plan.capabilities.iter_mut() {
                    if traced(c) {
                        c.outcome = CapabilityOutcome::NotTraced {
                            reason: "not used: --capture sockets".into(),
                        };
                    }
                }
            }
            (language, plan, why)
        }
        Err(FileError::NotSupported) => {
            let native = native::analyze(elf, Path::new("/"));
            (
                Language::Native(native),
                TargetPlan::default(),
                "no usable symbols: not a Go or Rust program spanhook has symbol-level probes for"
                    .to_string(),
            )
        }
        Err(e) => {
            // A Go program spanhook cannot probe by symbol (e.g. an unsupported release).
            let language = match golang::analyze(elf) {
                Ok(Some(go)) => Language::Go(go),
                _ => Language::Native(native::analyze(elf, Path::new("/"))),
            };
            (
                language,
                TargetPlan::default(),
                format!("no usable symbols: {e}"),
            )
        }
    };
    let facts = match &language {
        Language::Native(n) => n.clone(),
        _ => native::analyze(elf, Path::new("/")),
    };
    let sockets = match &language {
        // Go makes system calls itself: its `net` package is the sign of sockets.
        Language::Go(_) => go_sockets(elf),
        _ => facts.sockets.clone(),
    };
    add_socket_plan(&mut plan, &sockets, &facts.tls, &why);
    if !plan.traces_anything()
        && matches!(language, Language::Native(_))
        && mode == CaptureMode::Auto
    {
        // Nothing at all: keep the plain "not a program spanhook traces" answer.
        return Err(FileError::NotSupported);
    }
    Ok((language, plan))
}

/// Whether a Go program has the `net` package's socket code.
fn go_sockets(elf: &ElfFile) -> SocketUse {
    const NET: &[&str] = &[
        "net.(*netFD).Read",
        "net.(*netFD).Write",
        "net.(*netFD).accept",
    ];
    match golang::find_functions(elf, NET) {
        Ok(found) if !found.is_empty() => SocketUse::Direct,
        Ok(_) => SocketUse::None,
        Err(_) => SocketUse::Static,
    }
}

/// Adds the socket capabilities, flags and libssl sites to `plan`.
fn add_socket_plan(plan: &mut TargetPlan, sockets: &SocketUse, tls: &Tls, why: &str) {
    if !sockets.possible() {
        let reason = format!("socket level: {}", sockets.describe());
        for capability in [
            Capability::SocketHttpServer,
            Capability::SocketHttpClient,
            Capability::SocketTls,
        ] {
            plan.capabilities.push(CapabilityPlan {
                capability,
                outcome: CapabilityOutcome::NotTraced {
                    reason: reason.clone(),
                },
            });
        }
        return;
    }
    plan.config.flags |= TargetConfig::FLAG_SOCKET_CAPTURE;
    let reason = format!("{why}; {}", sockets.describe());
    for capability in [Capability::SocketHttpServer, Capability::SocketHttpClient] {
        plan.capabilities.push(CapabilityPlan {
            capability,
            outcome: CapabilityOutcome::Sockets {
                via: SYSCALLS.to_string(),
                reason: reason.clone(),
            },
        });
    }
    set_tls(plan, tls, None);
}

/// Replaces the TLS capability and sites of `plan` for `tls`; `open` is the path that opens
/// the library from here when it differs from the path shown (a process's root).
fn set_tls(plan: &mut TargetPlan, tls: &Tls, open: Option<&Path>) {
    plan.capabilities
        .retain(|c| c.capability != Capability::SocketTls);
    plan.sites.retain(|s| !s.program.starts_with("ssl_"));
    plan.config.flags &= !TargetConfig::FLAG_SOCKET_TLS;
    let outcome = match tls {
        Tls::Libssl { path } => {
            let file = open.unwrap_or(path);
            match libssl_sites(file) {
                Ok(sites) => {
                    let names: Vec<&str> = SSL_FUNCTIONS
                        .iter()
                        .copied()
                        .filter(|f| sites.iter().any(|s| s.label.starts_with(&format!("{f} "))))
                        .collect();
                    plan.sites.extend(sites);
                    plan.config.flags |= TargetConfig::FLAG_SOCKET_TLS;
                    CapabilityOutcome::Sockets {
                        via: format!("uprobes on {} of {}", names.join(", "), path.display()),
                        reason: "TLS plaintext where the program hands it to libssl".into(),
                    }
                }
                Err(reason) => CapabilityOutcome::NotTraced { reason },
            }
        }
        Tls::Static => CapabilityOutcome::NotTraced {
            reason: "OpenSSL or BoringSSL is linked into the executable: its TLS plaintext is not traced (out of scope: only a shared libssl is probed)".into(),
        },
        Tls::Rustls => CapabilityOutcome::NotTraced {
            reason: "rustls is compiled into the program: its TLS plaintext is not traced (only its plain HTTP is)".into(),
        },
        Tls::None => CapabilityOutcome::NotTraced {
            reason: "no libssl is linked (a process is checked again for a mapped libssl when attached)".into(),
        },
    };
    plan.capabilities.push(CapabilityPlan {
        capability: Capability::SocketTls,
        outcome,
    });
}

/// Entry and return uprobes on every libssl function present in `file`.
fn libssl_sites(file: &Path) -> Result<Vec<UprobeSite>, String> {
    let lib = ElfFile::open(file).map_err(|e| format!("cannot read libssl: {e}"))?;
    let symbols = lib.symbols(SSL_FUNCTIONS);
    let mut sites = Vec::new();
    for function in SSL_FUNCTIONS {
        let (Some(sym), Some(program)) = (symbols.get(*function), ssl_program(function)) else {
            continue;
        };
        let Some(offset) = lib.vaddr_to_offset(sym.address) else {
            continue;
        };
        for (program, role) in [(program, "entry"), ("ssl_return", "return")] {
            sites.push(UprobeSite {
                program,
                offset,
                label: format!("{function} ({role})"),
                binary: Some(file.to_path_buf()),
            });
        }
    }
    if !symbols.contains_key("SSL_read") || !symbols.contains_key("SSL_write") {
        return Err(format!(
            "{} does not export SSL_read and SSL_write",
            file.display()
        ));
    }
    Ok(sites)
}

/// Completes a socket-level plan with what the running process shows: the libssl it maps
/// (through its root, so a container's library is the one probed).
pub fn for_process(pid: u32, plan: &mut TargetPlan) {
    if plan.config.flags & TargetConfig::FLAG_SOCKET_CAPTURE == 0 {
        return;
    }
    if let Some((open, shown)) = native::mapped_libssl(pid) {
        set_tls(plan, &Tls::Libssl { path: shown }, Some(&open));
    }
}

/// The roles socket-level tracing reports for a plan: (server, client).
pub fn roles(plan: &TargetPlan) -> (bool, bool) {
    let on = |cap| {
        plan.capabilities
            .iter()
            .any(|c| c.capability == cap && matches!(c.outcome, CapabilityOutcome::Sockets { .. }))
    };
    (
        on(Capability::SocketHttpServer),
        on(Capability::SocketHttpClient),
    )
}

/// A short description of a native program for logs.
pub fn describe(n: &NativeBinary) -> String {
    use crate::inspect::native::NativeKind;
    match &n.kind {
        NativeKind::Python { version: Some(v) } => format!("CPython {v}"),
        NativeKind::Python { version: None } => "CPython".into(),
        NativeKind::Rust => "Rust (no usable symbols)".into(),
        NativeKind::Cpp => "C++".into(),
        NativeKind::Other => "native (C or another compiled language)".into(),
    }
}
