//! `spanhook inspect`: what spanhook can trace in a binary, and precisely why not.
//!
//! Exit status: 0 when at least one capability can be traced, 3 when the file is readable but
//! nothing in it can be traced, 1 when it cannot be read as an executable at all.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

use crate::{
    attach::UprobeSite,
    inspect::{
        elf::{Arch, ElfFile},
        golang::Module,
        process::Process,
    },
    plan::{
        catalog::GO_PROBES,
        target::{plan_file, FileError},
        CapabilityOutcome, CapabilityPlan, FieldOffset, Language, OffsetTable,
    },
};

/// Exit status when nothing can be traced.
const EXIT_NOTHING_TO_TRACE: u8 = 3;

/// Flags of `spanhook inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The executable to inspect.
    #[arg(required_unless_present = "pid", conflicts_with = "pid")]
    pub path: Option<PathBuf>,
    /// Inspect the executable of a running process.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Which path to report for HTTP: symbol-level probes, socket-level capture, or the
    /// better of the two as `attach` chooses.
    #[arg(long, value_enum, default_value = "auto")]
    pub capture: crate::plan::CaptureMode,
}

/// What `inspect` says about a Rust binary.
#[derive(Serialize)]
struct RustReport {
    rustc: Option<String>,
    mangling: &'static str,
    functions: usize,
    crates: Vec<crate::inspect::rust::CrateVersion>,
    /// For each part of each capability: the function chosen, and why better ones were not.
    candidates: Vec<crate::plan::rust::PartChoice>,
}

/// Crates `inspect` lists in its text output (the JSON lists every crate).
const RUST_CRATES_SHOWN: &[&str] = &[
    "hyper",
    "hyper-util",
    "h2",
    "tonic",
    "axum",
    "reqwest",
    "tokio",
    "warp",
    "actix-web",
];

#[derive(Serialize)]
struct GoReport {
    version: String,
    main_module: Option<String>,
    modules: Vec<Module>,
}

/// One uprobe `attach` would place; `opt_in` ones only with `--propagate`.
#[derive(Serialize)]
struct ProbeReport {
    #[serde(flatten)]
    site: UprobeSite,
    opt_in: bool,
}

#[derive(Serialize)]
struct Report {
    path: String,
    pid: Option<u32>,
    language: &'static str,
    arch: &'static str,
    pie: bool,
    stripped: bool,
    dwarf: bool,
    go: Option<GoReport>,
    rust: Option<RustReport>,
    capabilities: Vec<CapabilityPlan>,
    /// Every uprobe `attach` would place.
    probes: Vec<ProbeReport>,
    offsets: Vec<FieldOffset>,
    warnings: Vec<String>,
    /// Why nothing can be traced, when that is the case for the whole binary.
    problem: Option<String>,
}

/// Runs `spanhook inspect`.
pub fn run(args: &InspectArgs) -> Result<ExitCode> {
    let (path, open_path, pid) = match (args.pid, &args.path) {
        (Some(pid), _) => {
            let p = Process::open(pid)?;
            (p.exe.clone(), p.exe_link.clone(), Some(pid))
        }
        (None, Some(path)) => (path.clone(), path.clone(), None),
        (None, None) => unreachable!("clap requires one"),
    };
    let elf =
        ElfFile::open(&open_path).with_context(|| format!("cannot inspect {}", path.display()))?;
    let report = build_report(&elf, path, pid, args.capture);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    let traced = report
        .capabilities
        .iter()
        .any(|c| !matches!(c.outcome, CapabilityOutcome::NotTraced { .. }));
    Ok(if traced {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NOTHING_TO_TRACE)
    })
}

fn build_report(
    elf: &ElfFile,
    path: PathBuf,
    pid: Option<u32>,
    capture: crate::plan::CaptureMode,
) -> Report {
    let mut report = Report {
        path: path.display().to_string(),
        pid,
        language: "other",
        arch: match elf.arch() {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        },
        pie: elf.is_pie(),
        stripped: !elf.has_symtab(),
        dwarf: elf.has_dwarf(),
        go: None,
        rust: None,
        capabilities: Vec::new(),
        probes: Vec::new(),
        offsets: Vec::new(),
        warnings: Vec::new(),
        problem: None,
    };
    // Report what propagation would need too; `attach` enables it only with --propagate.
    let options = crate::plan::PlanOptions {
        propagate: true,
        capture,
    };
    let planned = plan_file(elf, &OffsetTable::embedded(), options).map(|(language, mut plan)| {
        if let Some(pid) = pid {
            crate::plan::socket::for_process(pid, &mut plan);
        }
        (language, plan)
    });
    match planned {
        Ok((Language::Native(native), plan)) => {
            report.language = match native.kind {
                crate::inspect::native::NativeKind::Python { .. } => "python",
                crate::inspect::native::NativeKind::Rust => "rust",
                crate::inspect::native::NativeKind::Cpp => "c++",
                crate::inspect::native::NativeKind::Other => "other",
            };
            report.capabilities = plan.capabilities;
            report.probes = plan
                .sites
                .into_iter()
                .map(|site| ProbeReport {
                    opt_in: false,
                    site,
                })
                .collect();
            report.warnings = plan.warnings;
        }
        Ok((Language::Go(go), plan)) => {
            report.language = "go";
            report.go = Some(go_report(&go));
            report.capabilities = plan.capabilities;
            report.probes = plan
                .sites
                .into_iter()
                .map(|site| ProbeReport {
                    opt_in: GO_PROBES.iter().any(|p| {
                        p.opt_in
                            && (p.entry_program == Some(site.program)
                                || p.return_program == Some(site.program))
                    }),
                    site,
                })
                .collect();
            report.offsets = plan.offsets;
            report.warnings = plan.warnings;
        }
        Ok((Language::Rust(rust), plan)) => {
            report.language = "rust";
            report.rust = Some(RustReport {
                rustc: rust.binary.rustc.clone(),
                mangling: rust.binary.mangling,
                functions: rust.binary.functions,
                crates: rust.binary.crates.clone(),
                candidates: rust.choices.clone(),
            });
            if rust.binary.stripped() {
                report.problem = Some(crate::plan::rust::STRIPPED.to_string());
            }
            report.capabilities = plan.capabilities;
            report.probes = plan
                .sites
                .into_iter()
                .map(|site| ProbeReport {
                    opt_in: false,
                    site,
                })
                .collect();
            report.warnings = plan.warnings;
        }
        Err(FileError::NotSupported) => {
            if capture != crate::plan::CaptureMode::Symbols {
                let native = crate::inspect::native::analyze(elf, std::path::Path::new("/"));
                let reason = format!("socket level: {}", native.sockets.describe());
                for capability in [
                    crate::plan::Capability::SocketHttpServer,
                    crate::plan::Capability::SocketHttpClient,
                ] {
                    report.capabilities.push(CapabilityPlan {
                        capability,
                        outcome: CapabilityOutcome::NotTraced {
                            reason: reason.clone(),
                        },
                    });
                }
            }
            report.problem = Some("neither a Go program (no Go build information or function table) nor a Rust program; spanhook traces Go and Rust programs".into());
        }
        Err(e) => {
            if let Ok(Some(go)) = crate::inspect::golang::analyze(elf) {
                report.language = "go";
                report.go = Some(go_report(&go));
            }
            report.problem = Some(e.to_string());
        }
    }
    // A symbol-level problem is not the whole story when the socket level traces something.
    let traced = report
        .capabilities
        .iter()
        .any(|c| !matches!(c.outcome, CapabilityOutcome::NotTraced { .. }));
    if traced {
        if let Some(problem) = report.problem.take() {
            report.warnings.push(format!("symbol level: {problem}"));
        }
    }
    report
}

fn go_report(go: &crate::inspect::golang::GoBinary) -> GoReport {
    GoReport {
        version: go.version.to_string(),
        main_module: go
            .build
            .main
            .as_ref()
            .map(|m| m.path.clone())
            .or_else(|| go.build.path.clone()),
        modules: go.build.deps.clone(),
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn render(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "path:      {}", r.path);
    if let Some(pid) = r.pid {
        let _ = writeln!(s, "pid:       {pid}");
    }
    let lang = match (&r.go, &r.rust) {
        (Some(go), _) => format!("Go {}", go.version),
        (None, Some(rust)) => match &rust.rustc {
            Some(v) => format!("Rust {v}"),
            None => "Rust".to_string(),
        },
        (None, None) => r.language.to_string(),
    };
    let _ = writeln!(
        s,
        "language:  {lang} ({}, PIE {}, stripped {}, DWARF {})",
        r.arch,
        yes_no(r.pie),
        yes_no(r.stripped),
        yes_no(r.dwarf)
    );
    if let Some(go) = &r.go {
        if let Some(main) = &go.main_module {
            let _ = writeln!(s, "module:    {main}");
        }
        if !go.modules.is_empty() {
            let _ = writeln!(s, "modules:");
            for m in &go.modules {
                let _ = writeln!(s, "  {} {}", m.path, m.version);
            }
        }
    }
    if let Some(rust) = &r.rust {
        let _ = writeln!(
            s,
            "symbols:   {} Rust functions ({} mangling)",
            rust.functions, rust.mangling
        );
        let shown: Vec<String> = rust
            .crates
            .iter()
            .filter(|c| RUST_CRATES_SHOWN.contains(&c.name.as_str()))
            .map(|c| format!("{} {}", c.name, c.version))
            .collect();
        if !shown.is_empty() {
            let _ = writeln!(
                s,
                "crates:    {} ({} crates in all)",
                shown.join(", "),
                rust.crates.len()
            );
        }
        if !rust.candidates.is_empty() {
            let _ = writeln!(s, "functions:");
        }
        for c in &rust.candidates {
            let what = format!("{} {}", c.capability.name(), c.role);
            match &c.chosen {
                Some(f) => {
                    let _ = writeln!(s, "  {what:<38} {f}");
                }
                None => {
                    let _ = writeln!(s, "  {what:<38} none usable");
                }
            }
            for r in &c.rejected {
                let _ = writeln!(s, "  {:<38}   not {}: {}", "", r.symbol, r.reason);
            }
        }
    }
    if let Some(problem) = &r.problem {
        let _ = writeln!(s, "cannot trace: {problem}");
    }
    if !r.capabilities.is_empty() {
        let _ = writeln!(s, "capabilities:");
        for c in &r.capabilities {
            match &c.outcome {
                CapabilityOutcome::Traced {
                    symbol,
                    entry_offset,
                    returns,
                } => {
                    let rets = match returns {
                        0 => "entry only".to_string(),
                        n => format!("{n} RET sites"),
                    };
                    let _ = writeln!(
                        s,
                        "  {:<14} traced      {symbol} at file offset {entry_offset:#x}, {rets}",
                        c.capability.name()
                    );
                }
                CapabilityOutcome::NotTraced { reason } => {
                    let _ = writeln!(s, "  {:<14} not traced  {reason}", c.capability.name());
                }
                CapabilityOutcome::Sockets { via, reason } => {
                    let _ = writeln!(
                        s,
                        "  {:<14} traced      {via}\n  {:<14}             why: {reason}",
                        c.capability.name(),
                        ""
                    );
                }
            }
        }
    }
    if !r.offsets.is_empty() {
        let _ = writeln!(s, "offsets:");
        for o in &r.offsets {
            let name = format!("{}.{}", o.field.type_name(), o.field.field_name());
            let _ = writeln!(s, "  {name:<46} {:>5}  {}", o.offset, o.source);
        }
    }
    for w in &r.warnings {
        let _ = writeln!(s, "warning:   {w}");
    }
    s
}
