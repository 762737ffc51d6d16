//! Overload: the event ring buffer overflows while the agent cannot read it (the agent is
//! stopped with SIGSTOP during a burst, as a starved or paused agent is). The target keeps
//! serving every request; the probes count each event they could not send; the agent reports
//! the count when it exits; and every span it does emit is whole and correct — exactly one per
//! request that was not lost, none invented, none duplicated, and tracing resumes at once.

mod support;

use std::{collections::HashSet, time::Duration};

use support::{
    go_fixture, newest_go,
    otlp::spans_in_file,
    require_bpf, temp_dir,
    traffic::{send, Req},
    Agent, GoServer,
};

/// The event ring buffer holds 2 MiB; a server event takes 704 bytes with its header, so
/// fewer than 3 000 fit. The burst is four times that.
const BURST: usize = 12_000;
const WARM: usize = 10;
const AFTER: usize = 20;

fn crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

/// `name=N` from the agent's exit report ("probe counters: a=1, b=2").
fn counter(stderr: &str, name: &str) -> u64 {
    stderr
        .lines()
        .filter(|l| l.contains("probe counters:"))
        .flat_map(|l| l.split("probe counters:").nth(1).unwrap_or("").split(','))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().parse().unwrap())
        .unwrap_or(0)
}

#[test]
fn a_ring_buffer_overflow_is_counted_reported_and_leaves_correct_spans() {
    require_bpf();
    crypto();
    let fixture = go_fixture("httpserver", &newest_go("httpserver"), "stripped");
    let server = GoServer::start(&fixture.path);
    let out = temp_dir("overload").join("spans.jsonl");
    let agent = Agent::attach(&[
        "attach",
        "--pid",
        &server.pid().to_string(),
        "--output-file",
        out.to_str().unwrap(),
    ]);
    let agent_pid = agent.child.id();
    let reqs = |tag: &str, n: usize| -> Vec<Req> {
        (0..n)
            .map(|i| Req::get(format!("/items/{tag}-{i}")))
            .collect()
    };
    let warm = send(&server.url(""), &reqs("warm", WARM), 4);
    // Let the reader take the warm-up events before it is stopped.
    std::thread::sleep(Duration::from_millis(600));

    signal(agent_pid, libc::SIGSTOP);
    let started = std::time::Instant::now();
    let burst = send(&server.url(""), &reqs("burst", BURST), 32);
    let burst_secs = started.elapsed().as_secs_f64();
    signal(agent_pid, libc::SIGCONT);

    // Tracing resumes: requests after the overflow are all traced.
    std::thread::sleep(Duration::from_millis(500));
    let after = send(&server.url(""), &reqs("after", AFTER), 4);
    std::thread::sleep(Duration::from_millis(500));
    let (status, stderr) = agent.stop();
    assert!(status.success(), "the agent did not survive:\n{stderr}");

    // The target served every request, unchanged.
    for (tag, resps) in [("warm", &warm), ("burst", &burst), ("after", &after)] {
        for (i, r) in resps.iter().enumerate() {
            assert_eq!(r.status, 200);
            assert_eq!(r.body, format!("item {tag}-{i}\n").as_bytes());
        }
    }

    let lost = counter(&stderr, "ringbuf_full");
    let spans = spans_in_file(&out);
    let total = WARM + BURST + AFTER;
    println!(
        "burst of {BURST} requests in {burst_secs:.1} s with the reader stopped: {lost} events lost (counted), {} spans emitted of {total} requests",
        spans.len()
    );
    assert!(
        lost > 0,
        "the burst did not overflow the ring buffer (nothing counted):\n{stderr}"
    );
    assert!(
        (lost as usize) < BURST,
        "more events lost than the burst held: {lost}"
    );
    // Every event is either emitted as a span or counted as lost: nothing silently dropped.
    for other in ["inflight_insert_failed", "return_without_entry"] {
        assert_eq!(counter(&stderr, other), 0, "{other}:\n{stderr}");
    }
    assert_eq!(
        spans.len() + lost as usize,
        total,
        "spans emitted + events counted as lost must equal requests served\n{stderr}"
    );
    assert!(stderr.contains("dropped at the queue") && stderr.contains(" 0 undecodable"));

    // Every emitted span is a real request, whole, once.
    let mut paths = HashSet::new();
    let mut span_ids = HashSet::new();
    for s in &spans {
        let path = s.str("url.path").unwrap_or_default().to_string();
        let (tag, i) = path
            .strip_prefix("/items/")
            .and_then(|rest| rest.rsplit_once('-'))
            .unwrap_or_else(|| panic!("span for an unknown request: {s:#?}"));
        let i: usize = i.parse().unwrap();
        let n = match tag {
            "warm" => WARM,
            "burst" => BURST,
            "after" => AFTER,
            _ => panic!("span for an unknown request: {s:#?}"),
        };
        assert!(i < n, "{path}");
        assert_eq!(s.str("http.request.method"), Some("GET"), "{s:#?}");
        assert_eq!(s.int("http.response.status_code"), Some(200), "{s:#?}");
        assert_eq!(s.int("server.port"), Some(server.port as i64), "{s:#?}");
        assert!(
            s.end_ns > s.start_ns && s.duration_ms() < 30_000.0,
            "{s:#?}"
        );
        assert_eq!(s.trace_id.len(), 32);
        assert!(paths.insert(path.clone()), "two spans for {path}");
        assert!(span_ids.insert(s.span_id.clone()), "span id reused");
    }
    for tag in ["warm", "after"] {
        let n = if tag == "warm" { WARM } else { AFTER };
        for i in 0..n {
            assert!(
                paths.contains(&format!("/items/{tag}-{i}")),
                "/items/{tag}-{i} was not traced"
            );
        }
    }
    // The exit report names the loss.
    assert!(stderr.contains(&format!("ringbuf_full={lost}")), "{stderr}");
}
