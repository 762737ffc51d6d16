//! `spanhook verifier` (hidden; for the verifier budget test and RELIABILITY.md): loads every
//! embedded eBPF program into the running kernel without attaching any, and prints what the
//! verifier reports for each as a table (tab-separated, one program a line).

use std::{io::Write, process::ExitCode};

use anyhow::Result;
use clap::Args;

use crate::attach::loader;

/// Flags of `spanhook verifier`.
#[derive(Args, Debug)]
pub struct VerifierArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `spanhook verifier`.
pub fn run(args: &VerifierArgs) -> Result<ExitCode> {
    let programs = loader::load_every_program()?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &programs)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "# program\tkind\tverified_insns\txlated_bytes\tjited_bytes"
    )?;
    let num = |n: Option<u32>| n.map_or_else(|| "-".to_string(), |n| n.to_string());
    for p in &programs {
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}",
            p.name,
            p.kind,
            num(p.verified_insns),
            num(p.xlated_bytes),
            num(p.jited_bytes)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
