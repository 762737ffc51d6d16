//! Rust symbol resolution: `ElfFile::from_bytes`, `RustSymbols::read` (demangling every
//! function symbol of `.symtab` and `.dynsym`), `rust::analyze` (compiler and crate versions
//! from `.comment` and registry paths) and `plan::rust::plan_rust`, which picks the functions
//! to probe from ranked candidates by demangled path, then names addresses with `name_of`.
//! Any other input is a list of symbol names, one a line: the demangle-and-strip step alone,
//! and the crate-version parsers on the same bytes.
//!
//! Seeds (written by `cargo xtask fuzz`): small ELF files holding the symbol tables of the
//! Rust fixture builds cut down to the hyper, h2, tonic, reqwest and tokio functions, with
//! their `.comment` and registry paths; the same names as text; whole fixture binaries run
//! once each.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use spanhook::{
    inspect::{
        elf::ElfFile,
        rust::{self, crates, symbols::strip_generics, RustSymbols},
    },
    plan::{rust::plan_rust, PlanOptions},
};

/// How many probe sites of a plan are checked against the symbol table (enough for every
/// capability; a generic function has a copy per instantiation).
const MAX_SITES: usize = 256;

fuzz_target!(|data: &[u8]| {
    if !data.starts_with(b"\x7fELF") {
        names(data);
        return;
    }
    let Ok(elf) = ElfFile::from_bytes(PathBuf::from("fuzz-input"), data.to_vec()) else {
        return;
    };
    let symbols = RustSymbols::read(&elf);
    let _ = symbols.mangling();
    let Some(binary) = rust::analyze(&elf, &symbols) else {
        return;
    };
    for c in &binary.crates {
        assert!(!c.name.is_empty() && c.version.starts_with(|c: char| c.is_ascii_digit()));
    }
    for propagate in [false, true] {
        let options = PlanOptions {
            propagate,
            ..PlanOptions::default()
        };
        let (plan, choices) = plan_rust(&elf, &binary, &symbols, options);
        for site in plan.sites.iter().take(MAX_SITES) {
            // An uprobe goes where a function of the demangled path the label names begins.
            assert!(site.offset < data.len() as u64, "{site:?}");
            let path = site
                .label
                .strip_suffix(" (entry)")
                .or_else(|| site.label.strip_suffix(" (return)"))
                .unwrap_or_else(|| panic!("unexpected label {:?}", site.label));
            assert!(
                symbols
                    .find(path)
                    .iter()
                    .any(|f| elf.vaddr_to_offset(f.address) == Some(site.offset)),
                "{site:?} is not at a function called {path}"
            );
        }
        for choice in &choices {
            if let Some(chosen) = &choice.chosen {
                assert!(!chosen.is_empty());
            }
        }
        if binary.stripped() {
            assert!(plan.sites.is_empty());
        }
        let _ = plan.reasons();
    }
    // Every function found by path is named (by that path, or an alias at the same address).
    for path in ["tokio::runtime::task::raw::poll", "main", ""] {
        for f in symbols.find(path) {
            assert!(
                symbols.name_of(f.address).is_some(),
                "{path} at {:#x}",
                f.address
            );
        }
    }
});

/// One symbol name a line: what `RustSymbols::read` does with each, and the version parsers.
fn names(data: &[u8]) {
    for line in data.split(|&b| b == b'\n').take(256) {
        let Ok(name) = std::str::from_utf8(line) else {
            continue;
        };
        if let Ok(demangled) = rustc_demangle::try_demangle(name) {
            let full = format!("{demangled:#}");
            let path = strip_generics(&full);
            assert!(path.len() <= full.len());
        }
        if let Some(c) = crates::split_name_version(name) {
            assert_eq!(format!("{}-{}", c.name, c.version), name);
            assert_eq!(
                crates::compare_versions(&c.version, name),
                crates::compare_versions(name, &c.version).reverse()
            );
        }
    }
    for c in crates::in_bytes(data) {
        assert!(!c.name.is_empty() && !c.version.is_empty());
    }
}
