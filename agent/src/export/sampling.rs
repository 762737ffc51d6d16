//! Head sampling by `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`, decided in user space
//! as each span is built (before it is queued, converted or sent), so an unsampled span costs
//! only the probe hits and its decoding. Metrics are recorded before this decision: they count
//! every request.
//!
//! The ratio test is the one the OpenTelemetry Go and Rust SDKs use (the low 8 bytes of the
//! trace id against `ratio·2⁶³`), so a trace is kept or dropped alike by every spanhook with
//! the same ratio and by those SDKs. Parent-based: a span whose parent came from another
//! process (an incoming `traceparent`) follows that parent's sampled flag; a root span, and a
//! child of a span of the same process, take the ratio decision of their trace id — the
//! decision their local root took. A child of a span that joined a remote, sampled trace is
//! kept when that remote decision was seen before it (spans are reported at their end, so a
//! child that ends before its remote-parented parent follows the ratio instead).

use std::collections::{HashSet, VecDeque};

use opentelemetry::trace::{SpanId, TraceId};

use super::ExportError;
use crate::spans::SpanRecord;

/// Trace ids remembered as sampled by a remote parent.
const REMEMBERED: usize = 4096;

/// The configured sampler.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SamplerKind {
    /// Every span.
    AlwaysOn,
    /// No span.
    AlwaysOff,
    /// Spans whose trace id passes the ratio, whatever the parent says.
    TraceIdRatio(f64),
    /// Follow a remote parent's sampled flag; roots by `root`.
    ParentBased(Root),
}

/// How a parent-based sampler decides for roots.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Root {
    /// Keep every root.
    AlwaysOn,
    /// Drop every root.
    AlwaysOff,
    /// Keep roots whose trace id passes the ratio.
    Ratio(f64),
}

impl SamplerKind {
    /// The sampler of `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`; the
    /// specification's default, `parentbased_always_on`, when unset.
    pub fn from_env() -> Result<Self, ExportError> {
        Self::parse(
            std::env::var("OTEL_TRACES_SAMPLER").ok().as_deref(),
            std::env::var("OTEL_TRACES_SAMPLER_ARG").ok().as_deref(),
        )
    }

    /// Parses the two variables' values.
    pub fn parse(sampler: Option<&str>, arg: Option<&str>) -> Result<Self, ExportError> {
        let ratio = || -> Result<f64, ExportError> {
            match arg.map(str::trim).filter(|a| !a.is_empty()) {
                None => Ok(1.0),
                Some(a) => match a.parse::<f64>() {
                    Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                    _ => Err(ExportError::Config(format!(
                        "OTEL_TRACES_SAMPLER_ARG={a} is not a ratio between 0 and 1"
                    ))),
                },
            }
        };
        Ok(
            match sampler
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .unwrap_or("parentbased_always_on")
            {
                "always_on" => Self::AlwaysOn,
                "always_off" => Self::AlwaysOff,
                "traceidratio" => Self::TraceIdRatio(ratio()?),
                "parentbased_always_on" => Self::ParentBased(Root::AlwaysOn),
                "parentbased_always_off" => Self::ParentBased(Root::AlwaysOff),
                "parentbased_traceidratio" => Self::ParentBased(Root::Ratio(ratio()?)),
                other => {
                    return Err(ExportError::Config(format!(
                        "OTEL_TRACES_SAMPLER={other} is not supported (always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio)"
                    )))
                }
            },
        )
    }
}

/// The ratio test of the OpenTelemetry SDKs: the low 63 bits of the trace id's last 8 bytes
/// below `ratio·2⁶³`.
pub fn ratio_keeps(trace_id: TraceId, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let bytes = trace_id.to_bytes();
    let low = u64::from_be_bytes(bytes[8..16].try_into().unwrap_or([0; 8])) >> 1;
    let threshold = (ratio * (1u64 << 63) as f64) as u64;
    low < threshold
}

/// Decides span by span.
#[derive(Debug)]
pub struct Sampler {
    kind: SamplerKind,
    remote_sampled: HashSet<TraceId>,
    order: VecDeque<TraceId>,
}

impl Sampler {
    /// A sampler of `kind`.
    pub fn new(kind: SamplerKind) -> Self {
        Self {
            kind,
            remote_sampled: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// The configured kind.
    pub fn kind(&self) -> SamplerKind {
        self.kind
    }

    /// Whether `span` is kept.
    pub fn sample(&mut self, span: &SpanRecord) -> bool {
        match self.kind {
            SamplerKind::AlwaysOn => true,
            SamplerKind::AlwaysOff => false,
            SamplerKind::TraceIdRatio(r) => ratio_keeps(span.trace_id, r),
            SamplerKind::ParentBased(root) => {
                let has_parent = span.parent_span_id != SpanId::INVALID;
                if has_parent && span.parent_is_remote {
                    if span.sampled {
                        self.remember(span.trace_id);
                    }
                    return span.sampled;
                }
                if has_parent {
                    // A local child: not sampled when its parent was not.
                    if !span.sampled {
                        return false;
                    }
                    if self.remote_sampled.contains(&span.trace_id) {
                        return true;
                    }
                }
                match root {
                    Root::AlwaysOn => true,
                    Root::AlwaysOff => false,
                    Root::Ratio(r) => ratio_keeps(span.trace_id, r),
                }
            }
        }
    }

    fn remember(&mut self, trace: TraceId) {
        if self.remote_sampled.insert(trace) {
            self.order.push_back(trace);
            if self.order.len() > REMEMBERED {
                if let Some(old) = self.order.pop_front() {
                    self.remote_sampled.remove(&old);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_arguments() {
        assert_eq!(
            SamplerKind::parse(None, None).unwrap(),
            SamplerKind::ParentBased(Root::AlwaysOn)
        );
        assert_eq!(
            SamplerKind::parse(Some("parentbased_traceidratio"), Some("0.25")).unwrap(),
            SamplerKind::ParentBased(Root::Ratio(0.25))
        );
        assert_eq!(
            SamplerKind::parse(Some("traceidratio"), None).unwrap(),
            SamplerKind::TraceIdRatio(1.0)
        );
        assert!(SamplerKind::parse(Some("traceidratio"), Some("2")).is_err());
        assert!(SamplerKind::parse(Some("jaeger_remote"), None).is_err());
    }

    #[test]
    fn the_ratio_keeps_its_share_of_random_ids() {
        let n = 100_000;
        let kept = (0..n)
            .filter(|_| ratio_keeps(TraceId::from_bytes(rand::random()), 0.25))
            .count();
        // 3σ of a binomial(100000, 0.25) is about 411.
        assert!((24_589..=25_411).contains(&kept), "{kept}");
        assert!(!ratio_keeps(TraceId::from_bytes([0xff; 16]), 0.5));
        assert!(ratio_keeps(TraceId::from_bytes([0; 16]), 0.000_001));
    }
}
