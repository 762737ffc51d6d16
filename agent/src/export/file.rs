//! OTLP/JSON lines: one `ExportTraceServiceRequest` per line, the format the OpenTelemetry
//! Collector's file exporter writes, so the same tools read both.
//!
//! A batch is written whole or not at all: a write that fails part way (a full disk) is cut
//! back off the file, so the lines already there and the next batch's line stay readable.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::PathBuf,
};

use futures::future::BoxFuture;

use super::{convert, ExportError, Exporter};
use crate::spans::SpanRecord;

/// Appends spans to a file as OTLP/JSON lines.
pub struct FileExporter {
    path: PathBuf,
    file: File,
    /// The line being written, reused between batches.
    line: Vec<u8>,
    /// A failed write left bytes that could not be cut off: the next line starts on a new one.
    torn: bool,
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
            file,
            line: Vec::new(),
            torn: false,
        })
    }

    fn write(&mut self, spans: &[SpanRecord]) -> Result<(), ExportError> {
        let request = convert::export_request(spans);
        self.line.clear();
        if self.torn {
            self.line.push(b'\n');
        }
        serde_json::to_writer(&mut self.line, &request).map_err(|e| ExportError::File {
            path: self.path.clone(),
            source: e.into(),
        })?;
        self.line.push(b'\n');
        // One write per batch (no buffering in between): a reader tailing the file sees whole
        // lines, and a crash loses at most the batch being written.
        let before = self.file.metadata().map(|m| m.len());
        match self.file.write_all(&self.line) {
            Ok(()) => {
                self.torn = false;
                Ok(())
            }
            Err(source) => {
                // Only this exporter appends to the file, so its length before the write is
                // where this batch began.
                self.torn = !matches!(before, Ok(len) if self.file.set_len(len).is_ok());
                Err(ExportError::File {
                    path: self.path.clone(),
                    source,
                })
            }
        }
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
        // Every batch is written when exported; nothing is held back.
        Box::pin(async { Ok(()) })
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

    /// The process `/bin/svc` and a fixed clock.
    fn service() -> (Arc<ProcessResource>, Clock) {
        let resource = Arc::new(ProcessResource::from_parts(
            4242,
            Path::new("/bin/svc"),
            b"",
            b"",
            None,
            &[],
        ));
        (resource, Clock::with_offset_ns(1_700_000_000_000_000_000))
    }

    #[tokio::test]
    async fn writes_one_otlp_json_request_per_line() {
        let dir = std::env::temp_dir().join(format!("spanhook-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("spans.jsonl");
        let _ = std::fs::remove_file(&path);
        let (resource, clock) = service();
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
    /// A small tmpfs mounted for one test, unmounted when dropped.
    struct SmallDisk(std::path::PathBuf);

    impl SmallDisk {
        fn mount(name: &str, size: &str) -> Self {
            use std::ffi::CString;
            let dir = std::env::temp_dir().join(format!("spanhook-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let target = CString::new(dir.to_str().unwrap()).unwrap();
            let options = CString::new(format!("size={size}")).unwrap();
            // SAFETY: every pointer is a NUL-terminated string that outlives the call.
            let rc = unsafe {
                libc::mount(
                    c"tmpfs".as_ptr(),
                    target.as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    options.as_ptr().cast(),
                )
            };
            assert_eq!(
                rc,
                0,
                "mounting a {size} tmpfs on {} to fill it (this test needs root): {}",
                dir.display(),
                std::io::Error::last_os_error()
            );
            Self(dir)
        }
    }

    impl Drop for SmallDisk {
        fn drop(&mut self) {
            let target = std::ffi::CString::new(self.0.to_str().unwrap()).unwrap();
            // SAFETY: a NUL-terminated path that outlives the call.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
            let _ = std::fs::remove_dir(&self.0);
        }
    }

    #[tokio::test]
    async fn a_batch_that_fills_the_disk_leaves_only_whole_lines() {
        let disk = SmallDisk::mount("file-full", "64k");
        let path = disk.0.join("spans.jsonl");
        let (resource, clock) = service();
        let small = vec![server_span(
            &server_event("GET", "/a", 200),
            &clock,
            resource.clone(),
        )];
        let path_of = |i: usize| format!("/items/{i}");
        let big: Vec<SpanRecord> = (0..1000)
            .map(|i| {
                server_span(
                    &server_event("GET", &path_of(i), 200),
                    &clock,
                    resource.clone(),
                )
            })
            .collect();
        let mut exporter = FileExporter::create(path.clone()).unwrap();
        exporter.export(&small).await.unwrap();

        let err = exporter.export(&big).await.unwrap_err();
        match &err {
            ExportError::File { source, .. } => {
                assert_eq!(source.kind(), std::io::ErrorKind::StorageFull, "{err}")
            }
            other => panic!("not a file error: {other}"),
        }
        assert_eq!(err.drop_reason(), "write_failed");
        // The failed batch was cut off, so the next one fits and starts on its own line.
        exporter.export(&small).await.unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text:.200}");
        for line in lines {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(
                v["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|a| a["key"] == "url.path")
                    .unwrap()["value"]["stringValue"],
                "/a"
            );
        }
    }
}
