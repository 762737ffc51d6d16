//! Sending records to user space and counting what could not be sent.

use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
use spanhook_common::Counter;

use crate::maps::{COUNTERS, EVENTS, EVENTS_BYTES};

/// Unread bytes above which a submit wakes the reader. Waking per record costs several
/// microseconds per event; below this level the reader finds records on its own timer.
const WAKEUP_BYTES: u64 = (EVENTS_BYTES as u64) / 16;

/// The submit flags for a record: wake the reader only when a batch has built up.
#[inline(always)]
pub fn wakeup_flags() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Adds one to `counter` on this CPU.
#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, no other writer on this CPU while we run.
        unsafe { *slot += 1 };
    }
}
