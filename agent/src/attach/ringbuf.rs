//! Reading the event ring buffer from async code.
//!
//! The probes wake the reader only when a batch has built up (waking per record costs
//! microseconds per event), so the reader also drains on a timer.

use std::{os::fd::AsRawFd, time::Duration};

use aya::maps::{MapData, RingBuf};
use tokio::io::{unix::AsyncFd, Interest};

/// How often the reader drains without a wakeup; bounds the delay of a quiet trickle.
///
/// Every timer wakeup costs the agent a round of thread wake-ups (reader, then the export
/// task): at 1 000 spans/s, 50 ms cost 9.0 µs of agent CPU per span and 200 ms cost 6.9 µs
/// (`cargo xtask bench --only agent`, same run, see BENCHMARKS.md). Above a few thousand spans
/// per second the probes' batch wakeups drive the reader and this interval no longer matters.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The poll interval after a drain that found nothing: an idle agent wakes twice a second,
/// and the first record after a quiet spell waits at most this long.
pub const QUIET_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Async reader of the `EVENTS` ring buffer.
pub struct EventReader {
    fd: AsyncFd<RawRing>,
    quiet: bool,
}

struct RawRing(RingBuf<MapData>);

impl AsRawFd for RawRing {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

impl EventReader {
    /// Wraps the ring buffer for tokio.
    pub fn new(ring: RingBuf<MapData>) -> std::io::Result<Self> {
        // SAFETY: the ring buffer owns its map fd, which stays open and unchanged until the
        // RingBuf (inside the AsyncFd) is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(RawRing(ring), Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Self { fd, quiet: false })
    }

    /// Waits until records may be available: a wakeup from the kernel or the poll interval.
    pub async fn ready(&mut self) {
        let wait = self.fd.readable_mut();
        // A timeout is the normal way out: the probes rarely wake us.
        let interval = if self.quiet {
            QUIET_POLL_INTERVAL
        } else {
            POLL_INTERVAL
        };
        if let Ok(Ok(mut guard)) = tokio::time::timeout(interval, wait).await {
            guard.clear_ready();
        }
    }

    /// Calls `f` with each available record, in order; returns how many were read.
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) -> usize {
        let ring = &mut self.fd.get_mut().0;
        let mut n = 0;
        while let Some(item) = ring.next() {
            f(&item);
            n += 1;
        }
        self.quiet = n == 0;
        n
    }
}
