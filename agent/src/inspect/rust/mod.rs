//! Rust binaries: which compiler built them, which crates (and versions) they contain, and
//! where their functions are, by demangled path.
//!
//! A Rust binary says what it is in several places that survive a release build: the
//! `.comment` section names the compiler (`rustc version 1.95.0 (…)`), panic locations embed
//! the source paths of the crates they come from (`…/index.crates.io-…/hyper-1.12.0/src/…`),
//! and the symbol table (kept by default in release builds) names every function that was not
//! inlined, mangled in the legacy (`_ZN…17h<hash>E`) or v0 (`_R…`) scheme. `strip = "symbols"`
//! removes the last, which leaves nothing to probe.

pub mod crates;
pub mod symbols;

pub use crates::CrateVersion;
pub use symbols::{RustFunction, RustSymbols};

use super::elf::ElfFile;

/// What a Rust binary is.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RustBinary {
    /// The compiler release, from `.comment` (e.g. `1.95.0`).
    pub rustc: Option<String>,
    /// Crates whose source paths the binary embeds, with their versions.
    pub crates: Vec<CrateVersion>,
    /// Rust function symbols in the symbol table (0 when stripped).
    pub functions: usize,
    /// How they are mangled: `legacy`, `v0`, `mixed` or `none`.
    pub mangling: &'static str,
}

impl RustBinary {
    /// The version of `krate` (e.g. `hyper`), when the binary reveals it; the newest when it
    /// holds several.
    pub fn crate_version(&self, krate: &str) -> Option<&str> {
        self.crates
            .iter()
            .filter(|c| c.name == krate)
            .max_by(|a, b| crates::compare_versions(&a.version, &b.version))
            .map(|c| c.version.as_str())
    }

    /// Whether the symbol table is gone (`strip = "symbols"` or `strip -s`).
    pub fn stripped(&self) -> bool {
        self.functions == 0
    }
}

/// Tells whether `elf` is a Rust program. `None` when nothing says so.
pub fn analyze(elf: &ElfFile, symbols: &RustSymbols) -> Option<RustBinary> {
    let rustc = rustc_version(elf);
    let crates = crates::embedded(elf);
    let std_paths = crates::mentions_rust_std(elf);
    if rustc.is_none() && symbols.functions() == 0 && crates.is_empty() && !std_paths {
        return None;
    }
    Some(RustBinary {
        rustc,
        crates,
        functions: symbols.functions(),
        mangling: symbols.mangling(),
    })
}

/// `1.95.0` from a `.comment` entry `rustc version 1.95.0 (59807616e 2026-04-14)`.
pub fn rustc_version(elf: &ElfFile) -> Option<String> {
    let comment = elf.section(".comment")?;
    comment
        .data
        .split(|&b| b == 0)
        .filter_map(|s| std::str::from_utf8(s).ok())
        .find_map(|s| {
            let rest = s.strip_prefix("rustc version ")?;
            Some(rest.split_whitespace().next()?.to_string())
        })
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! The Rust fixture binaries built by `cargo xtask fixtures`.
    use std::path::PathBuf;

    /// One row of `target/fixtures/rust/manifest.tsv`.
    #[derive(Clone, Debug)]
    pub(crate) struct Fixture {
        pub(crate) program: String,
        pub(crate) profile: String,
        pub(crate) path: PathBuf,
    }

    /// Every built Rust fixture; panics with the command to run when none are built.
    pub(crate) fn all() -> Vec<Fixture> {
        let dir = std::env::var_os("SPANHOOK_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/fixtures")
            });
        let manifest = dir.join("rust/manifest.tsv");
        let text = std::fs::read_to_string(&manifest).unwrap_or_else(|e| {
            panic!(
                "cannot read {}: {e}; build the fixtures with `cargo xtask fixtures`",
                manifest.display()
            )
        });
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let c: Vec<&str> = l.split('\t').collect();
                Fixture {
                    program: c[0].into(),
                    profile: c[2].into(),
                    path: PathBuf::from(c[3]),
                }
            })
            .collect()
    }
}
