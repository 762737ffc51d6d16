//! Go type names from a binary's type descriptors: `ElfFile::from_bytes`, then
//! `golang::types::TypeNames::new` for the binary's own release and for one release of each
//! module-data layout, then `itab_type` and `type_name` of the itabs the linker lists and of
//! addresses in and around the type descriptors (garbage included: the agent names the itab
//! of any error a traced program returns).
//!
//! Seeds (written by `cargo xtask fuzz`): small synthetic ELF files with module data for each
//! layout, type descriptors, an itab and encoded names; whole fixture binaries of every release
//! run once each.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use spanhook::inspect::{
    elf::ElfFile,
    golang::{analyze, types::TypeNames, GoVersion},
};

/// One release of each module-data layout.
const LAYOUTS: &[GoVersion] = &[
    GoVersion::new(1, 17, 0),
    GoVersion::new(1, 18, 0),
    GoVersion::new(1, 20, 0),
    GoVersion::new(1, 26, 0),
    GoVersion::new(1, 27, 0),
];
/// How many itabs of `.itablink` are named.
const MAX_ITABS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Ok(elf) = ElfFile::from_bytes(PathBuf::from("fuzz-input"), data.to_vec()) else {
        return;
    };
    let mut addresses = vec![0, 8, u64::MAX, u64::MAX - 7];
    if let Some(links) = elf.section(".itablink") {
        addresses.extend(
            links
                .data
                .chunks_exact(8)
                .take(MAX_ITABS)
                .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes"))),
        );
    }
    for name in [".rodata", ".go.module", ".typelink"] {
        if let Some(section) = elf.section(name) {
            addresses.extend((0..8).map(|i| section.address.wrapping_add(48 * i)));
        }
    }
    let recorded = analyze(&elf).ok().flatten().map(|go| go.version);
    for version in recorded.into_iter().chain(LAYOUTS.iter().copied()) {
        let Some(names) = TypeNames::new(&elf, version) else {
            continue;
        };
        for &address in &addresses {
            if let Some(name) = names.itab_type(&elf, address) {
                assert!(!name.is_empty());
            }
            if let Some(name) = names.type_name(&elf, address) {
                assert!(!name.is_empty());
            }
        }
    }
});
