//! The export path under failure, end to end: a real traced Go server, the real agent, the
//! real OpenTelemetry Collector stopped and started again, and a scripted OTLP/HTTP receiver
//! for the status codes the Collector cannot be made to answer.

mod support;

use std::{
    collections::HashSet,
    io::Read,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use prost::Message;
use support::{
    export::{accounting, probe_counter, rss_kib, Collector, Receiver},
    go_fixture, newest_go, require_bpf,
    traffic::{send, Req},
    Agent, GoServer,
};

fn server() -> GoServer {
    let fixture = go_fixture("httpserver", &newest_go("httpserver"), "plain");
    GoServer::start(&fixture.path)
}

/// Sends `n` GETs of `path_prefix{i}` in chunks; returns how many were answered.
fn burst(server: &GoServer, path_prefix: &str, n: usize) -> u64 {
    let reqs: Vec<Req> = (0..n)
        .map(|i| Req::get(format!("{path_prefix}{i}")))
        .collect();
    let answers = send(&server.url(""), &reqs, 8);
    assert!(answers.iter().all(|r| r.status == 200));
    answers.len() as u64
}

/// The Collector stopped for 20 s (the issue asks for 5 minutes; shortened so the suite
/// stays short — the agent behaves the same once the queue is full) while the server keeps
/// getting traffic: every span is accounted for (sent = received + dropped), the agent's RSS
/// stays bounded, and export resumes within 5 s of the Collector's return.
#[test]
fn collector_outage_counts_every_drop_and_export_resumes() {
    require_bpf();
    let server = server();
    let mut collector = Collector::start();
    let pid = server.pid().to_string();
    let endpoint = format!("http://127.0.0.1:{}", collector.http_port);
    let agent = Agent::attach_with_env(
        &[
            "attach",
            "--pid",
            &pid,
            "--otlp-endpoint",
            &endpoint,
            "--otlp-protocol",
            "http/protobuf",
        ],
        &[
            ("OTEL_BSP_MAX_QUEUE_SIZE", "2048"),
            ("OTEL_METRICS_EXPORTER", "none"),
            ("SPANHOOK_OTLP_RETRY_MAX_ELAPSED", "6"),
            ("SPANHOOK_SHUTDOWN_TIMEOUT", "5"),
        ],
    );
    let agent_pid = agent.child.id();
    let peak_rss = Arc::new(AtomicU64::new(0));
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (peak, on) = (peak_rss.clone(), watching.clone());
        std::thread::spawn(move || {
            while on.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(agent_pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let mut sent = burst(&server, "/items/before-", 300);
    let got = collector.wait_spans(300, Duration::from_secs(20));
    assert_eq!(got.len(), 300, "before the outage:\n{}", collector.log());
    let rss_before = rss_kib(agent_pid);

    collector.pause();
    let outage = Instant::now();
    let mut during = 0;
    while outage.elapsed() < Duration::from_secs(20) {
        let second = Instant::now();
        during += burst(&server, "/items/during-", 1000);
        if let Some(rest) = Duration::from_secs(1).checked_sub(second.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    sent += during;
    let rate = during as f64 / outage.elapsed().as_secs_f64();

    let before_resume = collector.spans().len();
    collector.resume();
    let back = Instant::now();
    let resumed = loop {
        if collector.spans().len() > before_resume {
            break back.elapsed();
        }
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "export did not resume:\n{}",
            agent.stderr.text()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    sent += burst(&server, "/items/after-", 300);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15)
        && collector
            .spans()
            .iter()
            .filter(|s| s.str("url.path").is_some_and(|p| p.contains("after-")))
            .count()
            < 300
    {
        std::thread::sleep(Duration::from_millis(50));
    }

    let (status, stderr) = agent.stop();
    watching.store(false, Ordering::Relaxed);
    watcher.join().unwrap();
    assert!(status.success(), "{stderr}");
    let spans = collector.spans();
    let unique: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let a = accounting(&stderr);
    let lost_in_kernel = probe_counter(&stderr, "ringbuf_full");
    let (name, exported, dropped, reasons) = a.exporters[0].clone();
    let peak = peak_rss.load(Ordering::Relaxed);
    eprintln!(
        "sent {sent} requests ({rate:.0}/s during a 20 s outage); collector received {} spans ({} unique); \
         agent: seen {} queue_full {} queued {} | {name}: exported {exported} dropped {dropped} {reasons:?}; \
         kernel lost {lost_in_kernel}; RSS {rss_before} KiB before, peak {peak} KiB; export resumed {resumed:?} after the Collector's return",
        spans.len(),
        unique.len(),
        a.seen,
        a.queue_full,
        a.queued,
    );
    assert_eq!(unique.len(), spans.len(), "no span is delivered twice");
    assert_eq!(a.seen + lost_in_kernel, sent, "every request made a span");
    assert_eq!(
        a.seen,
        spans.len() as u64 + a.queue_full + dropped,
        "sent = received + dropped:\n{stderr}"
    );
    assert_eq!(a.queued, exported + dropped);
    assert_eq!(exported, spans.len() as u64);
    assert!(a.queue_full > 0, "the outage must overflow the queue");
    assert!(
        reasons
            .iter()
            .any(|(r, n)| r == "retries_exhausted" && *n > 0),
        "{reasons:?}"
    );
    assert!(
        resumed < Duration::from_secs(5),
        "resumed after {resumed:?}"
    );
    assert!(
        peak < 256 * 1024,
        "RSS peaked at {peak} KiB with a 2048-span queue"
    );
    assert!(
        stderr.contains("export errors:") && stderr.contains("transport"),
        "{stderr}"
    );
}

fn decode_traces(r: &support::export::Received) -> usize {
    let mut body = r.body.clone();
    if r.header("content-encoding") == Some("gzip") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .unwrap();
        body = out;
    }
    let req = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
        &body[..],
    )
    .expect("an ExportTraceServiceRequest");
    req.resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

/// 503 and 429 are retried (the same request again, after a backoff); 400 is not. Headers
/// and gzip from the standard variables arrive at the receiver.
#[test]
fn retryable_statuses_are_retried_and_400_is_not() {
    require_bpf();
    let server = server();
    let receiver = Receiver::start();
    let pid = server.pid().to_string();
    let agent = Agent::attach_with_env(
        &["attach", "--pid", &pid],
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                &format!("http://127.0.0.1:{}", receiver.port),
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-api-key=s3cret,x-team=a%20b",
            ),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_METRICS_EXPORTER", "none"),
        ],
    );
    receiver.push_script(&[503, 429]);
    burst(&server, "/items/first-", 5);
    let start = Instant::now();
    while receiver.requests().len() < 3 && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let first = receiver.requests();
    assert_eq!(first.len(), 3, "503, 429, then 200: {first:?}");
    assert!(
        first.iter().all(|r| r.body == first[0].body),
        "the same request is retried"
    );
    for pair in first.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_millis(100),
            "backoff between attempts: {gap:?}"
        );
    }
    for r in &first {
        assert_eq!(r.path, "/v1/traces");
        assert_eq!(r.header("x-api-key"), Some("s3cret"));
        assert_eq!(r.header("x-team"), Some("a b"));
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
    }
    assert_eq!(decode_traces(&first[2]), 5);

    receiver.push_script(&[400]);
    burst(&server, "/items/second-", 3);
    std::thread::sleep(Duration::from_secs(4));
    let all = receiver.requests();
    assert_eq!(all.len(), 4, "a 400 is not retried: {:?}", &all[3..]);
    assert_eq!(decode_traces(&all[3]), 3);

    let (status, stderr) = agent.stop();
    assert!(status.success(), "{stderr}");
    let a = accounting(&stderr);
    let (_, exported, dropped, reasons) = a.exporters[0].clone();
    assert_eq!((a.seen, exported, dropped), (8, 5, 3), "{stderr}");
    assert_eq!(reasons, vec![("rejected".to_string(), 3)]);
    assert!(stderr.contains("traces/http_503=1"), "{stderr}");
    assert!(stderr.contains("traces/http_429=1"), "{stderr}");
    assert!(stderr.contains("traces/http_400=1"), "{stderr}");
}
