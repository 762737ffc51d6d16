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
        process::{Process, ProcessError},
    },
    spans::{errors::GoErrorTypes, http::ErrorTypes, resource::Runtime},
};

/// What a binary is, as far as tracing goes.
#[derive(Clone, Debug)]
pub enum Language {
    /// A Go program and what its build information says.
    Go(GoBinary),
}

impl Language {
    /// `process.runtime.*` of the resource.
    pub fn runtime(&self) -> Runtime {
        match self {
            Language::Go(go) => Runtime {
                name: "go",
                version: format!("go{}", go.version),
            },
        }
    }

    /// A short description for logs ("Go 1.22.12").
    pub fn describe(&self) -> String {
        match self {
            Language::Go(go) => format!("Go {}", go.version),
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
    #[error("pid {pid}: {source}")]
    Elf {
        /// The pid.
        pid: u32,
        /// Cause.
        #[source]
        source: ElfError,
    },
    /// The executable is not a kind of program spanhook traces.
    #[error("pid {pid} ({path}) is not a Go program (no Go build information or function table); spanhook traces Go programs")]
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

/// Inspects and plans a running process.
pub fn plan_pid(
    pid: u32,
    table: &OffsetTable,
    options: PlanOptions,
) -> Result<PlannedTarget, TargetError> {
    let process = Process::open(pid)?;
    let elf =
        ElfFile::open(&process.exe_link).map_err(|source| TargetError::Elf { pid, source })?;
    let (language, plan) = plan_file(&elf, table, options).map_err(|e| match e {
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
    #[error("not a Go program")]
    NotSupported,
    /// Go's tables are unreadable.
    #[error(transparent)]
    Go(#[from] GoError),
    /// Planning failed.
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// Recognises an opened binary and plans its probes.
pub fn plan_file(
    elf: &ElfFile,
    table: &OffsetTable,
    options: PlanOptions,
) -> Result<(Language, TargetPlan), FileError> {
    if let Some(go) = golang::analyze(elf)? {
        let plan = plan_go(elf, &go, table, options)?;
        return Ok((Language::Go(go), plan));
    }
    Err(FileError::NotSupported)
}

/// Opens a binary by path (for `inspect PATH`).
pub fn open(path: &Path) -> Result<ElfFile, ElfError> {
    ElfFile::open(path)
}
