//! The real OpenTelemetry Collector (built by `cargo xtask test` from the Go module proxy),
//! receiving OTLP over gRPC and HTTP and forwarding OTLP/JSON to a sink in the test, so a test
//! reads exactly what the Collector received.

use super::native::free_port;
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::otlp::{spans_of_request, Span};

/// Path of the Collector binary.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SPANHOOK_OTELCOL") {
        return PathBuf::from(p);
    }
    let dir = super::root().join("target/tools/otelcol");
    std::fs::read_dir(&dir)
        .ok()
        .and_then(|entries| {
            entries.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("otelcol-spanhook-"))
            })
        })
        .unwrap_or_else(|| {
            panic!(
                "the OpenTelemetry Collector is not built in {}; `cargo xtask test` builds it",
                dir.display()
            )
        })
}

/// A running Collector and the sink it forwards to.
pub struct Collector {
    child: Child,
    pub grpc_port: u16,
    pub http_port: u16,
    requests: Arc<Mutex<Vec<serde_json::Value>>>,
    dir: PathBuf,
    log: PathBuf,
}

impl Collector {
    /// Starts a Collector with OTLP gRPC and HTTP receivers on free ports.
    pub fn start() -> Collector {
        let sink = TcpListener::bind("127.0.0.1:0").unwrap();
        let sink_port = sink.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let store = requests.clone();
        std::thread::spawn(move || {
            for conn in sink.incoming() {
                let Ok(conn) = conn else { break };
                let store = store.clone();
                std::thread::spawn(move || serve(conn, store));
            }
        });
        let grpc_port = free_port();
        let http_port = free_port();
        let dir = super::temp_dir(&format!("otelcol-{grpc_port}"));
        let config = dir.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                r#"receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc_port}
      http:
        endpoint: 127.0.0.1:{http_port}
exporters:
  otlphttp:
    endpoint: http://127.0.0.1:{sink_port}
    encoding: json
    compression: none
    retry_on_failure:
      enabled: false
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlphttp]
"#
            ),
        )
        .unwrap();
        let log = dir.join("collector.log");
        let child = Command::new(binary())
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the OpenTelemetry Collector");
        let c = Collector {
            child,
            grpc_port,
            http_port,
            requests,
            dir,
            log,
        };
        c.wait_listening();
        c
    }

    fn wait_listening(&self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            let ok = [self.grpc_port, self.http_port]
                .iter()
                .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the Collector did not start listening:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .flat_map(spans_of_request)
            .collect()
    }

    /// Every OTLP/JSON request the Collector forwarded so far, as received.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits until at least `n` spans arrived (or the timeout); returns them.
    pub fn wait_spans(&self, n: usize, timeout: Duration) -> Vec<Span> {
        let start = Instant::now();
        loop {
            let spans = self.spans();
            if spans.len() >= n || start.elapsed() > timeout {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The Collector's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A minimal HTTP/1.1 server for the Collector's otlphttp exporter: stores each JSON body.
fn serve(conn: TcpStream, store: Arc<Mutex<Vec<serde_json::Value>>>) {
    let mut writer = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if let Ok(v) = serde_json::from_slice(&body) {
            store.lock().unwrap().push(v);
        }
        let reply = b"{}";
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            reply.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(reply).is_err() {
            return;
        }
    }
}
