//! Counters the probes keep in a per-CPU array so user space can report what was lost.

/// One slot of the per-CPU `COUNTERS` array. Numbers are stable and grouped by capability
/// (0–9 shared and Go HTTP, 10–19 Go gRPC, 20–29 Rust, 30–39 socket level); gaps are fine.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// An event was dropped because the ring buffer was full.
    RingBufferFull = 0,
    /// A request's start could not be remembered because the in-flight map was full.
    InflightInsertFailed = 1,
    /// A return probe fired without a matching entry (the entry was evicted or predates attach).
    ReturnWithoutEntry = 2,
    /// Reading the target's memory failed, so a field of an event is empty.
    UserReadFailed = 3,
    /// An incoming `traceparent` header was present but malformed, so a new trace was started.
    TraceparentInvalid = 4,
    /// A `traceparent` was written into an outgoing HTTP/1 request.
    TraceparentInjected = 5,
    /// A queued `traceparent` was not written: the request already had one, or the bytes were
    /// not a complete HTTP/1 request head, or the entry was stale.
    InjectionSkipped = 6,
}

impl Counter {
    /// Number of slots in the counters array (room for every group above).
    pub const COUNT: u32 = 64;
    /// All counters, in slot order.
    pub const ALL: &'static [Counter] = &[
        Counter::RingBufferFull,
        Counter::InflightInsertFailed,
        Counter::ReturnWithoutEntry,
        Counter::UserReadFailed,
        Counter::TraceparentInvalid,
        Counter::TraceparentInjected,
        Counter::InjectionSkipped,
    ];

    /// A stable name for logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::RingBufferFull => "ringbuf_full",
            Counter::InflightInsertFailed => "inflight_insert_failed",
            Counter::ReturnWithoutEntry => "return_without_entry",
            Counter::UserReadFailed => "user_read_failed",
            Counter::TraceparentInvalid => "traceparent_invalid",
            Counter::TraceparentInjected => "traceparent_injected",
            Counter::InjectionSkipped => "injection_skipped",
        }
    }
}
