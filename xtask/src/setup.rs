//! `cargo xtask setup`: install what building and testing spanhook needs, idempotently.
//!
//! A fresh machine of our kind has stable Rust, a nightly without `rust-src`, Go, and apt.
//! Each step checks first and does nothing when the tool is already right, so a second run
//! takes seconds.

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

use crate::{cmd, go};

/// The nightly toolchain that compiles the eBPF programs (see agent/build.rs).
pub const BPF_TOOLCHAIN: &str = "nightly";
/// The bpf-linker release we build; it must link the same LLVM major as the nightly.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Paths to the tools later steps use.
#[derive(Clone, Debug)]
pub struct Tools {
    /// The `go` command (the machine's, or one installed from the module proxy).
    pub go: PathBuf,
}

/// Runs every set-up step and returns the tools found or installed.
pub fn run() -> Result<Tools> {
    let llvm_major = nightly_with_rust_src()?;
    bpf_linker(llvm_major)?;
    // ebpf/probes/build.rs compiles the CO-RE accessors (ebpf/probes/c/core_read.c) to
    // bitcode bpf-linker reads: a clang of the same LLVM release.
    let clang = format!("clang-{llvm_major}");
    apt_tools(&[(clang.as_str(), clang.as_str())])?;
    apt_tools(&[
        ("bpftool", "bpftool"),
        ("curl", "curl"),
        // agent/tests/least_privilege.rs runs the agent with chosen capabilities.
        ("setpriv", "util-linux"),
        // `cargo xtask deploy` verifies the systemd unit.
        ("systemd-analyze", "systemd"),
        ("tmux", "tmux"),
        ("wrk", "wrk"),
    ])?;
    // agent/tests/export_metrics.rs parses the Prometheus endpoint with Prometheus's own
    // Python parser (Debian's CPython, not a pyenv one).
    python_module("prometheus_client", "python3-prometheus-client")?;
    tracefs()?;
    let go = go::ensure()?;
    Ok(Tools { go })
}

/// Mounts tracefs where the kernel documents it when nothing is there yet: a fresh machine of
/// this kind boots without it, and the socket tests and the bench's bare uprobes need it.
fn tracefs() -> Result<()> {
    let dir = std::path::Path::new("/sys/kernel/tracing");
    if dir.join("events").exists() {
        return Ok(());
    }
    eprintln!("setup: mounting tracefs at {}", dir.display());
    let status = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev"])
        .arg(dir)
        .status()
        .context("running mount")?;
    if !status.success() {
        bail!("mount -t tracefs nodev {} failed: {status}", dir.display());
    }
    Ok(())
}

/// Installs `package` unless Debian's python3 can already import `module`.
fn python_module(module: &str, package: &str) -> Result<()> {
    let present = Command::new("/usr/bin/python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    eprintln!("setup: installing {package}");
    apt_install(&[package])
}

/// Makes sure the nightly and its `rust-src` exist; returns the nightly's LLVM major.
fn nightly_with_rust_src() -> Result<u32> {
    let has_nightly = Command::new("rustup")
        .args(["run", BPF_TOOLCHAIN, "rustc", "--version"])
        .output()
        .map(|o| o.status.success())
        .context("rustup is required (https://rustup.rs)")?;
    if !has_nightly {
        eprintln!("setup: installing the {BPF_TOOLCHAIN} toolchain with rust-src");
        cmd::run(Command::new("rustup").args([
            "toolchain",
            "install",
            BPF_TOOLCHAIN,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    }
    let sysroot = cmd::stdout(Command::new("rustup").args([
        "run",
        BPF_TOOLCHAIN,
        "rustc",
        "--print",
        "sysroot",
    ]))?;
    if !PathBuf::from(&sysroot)
        .join("lib/rustlib/src/rust/library/core")
        .is_dir()
    {
        eprintln!("setup: adding rust-src to {BPF_TOOLCHAIN}");
        cmd::run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            BPF_TOOLCHAIN,
        ]))?;
    }
    let version = cmd::stdout(Command::new("rustup").args(["run", BPF_TOOLCHAIN, "rustc", "-vV"]))?;
    version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("no LLVM version in `rustc -vV` of {BPF_TOOLCHAIN}:\n{version}"))
}

/// The LLVM major a bpf-linker binary is linked against, if it is installed.
fn installed_linker_llvm() -> Option<u32> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let linker = home.join("bin/bpf-linker");
    if !linker.is_file() {
        return None;
    }
    let ldd = Command::new("ldd").arg(&linker).output().ok()?;
    let text = String::from_utf8_lossy(&ldd.stdout);
    // e.g. "libLLVM.so.22.1 => /usr/lib/llvm-22/lib/libLLVM.so.22.1"
    text.lines().find_map(|l| {
        let name = l.split_whitespace().next()?;
        let rest = name
            .strip_prefix("libLLVM.so.")
            .or_else(|| name.strip_prefix("libLLVM-"))?;
        rest.split(['.', '-']).next()?.parse().ok()
    })
}

/// Installs bpf-linker built against `llvm_major` unless it already is.
fn bpf_linker(llvm_major: u32) -> Result<()> {
    if installed_linker_llvm() == Some(llvm_major) {
        return Ok(());
    }
    let prefix = PathBuf::from(format!("/usr/lib/llvm-{llvm_major}"));
    if !prefix.join("lib/libLLVM.so").exists() {
        eprintln!("setup: installing llvm-{llvm_major}-dev for bpf-linker");
        apt_install(&[&format!("llvm-{llvm_major}-dev")])?;
    }
    if !prefix.join("lib/libLLVM.so").exists() {
        bail!(
            "{} has no lib/libLLVM.so after installing llvm-{llvm_major}-dev",
            prefix.display()
        );
    }
    eprintln!("setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM {llvm_major}");
    cmd::run(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--force",
                "--no-default-features",
                "--features",
                &format!("llvm-{llvm_major}"),
            ])
            .env("LLVM_PREFIX", &prefix),
    )
}

/// Installs each `(command, package)` whose command is missing.
fn apt_tools(tools: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(command, _)| {
            !cmd::on_path(command) && !PathBuf::from("/usr/sbin").join(command).is_file()
        })
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing {}", missing.join(", "));
    apt_install(&missing)
}

/// `apt-get install`, refreshing the package lists once if the first attempt fails.
pub fn apt_install(packages: &[&str]) -> Result<()> {
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    if install().map(|s| s.success()).unwrap_or(false) {
        return Ok(());
    }
    cmd::run(
        Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let status = install().context("cannot run apt-get (set-up needs root and apt)")?;
    if !status.success() {
        bail!("apt-get install {} failed", packages.join(" "));
    }
    Ok(())
}
