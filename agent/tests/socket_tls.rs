//! TLS through libssl, and the client side, at socket level: nginx serving HTTPS with its
//! OpenSSL, CPython's ssl module on both sides, and curl (libcurl with OpenSSL) — the real
//! programs from Debian, traced by the real agent with uprobes on the libssl they map and
//! tracepoints on their sockets.
//!
//! The tests of this file run one at a time (they look at the target's code in memory and at
//! which kernel programs are loaded).

mod support;

use std::{
    io::{Read, Seek, SeekFrom, Write},
    path::PathBuf,
    process::{Command, Stdio},
    sync::Mutex,
    time::Duration,
};

use support::{
    native::{self, expect, tally, Nginx},
    otlp::{spans_in_file, Span, KIND_CLIENT, KIND_SERVER, STATUS_ERROR},
    require_bpf, temp_dir,
    traffic::{send, Req},
    Agent, Lines,
};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn attach(pid: u32, name: &str) -> (Agent, PathBuf) {
    let out = temp_dir(name).join("spans.jsonl");
    let agent = Agent::attach(&[
        "attach",
        "--pid",
        &pid.to_string(),
        "--output-file",
        out.to_str().unwrap(),
    ]);
    (agent, out)
}

fn stop(agent: Agent) -> String {
    let (status, stderr) = agent.stop();
    assert!(status.success(), "spanhook exited with {status}:\n{stderr}");
    stderr
}

/// `python3 fixtures/python/http_client.py HOST PORT [--tls] REQUESTS…`, started and waiting
/// for the go-ahead on its standard input.
struct PyClient {
    child: std::process::Child,
    stdout: Lines,
}

impl PyClient {
    fn start(port: u16, tls: bool, requests: &[&str]) -> PyClient {
        let script = support::root().join("fixtures/python/http_client.py");
        let mut cmd = Command::new(native::program("python3"));
        cmd.arg(script).args(["127.0.0.1", &port.to_string()]);
        if tls {
            cmd.arg("--tls");
        }
        cmd.args(requests)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start the Python client");
        let stdout = native::lines_of(child.stdout.take().unwrap());
        assert!(
            stdout.wait_for("ready", Duration::from_secs(20)).is_some(),
            "the Python client did not start"
        );
        PyClient { child, stdout }
    }

    /// Lets it send its requests and waits until it is done.
    fn go(&mut self) -> String {
        self.child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        assert!(
            self.stdout
                .wait_for("done", Duration::from_secs(30))
                .is_some(),
            "the Python client did not finish:\n{}",
            self.stdout.text()
        );
        self.stdout.text()
    }
}

impl Drop for PyClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn check_server(label: &str, s: &Span, port: u16, scheme: &str, capture: &str) {
    assert_eq!(s.kind, KIND_SERVER, "{label}: {s:?}");
    assert_eq!(s.str("url.scheme"), Some(scheme), "{label}: {s:?}");
    assert_eq!(s.str("spanhook.capture"), Some(capture), "{label}: {s:?}");
    assert_eq!(s.int("server.port"), Some(port as i64), "{label}: {s:?}");
    assert_eq!(s.str("client.address"), Some("127.0.0.1"), "{label}: {s:?}");
    assert_eq!(s.attrs.get("spanhook.partial"), None, "{label}: {s:?}");
    let status = s.int("http.response.status_code").unwrap();
    assert_eq!(
        s.status_code == STATUS_ERROR,
        status >= 500,
        "{label}: {s:?}"
    );
    assert!(s.end_ns > s.start_ns, "{label}: {s:?}");
}

fn check_client(label: &str, s: &Span, port: u16, scheme: &str, capture: &str) {
    assert_eq!(s.kind, KIND_CLIENT, "{label}: {s:?}");
    let path = s.str("url.full").map(|u| {
        let prefix = format!("{scheme}://127.0.0.1:{port}/");
        assert!(
            u.starts_with(&prefix),
            "{label}: {u} does not start with {prefix}"
        );
        u.to_string()
    });
    assert!(path.is_some(), "{label}: no url.full in {s:?}");
    assert_eq!(s.str("server.address"), Some("127.0.0.1"), "{label}: {s:?}");
    assert_eq!(s.int("server.port"), Some(port as i64), "{label}: {s:?}");
    assert_eq!(
        s.str("network.peer.address"),
        Some("127.0.0.1"),
        "{label}: {s:?}"
    );
    assert_eq!(s.str("spanhook.capture"), Some(capture), "{label}: {s:?}");
    let status = s.int("http.response.status_code").unwrap();
    assert_eq!(
        s.status_code == STATUS_ERROR,
        status >= 400,
        "{label}: {s:?}"
    );
    assert!(s.end_ns > s.start_ns, "{label}: {s:?}");
}

/// (method, path from url.full, status) of client spans.
fn client_tally(spans: &[Span]) -> std::collections::HashMap<(String, String, i64), usize> {
    let mut got = std::collections::HashMap::new();
    for s in spans {
        let url = s.str("url.full").unwrap_or("?");
        let path = url
            .splitn(4, '/')
            .nth(3)
            .map(|p| format!("/{p}"))
            .unwrap_or_default();
        *got.entry((
            s.str("http.request.method").unwrap_or("?").to_string(),
            path,
            s.int("http.response.status_code").unwrap_or(-1),
        ))
        .or_default() += 1;
    }
    got
}

/// The libssl `pid` maps, and where `SSL_read` is in it (file offset) and in memory.
fn ssl_read_in(pid: u32) -> (PathBuf, u64, u64) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let (path, _) = maps
        .lines()
        .find_map(|l| {
            let p = l.split_whitespace().nth(5)?;
            p.contains("libssl.so").then(|| (PathBuf::from(p), ()))
        })
        .expect("the process maps libssl");
    let nm = Command::new(native::program("nm"))
        .args(["-D", "--defined-only"])
        .arg(&path)
        .output()
        .expect("nm (binutils)");
    let text = String::from_utf8_lossy(&nm.stdout);
    let vaddr = text
        .lines()
        .find_map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            // Versioned: `SSL_read@@OPENSSL_3.0.0`.
            let name = c.get(2)?.split('@').next()?;
            (c.len() == 3 && name == "SSL_read").then(|| u64::from_str_radix(c[0], 16).unwrap())
        })
        .expect("SSL_read in libssl");
    // libssl's text segment maps file offsets 1:1 to addresses relative to its load base.
    for line in maps.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 6 || std::path::Path::new(cols[5]) != path {
            continue;
        }
        let (start, end) = cols[0].split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        let off = u64::from_str_radix(cols[2], 16).unwrap();
        if vaddr >= off && vaddr < off + (end - start) {
            return (path, vaddr, start + (vaddr - off));
        }
    }
    panic!("SSL_read of {} is not mapped in pid {pid}", path.display());
}

/// The first byte of `SSL_read` in the process and in the file.
fn ssl_read_bytes(pid: u32) -> (u8, u8) {
    let (path, file_off, addr) = ssl_read_in(pid);
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut live = [0u8];
    mem.seek(SeekFrom::Start(addr)).unwrap();
    mem.read_exact(&mut live).unwrap();
    let mut file = std::fs::File::open(format!("/proc/{pid}/root{}", path.display())).unwrap();
    let mut orig = [0u8];
    file.seek(SeekFrom::Start(file_off)).unwrap();
    file.read_exact(&mut orig).unwrap();
    (live[0], orig[0])
}

#[test]
fn nginx_https_through_its_openssl_beside_plain_http() {
    let _one = serial();
    require_bpf();
    let dir = temp_dir("tls-nginx");
    let nginx = Nginx::start(&dir);
    let (live, orig) = ssl_read_bytes(nginx.pid());
    assert_eq!(live, orig, "no uprobe before attaching");
    let (agent, out) = attach(nginx.pid(), "tls-nginx-out");
    let (live, _) = ssl_read_bytes(nginx.pid());
    assert_eq!(live, 0xcc, "a uprobe on libssl's SSL_read while attached");
    let mut client = PyClient::start(
        nginx.tls_port,
        true,
        &[
            "GET:/static/a.txt",
            "GET:/static/big.bin",
            "HEAD:/static/a.txt",
            "POST:/created",
            "PUT:/echo",
            "DELETE:/error",
            "GET:/static/missing",
            "GET:/created",
        ],
    );
    let printed = client.go();
    assert!(printed.contains("PUT /echo 405"), "{printed}");
    // Plain HTTP on the same process at the same time.
    send(
        &format!("http://127.0.0.1:{}", nginx.port),
        &[Req::get("/static/a.txt"), Req::get("/error")],
        2,
    );
    let stderr = stop(agent);
    let (live, orig) = ssl_read_bytes(nginx.pid());
    assert_eq!(live, orig, "the uprobe is gone after the agent stopped");
    assert!(
        stderr.contains("socket tls traced at socket level"),
        "{stderr}"
    );
    let spans = spans_in_file(&out);
    let (tls, plain): (Vec<&Span>, Vec<&Span>) = spans
        .iter()
        .partition(|s| s.str("url.scheme") == Some("https"));
    let tls: Vec<Span> = tls.into_iter().cloned().collect();
    let plain: Vec<Span> = plain.into_iter().cloned().collect();
    assert_eq!(
        tally(&tls),
        expect(&[
            ("GET", "/static/a.txt", 200),
            ("GET", "/static/big.bin", 200),
            ("HEAD", "/static/a.txt", 200),
            ("POST", "/created", 201),
            // nginx answers a method its static handler does not take with 405.
            ("PUT", "/echo", 405),
            ("DELETE", "/error", 503),
            ("GET", "/static/missing", 404),
            ("GET", "/created", 201),
        ]),
        "{stderr}"
    );
    for s in &tls {
        check_server("nginx https", s, nginx.tls_port, "https", "libssl");
    }
    assert_eq!(
        tally(&plain),
        expect(&[("GET", "/static/a.txt", 200), ("GET", "/error", 503)]),
        "{stderr}"
    );
    for s in &plain {
        check_server("nginx http", s, nginx.port, "http", "socket");
    }
}

#[test]
fn python_tls_server_and_client_both_traced() {
    let _one = serial();
    require_bpf();
    let dir = temp_dir("tls-python");
    let (cert, key) = native::self_signed(&dir);
    let server = native::python_server(&["--tls", cert.to_str().unwrap(), key.to_str().unwrap()]);
    let requests = [
        "GET:/hello",
        "POST:/echo",
        "GET:/status/404",
        "DELETE:/status/204",
        "GET:/chunked",
        "GET:/binary?n=100000",
        "GET:/status/503",
    ];
    let mut client = PyClient::start(server.port, true, &requests);
    let (server_agent, server_out) = attach(server.pid(), "tls-python-server");
    let (client_agent, client_out) = attach(client.child.id(), "tls-python-client");
    let printed = client.go();
    assert!(printed.contains("GET /status/503 503"), "{printed}");
    let server_err = stop(server_agent);
    let client_err = stop(client_agent);
    let want = expect(&[
        ("GET", "/hello", 200),
        ("POST", "/echo", 200),
        ("GET", "/status/404", 404),
        ("DELETE", "/status/204", 204),
        ("GET", "/chunked", 200),
        ("GET", "/binary", 200),
        ("GET", "/status/503", 503),
    ]);
    let server_spans = spans_in_file(&server_out);
    assert_eq!(tally(&server_spans), want, "{server_err}");
    for s in &server_spans {
        check_server("python https server", s, server.port, "https", "libssl");
    }
    let client_spans = spans_in_file(&client_out);
    // url.full never carries the query string.
    assert_eq!(client_tally(&client_spans), want, "{client_err}");
    for s in &client_spans {
        check_client("python https client", s, server.port, "https", "libssl");
        assert_eq!(s.resource_str("process.runtime.name"), Some("cpython"));
    }
}

#[test]
fn python_http_client_spans_over_plain_http() {
    let _one = serial();
    require_bpf();
    let server = native::python_server(&[]);
    let requests = [
        "GET:/hello",
        "POST:/echo",
        "PUT:/status/201",
        "GET:/n/2",
        "GET:/chunked",
    ];
    let mut client = PyClient::start(server.port, false, &requests);
    let (agent, out) = attach(client.child.id(), "plain-python-client");
    client.go();
    let stderr = stop(agent);
    let spans = spans_in_file(&out);
    assert_eq!(
        client_tally(&spans),
        expect(&[
            ("GET", "/hello", 200),
            ("POST", "/echo", 200),
            ("PUT", "/status/201", 201),
            ("GET", "/n/2", 404),
            ("GET", "/chunked", 200),
        ]),
        "{stderr}"
    );
    for s in &spans {
        check_client("python http client", s, server.port, "http", "socket");
    }
}

/// Runs curl (libcurl with OpenSSL) on one keep-alive connection: a first request the server
/// holds until the agent is attached, then `paths`; returns the client spans of the requests
/// made after.
fn curl_spans(base: &str, paths: &[&str], name: &str) -> (Vec<Span>, String) {
    let gate = temp_dir(&format!("{name}-gate")).join("attached");
    let mut cmd = Command::new(native::program("curl"));
    cmd.args(["-s", "-k", "--http1.1", "-o", "/dev/null"])
        .arg(format!("{base}/wait?file={}", gate.display()));
    for p in paths {
        cmd.args(["-o", "/dev/null"]).arg(format!("{base}{p}"));
    }
    let mut curl = cmd.spawn().expect("start curl");
    let (agent, out) = attach(curl.id(), name);
    std::fs::write(&gate, b"").unwrap();
    let status = curl.wait().unwrap();
    assert!(status.success(), "curl failed: {status}");
    let (status, stderr) = agent.wait();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("every traced process exited"), "{stderr}");
    (spans_in_file(&out), stderr)
}

#[test]
fn curl_client_spans_over_plain_http_and_tls() {
    let _one = serial();
    require_bpf();
    let dir = temp_dir("tls-curl");
    let (cert, key) = native::self_signed(&dir);
    let plain = native::python_server(&[]);
    let tls = native::python_server(&["--tls", cert.to_str().unwrap(), key.to_str().unwrap()]);
    let paths = ["/hello", "/status/404", "/status/500", "/n/5", "/chunked"];
    let want = expect(&[
        ("GET", "/hello", 200),
        ("GET", "/status/404", 404),
        ("GET", "/status/500", 500),
        ("GET", "/n/5", 201),
        ("GET", "/chunked", 200),
    ]);
    let (spans, stderr) = curl_spans(&plain.url(""), &paths, "curl-plain");
    assert_eq!(client_tally(&spans), want, "{stderr}");
    for s in &spans {
        check_client("curl http", s, plain.port, "http", "socket");
        assert_eq!(s.resource_str("service.name"), Some("curl"));
    }
    let base = format!("https://127.0.0.1:{}", tls.port);
    let (spans, stderr) = curl_spans(&base, &paths, "curl-tls");
    assert!(
        stderr.contains("socket tls traced at socket level"),
        "{stderr}"
    );
    assert_eq!(client_tally(&spans), want, "{stderr}");
    for s in &spans {
        check_client("curl https", s, tls.port, "https", "libssl");
    }
}
