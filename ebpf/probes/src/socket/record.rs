//! Building a socket record in per-CPU scratch and sending it to user space.
//!
//! A record is a [`SocketDataHeader`] followed by a bounded prefix of the call's bytes. The
//! prefix is copied into scratch at offsets masked below `SOCKET_CAPTURE_BYTES` with lengths
//! clamped to it, and the scratch has twice that room, so no copy needs a bounds check the
//! verifier could reject. The record goes out with `bpf_ringbuf_output` at its real length,
//! and wakes the reader only once a batch has built up.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_probe_read_user, generated},
};
use spanhook_common::{
    socket::{flags, SOCKET_CAPTURE_BYTES},
    Counter, SocketDataHeader,
};

use super::maps::{SocketScratch, SOCKET_EVENTS, SOCKET_EVENTS_BYTES, SOCKET_SCRATCH};
use crate::emit::count;

/// Iovecs walked per vectored call; bytes in later ones are not copied (the head of an HTTP
/// message is in the first few).
const MAX_IOVECS: u64 = 8;

const HEADER_BYTES: usize = core::mem::size_of::<SocketDataHeader>();
const MASK: u64 = SOCKET_CAPTURE_BYTES as u64 - 1;

/// Unread bytes above which a record wakes the reader.
const WAKEUP_BYTES: u64 = (SOCKET_EVENTS_BYTES as u64) / 16;

/// The per-CPU scratch record.
#[inline(always)]
pub fn scratch() -> Option<&'static mut SocketScratch> {
    // SAFETY: per-CPU slot, one program at a time on this CPU.
    SOCKET_SCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// `v` with its bounds hidden from LLVM's value tracking, so a bounds check made on it is the
/// one the verifier sees (LLVM may otherwise recompute the value from its inputs).
#[inline(always)]
fn opaque(v: u64) -> u64 {
    // SAFETY: reading a local.
    unsafe { core::ptr::read_volatile(&v) }
}

/// Copies `n` (at most `SOCKET_CAPTURE_BYTES`) bytes of user memory at `src` to `data` at
/// offset `at` (below `SOCKET_CAPTURE_BYTES`); false when the read failed.
#[inline(always)]
fn copy_user(data: &mut [u8; 2 * SOCKET_CAPTURE_BYTES], at: u64, n: u64, src: u64) -> bool {
    let at = opaque(at) & MASK;
    let mut n = opaque(n);
    if n > SOCKET_CAPTURE_BYTES as u64 {
        n = SOCKET_CAPTURE_BYTES as u64;
    }
    if n == 0 {
        return true;
    }
    // SAFETY: `at < SOCKET_CAPTURE_BYTES` and `n <= SOCKET_CAPTURE_BYTES` keep the write
    // inside `data`; the helper validates `src`.
    let rc = unsafe {
        generated::bpf_probe_read_user(
            data.as_mut_ptr().add(at as usize).cast(),
            n as u32,
            src as *const core::ffi::c_void,
        )
    };
    rc == 0
}

/// Copies the first `min(len, SOCKET_CAPTURE_BYTES)` bytes of a plain buffer; returns how
/// many were copied.
#[inline(always)]
pub fn copy_plain(s: &mut SocketScratch, buf: u64, len: u64) -> u64 {
    let want = if len > SOCKET_CAPTURE_BYTES as u64 {
        SOCKET_CAPTURE_BYTES as u64
    } else {
        len
    };
    if copy_user(&mut s.data, 0, want, buf) {
        want
    } else {
        0
    }
}

/// Copies the first `min(len, SOCKET_CAPTURE_BYTES)` bytes spread over an iovec array of
/// `iovlen` entries at `iov`; returns how many were copied.
#[inline(always)]
pub fn copy_iovecs(s: &mut SocketScratch, iov: u64, iovlen: u64, len: u64) -> u64 {
    let room = if len > SOCKET_CAPTURE_BYTES as u64 {
        SOCKET_CAPTURE_BYTES as u64
    } else {
        len
    };
    let mut filled = 0u64;
    let mut i = 0u64;
    while i < MAX_IOVECS {
        if i >= iovlen || filled >= room {
            break;
        }
        // SAFETY: the helper validates the address.
        let Ok([base, iov_len]) =
            (unsafe { bpf_probe_read_user((iov + 16 * i) as *const [u64; 2]) })
        else {
            break;
        };
        let left = room - filled;
        let n = if iov_len > left { left } else { iov_len };
        if !copy_user(&mut s.data, filled, n, base) {
            break;
        }
        filled += n;
        i += 1;
    }
    filled
}

/// Sends the scratch record with `captured` bytes; sets INCOMPLETE when fewer than the
/// prefix were copied.
#[inline(always)]
pub fn submit(s: &mut SocketScratch, captured: u64) {
    let want = if s.header.len > SOCKET_CAPTURE_BYTES as u64 {
        SOCKET_CAPTURE_BYTES as u64
    } else {
        s.header.len
    };
    if captured < want && s.header.flags & flags::FROM_FILE == 0 {
        s.header.flags |= flags::INCOMPLETE;
        count(Counter::SocketCopyIncomplete);
    }
    let mut captured = opaque(captured);
    if captured > SOCKET_CAPTURE_BYTES as u64 {
        captured = SOCKET_CAPTURE_BYTES as u64;
    }
    s.header.captured = captured as u16;
    let size = HEADER_BYTES as u64 + captured;
    let flags = if SOCKET_EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    };
    // SAFETY: `size <= HEADER_BYTES + SOCKET_CAPTURE_BYTES` lies inside the scratch value.
    let bytes = unsafe {
        core::slice::from_raw_parts((s as *const SocketScratch).cast::<u8>(), size as usize)
    };
    if SOCKET_EVENTS.output::<[u8]>(bytes, flags).is_err() {
        count(Counter::SocketRingFull);
    }
}
