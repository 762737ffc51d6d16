//! Process lifecycle records for daemon-mode discovery: the `sched:sched_process_exec` and
//! `sched:sched_process_exit` tracepoints write one [`ProcessEvent`] each to the
//! `PROCESS_EVENTS` ring buffer, its own ring so that a burst of execs cannot crowd out spans.

/// What happened to a process. Values are stable.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessEventKind {
    /// The process replaced its program (`execve`); its pid stays the same.
    Exec = 1,
    /// The process's main thread exited (the whole process is going away).
    Exit = 2,
}

impl ProcessEventKind {
    /// Maps the raw `kind` back to the enum.
    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(ProcessEventKind::Exec),
            2 => Some(ProcessEventKind::Exit),
            _ => None,
        }
    }
}

/// One exec or exit of a process.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessEvent {
    /// A [`ProcessEventKind`] value.
    pub kind: u32,
    /// The process (thread group) id.
    pub pid: u32,
    /// `bpf_ktime_get_ns` when it happened.
    pub ktime_ns: u64,
}

const _: () = assert!(core::mem::size_of::<ProcessEvent>() == 16);

// SAFETY: #[repr(C)], two u32 and one u64, no padding: any bit pattern is valid.
unsafe impl crate::event::Plain for ProcessEvent {}

/// Size of the `PROCESS_EVENTS` ring buffer in bytes: 4 096 records.
pub const PROCESS_EVENTS_BYTES: u32 = 64 << 10;
