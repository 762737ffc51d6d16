//! W3C trace context: new ids, the incoming `traceparent` of an HTTP/1 request, and the
//! header value written on the wire for outgoing calls.

use aya_ebpf::helpers::{bpf_get_prandom_u32, generated};
use spanhook_common::TraceIds;

use crate::{
    maps::{HEAD_WINDOW, SCAN_MASK, SCRATCH},
    scan::{self, byte, PAD},
};

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
    if len <= HEAD_WINDOW as u64 {
        // The copy starts at the buffer's first byte, which always starts a line: the request
        // line, or (when the head arrived in pieces) the line bufio slid to the front after
        // dropping the lines it had parsed. A newline in the padding lets that line match.
        head[PAD - 1] = b'\n';
    }
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
    let Some(found) = scan::last_traceparent(scratch, n as usize) else {
        return Incoming::Absent;
    };
    let mut v = found & SCAN_MASK;
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

/// Parses `version-traceid-parentid-flags` at scratch index `v` into `ids`; `false` when any
/// part is malformed, so a bad header is never half trusted.
///
/// A subprogram of its own: inlined, its unrolled decoding spilled to ≈ 400 bytes of stack in
/// each caller, and grpc-go's header callback plus the program calling it went past the
/// kernel's 512-byte limit for a call chain ("combined stack size … Too large").
#[inline(never)]
pub fn parse_value(head: *const u8, v: usize, ids: &mut TraceIds) -> bool {
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

/// Length of the header line [`header_line`] writes.
pub const HEADER_LINE_LEN: usize = 70;

const DIGITS: [u8; 16] = *b"0123456789abcdef";

#[inline(always)]
fn hex_into(out: &mut [u8; HEADER_LINE_LEN], at: usize, bytes: &[u8]) {
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        out[at + 2 * i] = DIGITS[(b >> 4) as usize];
        out[at + 2 * i + 1] = DIGITS[(b & 0x0f) as usize];
        i += 1;
    }
}

/// `traceparent: 00-{trace}-{span}-{flags}\r\n` for the span `ids`.
#[inline(always)]
pub fn header_line(ids: &TraceIds, out: &mut [u8; HEADER_LINE_LEN]) {
    out[..16].copy_from_slice(b"traceparent: 00-");
    hex_into(out, 16, &ids.trace_id);
    out[48] = b'-';
    hex_into(out, 49, &ids.span_id);
    out[65] = b'-';
    hex_into(out, 66, &[ids.flags & 1]);
    out[68] = b'\r';
    out[69] = b'\n';
}
