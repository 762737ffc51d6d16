//! Programs the socket-level tests trace, from `cargo xtask fixtures`
//! (`target/fixtures/native/manifest.tsv`): nginx, Debian's CPython, curl, openssl, and a Rust
//! server from crates.io as its authors ship it (stripped). Plus the scaffolding each needs:
//! a self-signed certificate, an nginx configuration, free ports.

use std::{
    collections::HashMap,
    io::Read,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::{fixtures_dir, otlp::Span, GoServer};

/// The path of a program listed in the native fixture manifest, failing loudly when absent.
pub fn program(name: &str) -> PathBuf {
    let manifest = fixtures_dir().join("native/manifest.tsv");
    let text = std::fs::read_to_string(&manifest).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}\ninstall the socket-level fixtures first: `cargo xtask fixtures` (cargo xtask test does it)",
            manifest.display()
        )
    });
    let path = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (n, p) = l.split_once('\t')?;
            (n == name).then(|| PathBuf::from(p))
        })
        .unwrap_or_else(|| panic!("{name} is not in {}", manifest.display()));
    assert!(
        path.is_file(),
        "{name}: {} is missing; run `cargo xtask fixtures`",
        path.display()
    );
    path
}

/// A free loopback port (bound and released: a small window for another taker).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `port`.
pub fn wait_port(port: u16, what: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    panic!("{what} did not start listening on port {port}");
}

/// A self-signed certificate and key made by `openssl req` in `dir`.
pub fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let out = Command::new(program("openssl"))
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// nginx from Debian's package, one process (`master_process off`), on an HTTP and an HTTPS
/// port, serving `static/` (with sendfile and gzip) and fixed-status locations.
pub struct Nginx {
    pub child: Child,
    pub port: u16,
    pub tls_port: u16,
    pub dir: PathBuf,
}

impl Nginx {
    pub fn start(dir: &Path) -> Nginx {
        let (cert, key) = self_signed(dir);
        let static_dir = dir.join("static");
        std::fs::create_dir_all(&static_dir).unwrap();
        std::fs::write(static_dir.join("a.txt"), "static file\n").unwrap();
        // A body with bytes that look like HTTP, big enough to go out through sendfile.
        let mut big = Vec::new();
        while big.len() < 300_000 {
            big.extend_from_slice(b"GET /inside HTTP/1.1\r\n\r\nHTTP/1.1 200 OK\r\n\r\n\x00\xff");
        }
        std::fs::write(static_dir.join("big.bin"), &big).unwrap();
        let port = free_port();
        let tls_port = free_port();
        let d = dir.display();
        let config = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    sendfile on;
    keepalive_requests 100000;
    gzip on;
    gzip_types text/plain;
    gzip_min_length 0;
    server {{
        listen 127.0.0.1:{port};
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location /static/ {{ alias {d}/static/; }}
        location = /created {{ return 201 "created\n"; }}
        location = /error {{ return 503 "unavailable\n"; }}
        location = /redirect {{ return 302 /static/a.txt; }}
    }}
}}
"#,
            cert = cert.display(),
            key = key.display()
        );
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config).unwrap();
        let child = Command::new(program("nginx"))
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        wait_port(port, "nginx");
        wait_port(tls_port, "nginx (TLS)");
        Nginx {
            child,
            port,
            tls_port,
            dir: dir.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python server of `fixtures/python/http_server.py` on Debian's CPython.
pub fn python_server(args: &[&str]) -> GoServer {
    let script = super::root().join("fixtures/python/http_server.py");
    let mut cmd = Command::new(program("python3"));
    cmd.arg(script).args(args);
    GoServer::start_command(cmd)
}

/// dufs as its authors ship it (stripped), serving `dir` with every operation allowed.
pub struct Dufs {
    pub child: Child,
    pub port: u16,
}

impl Dufs {
    pub fn start(dir: &Path) -> Dufs {
        let port = free_port();
        let child = Command::new(program("dufs-shipped"))
            .args([
                "--allow-all",
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start dufs");
        wait_port(port, "dufs");
        Dufs { child, port }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Dufs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (method, url.path, status) of each span, counted.
pub fn tally(spans: &[Span]) -> HashMap<(String, String, i64), usize> {
    let mut got = HashMap::new();
    for s in spans {
        let key = (
            s.str("http.request.method_original")
                .or(s.str("http.request.method"))
                .unwrap_or("?")
                .to_string(),
            s.str("url.path").unwrap_or("?").to_string(),
            s.int("http.response.status_code").unwrap_or(-1),
        );
        *got.entry(key).or_default() += 1;
    }
    got
}

/// Counts of `(method, path, status)` from a list of expectations.
pub fn expect(rows: &[(&str, &str, i64)]) -> HashMap<(String, String, i64), usize> {
    let mut want = HashMap::new();
    for (m, p, s) in rows {
        *want.entry((m.to_string(), p.to_string(), *s)).or_default() += 1;
    }
    want
}

/// Sends raw bytes on one connection and reads until `responses` status lines came back (or
/// the peer closed). For pipelining, which no ordinary client does.
pub fn raw_exchange(port: u16, bytes: &[u8], responses: usize) -> Vec<u8> {
    use std::io::Write;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        let seen = got.windows(9).filter(|w| w == b"HTTP/1.1 ").count();
        if seen >= responses {
            // Let the last body arrive.
            std::thread::sleep(Duration::from_millis(200));
            s.set_nonblocking(true).unwrap();
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            break;
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

/// `bpftool prog show` names of loaded programs (the kernel keeps 15 characters).
pub fn loaded_program_names() -> Vec<String> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .expect("bpftool (installed by cargo xtask setup)");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect()
}

/// Collects the lines `stream` writes, as the harness does for its children.
pub fn lines_of(stream: impl Read + Send + 'static) -> super::Lines {
    super::Lines::collect(stream)
}
