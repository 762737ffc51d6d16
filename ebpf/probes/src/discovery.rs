//! Process lifecycle for daemon-mode discovery: one record per `execve` and per exit of a
//! process's main thread, on the `sched` tracepoints.
//!
//! These fire for every process on the machine and do nothing but reserve and submit one
//! 16-byte record; user space decides what matches. Execs and exits are rare next to
//! requests, so every record wakes the reader: a new service is attached before it serves.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, tracepoint},
    maps::RingBuf,
    programs::TracePointContext,
};
use spanhook_common::{process::PROCESS_EVENTS_BYTES, ProcessEvent, ProcessEventKind};

/// Exec and exit records, read by the daemon.
#[map]
pub static PROCESS_EVENTS: RingBuf = RingBuf::with_byte_size(PROCESS_EVENTS_BYTES, 0);

#[inline(always)]
fn emit(kind: ProcessEventKind, pid: u32) -> u32 {
    if let Some(mut slot) = PROCESS_EVENTS.reserve::<ProcessEvent>(0) {
        slot.write(ProcessEvent {
            kind: kind as u32,
            pid,
            // SAFETY: plain helper call.
            ktime_ns: unsafe { bpf_ktime_get_ns() },
        });
        slot.submit(0);
    }
    0
}

/// `sched:sched_process_exec`: the current task has just loaded its new program.
#[tracepoint]
pub fn process_exec(_ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    emit(ProcessEventKind::Exec, tgid)
}

/// `sched:sched_process_exit`: a task exits; only the main thread's exit is reported.
#[tracepoint]
pub fn process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid != pid_tgid as u32 {
        return 0;
    }
    emit(ProcessEventKind::Exit, tgid)
}
