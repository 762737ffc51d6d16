//! Sending spans out: OTLP (gRPC or HTTP/protobuf), OTLP/JSON lines to a file, and a console
//! tree. Any combination runs at once behind the small [`Exporter`] trait.

pub mod config;
pub mod console;
pub mod convert;
pub mod encode;
pub mod file;
pub mod otlp;
pub mod pipeline;
pub mod sampling;
pub mod transport;

use futures::future::BoxFuture;

use crate::spans::SpanRecord;

pub use pipeline::{Pipeline, PipelineConfig, PipelineStats};

/// When retries must stop: set at shutdown, read by every exporter between attempts.
#[derive(Clone, Debug, Default)]
pub struct Deadline(std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>);

impl Deadline {
    /// Sets the deadline.
    pub fn set(&self, at: std::time::Instant) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
    }

    /// Whether `t` is past the deadline (never when none is set).
    pub fn passed_by(&self, t: std::time::Instant) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|d| t >= d)
    }

    /// Whether the deadline has passed.
    pub fn passed(&self) -> bool {
        self.passed_by(std::time::Instant::now())
    }
}

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
    /// A batch was given up on, for `reason` (`rejected`, `retries_exhausted`, `shutdown`).
    #[error("otlp export to {endpoint} dropped the batch ({reason}): {message}")]
    Dropped {
        /// Where the spans were going.
        endpoint: String,
        /// Why, as the drop counter names it.
        reason: &'static str,
        /// The last error.
        message: String,
    },
}

impl ExportError {
    /// The reason a drop of the batch is counted under.
    pub fn drop_reason(&self) -> &'static str {
        match self {
            ExportError::Dropped { reason, .. } => reason,
            ExportError::File { .. } => "write_failed",
            ExportError::Otlp { .. } | ExportError::Config(_) => "export_failed",
        }
    }
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
    /// Whether `tick` must run while no span waits for export; the pipeline sleeps otherwise.
    fn needs_tick(&self) -> bool {
        false
    }
    /// Hands over the shutdown deadline after which retries stop.
    fn set_deadline(&mut self, _deadline: Deadline) {}
}
