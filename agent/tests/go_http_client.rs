//! Go HTTP client spans, their parents, and W3C trace context across processes: real Go
//! services calling each other (and a Python receiver), traced with real uprobes, and with
//! `--propagate` the `traceparent` written on the wire by the real kernel path.

mod support;

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    process::Command,
    time::Duration,
};

use support::{
    go_fixture, newest_go,
    otlp::{spans_in_file, Span, KIND_CLIENT, KIND_SERVER, STATUS_ERROR},
    require_bpf, temp_dir,
    traffic::{send, Req},
    Agent, GoServer,
};

struct Services {
    servers: Vec<GoServer>,
    agent: Agent,
    out: PathBuf,
}

/// Starts `n` httpchain services built with `go` and attaches one agent to all of them.
fn start(name: &str, go: &str, n: usize, propagate: bool) -> Services {
    start_with(name, go, n, propagate, &[])
}

/// As [`start`], each service started with `flags` (e.g. `-tls`).
fn start_with(name: &str, go: &str, n: usize, propagate: bool, flags: &[&str]) -> Services {
    require_bpf();
    let fixture = go_fixture("httpchain", go, "stripped");
    let servers: Vec<GoServer> = (0..n)
        .map(|_| {
            let mut cmd = Command::new(&fixture.path);
            cmd.args(["-addr", "127.0.0.1:0"]).args(flags);
            GoServer::start_command(cmd)
        })
        .collect();
    let out = temp_dir(name).join("spans.jsonl");
    let mut args: Vec<String> = vec!["attach".into()];
    for s in &servers {
        args.push("--pid".into());
        args.push(s.pid().to_string());
    }
    args.push("--output-file".into());
    args.push(out.to_str().unwrap().into());
    if propagate {
        args.push("--propagate".into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Agent::attach(&args);
    Services {
        servers,
        agent,
        out,
    }
}

impl Services {
    fn base(&self, i: usize) -> String {
        self.servers[i].url("")
    }

    /// Stops the agent and returns every span it exported, and its log.
    fn finish(self) -> (Vec<Span>, String) {
        let (status, stderr) = self.agent.stop();
        assert!(status.success(), "spanhook exited with {status}:\n{stderr}");
        (spans_in_file(&self.out), stderr)
    }
}

fn pid_of(s: &Span) -> i64 {
    s.resource_int("process.pid").unwrap()
}

/// The request id a span is about: the last path segment of its URL or path.
fn request_id(s: &Span) -> String {
    let url = s.str("url.path").or(s.str("url.full")).unwrap_or("");
    url.rsplit('/').next().unwrap_or("").to_string()
}

#[test]
fn a_three_service_chain_is_one_trace_with_propagation() {
    let svc = start("chain-propagate", &newest_go("httpchain"), 3, true);
    let (a, b, c) = (svc.base(0), svc.base(1), svc.base(2));
    let (pa, pb, pc) = (
        svc.servers[0].pid() as i64,
        svc.servers[1].pid() as i64,
        svc.servers[2].pid() as i64,
    );
    let n = 1000;
    let reqs: Vec<Req> = (0..n)
        .map(|i| Req::get(format!("/chain/r{i}?next={b},{c}")))
        .collect();
    let resps = send(&a, &reqs, 50);
    assert!(
        resps.iter().all(|r| r.status == 200),
        "every request succeeds through the chain"
    );
    let (spans, stderr) = svc.finish();
    assert!(stderr.contains("propagation on for pids"), "{stderr}");
    assert_eq!(spans.len(), 5 * n, "five spans per request:\n{stderr}");
    let mut traces: HashMap<&str, Vec<&Span>> = HashMap::new();
    for s in &spans {
        traces.entry(s.trace_id.as_str()).or_default().push(s);
    }
    if traces.len() != n {
        let broken: Vec<String> = traces
            .values()
            .filter(|t| t.len() != 5)
            .map(|t| {
                format!(
                    "{:?}",
                    t.iter()
                        .map(|s| (pid_of(s), s.kind, request_id(s), s.parent_span_id.clone()))
                        .collect::<Vec<_>>()
                )
            })
            .collect();
        panic!(
            "{} traces for {n} requests; broken:\n{}\n{stderr}",
            traces.len(),
            broken.join("\n")
        );
    }
    let mut ids = HashSet::new();
    for (trace, spans) in &traces {
        let find = |pid: i64, kind: i64| -> &Span {
            let m: Vec<&&Span> = spans
                .iter()
                .filter(|s| pid_of(s) == pid && s.kind == kind)
                .collect();
            assert_eq!(
                m.len(),
                1,
                "trace {trace}: {} spans of kind {kind} in pid {pid}",
                m.len()
            );
            m[0]
        };
        let a_server = find(pa, KIND_SERVER);
        let a_client = find(pa, KIND_CLIENT);
        let b_server = find(pb, KIND_SERVER);
        let b_client = find(pb, KIND_CLIENT);
        let c_server = find(pc, KIND_SERVER);
        assert_eq!(a_server.parent_span_id, "", "A's server span is the root");
        assert_eq!(a_client.parent_span_id, a_server.span_id);
        assert_eq!(
            b_server.parent_span_id, a_client.span_id,
            "B joined A's client span"
        );
        assert_eq!(b_client.parent_span_id, b_server.span_id);
        assert_eq!(
            c_server.parent_span_id, b_client.span_id,
            "C joined B's client span"
        );
        // All five are about the same request.
        let id = request_id(a_server);
        for s in [a_client, b_server, b_client, c_server] {
            assert_eq!(request_id(s), id, "trace {trace} mixes requests");
        }
        assert!(ids.insert(id));
        assert!(a_client
            .str("url.full")
            .unwrap()
            .starts_with(&format!("{b}/chain/")));
        assert_eq!(a_client.int("http.response.status_code"), Some(200));
        assert!(a_server.start_ns <= a_client.start_ns && a_client.end_ns <= a_server.end_ns);
    }
}

#[test]
fn without_propagation_each_client_span_is_the_child_of_its_own_server_span() {
    let svc = start("chain-local", &newest_go("httpchain"), 3, false);
    let (a, b, c) = (svc.base(0), svc.base(1), svc.base(2));
    let pc = svc.servers[2].pid() as i64;
    let n = 300;
    let reqs: Vec<Req> = (0..n)
        .map(|i| Req::get(format!("/chain/q{i}?next={b},{c}")))
        .collect();
    assert!(send(&a, &reqs, 30).iter().all(|r| r.status == 200));
    let (spans, _) = svc.finish();
    assert_eq!(spans.len(), 5 * n);
    let servers: HashMap<(i64, &str), &Span> = spans
        .iter()
        .filter(|s| s.kind == KIND_SERVER)
        .map(|s| ((pid_of(s), s.span_id.as_str()), s))
        .collect();
    let mut checked = 0;
    for client in spans.iter().filter(|s| s.kind == KIND_CLIENT) {
        let parent = servers
            .get(&(pid_of(client), client.parent_span_id.as_str()))
            .unwrap_or_else(|| {
                panic!("client span without a server parent in its process: {client:?}")
            });
        assert_eq!(parent.trace_id, client.trace_id);
        assert_eq!(
            request_id(parent),
            request_id(client),
            "a client span under another request's server span"
        );
        checked += 1;
    }
    assert_eq!(checked, 2 * n);
    // Without propagation, each process's server span starts its own trace.
    for s in spans.iter().filter(|s| s.kind == KIND_SERVER) {
        assert_eq!(s.parent_span_id, "", "{s:?}");
    }
    assert!(spans.iter().any(|s| pid_of(s) == pc));
}

/// Sends `n` requests of one shape and returns, per request id, the server span of the
/// first service and the client spans of the same process.
fn run_shape(go: &str, shape: &str, extra: &str, n: usize) -> Vec<(Span, Vec<Span>)> {
    let svc = start(&format!("shape-{shape}-{go}"), go, 2, false);
    let (a, b) = (svc.base(0), svc.base(1));
    let pa = svc.servers[0].pid() as i64;
    let reqs: Vec<Req> = (0..n)
        .map(|i| Req::get(format!("/{shape}/s{i}?next={b}{extra}")))
        .collect();
    let resps = send(&a, &reqs, 10);
    assert!(
        resps.iter().all(|r| r.status == 200),
        "{shape}: {:?}",
        resps.iter().find(|r| r.status != 200)
    );
    let (spans, _) = svc.finish();
    let mut out = Vec::new();
    for server in spans
        .iter()
        .filter(|s| pid_of(s) == pa && s.kind == KIND_SERVER)
    {
        let id = request_id(server);
        let clients: Vec<Span> = spans
            .iter()
            .filter(|s| {
                pid_of(s) == pa
                    && s.kind == KIND_CLIENT
                    && request_id(s).split('-').next() == Some(id.as_str())
            })
            .cloned()
            .collect();
        out.push((server.clone(), clients));
    }
    assert_eq!(out.len(), n, "{shape}: one server span per request");
    out
}

fn assert_linked(shape: &str, results: &[(Span, Vec<Span>)], per_request: usize) {
    for (server, clients) in results {
        assert_eq!(
            clients.len(),
            per_request,
            "{shape}: client spans of {}",
            request_id(server)
        );
        for c in clients {
            assert_eq!(
                c.parent_span_id,
                server.span_id,
                "{shape}: {} is not linked to its request",
                c.str("url.full").unwrap()
            );
            assert_eq!(c.trace_id, server.trace_id);
        }
    }
}

fn assert_not_linked(shape: &str, results: &[(Span, Vec<Span>)]) {
    for (server, clients) in results {
        assert_eq!(clients.len(), 1, "{shape}");
        assert_eq!(
            clients[0].parent_span_id, "",
            "{shape}: the rule does not reach this call; it starts a trace"
        );
        assert_ne!(clients[0].trace_id, server.trace_id);
    }
}

#[test]
fn context_and_goroutine_shapes_link_to_their_request() {
    let go = newest_go("httpchain");
    assert_linked("direct", &run_shape(&go, "direct", "", 40), 1);
    assert_linked("fanout", &run_shape(&go, "fanout", "&n=3", 40), 3);
    assert_linked("errgroup", &run_shape(&go, "errgroup", "&n=3", 40), 3);
    assert_linked("pool", &run_shape(&go, "pool", "", 40), 1);
    // A goroutine started by the handler, without the request's context: linked through
    // runtime.g.parentGoid (Go 1.21+).
    assert_linked("detached", &run_shape(&go, "detached", "", 40), 1);
}

#[test]
fn shapes_the_rule_cannot_link_start_their_own_trace() {
    // Two goroutine levels away from the handler without the request's context.
    assert_not_linked(
        "nested",
        &run_shape(&newest_go("httpchain"), "nested", "", 20),
    );
    // Before Go 1.21 there is no parentGoid: a detached goroutine cannot be linked...
    assert_not_linked(
        "detached on Go 1.20",
        &run_shape("1.20.14", "detached", "", 20),
    );
    // ...while the context chain works on every release.
    assert_linked("pool on Go 1.20", &run_shape("1.20.14", "pool", "", 20), 1);
    assert_linked(
        "fanout on Go 1.20",
        &run_shape("1.20.14", "fanout", "&n=2", 20),
        2,
    );
}

#[test]
fn a_curl_request_with_traceparent_is_joined_by_server_and_client_spans() {
    let svc = start("curl-parent", &newest_go("httpchain"), 2, false);
    let (a, b) = (svc.base(0), svc.base(1));
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
    let (spans, _) = svc.finish();
    let pa = svc_pid(&spans, "/direct/c1");
    let server = spans
        .iter()
        .find(|s| s.kind == KIND_SERVER && pid_of(s) == pa)
        .unwrap();
    assert_eq!(server.trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(server.parent_span_id, "b7ad6b7169203331");
    let client = spans.iter().find(|s| s.kind == KIND_CLIENT).unwrap();
    assert_eq!(client.trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(client.parent_span_id, server.span_id);
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
fn failed_calls_are_error_spans() {
    let svc = start("failed", &newest_go("httpchain"), 1, false);
    let a = svc.base(0);
    // Nothing listens on port 1: connection refused.
    let resps = send(&a, &[Req::get("/direct/f1?next=http://127.0.0.1:1")], 1);
    assert_eq!(resps[0].status, 502);
    let (spans, _) = svc.finish();
    let client = spans
        .iter()
        .find(|s| s.kind == KIND_CLIENT)
        .expect("a client span for the failed call");
    assert_eq!(client.status_code, STATUS_ERROR);
    assert!(
        client.str("error.type").is_some_and(|t| !t.is_empty()),
        "{client:?}"
    );
    assert_eq!(client.int("http.response.status_code"), None);
    assert_eq!(client.str("server.address"), Some("127.0.0.1"));
    assert_eq!(client.int("server.port"), Some(1));
    let server = spans.iter().find(|s| s.kind == KIND_SERVER).unwrap();
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(server.int("http.response.status_code"), Some(502));
}

/// Runs `/post/ID` against the Python recorder, with or without the agent; returns what the
/// recorder saw.
fn post_to_recorder(propagate: Option<bool>, n: usize) -> (Vec<serde_json::Value>, Vec<Span>) {
    let dir = temp_dir(&format!("recorder-{propagate:?}"));
    let record = dir.join("requests.jsonl");
    let mut cmd = Command::new("python3");
    cmd.arg(support::root().join("fixtures/python/recorder.py"))
        .arg(&record);
    let recorder = GoServer::start_command(cmd);
    let fixture = go_fixture("httpchain", &newest_go("httpchain"), "stripped");
    let a = GoServer::start(&fixture.path);
    let out = dir.join("spans.jsonl");
    let agent = propagate.map(|p| {
        let pid = a.pid().to_string();
        let mut args = vec![
            "attach",
            "--pid",
            &pid,
            "--output-file",
            out.to_str().unwrap(),
        ];
        if p {
            args.push("--propagate");
        }
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        Agent::attach(&args.iter().map(String::as_str).collect::<Vec<_>>())
    });
    let reqs: Vec<Req> = (0..n)
        .map(|i| Req::get(format!("/post/p{i}?next={}", recorder.url(""))))
        .collect();
    let resps = send(&a.url(""), &reqs, 4);
    assert!(
        resps.iter().all(|r| r.status == 200),
        "the body came back unchanged"
    );
    let spans = match agent {
        Some(agent) => {
            let (status, stderr) = agent.stop();
            assert!(status.success(), "{stderr}");
            spans_in_file(&out)
        }
        None => Vec::new(),
    };
    std::thread::sleep(Duration::from_millis(200));
    let seen: Vec<serde_json::Value> = std::fs::read_to_string(&record)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(seen.len(), n);
    (seen, spans)
}

fn headers(r: &serde_json::Value) -> Vec<(String, String)> {
    r["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_string(),
                h[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_non_go_receiver_gets_a_valid_traceparent_and_nothing_else_changes() {
    let n = 30;
    let (without, _) = post_to_recorder(None, n);
    let (with, spans) = post_to_recorder(Some(true), n);
    let by_path = |v: &[serde_json::Value]| -> HashMap<String, serde_json::Value> {
        v.iter()
            .map(|r| (r["path"].as_str().unwrap().to_string(), r.clone()))
            .collect()
    };
    let (without, with) = (by_path(&without), by_path(&with));
    let clients: HashMap<String, &Span> = spans
        .iter()
        .filter(|s| s.kind == KIND_CLIENT)
        .map(|s| {
            (
                s.str("url.full")
                    .unwrap()
                    .rsplit_once("/echo/")
                    .unwrap()
                    .1
                    .to_string(),
                s,
            )
        })
        .collect();
    for (path, got) in &with {
        let before = &without[path];
        assert_eq!(got["method"], "POST");
        assert_eq!(
            got["body_len"], before["body_len"],
            "{path}: body length changed"
        );
        assert_eq!(
            got["body_sha256"], before["body_sha256"],
            "{path}: body bytes changed"
        );
        let mut h = headers(got);
        let tp: Vec<(String, String)> = h
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("traceparent"))
            .cloned()
            .collect();
        assert_eq!(tp.len(), 1, "{path}: exactly one traceparent: {h:?}");
        let value = &tp[0].1;
        let parts: Vec<&str> = value.split('-').collect();
        assert_eq!(parts.len(), 4, "{value}");
        assert_eq!(parts[0], "00");
        assert!(
            parts[1].len() == 32 && parts[2].len() == 16 && parts[3].len() == 2,
            "{value}"
        );
        assert!(
            value
                .chars()
                .all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "{value}"
        );
        let id = path.trim_start_matches("/echo/");
        let client = clients
            .get(id)
            .unwrap_or_else(|| panic!("no client span for {id}"));
        assert_eq!(
            parts[1], client.trace_id,
            "{path}: the trace id is the client span's"
        );
        assert_eq!(
            parts[2], client.span_id,
            "{path}: the parent id is the client span's id"
        );
        // Every other header is exactly what the program sent without the agent (but Host,
        // which names each run's own recorder port).
        let strip = |h: &mut Vec<(String, String)>| {
            h.retain(|(k, _)| !k.eq_ignore_ascii_case("traceparent") && k != "Host")
        };
        let mut b = headers(before);
        strip(&mut h);
        strip(&mut b);
        assert_eq!(h, b, "{path}: other headers changed");
    }
}

/// Requests `url` with curl (a real client, with HTTP/2 and TLS) and returns the status.
fn curl(args: &[&str], url: &str) -> u16 {
    let out = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl {args:?} {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).parse().unwrap()
}

fn one<'a>(spans: &'a [Span], pid: u32, kind: i64, path: &str) -> &'a Span {
    let found: Vec<&Span> = spans
        .iter()
        .filter(|s| pid_of(s) == pid as i64 && s.kind == kind)
        .filter(|s| {
            s.str("url.path")
                .or(s.str("url.full"))
                .is_some_and(|u| u.ends_with(path))
        })
        .collect();
    assert_eq!(found.len(), 1, "{kind} span of {path} in {pid}: {spans:?}");
    found[0]
}

#[test]
fn https_and_http2_over_tls_spans_are_correct() {
    for go in [newest_go("httpchain"), "1.20.14".to_string()] {
        let svc = start_with(&format!("tls-{go}"), &go, 2, false, &["-tls"]);
        let (a, b) = (
            svc.base(0).replace("http:", "https:"),
            svc.base(1).replace("http:", "https:"),
        );
        let (pa, pb) = (svc.servers[0].pid(), svc.servers[1].pid());
        assert_eq!(curl(&["--http2"], &format!("{a}/chain/h2x?next={b}")), 200);
        assert_eq!(curl(&["--http2"], &format!("{a}/missing")), 404);
        assert_eq!(curl(&["--http1.1"], &format!("{a}/chain/h1x")), 200);
        let (spans, _) = svc.finish();
        let server = one(&spans, pa, KIND_SERVER, "/chain/h2x");
        assert_eq!(server.str("url.scheme"), Some("https"), "{go}");
        assert_eq!(server.str("network.protocol.version"), Some("2"), "{go}");
        assert_eq!(server.int("http.response.status_code"), Some(200), "{go}");
        let client = one(&spans, pa, KIND_CLIENT, "/chain/h2x");
        assert!(
            client
                .str("url.full")
                .unwrap()
                .starts_with("https://127.0.0.1:"),
            "{go}"
        );
        assert_eq!(
            client.str("network.protocol.version"),
            Some("2"),
            "{go}: Go's client speaks HTTP/2 over TLS"
        );
        assert_eq!(client.int("http.response.status_code"), Some(200), "{go}");
        assert_eq!(client.parent_span_id, server.span_id, "{go}");
        let downstream = one(&spans, pb, KIND_SERVER, "/chain/h2x");
        assert_eq!(
            downstream.str("network.protocol.version"),
            Some("2"),
            "{go}"
        );
        assert_eq!(downstream.str("url.scheme"), Some("https"), "{go}");
        let missing = one(&spans, pa, KIND_SERVER, "/missing");
        assert_eq!(
            missing.int("http.response.status_code"),
            Some(404),
            "{go}: status of an HTTP/2 response"
        );
        let h1 = one(&spans, pa, KIND_SERVER, "/chain/h1x");
        assert_eq!(h1.str("network.protocol.version"), Some("1.1"), "{go}");
        assert_eq!(h1.str("url.scheme"), Some("https"), "{go}");
    }
}

#[test]
fn https_1_1_client_spans_are_correct() {
    let svc = start_with(
        "tls-h1",
        &newest_go("httpchain"),
        2,
        false,
        &["-tls", "-h1"],
    );
    let (a, b) = (
        svc.base(0).replace("http:", "https:"),
        svc.base(1).replace("http:", "https:"),
    );
    let pa = svc.servers[0].pid();
    assert_eq!(
        curl(&["--http1.1"], &format!("{a}/direct/s1?next={b}")),
        200
    );
    let (spans, _) = svc.finish();
    let client = one(&spans, pa, KIND_CLIENT, "/leaf/s1");
    assert_eq!(client.str("network.protocol.version"), Some("1.1"));
    assert_eq!(
        client.int("server.port"),
        Some(b.rsplit(':').next().unwrap().parse().unwrap())
    );
    assert!(client.str("url.full").unwrap().starts_with("https://"));
    let server = one(&spans, pa, KIND_SERVER, "/direct/s1");
    assert_eq!(client.parent_span_id, server.span_id);
}

#[test]
fn cleartext_http2_spans_are_correct() {
    // The standard library's cleartext HTTP/2 arrived in Go 1.24.
    let svc = start_with("h2c", &newest_go("httpchain"), 2, false, &["-h2c"]);
    let (a, b) = (svc.base(0), svc.base(1));
    let pa = svc.servers[0].pid();
    curl(
        &["--http2-prior-knowledge"],
        &format!("{a}/chain/c1?next={b}"),
    );
    let (spans, _) = svc.finish();
    let server = one(&spans, pa, KIND_SERVER, "/chain/c1");
    assert_eq!(server.str("network.protocol.version"), Some("2"));
    assert_eq!(server.str("url.scheme"), Some("http"));
    let client = one(&spans, pa, KIND_CLIENT, "/chain/c1");
    assert_eq!(client.str("network.protocol.version"), Some("2"));
    assert_eq!(client.parent_span_id, server.span_id);
}
