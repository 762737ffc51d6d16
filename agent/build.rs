//! Compiles the eBPF programs (ebpf/probes) with aya-build so that the `spanhook` binary
//! embeds them and ships as one file.
//!
//! The programs need a nightly toolchain with `rust-src` and `bpf-linker`; when either is
//! missing the build stops with the command that installs them instead of a linker trace.

use std::{env, fs, path::PathBuf, process::Command};

const TOOLCHAIN_ENV: &str = "SPANHOOK_BPF_TOOLCHAIN";
const SETUP_HINT: &str =
    "run `cargo xtask setup` (installs the nightly's rust-src and bpf-linker), then build again";

fn main() {
    println!("cargo:rerun-if-env-changed={TOOLCHAIN_ENV}");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out_dir.join("spanhook-probes");
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if env::var_os("CARGO_FEATURE_EMBED_PROBES").is_none() || skip {
        // An empty object: the library compiles, and loading reports "built without probes".
        if !object.exists() {
            fs::write(&object, []).expect("write placeholder probes object");
        }
        return;
    }
    let toolchain = env::var(TOOLCHAIN_ENV).unwrap_or_else(|_| "nightly".to_string());
    if let Err(problem) = check_toolchain(&toolchain) {
        eprintln!("error: cannot build spanhook's eBPF programs: {problem}");
        eprintln!("hint: {SETUP_HINT}");
        std::process::exit(1);
    }
    let probes_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap())
        .join("../ebpf/probes")
        .canonicalize()
        .expect("ebpf/probes exists");
    let package = aya_build::Package {
        name: "spanhook-probes",
        root_dir: probes_dir.to_str().expect("utf-8 path"),
        ..Default::default()
    };
    if let Err(err) = aya_build::build_ebpf([package], aya_build::Toolchain::Custom(&toolchain)) {
        eprintln!("error: building spanhook's eBPF programs failed: {err:#}");
        eprintln!("hint: if the toolchain changed, {SETUP_HINT}");
        std::process::exit(1);
    }
    // Common's types are part of the programs' ABI; rebuild when they change.
    println!("cargo:rerun-if-changed=../ebpf/common/src");
}

fn check_toolchain(toolchain: &str) -> Result<(), String> {
    let sysroot = Command::new("rustup")
        .args(["run", toolchain, "rustc", "--print", "sysroot"])
        .output()
        .map_err(|e| format!("rustup is not runnable ({e})"))?;
    if !sysroot.status.success() {
        return Err(format!("the Rust toolchain `{toolchain}` is not installed"));
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        return Err(format!(
            "the toolchain `{toolchain}` lacks the rust-src component"
        ));
    }
    let on_path = env::var_os("PATH")
        .map(|p| env::split_paths(&p).any(|d| d.join("bpf-linker").is_file()))
        .unwrap_or(false);
    if !on_path {
        return Err("bpf-linker is not on PATH".to_string());
    }
    Ok(())
}
