//! `cargo xtask soak`: the promise that a traced program behaves exactly as it would without
//! the agent, checked over a long run.
//!
//! Starts the Go release matrix (`httpserver`, stripped, one per Go release, plus the newest
//! release's PIE and cgo builds), Go `httpchain` and the Rust `httpchain` builds (default
//! release, fat LTO, the oldest dependency set, and a stripped build traced at socket level),
//! all on loopback. One deterministic request sequence — direct requests, Go → Rust, Rust → Go
//! and Go → Rust → Go call chains, binary POST bodies echoed through a second service, 404,
//! 500 and 503 answers — is sent twice over the same processes: first with no agent, then with
//! `spanhook attach` on every process with every probe and `--propagate`. Every response of
//! the second pass is compared byte for byte with the same request's response in the first
//! (the `Date` header's value is the only thing masked). Spans arrive through a FIFO as OTLP/JSON
//! lines and are counted as they come, so a long run needs no disk.
//!
//! Reported: target crashes (a process that exited), changed responses, failed requests,
//! spans ÷ requests and spans ÷ the spans the requests should produce, calls whose downstream
//! server span joined the caller's trace (propagation), the agent's counters, CPU and memory.
//! The result is written to `SOAK.md`.

use std::{
    collections::HashMap,
    fmt::Write as _,
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};

use crate::{fixtures, setup};

/// Options.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Requests per pass (the same sequence is sent without and with the agent).
    #[arg(long, default_value_t = 1_000_000)]
    pub requests: u64,
    /// Bound on both passes together, in seconds: the pass without the agent gets 40 % of it,
    /// and the traced pass sends as many of the same requests as it can in the rest.
    #[arg(long, default_value_t = 1200)]
    pub seconds: u64,
    /// Client connections (each a thread with keep-alive connections to every service).
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Where the report goes.
    #[arg(long, default_value = "SOAK.md")]
    pub report: PathBuf,
}

/// Which program a service runs (decides the requests it gets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Go `httpserver`.
    GoServer,
    /// Go `httpchain`.
    GoChain,
    /// Rust `httpchain`.
    RustChain,
}

/// A fixture to run.
#[derive(Clone, Debug)]
struct ServiceSpec {
    /// `service.name`, e.g. `go1.22.12-stripped`.
    name: String,
    kind: Kind,
    binary: PathBuf,
    /// Traced at socket level (no propagation from it).
    socket_level: bool,
}

/// A running service.
struct Service {
    spec: ServiceSpec,
    child: Child,
    port: u16,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request of the sequence and what it should produce when traced.
#[derive(Clone, Debug)]
struct Request {
    /// Index of the service it is sent to.
    service: usize,
    method: &'static str,
    path: String,
    body: Vec<u8>,
    /// Services the request reaches, in order (the first is `service`).
    servers: Vec<usize>,
    /// Calls made on the way: (caller, callee).
    calls: Vec<(usize, usize)>,
}

fn body_for(i: u64) -> Vec<u8> {
    // Bytes that look like HTTP and trace context, to check they pass untouched.
    let mut b = Vec::with_capacity(300);
    for k in 0..256u32 {
        b.push((k as u8).wrapping_mul(31).wrapping_add(i as u8));
        if k % 64 == 0 {
            b.extend_from_slice(b"\r\n\r\ntraceparent: 00-zz\r\nGET / HTTP/1.1\r\n");
        }
    }
    b.extend_from_slice(i.to_string().as_bytes());
    b
}

/// The deterministic sequence: request `i` depends on `i` and the set of services only.
fn request(i: u64, services: &[ServiceSpec]) -> Request {
    let n = services.len();
    let of = |k: Kind| -> Vec<usize> { (0..n).filter(|&s| services[s].kind == k).collect() };
    let (go_chain, rust) = (of(Kind::GoChain), of(Kind::RustChain));
    let s = (i % n as u64) as usize;
    let variant = (i / n as u64) % 5;
    let pick = |list: &[usize], salt: u64| list[((i / 7 + salt) % list.len() as u64) as usize];
    let url = |t: usize| format!("http://127.0.0.1:{{port{t}}}");
    let mut r = Request {
        service: s,
        method: "GET",
        path: String::new(),
        body: Vec::new(),
        servers: vec![s],
        calls: Vec::new(),
    };
    match services[s].kind {
        Kind::GoServer => match variant {
            0 => r.path = format!("/items/{i}"),
            1 => {
                let t = pick(&rust, 0);
                r.path = format!("/call?url={}/leaf/{i}", url(t));
                r.servers.push(t);
                r.calls.push((s, t));
            }
            2 => {
                let t = pick(&go_chain, 1);
                r.path = format!("/call?url={}/leaf/{i}", url(t));
                r.servers.push(t);
                r.calls.push((s, t));
            }
            3 => {
                r.method = "POST";
                r.path = "/echo".into();
                r.body = body_for(i);
            }
            _ => {
                r.path = if i.is_multiple_of(2) {
                    "/error"
                } else {
                    "/missing"
                }
                .into()
            }
        },
        Kind::GoChain => match variant {
            0 | 4 => {
                let t = pick(&rust, 2);
                r.path = format!("/chain/{i}?next={}", url(t));
                r.servers.push(t);
                r.calls.push((s, t));
            }
            1 => {
                let t = pick(&rust, 3);
                r.path = format!("/post/{i}?next={}", url(t));
                r.servers.push(t);
                r.calls.push((s, t));
            }
            2 => r.path = format!("/leaf/{i}"),
            _ => {
                // Go → Rust → Go.
                let t = pick(&rust, 4);
                let u = pick(&go_chain, 5);
                r.path = format!("/chain/{i}?next={},{}", url(t), url(u));
                r.servers.extend([t, u]);
                r.calls.extend([(s, t), (t, u)]);
            }
        },
        Kind::RustChain => match variant {
            0 => r.path = format!("/leaf/{i}"),
            1 | 4 => {
                let t = pick(&go_chain, 6);
                r.path = format!("/chain/{i}?next={}", url(t));
                r.servers.push(t);
                r.calls.push((s, t));
            }
            2 => {
                let t = pick(&go_chain, 7);
                r.path = format!("/direct/{i}?next={}", url(t));
                r.servers.push(t);
                r.calls.push((s, t));
            }
            _ => r.path = "/status/503".into(),
        },
    }
    r
}

/// Replaces the `{portN}` placeholders with the services' ports.
fn resolve(path: &str, ports: &[u16]) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = rest.find("{port") {
        out.push_str(&rest[..at]);
        let end = rest[at..].find('}').map(|e| at + e).unwrap_or(rest.len());
        let k: usize = rest[at + 5..end].parse().unwrap_or(0);
        out.push_str(&ports[k].to_string());
        rest = &rest[(end + 1).min(rest.len())..];
    }
    out.push_str(rest);
    out
}

/// The responses of one pass, by request index.
struct Responses {
    /// Per worker: the normalised responses of its requests, in order, end to end.
    data: Vec<Vec<u8>>,
    /// Per worker: the end offset of each response in `data`.
    ends: Vec<Vec<usize>>,
}

impl Responses {
    fn get(&self, i: u64, workers: usize) -> Option<&[u8]> {
        let w = (i % workers as u64) as usize;
        let j = (i / workers as u64) as usize;
        let ends = &self.ends[w];
        let end = *ends.get(j)?;
        let start = if j == 0 { 0 } else { ends[j - 1] };
        Some(&self.data[w][start..end])
    }
}

/// Masks the value of the `Date` header, the one part of a response that changes by itself.
fn normalise(response: &[u8]) -> Vec<u8> {
    let head_end = find(response, b"\r\n\r\n").map_or(response.len(), |p| p + 4);
    let (head, body) = response.split_at(head_end);
    let mut out = Vec::with_capacity(response.len());
    for line in head.split_inclusive(|&b| b == b'\n') {
        if line.len() > 5 && line[..5].eq_ignore_ascii_case(b"date:") {
            out.extend_from_slice(b"Date: *\r\n");
        } else {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(body);
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A keep-alive HTTP/1.1 client to one service.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(port: u16) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends one request; returns the whole response and whether the connection stays open.
    fn exchange(&mut self, head: &[u8], body: &[u8]) -> std::io::Result<(Vec<u8>, bool)> {
        self.stream.write_all(head)?;
        if !body.is_empty() {
            self.stream.write_all(body)?;
        }
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p + 4;
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head_text = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        let header = |name: &str| {
            head_text
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        let keep = header("connection:").is_none_or(|v| v != "close");
        let total = if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
            // Read until the last chunk; the body is kept as sent (chunk framing included).
            loop {
                if let Some(p) = find(&self.buf[head_end..], b"0\r\n\r\n") {
                    let at = head_end + p;
                    if at == head_end || self.buf[at - 1] == b'\n' {
                        break at + 5;
                    }
                }
                let n = self.stream.read(&mut chunk)?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
        } else {
            let len: usize = header("content-length:")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while self.buf.len() < head_end + len {
                let n = self.stream.read(&mut chunk)?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
            head_end + len
        };
        let response: Vec<u8> = self.buf.drain(..total).collect();
        Ok((response, keep))
    }
}

/// What one pass did.
struct Pass {
    sent: u64,
    failed: u64,
    elapsed: Duration,
    responses: Option<Responses>,
    changed: u64,
    /// The first few differences, for the report.
    diffs: Vec<String>,
}

/// Sends requests `0..count` (or until `deadline`), `workers` at a time. With `baseline`, each
/// response is compared with the baseline's; otherwise responses are kept.
fn drive(
    sequence: &[Request],
    ports: &[u16],
    workers: usize,
    deadline: Instant,
    baseline: Option<&Responses>,
    progress: &str,
) -> Pass {
    let count = sequence.len() as u64;
    let started = Instant::now();
    let done = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let changed = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let diffs = Mutex::new(Vec::new());
    let mut data = Vec::new();
    let mut ends = Vec::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (done, failed, changed, stop, diffs) =
                    (&done, &failed, &changed, &stop, &diffs);
                scope.spawn(move || {
                    let mut conns: HashMap<usize, Conn> = HashMap::new();
                    let mut data = Vec::new();
                    let mut ends = Vec::new();
                    let mut i = w as u64;
                    while i < count {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let r = &sequence[i as usize];
                        let path = resolve(&r.path, ports);
                        let mut head = format!(
                            "{} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-Request-Id: soak-{i}\r\n",
                            r.method, ports[r.service]
                        );
                        if !r.body.is_empty() {
                            let _ = write!(
                                head,
                                "Content-Type: application/octet-stream\r\nContent-Length: {}\r\n",
                                r.body.len()
                            );
                        }
                        head.push_str("\r\n");
                        let mut result = None;
                        // A connection the server closed while idle is reopened once.
                        for _ in 0..2 {
                            let conn = match conns.entry(r.service) {
                                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                                std::collections::hash_map::Entry::Vacant(e) => {
                                    match Conn::open(ports[r.service]) {
                                        Ok(c) => e.insert(c),
                                        Err(_) => continue,
                                    }
                                }
                            };
                            match conn.exchange(head.as_bytes(), &r.body) {
                                Ok((resp, keep)) => {
                                    if !keep {
                                        conns.remove(&r.service);
                                    }
                                    result = Some(resp);
                                    break;
                                }
                                Err(_) => {
                                    conns.remove(&r.service);
                                }
                            }
                        }
                        let response = match result {
                            Some(resp) => normalise(&resp),
                            None => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                b"(request failed)".to_vec()
                            }
                        };
                        match baseline {
                            Some(base) => {
                                let expected = base.get(i, workers);
                                if expected != Some(&response[..]) {
                                    changed.fetch_add(1, Ordering::Relaxed);
                                    let mut d = diffs.lock().unwrap();
                                    if d.len() < 5 {
                                        d.push(format!(
                                            "request {i} `{} {path}`: expected {:?}, got {:?}",
                                            r.method,
                                            expected.map(String::from_utf8_lossy),
                                            String::from_utf8_lossy(&response)
                                        ));
                                    }
                                }
                            }
                            None => {
                                data.extend_from_slice(&response);
                                ends.push(data.len());
                            }
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                        i += workers as u64;
                    }
                    (data, ends)
                })
            })
            .collect();
        let mut last = Instant::now();
        while !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(200));
            if Instant::now() >= deadline {
                stop.store(true, Ordering::Relaxed);
            }
            if last.elapsed() >= Duration::from_secs(30) {
                last = Instant::now();
                let n = done.load(Ordering::Relaxed);
                eprintln!(
                    "soak: {progress}: {n} of {count} requests, {:.0}/s, {} failed, {} changed",
                    n as f64 / started.elapsed().as_secs_f64(),
                    failed.load(Ordering::Relaxed),
                    changed.load(Ordering::Relaxed)
                );
            }
        }
        for h in handles {
            let (d, e) = h.join().expect("client thread");
            data.push(d);
            ends.push(e);
        }
    });
    // A pass cut short by the deadline counts the requests up to the first one a worker did
    // not send, so both passes cover the same prefix.
    let complete_prefix = ends
        .iter()
        .enumerate()
        .map(|(w, e)| e.len() as u64 * workers as u64 + w as u64)
        .min()
        .unwrap_or(0)
        .min(count);
    Pass {
        sent: if baseline.is_some() {
            done.load(Ordering::Relaxed)
        } else {
            complete_prefix
        },
        failed: failed.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        responses: baseline.is_none().then_some(Responses { data, ends }),
        changed: changed.load(Ordering::Relaxed),
        diffs: diffs.into_inner().unwrap(),
    }
}

/// What the spans that came through the FIFO say.
#[derive(Default, Debug)]
struct SpanCount {
    lines: u64,
    spans: u64,
    server: u64,
    client: u64,
    /// Server spans with a parent: joined a caller's trace (the soak's own requests carry no
    /// `traceparent`, so only propagation gives a server span a parent).
    server_with_parent: u64,
    errors: u64,
    undecodable: u64,
    /// By `service.name`: (server, client).
    by_service: HashMap<String, (u64, u64)>,
}

/// Counts the spans of one OTLP/JSON line by scanning for the fields it needs, in document
/// order (a full parse is several times slower, and the reader must keep up with the agent).
/// JSON escapes quotes inside strings, so a marker cannot match inside a value.
fn count_spans(line: &str, c: &mut SpanCount) {
    const SERVICE: &str = "\"key\":\"service.name\",\"value\":{\"stringValue\":\"";
    const PARENT: &str = "\"parentSpanId\":\"";
    const KIND: &str = "\"kind\":";
    const STATUS: &str = "\"status\":{";
    c.lines += 1;
    let line = line.trim_end();
    if !(line.starts_with("{\"resourceSpans\":") && line.ends_with('}')) {
        c.undecodable += 1;
        return;
    }
    let mut marks: Vec<(usize, &str)> = Vec::new();
    for m in [SERVICE, PARENT, KIND, STATUS] {
        marks.extend(line.match_indices(m).map(|(at, _)| (at + m.len(), m)));
    }
    marks.sort_unstable();
    let mut service = "?";
    let mut has_parent = false;
    for (at, m) in marks {
        let rest = &line[at..];
        match m {
            SERVICE => service = &rest[..rest.find('"').unwrap_or(0)],
            PARENT => has_parent = !rest.starts_with('"'),
            KIND => {
                c.spans += 1;
                let entry = c.by_service.entry(service.to_string()).or_default();
                match rest.as_bytes().first() {
                    Some(b'2') => {
                        c.server += 1;
                        entry.0 += 1;
                        if has_parent {
                            c.server_with_parent += 1;
                        }
                    }
                    Some(b'3') => {
                        c.client += 1;
                        entry.1 += 1;
                    }
                    _ => {}
                }
                has_parent = false;
            }
            _ => {
                let code = rest
                    .find('}')
                    .map(|end| &rest[..end])
                    .and_then(|status| status.split("\"code\":").nth(1));
                if code.is_some_and(|v| v.trim() == "2") {
                    c.errors += 1;
                }
            }
        }
    }
}

fn start(spec: &ServiceSpec) -> Result<Service> {
    let mut child = Command::new(&spec.binary)
        .args(["-addr", "127.0.0.1:0"])
        .env("OTEL_SERVICE_NAME", &spec.name)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", spec.binary.display()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .with_context(|| format!("{} did not report its port: {line:?}", spec.name))?;
    Ok(Service {
        spec: spec.clone(),
        child,
        port,
    })
}

/// The fixtures: built (cached) when missing.
fn services() -> Result<Vec<ServiceSpec>> {
    let tools = setup::run()?;
    let newest = fixtures::GO_RELEASES.last().unwrap().to_string();
    let mut out = Vec::new();
    let go = fixtures::build(
        &tools,
        &fixtures::Args {
            go: Vec::new(),
            variant: vec!["stripped".into(), "pie".into(), "cgo".into()],
            program: vec!["httpserver".into(), "httpchain".into()],
        },
    )?;
    for b in &go {
        let variant = b
            .path
            .parent()
            .and_then(Path::file_name)
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_default();
        let kind = match b.program.as_str() {
            "httpserver" if variant == "stripped" || b.go == newest => Kind::GoServer,
            "httpchain" if variant == "stripped" && b.go == newest => Kind::GoChain,
            _ => continue,
        };
        let prefix = if kind == Kind::GoChain { "chain-" } else { "" };
        out.push(ServiceSpec {
            name: format!("{prefix}go{}-{variant}", b.go),
            kind,
            binary: b.path.clone(),
            socket_level: false,
        });
    }
    // The Rust builds `cargo xtask fixtures` made (the manifest: program, set, profile,
    // path); the default release build is made here when there is none.
    let manifest = fixtures::out_dir().join("rust/manifest.tsv");
    let text = std::fs::read_to_string(&manifest).unwrap_or_default();
    for row in text.lines().filter(|l| !l.starts_with('#')) {
        let c: Vec<&str> = row.split('\t').collect();
        let [program, set, profile, path] = c[..] else {
            continue;
        };
        let wanted = matches!(
            (set, profile),
            ("newest", "release")
                | ("newest", "lto")
                | ("newest", "stripped")
                | ("oldest", "release")
        );
        if program == "httpchain" && wanted && Path::new(path).is_file() {
            out.push(ServiceSpec {
                name: format!("rust-{set}-{profile}"),
                kind: Kind::RustChain,
                binary: PathBuf::from(path),
                socket_level: profile == "stripped",
            });
        }
    }
    if !out.iter().any(|s| s.kind == Kind::RustChain) {
        out.push(ServiceSpec {
            name: "rust-newest-release".into(),
            kind: Kind::RustChain,
            binary: crate::fixtures_rust::build_release("httpchain")?,
            socket_level: false,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    for k in [Kind::GoServer, Kind::GoChain, Kind::RustChain] {
        ensure!(
            out.iter().any(|s| s.kind == k),
            "no {k:?} fixture was built; run `cargo xtask fixtures`"
        );
    }
    Ok(out)
}

/// CPU seconds and resident memory of a process.
fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&k| fields.get(k)?.parse::<f64>().ok())
        .sum();
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (ticks / hz, rss)
}

/// Runs the soak.
pub fn run(args: &Args) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the soak attaches eBPF probes to live processes: run `cargo xtask soak` as root");
    }
    ensure!(args.connections > 0, "--connections must be at least 1");
    let specs = services()?;
    eprintln!("soak: building spanhook (release)");
    let spanhook = crate::release_agent()?;

    let mut running = Vec::new();
    for spec in &specs {
        running.push(start(spec)?);
    }
    let ports: Vec<u16> = running.iter().map(|s| s.port).collect();
    eprintln!(
        "soak: {} services: {}",
        running.len(),
        specs
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let sequence: Vec<Request> = (0..args.requests).map(|i| request(i, &specs)).collect();

    let soak_started = Instant::now();
    let budget = Duration::from_secs(args.seconds);
    eprintln!("soak: pass 1 of 2, without the agent");
    let base = drive(
        &sequence,
        &ports,
        args.connections,
        soak_started + budget.mul_f64(0.4),
        None,
        "without the agent",
    );
    let baseline = base.responses.as_ref().expect("kept");
    let covered = base.sent as usize;
    eprintln!(
        "soak: {} requests in {:.0} s without the agent ({} failed)",
        base.sent,
        base.elapsed.as_secs_f64(),
        base.failed
    );

    // Spans come through a FIFO, counted as they arrive.
    let dir = std::env::temp_dir().join(format!("spanhook-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let fifo = dir.join("spans.fifo");
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes())?;
    // SAFETY: a valid NUL-terminated path.
    ensure!(
        unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } == 0,
        "mkfifo {}: {}",
        fifo.display(),
        std::io::Error::last_os_error()
    );
    let reader_path = fifo.clone();
    let counter = std::thread::spawn(move || -> Result<SpanCount> {
        let file = std::fs::File::open(&reader_path)?;
        let mut c = SpanCount::default();
        for line in BufReader::new(file).lines() {
            count_spans(&line?, &mut c);
        }
        Ok(c)
    });

    let mut attach = Command::new(&spanhook);
    attach.arg("attach");
    for s in &running {
        attach.args(["--pid", &s.child.id().to_string()]);
    }
    attach
        .args(["--propagate", "--output-file"])
        .arg(&fifo)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut agent = attach.spawn().context("starting spanhook")?;
    let agent_pid = agent.id();
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let attached = Arc::new(AtomicBool::new(false));
    {
        let (log, attached) = (log.clone(), attached.clone());
        let stderr = agent.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("exporting to") {
                    attached.store(true, Ordering::SeqCst);
                }
                log.lock().unwrap().push(line);
            }
        });
    }
    let wait_started = Instant::now();
    while !attached.load(Ordering::SeqCst) {
        if let Some(status) = agent.try_wait()? {
            bail!(
                "spanhook exited with {status} before attaching:\n{}",
                log.lock().unwrap().join("\n")
            );
        }
        ensure!(
            wait_started.elapsed() < Duration::from_secs(120),
            "spanhook did not attach in 120 s:\n{}",
            log.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let attach_secs = wait_started.elapsed().as_secs_f64();
    let (cpu_before, rss_before) = usage(agent_pid);
    eprintln!(
        "soak: attached to {} processes in {attach_secs:.1} s; pass 2 of 2, traced",
        running.len()
    );
    let traced = drive(
        &sequence[..covered],
        &ports,
        args.connections,
        soak_started + budget,
        Some(baseline),
        "traced",
    );
    let (cpu_after, rss_after) = usage(agent_pid);
    eprintln!(
        "soak: {} requests in {:.0} s traced ({} failed, {} changed)",
        traced.sent,
        traced.elapsed.as_secs_f64(),
        traced.failed,
        traced.changed
    );
    // Crashes: any service that is no longer running.
    let mut crashed = Vec::new();
    for s in &mut running {
        if let Some(status) = s.child.try_wait()? {
            crashed.push(format!("{} ({status})", s.spec.name));
        }
    }
    let agent_alive = agent.try_wait()?.is_none();
    // SAFETY: signalling our own child so it flushes and detaches.
    unsafe { libc::kill(agent_pid as i32, libc::SIGINT) };
    let stop_started = Instant::now();
    let agent_status = loop {
        if let Some(status) = agent.try_wait()? {
            break status;
        }
        if stop_started.elapsed() > Duration::from_secs(300) {
            let _ = agent.kill();
            break agent.wait()?;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let detach_secs = stop_started.elapsed().as_secs_f64();
    let spans = counter
        .join()
        .map_err(|_| anyhow::anyhow!("span counter panicked"))??;
    let _ = std::fs::remove_dir_all(&dir);
    // Services still up after the agent left.
    for s in &mut running {
        if let Some(status) = s.child.try_wait()? {
            let entry = format!("{} ({status})", s.spec.name);
            if !crashed.contains(&entry) {
                crashed.push(format!("{entry}, after the agent exited"));
            }
        }
    }
    drop(running);

    // What the traced requests should have produced.
    let mut expected_server = 0u64;
    let mut expected_client = 0u64;
    let mut expected_joined = 0u64;
    let mut per_service: Vec<(u64, u64, u64)> = vec![(0, 0, 0); specs.len()];
    for r in &sequence[..traced.sent.min(covered as u64) as usize] {
        per_service[r.service].0 += 1;
        for &s in &r.servers {
            expected_server += 1;
            per_service[s].1 += 1;
        }
        for &(from, _) in &r.calls {
            expected_client += 1;
            per_service[from].2 += 1;
            if !specs[from].socket_level {
                expected_joined += 1;
            }
        }
    }
    let log_text = log.lock().unwrap().clone();
    let report = Report {
        args,
        specs: &specs,
        base: &base,
        traced: &traced,
        crashed: &crashed,
        agent_alive,
        agent_status: agent_status.to_string(),
        spans: &spans,
        expected: (expected_server, expected_client, expected_joined),
        per_service: &per_service,
        attach_secs,
        detach_secs,
        agent_cpu: cpu_after - cpu_before,
        agent_rss: (rss_before, rss_after),
        agent_log: &log_text,
    }
    .render();
    let path = if args.report.is_absolute() {
        args.report.clone()
    } else {
        crate::root().join(&args.report)
    };
    std::fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("{report}");
    eprintln!("soak: written to {}", path.display());
    if !crashed.is_empty() || traced.changed > 0 || !agent_alive || !agent_status.success() {
        bail!("the soak found a problem: see {}", path.display());
    }
    Ok(())
}

struct Report<'a> {
    args: &'a Args,
    specs: &'a [ServiceSpec],
    base: &'a Pass,
    traced: &'a Pass,
    crashed: &'a [String],
    agent_alive: bool,
    agent_status: String,
    spans: &'a SpanCount,
    /// Server spans, client spans, calls that should join their caller's trace.
    expected: (u64, u64, u64),
    /// Per service: requests sent to it, server spans expected, client spans expected.
    per_service: &'a [(u64, u64, u64)],
    attach_secs: f64,
    detach_secs: f64,
    agent_cpu: f64,
    agent_rss: (u64, u64),
    agent_log: &'a [String],
}

/// `(queued, dropped)` from the agent's last line: "… N spans queued, M dropped at the queue …".
fn queue_figures(log: &[String]) -> Option<(u64, u64)> {
    let line = log.iter().rev().find(|l| l.contains("spans queued"))?;
    let number_before = |marker: &str| -> Option<u64> {
        let head = &line[..line.find(marker)?];
        head.rsplit(|c: char| !c.is_ascii_digit())
            .find(|w| !w.is_empty())?
            .parse()
            .ok()
    };
    Some((
        number_before(" spans queued")?,
        number_before(" dropped at the queue")?,
    ))
}

fn ratio(a: u64, b: u64) -> String {
    if b == 0 {
        "—".into()
    } else {
        format!("{:.4}", a as f64 / b as f64)
    }
}

impl Report<'_> {
    fn render(&self) -> String {
        let s = self.spans;
        let (exp_server, exp_client, exp_joined) = self.expected;
        let sent = self.traced.sent;
        let mut o = String::new();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let _ = writeln!(o, "# Soak\n");
        let _ = writeln!(
            o,
            "Written by `cargo xtask soak --requests {} --seconds {} --connections {}` (run as root); \
             see `xtask/src/soak.rs` for what it does. The same deterministic request sequence is sent \
             to the same processes twice, without and then with `spanhook attach --propagate` on every \
             one of them, and every traced response is compared byte for byte with the untraced one \
             (only the `Date` header's value is masked).\n",
            self.args.requests, self.args.seconds, self.args.connections
        );
        let _ = writeln!(
            o,
            "Machine: Linux {}, {cpus} CPUs shared with other work (load average at the end: {}).\n",
            kernel.trim(),
            load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
        );
        let _ = writeln!(o, "## Result\n");
        let _ = writeln!(o, "| | |\n| --- | --- |");
        let cut = if self.base.sent < self.args.requests {
            format!(
                " (asked for {}; the time bound stopped the first pass there)",
                self.args.requests
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            o,
            "| requests, without the agent | {}{cut} in {:.0} s ({:.0}/s), {} failed |",
            self.base.sent,
            self.base.elapsed.as_secs_f64(),
            self.base.sent as f64 / self.base.elapsed.as_secs_f64().max(1e-9),
            self.base.failed
        );
        let _ = writeln!(
            o,
            "| requests, traced | {sent} in {:.0} s ({:.0}/s), {} failed |",
            self.traced.elapsed.as_secs_f64(),
            sent as f64 / self.traced.elapsed.as_secs_f64().max(1e-9),
            self.traced.failed
        );
        let _ = writeln!(
            o,
            "| target crashes | {} |",
            if self.crashed.is_empty() {
                "0".to_string()
            } else {
                format!("{}: {}", self.crashed.len(), self.crashed.join(", "))
            }
        );
        let _ = writeln!(
            o,
            "| changed responses | {} of {sent} |",
            self.traced.changed
        );
        if let Some((queued, dropped)) = queue_figures(self.agent_log) {
            let _ = writeln!(
                o,
                "| spans made by the agent ÷ spans the requests should make | {} ({} made of {}: {queued} queued for export, {dropped} dropped because the export queue was full) |",
                ratio(queued + dropped, exp_server + exp_client),
                queued + dropped,
                exp_server + exp_client
            );
        }
        let _ = writeln!(
            o,
            "| spans exported ÷ requests | {} ({} spans for {sent} requests) |",
            ratio(s.spans, sent),
            s.spans
        );
        let _ = writeln!(
            o,
            "| exported server spans ÷ server hops | {} ({} of {exp_server}) |",
            ratio(s.server, exp_server),
            s.server
        );
        let _ = writeln!(
            o,
            "| exported client spans ÷ calls | {} ({} of {exp_client}) |",
            ratio(s.client, exp_client),
            s.client
        );
        let _ = writeln!(
            o,
            "| exported downstream server spans joined to the caller's trace (propagation) | {} of {exp_joined} calls from symbol-level clients |",
            s.server_with_parent
        );
        let _ = writeln!(
            o,
            "| spans with status ERROR | {} (the 500s and 503s the sequence asks for) |",
            s.errors
        );
        let _ = writeln!(
            o,
            "| undecodable export lines | {} of {} |",
            s.undecodable, s.lines
        );
        let _ = writeln!(
            o,
            "| agent | attached to {} processes in {:.1} s; {:.0} s CPU during the traced pass ({:.1} µs per span); RSS {} → {} MB; alive at the end: {}; exit after SIGINT: {} ({:.1} s to flush and detach) |",
            self.specs.len(),
            self.attach_secs,
            self.agent_cpu,
            self.agent_cpu * 1e6 / (s.spans.max(1) as f64),
            self.agent_rss.0 / 1024,
            self.agent_rss.1 / 1024,
            if self.agent_alive { "yes" } else { "no" },
            self.agent_status,
            self.detach_secs
        );
        if !self.traced.diffs.is_empty() {
            let _ = writeln!(o, "\nFirst changed responses:\n");
            for d in &self.traced.diffs {
                let _ = writeln!(o, "* {d}");
            }
        }
        let _ = writeln!(o, "\n## Per service\n");
        let _ = writeln!(
            o,
            "| service | program | requests sent to it | server spans (expected) | client spans (expected) |\n| --- | --- | --- | --- | --- |"
        );
        for (k, spec) in self.specs.iter().enumerate() {
            let (direct, server, client) = self.per_service[k];
            let got = s.by_service.get(&spec.name).copied().unwrap_or((0, 0));
            let program = match spec.kind {
                Kind::GoServer => "Go httpserver",
                Kind::GoChain => "Go httpchain",
                Kind::RustChain if spec.socket_level => "Rust httpchain (socket level)",
                Kind::RustChain => "Rust httpchain",
            };
            let _ = writeln!(
                o,
                "| {} | {program} | {direct} | {} ({server}) | {} ({client}) |",
                spec.name, got.0, got.1
            );
        }
        let lines: Vec<&String> = self
            .agent_log
            .iter()
            .filter(|l| {
                l.contains("counters")
                    || l.contains("stopping")
                    || l.contains("spans exported")
                    || l.contains("kernel:")
                    || l.contains("WARN")
                    || l.contains("ERROR")
            })
            .take(40)
            .collect();
        if !lines.is_empty() {
            let _ = writeln!(o, "\n## Agent log (excerpt)\n\n```text");
            for l in lines {
                let _ = writeln!(o, "{}", strip_ansi(l));
            }
            let _ = writeln!(o, "```");
        }
        o
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_queue_figures_are_read() {
        let log = vec![
            "INFO stopping (interrupted): 1815868 events read, 1460182 spans queued, 495366 dropped at the queue, 0 undecodable".to_string(),
        ];
        assert_eq!(queue_figures(&log), Some((1460182, 495366)));
        assert_eq!(queue_figures(&[]), None);
    }

    #[test]
    fn ports_are_resolved() {
        assert_eq!(
            resolve(
                "/chain/1?next=http://127.0.0.1:{port2},http://127.0.0.1:{port0}",
                &[10, 11, 12]
            ),
            "/chain/1?next=http://127.0.0.1:12,http://127.0.0.1:10"
        );
        assert_eq!(resolve("/items/7", &[1]), "/items/7");
    }

    #[test]
    fn only_the_date_is_masked() {
        let r = b"HTTP/1.1 200 OK\r\ndate: Tue, 25 Nov 2025 19:00:00 GMT\r\nContent-Length: 6\r\n\r\nDate: x";
        assert_eq!(
            normalise(r),
            b"HTTP/1.1 200 OK\r\nDate: *\r\nContent-Length: 6\r\n\r\nDate: x".to_vec()
        );
    }

    #[test]
    fn the_sequence_is_deterministic_and_covers_every_service() {
        let spec = |name: &str, kind| ServiceSpec {
            name: name.into(),
            kind,
            binary: PathBuf::new(),
            socket_level: false,
        };
        let specs = [
            spec("a", Kind::GoServer),
            spec("b", Kind::GoChain),
            spec("c", Kind::RustChain),
        ];
        let a: Vec<String> = (0..100).map(|i| request(i, &specs).path).collect();
        let b: Vec<String> = (0..100).map(|i| request(i, &specs).path).collect();
        assert_eq!(a, b);
        for s in 0..3 {
            assert!((0..100).any(|i| request(i, &specs).service == s));
        }
        // Go → Rust → Go: three servers, two calls.
        let long = (0..100)
            .map(|i| request(i, &specs))
            .find(|r| r.servers.len() == 3)
            .unwrap();
        assert_eq!(long.calls.len(), 2);
    }

    #[test]
    fn spans_are_counted_from_otlp_json() {
        let line = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},"scopeSpans":[{"spans":[{"parentSpanId":"00f067aa0ba902b7","name":"a","kind":2,"status":{"message":"","code":0}},{"parentSpanId":"","name":"b \"kind\":3","kind":3,"status":{"message":"","code":2}},{"parentSpanId":"","kind":2}]}]}]}"#;
        let mut c = SpanCount::default();
        count_spans(line, &mut c);
        count_spans("not json", &mut c);
        assert_eq!((c.spans, c.server, c.client), (3, 2, 1));
        assert_eq!((c.server_with_parent, c.errors, c.undecodable), (1, 1, 1));
        assert_eq!(c.by_service["svc"], (2, 1));
    }
}
