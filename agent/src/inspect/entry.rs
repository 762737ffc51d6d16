//! Where a function's entry probe goes: the first instruction of its prologue that the kernel
//! can run without a single step.
//!
//! On x86-64 a uprobe on most instructions costs a trap, a single step out of line and a
//! second trap; on a `push` of a register or a conditional jump the kernel emulates the
//! instruction and returns after one trap, about four times cheaper on the machines measured
//! (BENCHMARKS.md). A Go function on amd64 begins with its stack check,
//! `[lea -N(SP), R12]; cmp 16(R14), SP|R12; jbe morestack`, and from Go 1.21 continues with
//! `push BP`. Those first instructions only compare and write the scratch registers R12 and
//! R13, so at the `jbe` or the `push` every argument register, the goroutine register and the
//! stack pointer still hold what they held at the entry: a probe there reads the same values.
//! The `push` after a stack check that calls `runtime.morestack` and jumps back to the entry
//! is better still: it runs once per call, where the entry and the `jbe` run again after the
//! stack grew.
//!
//! Anything else (another prologue, a branch into the middle of it, arm64, whose prologue is
//! unmeasured here) keeps the probe at the entry, which is always correct.

use iced_x86::{Code, Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

use super::{elf::Arch, elf::ElfFile, golang::FuncRange};

/// Prologue instructions looked at before giving up on a cheaper site.
const PROLOGUE_INSTRUCTIONS: usize = 6;
/// Instructions between the stack check's branch target and its jump back to the entry: the
/// spill of up to nine argument registers, the call, their reload and the jump.
const MORESTACK_INSTRUCTIONS: usize = 24;

/// The address at which `func`'s entry probe goes; its entry when nothing cheaper is safe.
pub fn entry_site(elf: &ElfFile, func: FuncRange) -> u64 {
    let Some(code) = func
        .end
        .checked_sub(func.entry)
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n > 0)
        .and_then(|n| elf.read_vaddr(func.entry, n))
    else {
        return func.entry;
    };
    find_entry_site(elf.arch(), code, func.entry)
}

/// The entry probe's address in `code`, a whole function loaded at `entry`.
pub fn find_entry_site(arch: Arch, code: &[u8], entry: u64) -> u64 {
    match arch {
        Arch::X86_64 => x86_64_entry_site(code, entry),
        Arch::Aarch64 => entry,
    }
}

fn x86_64_entry_site(code: &[u8], entry: u64) -> u64 {
    let mut decoder = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
    let mut insn = Instruction::default();
    let mut site = None;
    for _ in 0..PROLOGUE_INSTRUCTIONS {
        if !decoder.can_decode() {
            break;
        }
        decoder.decode_out(&mut insn);
        if insn.is_invalid() {
            break;
        }
        let bytes = &code[(insn.ip() - entry) as usize..][..insn.len()];
        if emulated_jcc(bytes) {
            site = Some(insn.ip());
            if jumps_to_morestack(code, entry, &insn) && decoder.can_decode() {
                let mut next = Instruction::default();
                decoder.decode_out(&mut next);
                let next_bytes = &code[(next.ip() - entry) as usize..][..next.len()];
                if !next.is_invalid() && emulated_push(next_bytes) {
                    site = Some(next.ip());
                }
            }
            break;
        }
        if emulated_push(bytes) {
            site = Some(insn.ip());
            break;
        }
        if !leaves_probed_state_alone(&insn) {
            break;
        }
    }
    match site {
        Some(site) if site != entry && !branched_to(code, entry, site) => site,
        _ => entry,
    }
}

/// `jcc rel8` or `jcc rel32` with no prefix: the forms the kernel emulates.
fn emulated_jcc(bytes: &[u8]) -> bool {
    matches!(bytes, [0x70..=0x7f, _] | [0x0f, 0x80..=0x8f, _, _, _, _])
}

/// `push r64`, optionally with REX.B: the forms the kernel emulates.
fn emulated_push(bytes: &[u8]) -> bool {
    matches!(bytes, [0x50..=0x57] | [0x41, 0x50..=0x57])
}

/// Whether the instruction writes nothing a probe reads: only the flags, R12 or R13.
fn leaves_probed_state_alone(insn: &Instruction) -> bool {
    match insn.mnemonic() {
        Mnemonic::Cmp | Mnemonic::Test => true,
        Mnemonic::Lea | Mnemonic::Mov | Mnemonic::Sub | Mnemonic::Add => {
            insn.op0_kind() == OpKind::Register
                && matches!(insn.op0_register(), Register::R12 | Register::R13)
                // Not a load through an address that might fault before the probe site.
                && (insn.mnemonic() == Mnemonic::Lea
                    || (0..insn.op_count()).all(|i| insn.op_kind(i) != OpKind::Memory))
        }
        _ => false,
    }
}

/// Whether the conditional branch goes to Go's stack-growth block: a call (to
/// `runtime.morestack`) followed by a jump back to the function's entry.
fn jumps_to_morestack(code: &[u8], entry: u64, jcc: &Instruction) -> bool {
    let target = jcc.near_branch_target();
    let Some(offset) = target
        .checked_sub(entry)
        .and_then(|o| usize::try_from(o).ok())
        .filter(|&o| o < code.len())
    else {
        return false;
    };
    let mut decoder = Decoder::with_ip(64, &code[offset..], target, DecoderOptions::NONE);
    let mut insn = Instruction::default();
    let mut called = false;
    for _ in 0..MORESTACK_INSTRUCTIONS {
        if !decoder.can_decode() {
            return false;
        }
        decoder.decode_out(&mut insn);
        match insn.mnemonic() {
            Mnemonic::Call => called = true,
            Mnemonic::Jmp => {
                return called
                    && matches!(insn.code(), Code::Jmp_rel32_64 | Code::Jmp_rel8_64)
                    && insn.near_branch_target() == entry;
            }
            Mnemonic::Mov
            | Mnemonic::Movups
            | Mnemonic::Movsd
            | Mnemonic::Movss
            | Mnemonic::Nop => {}
            _ => return false,
        }
    }
    false
}

/// Whether any branch of the function lands on `site`, which would run its probe more than
/// once per call.
fn branched_to(code: &[u8], entry: u64, site: u64) -> bool {
    let mut decoder = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
    let mut insn = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut insn);
        let direct = matches!(
            insn.op0_kind(),
            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
        );
        if direct && insn.near_branch_target() == site {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::golang::{find_functions, fixtures};

    const ENTRY: u64 = 0x1000;

    /// Go 1.21+ `serverHandler.ServeHTTP`: stack check, `push rbp`, and its morestack block.
    fn go121_prologue() -> Vec<u8> {
        let mut code = vec![
            0x49, 0x3b, 0x66, 0x10, // cmp rsp, [r14+0x10]
            0x76, 0x08, // jbe +8 → 0x100e
            0x55, // push rbp
            0x48, 0x89, 0xe5, // mov rbp, rsp
            0x5d, // pop rbp
            0xc3, // ret
            0x90, 0x90, // padding to 0x100e
            0x48, 0x89, 0x44, 0x24, 0x08, // mov [rsp+8], rax
            0xe8, 0x00, 0x00, 0x00, 0x00, // call
            0x48, 0x8b, 0x44, 0x24, 0x08, // mov rax, [rsp+8]
        ];
        let here = ENTRY + code.len() as u64 + 5;
        code.push(0xe9); // jmp rel32 back to the entry
        code.extend_from_slice(&((ENTRY as i64 - here as i64) as i32).to_le_bytes());
        code
    }

    #[test]
    fn the_push_after_a_morestack_check_is_chosen() {
        assert_eq!(
            find_entry_site(Arch::X86_64, &go121_prologue(), ENTRY),
            0x1006
        );
    }

    #[test]
    fn the_check_branch_is_chosen_when_no_push_follows() {
        // Go before 1.21: `sub rsp, N` after the branch, which the kernel single-steps.
        let mut code = go121_prologue();
        code[6] = 0x90; // nop instead of push
        assert_eq!(find_entry_site(Arch::X86_64, &code, ENTRY), 0x1004);
    }

    #[test]
    fn a_branch_not_to_morestack_keeps_the_push_out() {
        let mut code = go121_prologue();
        let jmp = code.len() - 5;
        code[jmp + 1] ^= 0x01; // the jump no longer returns to the entry
        assert_eq!(find_entry_site(Arch::X86_64, &code, ENTRY), 0x1004);
    }

    #[test]
    fn a_write_to_an_argument_register_keeps_the_entry() {
        let mut code = vec![0x48, 0x89, 0xd8]; // mov rax, rbx
        code.extend(go121_prologue());
        assert_eq!(find_entry_site(Arch::X86_64, &code, ENTRY), ENTRY);
    }

    #[test]
    fn a_site_some_branch_lands_on_keeps_the_entry() {
        let mut code = go121_prologue();
        code[10..12].copy_from_slice(&[0xeb, 0xfa]); // jmp → 0x1006, the push
        assert_eq!(find_entry_site(Arch::X86_64, &code, ENTRY), ENTRY);
    }

    #[test]
    fn arm64_and_garbage_keep_the_entry() {
        let code = go121_prologue();
        assert_eq!(find_entry_site(Arch::Aarch64, &code, ENTRY), ENTRY);
        let junk: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        let site = find_entry_site(Arch::X86_64, &junk, ENTRY);
        assert!((ENTRY..ENTRY + 4096).contains(&site));
        assert_eq!(find_entry_site(Arch::X86_64, &[], ENTRY), ENTRY);
    }

    /// The functions spanhook probes in Go programs.
    const PROBED: &[&str] = &[
        "net/http.serverHandler.ServeHTTP",
        "net/http.(*Transport).roundTrip",
        "net/http.(*persistConn).roundTrip",
        "google.golang.org/grpc.(*Server).handleStream",
        "google.golang.org/grpc.newClientStreamWithParams",
        "google.golang.org/grpc.(*clientStream).finish",
    ];

    #[test]
    fn go_builds_get_the_push_from_121_and_the_check_branch_before() {
        // Every release and variant of the matrix, against the disassembly of the fixture's
        // own Go release: the site holds `PUSHQ BP` (1.21+) or `JBE` (1.17–1.20), and only a
        // stack check comes before it.
        let builds: Vec<_> = fixtures::variant("plain").into_iter().collect();
        assert!(!builds.is_empty());
        std::thread::scope(|s| {
            for f in &builds {
                s.spawn(move || {
                    let elf = ElfFile::open(&f.path).unwrap();
                    let found = find_functions(&elf, PROBED).unwrap();
                    assert!(!found.is_empty(), "{}", f.path.display());
                    let minor: u32 = f.go.split('.').nth(1).unwrap().parse().unwrap();
                    for (name, func) in &found {
                        let site = entry_site(&elf, *func);
                        let listing = fixtures::objdump(f, name);
                        let at = listing.iter().position(|i| i.address == site);
                        let at = at.unwrap_or_else(|| {
                            panic!("{name} {site:#x} not an instruction ({})", f.path.display())
                        });
                        let want = if minor >= 21 { "PUSHQ BP" } else { "JBE" };
                        assert!(
                            listing[at].text.starts_with(want),
                            "{name} in Go {}: {:?}",
                            f.go,
                            listing[at].text
                        );
                        assert!(
                            listing[..at].iter().all(|i| i.text.starts_with("CMPQ")
                                || i.text.starts_with("LEAQ")
                                || i.text.starts_with("JBE")),
                            "{name} in Go {}: {:?}",
                            f.go,
                            &listing[..at]
                        );
                    }
                });
            }
        });
    }
}
