//! Kernel timestamps (`CLOCK_MONOTONIC`) → wall-clock times.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Converts monotonic nanoseconds to wall-clock time with an offset taken at creation.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Wall-clock nanoseconds since the epoch minus monotonic nanoseconds, at creation.
    offset_ns: i128,
}

fn clock_ns(id: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl Clock {
    /// Measures the current offset between the two clocks.
    pub fn now() -> Self {
        // Read monotonic between two wall readings and use their midpoint, so the offset's
        // error is at most half the (tiny) gap between the reads.
        let wall_a = clock_ns(libc::CLOCK_REALTIME);
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let wall_b = clock_ns(libc::CLOCK_REALTIME);
        Self {
            offset_ns: (wall_a + wall_b) / 2 - mono,
        }
    }

    /// A clock with a fixed offset (for tests).
    pub fn with_offset_ns(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    /// The current monotonic time in nanoseconds, as the probes read it.
    pub fn monotonic_now_ns() -> u64 {
        clock_ns(libc::CLOCK_MONOTONIC) as u64
    }

    /// Wall-clock time of a monotonic timestamp.
    pub fn wall(&self, monotonic_ns: u64) -> SystemTime {
        let ns = monotonic_ns as i128 + self.offset_ns;
        if ns <= 0 {
            return UNIX_EPOCH;
        }
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_now_to_now() {
        let clock = Clock::now();
        let wall = clock.wall(Clock::monotonic_now_ns());
        let diff = SystemTime::now()
            .duration_since(wall)
            .unwrap_or_else(|e| e.duration());
        assert!(diff < Duration::from_millis(50), "off by {diff:?}");
    }

    #[test]
    fn keeps_differences() {
        let clock = Clock::with_offset_ns(1_700_000_000_000_000_000);
        let a = clock.wall(1_000);
        let b = clock.wall(2_501_000);
        assert_eq!(b.duration_since(a).unwrap(), Duration::from_micros(2_500));
    }
}
