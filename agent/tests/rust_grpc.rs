//! Rust gRPC at symbol level: tonic servers and clients (fixtures/rust/grpcchain, built from
//! crates.io), traced with real uprobes, on each build: tonic's newest and oldest supported
//! releases (0.14; 0.12.0 with h2 0.4.5 and hyper 1.4.0), each in the default release profile
//! and with fat LTO + codegen-units=1 + panic=abort.
//!
//! A driver makes 1000 RPCs, 100 at a time on one HTTP/2 connection, to server A: unary and the
//! three streaming kinds with OK and error statuses (trailers, and trailers-only responses); a
//! tenth of them go through A's handler, which calls server B and relays its answer, calls B
//! twice at once (`tokio::join!`), calls a port nothing listens on (refused: no grpc-status) or
//! calls B with a deadline B does not meet. A second driver sends a `traceparent` with each of
//! its calls, which A's handler passes on to B; a third calls a port nothing listens on.
//!
//! Every RPC must be exactly one span of each side, with the name, kind, parent, `rpc.*`
//! attributes, address, status and `error.type` the client sent and got; every call a handler
//! awaits is the child of that handler's server span. One agent and few processes per build:
//! attaching to and detaching from each process takes seconds.

mod support;

use std::{
    collections::{HashMap, HashSet},
    io::Write,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::Duration,
};

use support::{
    otlp::{spans_in_file, Span, KIND_CLIENT, KIND_SERVER, STATUS_ERROR},
    require_bpf,
    rust::{self, RustFixture},
    temp_dir, Agent, GoServer, Lines,
};

const SERVICE: &str = "spanhook.test.Chain";

#[test]
fn tonic_newest_release_every_rpc_is_one_correct_span() {
    every_rpc_is_one_correct_span(&rust::fixture("grpcchain", "newest", "release"));
}

#[test]
fn tonic_newest_fat_lto_every_rpc_is_one_correct_span() {
    every_rpc_is_one_correct_span(&rust::fixture("grpcchain", "newest", "lto"));
}

#[test]
fn tonic_oldest_release_every_rpc_is_one_correct_span() {
    every_rpc_is_one_correct_span(&rust::fixture("grpcchain", "oldest", "release"));
}

#[test]
fn tonic_oldest_fat_lto_every_rpc_is_one_correct_span() {
    every_rpc_is_one_correct_span(&rust::fixture("grpcchain", "oldest", "lto"));
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

/// The name gRPC gives `code`, as `error.type` carries it.
fn code_name(code: i64) -> &'static str {
    [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ][code as usize]
}

/// The fixture's client: connects (one channel, one HTTP/2 connection), then runs its RPCs
/// when told to, so the agent can attach in between.
struct Driver {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines,
    /// The RPCs it was given, as listed.
    rpcs: Vec<String>,
}

impl Driver {
    /// `lazy`: connect on the first RPC (so a refused connection fails the RPCs, not the
    /// driver).
    fn start(
        bin: &Path,
        port: u16,
        rpcs: Vec<String>,
        concurrency: usize,
        tp: Option<&str>,
        lazy: bool,
    ) -> Driver {
        let mut cmd = Command::new(bin);
        if lazy {
            cmd.arg("-lazy");
        }
        cmd.args([
            "-drive",
            &format!("127.0.0.1:{port}"),
            "-rpcs",
            &rpcs.join(","),
        ])
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
            rpcs,
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
        assert_eq!(out.len(), self.rpcs.len(), "{}", self.stdout.text());
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
fn expected<'a>(
    results: impl IntoIterator<Item = &'a (String, i64)>,
) -> HashMap<(String, i64), usize> {
    let mut m = HashMap::new();
    for (kind, code) in results {
        *m.entry((format!("{SERVICE}/{}", method_of(kind)), *code))
            .or_default() += 1;
    }
    m
}

/// Asserts two tallies are equal, showing only where they differ.
fn assert_tally(
    got: &HashMap<(String, i64), usize>,
    want: &HashMap<(String, i64), usize>,
    what: &str,
) {
    let diff: Vec<String> = want
        .keys()
        .chain(got.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| got.get(*k) != want.get(*k))
        .map(|k| format!("{k:?}: got {:?}, want {:?}", got.get(k), want.get(k)))
        .collect();
    assert!(diff.is_empty(), "{what}:\n{}", diff.join("\n"));
}

/// Checks every span's attributes, address (`port`: the server's; `None`: a call that never
/// reached one) and status rule (server: only the server-fault codes are errors; client: every
/// non-OK code), with its `error.type`.
fn check_conventions(label: &str, spans: &[&Span], server: bool, port: Option<u16>) {
    for s in spans {
        assert_eq!(s.kind, if server { KIND_SERVER } else { KIND_CLIENT });
        assert_eq!(s.str("rpc.system"), Some("grpc"), "{label}: {s:?}");
        assert_eq!(s.str("rpc.service"), Some(SERVICE), "{label}: {s:?}");
        let method = s.name.rsplit('/').next().unwrap();
        assert_eq!(s.str("rpc.method"), Some(method), "{label}: {s:?}");
        assert!(s.end_ns >= s.start_ns, "{label}: {s:?}");
        let code = s.int("rpc.grpc.status_code").unwrap();
        let error = if server {
            matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
        } else {
            code != 0
        };
        assert_eq!(s.status_code == STATUS_ERROR, error, "{label}: {s:?}");
        let error_type = error.then(|| code_name(code));
        assert_eq!(s.str("error.type"), error_type, "{label}: {s:?}");
        // The server's `:authority`; for a client, the one its request was sent with.
        match port {
            Some(port) => {
                assert_eq!(s.str("server.address"), Some("127.0.0.1"), "{label}: {s:?}");
                assert_eq!(s.int("server.port"), Some(port as i64), "{label}: {s:?}");
            }
            None => assert_eq!(s.str("server.address"), None, "{label}: {s:?}"),
        }
    }
}

/// Asserts each span of `children` is the child of one span of `parents` (same trace, within
/// it, relaying its status), one child per parent; returns them by parent.
fn children_of<'a>(
    label: &str,
    parents: &[&'a Span],
    children: &[&'a Span],
) -> HashMap<&'a str, Vec<&'a Span>> {
    let by_id: HashMap<&str, &Span> = parents.iter().map(|s| (s.span_id.as_str(), *s)).collect();
    let mut out: HashMap<&str, Vec<&Span>> = HashMap::new();
    for c in children {
        let p = by_id
            .get(c.parent_span_id.as_str())
            .unwrap_or_else(|| panic!("{label}: client span without its server span: {c:?}"));
        assert_eq!(c.trace_id, p.trace_id, "{label}: {c:?}");
        assert!(
            c.start_ns >= p.start_ns && c.end_ns <= p.end_ns,
            "{label}: the call is not within its handler: {c:?} {p:?}"
        );
        out.entry(p.span_id.as_str()).or_default().push(c);
    }
    out
}

/// A local port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// What an RPC of the driver does past A.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Via {
    /// A answers it.
    Direct,
    /// A's handler calls B and relays its answer.
    Chained,
    /// A's handler calls B twice at once (`tokio::join!`), asking for the code given second
    /// too, and relays the first answer.
    Joined(i64),
    /// A's handler calls a port nothing listens on: Unavailable, from tonic, with no
    /// grpc-status.
    Refused,
    /// A's handler calls B, which answers after two seconds, with a deadline of 200 ms: the
    /// caller's tonic gives up then (Cancelled), and B's RPC ends Cancelled too, at its own
    /// tonic's deadline or at the caller's reset of the stream, whichever comes first.
    Late,
}

/// The driver's RPCs: all kinds with OK and error statuses, a tenth of them through A's
/// handler.
fn plan(b_port: u16, closed: u16) -> Vec<(String, Via)> {
    let kinds = ["unary", "server", "client", "bidi"];
    let codes = [0, 0, 5, 13, 0, 7, 14, 2, 0, 16, 4, 3];
    let pairs = [(0, 5), (13, 7)];
    let b = format!("127.0.0.1:{b_port}");
    (0..1000)
        .map(|i| {
            let code = codes[(i / 4 + i) % codes.len()];
            if i % 10 != 9 {
                return (format!("{}:{code}", kinds[i % 4]), Via::Direct);
            }
            match (i / 10) % 5 {
                0..=2 => (format!("unary:{code}:{b}"), Via::Chained),
                3 => {
                    let (first, second) = pairs[(i / 50) % 2];
                    (
                        format!("unary:{first}:{b}+join{second}"),
                        Via::Joined(second),
                    )
                }
                _ if (i / 50) % 2 == 0 => (format!("unary:0:127.0.0.1:{closed}"), Via::Refused),
                _ => (format!("unary:0:{b}+delay2000+timeout200"), Via::Late),
            }
        })
        .collect()
}

fn every_rpc_is_one_correct_span(build: &RustFixture) {
    let bin = &build.path;
    // Few processes: detaching the probes from each takes seconds.
    let (a, b) = (GoServer::start(bin), GoServer::start(bin));
    let planned = plan(b.port, closed_port());
    let rpcs = planned.iter().map(|(spec, _)| spec.clone()).collect();
    let mut driver = Driver::start(bin, a.port, rpcs, 100, None, false);
    // Handler calls under an incoming traceparent.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let tp = format!("00-{trace}-{parent}-01");
    let rpcs = (0..20)
        .map(|i| format!("unary:{}:127.0.0.1:{}", [0, 5, 13][i % 3], b.port))
        .collect();
    let mut traced = Driver::start(bin, a.port, rpcs, 10, Some(&tp), false);
    // Calls of their own to a port nothing listens on (refused; no parent).
    let rpcs = vec!["unary:0".to_string(); 3];
    let mut refused = Driver::start(bin, closed_port(), rpcs, 1, None, true);

    let pids = [a.pid(), b.pid(), driver.pid(), traced.pid(), refused.pid()];
    let name = format!("rust-grpc-{}-{}", build.set, build.profile);
    let (agent, out) = attach(&name, &pids);
    let results = driver.run();
    let traced_results = traced.run();
    let refused_results = refused.run();
    let (status, stderr) = agent.stop();
    assert!(status.success(), "spanhook exited with {status}:\n{stderr}");
    let spans = spans_in_file(&out);
    let diag: String = stderr
        .lines()
        .filter(|l| l.contains("probe counters") || l.contains("stopping"))
        .collect::<Vec<_>>()
        .join("\n");
    let label = format!("{} ({diag})", build.label());

    // What the clients got.
    for (i, ((kind, code), (spec, via))) in results.iter().zip(&planned).enumerate() {
        let asked: Vec<&str> = spec.splitn(3, ':').take(2).collect();
        let want = match via {
            Via::Refused => 14,
            Via::Late => 1,
            _ => asked[1].parse().unwrap(),
        };
        assert_eq!(
            (kind.as_str(), *code),
            (asked[0], want),
            "{label}: RPC {i}: {spec}"
        );
    }
    for (i, (_, code)) in traced_results.iter().enumerate() {
        assert_eq!(*code, [0, 5, 13][i % 3], "{label}: traced RPC {i}");
    }
    assert_eq!(
        refused_results,
        vec![("unary".to_string(), 14); 3],
        "{label}"
    );

    // Every span is of a traced process, with an id of its own; servers and drivers have only
    // their own side.
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    assert_eq!(ids.len(), spans.len(), "{label}: span ids repeat");
    for s in &spans {
        assert!(
            pids.contains(&pid_of(s)),
            "{label}: a span of another process: {s:?}"
        );
    }
    assert!(
        of(&spans, b.pid(), KIND_CLIENT).is_empty(),
        "{label}: B calls nobody"
    );
    for d in [driver.pid(), traced.pid(), refused.pid()] {
        assert!(
            of(&spans, d, KIND_SERVER).is_empty(),
            "{label}: a driver serves nothing"
        );
    }

    // The drivers' calls: one client span each, with what it got from A.
    let clients = of(&spans, driver.pid(), KIND_CLIENT);
    assert_tally(
        &tally(&clients),
        &expected(&results),
        &format!("{label}: the driver's calls"),
    );
    check_conventions(&label, &clients, false, Some(a.port));
    let traced_clients = of(&spans, traced.pid(), KIND_CLIENT);
    let want = expected(&traced_results);
    assert_tally(
        &tally(&traced_clients),
        &want,
        &format!("{label}: the traced calls"),
    );
    check_conventions(&label, &traced_clients, false, Some(a.port));
    // A call that never reached a server: Unavailable, with no address.
    let refused_clients = of(&spans, refused.pid(), KIND_CLIENT);
    let want = expected(&refused_results);
    assert_tally(
        &tally(&refused_clients),
        &want,
        &format!("{label}: the refused calls"),
    );
    check_conventions(&label, &refused_clients, false, None);
    for c in clients
        .iter()
        .chain(&traced_clients)
        .chain(&refused_clients)
    {
        assert_eq!(
            c.parent_span_id, "",
            "{label}: a driver's call has no parent: {c:?}"
        );
    }

    // A: one server span per RPC; those of the traced driver continue its trace.
    let servers = of(&spans, a.pid(), KIND_SERVER);
    let want = expected(results.iter().chain(&traced_results));
    assert_tally(
        &tally(&servers),
        &want,
        &format!("{label}: A's server spans"),
    );
    check_conventions(&label, &servers, true, Some(a.port));
    let (in_trace, roots): (Vec<&Span>, Vec<&Span>) =
        servers.iter().partition(|s| s.trace_id == trace);
    assert_eq!(
        in_trace.len(),
        20,
        "{label}: A's spans in the incoming trace"
    );
    for s in &in_trace {
        assert_eq!(
            s.parent_span_id, parent,
            "{label}: the incoming parent: {s:?}"
        );
    }
    for s in &roots {
        assert_eq!(
            s.parent_span_id, "",
            "{label}: no traceparent was sent: {s:?}"
        );
    }

    // A's calls, each the child of the server span of the handler that awaited it, with what
    // it got: one per chained or failed RPC, two per joined one.
    let calls = of(&spans, a.pid(), KIND_CLIENT);
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (parent_id, children) in children_of(&label, &servers, &calls) {
        let p = servers.iter().find(|s| s.span_id == parent_id).unwrap();
        let relayed = p.int("rpc.grpc.status_code").unwrap();
        let mut codes: Vec<i64> = children
            .iter()
            .map(|c| c.int("rpc.grpc.status_code").unwrap())
            .collect();
        codes.sort();
        let what = match (children.len(), codes.as_slice()) {
            (1, [14]) if children[0].str("server.address").is_none() => "refused",
            // Given up after its 200 ms deadline, long before B answers.
            (1, [1]) if (150.0..1500.0).contains(&children[0].duration_ms()) => "late",
            (1, [code]) if *code == relayed => "chained",
            (2, [x, y]) if (*x, *y) == (0, 5) && relayed == 0 => "joined",
            (2, [x, y]) if (*x, *y) == (7, 13) && relayed == 13 => "joined",
            _ => panic!("{label}: the calls of {p:?}: {children:?}"),
        };
        *seen.entry(what).or_default() += 1;
        for c in &children {
            assert_eq!(c.name, p.name, "{label}");
            let port = (what != "refused").then_some(b.port);
            check_conventions(&label, &[*c], false, port);
        }
    }
    let count = |via: &dyn Fn(&Via) -> bool| planned.iter().filter(|(_, v)| via(v)).count();
    let want: HashMap<&str, usize> = [
        (
            "chained",
            count(&|v| *v == Via::Chained) + traced_results.len(),
        ),
        ("joined", count(&|v| matches!(v, Via::Joined(_)))),
        ("refused", count(&|v| *v == Via::Refused)),
        ("late", count(&|v| *v == Via::Late)),
    ]
    .into_iter()
    .collect();
    assert_eq!(seen, want, "{label}: A's calls by the RPCs they served");

    // B: one server span per call it got (a late one ends at its deadline, Cancelled); roots,
    // as nothing propagates the trace without `--propagate`.
    let downstream = of(&spans, b.pid(), KIND_SERVER);
    let mut want: HashMap<(String, i64), usize> = HashMap::new();
    let mut add = |code: i64| {
        *want.entry((format!("{SERVICE}/Unary"), code)).or_default() += 1;
    };
    for ((_, code), (_, via)) in results.iter().zip(&planned) {
        match via {
            Via::Chained => add(*code),
            Via::Joined(second) => {
                add(*code);
                add(*second);
            }
            Via::Late => add(1),
            Via::Direct | Via::Refused => {}
        }
    }
    for (_, code) in &traced_results {
        add(*code);
    }
    assert_tally(
        &tally(&downstream),
        &want,
        &format!("{label}: B's server spans"),
    );
    check_conventions(&label, &downstream, true, Some(b.port));
    for d in &downstream {
        assert_eq!(d.parent_span_id, "", "{label}: {d:?}");
    }
}
