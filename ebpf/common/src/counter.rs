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
    /// A `traceparent` was added to an outgoing HTTP/2 HEADERS frame (grpc-go clients).
    H2TraceparentInjected = 10,
    /// A queued HTTP/2 `traceparent` was not added: the stream's HEADERS frame was split over
    /// CONTINUATION frames or writes, padded, too large to grow, or its request already
    /// carried one.
    H2InjectionSkipped = 11,
    /// A write on an HTTP/2 connection could not be followed frame by frame (a connection
    /// that predates the agent, or more frames in one write than the program walks); the
    /// connection gets `traceparent` again from its next write that is whole frames.
    H2FramingLost = 12,
    /// A hyper response head was encoded for a request whose head the probes did not see
    /// (it predates attach, or was too long to read).
    RustServerUnmatched = 20,
    /// A hyper client response (or error) arrived for a request the probes did not see.
    RustClientUnmatched = 21,
    /// A Rust caller's request could not be paired with the request a hyper connection wrote.
    RustCallUnpaired = 22,
    /// A socket record was dropped because the `SOCKET_EVENTS` ring buffer was full.
    SocketRingFull = 30,
    /// A socket call could not be remembered between its entry and its return (map full).
    SocketCallInsertFailed = 31,
    /// A socket call's bytes inside the capture prefix could not all be copied.
    SocketCopyIncomplete = 32,
    /// A libssl call returned before the descriptor of its `SSL` was known.
    TlsWithoutDescriptor = 33,
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
        Counter::H2TraceparentInjected,
        Counter::H2InjectionSkipped,
        Counter::H2FramingLost,
        Counter::RustServerUnmatched,
        Counter::RustClientUnmatched,
        Counter::RustCallUnpaired,
        Counter::SocketRingFull,
        Counter::SocketCallInsertFailed,
        Counter::SocketCopyIncomplete,
        Counter::TlsWithoutDescriptor,
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
            Counter::H2TraceparentInjected => "h2_traceparent_injected",
            Counter::H2InjectionSkipped => "h2_injection_skipped",
            Counter::H2FramingLost => "h2_framing_lost",
            Counter::RustServerUnmatched => "rust_server_unmatched",
            Counter::RustClientUnmatched => "rust_client_unmatched",
            Counter::RustCallUnpaired => "rust_call_unpaired",
            Counter::SocketRingFull => "socket_ringbuf_full",
            Counter::SocketCallInsertFailed => "socket_call_insert_failed",
            Counter::SocketCopyIncomplete => "socket_copy_incomplete",
            Counter::TlsWithoutDescriptor => "tls_without_descriptor",
        }
    }
}
