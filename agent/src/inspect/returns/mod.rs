//! Where a function returns, for probes that must fire on return.
//!
//! Go moves goroutine stacks, so a uretprobe (which rewrites the return address on the stack)
//! crashes Go programs. spanhook instead plants an ordinary uprobe on every RET instruction of
//! the function. Each architecture decodes its own instruction set: [`x86_64`] decodes every
//! instruction with iced-x86; [`aarch64`] checks every aligned 32-bit word.

pub mod aarch64;
pub mod x86_64;

use super::{elf::Arch, elf::ElfFile, golang::FuncRange};

/// Why the RET sites of a function could not be found.
#[derive(Debug, thiserror::Error)]
pub enum ReturnsError {
    /// The function's bytes are not in the file (the range is not in a file-backed segment).
    #[error("the code of the function at {entry:#x} is not in the file")]
    CodeUnavailable {
        /// The function's entry address.
        entry: u64,
    },
    /// The function range is empty or inverted.
    #[error("the function range {entry:#x}..{end:#x} is empty")]
    EmptyRange {
        /// The function's entry address.
        entry: u64,
        /// Where the function was said to end.
        end: u64,
    },
}

/// Virtual addresses of every RET instruction in `code`, which is loaded at `entry`.
pub fn find_returns(arch: Arch, code: &[u8], entry: u64) -> Vec<u64> {
    match arch {
        Arch::X86_64 => x86_64::find_returns(code, entry),
        Arch::Aarch64 => aarch64::find_returns(code, entry),
    }
}

/// Virtual addresses of every RET instruction of `func` in `elf`.
pub fn function_returns(elf: &ElfFile, func: FuncRange) -> Result<Vec<u64>, ReturnsError> {
    let len = func
        .end
        .checked_sub(func.entry)
        .filter(|&n| n > 0)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or(ReturnsError::EmptyRange {
            entry: func.entry,
            end: func.end,
        })?;
    let code = elf
        .read_vaddr(func.entry, len)
        .ok_or(ReturnsError::CodeUnavailable { entry: func.entry })?;
    Ok(find_returns(elf.arch(), code, func.entry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::golang::{find_functions, fixtures};

    const SERVE_HTTP: &str = "net/http.serverHandler.ServeHTTP";

    fn serve_http(elf: &ElfFile) -> FuncRange {
        find_functions(elf, &[SERVE_HTTP]).unwrap()[SERVE_HTTP]
    }

    #[test]
    fn ret_sites_match_go_tool_objdump() {
        // Every release, amd64 and arm64, against the disassembler of the fixture's release.
        let unstripped: Vec<_> = fixtures::variant("plain")
            .into_iter()
            .chain(fixtures::variant("arm64"))
            .collect();
        assert!(!unstripped.is_empty());
        std::thread::scope(|s| {
            for f in &unstripped {
                s.spawn(move || {
                    let elf = ElfFile::open(&f.path).unwrap();
                    let func = serve_http(&elf);
                    let expected: Vec<u64> = fixtures::objdump(f, SERVE_HTTP)
                        .iter()
                        .filter(|i| i.is_return())
                        .map(|i| i.address)
                        .collect();
                    assert!(!expected.is_empty(), "{}", f.path.display());
                    let got = function_returns(&elf, func).unwrap();
                    assert_eq!(got, expected, "{}", f.path.display());
                });
            }
        });
    }

    #[test]
    fn ret_sites_of_other_builds_match_their_unstripped_twin() {
        // Stripped builds share the twin's addresses; PIE and cgo builds have the same code
        // elsewhere, so the RETs sit at the same distances from the entry.
        for f in fixtures::all() {
            let twin = f.unstripped_twin();
            let (elf, twin_elf) = (
                ElfFile::open(&f.path).unwrap(),
                ElfFile::open(&twin.path).unwrap(),
            );
            let (func, twin_func) = (serve_http(&elf), serve_http(&twin_elf));
            let rel =
                |rets: Vec<u64>, entry: u64| rets.iter().map(|r| r - entry).collect::<Vec<_>>();
            assert_eq!(
                rel(function_returns(&elf, func).unwrap(), func.entry),
                rel(
                    function_returns(&twin_elf, twin_func).unwrap(),
                    twin_func.entry
                ),
                "{}",
                f.path.display()
            );
        }
    }

    #[test]
    fn unreadable_ranges_are_errors() {
        let f = &fixtures::variant("plain")[0];
        let elf = ElfFile::open(&f.path).unwrap();
        let bss = elf.section(".bss").unwrap().address;
        assert!(matches!(
            function_returns(
                &elf,
                FuncRange {
                    entry: bss,
                    end: bss + 16
                }
            ),
            Err(ReturnsError::CodeUnavailable { .. })
        ));
        assert!(matches!(
            function_returns(
                &elf,
                FuncRange {
                    entry: 0x1000,
                    end: 0x1000
                }
            ),
            Err(ReturnsError::EmptyRange { .. })
        ));
        assert!(matches!(
            function_returns(
                &elf,
                FuncRange {
                    entry: u64::MAX - 4,
                    end: u64::MAX
                }
            ),
            Err(ReturnsError::CodeUnavailable { .. })
        ));
    }
}
