//! OTLP over gRPC or HTTP/protobuf, configured by flags and by the standard
//! `OTEL_EXPORTER_OTLP_*` variables (and their `TRACES_` variants): spans are sent through
//! spanhook's own [`transport`](super::transport) so that only the answers the specification
//! calls retryable are retried, with exponential backoff and jitter, and every span given up
//! on is counted with its reason.

use std::sync::Arc;

use futures::future::BoxFuture;

use super::{
    config::{OtlpSettings, Signal},
    encode::TraceEncoder,
    transport::{send_with_retry, Backoff, OtlpClient, Payload},
    Deadline, ExportError, Exporter,
};
use crate::{
    metrics::{telemetry, Telemetry},
    spans::SpanRecord,
};

/// The OTLP transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (default port 4317).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (default port 4318).
    HttpProtobuf,
}

impl OtlpProtocol {
    /// Parses the values `OTEL_EXPORTER_OTLP_PROTOCOL` takes.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "grpc" => Some(Self::Grpc),
            "http/protobuf" => Some(Self::HttpProtobuf),
            _ => None,
        }
    }

    /// The protocol from `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` or `OTEL_EXPORTER_OTLP_PROTOCOL`;
    /// the specification's default, http/protobuf, when neither is set.
    pub fn from_env() -> Result<Self, ExportError> {
        for var in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Ok(v) = std::env::var(var) {
                return Self::parse(&v).ok_or_else(|| {
                    ExportError::Config(format!(
                        "{var}={v} is not supported (use grpc or http/protobuf)"
                    ))
                });
            }
        }
        Ok(Self::HttpProtobuf)
    }
}

/// Whether the environment asks for OTLP export (an endpoint is set).
pub fn configured_by_env() -> bool {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty()))
}

/// OTLP exporter settings from the command line.
#[derive(Clone, Debug)]
pub struct OtlpConfig {
    /// Base endpoint (as `OTEL_EXPORTER_OTLP_ENDPOINT`); `None` = from the environment.
    pub endpoint: Option<String>,
    /// Transport.
    pub protocol: OtlpProtocol,
}

/// Exports one OTLP request per batch (a `ResourceSpans` per process).
pub struct OtlpExporter {
    client: OtlpClient,
    encoder: TraceEncoder,
    backoff: Backoff,
    deadline: Deadline,
    telemetry: Arc<Telemetry>,
    name: String,
}

impl OtlpExporter {
    /// Builds the exporter; must run inside a tokio runtime.
    pub fn build(config: &OtlpConfig) -> Result<Self, ExportError> {
        let settings = OtlpSettings::from_env(
            Signal::Traces,
            config.endpoint.as_deref(),
            Some(config.protocol),
        )?;
        Self::with_settings(settings, Telemetry::global())
    }

    /// Builds the exporter from resolved settings.
    pub fn with_settings(
        settings: OtlpSettings,
        telemetry: Arc<Telemetry>,
    ) -> Result<Self, ExportError> {
        let proto = match settings.protocol {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        };
        let name = format!("otlp {proto} {}", settings.endpoint);
        Ok(Self {
            client: OtlpClient::build(settings)?,
            encoder: TraceEncoder::new(),
            backoff: backoff_from_env(),
            deadline: Deadline::default(),
            telemetry,
            name,
        })
    }

    /// The resolved settings.
    pub fn settings(&self) -> &OtlpSettings {
        self.client.settings()
    }
}

/// The retry policy, with `SPANHOOK_OTLP_RETRY_MAX_ELAPSED` (seconds, default 30) as the time
/// after which a batch is given up.
fn backoff_from_env() -> Backoff {
    let mut b = Backoff::default();
    if let Some(s) = std::env::var("SPANHOOK_OTLP_RETRY_MAX_ELAPSED")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        b.max_elapsed = std::time::Duration::from_secs_f64(s.max(0.0));
    }
    b
}

/// `base` with `/v1/traces` appended unless it already names that path.
pub fn traces_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    }
}

impl Exporter for OtlpExporter {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn export<'a>(&'a mut self, spans: &'a [SpanRecord]) -> BoxFuture<'a, Result<(), ExportError>> {
        Box::pin(async move {
            let payload =
                Payload::Traces(bytes::Bytes::copy_from_slice(self.encoder.encode(spans)));
            let telemetry = self.telemetry.clone();
            let result = send_with_retry(
                &self.client,
                &payload,
                &self.backoff,
                &self.deadline,
                |e, retried| crate::metrics::count_error(&telemetry, "traces", e, retried),
            )
            .await;
            match result {
                Ok(accepted) => {
                    if accepted.rejected > 0 {
                        // Partial success: the receiver took the request but refused some.
                        let n = (accepted.rejected as u64).min(spans.len() as u64);
                        self.telemetry.add(
                            telemetry::SPANS_DROPPED,
                            &[("exporter", &self.name), ("reason", "partially_rejected")],
                            n,
                        );
                        tracing::warn!(
                            "{}: the receiver rejected {n} spans: {}",
                            self.name,
                            accepted.message
                        );
                    }
                    Ok(())
                }
                Err(f) => Err(ExportError::Dropped {
                    endpoint: self.client.settings().endpoint.clone(),
                    reason: f.reason(),
                    message: f.error().message.clone(),
                }),
            }
        })
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<(), ExportError>> {
        Box::pin(async { Ok(()) })
    }

    fn set_deadline(&mut self, deadline: Deadline) {
        self.deadline = deadline;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_names() {
        assert_eq!(OtlpProtocol::parse("grpc"), Some(OtlpProtocol::Grpc));
        assert_eq!(
            OtlpProtocol::parse("http/protobuf"),
            Some(OtlpProtocol::HttpProtobuf)
        );
        assert_eq!(OtlpProtocol::parse("http/json"), None);
    }

    #[test]
    fn base_endpoints_get_the_traces_path() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }
}
