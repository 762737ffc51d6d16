//! Go build information: `ElfFile::from_bytes` then `buildinfo::read` and `golang::analyze`
//! for ELF input; any other input goes to the module-information text parser directly.
//!
//! Seeds (written by `cargo xtask fuzz`): fixture binaries, small synthetic ELF files with
//! inline (Go 1.18+) and pointer (Go 1.13–1.17) headers, and framed module-information text.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use spanhook::inspect::{
    elf::ElfFile,
    golang::{
        analyze,
        buildinfo::{self, BuildInfo},
    },
};

fuzz_target!(|data: &[u8]| {
    if !data.starts_with(b"\x7fELF") {
        // The text between the sentinels, as the linker frames it, and unframed.
        let mut framed = BuildInfo::default();
        buildinfo::parse_modinfo(buildinfo::strip_sentinels(data), &mut framed);
        let mut raw = BuildInfo::default();
        buildinfo::parse_modinfo(data, &mut raw);
        let _ = (raw.module("golang.org/x/net"), raw.setting("GOARCH"));
        return;
    }
    let Ok(elf) = ElfFile::from_bytes(PathBuf::from("fuzz-input"), data.to_vec()) else {
        return;
    };
    match buildinfo::read(&elf) {
        Ok(info) => {
            assert!(!info.go_version.is_empty());
            let _ = (info.module("golang.org/x/net"), info.setting("CGO_ENABLED"));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    match analyze(&elf) {
        Ok(go) => {
            let _ = go.map(|g| g.version);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
