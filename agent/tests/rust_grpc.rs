//! Rust gRPC at symbol level: a tonic server and a tonic client (fixtures/rust/grpcchain, built
//! from crates.io), traced with real uprobes: unary and the three streaming kinds, error
//! statuses, 100 concurrent RPCs on one HTTP/2 connection, and a server whose handler calls
//! another server (the client span's parent is the handler's server span).

mod support;

use std::{
    collections::HashMap,
    io::Write,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::Duration,
};

use support::{
    otlp::{spans_in_file, Span, KIND_CLIENT, KIND_SERVER, STATUS_ERROR},
    require_bpf, rust, temp_dir, Agent, GoServer, Lines,
};

const SERVICE: &str = "spanhook.test.Chain";

fn binary() -> PathBuf {
    rust::fixture("grpcchain", "newest", "release").path
}

fn method_of(kind: &str) -> &'static str {
    match kind {
        "unary" => "Unary",
        "server" => "ServerStream",
        "client" => "ClientStream",
        "bidi" => "Bidi",
        other => panic!("unknown kind {other}"),
    }
}

/// The fixture's client: connects (one channel, one HTTP/2 connection), then runs its RPCs
/// when told to, so the agent can attach in between.
struct Driver {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines,
}

impl Driver {
    fn start(bin: &Path, port: u16, rpcs: &str, concurrency: usize, tp: Option<&str>) -> Driver {
        let mut cmd = Command::new(bin);
        cmd.args(["-drive", &format!("127.0.0.1:{port}"), "-rpcs", rpcs])
            .args(["-concurrency", &concurrency.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(tp) = tp {
            cmd.args(["-traceparent", tp]);
        }
        let mut child = cmd.spawn().expect("start the grpcchain driver");
        let stdin = child.stdin.take();
        let stdout = Lines::collect_from(child.stdout.take().unwrap());
        stdout
            .wait_for("ready", Duration::from_secs(20))
            .expect("the driver did not connect");
        Driver {
            child,
            stdin,
            stdout,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs the RPCs; returns (kind, code) per RPC, in the order they were listed.
    fn run(&mut self) -> Vec<(String, i64)> {
        writeln!(self.stdin.as_mut().unwrap(), "go").unwrap();
        self.stdout
            .wait_for("done", Duration::from_secs(120))
            .unwrap_or_else(|| panic!("the driver did not finish:\n{}", self.stdout.text()));
        let mut out: Vec<(usize, String, i64)> = self
            .stdout
            .text()
            .lines()
            .filter_map(|l| {
                let mut w = l.strip_prefix("rpc ")?.split(' ');
                Some((
                    w.next()?.parse().ok()?,
                    w.next()?.to_string(),
                    w.next()?.parse().ok()?,
                ))
            })
            .collect();
        out.sort();
        out.into_iter().map(|(_, k, c)| (k, c)).collect()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn attach(name: &str, pids: &[u32]) -> (Agent, PathBuf) {
    require_bpf();
    let out = temp_dir(name).join("spans.jsonl");
    let mut args: Vec<String> = vec!["attach".into()];
    for pid in pids {
        args.push("--pid".into());
        args.push(pid.to_string());
    }
    args.push("--output-file".into());
    args.push(out.to_str().unwrap().into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (Agent::attach(&args), out)
}

fn finish(agent: Agent, out: &Path) -> (Vec<Span>, String) {
    let (status, stderr) = agent.stop();
    assert!(status.success(), "spanhook exited with {status}:\n{stderr}");
    (spans_in_file(out), stderr)
}

fn pid_of(s: &Span) -> u32 {
    s.resource_int("process.pid").unwrap() as u32
}

fn of(spans: &[Span], pid: u32, kind: i64) -> Vec<&Span> {
    spans
        .iter()
        .filter(|s| pid_of(s) == pid && s.kind == kind)
        .collect()
}

/// (span name, status code) of each span, counted.
fn tally(spans: &[&Span]) -> HashMap<(String, i64), usize> {
    let mut m = HashMap::new();
    for s in spans {
        let code = s
            .int("rpc.grpc.status_code")
            .unwrap_or_else(|| panic!("no status code: {s:?}"));
        *m.entry((s.name.clone(), code)).or_default() += 1;
    }
    m
}

/// (span name, status code) the driver saw, counted.
fn expected(results: &[(String, i64)]) -> HashMap<(String, i64), usize> {
    let mut m = HashMap::new();
    for (kind, code) in results {
        *m.entry((format!("{SERVICE}/{}", method_of(kind)), *code))
            .or_default() += 1;
    }
    m
}

/// The agent's closing lines: events read, probe counters.
fn diagnostics(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| l.contains("probe counters") || l.contains("stopping"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts two tallies are equal, showing only where they differ.
fn assert_tally(
    got: &HashMap<(String, i64), usize>,
    want: &HashMap<(String, i64), usize>,
    what: &str,
) {
    let mut diff: Vec<String> = want
        .keys()
        .chain(got.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| got.get(*k) != want.get(*k))
        .map(|k| format!("{k:?}: got {:?}, want {:?}", got.get(k), want.get(k)))
        .collect();
    diff.sort();
    assert!(diff.is_empty(), "{what}:\n{}", diff.join("\n"));
}

/// Checks every span's attributes, address (`port`: the server's) and status rule (server: only
/// the server-fault codes are errors; client: every non-OK code).
fn check_conventions(spans: &[&Span], server: bool, port: u16) {
    for s in spans {
        assert_eq!(s.str("rpc.system"), Some("grpc"), "{s:?}");
        assert_eq!(s.str("rpc.service"), Some(SERVICE), "{s:?}");
        let method = s.name.rsplit('/').next().unwrap();
        assert_eq!(s.str("rpc.method"), Some(method), "{s:?}");
        assert!(s.end_ns >= s.start_ns);
        let code = s.int("rpc.grpc.status_code").unwrap();
        let error = if server {
            matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
        } else {
            code != 0
        };
        assert_eq!(s.status_code == STATUS_ERROR, error, "{s:?}");
        // The server's `:authority`; for a client, the one its request was sent with.
        assert_eq!(s.str("server.address"), Some("127.0.0.1"), "{s:?}");
        assert_eq!(s.int("server.port"), Some(port as i64), "{s:?}");
    }
}

fn spec(kind: &str, code: i64) -> String {
    format!("{kind}:{code}")
}

#[test]
fn unary_and_streaming_rpcs_with_error_statuses() {
    let bin = binary();
    let server = GoServer::start(&bin);
    let mut rpcs = Vec::new();
    for kind in ["unary", "server", "client", "bidi"] {
        for code in [0, 3, 5, 13, 14] {
            rpcs.push(spec(kind, code));
        }
    }
    let mut driver = Driver::start(&bin, server.port, &rpcs.join(","), 1, None);
    let (agent, out) = attach("rust-grpc-kinds", &[server.pid(), driver.pid()]);
    let results = driver.run();
    assert_eq!(results.len(), rpcs.len());
    for ((kind, code), want) in results.iter().zip(&rpcs) {
        assert_eq!(&spec(kind, *code), want, "the client got another status");
    }
    let (spans, stderr) = finish(agent, &out);
    let servers = of(&spans, server.pid(), KIND_SERVER);
    let clients = of(&spans, driver.pid(), KIND_CLIENT);
    assert_tally(
        &tally(&servers),
        &expected(&results),
        "one server span per RPC, with its status",
    );
    assert_tally(
        &tally(&clients),
        &expected(&results),
        "one client span per RPC, with its status",
    );
    let _ = stderr;
    check_conventions(&servers, true, server.port);
    check_conventions(&clients, false, server.port);
    for s in &servers {
        assert_eq!(s.parent_span_id, "", "no traceparent was sent: {s:?}");
    }
    for c in &clients {
        assert_eq!(c.parent_span_id, "", "the driver serves nothing: {c:?}");
    }
}

#[test]
fn hundred_concurrent_rpcs_on_one_connection_each_matched() {
    let bin = binary();
    let server = GoServer::start(&bin);
    let kinds = ["unary", "server", "client", "bidi"];
    let codes = [0, 0, 5, 13, 0, 7, 14, 2, 0, 16, 4];
    let rpcs: Vec<String> = (0..100)
        .map(|i| spec(kinds[i % 4], codes[(i / 4 + i) % codes.len()]))
        .collect();
    let mut driver = Driver::start(&bin, server.port, &rpcs.join(","), 100, None);
    let (agent, out) = attach("rust-grpc-concurrent", &[server.pid(), driver.pid()]);
    let results = driver.run();
    assert_eq!(results.len(), 100);
    for ((kind, code), want) in results.iter().zip(&rpcs) {
        assert_eq!(&spec(kind, *code), want);
    }
    let (spans, stderr) = finish(agent, &out);
    let servers = of(&spans, server.pid(), KIND_SERVER);
    let clients = of(&spans, driver.pid(), KIND_CLIENT);
    let diag = diagnostics(&stderr);
    assert_tally(
        &tally(&servers),
        &expected(&results),
        &format!("server spans\n{diag}"),
    );
    assert_tally(
        &tally(&clients),
        &expected(&results),
        &format!("client spans\n{diag}"),
    );
    assert_eq!(servers.len(), 100, "{stderr}");
    assert_eq!(clients.len(), 100, "{stderr}");
    check_conventions(&servers, true, server.port);
    check_conventions(&clients, false, server.port);
    let ids: std::collections::HashSet<&str> = servers.iter().map(|s| s.span_id.as_str()).collect();
    assert_eq!(ids.len(), 100, "distinct server spans");
}

#[test]
fn a_call_awaited_by_a_handler_is_the_child_of_its_server_span() {
    let bin = binary();
    let a = GoServer::start(&bin);
    let b = GoServer::start(&bin);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let tp = format!("00-{trace}-{parent}-01");
    let rpcs: Vec<String> = (0..20)
        .map(|i| {
            format!(
                "unary:{}:127.0.0.1:{}",
                if i % 4 == 3 { 5 } else { 0 },
                b.port
            )
        })
        .collect();
    let mut driver = Driver::start(&bin, a.port, &rpcs.join(","), 10, Some(&tp));
    let (agent, out) = attach("rust-grpc-chain", &[a.pid(), b.pid(), driver.pid()]);
    let results = driver.run();
    assert_eq!(results.len(), 20);
    let (spans, stderr) = finish(agent, &out);
    let a_servers = of(&spans, a.pid(), KIND_SERVER);
    let a_clients = of(&spans, a.pid(), KIND_CLIENT);
    let b_servers = of(&spans, b.pid(), KIND_SERVER);
    assert_tally(&tally(&a_servers), &expected(&results), "A's server spans");
    assert_tally(&tally(&a_clients), &expected(&results), "A's client spans");
    assert_tally(&tally(&b_servers), &expected(&results), "B's server spans");
    check_conventions(&a_servers, true, a.port);
    check_conventions(&a_clients, false, b.port);
    check_conventions(&b_servers, true, b.port);
    // The incoming traceparent (gRPC metadata) is honored.
    for s in &a_servers {
        assert_eq!(s.trace_id, trace, "{s:?}");
        assert_eq!(s.parent_span_id, parent, "{s:?}");
    }
    // Each call A's handler made is the child of that handler's server span.
    let by_id: HashMap<&str, &Span> = a_servers.iter().map(|s| (s.span_id.as_str(), *s)).collect();
    let mut parents = std::collections::HashSet::new();
    for c in &a_clients {
        let p = by_id
            .get(c.parent_span_id.as_str())
            .unwrap_or_else(|| panic!("client span without its server span: {c:?}\n{stderr}"));
        assert_eq!(c.trace_id, p.trace_id);
        assert_eq!(c.name, p.name);
        assert_eq!(
            c.int("rpc.grpc.status_code"),
            p.int("rpc.grpc.status_code"),
            "the handler relays the status it got"
        );
        assert!(
            c.start_ns >= p.start_ns && c.end_ns <= p.end_ns,
            "{c:?} {p:?}"
        );
        assert!(
            parents.insert(c.parent_span_id.clone()),
            "two calls, one parent"
        );
    }
}
