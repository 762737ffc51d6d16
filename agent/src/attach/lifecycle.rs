//! Process exec and exit events for daemon-mode discovery: the `sched:sched_process_exec`
//! and `sched:sched_process_exit` tracepoints and their ring buffer.
//!
//! Unlike uprobes these are attached once for the whole machine, when the daemon starts, and
//! stay until it exits. Each record is a [`ProcessEvent`]; decoding is [`decode_process_event`].

use aya::{maps::RingBuf, programs::TracePoint};
use spanhook_common::{event::read_plain, ProcessEvent, ProcessEventKind};

use super::{EventReader, Probes};

/// Each program and the `sched:` tracepoint it runs on.
pub const TRACEPOINTS: &[(&str, &str)] = &[
    ("process_exec", "sched_process_exec"),
    ("process_exit", "sched_process_exit"),
];

/// Why process events cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// A program or map is missing from the embedded object.
    #[error("eBPF object lacks {0} (agent and probes out of step)")]
    Missing(&'static str),
    /// The ring buffer could not be opened.
    #[error("cannot open eBPF map PROCESS_EVENTS: {0}")]
    Map(#[source] aya::maps::MapError),
    /// A tracepoint program could not be loaded or attached.
    #[error("cannot {what} {program} on sched:{point}: {source}")]
    Program {
        /// "load" or "attach".
        what: &'static str,
        /// The program.
        program: &'static str,
        /// The tracepoint.
        point: &'static str,
        /// Cause.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
}

/// One decoded record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessChange {
    /// Exec or exit.
    pub kind: ProcessEventKind,
    /// The process.
    pub pid: u32,
}

/// Decodes one `PROCESS_EVENTS` record (length- and kind-checked).
pub fn decode_process_event(bytes: &[u8]) -> Option<ProcessChange> {
    let raw: ProcessEvent = read_plain(bytes)?;
    Some(ProcessChange {
        kind: ProcessEventKind::from_raw(raw.kind)?,
        pid: raw.pid,
    })
}

impl Probes {
    /// Loads and attaches the exec/exit tracepoints and returns the reader of their ring.
    /// Call once.
    pub fn process_events(&mut self) -> Result<EventReader, LifecycleError> {
        for (program, point) in TRACEPOINTS {
            let prog: &mut TracePoint = self
                .ebpf
                .program_mut(program)
                .and_then(|p| p.try_into().ok())
                .ok_or(LifecycleError::Missing(program))?;
            let err = |what| {
                move |e| LifecycleError::Program {
                    what,
                    program,
                    point,
                    source: Box::new(e),
                }
            };
            prog.load().map_err(err("load"))?;
            prog.attach("sched", point).map_err(err("attach"))?;
        }
        let map = self
            .ebpf
            .take_map("PROCESS_EVENTS")
            .ok_or(LifecycleError::Missing("PROCESS_EVENTS"))?;
        let ring = RingBuf::try_from(map).map_err(LifecycleError::Map)?;
        EventReader::new(ring).map_err(|e| LifecycleError::Map(aya::maps::MapError::IoError(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_length_and_kind_checked() {
        let ev = ProcessEvent {
            kind: 1,
            pid: 42,
            ktime_ns: 7,
        };
        // SAFETY: reading the bytes of a #[repr(C)] value without padding.
        let bytes: [u8; 16] = unsafe { core::mem::transmute(ev) };
        assert_eq!(
            decode_process_event(&bytes),
            Some(ProcessChange {
                kind: ProcessEventKind::Exec,
                pid: 42
            })
        );
        assert_eq!(decode_process_event(&bytes[..15]), None);
        let mut bad = bytes;
        bad[0] = 9;
        assert_eq!(decode_process_event(&bad), None);
    }
}
