//! Go `net/http` server spans, end to end: real fixture servers built from source, the real
//! agent with real eBPF uprobes, a real HTTP client, and the spans as exporters write them.

mod support;

use std::{collections::HashMap, time::Duration};

use support::{
    collector::Collector,
    go_fixture, newest_go,
    otlp::{spans_in_file, Span, KIND_SERVER, STATUS_ERROR},
    require_bpf, temp_dir,
    traffic::{send, Req},
    Agent, GoServer,
};

/// Attaches to `server`, writing spans to a file; returns the agent and the file.
fn attach_to_file(server: &GoServer, name: &str) -> (Agent, std::path::PathBuf) {
    let out = temp_dir(name).join("spans.jsonl");
    let pid = server.pid().to_string();
    let agent = Agent::attach(&[
        "attach",
        "--pid",
        &pid,
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

/// The mixed workload: method, path sent, path expected in the span, status, minimum ms.
fn mixed_requests() -> Vec<(Req, &'static str, i64, f64)> {
    vec![
        (Req::get("/hello"), "/hello", 200, 0.0),
        (Req::get("/slow?ms=120"), "/slow", 200, 120.0),
        (Req::get("/error"), "/error", 500, 0.0),
        (Req::get("/missing"), "/missing", 404, 0.0),
        (
            Req::with("POST", "/echo", Some(b"payload bytes")),
            "/echo",
            200,
            0.0,
        ),
        (
            Req::with("PUT", "/echo", Some(b"put body")),
            "/echo",
            200,
            0.0,
        ),
        (Req::with("DELETE", "/echo", None), "/echo", 405, 0.0),
        (Req::get("/items/abc-17"), "/items/abc-17", 200, 0.0),
        (Req::with("HEAD", "/hello", None), "/hello", 200, 0.0),
        (Req::get("/slow?ms=40"), "/slow", 200, 40.0),
    ]
}

/// The `http.route` a span should carry: Request.Pattern exists from Go 1.23, and the fixture
/// keeps the 1.22+ ServeMux; the 404 of an unknown path matches no pattern.
fn expected_route(go: &str, path: &str) -> Option<&'static str> {
    let minor: u32 = go.split('.').nth(1).unwrap().parse().unwrap();
    if minor < 23 {
        return None;
    }
    match path {
        "/hello" => Some("/hello"),
        "/slow" => Some("/slow"),
        "/error" => Some("/error"),
        "/echo" => Some("/echo"),
        p if p.starts_with("/items/") => Some("/items/"),
        _ => None,
    }
}

fn check_mixed(
    label: &str,
    go: &str,
    spans: &[Span],
    sent: &[(Req, &'static str, i64, f64)],
    rounds: usize,
) {
    assert_eq!(
        spans.len(),
        sent.len() * rounds,
        "{label}: expected exactly one span per request, got {}",
        spans.len()
    );
    // Pair spans with requests by (method, path, status); each key must match in number.
    let mut want: HashMap<(String, String, i64), usize> = HashMap::new();
    for (req, path, status, _) in sent {
        *want
            .entry((req.method.to_string(), path.to_string(), *status))
            .or_default() += rounds;
    }
    let mut got: HashMap<(String, String, i64), usize> = HashMap::new();
    for s in spans {
        assert_eq!(s.kind, KIND_SERVER, "{label}: {s:?}");
        let key = (
            s.str("http.request.method").unwrap_or("?").to_string(),
            s.str("url.path").unwrap_or("?").to_string(),
            s.int("http.response.status_code").unwrap_or(-1),
        );
        *got.entry(key).or_default() += 1;
        let method = s.str("http.request.method").unwrap();
        let route = expected_route(go, s.str("url.path").unwrap());
        assert_eq!(s.str("http.route"), route, "{label}: route of {s:?}");
        match route {
            Some(route) => assert_eq!(s.name, format!("{method} {route}"), "{label}: span name"),
            None => assert_eq!(s.name, method, "{label}: span name"),
        }
        assert_eq!(s.str("url.scheme"), Some("http"), "{label}");
        assert_eq!(s.str("server.address"), Some("127.0.0.1"), "{label}");
        assert_eq!(s.str("network.protocol.version"), Some("1.1"), "{label}");
        assert_eq!(s.str("client.address"), Some("127.0.0.1"), "{label}");
        let error = s.int("http.response.status_code").unwrap() >= 500;
        assert_eq!(
            s.status_code == STATUS_ERROR,
            error,
            "{label}: status of {s:?}"
        );
        assert_eq!(
            s.parent_span_id, "",
            "{label}: a request without traceparent starts a trace"
        );
        assert_eq!(s.trace_id.len(), 32);
        assert_ne!(s.trace_id, "00000000000000000000000000000000");
    }
    assert_eq!(got, want, "{label}: spans do not match the requests sent");
    // Durations follow the handler's sleep.
    for s in spans.iter().filter(|s| s.str("url.path") == Some("/slow")) {
        let d = s.duration_ms();
        assert!((40.0..2000.0).contains(&d), "{label}: /slow took {d} ms");
    }
    let slow: Vec<f64> = spans
        .iter()
        .filter(|s| s.str("url.path") == Some("/slow"))
        .map(Span::duration_ms)
        .collect();
    assert!(
        slow.iter().filter(|d| **d >= 120.0).count() == rounds,
        "{label}: 120 ms sleeps: {slow:?}"
    );
    for s in spans.iter().filter(|s| s.str("url.path") == Some("/hello")) {
        assert!(
            s.duration_ms() < 40.0,
            "{label}: /hello took {} ms",
            s.duration_ms()
        );
    }
    // The resource names the process.
    let pid = spans[0].resource_int("process.pid").unwrap();
    assert!(spans
        .iter()
        .all(|s| s.resource_int("process.pid") == Some(pid)));
    assert_eq!(
        spans[0].resource_str("service.name"),
        Some("httpserver"),
        "{label}: service.name defaults to the executable"
    );
    assert_eq!(
        spans[0].resource_str("telemetry.distro.name"),
        Some("spanhook")
    );
}

fn mixed_run(go: &str, variant: &str) {
    require_bpf();
    let fixture = go_fixture("httpserver", go, variant);
    let server = GoServer::start(&fixture.path);
    let (agent, out) = attach_to_file(&server, &format!("mixed-{go}-{variant}"));
    let sent = mixed_requests();
    let reqs: Vec<Req> = sent.iter().map(|(r, ..)| r.clone()).collect();
    let rounds = 3;
    for _ in 0..rounds {
        let resps = send(&server.url(""), &reqs, 4);
        let statuses: Vec<i64> = resps.iter().map(|r| r.status as i64).collect();
        let want: Vec<i64> = sent.iter().map(|s| s.2).collect();
        assert_eq!(
            statuses, want,
            "the server answered differently than the fixture defines"
        );
    }
    let stderr = stop(agent);
    assert!(
        stderr.contains("http server traced at net/http.serverHandler.ServeHTTP"),
        "{stderr}"
    );
    let spans = spans_in_file(&out);
    check_mixed(&fixture.label(), go, &spans, &sent, rounds);
}

#[test]
fn mixed_requests_unstripped() {
    mixed_run(&newest_go("httpserver"), "plain");
}

#[test]
fn mixed_requests_stripped() {
    mixed_run(&newest_go("httpserver"), "stripped");
}

#[test]
fn mixed_requests_oldest_go_stripped() {
    mixed_run("1.17.13", "stripped");
}

#[test]
fn two_hundred_concurrent_requests_keep_their_own_attributes() {
    require_bpf();
    let fixture = go_fixture("httpserver", &newest_go("httpserver"), "stripped");
    let server = GoServer::start(&fixture.path);
    let (agent, out) = attach_to_file(&server, "concurrent");
    // Every request is unique by path and method, so a span with attributes from two
    // requests cannot match either.
    let methods = ["GET", "POST", "PUT"];
    let reqs: Vec<Req> = (0..200)
        .map(|i| {
            let m = methods[i % 3];
            let body = if m == "GET" { None } else { Some(&b"x"[..]) };
            Req::with(m, format!("/items/req-{i}?q=secret"), body)
        })
        .collect();
    let resps = send(&server.url(""), &reqs, 200);
    assert!(resps.iter().all(|r| r.status == 200));
    stop(agent);
    let spans = spans_in_file(&out);
    assert_eq!(spans.len(), 200, "one span per request");
    let mut seen = std::collections::HashSet::new();
    for s in &spans {
        let path = s.str("url.path").unwrap();
        let i: usize = path.strip_prefix("/items/req-").unwrap().parse().unwrap();
        assert_eq!(
            s.str("http.request.method"),
            Some(methods[i % 3]),
            "span {path} has another request's method"
        );
        assert_eq!(s.int("http.response.status_code"), Some(200));
        assert!(
            !s.attrs
                .values()
                .any(|v| v.as_str().is_some_and(|t| t.contains("secret"))),
            "query string leaked: {s:?}"
        );
        assert!(seen.insert(i), "two spans for request {i}");
    }
    let traces: std::collections::HashSet<&str> =
        spans.iter().map(|s| s.trace_id.as_str()).collect();
    assert_eq!(traces.len(), 200, "every request starts its own trace");
}

#[test]
fn spans_reach_the_collector_over_grpc_and_http() {
    require_bpf();
    let fixture = go_fixture("httpserver", &newest_go("httpserver"), "stripped");
    for protocol in ["grpc", "http/protobuf"] {
        let collector = Collector::start();
        let server = GoServer::start_with_env(&fixture.path, &[("OTEL_SERVICE_NAME", "checkout")]);
        let port = if protocol == "grpc" {
            collector.grpc_port
        } else {
            collector.http_port
        };
        let endpoint = format!("http://127.0.0.1:{port}");
        let out =
            temp_dir(&format!("collector-{}", protocol.replace('/', "-"))).join("spans.jsonl");
        let pid = server.pid().to_string();
        let agent = Agent::attach(&[
            "attach",
            "--pid",
            &pid,
            "--otlp-endpoint",
            &endpoint,
            "--otlp-protocol",
            protocol,
            "--output-file",
            out.to_str().unwrap(),
        ]);
        let reqs: Vec<Req> = (0..25).map(|i| Req::get(format!("/items/{i}"))).collect();
        send(&server.url(""), &reqs, 5);
        let stderr = stop(agent);
        let spans = collector.wait_spans(25, Duration::from_secs(15));
        assert_eq!(
            spans.len(),
            25,
            "{protocol}: the Collector received {} spans\nagent:\n{stderr}\ncollector:\n{}",
            spans.len(),
            collector.log()
        );
        for s in &spans {
            assert_eq!(
                s.resource_str("service.name"),
                Some("checkout"),
                "{protocol}: OTEL_SERVICE_NAME of the target"
            );
            assert_eq!(s.resource_int("process.pid"), Some(server.pid() as i64));
            assert_eq!(s.kind, KIND_SERVER);
            assert!(s.str("url.path").unwrap().starts_with("/items/"));
            assert_eq!(s.scope, "spanhook");
        }
        // The file exporter ran at the same time and wrote the same spans.
        let mut from_file: Vec<String> =
            spans_in_file(&out).into_iter().map(|s| s.span_id).collect();
        let mut from_collector: Vec<String> = spans.into_iter().map(|s| s.span_id).collect();
        from_file.sort();
        from_collector.sort();
        assert_eq!(
            from_file, from_collector,
            "{protocol}: file and Collector disagree"
        );
    }
}

#[test]
fn responses_are_byte_identical_with_and_without_the_agent() {
    require_bpf();
    let fixture = go_fixture("httpserver", &newest_go("httpserver"), "stripped");
    let body: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let reqs = vec![
        Req::get("/hello"),
        Req::with("POST", "/echo", Some(&body)),
        Req::get("/error"),
        Req::get("/missing"),
        Req::get("/items/x%20y"),
        Req::get("/hello").header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ];
    let server = GoServer::start(&fixture.path);
    let without = send(&server.url(""), &reqs, 1);
    let (agent, out) = attach_to_file(&server, "identical");
    let with = send(&server.url(""), &reqs, 1);
    stop(agent);
    let after = send(&server.url(""), &reqs, 1);
    assert_eq!(with, without, "responses changed while traced");
    assert_eq!(after, without, "responses changed after the agent left");
    assert_eq!(spans_in_file(&out).len(), reqs.len());
}

#[test]
fn incoming_traceparent_is_continued() {
    require_bpf();
    let fixture = go_fixture("httpserver", &newest_go("httpserver"), "stripped");
    let server = GoServer::start(&fixture.path);
    let (agent, out) = attach_to_file(&server, "traceparent");
    let reqs = vec![
        Req::get("/items/with-parent").header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        Req::get("/items/unsampled").header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        ),
        Req::get("/items/invalid").header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        ),
        Req::get("/items/uppercase").header(
            "Traceparent",
            "00-AAF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        ),
        Req::get("/items/none"),
    ];
    send(&server.url(""), &reqs, 1);
    stop(agent);
    let spans = spans_in_file(&out);
    let by_path = |p: &str| {
        spans
            .iter()
            .find(|s| s.str("url.path") == Some(p))
            .unwrap_or_else(|| panic!("no span for {p}"))
    };
    let s = by_path("/items/with-parent");
    assert_eq!(s.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(s.parent_span_id, "00f067aa0ba902b7");
    assert!(
        spans
            .iter()
            .all(|s| s.str("url.path") != Some("/items/unsampled")),
        "a caller that did not sample the trace gets no span"
    );
    for p in ["/items/invalid", "/items/uppercase", "/items/none"] {
        let s = by_path(p);
        assert_eq!(
            s.parent_span_id, "",
            "{p}: an invalid header must not be trusted"
        );
        assert_ne!(s.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736", "{p}");
    }
}
