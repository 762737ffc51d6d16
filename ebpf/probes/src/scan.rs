//! Scanning an HTTP/1 head copied to per-CPU scratch for header lines.
//!
//! The head is copied after [`PAD`] zero bytes; every read is masked by `SCAN_MASK` and the
//! buffer extends past the mask, so no access needs a bounds check (a bounds-check panic path
//! would be rejected by the verifier). Loops run in `bpf_loop`, eight bytes per iteration, and
//! keep their cursor in the scratch map value rather than on the stack or in the loop index:
//! the verifier does not track map memory, so every iteration starts from the same verifier
//! state and the body is checked about once instead of once per iteration.

use aya_ebpf::helpers::generated;

use crate::maps::{Scratch, HEAD_WINDOW};

/// Zero bytes before the copied window in scratch.
pub const PAD: usize = 8;

/// `"tracepar"` as a little-endian word, to compare eight header-name bytes at once.
const NAME_HEAD: u64 = u64::from_le_bytes(*b"tracepar");
/// `"ent:"` as a little-endian word.
const NAME_TAIL: u32 = u32::from_le_bytes(*b"ent:");
/// Setting bit 5 lowercases ASCII letters and leaves `:` unchanged.
const LOWER8: u64 = 0x2020_2020_2020_2020;
const LOWER4: u32 = 0x2020_2020;

/// What a scan looks for.
const MODE_TRACEPARENT_BACKWARD: u64 = 0;
const MODE_FIRST_NEWLINE: u64 = 1;
const MODE_BLANK_LINE: u64 = 2;

/// Reads scratch byte `i` (masked).
#[inline(always)]
pub fn byte(head: *const u8, i: usize) -> u8 {
    // SAFETY: `i & SCAN_MASK` plus any look-ahead used here stays inside `Scratch::head`.
    unsafe { *head.add(i & crate::maps::SCAN_MASK) }
}

/// Reads eight scratch bytes from `i` as a little-endian word: two aligned word loads and a
/// shift, where assembling it byte by byte took eight loads (this runs once or twice per
/// iteration of every scan).
#[inline(always)]
pub fn word_at(head: *const u8, i: usize) -> u64 {
    let i = i & crate::maps::SCAN_MASK;
    let base = i & !7;
    let shift = ((i & 7) * 8) as u32;
    // SAFETY: `head` is `Scratch::head`, 8-aligned (it follows the 32-byte scan state), and
    // `base + 16` stays inside it: it extends past `SCAN_MASK` by more than two words.
    let (lo, hi) = unsafe {
        (
            *(head.add(base) as *const u64),
            *(head.add(base + 8) as *const u64),
        )
    };
    if shift == 0 {
        lo
    } else {
        (lo >> shift) | (hi << (64 - shift))
    }
}

/// Whether any of the eight bytes of `word` is `\n` (the has-zero-byte test on word ^ "\n"*8).
#[inline(always)]
fn has_newline(word: u64) -> bool {
    let x = word ^ 0x0a0a_0a0a_0a0a_0a0a;
    x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080 != 0
}

/// Whether the line starting after the newline at `p` is a `traceparent` header.
#[inline(always)]
fn is_traceparent(head: *const u8, p: usize) -> bool {
    let name = word_at(head, p + 1);
    let tail = (byte(head, p + 9) as u32)
        | (byte(head, p + 10) as u32) << 8
        | (byte(head, p + 11) as u32) << 16
        | (byte(head, p + 12) as u32) << 24;
    name | LOWER8 == NAME_HEAD && tail | LOWER4 == NAME_TAIL
}

/// What the `bpf_loop` callback gets: a pointer to the per-CPU scratch (on the stack, as the
/// helper requires).
#[repr(C)]
struct LoopCtx {
    scratch: *mut Scratch,
}

fn run(scratch: *mut Scratch, mode: u64, start: usize, limit: usize) -> Option<usize> {
    // SAFETY: per-CPU scratch, one program at a time on this CPU.
    unsafe {
        (*scratch).scan.mode = mode;
        (*scratch).scan.cursor = start as u64;
        (*scratch).scan.limit = limit as u64;
        (*scratch).scan.found = 0;
    }
    let mut ctx = LoopCtx { scratch };
    // SAFETY: the callback only reads `ctx` and the scratch it points to.
    unsafe {
        generated::bpf_loop(
            (HEAD_WINDOW / 8 + 2) as u32,
            scan_word as *mut core::ffi::c_void,
            (&mut ctx as *mut LoopCtx).cast(),
            0,
        )
    };
    // SAFETY: as above.
    let found = unsafe { (*scratch).scan.found };
    (found != 0).then_some(found as usize)
}

/// Looks backwards from just before the closing blank line of the head that ends at copied
/// byte `len` for a `traceparent` line; stops at the previous blank line (an earlier request
/// on the connection) or the start of the window. Returns the padded index of the value.
#[inline(always)]
pub fn last_traceparent(scratch: *mut Scratch, len: usize) -> Option<usize> {
    if !(16..=HEAD_WINDOW).contains(&len) {
        return None;
    }
    // Skip the head's own closing CRLFCRLF.
    run(scratch, MODE_TRACEPARENT_BACKWARD, len - 5 + PAD, 0)
}

/// Padded index just after the first newline among the `len` copied bytes.
#[inline(always)]
pub fn first_line_end(scratch: *mut Scratch, len: usize) -> Option<usize> {
    if len > HEAD_WINDOW {
        return None;
    }
    run(scratch, MODE_FIRST_NEWLINE, PAD, PAD + len)
}

/// Padded index just after the blank line that ends the first head among the `len` copied
/// bytes, i.e. where the body starts.
#[inline(always)]
pub fn head_end(scratch: *mut Scratch, len: usize) -> Option<usize> {
    if len > HEAD_WINDOW {
        return None;
    }
    run(scratch, MODE_BLANK_LINE, PAD, PAD + len)
}

/// `bpf_loop` body: examines eight bytes at the cursor and moves it. Returns 1 to stop.
#[inline(never)]
extern "C" fn scan_word(_index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the `LoopCtx` passed to bpf_loop by `run`.
    let scratch = unsafe { &mut *(*ctx.cast::<LoopCtx>()).scratch };
    let head = scratch.head.as_ptr();
    let cursor = scratch.scan.cursor as usize;
    if cursor < PAD || cursor >= HEAD_WINDOW + PAD {
        return 1;
    }
    if scratch.scan.mode == MODE_TRACEPARENT_BACKWARD {
        // `cursor` is the highest byte of the eight.
        scratch.scan.cursor = (cursor - 8) as u64;
        if !has_newline(word_at(head, cursor - 7)) {
            return 0;
        }
        let mut k = 0;
        while k < 8 {
            let p = cursor - k;
            // PAD - 1 holds a newline when the copy starts at the buffer's first byte.
            if p + 1 >= PAD && byte(head, p) == b'\n' {
                if byte(head, p + 1) == b'\r' {
                    return 1;
                }
                if is_traceparent(head, p) {
                    scratch.scan.found = (p + 13) as u64;
                    return 1;
                }
            }
            k += 1;
        }
        return 0;
    }
    // Forward modes: `cursor` is the lowest byte of the eight.
    let end = scratch.scan.limit as usize;
    if cursor >= end {
        return 1;
    }
    scratch.scan.cursor = (cursor + 8) as u64;
    if !has_newline(word_at(head, cursor)) {
        return 0;
    }
    let blank_line = scratch.scan.mode == MODE_BLANK_LINE;
    let mut k = 0;
    while k < 8 {
        let p = cursor + k;
        if p < end && byte(head, p) == b'\n' {
            if !blank_line {
                scratch.scan.found = (p + 1) as u64;
                return 1;
            }
            if p + 2 < end && byte(head, p + 1) == b'\r' && byte(head, p + 2) == b'\n' {
                scratch.scan.found = (p + 3) as u64;
                return 1;
            }
        }
        k += 1;
    }
    0
}
