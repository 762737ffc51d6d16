//! Privacy defaults, checked byte for byte: a run whose requests carry secrets in every place
//! a tracer could leak them — query strings, header values other than `traceparent`
//! (Authorization, Cookie, API keys), request and response bodies, and `user:password@`
//! credentials in the URLs a Go client calls (which Go also sends as `Authorization: Basic`)
//! — exports nothing of them. Every exported byte is scanned: the `--output-file` lines, what
//! the real OpenTelemetry Collector received over OTLP/gRPC, the console tree on stdout, and
//! the agent's own log on stderr. The secrets are looked for as sent, in base64 (Basic auth)
//! and percent-encoded, and the spans themselves are checked to be there, so an empty export
//! cannot pass.

mod support;

use std::time::Duration;

use support::{
    collector::Collector,
    go_fixture, newest_go,
    otlp::{spans_in_file, Span, KIND_CLIENT, KIND_SERVER},
    require_bpf, temp_dir,
    traffic::{send, Req},
    Agent, GoServer,
};

/// Every secret of the run; each is unique, so any occurrence in the output is a leak.
struct Secrets {
    query: &'static str,
    query_leaf: &'static str,
    bearer: &'static str,
    cookie: &'static str,
    api_key: &'static str,
    header_on_post: &'static str,
    body: &'static str,
    user_b: &'static str,
    pass_b: &'static str,
    user_c: &'static str,
    pass_c: &'static str,
}

const SECRETS: Secrets = Secrets {
    query: "QrySecret7d1f0a",
    query_leaf: "QryLeafSecret93be",
    bearer: "BearerSecret55c2",
    cookie: "CookieSecret0e4a",
    api_key: "ApiKeySecret8b3d",
    header_on_post: "HdrSecret41f7",
    body: "BodySecret2c9e",
    user_b: "UserSecretB6a1",
    pass_b: "PassSecretB77e",
    user_c: "UserSecretC3d0",
    pass_c: "PassSecretC14b",
};

impl Secrets {
    /// Each secret with every form it could take on the way out.
    fn needles(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let plain = [
            ("query string", self.query),
            ("query string of a leaf request", self.query_leaf),
            ("Authorization header", self.bearer),
            ("Cookie header", self.cookie),
            ("X-Api-Key header", self.api_key),
            ("header of a POST", self.header_on_post),
            ("body", self.body),
            ("URL user (A to B)", self.user_b),
            ("URL password (A to B)", self.pass_b),
            ("URL user (B to C)", self.user_c),
            ("URL password (B to C)", self.pass_c),
        ];
        for (what, s) in plain {
            out.push((what.to_string(), s.to_string()));
        }
        // Go turns URL credentials into `Authorization: Basic base64(user:password)`.
        for (what, user, pass) in [
            ("Basic credentials (A to B)", self.user_b, self.pass_b),
            ("Basic credentials (B to C)", self.user_c, self.pass_c),
        ] {
            out.push((
                what.to_string(),
                base64(format!("{user}:{pass}").as_bytes()),
            ));
            // And the userinfo as it would appear in a URL, raw or percent-encoded.
            out.push((format!("{what}, as userinfo"), format!("{user}:{pass}@")));
            out.push((
                format!("{what}, as encoded userinfo"),
                format!("{user}%3A{pass}%40"),
            ));
        }
        out
    }
}

/// Standard base64 with padding (what Go's basicAuth writes).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The test client (reqwest on rustls without a default provider) needs one installed.
fn crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Runs the secret-laden traffic through three traced httpchain services with `capture`,
/// exporting to a file, the Collector and the console; returns every exported byte (by
/// source) and the spans the file holds.
fn run(capture: &str) -> (Vec<(String, String)>, Vec<Span>) {
    let s = &SECRETS;
    let fixture = go_fixture("httpchain", &newest_go("httpchain"), "stripped");
    let c = GoServer::start(&fixture.path);
    let b = GoServer::start(&fixture.path);
    let a = GoServer::start(&fixture.path);
    let collector = Collector::start();
    let dir = temp_dir(&format!("privacy-{capture}"));
    let file = dir.join("spans.jsonl");
    let endpoint = format!("http://127.0.0.1:{}", collector.grpc_port);
    let agent = Agent::attach(&[
        "attach",
        "--pid",
        &a.pid().to_string(),
        "--pid",
        &b.pid().to_string(),
        "--pid",
        &c.pid().to_string(),
        "--capture",
        capture,
        "--output-file",
        file.to_str().unwrap(),
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        "grpc",
        "--console",
    ]);

    // A calls B and B calls C with credentials in both URLs; the query string of A's request
    // carries a secret, and so does the query of A's call to B (the next hop, with its
    // credentials); the request carries secret headers.
    let chain = format!(
        "/chain/priv-1?next=http://{}:{}@127.0.0.1:{},http://{}:{}@127.0.0.1:{}&token={}",
        s.user_b, s.pass_b, b.port, s.user_c, s.pass_c, c.port, s.query
    );
    let body = format!(
        "{{\"card\":\"4111111111111111\",\"secret\":\"{}\"}}",
        s.body
    );
    let reqs = vec![
        Req::get(chain)
            .header("Authorization", &format!("Bearer {}", s.bearer))
            .header("Cookie", &format!("session={}", s.cookie))
            .header("X-Api-Key", s.api_key),
        Req::with("POST", "/echo/priv-2", Some(body.as_bytes()))
            .header("X-Secret", s.header_on_post),
        Req::get(format!("/leaf/priv-3?password={}", s.query_leaf)),
    ];
    let resp = send(&a.url(""), &reqs, 1);
    assert_eq!(
        resp[0].status,
        200,
        "{:?}",
        String::from_utf8_lossy(&resp[0].body)
    );
    assert_eq!(resp[0].body, b"end priv-1\n");
    assert_eq!(resp[1].body, body.as_bytes(), "the echo changed");
    assert_eq!(resp[2].status, 200);

    // 3 server spans in A, 1 client + 1 server span per hop.
    let want = 7;
    let received = collector.wait_spans(want, Duration::from_secs(20));
    let stdout = agent.stdout.clone();
    let (status, stderr) = agent.stop();
    assert!(status.success(), "{stderr}");
    let received_after = collector.wait_spans(want, Duration::from_secs(5));
    assert!(
        received.len() >= want || received_after.len() >= want,
        "the Collector received {} spans, expected {want}\n{stderr}\n{}",
        received_after.len(),
        collector.log()
    );
    let outputs = vec![
        (
            "--output-file".to_string(),
            std::fs::read_to_string(&file).unwrap(),
        ),
        (
            "the Collector".to_string(),
            collector
                .requests()
                .iter()
                .map(|v| serde_json::to_string(v).unwrap())
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        ("console (stdout)".to_string(), stdout.text()),
        ("log (stderr)".to_string(), stderr),
    ];
    let spans = spans_in_file(&file);
    (outputs, spans)
}

/// Every occurrence of a secret in `outputs`, with its context.
fn find_leaks(outputs: &[(String, String)]) -> Vec<String> {
    let mut leaks = Vec::new();
    for (source, text) in outputs {
        for (what, needle) in SECRETS.needles() {
            if let Some(at) = text.find(&needle) {
                let from = at.saturating_sub(80);
                let to = (at + needle.len() + 80).min(text.len());
                leaks.push(format!(
                    "{what} ({needle}) leaked into {source}: …{}…",
                    text.get(from..to).unwrap_or("")
                ));
            }
        }
    }
    leaks
}

fn assert_no_secret(outputs: &[(String, String)]) {
    let leaks = find_leaks(outputs);
    assert!(leaks.is_empty(), "{}", leaks.join("\n"));
    let bytes: usize = outputs.iter().map(|(_, t)| t.len()).sum();
    println!(
        "scanned {bytes} exported bytes ({}) for {} secret forms: none found",
        outputs
            .iter()
            .map(|(s, t)| format!("{s} {} B", t.len()))
            .collect::<Vec<_>>()
            .join(", "),
        SECRETS.needles().len()
    );
}

fn check_spans(spans: &[Span], outputs: &[(String, String)]) {
    let servers: Vec<&Span> = spans.iter().filter(|s| s.kind == KIND_SERVER).collect();
    let clients: Vec<&Span> = spans.iter().filter(|s| s.kind == KIND_CLIENT).collect();
    assert_eq!(servers.len(), 5, "{spans:#?}");
    assert_eq!(clients.len(), 2, "{spans:#?}");
    // What the spans do say: the path without its query, the server without credentials.
    for path in ["/chain/priv-1", "/echo/priv-2", "/leaf/priv-3"] {
        assert!(
            servers.iter().any(|s| s.str("url.path") == Some(path)),
            "no server span for {path}: {servers:#?}"
        );
    }
    for c in &clients {
        let full = c.str("url.full").unwrap_or_default();
        assert!(
            full.starts_with("http://127.0.0.1:") && full.ends_with("/chain/priv-1"),
            "client url.full {full}"
        );
    }
    // The scan covered real content: the non-secret parts are in every export.
    for (source, text) in outputs {
        if source.starts_with("log") {
            continue;
        }
        assert!(
            text.contains("/chain/priv-1"),
            "{source} does not hold the spans:\n{text}"
        );
    }
}

#[test]
fn no_secret_of_a_traced_run_is_exported_symbol_level() {
    require_bpf();
    crypto();
    let (outputs, spans) = run("symbols");
    assert_no_secret(&outputs);
    check_spans(&spans, &outputs);
}

#[test]
fn no_secret_of_a_traced_run_is_exported_socket_level() {
    // Socket-level capture copies the raw bytes of every request and response to user space
    // and parses them there: the place a tracer is likeliest to leak what it read.
    require_bpf();
    crypto();
    let (outputs, spans) = run("sockets");
    assert_no_secret(&outputs);
    check_spans(&spans, &outputs);
}

#[test]
fn the_scan_finds_a_secret_that_is_there() {
    // The scanner itself: a secret planted in an export is found in each of its forms.
    let basic = base64(format!("{}:{}", SECRETS.user_b, SECRETS.pass_b).as_bytes());
    for planted in [
        format!("{{\"url.full\":\"http://x/?token={}\"}}", SECRETS.query),
        format!("Authorization: Basic {basic}"),
        format!("http://{}:{}@host/", SECRETS.user_c, SECRETS.pass_c),
    ] {
        let outputs = vec![("planted".to_string(), planted.clone())];
        assert!(
            !find_leaks(&outputs).is_empty(),
            "the scan missed a secret in {planted}"
        );
    }
    assert_eq!(
        base64(b"Aladdin:open sesame"),
        "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
    );
}
