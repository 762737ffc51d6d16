//! W3C trace context: new ids, and the incoming `traceparent` header of an HTTP/1 request.

use aya_ebpf::helpers::{bpf_get_prandom_u32, generated};
use spanhook_common::TraceIds;

use crate::maps::{HEAD_WINDOW, SCAN_MASK, SCRATCH};

/// Fills `out` with random bytes from the kernel's per-CPU generator (seeded from the
/// kernel's entropy pool). Ids are decided here because children started later in the same
/// request, and headers written to the network, need them before user space sees anything.
#[inline(always)]
pub fn random_bytes<const N: usize>(out: &mut [u8; N]) {
    let mut i = 0;
    while i + 4 <= N {
        // SAFETY: plain helper call.
        let r = unsafe { bpf_get_prandom_u32() };
        out[i..i + 4].copy_from_slice(&r.to_ne_bytes());
        i += 4;
    }
}

/// Trace context for a span that starts a new trace.
#[inline(always)]
pub fn new_root(ids: &mut TraceIds) {
    random_bytes(&mut ids.trace_id);
    random_bytes(&mut ids.span_id);
    ids.parent_span_id = [0; 8];
    ids.flags = 1;
    ids.origin = TraceIds::ORIGIN_NEW;
}

/// The outcome of looking for a `traceparent` header.
pub enum Incoming {
    /// No header in the request.
    Absent,
    /// A header that did not parse; the span starts a new trace.
    Invalid,
    /// A valid header; `ids` now continue the caller's trace.
    Valid,
}

const fn lower8(bytes: &[u8; 8]) -> u64 {
    u64::from_le_bytes(*bytes)
}

/// `"tracepar"` as a little-endian word, to compare eight header-name bytes at once.
const NAME_HEAD: u64 = lower8(b"tracepar");
/// `"ent:"` as a little-endian word.
const NAME_TAIL: u32 = u32::from_le_bytes(*b"ent:");
/// Setting bit 5 lowercases ASCII letters and leaves `:` unchanged.
const LOWER8: u64 = 0x2020_2020_2020_2020;
const LOWER4: u32 = 0x2020_2020;

/// Where the copied window starts in scratch: eight zero bytes before it let the scanner
/// read a whole word at any position without a lower bound check.
const PAD: usize = 8;

/// State shared with the `bpf_loop` callback.
#[repr(C)]
struct Scan {
    /// The scratch buffer (a per-CPU map value).
    head: *const u8,
    /// Highest position to examine (padded coordinates); iteration `i` looks at the eight
    /// bytes ending `8 * i` below it. Derived from the loop index rather than updated, so the
    /// verifier sees the same state at every iteration and checks the body once.
    start: u64,
    /// Padded index of the header value, or 0 when not found.
    found: u64,
}

/// Copies the last `len` bytes before `end` (the end of a request head in the target's
/// memory) to scratch and looks for a `traceparent` line in that last head. On success the
/// trace id, parent and flags of `ids` are set from the header and a fresh span id is drawn.
#[inline(always)]
pub fn from_request_head(end: u64, len: u64, ids: &mut TraceIds) -> Incoming {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return Incoming::Absent;
    };
    // SAFETY: per-CPU scratch, used by one program at a time on this CPU.
    let head = unsafe { &mut (*scratch).head };
    let n = if len > HEAD_WINDOW as u64 {
        HEAD_WINDOW as u64
    } else {
        len
    };
    if n < 16 {
        return Incoming::Absent;
    }
    head[..PAD].copy_from_slice(&[0; PAD]);
    // SAFETY: `n <= HEAD_WINDOW` keeps the write inside `head` after the padding.
    let rc = unsafe {
        generated::bpf_probe_read_user(
            head.as_mut_ptr().add(PAD).cast(),
            n as u32,
            (end - n) as *const core::ffi::c_void,
        )
    };
    if rc < 0 {
        return Incoming::Absent;
    }
    // Walk backwards from before the head's closing CRLFCRLF: the first `traceparent` line
    // met belongs to this request; a blank line means the previous request's head. The loop
    // runs in `bpf_loop` so the verifier checks the body once, eight bytes per iteration.
    let mut scan = Scan {
        head: head.as_ptr(),
        start: n - 5 + PAD as u64,
        found: 0,
    };
    // SAFETY: the callback only reads `scan` and the scratch buffer it points to.
    unsafe {
        generated::bpf_loop(
            (HEAD_WINDOW / 8 + 1) as u32,
            scan_word as *mut core::ffi::c_void,
            (&mut scan as *mut Scan).cast(),
            0,
        )
    };
    if scan.found == 0 {
        return Incoming::Absent;
    }
    let mut v = (scan.found as usize) & SCAN_MASK;
    // Optional whitespace before the value.
    if head[v] == b' ' || head[v] == b'\t' {
        v += 1;
    }
    if head[v & SCAN_MASK] == b' ' {
        v += 1;
    }
    if parse_value(head.as_ptr(), v & SCAN_MASK, ids) {
        Incoming::Valid
    } else {
        Incoming::Invalid
    }
}

/// Reads scratch byte `i`. Indices are masked, and the buffer extends past the mask by more
/// than the longest look-ahead, so no access can leave it (and no bounds-check panic path
/// reaches the verifier).
#[inline(always)]
fn byte(head: *const u8, i: usize) -> u8 {
    // SAFETY: `i & SCAN_MASK` plus at most 13 stays inside `Scratch::head` (see maps.rs).
    unsafe { *head.add(i & SCAN_MASK) }
}

#[inline(always)]
fn word_at(head: *const u8, i: usize) -> u64 {
    let mut w = 0u64;
    let mut k = 0;
    while k < 8 {
        w |= (byte(head, i + k) as u64) << (8 * k);
        k += 1;
    }
    w
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

/// `bpf_loop` body: examines the eight positions ending `8 * index` below the start,
/// highest first. Returns 1 to stop (found, blank line, or start of the window), 0 to go on.
#[inline(never)]
extern "C" fn scan_word(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the `Scan` passed to bpf_loop by `from_request_head`.
    let scan = unsafe { &mut *ctx.cast::<Scan>() };
    let head = scan.head;
    // Through memory, so LLVM cannot recompute `top` from `start` and `index` after the
    // bounds check below: the verifier only trusts the register the check was made on.
    let top = scan.start.wrapping_sub(index.wrapping_mul(8)) as usize;
    // SAFETY: reading a local.
    let top = unsafe { core::ptr::read_volatile(&top) };
    if top < PAD || top >= HEAD_WINDOW + PAD {
        return 1;
    }
    // Any '\n' among the eight bytes? (the classic has-zero-byte test on word ^ "\n"*8)
    let x = word_at(head, top - 7) ^ 0x0a0a_0a0a_0a0a_0a0a;
    if x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080 == 0 {
        return 0;
    }
    let mut k = 0;
    while k < 8 {
        let p = top - k;
        if p >= PAD && byte(head, p) == b'\n' {
            if byte(head, p + 1) == b'\r' {
                return 1;
            }
            if is_traceparent(head, p) {
                scan.found = (p + 13) as u64;
                return 1;
            }
        }
        k += 1;
    }
    0
}

/// Value of each byte as a lowercase hex digit; 0x80 marks a byte that is not one. A table
/// keeps the decoding free of branches: a branch per character would give the verifier two
/// paths per character to explore.
static HEX: [u8; 256] = {
    let mut t = [0x80u8; 256];
    let mut c = 0;
    while c < 10 {
        t[b'0' as usize + c] = c as u8;
        c += 1;
    }
    let mut c = 0;
    while c < 6 {
        t[b'a' as usize + c] = 10 + c as u8;
        c += 1;
    }
    t
};

/// Decodes the hex pair at scratch bytes `v + i`, `v + i + 1`; sets bit 7 of `bad` if either
/// is not hex.
#[inline(always)]
fn pair(head: *const u8, v: usize, i: usize, bad: &mut u8) -> u8 {
    // SAFETY: `HEX` has an entry for every byte value.
    let (hi, lo) = unsafe {
        (
            core::ptr::read_volatile(&HEX[byte(head, v + i) as usize]),
            core::ptr::read_volatile(&HEX[byte(head, v + i + 1) as usize]),
        )
    };
    *bad |= hi | lo;
    (hi << 4) | (lo & 0x0f)
}

/// Parses `version-traceid-parentid-flags` at scratch index `v` into `ids`; `false`
/// when any part is malformed, so a bad header is never half trusted.
#[inline(always)]
fn parse_value(head: *const u8, v: usize, ids: &mut TraceIds) -> bool {
    let mut bad = 0u8;
    let version = pair(head, v, 0, &mut bad);
    let mut trace_id = [0u8; 16];
    let mut any_trace = 0u8;
    let mut i = 0;
    while i < 16 {
        trace_id[i] = pair(head, v, 3 + 2 * i, &mut bad);
        any_trace |= trace_id[i];
        i += 1;
    }
    let mut parent = [0u8; 8];
    let mut any_parent = 0u8;
    let mut i = 0;
    while i < 8 {
        parent[i] = pair(head, v, 36 + 2 * i, &mut bad);
        any_parent |= parent[i];
        i += 1;
    }
    let flags = pair(head, v, 53, &mut bad);
    if bad & 0x80 != 0 || any_trace == 0 || any_parent == 0 || version == 0xff {
        return false;
    }
    if byte(head, v + 2) != b'-' || byte(head, v + 35) != b'-' || byte(head, v + 52) != b'-' {
        return false;
    }
    // Version 00 ends after the flags; later versions may append fields after a dash.
    let next = byte(head, v + 55);
    let ends = next == b'\r' || next == b'\n' || next == b' ' || next == b'\t';
    if !(ends || (version > 0 && next == b'-')) {
        return false;
    }
    ids.trace_id = trace_id;
    ids.parent_span_id = parent;
    random_bytes(&mut ids.span_id);
    ids.flags = flags;
    ids.origin = TraceIds::ORIGIN_HEADER;
    true
}
