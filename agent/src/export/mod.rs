//! Sending spans out: OTLP (gRPC or HTTP/protobuf), OTLP/JSON lines to a file, and a console
//! tree. Any combination runs at once behind the small [`Exporter`] trait.

pub mod console;
pub mod convert;
pub mod file;
pub mod otlp;
pub mod pipeline;

use futures::future::BoxFuture;

use crate::spans::SpanRecord;

pub use pipeline::{Pipeline, PipelineStats};

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Building or using the OTLP exporter failed.
    #[error("otlp export to {endpoint} failed: {message}")]
    Otlp {
        /// Where the spans were going.
        endpoint: String,
        /// What the exporter reported.
        message: String,
    },
    /// Writing the output file failed.
    #[error("cannot write spans to {path}: {source}")]
    File {
        /// The output file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is not usable.
    #[error("invalid export configuration: {0}")]
    Config(String),
}

/// A destination for finished spans.
pub trait Exporter: Send {
    /// A short name for logs ("otlp-grpc", "file", "console").
    fn name(&self) -> String;
    /// Sends a batch of spans.
    fn export<'a>(&'a mut self, spans: &'a [SpanRecord]) -> BoxFuture<'a, Result<(), ExportError>>;
    /// Sends or prints anything still held back; called at shutdown.
    fn flush(&mut self) -> BoxFuture<'_, Result<(), ExportError>>;
    /// Gives time-based exporters a chance to emit (the console prints finished traces).
    fn tick(&mut self) {}
}
