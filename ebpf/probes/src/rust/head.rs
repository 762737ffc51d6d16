//! HTTP/1 heads and URLs copied from the target into per-CPU scratch, and scanned there.
//!
//! Every scratch read is masked by [`MASK`] and the buffer extends past it, so no access needs
//! a bounds check (a reachable panic would be refused by the verifier). Scans run in
//! `bpf_loop` with their cursor in the scratch map value: the verifier checks the loop body
//! once instead of once per byte.

use aya_ebpf::helpers::generated;
use spanhook_common::{rust::RUST_HEAD_WINDOW, Str};

use super::maps::{HeadScan, RustScratch, MASK, RUST_SCRATCH};

/// Zero bytes before the copied window.
pub const PAD: usize = 8;

/// This CPU's scratch.
#[inline(always)]
pub fn scratch() -> Option<*mut RustScratch> {
    RUST_SCRATCH.get_ptr_mut(0)
}

/// Copies `min(len, RUST_HEAD_WINDOW)` bytes from the target's `ptr` after the padding;
/// returns how many.
#[inline(always)]
pub fn copy_user(s: *mut RustScratch, ptr: u64, len: u64) -> Option<usize> {
    let n = if len > RUST_HEAD_WINDOW as u64 {
        RUST_HEAD_WINDOW as u64
    } else {
        len
    };
    if n == 0 || ptr == 0 {
        return None;
    }
    // SAFETY: per-CPU scratch; `n <= RUST_HEAD_WINDOW` keeps the write inside `head`.
    let rc = unsafe {
        let head = &mut (*s).head;
        head[..PAD].copy_from_slice(&[0; PAD]);
        generated::bpf_probe_read_user(
            head.as_mut_ptr().add(PAD).cast(),
            n as u32,
            ptr as *const core::ffi::c_void,
        )
    };
    if rc < 0 {
        return None;
    }
    // Zero the byte after the copy so a scan never reads a stale newline there.
    // SAFETY: `PAD + n <= MASK`.
    unsafe { (*s).head[(PAD + n as usize) & MASK] = 0 };
    Some(n as usize)
}

/// Copies up to `RUST_HEAD_WINDOW` bytes from `ptr`, where only the first byte is known to be
/// mapped and the length is not known (a URL, a head found by its pointer): a fresh allocation
/// at the top of a heap ends where the mapping ends, so when the whole window cannot be read,
/// the bytes up to the end of `ptr`'s page are (the first unmapped byte of a window shorter than
/// a page can only be at that page boundary).
#[inline(always)]
pub fn copy_user_upto(s: *mut RustScratch, ptr: u64) -> Option<usize> {
    match copy_user(s, ptr, RUST_HEAD_WINDOW as u64) {
        Some(n) => Some(n),
        None => copy_user(s, ptr, 4096 - (ptr & 4095)),
    }
}

/// Scratch byte `i`.
#[inline(always)]
pub fn byte(s: *const RustScratch, i: usize) -> u8 {
    // SAFETY: masked index inside `head`.
    unsafe { (*s).head[i & MASK] }
}

#[repr(C)]
struct LoopCtx {
    scratch: *mut RustScratch,
}

const MODE_HEAD: u64 = 0;
const MODE_URL: u64 = 1;

fn run(s: *mut RustScratch, n: usize, mode: u64) -> &'static HeadScan {
    // SAFETY: per-CPU scratch, one program at a time on this CPU.
    let scan = unsafe { &mut (*s).scan };
    *scan = HeadScan {
        cursor: PAD as u64,
        limit: (PAD + n) as u64,
        line: mode,
        sp1: 0,
        sp2: 0,
        query: 0,
        line_end: 0,
        host: 0,
        host_end: 0,
        head_end: 0,
        slashes: 0,
        path: 0,
    };
    let mut ctx = LoopCtx { scratch: s };
    let callback = if mode == MODE_URL {
        scan_url as *mut core::ffi::c_void
    } else {
        scan_head as *mut core::ffi::c_void
    };
    // SAFETY: the callback only reads `ctx` and the scratch it points to.
    unsafe {
        generated::bpf_loop(
            (RUST_HEAD_WINDOW + 1) as u32,
            callback,
            (&mut ctx as *mut LoopCtx).cast(),
            0,
        )
    };
    // SAFETY: as above.
    unsafe { &(*s).scan }
}

/// Scans the `n` copied bytes as an HTTP/1 head: the spaces and query of the first line,
/// its end, the `Host` header, and the blank line that ends the head.
#[inline(always)]
pub fn scan_http(s: *mut RustScratch, n: usize) -> &'static HeadScan {
    run(s, n, MODE_HEAD)
}

/// Scans the `n` copied bytes as a URL: where the path starts (third `/`), the query, and
/// (`line_end`) where the URL ends when the copy runs past it.
#[inline(always)]
pub fn scan_url_bytes(s: *mut RustScratch, n: usize) -> &'static HeadScan {
    run(s, n, MODE_URL)
}

/// Whether the line starting at `i` begins with `host:` (any case).
#[inline(always)]
fn is_host(s: *const RustScratch, i: usize) -> bool {
    (byte(s, i) | 0x20) == b'h'
        && (byte(s, i + 1) | 0x20) == b'o'
        && (byte(s, i + 2) | 0x20) == b's'
        && (byte(s, i + 3) | 0x20) == b't'
        && byte(s, i + 4) == b':'
}

#[inline(never)]
extern "C" fn scan_head(_index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the `LoopCtx` passed by `run`.
    let s = unsafe { (*ctx.cast::<LoopCtx>()).scratch };
    // SAFETY: per-CPU scratch.
    let st = unsafe { &mut (*s).scan };
    let c = st.cursor as usize;
    if c >= st.limit as usize || c >= MASK - 16 {
        return 1;
    }
    st.cursor = (c + 1) as u64;
    let b = byte(s, c);
    if st.line == 0 {
        if b == b' ' {
            if st.sp1 == 0 {
                st.sp1 = c as u64;
            } else if st.sp2 == 0 {
                st.sp2 = c as u64;
            }
        } else if b == b'?' && st.sp1 != 0 && st.sp2 == 0 && st.query == 0 {
            st.query = c as u64;
        }
    }
    if b != b'\n' {
        return 0;
    }
    if st.line == 0 {
        st.line_end = c as u64;
    }
    if st.host != 0 && st.host_end == 0 {
        st.host_end = c as u64;
    }
    st.line += 1;
    let next = byte(s, c + 1);
    if next == b'\r' && byte(s, c + 2) == b'\n' {
        st.head_end = (c + 3) as u64;
        return 1;
    }
    if next == b'\n' {
        st.head_end = (c + 2) as u64;
        return 1;
    }
    if st.host == 0 && is_host(s, c + 1) {
        st.host = (c + 6) as u64;
    }
    0
}

#[inline(never)]
extern "C" fn scan_url(_index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the `LoopCtx` passed by `run`.
    let s = unsafe { (*ctx.cast::<LoopCtx>()).scratch };
    // SAFETY: per-CPU scratch.
    let st = unsafe { &mut (*s).scan };
    let c = st.cursor as usize;
    if c >= st.limit as usize || c >= MASK - 16 {
        return 1;
    }
    st.cursor = (c + 1) as u64;
    let b = byte(s, c);
    // The copy may run past the URL's end: no URL byte is a control character or a space.
    if b <= b' ' || b >= 0x7f {
        st.line_end = c as u64;
        return 1;
    }
    if b == b'/' && st.path == 0 {
        st.slashes += 1;
        if st.slashes == 3 {
            st.path = c as u64;
        }
    } else if (b == b'?' || b == b'#') && st.query == 0 {
        st.query = c as u64;
        return 1;
    }
    0
}

/// Copies scratch bytes `[start, end)` into `out` (truncated to `N`).
#[inline(always)]
pub fn copy_out<const N: usize>(s: *const RustScratch, start: usize, end: usize, out: &mut Str<N>) {
    let len = end.saturating_sub(start);
    out.len = len as u32;
    let n = if len > N { N } else { len };
    // LLVM could otherwise recompute `n` from `len` after the bound check.
    // SAFETY: reading a local.
    let n = unsafe { core::ptr::read_volatile(&n) };
    if n == 0 || n > N {
        out.len = 0;
        return;
    }
    // SAFETY: `n <= N` bounds the write; the source is inside scratch (masked start, and the
    // buffer extends past the mask by more than any `N`).
    let rc = unsafe {
        generated::bpf_probe_read_kernel(
            out.bytes.as_mut_ptr().cast(),
            n as u32,
            (*s).head.as_ptr().add(start & MASK).cast(),
        )
    };
    if rc < 0 {
        out.len = 0;
    }
}
