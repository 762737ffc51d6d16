//! HTTP server spans across the whole build matrix: every Go release from 1.17 to the newest,
//! stripped and not, PIE, cgo with the external linker, and cgo PIE — each one a real process
//! traced with real uprobes.

mod support;

use std::sync::Mutex;

use support::{
    go_fixtures,
    otlp::{spans_in_file, KIND_SERVER},
    require_bpf, temp_dir,
    traffic::{send, Req},
    Agent, GoFixture, GoServer,
};

/// Traces one fixture through a short mixed workload; returns what was wrong, if anything.
fn trace_one(f: &GoFixture) -> Result<(), String> {
    let server = GoServer::start(&f.path);
    let out = temp_dir(&format!("matrix-{}-{}", f.go, f.variant)).join("spans.jsonl");
    let pid = server.pid().to_string();
    let agent = Agent::attach(&[
        "attach",
        "--pid",
        &pid,
        "--output-file",
        out.to_str().unwrap(),
    ]);
    let workload = [
        (Req::get("/hello"), "GET", "/hello", 200),
        (Req::get("/error"), "GET", "/error", 500),
        (Req::get("/slow?ms=30"), "GET", "/slow", 200),
        (
            Req::with("POST", "/echo", Some(b"abc")),
            "POST",
            "/echo",
            200,
        ),
        (Req::get(format!("/items/{}", f.variant)), "GET", "", 200),
        (Req::get("/missing"), "GET", "/missing", 404),
    ];
    let reqs: Vec<Req> = workload.iter().map(|w| w.0.clone()).collect();
    send(&server.url(""), &reqs, 1);
    let (status, stderr) = agent.stop();
    if !status.success() {
        return Err(format!("agent exited with {status}: {stderr}"));
    }
    let spans = spans_in_file(&out);
    if spans.len() != workload.len() {
        return Err(format!(
            "{} spans for {} requests:\n{stderr}",
            spans.len(),
            workload.len()
        ));
    }
    let mut want: Vec<(String, String, i64)> = workload
        .iter()
        .map(|(_, method, path, status)| {
            let path = if path.is_empty() {
                format!("/items/{}", f.variant)
            } else {
                path.to_string()
            };
            (method.to_string(), path, *status as i64)
        })
        .collect();
    let mut got: Vec<(String, String, i64)> = spans
        .iter()
        .map(|s| {
            (
                s.str("http.request.method").unwrap_or("?").to_string(),
                s.str("url.path").unwrap_or("?").to_string(),
                s.int("http.response.status_code").unwrap_or(0),
            )
        })
        .collect();
    want.sort();
    got.sort();
    if got != want || spans.iter().any(|s| s.kind != KIND_SERVER) {
        return Err(format!("expected {want:?}, got {got:?}"));
    }
    let slow = spans
        .iter()
        .find(|s| s.str("url.path") == Some("/slow"))
        .map(|s| s.duration_ms())
        .unwrap_or(0.0);
    if !(30.0..1000.0).contains(&slow) {
        return Err(format!("/slow?ms=30 took {slow} ms"));
    }
    Ok(())
}

#[test]
fn server_spans_are_right_for_every_release_and_build_shape() {
    require_bpf();
    let fixtures: Vec<GoFixture> = go_fixtures()
        .into_iter()
        .filter(|f| f.program == "httpserver" && f.arch == "amd64")
        .collect();
    assert!(
        fixtures.len() >= 11 * 5,
        "the matrix is incomplete: {} builds",
        fixtures.len()
    );
    let queue = Mutex::new(fixtures.clone());
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| loop {
                let Some(f) = queue.lock().unwrap().pop() else {
                    break;
                };
                if let Err(e) = trace_one(&f) {
                    failures.lock().unwrap().push(format!("{}: {e}", f.label()));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} builds failed:\n{}",
        failures.len(),
        fixtures.len(),
        failures.join("\n")
    );
}
