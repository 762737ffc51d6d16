//! Rust services at symbol level: hyper HTTP/1 servers (axum) and clients (reqwest) built from
//! crates.io in several dependency sets and profiles, traced with real uprobes, driven by real
//! clients; plus two programs from crates.io nobody on the project wrote (dufs, xh) and a
//! Go → Rust → Go chain.

mod support;

use std::{
    collections::HashMap,
    io::Write,
    net::TcpStream,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};
use support::native::free_port;

use support::{
    go_fixture, newest_go,
    otlp::{spans_in_file, Span, KIND_CLIENT, KIND_SERVER, STATUS_ERROR},
    require_bpf, run_spanhook,
    rust::{self, RustFixture},
    temp_dir,
    traffic::{send, Req},
    Agent, GoServer,
};

/// Servers of one or more binaries with one agent attached to all of them.
struct Traced {
    servers: Vec<GoServer>,
    agent: Agent,
    out: PathBuf,
}

fn attach(name: &str, pids: &[u32], propagate: bool) -> (Agent, PathBuf) {
    let out = temp_dir(name).join("spans.jsonl");
    let mut args: Vec<String> = vec!["attach".into()];
    for pid in pids {
        args.push("--pid".into());
        args.push(pid.to_string());
    }
    args.push("--output-file".into());
    args.push(out.to_str().unwrap().into());
    if propagate {
        args.push("--propagate".into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (Agent::attach(&args), out)
}

fn start(name: &str, binaries: &[PathBuf], propagate: bool) -> Traced {
    require_bpf();
    let servers: Vec<GoServer> = binaries.iter().map(|b| GoServer::start(b)).collect();
    let pids: Vec<u32> = servers.iter().map(GoServer::pid).collect();
    let (agent, out) = attach(name, &pids, propagate);
    Traced {
        servers,
        agent,
        out,
    }
}

impl Traced {
    fn base(&self, i: usize) -> String {
        self.servers[i].url("")
    }

    fn pid(&self, i: usize) -> i64 {
        self.servers[i].pid() as i64
    }

    fn finish(self) -> (Vec<Span>, String) {
        let (status, stderr) = self.agent.stop();
        assert!(status.success(), "spanhook exited with {status}:\n{stderr}");
        (spans_in_file(&self.out), stderr)
    }
}

fn pid_of(s: &Span) -> i64 {
    s.resource_int("process.pid").unwrap()
}

fn last_segment(s: &Span) -> String {
    let url = s.str("url.path").or(s.str("url.full")).unwrap_or("");
    url.rsplit('/').next().unwrap_or("").to_string()
}

fn port_of(base: &str) -> i64 {
    base.rsplit(':').next().unwrap().parse().unwrap()
}

/// 1000 requests, 100 at a time, through A (traced) to B (traced): every request is exactly
/// one correct span in each process, with the attributes and status the client saw.
fn thousand_requests(f: &RustFixture) {
    let svc = start(
        &format!("rust-1000-{}-{}", f.set, f.profile),
        &[f.path.clone(), f.path.clone()],
        false,
    );
    let (a, b) = (svc.base(0), svc.base(1));
    let (pa, pb) = (svc.pid(0), svc.pid(1));
    let n = 1000;
    let reqs: Vec<Req> = (0..n)
        .map(|i| match i % 10 {
            3 => Req::get(format!("/status/503?id=q{i}")),
            7 => Req::with("DELETE", format!("/status/404?id=q{i}"), None),
            _ => Req::get(format!("/chain/r{i}?next={b}")),
        })
        .collect();
    let resps = send(&a, &reqs, 100);
    for (r, resp) in reqs.iter().zip(&resps) {
        let want = if r.path.starts_with("/status/503") {
            503
        } else if r.path.starts_with("/status/404") {
            404
        } else {
            200
        };
        assert_eq!(resp.status, want, "{}", r.path);
    }
    let (spans, stderr) = svc.finish();
    let label = f.label();
    let chains = reqs
        .iter()
        .filter(|r| r.path.starts_with("/chain/"))
        .count();
    let a_servers: Vec<&Span> = spans
        .iter()
        .filter(|s| pid_of(s) == pa && s.kind == KIND_SERVER)
        .collect();
    let a_clients: Vec<&Span> = spans
        .iter()
        .filter(|s| pid_of(s) == pa && s.kind == KIND_CLIENT)
        .collect();
    let b_servers: Vec<&Span> = spans
        .iter()
        .filter(|s| pid_of(s) == pb && s.kind == KIND_SERVER)
        .collect();
    assert_eq!(
        a_servers.len(),
        n,
        "{label}: one server span per request\n{stderr}"
    );
    assert_eq!(
        a_clients.len(),
        chains,
        "{label}: one client span per call\n{stderr}"
    );
    assert_eq!(
        b_servers.len(),
        chains,
        "{label}: one downstream span per call\n{stderr}"
    );
    assert!(
        spans.iter().all(|s| pid_of(s) == pa || pid_of(s) == pb),
        "{label}: spans of other processes"
    );
    let clients_by_parent: HashMap<&str, &Span> = a_clients
        .iter()
        .map(|c| (c.parent_span_id.as_str(), *c))
        .collect();
    assert_eq!(
        clients_by_parent.len(),
        chains,
        "{label}: two calls under one parent"
    );
    let b_by_path: HashMap<&str, &Span> = b_servers
        .iter()
        .map(|s| (s.str("url.path").unwrap(), *s))
        .collect();
    let mut seen = std::collections::HashSet::new();
    for s in &a_servers {
        let path = s.str("url.path").unwrap().to_string();
        assert!(
            seen.insert(path.clone()) || path.starts_with("/status/"),
            "{label}: {path} twice"
        );
        assert_eq!(s.str("url.scheme"), Some("http"), "{label}");
        assert_eq!(s.str("network.protocol.version"), Some("1.1"), "{label}");
        assert_eq!(s.str("server.address"), Some("127.0.0.1"), "{label}");
        assert_eq!(s.int("server.port"), Some(port_of(&a)), "{label}");
        assert_eq!(
            s.parent_span_id, "",
            "{label}: a server span without traceparent is a root"
        );
        assert!(s.end_ns >= s.start_ns);
        match path.as_str() {
            "/status/503" => {
                assert_eq!(s.name, "GET");
                assert_eq!(s.int("http.response.status_code"), Some(503));
                assert_eq!(s.status_code, STATUS_ERROR, "{label}: 5xx is an error");
                assert_eq!(s.str("error.type"), Some("503"));
            }
            "/status/404" => {
                assert_eq!(s.name, "DELETE");
                assert_eq!(s.str("http.request.method"), Some("DELETE"));
                assert_eq!(s.int("http.response.status_code"), Some(404));
                assert_ne!(
                    s.status_code, STATUS_ERROR,
                    "{label}: a server's 4xx is not"
                );
            }
            chain => {
                assert!(chain.starts_with("/chain/r"), "{label}: {chain}");
                assert_eq!(s.name, "GET");
                assert_eq!(s.int("http.response.status_code"), Some(200));
                assert_ne!(s.status_code, STATUS_ERROR);
                let c = clients_by_parent
                    .get(s.span_id.as_str())
                    .unwrap_or_else(|| panic!("{label}: no client span under {chain}"));
                assert_eq!(c.trace_id, s.trace_id, "{label}");
                assert_eq!(
                    c.str("url.full"),
                    Some(format!("{b}{chain}").as_str()),
                    "{label}"
                );
                assert_eq!(c.str("http.request.method"), Some("GET"));
                assert_eq!(c.int("http.response.status_code"), Some(200));
                assert_eq!(c.int("server.port"), Some(port_of(&b)));
                assert_eq!(c.str("server.address"), Some("127.0.0.1"));
                assert!(
                    s.start_ns <= c.start_ns && c.end_ns <= s.end_ns,
                    "{label}: {chain}"
                );
                let down = b_by_path
                    .get(chain)
                    .unwrap_or_else(|| panic!("{label}: B has no span of {chain}"));
                assert_eq!(down.int("http.response.status_code"), Some(200));
                assert_eq!(down.int("server.port"), Some(port_of(&b)));
            }
        }
    }
}

#[test]
fn every_request_is_one_correct_span_at_1000_requests_100_concurrent() {
    for f in rust::sets("httpchain", "release") {
        thousand_requests(&f);
    }
}

#[test]
fn fat_lto_builds_too_at_1000_requests_100_concurrent() {
    // Fat LTO + codegen-units=1 + panic=abort inlines hyper's role functions and reqwest's
    // call functions: the probes use what survives (see agent/src/plan/rust.rs).
    // The newest set only: hyper 1.1 (the oldest set) copies the parsed request target out of
    // the request head, so in a fat-LTO build nothing leads the server probe to the head;
    // `inspect` and `attach` say so (checked below).
    thousand_requests(&rust::fixture("httpchain", "newest", "lto"));
    let oldest = rust::fixture("httpchain", "oldest", "lto");
    let out = run_spanhook(&[
        "inspect",
        "--capture",
        "symbols",
        oldest.path.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("hyper 1.1.0 copies the request target"),
        "{text}"
    );
}

#[test]
fn an_incoming_traceparent_is_joined_by_the_server_and_its_calls() {
    let f = rust::fixture("httpchain", "newest", "release");
    let svc = start("rust-traceparent", &[f.path.clone(), f.path], false);
    let (a, b) = (svc.base(0), svc.base(1));
    let pa = svc.pid(0);
    let out = Command::new("curl")
        .args([
            "-sf",
            "-H",
            "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ])
        .arg(format!("{a}/direct/c1?next={b}"))
        .output()
        .expect("curl");
    assert!(out.status.success());
    // A malformed one starts a new trace, flagged.
    let out = Command::new("curl")
        .args(["-sf", "-H", "traceparent: 00-zz-b7ad6b7169203331-01"])
        .arg(format!("{a}/leaf/bad"))
        .output()
        .expect("curl");
    assert!(out.status.success());
    let (spans, _) = svc.finish();
    let server = spans
        .iter()
        .find(|s| {
            s.kind == KIND_SERVER && pid_of(s) == pa && s.str("url.path") == Some("/direct/c1")
        })
        .expect("server span");
    assert_eq!(server.trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(server.parent_span_id, "b7ad6b7169203331");
    let client = spans
        .iter()
        .find(|s| s.kind == KIND_CLIENT)
        .expect("client span");
    assert_eq!(client.trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(client.parent_span_id, server.span_id);
    let bad = spans
        .iter()
        .find(|s| s.str("url.path") == Some("/leaf/bad"))
        .unwrap();
    assert_eq!(bad.parent_span_id, "");
    assert_ne!(bad.trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(
        bad.attrs.get("spanhook.traceparent.invalid"),
        Some(&serde_json::Value::Bool(true))
    );
}

#[test]
fn refused_and_timed_out_calls_are_error_spans() {
    let f = rust::fixture("httpchain", "newest", "release");
    let svc = start("rust-errors", &[f.path.clone(), f.path], false);
    let (a, b) = (svc.base(0), svc.base(1));
    let resps = send(
        &a,
        &[
            // Nothing listens on port 1: connection refused.
            Req::get("/direct/f1?next=http://127.0.0.1:1"),
            // B answers after 5 s; the call gives up after 200 ms.
            Req::get(format!("/timeout/t1?next={b}&ms=200")),
        ],
        1,
    );
    assert_eq!(resps[0].status, 502);
    assert_eq!(resps[1].status, 504);
    let (spans, stderr) = svc.finish();
    let pa = svc_pid(&spans, "/direct/f1");
    let server_of = |path: &str| {
        spans
            .iter()
            .find(|s| s.kind == KIND_SERVER && s.str("url.path") == Some(path))
            .unwrap_or_else(|| panic!("no server span of {path}"))
    };
    let refused = spans
        .iter()
        .find(|s| s.kind == KIND_CLIENT && s.str("url.full") == Some("http://127.0.0.1:1/leaf/f1"))
        .unwrap_or_else(|| panic!("no span of the refused call:\n{stderr}"));
    assert_eq!(pid_of(refused), pa);
    assert_eq!(refused.status_code, STATUS_ERROR);
    assert_eq!(
        refused.str("error.type"),
        Some("hyper_util::client::legacy::client::Error")
    );
    assert_eq!(refused.int("http.response.status_code"), None);
    assert_eq!(refused.int("server.port"), Some(1));
    assert_eq!(refused.parent_span_id, server_of("/direct/f1").span_id);
    let timed_out = spans
        .iter()
        .find(|s| {
            s.kind == KIND_CLIENT && s.str("url.full").is_some_and(|u| u.ends_with("/slow/t1"))
        })
        .unwrap_or_else(|| panic!("no span of the timed-out call:\n{stderr}"));
    assert_eq!(timed_out.status_code, STATUS_ERROR);
    assert_eq!(timed_out.str("error.type"), Some("timeout_or_canceled"));
    assert_eq!(timed_out.str("http.request.method"), Some("GET"));
    assert!(
        timed_out.duration_ms() >= 190.0,
        "{}",
        timed_out.duration_ms()
    );
    assert_eq!(timed_out.parent_span_id, server_of("/timeout/t1").span_id);
    assert_eq!(timed_out.int("server.port"), Some(port_of(&b)));
}

fn svc_pid(spans: &[Span], path: &str) -> i64 {
    pid_of(
        spans
            .iter()
            .find(|s| s.str("url.path") == Some(path))
            .unwrap(),
    )
}

#[test]
fn a_call_from_a_task_the_handler_spawned_starts_its_own_trace() {
    // The rule follows the task that made the call; a task spawned by the handler is another
    // task, and tokio's spawn is not followed (see the README).
    let f = rust::fixture("httpchain", "newest", "release");
    let svc = start("rust-spawned", &[f.path.clone(), f.path], false);
    let (a, b) = (svc.base(0), svc.base(1));
    let pa = svc.pid(0);
    let n = 20;
    let reqs: Vec<Req> = (0..n)
        .map(|i| Req::get(format!("/spawned/s{i}?next={b}")))
        .collect();
    assert!(send(&a, &reqs, 5).iter().all(|r| r.status == 200));
    let (spans, _) = svc.finish();
    let clients: Vec<&Span> = spans
        .iter()
        .filter(|s| pid_of(s) == pa && s.kind == KIND_CLIENT)
        .collect();
    assert_eq!(clients.len(), n);
    for c in clients {
        assert_eq!(c.parent_span_id, "", "{c:?}");
        assert_eq!(c.int("http.response.status_code"), Some(200));
    }
}

/// Go → Rust → Go: the Go httpchain calls the Rust one, which calls another Go one.
fn go_rust_go(propagate: bool) -> (Vec<Span>, [i64; 3], usize) {
    require_bpf();
    let go = go_fixture("httpchain", &newest_go("httpchain"), "stripped");
    let rs = rust::fixture("httpchain", "newest", "release");
    let servers = [
        GoServer::start(&go.path),
        GoServer::start(&rs.path),
        GoServer::start(&go.path),
    ];
    let pids: Vec<u32> = servers.iter().map(GoServer::pid).collect();
    let (agent, out) = attach(&format!("go-rust-go-{propagate}"), &pids, propagate);
    let (a, b, c) = (servers[0].url(""), servers[1].url(""), servers[2].url(""));
    let n = 200;
    let reqs: Vec<Req> = (0..n)
        .map(|i| Req::get(format!("/chain/g{i}?next={b},{c}")))
        .collect();
    let resps = send(&a, &reqs, 20);
    assert!(resps.iter().all(|r| r.status == 200), "the chain answers");
    let (status, stderr) = agent.stop();
    assert!(status.success(), "{stderr}");
    if propagate {
        assert!(stderr.contains("propagation on for pids"), "{stderr}");
    }
    let pids = [pids[0] as i64, pids[1] as i64, pids[2] as i64];
    (spans_in_file(&out), pids, n)
}

#[test]
fn go_rust_go_is_one_trace_with_propagate() {
    let (spans, [pa, pb, pc], n) = go_rust_go(true);
    assert_eq!(spans.len(), 5 * n, "five spans per request");
    let mut traces: HashMap<&str, Vec<&Span>> = HashMap::new();
    for s in &spans {
        traces.entry(s.trace_id.as_str()).or_default().push(s);
    }
    assert_eq!(traces.len(), n, "one trace per request");
    for (trace, spans) in &traces {
        let find = |pid: i64, kind: i64| -> &Span {
            let m: Vec<&&Span> = spans
                .iter()
                .filter(|s| pid_of(s) == pid && s.kind == kind)
                .collect();
            assert_eq!(m.len(), 1, "trace {trace}: pid {pid} kind {kind}");
            m[0]
        };
        let (a_server, a_client) = (find(pa, KIND_SERVER), find(pa, KIND_CLIENT));
        let (b_server, b_client) = (find(pb, KIND_SERVER), find(pb, KIND_CLIENT));
        let c_server = find(pc, KIND_SERVER);
        assert_eq!(a_server.parent_span_id, "");
        assert_eq!(a_client.parent_span_id, a_server.span_id);
        assert_eq!(
            b_server.parent_span_id, a_client.span_id,
            "Rust joined Go's call"
        );
        assert_eq!(
            b_client.parent_span_id, b_server.span_id,
            "the call is the handler's child"
        );
        assert_eq!(
            c_server.parent_span_id, b_client.span_id,
            "Go joined Rust's call"
        );
        let id = last_segment(a_server);
        for s in [a_client, b_server, b_client, c_server] {
            assert_eq!(last_segment(s), id, "trace {trace} mixes requests");
        }
    }
}

#[test]
fn go_rust_go_links_in_process_without_propagate() {
    let (spans, [_, pb, _], n) = go_rust_go(false);
    assert_eq!(spans.len(), 5 * n);
    let b_servers: HashMap<&str, &Span> = spans
        .iter()
        .filter(|s| pid_of(s) == pb && s.kind == KIND_SERVER)
        .map(|s| (s.span_id.as_str(), s))
        .collect();
    let b_clients: Vec<&Span> = spans
        .iter()
        .filter(|s| pid_of(s) == pb && s.kind == KIND_CLIENT)
        .collect();
    assert_eq!(b_clients.len(), n);
    for c in b_clients {
        let parent = b_servers
            .get(c.parent_span_id.as_str())
            .unwrap_or_else(|| panic!("Rust client span without its server parent: {c:?}"));
        assert_eq!(last_segment(parent), last_segment(c));
        assert_eq!(parent.trace_id, c.trace_id);
        assert_eq!(
            parent.parent_span_id, "",
            "without propagation each process starts a trace"
        );
    }
}

#[test]
fn stripped_binaries_are_refused_with_what_to_do() {
    let f = rust::fixture("httpchain", "newest", "stripped");
    // By default spanhook falls back to the socket level for such a binary and says why.
    let out = run_spanhook(&["inspect", f.path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("strip = \"symbols\""), "{text}");
    assert!(text.contains("symbols kept"), "{text}");
    assert!(text.contains("--capture sockets"), "{text}");
    // At symbol level it is refused, with what to do.
    let out = run_spanhook(&["inspect", "--capture", "symbols", f.path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("language:  Rust"), "{text}");
    assert!(text.contains("strip = \"symbols\""), "{text}");
    assert!(text.contains("symbols kept"), "{text}");
    require_bpf();
    let server = GoServer::start(&f.path);
    let out = run_spanhook(&[
        "attach",
        "--capture",
        "symbols",
        "--pid",
        &server.pid().to_string(),
        "--duration",
        "1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "attach must refuse: {err}");
    assert!(err.contains("nothing spanhook can trace"), "{err}");
    assert!(err.contains("strip = \"symbols\""), "{err}");
}

#[test]
fn inspect_names_the_functions_chosen_and_the_crates() {
    for f in rust::all().into_iter().filter(|f| f.program == "httpchain") {
        let out = run_spanhook(&["inspect", "--json", f.path.to_str().unwrap()]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["language"], "rust", "{}", f.label());
        let rust = &v["rust"];
        assert!(rust["rustc"].as_str().is_some_and(|r| r.starts_with("1.")));
        let hyper = rust["crates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "hyper")
            .unwrap_or_else(|| panic!("{}: hyper's version is in the binary", f.label()));
        assert!(hyper["version"].as_str().unwrap().starts_with("1."));
        let candidates = rust["candidates"].as_array().unwrap();
        match f.profile.as_str() {
            "release" => {
                assert_eq!(out.status.code(), Some(0));
                let server = candidates
                    .iter()
                    .find(|c| c["capability"] == "rust-http-server" && c["role"] == "request head")
                    .unwrap();
                assert_eq!(
                    server["chosen"],
                    "<hyper::proto::h1::role::Server as hyper::proto::h1::Http1Transaction>::parse"
                );
            }
            "lto" => {
                // Fat LTO inlines the role functions: inspect says so, and names what survives.
                let server = candidates
                    .iter()
                    .find(|c| c["capability"] == "rust-http-server" && c["role"] == "request head")
                    .unwrap();
                let rejected = server["rejected"].as_array().unwrap();
                assert!(rejected[0]["reason"].as_str().unwrap().contains("inlined"));
            }
            _ => {}
        }
    }
}

/// Waits until `port` on loopback accepts connections.
fn wait_port(port: u16) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "port {port} never opened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_third_party_server_dufs_is_traced() {
    require_bpf();
    let dufs = rust::all()
        .into_iter()
        .find(|f| f.program == "dufs")
        .expect("dufs is not built; run `cargo xtask fixtures`");
    let dir = temp_dir("dufs-root");
    std::fs::write(dir.join("hello.txt"), b"hello\n").unwrap();
    let port = free_port();
    let mut child = Command::new(&dufs.path)
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dufs");
    wait_port(port);
    let (agent, out) = attach("dufs", &[child.id()], false);
    let base = format!("http://127.0.0.1:{port}");
    let n = 100;
    let reqs: Vec<Req> = (0..n)
        .map(|i| {
            if i % 4 == 0 {
                Req::get(format!("/missing-{i}.txt"))
            } else {
                Req::get("/hello.txt")
            }
        })
        .collect();
    let resps = send(&base, &reqs, 10);
    let (status, stderr) = agent.stop();
    let _ = child.kill();
    let _ = child.wait();
    assert!(status.success(), "{stderr}");
    let spans = spans_in_file(&out);
    assert_eq!(
        spans.len(),
        n,
        "{}: one span per request\n{stderr}",
        dufs.label()
    );
    let mut by_path: HashMap<String, Vec<&Span>> = HashMap::new();
    for s in &spans {
        assert_eq!(s.kind, KIND_SERVER);
        by_path
            .entry(s.str("url.path").unwrap().to_string())
            .or_default()
            .push(s);
    }
    for (r, resp) in reqs.iter().zip(&resps) {
        let got = &by_path[&r.path];
        assert!(
            got.iter()
                .all(|s| s.int("http.response.status_code") == Some(resp.status as i64)),
            "{}: {} answered {}",
            dufs.label(),
            r.path,
            resp.status
        );
        assert!(got
            .iter()
            .all(|s| s.int("server.port") == Some(port as i64) && s.name == "GET"));
    }
    assert_eq!(by_path["/hello.txt"].len(), 75);
}

#[test]
fn a_third_party_client_xh_is_traced() {
    require_bpf();
    let xh = rust::all()
        .into_iter()
        .find(|f| f.program == "xh")
        .expect("xh is not built; run `cargo xtask fixtures`");
    let f = rust::fixture("httpchain", "newest", "release");
    let server = GoServer::start(&f.path);
    let url = server.url("/echo/x1?secret=1");
    // xh reads the request body from standard input before it connects: it waits there while
    // the agent attaches, so the whole request is traced.
    let mut child = Command::new(&xh.path)
        .args(["POST", &url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start xh");
    std::thread::sleep(Duration::from_millis(300));
    let (agent, out) = attach("xh", &[child.id()], false);
    child.stdin.take().unwrap().write_all(b"{\"a\":1}").unwrap();
    let result = child.wait_with_output().unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let (status, stderr) = agent.wait();
    assert!(status.success(), "{stderr}");
    let spans = spans_in_file(&out);
    assert_eq!(spans.len(), 1, "{}: one client span\n{stderr}", xh.label());
    let s = &spans[0];
    assert_eq!(s.kind, KIND_CLIENT);
    assert_eq!(s.name, "POST");
    assert_eq!(
        s.str("url.full"),
        Some(server.url("/echo/x1").as_str()),
        "the query is never captured"
    );
    assert_eq!(s.int("http.response.status_code"), Some(200));
    assert_eq!(s.int("server.port"), Some(server.port as i64));
}
