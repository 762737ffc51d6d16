//! Which tokio task a thread runs: `tokio::runtime::task::raw::poll` (one copy per spawned
//! future type) gets the task's header in its first argument; every probe that fires later on
//! that thread, until the next poll, runs inside that task.
//!
//! A worker thread also runs code outside tasks (the I/O driver, timers) between polls; no
//! probed hyper or reqwest function runs there, so the entry is never consulted then.

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::uprobe, programs::ProbeContext};
use spanhook_common::{RustPtrKey, TraceIds};

use super::maps::{RUST_CURRENT_TASK, RUST_TASK_SPANS};

/// `tokio::runtime::task::raw::poll` entry.
#[uprobe]
pub fn rust_task_poll(ctx: ProbeContext) -> u32 {
    let header: u64 = ctx.arg(0).unwrap_or(0);
    if header != 0 {
        let _ = RUST_CURRENT_TASK.insert(&bpf_get_current_pid_tgid(), &header, 0);
    }
    0
}

/// The task the current thread is polling (0 when unknown).
#[inline(always)]
pub fn current() -> u64 {
    // SAFETY: copied out at once.
    unsafe { RUST_CURRENT_TASK.get(&bpf_get_current_pid_tgid()) }
        .copied()
        .unwrap_or(0)
}

/// The server span in progress on `task`, if any.
#[inline(always)]
pub fn span_of(tgid: u32, task: u64) -> Option<TraceIds> {
    if task == 0 {
        return None;
    }
    let key = RustPtrKey {
        tgid,
        _pad: 0,
        ptr: task,
    };
    // SAFETY: copied out at once.
    unsafe { RUST_TASK_SPANS.get(&key) }.copied()
}
