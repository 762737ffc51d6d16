//! A running process → its plan, with one error type naming exactly why a process cannot be
//! traced.
//!
//! [`plan_file`] is where each language's analysis and planner plug in: it recognises the
//! binary and returns the language's facts with a language-neutral [`TargetPlan`].

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{plan_go, OffsetTable, PlanError, PlanOptions, TargetPlan};
use crate::{
    inspect::{
        elf::{ElfError, ElfFile},
        golang::{self, types::TypeNames, GoBinary, GoError},
        native::{NativeBinary, NativeKind},
        process::{Process, ProcessError},
        rust::{self as rust_inspect, RustBinary, RustSymbols},
    },
    plan::rust::{plan_rust, PartChoice},
    spans::{errors::GoErrorTypes, http::ErrorTypes, resource::Runtime, rust::RustErrorTypes},
};

/// What a binary is, as far as tracing goes.
#[derive(Clone, Debug)]
pub enum Language {
    /// A Go program and what its build information says.
    Go(GoBinary),
    /// A Rust program: its compiler, crates, symbols, and how each probe was chosen.
    Rust(Box<RustTarget>),
    /// Any other native program (C, C++, an interpreter): traced at socket level.
    Native(NativeBinary),
}

/// What spanhook learned about a Rust program.
#[derive(Clone, Debug)]
pub struct RustTarget {
    /// Compiler, crates, mangling.
    pub binary: RustBinary,
    /// Its functions by demangled path (kept for naming error types).
    pub symbols: Arc<RustSymbols>,
    /// How each part of each capability was resolved.
    pub choices: Vec<PartChoice>,
}

impl Language {
    /// `process.runtime.*` of the resource.
    pub fn runtime(&self) -> Runtime {
        match self {
            Language::Go(go) => Runtime {
                name: "go",
                version: format!("go{}", go.version),
            },
            Language::Rust(rust) => Runtime {
                name: "rust",
                version: rust.binary.rustc.clone().unwrap_or_default(),
            },
            Language::Native(native) => match &native.kind {
                NativeKind::Python { version } => Runtime {
                    name: "cpython",
                    version: version.clone().unwrap_or_default(),
                },
                NativeKind::Rust => Runtime {
                    name: "rust",
                    version: String::new(),
                },
                NativeKind::Cpp | NativeKind::Other => Runtime {
                    name: "native",
                    version: String::new(),
                },
            },
        }
    }

    /// A short description for logs ("Go 1.22.12").
    pub fn describe(&self) -> String {
        match self {
            Language::Go(go) => format!("Go {}", go.version),
            Language::Rust(rust) => match &rust.binary.rustc {
                Some(v) => format!("Rust {v}"),
                None => "Rust".to_string(),
            },
            Language::Native(native) => super::socket::describe(native),
        }
    }
}

/// A process ready to attach to.
#[derive(Debug)]
pub struct PlannedTarget {
    /// The process.
    pub process: Process,
    /// Its executable, kept open for naming types later.
    pub elf: Arc<ElfFile>,
    /// What the binary is.
    pub language: Language,
    /// Where the probes go.
    pub plan: TargetPlan,
}

impl PlannedTarget {
    /// Names the dynamic types of errors the program returns, when its binary allows.
    pub fn error_types(&self) -> Option<Arc<dyn ErrorTypes>> {
        match &self.language {
            Language::Go(go) => {
                let names = TypeNames::new(&self.elf, go.version)?;
                let bias = self.process.load_bias(&self.elf)?;
                Some(Arc::new(GoErrorTypes::new(self.elf.clone(), names, bias)))
            }
            Language::Rust(rust) => {
                let bias = self.process.load_bias(&self.elf)?;
                Some(Arc::new(RustErrorTypes::new(rust.symbols.clone(), bias)))
            }
            Language::Native(_) => None,
        }
    }
}

/// Why a process cannot be traced.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The process is gone or unreadable.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// The executable is not a usable ELF file.
    #[error("pid {pid}: {source}{}", unreadable_hint(source))]
    Elf {
        /// The pid.
        pid: u32,
        /// Cause.
        #[source]
        source: ElfError,
    },
    /// The executable is not a kind of program spanhook traces.
    #[error("pid {pid} ({path}) is neither a Go program (no Go build information or function table) nor a Rust program; spanhook traces Go and Rust programs")]
    NotSupported {
        /// The pid.
        pid: u32,
        /// Its executable.
        path: PathBuf,
    },
    /// Go's tables could not be read.
    #[error("pid {pid} ({path}): {source}")]
    Go {
        /// The pid.
        pid: u32,
        /// Its executable.
        path: PathBuf,
        /// Cause.
        #[source]
        source: GoError,
    },
    /// The binary cannot be planned (e.g. an unsupported Go release).
    #[error("pid {pid}: {source}")]
    Plan {
        /// The pid.
        pid: u32,
        /// Cause.
        #[source]
        source: PlanError,
    },
    /// Nothing in the program can be traced.
    #[error("pid {pid} ({path}) has nothing spanhook can trace:\n  {}", reasons.join("\n  "))]
    NothingToTrace {
        /// The pid.
        pid: u32,
        /// Its executable.
        path: PathBuf,
        /// Why, per capability.
        reasons: Vec<String>,
    },
}

/// What an executable the agent may not open needs, for the message.
fn unreadable_hint(e: &ElfError) -> &'static str {
    match e {
        ElfError::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
            " (the agent's user may not read this file; reading it needs root or CAP_DAC_READ_SEARCH)"
        }
        _ => "",
    }
}

/// Inspects and plans a running process.
pub fn plan_pid(
    pid: u32,
    table: &OffsetTable,
    options: PlanOptions,
) -> Result<PlannedTarget, TargetError> {
    let process = Process::open(pid)?;
    let elf =
        ElfFile::open(&process.exe_link).map_err(|source| TargetError::Elf { pid, source })?;
    let (language, mut plan) = plan_file(&elf, table, options).map_err(|e| match e {
        FileError::NotSupported => TargetError::NotSupported {
            pid,
            path: process.exe.clone(),
        },
        FileError::Go(source) => TargetError::Go {
            pid,
            path: process.exe.clone(),
            source,
        },
        FileError::Plan(source) => TargetError::Plan { pid, source },
    })?;
    super::socket::for_process(pid, &mut plan);
    if !plan.traces_anything() {
        return Err(TargetError::NothingToTrace {
            pid,
            path: process.exe.clone(),
            reasons: plan.reasons(),
        });
    }
    Ok(PlannedTarget {
        process,
        elf: Arc::new(elf),
        language,
        plan,
    })
}

/// Why a file cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Not a kind of program spanhook traces.
    #[error("not a Go or Rust program")]
    NotSupported,
    /// Go's tables are unreadable.
    #[error(transparent)]
    Go(#[from] GoError),
    /// Planning failed.
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// Recognises an opened binary and plans its probes: symbol-level where the binary allows,
/// socket-level otherwise or when asked (see `plan::socket`).
pub fn plan_file(
    elf: &ElfFile,
    table: &OffsetTable,
    options: PlanOptions,
) -> Result<(Language, TargetPlan), FileError> {
    let symbols = plan_symbols(elf, table, options);
    super::socket::select(elf, options.capture, symbols)
}

/// Recognises an opened binary and plans its symbol-level probes.
fn plan_symbols(
    elf: &ElfFile,
    table: &OffsetTable,
    options: PlanOptions,
) -> Result<(Language, TargetPlan), FileError> {
    if let Some(go) = golang::analyze(elf)? {
        let plan = plan_go(elf, &go, table, options)?;
        return Ok((Language::Go(go), plan));
    }
    let symbols = RustSymbols::read(elf);
    if let Some(binary) = rust_inspect::analyze(elf, &symbols) {
        let (plan, choices) = plan_rust(elf, &binary, &symbols, options);
        let target = RustTarget {
            binary,
            symbols: Arc::new(symbols),
            choices,
        };
        return Ok((Language::Rust(Box::new(target)), plan));
    }
    Err(FileError::NotSupported)
}

/// Opens a binary by path (for `inspect PATH`).
pub fn open(path: &Path) -> Result<ElfFile, ElfError> {
    ElfFile::open(path)
}
