//! What the view shows: filters on service, route, status and duration, typed after `/` or
//! given with `--filter`, as `service=checkout route=/items status=5xx min=50ms`.
//!
//! A filter selects spans. The operations table aggregates only the spans that pass, and the
//! trace list shows the traces holding at least one span that passes, so both panes always
//! answer the same question.

use std::{fmt, str::FromStr, time::Duration};

use opentelemetry::trace::Status;

use crate::spans::SpanRecord;

/// A filter that cannot be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    /// A `key=value` term with a key no filter has.
    #[error("unknown filter {0:?}: use service=, route=, status=, min=")]
    UnknownKey(String),
    /// A `status=` value that is not a code, a class or ok/error.
    #[error("status {0:?}: use a code (404), a class (5xx), error or ok")]
    Status(String),
    /// A `min=` value that is not a duration.
    #[error("duration {0:?}: use a number with a unit: 250us, 50ms, 1.5s")]
    Duration(String),
}

/// Which responses pass a `status=` filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusFilter {
    /// One exact code, `404`.
    Code(u16),
    /// A class by its first digit, `5xx`.
    Class(u16),
    /// Spans with status ERROR.
    Error,
    /// Spans without status ERROR.
    Ok,
}

impl StatusFilter {
    /// Whether a span with this status code (0: none) and error flag passes.
    pub fn matches(self, code: u16, error: bool) -> bool {
        match self {
            StatusFilter::Code(c) => code == c,
            StatusFilter::Class(c) => code / 100 == c,
            StatusFilter::Error => error,
            StatusFilter::Ok => !error,
        }
    }
}

impl fmt::Display for StatusFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusFilter::Code(c) => write!(f, "{c}"),
            StatusFilter::Class(c) => write!(f, "{c}xx"),
            StatusFilter::Error => f.write_str("error"),
            StatusFilter::Ok => f.write_str("ok"),
        }
    }
}

impl FromStr for StatusFilter {
    type Err = FilterError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        let bad = || FilterError::Status(s.to_string());
        match lower.as_str() {
            "error" | "err" | "errors" => Ok(StatusFilter::Error),
            "ok" => Ok(StatusFilter::Ok),
            _ => match lower.strip_suffix("xx") {
                Some(d) => match d.parse::<u16>() {
                    Ok(d) if (1..=5).contains(&d) => Ok(StatusFilter::Class(d)),
                    _ => Err(bad()),
                },
                None => lower.parse().map(StatusFilter::Code).map_err(|_| bad()),
            },
        }
    }
}

/// Parses `250us`, `50ms`, `1.5s`, `2m`; a bare number is milliseconds.
pub fn parse_duration(s: &str) -> Result<Duration, FilterError> {
    let bad = || FilterError::Duration(s.to_string());
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().map_err(|_| bad())?;
    let scale = match unit.trim() {
        "" | "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "s" => 1.0,
        "m" => 60.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(n * scale).map_err(|_| bad())
}

fn format_duration(d: Duration) -> String {
    let us = d.as_micros();
    if us.is_multiple_of(1_000_000) {
        format!("{}s", us / 1_000_000)
    } else if us.is_multiple_of(1_000) {
        format!("{}ms", us / 1_000)
    } else {
        format!("{us}us")
    }
}

/// The active filters; the default lets everything through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Part of the service name (case-insensitive).
    pub service: Option<String>,
    /// Part of the operation name, which holds the route (case-insensitive).
    pub route: Option<String>,
    /// Which status codes pass.
    pub status: Option<StatusFilter>,
    /// Shortest span that passes.
    pub min_duration: Option<Duration>,
}

impl Filter {
    /// Whether nothing is filtered.
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// Whether spans of this service and operation can pass (the rest is per span).
    pub fn matches_operation(&self, service: &str, name: &str) -> bool {
        contains(service, self.service.as_deref()) && contains(name, self.route.as_deref())
    }

    /// Whether a span with this status code, error flag and duration passes.
    pub fn matches_outcome(&self, code: u16, error: bool, duration_us: u64) -> bool {
        self.status.is_none_or(|s| s.matches(code, error))
            && self
                .min_duration
                .is_none_or(|m| duration_us as u128 >= m.as_micros())
    }

    /// Whether `span` passes.
    pub fn matches_span(&self, span: &SpanRecord) -> bool {
        self.matches_operation(&span.resource.service_name, &span.name)
            && self.matches_outcome(
                status_code(span),
                is_error(span),
                span.duration().as_micros() as u64,
            )
    }
}

/// The span's HTTP (or gRPC) status code; 0 when it has none.
pub fn status_code(span: &SpanRecord) -> u16 {
    ["http.response.status_code", "rpc.grpc.status_code"]
        .iter()
        .find_map(|k| span.attribute(k))
        .and_then(|v| v.as_str().parse().ok())
        .unwrap_or(0)
}

/// Whether the span's status is ERROR.
pub fn is_error(span: &SpanRecord) -> bool {
    matches!(span.status, Status::Error { .. })
}

/// Splits on spaces outside double quotes: `route="GET /items/" status=5xx`.
fn terms(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut term = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                term.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !term.is_empty() {
                    out.push(std::mem::take(&mut term));
                }
            }
            c => term.push(c),
        }
    }
    if !term.is_empty() {
        out.push(term);
    }
    out
}

/// A value as a filter term writes it: quoted when it holds a space.
fn quote(value: &str) -> String {
    if value.contains(char::is_whitespace) {
        format!("\"{value}\"")
    } else {
        value.to_string()
    }
}

fn contains(haystack: &str, needle: Option<&str>) -> bool {
    match needle {
        None => true,
        Some(n) => haystack.to_lowercase().contains(&n.to_lowercase()),
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut terms = Vec::new();
        if let Some(s) = &self.service {
            terms.push(format!("service={}", quote(s)));
        }
        if let Some(r) = &self.route {
            terms.push(format!("route={}", quote(r)));
        }
        if let Some(s) = &self.status {
            terms.push(format!("status={s}"));
        }
        if let Some(d) = self.min_duration {
            terms.push(format!("min={}", format_duration(d)));
        }
        f.write_str(&terms.join(" "))
    }
}

impl FromStr for Filter {
    type Err = FilterError;

    /// Space-separated `key=value` (or `key:value`) terms; a bare word filters the route.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut filter = Filter::default();
        for term in terms(s) {
            let term = term.as_str();
            let (key, value) = match term.split_once(['=', ':']) {
                Some((k, v)) => (k.to_ascii_lowercase(), v),
                None => ("route".to_string(), term),
            };
            let value = value.trim_matches('"');
            if value.is_empty() {
                continue;
            }
            match key.as_str() {
                "service" | "svc" => filter.service = Some(value.to_string()),
                "route" | "op" | "operation" | "name" => filter.route = Some(value.to_string()),
                "status" | "code" => filter.status = Some(value.parse()?),
                "min" | "min-duration" | "duration" => {
                    filter.min_duration = Some(parse_duration(value)?)
                }
                _ => return Err(FilterError::UnknownKey(key)),
            }
        }
        Ok(filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_key_and_prints_it_back() {
        let f: Filter = "service=checkout route=/items status=5xx min=50ms"
            .parse()
            .unwrap();
        assert_eq!(f.service.as_deref(), Some("checkout"));
        assert_eq!(f.route.as_deref(), Some("/items"));
        assert_eq!(f.status, Some(StatusFilter::Class(5)));
        assert_eq!(f.min_duration, Some(Duration::from_millis(50)));
        assert_eq!(
            f.to_string(),
            "service=checkout route=/items status=5xx min=50ms"
        );
        assert_eq!(f.to_string().parse::<Filter>().unwrap(), f);
    }

    #[test]
    fn quoted_values_keep_their_spaces() {
        let f: Filter = r#"route="GET /items/" status=ok"#.parse().unwrap();
        assert_eq!(f.route.as_deref(), Some("GET /items/"));
        assert_eq!(f.to_string(), r#"route="GET /items/" status=ok"#);
        assert_eq!(f.to_string().parse::<Filter>().unwrap(), f);
    }

    #[test]
    fn bare_words_filter_the_route_and_empty_means_everything() {
        let f: Filter = "/hello".parse().unwrap();
        assert_eq!(f.route.as_deref(), Some("/hello"));
        assert!("".parse::<Filter>().unwrap().is_empty());
        assert!("  ".parse::<Filter>().unwrap().is_empty());
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        assert_eq!(
            "colour=red".parse::<Filter>(),
            Err(FilterError::UnknownKey("colour".into()))
        );
        assert!("status=9xx".parse::<Filter>().is_err());
        assert!("status=teapot".parse::<Filter>().is_err());
        assert!("min=fast".parse::<Filter>().is_err());
        assert!("min=5parsecs".parse::<Filter>().is_err());
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("40").unwrap(), Duration::from_millis(40));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    }

    #[test]
    fn matching() {
        let f: Filter = "service=CHECK route=items status=error min=1ms"
            .parse()
            .unwrap();
        assert!(f.matches_operation("checkout", "GET /items/"));
        assert!(!f.matches_operation("catalog", "GET /items/"));
        assert!(!f.matches_operation("checkout", "GET /hello"));
        assert!(f.matches_outcome(500, true, 1_000));
        assert!(!f.matches_outcome(500, true, 999));
        assert!(!f.matches_outcome(200, false, 5_000));
        let code: Filter = "status=404".parse().unwrap();
        assert!(code.matches_outcome(404, false, 0));
        assert!(!code.matches_outcome(400, false, 0));
        let ok: Filter = "status=ok".parse().unwrap();
        assert!(ok.matches_outcome(404, false, 0));
        assert!(!ok.matches_outcome(500, true, 0));
    }
}
