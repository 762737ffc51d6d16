//! Emits the `bpf_target_arch` cfg so probes can read the right registers, and compiles the
//! CO-RE accessors (c/core_read.c) to LLVM bitcode, which bpf-linker links into the programs.
//!
//! rustc cannot mark a struct access as relocatable (LLVM's `preserve_access_index`), so the
//! kernel structure offsets the socket programs need come from those few lines of C.
use std::{env, path::PathBuf, process::Command};

/// Overrides the C compiler (a clang with the BPF target, LLVM no newer than rustc's).
const CLANG_ENV: &str = "SPANHOOK_CLANG";

fn main() {
    if let Err(err) = aya_build::emit_bpf_target_arch_cfg() {
        panic!("cannot determine the BPF target architecture: {err}");
    }
    let on_path = |name: &str| {
        env::var_os("PATH").and_then(|p| {
            env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|c| c.is_file())
        })
    };
    if let Some(linker) = on_path("bpf-linker") {
        // A rebuilt bpf-linker may produce different objects.
        println!("cargo:rerun-if-changed={}", linker.display());
    }
    println!("cargo:rerun-if-env-changed={CLANG_ENV}");
    let source = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"))
        .join("c/core_read.c");
    println!("cargo:rerun-if-changed={}", source.display());
    // The clang of rustc's own LLVM release first: bpf-linker (built against that LLVM) reads
    // bitcode of the same or an older release, not of a newer one.
    let names = [
        format!("clang-{}", rustc_llvm_major().unwrap_or(0)),
        "clang".into(),
    ];
    let clang = env::var_os(CLANG_ENV)
        .map(PathBuf::from)
        .or_else(|| names.iter().find_map(|n| on_path(n)))
        .unwrap_or_else(|| {
            panic!(
                "no {} or clang on PATH, which the CO-RE accessors in {} need: run `cargo xtask setup`, or set {CLANG_ENV}",
                names[0],
                source.display()
            )
        });
    let bitcode =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets it")).join("core_read.bc");
    let status = Command::new(&clang)
        .args(["-target", "bpf", "-O2", "-g", "-emit-llvm", "-c"])
        .arg(&source)
        .arg("-o")
        .arg(&bitcode)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", clang.display()));
    assert!(
        status.success(),
        "{} failed on {}",
        clang.display(),
        source.display()
    );
    println!("cargo:rustc-link-arg={}", bitcode.display());
}

/// The LLVM major of the compiler building the programs (`rustc -vV`).
fn rustc_llvm_major() -> Option<u32> {
    let rustc = env::var_os("RUSTC")?;
    let out = Command::new(rustc).arg("-vV").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))?
        .split('.')
        .next()?
        .parse()
        .ok()
}
