//! `traceparent` on the wire for Rust clients (opt-in `--propagate`), through the `sk_msg`
//! program of socket/propagate.rs.
//!
//! hyper's `role::Client::encode` serializes a request head into the connection's write
//! buffer; the connection task flushes that buffer to its socket in the same poll, on the same
//! thread, before it runs anything else. So the value is queued by thread at `encode`'s return
//! and the `sk_msg` program, which runs in the writing thread's `sendmsg`, takes it for the
//! next message that thread sends on a traced client socket. Whatever that message is, the
//! value is used once: if it is not a complete plaintext HTTP/1 request head without a
//! `traceparent` (TLS, a body, a head already carrying one), nothing is inserted and the value
//! is dropped, so it can never land on a later request of another connection.

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns};
use spanhook_common::{PendingTraceparent, TraceIds};

use super::maps::RUST_PENDING_BY_THREAD;

/// Queues `trace` for the next message the current thread sends.
#[inline(always)]
pub fn queue_for_thread(tgid: u32, trace: &TraceIds) {
    let pending = PendingTraceparent {
        trace: *trace,
        // SAFETY: plain helper call.
        set_ns: unsafe { bpf_ktime_get_ns() },
        tgid,
        _pad: 0,
    };
    let _ = RUST_PENDING_BY_THREAD.insert(&bpf_get_current_pid_tgid(), &pending, 0);
}

/// Takes the value queued by the current thread, if any.
#[inline(always)]
pub fn take_for_thread() -> Option<PendingTraceparent> {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: copied out at once.
    let pending = unsafe { RUST_PENDING_BY_THREAD.get(&id) }.copied()?;
    let _ = RUST_PENDING_BY_THREAD.remove(&id);
    Some(pending)
}
