//! OTLP/JSON lines: one `ExportTraceServiceRequest` per line, the format the OpenTelemetry
//! Collector's file exporter writes, so the same tools read both.

use std::{
    fs::{File, OpenOptions},
    io::{BufWriter, Write},
    path::PathBuf,
};

use futures::future::BoxFuture;

use super::{convert, ExportError, Exporter};
use crate::spans::SpanRecord;

/// Appends spans to a file as OTLP/JSON lines.
pub struct FileExporter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl FileExporter {
    /// Opens (creating if needed) `path` for appending.
    pub fn create(path: PathBuf) -> Result<Self, ExportError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| ExportError::File {
                path: path.clone(),
                source,
            })?;
        Ok(Self {
            path,
            out: BufWriter::new(file),
        })
    }

    fn write(&mut self, spans: &[SpanRecord]) -> Result<(), ExportError> {
        let request = convert::export_request(spans);
        let wrap = |source| ExportError::File {
            path: self.path.clone(),
            source,
        };
        serde_json::to_writer(&mut self.out, &request).map_err(|e| wrap(e.into()))?;
        self.out.write_all(b"\n").map_err(wrap)?;
        // A reader tailing the file sees whole lines, and a crash loses at most one batch.
        self.out.flush().map_err(|source| ExportError::File {
            path: self.path.clone(),
            source,
        })
    }
}

impl Exporter for FileExporter {
    fn name(&self) -> String {
        format!("file:{}", self.path.display())
    }

    fn export<'a>(&'a mut self, spans: &'a [SpanRecord]) -> BoxFuture<'a, Result<(), ExportError>> {
        let result = if spans.is_empty() {
            Ok(())
        } else {
            self.write(spans)
        };
        Box::pin(async move { result })
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<(), ExportError>> {
        let result = self.out.flush().map_err(|source| ExportError::File {
            path: self.path.clone(),
            source,
        });
        Box::pin(async move { result })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        events::tests::server_event,
        spans::{http::server_span, Clock, ProcessResource},
    };
    use std::{path::Path, sync::Arc};

    #[tokio::test]
    async fn writes_one_otlp_json_request_per_line() {
        let dir = std::env::temp_dir().join(format!("spanhook-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("spans.jsonl");
        let _ = std::fs::remove_file(&path);
        let resource = Arc::new(ProcessResource::from_parts(
            4242,
            Path::new("/bin/svc"),
            b"",
            b"",
            None,
            &[],
        ));
        let clock = Clock::with_offset_ns(1_700_000_000_000_000_000);
        let spans = vec![
            server_span(&server_event("GET", "/a", 200), &clock, resource.clone()),
            server_span(&server_event("POST", "/b", 500), &clock, resource),
        ];
        let mut exporter = FileExporter::create(path.clone()).unwrap();
        exporter.export(&spans).await.unwrap();
        exporter.export(&spans[..1]).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        let rs = &v["resourceSpans"][0];
        let service = rs["resource"]["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == "service.name")
            .unwrap();
        assert_eq!(service["value"]["stringValue"], "svc");
        let span = &rs["scopeSpans"][0]["spans"][1];
        assert_eq!(span["name"], "POST");
        assert_eq!(span["kind"], 2, "SPAN_KIND_SERVER");
        assert_eq!(span["traceId"], "07070707070707070707070707070707");
        assert_eq!(span["spanId"], "0808080808080808");
        assert_eq!(span["status"]["code"], 2, "STATUS_CODE_ERROR");
        assert_eq!(rs["scopeSpans"][0]["scope"]["name"], "spanhook");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
