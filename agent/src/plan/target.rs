//! A running process → its plan, with one error type naming exactly why a process cannot be
//! traced.

use std::path::{Path, PathBuf};

use super::{plan_go, GoPlan, OffsetTable, PlanError, PlanOptions};
use crate::inspect::{
    elf::{ElfError, ElfFile},
    golang::{self, GoBinary, GoError},
    process::{Process, ProcessError},
};

/// A process ready to attach to.
#[derive(Debug)]
pub struct PlannedTarget {
    /// The process.
    pub process: Process,
    /// Its executable, kept open for naming error types later.
    pub elf: std::sync::Arc<ElfFile>,
    /// What its Go binary says about itself.
    pub go: GoBinary,
    /// Where the probes go.
    pub plan: GoPlan,
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
    /// The executable is not a Go program.
    #[error("pid {pid} ({path}) is not a Go program (no Go build information or function table); spanhook traces Go programs")]
    NotGo {
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
    let (go, plan) = plan_file(&elf, table, options).map_err(|e| match e {
        FileError::NotGo => TargetError::NotGo {
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
        elf: std::sync::Arc::new(elf),
        go,
        plan,
    })
}

/// Why a file cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Not a Go binary.
    #[error("not a Go program")]
    NotGo,
    /// Go's tables are unreadable.
    #[error(transparent)]
    Go(#[from] GoError),
    /// Planning failed.
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// Analyses and plans an opened Go binary.
pub fn plan_file(
    elf: &ElfFile,
    table: &OffsetTable,
    options: PlanOptions,
) -> Result<(GoBinary, GoPlan), FileError> {
    let go = golang::analyze(elf)?.ok_or(FileError::NotGo)?;
    let plan = plan_go(elf, &go, table, options)?;
    Ok((go, plan))
}

/// Opens a binary by path (for `inspect PATH`).
pub fn open(path: &Path) -> Result<ElfFile, ElfError> {
    ElfFile::open(path)
}
