//! `cargo xtask …`: everything a developer or CI runs, each step idempotent.
//!
//! Every command installs what it needs first (`setup`), so a fresh machine goes from a
//! clean clone to a demo or a full test run with one command.

mod bench;
mod cmd;
mod collector;
mod demo;
mod deploy;
mod fixtures;
mod fixtures_native;
mod fixtures_rust;
mod fuzz;
mod go;
mod kube;
mod offsets;
mod setup;
mod soak;
mod test;
mod thirdparty;

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "spanhook developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the toolchains (nightly rust-src, bpf-linker, Go, test tools); a no-op when present.
    Setup,
    /// Build the Go fixture programs (cached; rebuilt when their source changes).
    Fixtures(fixtures::Args),
    /// Regenerate the Go struct-field offsets table from real builds (or --check it).
    Offsets(offsets::Args),
    /// Run the whole test suite: set-up, fixtures, unit tests and the root-only kernel tests.
    Test(test::Args),
    /// Validate deploy/: helm lint/template, Kubernetes schemas, hadolint, systemd-analyze.
    Deploy,
    /// Trace a small Go service live and print its spans.
    Demo(demo::Args),
    /// Fuzz every parser for a bounded time (or --runs executions) from real-build seeds.
    Fuzz(fuzz::Args),
    /// Measure overhead against a bare uprobe, OBI and otelhttp; write BENCHMARKS.md.
    Bench(bench::Args),
    /// Send the same requests without and with the agent to the Go matrix and Rust fixtures,
    /// compare every response byte for byte, count spans; write SOAK.md.
    Soak(soak::Args),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Setup => setup::run().map(|_| ()),
        Command::Fixtures(args) => {
            let tools = setup::run()?;
            fixtures::build(&tools, &args)?;
            fixtures_native::build()?;
            fixtures_rust::build().map(|_| ())
        }
        Command::Offsets(args) => {
            let tools = setup::run()?;
            offsets::run(&tools, &args)
        }
        Command::Test(args) => test::run(&args),
        Command::Deploy => deploy::run(),
        Command::Demo(args) => demo::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Soak(args) => soak::run(&args),
    }
}

/// The workspace root (the parent of this crate's directory).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// Builds the agent users run (release) and returns its path.
pub fn release_agent() -> Result<PathBuf> {
    cmd::run(
        std::process::Command::new("cargo")
            .current_dir(root())
            .args([
                "build",
                "--release",
                "--locked",
                "-p",
                "spanhook",
                "--bin",
                "spanhook",
            ]),
    )?;
    Ok(target_dir().join("release/spanhook"))
}

/// Where built fixtures, tools and caches live (inside `target/`, never committed).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}
