//! Go's register-based calling convention (Go 1.17+ on amd64, 1.18+ on arm64).
//!
//! `ProbeContext::arg` follows the C ABI, which is wrong for Go: Go passes integer
//! arguments in its own register order and keeps the current goroutine in a fixed register.

use aya_ebpf::programs::ProbeContext;

/// The `n`th integer argument word of a Go function at its entry (0-based, after
/// flattening: a string or interface takes two words, a slice three).
#[inline(always)]
pub fn arg(ctx: &ProbeContext, n: usize) -> u64 {
    // SAFETY: `regs` points at the probe's saved registers for the whole program run.
    let regs = unsafe { &*ctx.regs };
    #[cfg(bpf_target_arch = "x86_64")]
    {
        (match n {
            0 => regs.rax,
            1 => regs.rbx,
            2 => regs.rcx,
            3 => regs.rdi,
            4 => regs.rsi,
            5 => regs.r8,
            6 => regs.r9,
            7 => regs.r10,
            8 => regs.r11,
            _ => 0,
        }) as u64
    }
    #[cfg(bpf_target_arch = "aarch64")]
    {
        if n < 16 {
            regs.regs[n] as u64
        } else {
            0
        }
    }
}

/// Address of the running goroutine's `runtime.g`.
#[inline(always)]
pub fn current_g(ctx: &ProbeContext) -> u64 {
    // SAFETY: as in `arg`.
    let regs = unsafe { &*ctx.regs };
    #[cfg(bpf_target_arch = "x86_64")]
    {
        regs.r14 as u64
    }
    #[cfg(bpf_target_arch = "aarch64")]
    {
        regs.regs[28] as u64
    }
}

/// [`arg`] for an index only known at run time (from the target's configuration). The
/// registers are copied to the stack first: a computed offset into the saved registers is
/// refused by the verifier, which wants every context load at a constant offset.
#[inline(always)]
pub fn arg_at(ctx: &ProbeContext, n: usize) -> u64 {
    // SAFETY: `regs` points at the probe's saved registers; each read is of one field.
    let regs = unsafe { &*ctx.regs };
    #[cfg(bpf_target_arch = "x86_64")]
    let words: [u64; 9] = unsafe {
        [
            core::ptr::read_volatile(&regs.rax) as u64,
            core::ptr::read_volatile(&regs.rbx) as u64,
            core::ptr::read_volatile(&regs.rcx) as u64,
            core::ptr::read_volatile(&regs.rdi) as u64,
            core::ptr::read_volatile(&regs.rsi) as u64,
            core::ptr::read_volatile(&regs.r8) as u64,
            core::ptr::read_volatile(&regs.r9) as u64,
            core::ptr::read_volatile(&regs.r10) as u64,
            core::ptr::read_volatile(&regs.r11) as u64,
        ]
    };
    #[cfg(bpf_target_arch = "aarch64")]
    let words: [u64; 9] = unsafe {
        [
            core::ptr::read_volatile(&regs.regs[0]) as u64,
            core::ptr::read_volatile(&regs.regs[1]) as u64,
            core::ptr::read_volatile(&regs.regs[2]) as u64,
            core::ptr::read_volatile(&regs.regs[3]) as u64,
            core::ptr::read_volatile(&regs.regs[4]) as u64,
            core::ptr::read_volatile(&regs.regs[5]) as u64,
            core::ptr::read_volatile(&regs.regs[6]) as u64,
            core::ptr::read_volatile(&regs.regs[7]) as u64,
            core::ptr::read_volatile(&regs.regs[8]) as u64,
        ]
    };
    match words.get(n) {
        Some(&w) => w,
        None => 0,
    }
}
