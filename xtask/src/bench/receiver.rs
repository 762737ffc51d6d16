//! Where every traced scenario exports: the real OpenTelemetry Collector (OTLP/gRPC in), which
//! forwards OTLP/HTTP protobuf to a sink in this process that counts spans by kind. Counting
//! after the Collector means a span counts only once a real receiver accepted it; counting by
//! kind means agents that emit extra internal spans per request are compared on server spans.

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::process::{self, Proc};

/// OTLP span kind SERVER.
const KIND_SERVER: u64 = 2;

/// Spans received so far.
#[derive(Default)]
pub struct Counts {
    server: AtomicU64,
    all: AtomicU64,
    malformed: AtomicU64,
}

/// A snapshot of [`Counts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Spans {
    /// Spans of kind SERVER.
    pub server: u64,
    /// Spans of every kind.
    pub all: u64,
}

impl std::ops::Sub for Spans {
    type Output = Spans;
    fn sub(self, rhs: Spans) -> Spans {
        Spans {
            server: self.server.saturating_sub(rhs.server),
            all: self.all.saturating_sub(rhs.all),
        }
    }
}

/// The running Collector and sink.
pub struct Receiver {
    _collector: Proc,
    /// The Collector's OTLP/gRPC port.
    pub grpc_port: u16,
    counts: Arc<Counts>,
}

impl Receiver {
    /// Starts the sink and a Collector (binary `otelcol`) with its files in `dir`.
    pub fn start(otelcol: &Path, dir: &Path) -> Result<Receiver> {
        let sink = TcpListener::bind("127.0.0.1:0").context("binding the OTLP sink")?;
        let sink_port = sink.local_addr()?.port();
        let counts = Arc::new(Counts::default());
        let store = counts.clone();
        std::thread::spawn(move || {
            for conn in sink.incoming() {
                let Ok(conn) = conn else { break };
                let store = store.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &store);
                });
            }
        });
        let grpc_port = free_port()?;
        fs::create_dir_all(dir)?;
        let config = dir.join("otelcol.yaml");
        // No sending queue: the receiver answers an agent only once the sink has the spans, so
        // the Collector itself never drops any.
        fs::write(
            &config,
            format!(
                r#"receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc_port}
        max_recv_msg_size_mib: 64
exporters:
  otlphttp:
    endpoint: http://127.0.0.1:{sink_port}
    encoding: proto
    compression: none
    timeout: 30s
    sending_queue:
      enabled: false
    retry_on_failure:
      enabled: false
service:
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlphttp]
"#
            ),
        )?;
        let log = fs::File::create(dir.join("otelcol.log"))?;
        let mut cmd = Command::new(otelcol);
        cmd.arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log);
        let collector = Proc::spawn("the OpenTelemetry Collector", &mut cmd)?;
        let end = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", grpc_port)).is_err() {
            if Instant::now() > end {
                bail!(
                    "the Collector is not listening on {grpc_port} after 30 s; see {}",
                    dir.join("otelcol.log").display()
                );
            }
            process::sleep(Duration::from_millis(50))?;
        }
        Ok(Receiver {
            _collector: collector,
            grpc_port,
            counts,
        })
    }

    /// The OTLP/gRPC endpoint agents export to.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// Spans received so far.
    pub fn spans(&self) -> Spans {
        Spans {
            server: self.counts.server.load(Ordering::SeqCst),
            all: self.counts.all.load(Ordering::SeqCst),
        }
    }

    /// Export requests the sink could not decode (should stay 0).
    pub fn malformed(&self) -> u64 {
        self.counts.malformed.load(Ordering::SeqCst)
    }

    /// Waits until `at_least` server spans arrived since `since`, or until the count stops
    /// moving for `quiet`; returns the spans received since `since`.
    pub fn settle(&self, since: Spans, at_least: u64, quiet: Duration) -> Result<Spans> {
        let mut last = self.spans();
        let mut last_change = Instant::now();
        loop {
            let now = self.spans();
            if (now - since).server >= at_least {
                // Let trailing non-server spans of the same batches land.
                process::sleep(Duration::from_millis(300))?;
                return Ok(self.spans() - since);
            }
            if now != last {
                last = now;
                last_change = Instant::now();
            } else if last_change.elapsed() >= quiet {
                return Ok(now - since);
            }
            process::sleep(Duration::from_millis(100))?;
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Serves one keep-alive HTTP/1.1 connection of OTLP/HTTP protobuf export requests.
fn serve(conn: TcpStream, counts: &Counts) -> Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut writer = conn;
    let mut body = Vec::new();
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
        match count_spans(&body) {
            Some((server, all)) => {
                counts.server.fetch_add(server, Ordering::SeqCst);
                counts.all.fetch_add(all, Ordering::SeqCst);
            }
            None => {
                counts.malformed.fetch_add(1, Ordering::SeqCst);
            }
        }
        writer.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n",
        )?;
    }
}

/// One protobuf field: its number and, for length-delimited fields, the bytes; for varints
/// the value.
enum Field<'a> {
    Varint(u64, u64),
    Bytes(u64, &'a [u8]),
    Other,
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The fields of one protobuf message; `None` at the first malformed field.
fn fields(buf: &[u8]) -> impl Iterator<Item = Option<Field<'_>>> + '_ {
    let mut pos = 0;
    let mut failed = false;
    std::iter::from_fn(move || {
        if pos >= buf.len() || failed {
            return None;
        }
        let field = (|| {
            let key = varint(buf, &mut pos)?;
            let number = key >> 3;
            Some(match key & 7 {
                0 => Field::Varint(number, varint(buf, &mut pos)?),
                1 => {
                    pos = pos.checked_add(8).filter(|&p| p <= buf.len())?;
                    Field::Other
                }
                2 => {
                    let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                    let end = pos.checked_add(len).filter(|&e| e <= buf.len())?;
                    let bytes = &buf[pos..end];
                    pos = end;
                    Field::Bytes(number, bytes)
                }
                5 => {
                    pos = pos.checked_add(4).filter(|&p| p <= buf.len())?;
                    Field::Other
                }
                _ => return None,
            })
        })();
        failed = field.is_none();
        Some(field)
    })
}

/// Counts the spans of an `ExportTraceServiceRequest`: (SERVER spans, all spans).
/// The path is resource_spans (1) → scope_spans (2) → spans (2) → kind (6).
fn count_spans(request: &[u8]) -> Option<(u64, u64)> {
    let (mut server, mut all) = (0, 0);
    for rs in fields(request) {
        let Field::Bytes(1, rs) = rs? else { continue };
        for ss in fields(rs) {
            let Field::Bytes(2, ss) = ss? else { continue };
            for span in fields(ss) {
                let Field::Bytes(2, span) = span? else {
                    continue;
                };
                all += 1;
                for f in fields(span) {
                    if let Field::Varint(6, KIND_SERVER) = f? {
                        server += 1;
                    }
                }
            }
        }
    }
    Some((server, all))
}

/// Where a scenario's files go.
pub fn scratch_dir(name: &str) -> PathBuf {
    crate::target_dir().join("bench").join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(number: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(number << 3 | 2) as u8, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn counts_spans_by_kind() {
        let server_span = [field(1, &[0xaa; 16]), vec![6 << 3, 2]].concat();
        let internal_span = [field(1, &[0xbb; 16]), vec![6 << 3, 1]].concat();
        let scope_spans = [
            field(1, b"scope"),
            field(2, &server_span),
            field(2, &internal_span),
        ]
        .concat();
        let resource_spans = [field(1, b"resource"), field(2, &scope_spans)].concat();
        let request = [field(1, &resource_spans), field(1, &resource_spans)].concat();
        assert_eq!(count_spans(&request), Some((2, 4)));
        assert_eq!(count_spans(&request[..request.len() - 3]), None);
    }
}
