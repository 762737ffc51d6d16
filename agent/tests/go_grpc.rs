//! grpc-go server and client spans: real gRPC programs built from source against several
//! grpc-go releases (the oldest supported, two across the field-layout changes, the newest),
//! stripped and not, traced with real uprobes; real clients (our gateway, and grpcurl).

mod support;

use std::{collections::HashMap, path::PathBuf, process::Command, time::Duration};

use support::{
    go_fixture, go_fixtures,
    otlp::{spans_in_file, Span, KIND_CLIENT, KIND_SERVER, STATUS_ERROR},
    require_bpf, temp_dir,
    traffic::{send, Req},
    Agent, GoServer,
};

/// The grpc-go releases the fixtures are built with.
fn releases() -> Vec<String> {
    let mut r: Vec<String> = go_fixtures()
        .into_iter()
        .filter_map(|f| {
            f.program
                .strip_prefix("grpcchain-grpc-")
                .map(str::to_string)
        })
        .collect();
    r.sort();
    r.dedup();
    assert!(
        r.len() >= 4,
        "grpc fixtures missing ({r:?}); run `cargo xtask fixtures`"
    );
    r
}

fn program(release: &str) -> String {
    format!("grpcchain-grpc-{release}")
}

/// A gRPC server and an HTTP→gRPC gateway (two processes of the same fixture), both traced.
struct Grpc {
    server: GoServer,
    gateway: GoServer,
    agent: Agent,
    out: PathBuf,
    grpc_port: u16,
}

fn start(name: &str, release: &str, variant: &str, extra_agent_args: &[&str]) -> Grpc {
    require_bpf();
    let f = go_fixture(&program(release), &newest(), variant);
    let mut cmd = Command::new(&f.path);
    cmd.args(["-grpc", "127.0.0.1:0"]);
    let server = start_grpc(cmd);
    let grpc_port = server.port;
    let mut cmd = Command::new(&f.path);
    cmd.args(["-addr", "127.0.0.1:0"]);
    let gateway = GoServer::start_command(cmd);
    let out = temp_dir(name).join("spans.jsonl");
    let (s, g) = (server.pid().to_string(), gateway.pid().to_string());
    let mut args = vec![
        "attach",
        "--pid",
        &s,
        "--pid",
        &g,
        "--output-file",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra_agent_args);
    let agent = Agent::attach(&args);
    Grpc {
        server,
        gateway,
        agent,
        out,
        grpc_port,
    }
}

/// Starts the gRPC side: it prints "grpc listening on HOST:PORT", which the harness reads.
fn start_grpc(cmd: Command) -> GoServer {
    GoServer::start_command(cmd)
}

fn newest() -> String {
    support::newest_go("grpcchain-grpc-v1.85.0")
}

impl Grpc {
    fn target(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    fn gateway(&self) -> String {
        self.gateway.url("")
    }

    fn finish(self) -> (Vec<Span>, String, i64, i64) {
        let (s, g) = (self.server.pid() as i64, self.gateway.pid() as i64);
        let (status, stderr) = self.agent.stop();
        assert!(status.success(), "{stderr}");
        (spans_in_file(&self.out), stderr, s, g)
    }
}

fn pid(s: &Span) -> i64 {
    s.resource_int("process.pid").unwrap()
}

fn code_of(resp_body: &[u8]) -> i64 {
    let text = String::from_utf8_lossy(resp_body);
    let code = text.trim().strip_prefix("code=").unwrap();
    code.split(' ').next().unwrap().parse().unwrap()
}

/// The server's reply to a unary call made through the gateway ("code=N reply=R").
fn reply_of(resp_body: &[u8]) -> String {
    let text = String::from_utf8_lossy(resp_body);
    text.trim()
        .split_once(" reply=")
        .map(|(_, r)| r.to_string())
        .unwrap_or_default()
}

#[test]
fn unary_and_streaming_rpcs_make_correct_spans_on_every_release() {
    for release in releases() {
        for variant in ["plain", "stripped"] {
            let label = format!("grpc-go {release} {variant}");
            let g = start(&format!("grpc-{release}-{variant}"), &release, variant, &[]);
            let t = g.target();
            // (HTTP path, method, expected code)
            let calls: Vec<(String, &str, i64)> = vec![
                (format!("/unary/ok?target={t}"), "Unary", 0),
                (format!("/unary/nf?target={t}&code=5"), "Unary", 5),
                (format!("/unary/internal?target={t}&code=13"), "Unary", 13),
                (
                    format!("/unary/slow?target={t}&sleep=500&timeout=50"),
                    "Unary",
                    4,
                ),
                (format!("/sstream/s?target={t}&n=3"), "ServerStream", 0),
                (format!("/cstream/c?target={t}&n=3"), "ClientStream", 0),
                (format!("/bidi/b?target={t}&n=3"), "Bidi", 0),
                // Nothing listens on port 1.
                ("/unary/down?target=127.0.0.1:1".to_string(), "Unary", 14),
            ];
            let reqs: Vec<Req> = calls.iter().map(|(p, ..)| Req::get(p.clone())).collect();
            let resps = send(&g.gateway(), &reqs, 1);
            for ((path, _, want), resp) in calls.iter().zip(&resps) {
                assert_eq!(code_of(&resp.body), *want, "{label}: the RPC {path} itself");
            }
            std::thread::sleep(Duration::from_millis(600));
            let (spans, stderr, server_pid, gateway_pid) = g.finish();
            let servers: Vec<&Span> = spans
                .iter()
                .filter(|s| s.kind == KIND_SERVER && pid(s) == server_pid)
                .collect();
            let clients: Vec<&Span> = spans
                .iter()
                .filter(|s| s.kind == KIND_CLIENT && pid(s) == gateway_pid)
                .collect();
            let http: HashMap<&str, &Span> = spans
                .iter()
                .filter(|s| s.kind == KIND_SERVER && pid(s) == gateway_pid)
                .map(|s| (s.span_id.as_str(), s))
                .collect();
            // Every RPC that reached the server (all but the one to port 1).
            assert_eq!(
                servers.len(),
                calls.len() - 1,
                "{label}: server spans\n{stderr}"
            );
            assert_eq!(
                clients.len(),
                calls.len(),
                "{label}: client spans\n{stderr}"
            );
            for (path, method, code) in &calls {
                let http_span = http
                    .values()
                    .find(|s| {
                        path.starts_with(s.str("url.path").unwrap())
                            && s.str("url.path").unwrap().len() > 1
                    })
                    .unwrap_or_else(|| panic!("{label}: no HTTP span for {path}"));
                let client = clients
                    .iter()
                    .find(|c| c.parent_span_id == http_span.span_id)
                    .unwrap_or_else(|| {
                        panic!(
                            "{label}: the client span of {path} is not the child of its HTTP span"
                        )
                    });
                assert_eq!(
                    client.name,
                    format!("spanhook.test.Echo/{method}"),
                    "{label}: {path}"
                );
                assert_eq!(client.str("rpc.system"), Some("grpc"));
                assert_eq!(client.str("rpc.service"), Some("spanhook.test.Echo"));
                assert_eq!(client.str("rpc.method"), Some(*method), "{label}: {path}");
                assert_eq!(
                    client.int("rpc.grpc.status_code"),
                    Some(*code),
                    "{label}: client status of {path}"
                );
                assert_eq!(
                    client.status_code == STATUS_ERROR,
                    *code != 0,
                    "{label}: {path}"
                );
                assert_eq!(client.str("server.address"), Some("127.0.0.1"));
                assert_eq!(client.trace_id, http_span.trace_id);
            }
            let mut by_code: HashMap<(String, i64), usize> = HashMap::new();
            for s in &servers {
                assert_eq!(s.str("rpc.system"), Some("grpc"));
                assert_eq!(
                    s.str("server.address"),
                    Some("127.0.0.1"),
                    "{label}: :authority of {s:?}"
                );
                assert_eq!(s.int("server.port"), Some(g_port(&t)));
                let code = s.int("rpc.grpc.status_code").unwrap_or(-1);
                let error = matches!(code, 2 | 4 | 12 | 13 | 14 | 15);
                assert_eq!(s.status_code == STATUS_ERROR, error, "{label}: {s:?}");
                *by_code.entry((s.name.clone(), code)).or_default() += 1;
            }
            let mut want: HashMap<(String, i64), usize> = HashMap::new();
            for (path, method, code) in calls.iter().filter(|(p, ..)| !p.contains("127.0.0.1:1")) {
                // When the client's deadline passes, the server sees the RPC cancelled by the
                // client or its own copy of the deadline expire, whichever comes first.
                let code = if path.contains("timeout") {
                    by_code
                        .keys()
                        .find(|(m, c)| m.ends_with("/Unary") && (*c == 1 || *c == 4))
                        .map_or(4, |k| k.1)
                } else {
                    *code
                };
                *want
                    .entry((format!("spanhook.test.Echo/{method}"), code))
                    .or_default() += 1;
            }
            assert_eq!(by_code, want, "{label}: server spans by method and status");
            // The slow call ran until its deadline (50 ms), not until the handler's sleep.
            let slow = clients
                .iter()
                .find(|c| c.int("rpc.grpc.status_code") == Some(4))
                .unwrap();
            assert!(
                (40.0..450.0).contains(&slow.duration_ms()),
                "{label}: deadline span {} ms",
                slow.duration_ms()
            );
        }
    }
}

fn g_port(target: &str) -> i64 {
    target.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn five_hundred_concurrent_rpcs_over_one_connection_keep_their_status() {
    let release = releases().pop().unwrap();
    let g = start("grpc-concurrent", &release, "stripped", &[]);
    let t = g.target();
    let codes = [0i64, 5, 7];
    let reqs: Vec<Req> = (0..500)
        .map(|i| {
            let code = codes[i % 3];
            Req::get(format!("/unary/r{i}-c{code}?target={t}&code={code}"))
        })
        .collect();
    let resps = send(&g.gateway(), &reqs, 500);
    for (i, r) in resps.iter().enumerate() {
        assert_eq!(code_of(&r.body), codes[i % 3]);
    }
    std::thread::sleep(Duration::from_millis(600));
    let (spans, stderr, server_pid, gateway_pid) = g.finish();
    let http: HashMap<&str, &Span> = spans
        .iter()
        .filter(|s| s.kind == KIND_SERVER && pid(s) == gateway_pid)
        .map(|s| (s.span_id.as_str(), s))
        .collect();
    let clients: Vec<&Span> = spans.iter().filter(|s| s.kind == KIND_CLIENT).collect();
    assert_eq!(clients.len(), 500, "{stderr}");
    for c in &clients {
        let parent = http
            .get(c.parent_span_id.as_str())
            .expect("each RPC's parent is its HTTP request");
        let path = parent.str("url.path").unwrap();
        let want: i64 = path.rsplit("-c").next().unwrap().parse().unwrap();
        assert_eq!(
            c.int("rpc.grpc.status_code"),
            Some(want),
            "RPC of {path} got another RPC's status"
        );
    }
    let servers: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == KIND_SERVER && pid(s) == server_pid)
        .collect();
    assert_eq!(servers.len(), 500);
    for code in codes {
        let n = servers
            .iter()
            .filter(|s| s.int("rpc.grpc.status_code") == Some(code))
            .count();
        assert_eq!(
            n,
            500 / 3 + usize::from(code == 0 && 500 % 3 > 0) + usize::from(code == 5 && 500 % 3 > 1),
            "status {code}"
        );
    }
}

#[test]
fn a_third_party_client_is_traced_and_its_traceparent_honored() {
    let grpcurl = std::env::var_os("SPANHOOK_GRPCURL")
        .map(PathBuf::from)
        .unwrap_or_else(|| support::root().join("target/tools/bin/grpcurl"));
    assert!(
        grpcurl.is_file(),
        "grpcurl is not installed at {}; `cargo xtask test` installs it",
        grpcurl.display()
    );
    for release in releases() {
        let g = start(&format!("grpcurl-{release}"), &release, "stripped", &[]);
        let out = Command::new(&grpcurl)
            .args([
                "-plaintext",
                "-H",
                "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ])
            .arg(g.target())
            .arg("grpc.health.v1.Health/Check")
            .output()
            .expect("grpcurl");
        assert!(
            out.status.success(),
            "grpcurl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("SERVING"));
        let (spans, stderr, server_pid, _) = g.finish();
        let check = spans
            .iter()
            .find(|s| pid(s) == server_pid && s.name == "grpc.health.v1.Health/Check")
            .unwrap_or_else(|| panic!("grpc-go {release}: no span for the health check\n{stderr}"));
        assert_eq!(check.kind, KIND_SERVER);
        assert_eq!(check.int("rpc.grpc.status_code"), Some(0));
        assert_eq!(check.str("rpc.service"), Some("grpc.health.v1.Health"));
        assert_eq!(
            check.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736",
            "grpc-go {release}: traceparent from the metadata"
        );
        assert_eq!(check.parent_span_id, "00f067aa0ba902b7");
    }
}

/// A valid W3C traceparent: version 00, 32 and 16 lowercase hex digits not all zero, flags.
fn valid_traceparent(v: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = v.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if parts.len() != 4
        || parts[0] != "00"
        || !hex(parts[1], 32)
        || !hex(parts[2], 16)
        || !hex(parts[3], 2)
    {
        return None;
    }
    if parts[1].bytes().all(|b| b == b'0') || parts[2].bytes().all(|b| b == b'0') {
        return None;
    }
    Some((parts[1].to_string(), parts[2].to_string()))
}

#[test]
fn http_to_grpc_chain_is_one_trace_with_propagation_and_links_in_process_without() {
    let release = releases().pop().unwrap();
    for propagate in [false, true] {
        let label = if propagate {
            "--propagate"
        } else {
            "no propagation"
        };
        let extra: &[&str] = if propagate { &["--propagate"] } else { &[] };
        let g = start(
            &format!("grpc-chain-{propagate}"),
            &release,
            "stripped",
            extra,
        );
        let t = g.target();
        let root_trace = "0af7651916cd43dd8448eb211c80319c";
        let root_span = "b7ad6b7169203331";
        let reqs: Vec<Req> = (0..20)
            .map(|i| {
                Req::get(format!("/unary/chain{i}?target={t}&echo=traceparent"))
                    .header("traceparent", &format!("00-{root_trace}-{root_span}-01"))
            })
            .collect();
        let resps = send(&g.gateway(), &reqs, 4);
        for r in &resps {
            assert_eq!(code_of(&r.body), 0, "{label}");
            let seen = reply_of(&r.body);
            if propagate {
                let (trace, _) = valid_traceparent(&seen).unwrap_or_else(|| {
                    panic!("{label}: the server received {seen:?}, not a valid traceparent")
                });
                assert_eq!(
                    trace, root_trace,
                    "{label}: the server's traceparent is from another trace"
                );
            } else {
                assert_eq!(
                    seen, "",
                    "{label}: a traceparent went on the wire without --propagate"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(600));
        let (spans, stderr, server_pid, gateway_pid) = g.finish();
        let by_id: HashMap<&str, &Span> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
        let servers: Vec<&Span> = spans
            .iter()
            .filter(|s| {
                s.kind == KIND_SERVER
                    && pid(s) == server_pid
                    && s.name == "spanhook.test.Echo/Unary"
            })
            .collect();
        assert_eq!(servers.len(), 20, "{label}: gRPC server spans\n{stderr}");
        let clients: Vec<&Span> = spans
            .iter()
            .filter(|s| s.kind == KIND_CLIENT && pid(s) == gateway_pid)
            .collect();
        assert_eq!(clients.len(), 20, "{label}: gRPC client spans\n{stderr}");
        for c in &clients {
            let http = by_id.get(c.parent_span_id.as_str()).unwrap_or_else(|| {
                panic!(
                    "{label}: client span {} has no parent among the spans",
                    c.name
                )
            });
            assert_eq!(http.kind, KIND_SERVER, "{label}");
            assert_eq!(
                pid(http),
                gateway_pid,
                "{label}: the client's parent is the gateway's HTTP span"
            );
            assert_eq!(
                http.parent_span_id, root_span,
                "{label}: the HTTP span honors the caller's traceparent"
            );
            assert_eq!(c.trace_id, root_trace, "{label}");
        }
        for s in &servers {
            if propagate {
                let client = by_id.get(s.parent_span_id.as_str()).unwrap_or_else(|| {
                    panic!("{label}: the gRPC server span's parent is not a span we made")
                });
                assert_eq!(client.kind, KIND_CLIENT, "{label}");
                assert_eq!(pid(client), gateway_pid, "{label}");
                assert_eq!(s.trace_id, root_trace, "{label}: HTTP → gRPC in one trace");
            } else {
                assert_ne!(
                    s.trace_id, root_trace,
                    "{label}: nothing carried the trace across"
                );
                assert!(
                    s.parent_span_id.is_empty(),
                    "{label}: a server span without incoming context is a root"
                );
            }
        }
    }
}

#[test]
fn propagation_over_connections_opened_before_the_agent_loses_no_rpc() {
    let release = releases().pop().unwrap();
    let f = go_fixture(&program(&release), &newest(), "stripped");
    let mut cmd = Command::new(&f.path);
    cmd.args(["-grpc", "127.0.0.1:0"]);
    let server = start_grpc(cmd);
    let t = format!("127.0.0.1:{}", server.port);
    let mut cmd = Command::new(&f.path);
    cmd.args(["-addr", "127.0.0.1:0"]);
    let gateway = GoServer::start_command(cmd);
    let base = gateway.url("");
    // Four long-lived connections, opened (and used) before the agent starts.
    const CONNS: usize = 4;
    let warm: Vec<Req> = (0..CONNS * 8)
        .map(|i| {
            Req::get(format!(
                "/unary/warm{i}?target={t}&conn={}&echo=traceparent",
                i % CONNS
            ))
        })
        .collect();
    for r in send(&base, &warm, 8) {
        assert_eq!(code_of(&r.body), 0);
        assert_eq!(reply_of(&r.body), "", "no traceparent before the agent");
    }
    require_bpf();
    let out = temp_dir("grpc-propagate-10k").join("spans.jsonl");
    let (s, g) = (server.pid().to_string(), gateway.pid().to_string());
    let agent = Agent::attach(&[
        "attach",
        "--pid",
        &s,
        "--pid",
        &g,
        "--propagate",
        "--output-file",
        out.to_str().unwrap(),
    ]);
    // Meanwhile, client streams of 20 KiB messages on the same connections: their DATA frames
    // fill grpc-go's write buffer, so writes end inside frames and the HEADERS of the unary
    // calls land anywhere in a write.
    let bulk_base = base.clone();
    let bulk_target = t.clone();
    let bulk = std::thread::spawn(move || {
        let reqs: Vec<Req> = (0..200)
            .map(|i| {
                Req::get(format!(
                    "/cstream/bulk{i}?target={bulk_target}&conn={}&n=20&size=20480",
                    i % CONNS
                ))
            })
            .collect();
        send(&bulk_base, &reqs, 8)
    });
    const N: usize = 10_000;
    let reqs: Vec<Req> = (0..N)
        .map(|i| {
            Req::get(format!(
                "/unary/p{i}?target={t}&conn={}&echo=traceparent",
                i % CONNS
            ))
        })
        .collect();
    let resps = send(&base, &reqs, 64);
    for r in bulk.join().unwrap() {
        assert_eq!(
            code_of(&r.body),
            0,
            "a client stream failed under propagation"
        );
    }
    let mut failed = 0;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut invalid = Vec::new();
    for (i, r) in resps.iter().enumerate() {
        if r.status != 200 || code_of(&r.body) != 0 {
            failed += 1;
            continue;
        }
        let v = reply_of(&r.body);
        match valid_traceparent(&v) {
            Some((_, span)) => *seen.entry(span).or_default() += 1,
            None => invalid.push((i, v)),
        }
    }
    std::thread::sleep(Duration::from_millis(800));
    let (status, stderr) = agent.stop();
    assert!(status.success(), "{stderr}");
    assert_eq!(failed, 0, "RPCs failed under propagation\n{stderr}");
    assert!(
        invalid.is_empty(),
        "{} of {N} RPCs reached the server without a valid traceparent, e.g. {:?}\n{stderr}",
        invalid.len(),
        &invalid[..invalid.len().min(5)]
    );
    assert!(
        seen.values().all(|&n| n == 1),
        "a traceparent was sent twice"
    );
    // What went on the wire is each RPC's own client span.
    let spans = spans_in_file(&out);
    let client_ids: std::collections::HashSet<&str> = spans
        .iter()
        .filter(|s| s.kind == KIND_CLIENT && pid(s) == gateway.pid() as i64)
        .map(|s| s.span_id.as_str())
        .collect();
    let matched = seen
        .keys()
        .filter(|k| client_ids.contains(k.as_str()))
        .count();
    assert_eq!(
        matched,
        N,
        "the traceparent a server received names the RPC's client span ({} client spans of the \
         gateway in all)\n{stderr}",
        client_ids.len()
    );
    drop((server, gateway));
}
