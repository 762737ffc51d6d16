//! Helpers of the export tests: the real Collector with a traces and a metrics pipeline that
//! can be stopped and started again on the same ports, a fake OTLP/HTTP receiver answering a
//! scripted list of statuses, the agent's span accounting lines, and its RSS.

use super::native::free_port;
use std::{
    collections::VecDeque,
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::otlp::{spans_of_request, Span};

/// One POST the sink or the fake receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP/1.1 server that stores every request and answers with the next scripted status
/// (200 when the script is empty).
#[derive(Clone)]
pub struct Receiver {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<Received>>>,
    pub script: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let r = Receiver {
            port,
            requests: Arc::default(),
            script: Arc::default(),
        };
        let shared = r.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let shared = shared.clone();
                std::thread::spawn(move || shared.serve(conn));
            }
        });
        r
    }

    pub fn push_script(&self, statuses: &[u16]) {
        self.script.lock().unwrap().extend(statuses);
    }

    pub fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }

    fn serve(&self, conn: TcpStream) {
        let mut writer = conn.try_clone().unwrap();
        let mut reader = BufReader::new(conn);
        loop {
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                return;
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string();
            let mut headers = Vec::new();
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
                    headers.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            let status = self.script.lock().unwrap().pop_front().unwrap_or(200);
            self.requests.lock().unwrap().push(Received {
                path,
                headers,
                body,
                at: Instant::now(),
            });
            let (reply, ctype): (&[u8], &str) = if status == 200 {
                (b"", "application/x-protobuf")
            } else {
                (b"scripted failure", "text/plain")
            };
            let reason = match status {
                200 => "OK",
                400 => "Bad Request",
                429 => "Too Many Requests",
                503 => "Service Unavailable",
                _ => "Status",
            };
            let head = format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
                reply.len()
            );
            if writer.write_all(head.as_bytes()).is_err() || writer.write_all(reply).is_err() {
                return;
            }
        }
    }

    /// Spans of every OTLP/JSON body received on /v1/traces.
    pub fn json_spans(&self) -> Vec<Span> {
        self.json_bodies("/v1/traces")
            .iter()
            .flat_map(spans_of_request)
            .collect()
    }

    /// Every OTLP/JSON body received on `path`.
    pub fn json_bodies(&self, path: &str) -> Vec<Value> {
        self.requests()
            .iter()
            .filter(|r| r.path == path)
            .filter_map(|r| serde_json::from_slice(&r.body).ok())
            .collect()
    }
}

/// How the Collector's OTLP receivers listen.
#[derive(Clone, Debug, Default)]
pub struct ReceiverTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Require client certificates signed by this CA.
    pub client_ca: Option<PathBuf>,
}

/// The real Collector: OTLP in (gRPC and HTTP), traces and metrics out as OTLP/JSON to a sink.
pub struct Collector {
    child: Option<Child>,
    pub grpc_port: u16,
    pub http_port: u16,
    pub sink: Receiver,
    config: PathBuf,
    log: PathBuf,
    dir: PathBuf,
}

impl Collector {
    pub fn start() -> Collector {
        Self::start_with(None)
    }

    pub fn start_with(tls: Option<ReceiverTls>) -> Collector {
        let sink = Receiver::start();
        let grpc_port = free_port();
        let http_port = free_port();
        let dir = super::temp_dir(&format!("export-otelcol-{grpc_port}"));
        let tls_block = match &tls {
            None => String::new(),
            Some(t) => {
                let mut s = format!(
                    "\n        tls:\n          cert_file: {}\n          key_file: {}",
                    t.cert.display(),
                    t.key.display()
                );
                if let Some(ca) = &t.client_ca {
                    s.push_str(&format!("\n          client_ca_file: {}", ca.display()));
                }
                s
            }
        };
        let config = dir.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                r#"receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc_port}{tls_block}
      http:
        endpoint: 127.0.0.1:{http_port}{tls_block}
exporters:
  otlphttp:
    endpoint: http://127.0.0.1:{sink}
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
    metrics:
      receivers: [otlp]
      exporters: [otlphttp]
"#,
                sink = sink.port
            ),
        )
        .unwrap();
        let log = dir.join("collector.log");
        let mut c = Collector {
            child: None,
            grpc_port,
            http_port,
            sink,
            config,
            log,
            dir,
        };
        c.resume();
        c
    }

    /// Starts the Collector process (again) on the same ports.
    pub fn resume(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new(super::collector::binary())
            .arg("--config")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log)
                    .unwrap(),
            )
            .spawn()
            .expect("start the OpenTelemetry Collector");
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            let ok = [self.grpc_port, self.http_port]
                .iter()
                .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the Collector did not start listening:\n{}", self.log());
    }

    /// Stops the Collector with SIGTERM (it drains its own queue to the sink) and waits.
    pub fn pause(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                if child.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn spans(&self) -> Vec<Span> {
        self.sink.json_spans()
    }

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

    /// Every metrics request the Collector forwarded.
    pub fn metrics_requests(&self) -> Vec<Value> {
        self.sink.json_bodies("/v1/metrics")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One exporter's line: name, exported, dropped, and drops by reason.
pub type ExporterAccounting = (String, u64, u64, Vec<(String, u64)>);

/// The numbers of the agent's "span accounting" lines at exit.
#[derive(Clone, Debug, Default)]
pub struct Accounting {
    pub seen: u64,
    pub unsampled: u64,
    pub queue_full: u64,
    pub queued: u64,
    /// Per exporter: exported, dropped, and drops by reason.
    pub exporters: Vec<ExporterAccounting>,
}

fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
}

/// Parses the accounting lines of the agent's stderr.
pub fn accounting(stderr: &str) -> Accounting {
    let mut a = Accounting::default();
    for line in stderr.lines().filter(|l| l.contains("span accounting:")) {
        if line.contains("exporter=\"") {
            let name = line
                .split("exporter=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_string();
            let tail = line.split("dropped=").nth(1).unwrap_or("");
            let reasons = tail
                .split_whitespace()
                .skip(1)
                .filter_map(|w| {
                    let (k, v) = w.split_once('=')?;
                    Some((k.to_string(), v.parse().ok()?))
                })
                .collect();
            a.exporters.push((
                name,
                field(line, "exported").unwrap_or(0),
                field(line, "dropped").unwrap_or(0),
                reasons,
            ));
        } else {
            a.seen = field(line, "seen").expect("seen=");
            a.unsampled = field(line, "unsampled").unwrap_or(0);
            a.queue_full = field(line, "queue_full").unwrap_or(0);
            a.queued = field(line, "queued").unwrap_or(0);
        }
    }
    a
}

/// Resident set size of `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Kernel counter `name` from the agent's "probe counters:" line (0 when absent).
pub fn probe_counter(stderr: &str, name: &str) -> u64 {
    stderr
        .lines()
        .filter(|l| l.contains("probe counters:"))
        .flat_map(|l| l.split([' ', ',']))
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A self-signed CA and the server and client certificates it signed, made with the `openssl`
/// command (EC P-256 keys in PKCS#8 PEM).
#[derive(Clone, Debug)]
pub struct Certs {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A certificate and key signed by another CA, which the server does not trust.
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (apt: openssl)");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Certs {
    /// Generates everything into `dir`; the server certificate names 127.0.0.1 and localhost.
    pub fn generate(dir: &std::path::Path) -> Certs {
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let ca = |name: &str, cn: &str| {
            let mut args = vec!["req", "-x509"];
            args.extend(ec);
            let (key, pem, subj) = (
                format!("{name}.key"),
                format!("{name}.pem"),
                format!("/CN={cn}"),
            );
            args.extend([
                "-keyout",
                &key,
                "-out",
                &pem,
                "-days",
                "2",
                "-subj",
                &subj,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
            openssl(dir, &args);
        };
        ca("ca", "spanhook test CA");
        ca("other-ca", "spanhook untrusted CA");
        let leaf = |name: &str, ca: &str, cn: &str, ext: &str| {
            std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
            let (key, csr, pem, subj) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("/CN={cn}"),
            );
            let mut args = vec!["req"];
            args.extend(ec);
            args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
            openssl(dir, &args);
            let (ca_pem, ca_key, extfile) = (
                format!("{ca}.pem"),
                format!("{ca}.key"),
                format!("{name}.ext"),
            );
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    &ca_pem,
                    "-CAkey",
                    &ca_key,
                    "-set_serial",
                    "0x5ea1",
                    "-out",
                    &pem,
                    "-days",
                    "2",
                    "-extfile",
                    &extfile,
                ],
            );
        };
        leaf(
            "server",
            "ca",
            "127.0.0.1",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n",
        );
        let client_ext =
            "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n";
        leaf("client", "ca", "spanhook agent", client_ext);
        leaf("stranger", "other-ca", "someone else", client_ext);
        Certs {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            stranger_cert: dir.join("stranger.pem"),
            stranger_key: dir.join("stranger.key"),
        }
    }
}

/// One histogram data point of an OTLP/JSON metrics request.
#[derive(Clone, Debug)]
pub struct HistPoint {
    /// The metric's name.
    pub metric: String,
    /// Attributes, values as text (`intValue`s and `boolValue`s too).
    pub attrs: std::collections::BTreeMap<String, String>,
    /// The resource's `process.pid`.
    pub pid: Option<i64>,
    pub count: u64,
    pub sum: f64,
    pub buckets: Vec<u64>,
    pub bounds: Vec<f64>,
    pub time_ns: u64,
}

fn json_u64(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

fn json_text(v: &Value) -> String {
    for k in ["stringValue", "intValue", "boolValue", "doubleValue"] {
        if let Some(x) = v.get(k) {
            return match x {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
        }
    }
    String::new()
}

fn json_attrs(list: &Value) -> std::collections::BTreeMap<String, String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|kv| Some((kv["key"].as_str()?.to_string(), json_text(&kv["value"]))))
        .collect()
}

/// Every histogram data point in `requests` (OTLP/JSON `ExportMetricsServiceRequest`s).
pub fn histogram_points(requests: &[Value]) -> Vec<HistPoint> {
    let mut out = Vec::new();
    for r in requests {
        for rm in r["resourceMetrics"].as_array().into_iter().flatten() {
            let resource = json_attrs(&rm["resource"]["attributes"]);
            let pid = resource.get("process.pid").and_then(|p| p.parse().ok());
            for sm in rm["scopeMetrics"].as_array().into_iter().flatten() {
                for m in sm["metrics"].as_array().into_iter().flatten() {
                    let name = m["name"].as_str().unwrap_or("").to_string();
                    for dp in m["histogram"]["dataPoints"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        out.push(HistPoint {
                            metric: name.clone(),
                            attrs: json_attrs(&dp["attributes"]),
                            pid,
                            count: json_u64(&dp["count"]),
                            sum: dp["sum"].as_f64().unwrap_or(0.0),
                            buckets: dp["bucketCounts"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .map(json_u64)
                                .collect(),
                            bounds: dp["explicitBounds"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(Value::as_f64)
                                .collect(),
                            time_ns: json_u64(&dp["timeUnixNano"]),
                        });
                    }
                }
            }
        }
    }
    out
}

/// The newest point of each series (cumulative temporality: the totals so far).
pub fn latest_points(points: Vec<HistPoint>) -> Vec<HistPoint> {
    let mut latest: std::collections::BTreeMap<String, HistPoint> = Default::default();
    for p in points {
        let key = format!("{}|{:?}|{:?}", p.metric, p.pid, p.attrs);
        match latest.get(&key) {
            Some(old) if (old.time_ns, old.count) >= (p.time_ns, p.count) => {}
            _ => {
                latest.insert(key, p);
            }
        }
    }
    latest.into_values().collect()
}

/// Every sum and gauge data point value of metric `name` in `requests`, with its attributes.
pub fn number_points(
    requests: &[Value],
    name: &str,
) -> Vec<(std::collections::BTreeMap<String, String>, u64)> {
    let mut out = Vec::new();
    for r in requests {
        for rm in r["resourceMetrics"].as_array().into_iter().flatten() {
            for sm in rm["scopeMetrics"].as_array().into_iter().flatten() {
                for m in sm["metrics"].as_array().into_iter().flatten() {
                    if m["name"].as_str() != Some(name) {
                        continue;
                    }
                    for kind in ["sum", "gauge"] {
                        for dp in m[kind]["dataPoints"].as_array().into_iter().flatten() {
                            out.push((json_attrs(&dp["attributes"]), json_u64(&dp["asInt"])));
                        }
                    }
                }
            }
        }
    }
    out
}

/// `GET /metrics` from the agent's Prometheus endpoint: status line and body.
pub fn scrape(addr: &str) -> (String, String) {
    let mut conn = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
    (head.to_string(), body.to_string())
}

/// One sample as Prometheus's own Python client parses it.
#[derive(Clone, Debug)]
pub struct PromSample {
    /// The family's name and type as the parser saw them.
    pub family: String,
    pub family_type: String,
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the text exposition format with `prometheus_client.parser` (Debian's
/// python3-prometheus-client, installed by `cargo xtask setup`); a text it refuses fails the
/// test with the parser's error.
pub fn parse_prometheus(text: &str) -> Vec<PromSample> {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append({"family": fam.name, "type": fam.type, "name": s.name,
                    "labels": s.labels, "value": s.value})
json.dump(out, sys.stdout)
"#;
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run /usr/bin/python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the text ({}):\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| PromSample {
            family: s["family"].as_str().unwrap().to_string(),
            family_type: s["type"].as_str().unwrap().to_string(),
            name: s["name"].as_str().unwrap().to_string(),
            labels: s["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect(),
            value: s["value"].as_f64().unwrap_or(f64::NAN),
        })
        .collect()
}

/// Whether a TCP socket listens on `port` at 127.0.0.1 only (from /proc/net/tcp and tcp6).
pub fn listens_on_loopback_only(port: u16) -> bool {
    let hex = format!(":{port:04X}");
    let mut addrs = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address, state 0A = LISTEN
            if cols.len() > 3 && cols[1].ends_with(&hex) && cols[3] == "0A" {
                addrs.push(cols[1].to_string());
            }
        }
    }
    !addrs.is_empty() && addrs.iter().all(|a| a == &format!("0100007F{hex}"))
}
