//! OTLP over TLS to the real OpenTelemetry Collector: a self-signed CA given with
//! `OTEL_EXPORTER_OTLP_CERTIFICATE`, and mutual TLS with `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`
//! and `_CLIENT_KEY`, over gRPC and HTTP/protobuf, with headers and gzip on. Certificates are
//! made by the `openssl` command in the test. A receiver the agent cannot talk to (a CA it does
//! not trust, a client certificate the server does not accept or none) costs the spans, which
//! are counted, and a log line that says what to set; never the agent.

mod support;

use std::{path::Path, time::Duration};

use support::{
    export::{accounting, Certs, Collector, ReceiverTls},
    go_fixture, newest_go, require_bpf, temp_dir,
    traffic::{send, Req},
    Agent, GoServer,
};

fn server() -> GoServer {
    let fixture = go_fixture("httpserver", &newest_go("httpserver"), "plain");
    GoServer::start(&fixture.path)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Proto {
    Grpc,
    Http,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Grpc => "grpc",
            Proto::Http => "http/protobuf",
        }
    }

    fn endpoint(self, c: &Collector) -> String {
        match self {
            Proto::Grpc => format!("https://127.0.0.1:{}", c.grpc_port),
            Proto::Http => format!("https://127.0.0.1:{}", c.http_port),
        }
    }
}

/// What the agent is given for TLS.
struct Client<'a> {
    ca: Option<&'a Path>,
    identity: Option<(&'a Path, &'a Path)>,
}

/// One agent run: attach, send `n` GETs of `/items/{tag}-i`, wait for them (or not), stop.
/// Returns the spans of this run the Collector got, and the agent's stderr.
fn run(
    server: &GoServer,
    collector: &Collector,
    proto: Proto,
    client: Client,
    tag: &str,
    expect_delivery: bool,
) -> (usize, String) {
    const N: usize = 20;
    let pid = server.pid().to_string();
    let endpoint = proto.endpoint(collector);
    let mut env: Vec<(String, String)> = vec![
        (
            "OTEL_EXPORTER_OTLP_HEADERS".into(),
            "x-api-key=s3cret".into(),
        ),
        ("OTEL_EXPORTER_OTLP_COMPRESSION".into(), "gzip".into()),
        ("OTEL_METRIC_EXPORT_INTERVAL".into(), "500".into()),
        ("SPANHOOK_OTLP_RETRY_MAX_ELAPSED".into(), "1.5".into()),
        ("SPANHOOK_SHUTDOWN_TIMEOUT".into(), "3".into()),
    ];
    if let Some(ca) = client.ca {
        env.push((
            "OTEL_EXPORTER_OTLP_CERTIFICATE".into(),
            ca.display().to_string(),
        ));
    }
    if let Some((cert, key)) = client.identity {
        env.push((
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE".into(),
            cert.display().to_string(),
        ));
        env.push((
            "OTEL_EXPORTER_OTLP_CLIENT_KEY".into(),
            key.display().to_string(),
        ));
    }
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let agent = Agent::attach_with_env(
        &[
            "attach",
            "--pid",
            &pid,
            "--otlp-endpoint",
            &endpoint,
            "--otlp-protocol",
            proto.name(),
        ],
        &env_refs,
    );
    let reqs: Vec<Req> = (0..N)
        .map(|i| Req::get(format!("/items/{tag}-{i}")))
        .collect();
    assert!(send(&server.url(""), &reqs, 4)
        .iter()
        .all(|r| r.status == 200));
    let ours = || {
        collector
            .spans()
            .iter()
            .filter(|s| {
                s.str("url.path")
                    .is_some_and(|p| p.starts_with(&format!("/items/{tag}-")))
            })
            .count()
    };
    let start = std::time::Instant::now();
    let wait = if expect_delivery {
        Duration::from_secs(20)
    } else {
        // Long enough for the batch to be tried and given up on before the agent stops.
        Duration::from_secs(4)
    };
    while start.elapsed() < wait && ours() < N {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, stderr) = agent.stop();
    assert!(
        status.success(),
        "{proto:?} {tag}: the agent must exit cleanly:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let got = ours();
    let a = accounting(&stderr);
    let (_, exported, dropped, reasons) = a.exporters[0].clone();
    if expect_delivery {
        assert_eq!(got, N, "{proto:?} {tag}:\n{stderr}\n{}", collector.log());
        assert_eq!(
            (a.seen, exported, dropped),
            (N as u64, N as u64, 0),
            "{stderr}"
        );
        assert!(!stderr.contains("export errors:"), "{stderr}");
    } else {
        assert_eq!(got, 0, "{proto:?} {tag}");
        assert_eq!(
            (a.seen, exported, dropped),
            (N as u64, 0, N as u64),
            "{stderr}"
        );
        assert!(
            reasons
                .iter()
                .all(|(r, _)| r == "retries_exhausted" || r == "shutdown"),
            "{proto:?} {tag}: {reasons:?}\n{stderr}"
        );
        assert!(
            stderr.contains("export errors:") && stderr.contains("traces/tls="),
            "TLS failures are counted as such:\n{stderr}"
        );
    }
    if let Some(line) = stderr.lines().find(|l| l.contains("spans not exported")) {
        eprintln!(
            "{proto:?} {tag}: {}",
            line.split("WARN").last().unwrap_or(line).trim()
        );
    }
    eprintln!(
        "{proto:?} {tag}: collector got {got} spans; agent exported {exported}, dropped {dropped} {reasons:?}"
    );
    (got, stderr)
}

/// Metrics went through the same TLS set-up: the Collector got the agent's own series.
fn agent_metrics_arrived(collector: &Collector, agent_stderr: &str) {
    let found = collector.metrics_requests().iter().any(|r| {
        r["resourceMetrics"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|rm| rm.to_string().contains("\"spanhook.spans.seen\""))
    });
    assert!(
        found,
        "no metrics through TLS:\n{agent_stderr}\n{}",
        collector.log()
    );
}

/// A self-signed CA: spans (and metrics) arrive over gRPC and HTTP/protobuf, gzip-compressed
/// with the configured headers; without the CA the server is not trusted, which the agent
/// says and counts.
#[test]
fn otlp_over_tls_with_a_self_signed_ca() {
    require_bpf();
    let dir = temp_dir("export-tls-ca");
    let certs = Certs::generate(&dir);
    let collector = Collector::start_with(Some(ReceiverTls {
        cert: certs.server_cert.clone(),
        key: certs.server_key.clone(),
        client_ca: None,
    }));
    let server = server();
    for proto in [Proto::Grpc, Proto::Http] {
        let trusting = Client {
            ca: Some(&certs.ca),
            identity: None,
        };
        let tag = format!("ca-{}", proto.name().replace('/', "-"));
        let (_, stderr) = run(&server, &collector, proto, trusting, &tag, true);
        agent_metrics_arrived(&collector, &stderr);
    }
    for proto in [Proto::Grpc, Proto::Http] {
        let untrusting = Client {
            ca: None,
            identity: None,
        };
        let tag = format!("noca-{}", proto.name().replace('/', "-"));
        let (_, stderr) = run(&server, &collector, proto, untrusting, &tag, false);
        assert!(
            stderr.contains("not signed by a trusted CA")
                && stderr.contains("OTEL_EXPORTER_OTLP_CERTIFICATE"),
            "{proto:?}: the log must say what to set:\n{stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Mutual TLS: with the client certificate the CA signed, spans arrive over both protocols;
/// without one, or with one from another CA, the server refuses the connection, and the
/// agent logs what to set, counts every span as dropped and exits cleanly.
#[test]
fn mutual_tls_over_grpc_and_http() {
    require_bpf();
    let dir = temp_dir("export-tls-mtls");
    let certs = Certs::generate(&dir);
    let collector = Collector::start_with(Some(ReceiverTls {
        cert: certs.server_cert.clone(),
        key: certs.server_key.clone(),
        client_ca: Some(certs.ca.clone()),
    }));
    let server = server();
    for proto in [Proto::Grpc, Proto::Http] {
        let client = Client {
            ca: Some(&certs.ca),
            identity: Some((&certs.client_cert, &certs.client_key)),
        };
        let tag = format!("mtls-{}", proto.name().replace('/', "-"));
        let (_, stderr) = run(&server, &collector, proto, client, &tag, true);
        agent_metrics_arrived(&collector, &stderr);
    }
    for proto in [Proto::Grpc, Proto::Http] {
        for (what, identity) in [
            ("nocert", None),
            (
                "stranger",
                Some((certs.stranger_cert.as_path(), certs.stranger_key.as_path())),
            ),
        ] {
            let client = Client {
                ca: Some(&certs.ca),
                identity,
            };
            let tag = format!("{what}-{}", proto.name().replace('/', "-"));
            let (_, stderr) = run(&server, &collector, proto, client, &tag, false);
            assert!(
                stderr.contains("wants a client certificate it trusts")
                    && stderr.contains("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"),
                "{proto:?} {what}: the log must say what to set:\n{stderr}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
