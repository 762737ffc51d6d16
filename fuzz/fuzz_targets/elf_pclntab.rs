//! Go's function table in an arbitrary file: `ElfFile::from_bytes`, `Pclntab::parse`, a
//! lookup by name, a walk over the first functions, and the RET scan of what was found.
//!
//! Seeds (written by `cargo xtask fuzz`): stripped, PIE, cgo and arm64 fixture binaries, and
//! small synthetic ELF files holding a Go 1.16, 1.18 and 1.26 style table.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use spanhook::inspect::{
    elf::ElfFile,
    golang::{find_functions, pclntab::Pclntab},
    returns::function_returns,
};

/// Names the agent looks up, plus names that are not functions.
const NAMES: &[&str] = &[
    "net/http.serverHandler.ServeHTTP",
    "runtime.main",
    "main.main",
    "runtime.goexit",
    "",
];
/// How many functions of a table are walked: enough for a real server, bounded for speed.
const MAX_FUNCTIONS: usize = 10_000;

fuzz_target!(|data: &[u8]| {
    let Ok(elf) = ElfFile::from_bytes(PathBuf::from("fuzz-input"), data.to_vec()) else {
        return;
    };
    let _ = (elf.is_pie(), elf.has_symtab(), elf.has_dwarf());
    match Pclntab::parse(&elf) {
        Ok(table) => {
            assert!(!table.is_empty(), "a parsed table lists functions");
            let found = table.find(NAMES);
            assert!(found.len() <= NAMES.len());
            for range in found.values() {
                assert!(range.entry <= range.end, "{range:x?}");
            }
            for (name, range) in table.functions().take(MAX_FUNCTIONS) {
                assert!(!name.is_empty());
                assert!(range.entry <= range.end, "{name}: {range:x?}");
            }
            let _ = (table.go_version_hint(), table.text_start(), table.len());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    // What the agent does with a table: find the probed functions (falling back to the symbol
    // table) and decode their code for RET sites.
    match find_functions(&elf, NAMES) {
        Ok(found) => {
            for range in found.values() {
                match function_returns(&elf, *range) {
                    Ok(rets) => assert!(rets.iter().all(|r| (range.entry..range.end).contains(r))),
                    Err(e) => {
                        let _ = e.to_string();
                    }
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
