//! RET scanning and entry-site choice (`returns::find_returns`, `entry::find_entry_site`) over
//! arbitrary code. The first byte picks the
//! architecture (even: x86_64, odd: aarch64); the rest is the function's code at 0x401000.
//!
//! Seeds (written by `cargo xtask fuzz`): the code of real functions from amd64 and arm64
//! fixture binaries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spanhook::inspect::{elf::Arch, entry::find_entry_site, returns::find_returns};

const ENTRY: u64 = 0x401000;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, code)) = data.split_first() else {
        return;
    };
    let arch = if selector & 1 == 0 {
        Arch::X86_64
    } else {
        Arch::Aarch64
    };
    let rets = find_returns(arch, code, ENTRY);
    assert!(rets.len() <= code.len());
    assert!(rets.windows(2).all(|w| w[0] < w[1]), "{rets:x?}");
    assert!(rets
        .iter()
        .all(|&r| r >= ENTRY && r - ENTRY < code.len() as u64));
    // The entry probe stays at the entry or moves a few instructions into the code.
    let site = find_entry_site(arch, code, ENTRY);
    assert!(
        site == ENTRY || site - ENTRY < code.len().min(6 * 15) as u64,
        "{site:#x}"
    );
});
