//! OTLP over gRPC or HTTP/protobuf through the opentelemetry-otlp exporter, configured by
//! flags and by the standard `OTEL_EXPORTER_OTLP_*` variables.

use futures::future::BoxFuture;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::SpanExporter as _;

use super::{convert, ExportError, Exporter};
use crate::spans::SpanRecord;

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

/// Exports through opentelemetry-otlp, one request per process per batch so each carries its
/// own resource.
pub struct OtlpExporter {
    inner: opentelemetry_otlp::SpanExporter,
    endpoint: String,
    protocol: OtlpProtocol,
    current_pid: Option<u32>,
}

impl OtlpExporter {
    /// Builds the exporter; must run inside a tokio runtime.
    pub fn build(config: &OtlpConfig) -> Result<Self, ExportError> {
        let shown = config
            .endpoint
            .clone()
            .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").ok())
            .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
            .unwrap_or_else(|| match config.protocol {
                OtlpProtocol::Grpc => "http://localhost:4317".into(),
                OtlpProtocol::HttpProtobuf => "http://localhost:4318".into(),
            });
        let err = |e: opentelemetry_otlp::ExporterBuildError| ExportError::Otlp {
            endpoint: shown.clone(),
            message: e.to_string(),
        };
        let inner = match config.protocol {
            OtlpProtocol::Grpc => {
                let mut b = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_protocol(Protocol::Grpc);
                if let Some(ep) = &config.endpoint {
                    b = b.with_endpoint(ep.clone());
                }
                b.build().map_err(err)?
            }
            OtlpProtocol::HttpProtobuf => {
                let mut b = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary);
                if let Some(ep) = &config.endpoint {
                    // A base endpoint gets the signal path, as OTEL_EXPORTER_OTLP_ENDPOINT does.
                    b = b.with_endpoint(traces_url(ep));
                }
                b.build().map_err(err)?
            }
        };
        Ok(Self {
            inner,
            endpoint: shown,
            protocol: config.protocol,
            current_pid: None,
        })
    }
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
        let proto = match self.protocol {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        };
        format!("otlp {proto} {}", self.endpoint)
    }

    fn export<'a>(&'a mut self, spans: &'a [SpanRecord]) -> BoxFuture<'a, Result<(), ExportError>> {
        Box::pin(async move {
            let scope = convert::scope();
            let mut first_error = None;
            for (resource, group) in convert::by_resource(spans) {
                if self.current_pid != Some(resource.pid) {
                    self.inner.set_resource(&convert::resource(&resource));
                    self.current_pid = Some(resource.pid);
                }
                let batch = group
                    .iter()
                    .map(|s| convert::span_data(s, &scope))
                    .collect();
                if let Err(e) = self.inner.export(batch).await {
                    first_error.get_or_insert(ExportError::Otlp {
                        endpoint: self.endpoint.clone(),
                        message: e.to_string(),
                    });
                }
            }
            first_error.map_or(Ok(()), Err)
        })
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<(), ExportError>> {
        Box::pin(async move {
            self.inner.force_flush().map_err(|e| ExportError::Otlp {
                endpoint: self.endpoint.clone(),
                message: e.to_string(),
            })
        })
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
