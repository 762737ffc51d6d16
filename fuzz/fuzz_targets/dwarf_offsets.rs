//! Struct layouts from DWARF: `ElfFile::from_bytes` then `dwarf::struct_field_offsets`.
//!
//! Go compresses its debug sections with zlib, whose checksum rejects almost every mutated
//! byte, so fixture binaries alone mostly fuzz the decompression. `cargo xtask fuzz` therefore
//! also writes small ELF files whose `.debug_info` and `.debug_abbrev` are uncompressed (taken
//! from fixtures, inflated by the agent's own reader, keeping only the units that define the
//! wanted types): the same code path as a binary run through
//! `objcopy --decompress-debug-sections`, with every mutation reaching the DWARF parser.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use spanhook::inspect::{dwarf::struct_field_offsets, elf::ElfFile};

/// Fields the agent asks for.
const WANTED: &[(&str, &str)] = &[
    ("net/http.Request", "Method"),
    ("runtime.g", "goid"),
    ("net/http.Request", "URL"),
    ("bufio.Reader", "buf"),
];

fuzz_target!(|data: &[u8]| {
    let Ok(elf) = ElfFile::from_bytes(PathBuf::from("fuzz-input"), data.to_vec()) else {
        return;
    };
    match struct_field_offsets(&elf, WANTED) {
        Ok(found) => assert!(found.len() <= WANTED.len()),
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
