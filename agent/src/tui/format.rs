//! How numbers read on screen: latencies, rates, percentages and wall-clock times, each short
//! enough for a fixed column of an 80-column terminal.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::SpanKind;

/// A latency in at most seven columns: `850µs`, `1.23ms`, `12.3ms`, `123ms`, `1.25s`, `12.5s`.
pub fn latency_us(us: u64) -> String {
    let ms = us as f64 / 1000.0;
    match us {
        0..=999 => format!("{us}µs"),
        1_000..=9_999 => format!("{ms:.2}ms"),
        10_000..=99_999 => format!("{ms:.1}ms"),
        100_000..=999_999 => format!("{ms:.0}ms"),
        1_000_000..=9_999_999 => format!("{:.2}s", ms / 1000.0),
        10_000_000..=99_999_999 => format!("{:.1}s", ms / 1000.0),
        _ => format!("{:.0}s", ms / 1000.0),
    }
}

/// A duration as [`latency_us`] shows it.
pub fn latency(d: Duration) -> String {
    latency_us(d.as_micros().min(u64::MAX as u128) as u64)
}

/// Events per second: one decimal below a thousand, none above.
pub fn rate(per_sec: f64) -> String {
    if per_sec < 1000.0 {
        format!("{per_sec:.1}")
    } else {
        format!("{per_sec:.0}")
    }
}

/// A share as a percentage with one decimal.
pub fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".into();
    }
    format!("{:.1}", part as f64 * 100.0 / whole as f64)
}

/// A count with thin grouping: `1234567` → `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The lower-case name of a span kind, as the tables show it.
pub fn kind(kind: &SpanKind) -> &'static str {
    match kind {
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
        SpanKind::Internal => "internal",
    }
}

/// Local wall-clock time of day with milliseconds, `15:04:05.123`, as `top` shows its clock.
pub fn clock(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as libc::time_t;
    // SAFETY: `tm` is plain data that localtime_r fills; both pointers are valid for the call.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let local = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
    let (h, m, s) = if local {
        (tm.tm_hour as u64, tm.tm_min as u64, tm.tm_sec as u64)
    } else {
        // No time zone data: show UTC rather than nothing.
        let day = since.as_secs() % 86_400;
        (day / 3600, day / 60 % 60, day % 60)
    };
    format!("{h:02}:{m:02}:{s:02}.{:03}", since.subsec_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fit_seven_columns() {
        let cases = [
            (0, "0µs"),
            (850, "850µs"),
            (1_234, "1.23ms"),
            (12_345, "12.3ms"),
            (123_456, "123ms"),
            (1_250_000, "1.25s"),
            (12_500_000, "12.5s"),
            (125_000_000, "125s"),
        ];
        for (us, want) in cases {
            assert_eq!(latency_us(us), want);
            assert!(want.chars().count() <= 7);
        }
    }

    #[test]
    fn counts_are_grouped() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
    }

    #[test]
    fn rates_and_percentages() {
        assert_eq!(rate(0.25), "0.2");
        assert_eq!(rate(4999.6), "5000");
        assert_eq!(percent(1, 3), "33.3");
        assert_eq!(percent(0, 0), "-");
    }

    #[test]
    fn clock_has_millis() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let text = clock(t);
        assert_eq!(text.len(), 12, "{text}");
        assert!(text.ends_with(".123"), "{text}");
    }
}
