//! The RED metrics end to end: a traced Go server gets a known mix of requests; the agent's
//! `--prometheus` endpoint is parsed by Prometheus's own text-format parser (the Python client's,
//! from Debian) and the OTLP metrics are read from what the real Collector forwards. Counts per
//! route and status match the requests, and duration sums match the spans' durations of the same
//! requests; a small cardinality limit folds the later series into the overflow series.

mod support;

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use support::{
    export::{
        histogram_points, latest_points, listens_on_loopback_only, number_points, parse_prometheus,
        scrape, Collector, HistPoint, PromSample,
    },
    go_fixture, newest_go,
    otlp::Span,
    require_bpf,
    traffic::{send, Req},
    Agent, GoServer,
};

fn server() -> GoServer {
    let fixture = go_fixture("httpserver", &newest_go("httpserver"), "plain");
    GoServer::start(&fixture.path)
}

/// (method, route, status) of a server span or series; the route is "" when there is none.
type Key = (String, String, u16);

/// Groups of requests, each with the series it must land in.
fn groups() -> Vec<(Key, Vec<Req>)> {
    let key = |m: &str, r: &str, s: u16| (m.to_string(), r.to_string(), s);
    vec![
        (
            key("GET", "/hello", 200),
            (0..40).map(|_| Req::get("/hello")).collect(),
        ),
        (
            key("GET", "/error", 500),
            (0..15).map(|_| Req::get("/error")).collect(),
        ),
        (
            key("GET", "/items/", 200),
            (0..30).map(|i| Req::get(format!("/items/{i}"))).collect(),
        ),
        (
            key("POST", "/echo", 200),
            (0..12)
                .map(|_| Req::with("POST", "/echo", Some(b"ping")))
                .collect(),
        ),
        (
            key("GET", "/echo", 405),
            (0..7).map(|_| Req::get("/echo")).collect(),
        ),
        (
            key("GET", "/slow", 200),
            (0..6).map(|_| Req::get("/slow?ms=30")).collect(),
        ),
    ]
}

/// Sends each group in turn (all of a group answered before the next starts).
fn send_groups(server: &GoServer, groups: &[(Key, Vec<Req>)]) -> u64 {
    let mut n = 0;
    for ((_, _, status), reqs) in groups {
        let answers = send(&server.url(""), reqs, 4);
        assert!(answers.iter().all(|r| r.status == *status), "{answers:?}");
        n += answers.len() as u64;
        // Let the agent read this group before the next one starts.
        std::thread::sleep(Duration::from_millis(300));
    }
    n
}

fn span_key(s: &Span) -> Key {
    (
        s.str("http.request.method").unwrap_or("").to_string(),
        s.str("http.route").unwrap_or("").to_string(),
        s.int("http.response.status_code").unwrap_or(0) as u16,
    )
}

fn point_key(p: &HistPoint) -> Key {
    (
        p.attrs
            .get("http.request.method")
            .cloned()
            .unwrap_or_default(),
        p.attrs.get("http.route").cloned().unwrap_or_default(),
        p.attrs
            .get("http.response.status_code")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    )
}

fn sample_key(s: &PromSample) -> Key {
    (
        s.labels
            .get("http_request_method")
            .cloned()
            .unwrap_or_default(),
        s.labels.get("http_route").cloned().unwrap_or_default(),
        s.labels
            .get("http_response_status_code")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    )
}

/// Sum of the spans' durations (seconds) per key.
fn span_seconds(spans: &[Span]) -> HashMap<Key, (u64, f64)> {
    let mut out: HashMap<Key, (u64, f64)> = HashMap::new();
    for s in spans
        .iter()
        .filter(|s| s.kind == support::otlp::KIND_SERVER)
    {
        let e = out.entry(span_key(s)).or_default();
        e.0 += 1;
        e.1 += (s.end_ns - s.start_ns) as f64 / 1e9;
    }
    out
}

/// Starts the agent with OTLP to `collector` and `--prometheus 0`; returns it and the
/// address the endpoint is bound to.
fn agent(server: &GoServer, collector: &Collector, env: &[(&str, &str)]) -> (Agent, String) {
    let pid = server.pid().to_string();
    let endpoint = format!("http://127.0.0.1:{}", collector.http_port);
    let mut all = vec![("OTEL_METRIC_EXPORT_INTERVAL", "500")];
    all.extend_from_slice(env);
    let agent = Agent::attach_with_env(
        &[
            "attach",
            "--pid",
            &pid,
            "--otlp-endpoint",
            &endpoint,
            "--otlp-protocol",
            "http/protobuf",
            "--prometheus",
            "0",
        ],
        &all,
    );
    let line = agent
        .stderr
        .wait_for("prometheus metrics on http://", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no Prometheus endpoint:\n{}", agent.stderr.text()));
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_string();
    (agent, addr)
}

/// Scrapes until the server histogram counts add up to `total` (the agent has read every
/// request); returns the parsed samples.
fn scrape_until(addr: &str, total: u64) -> Vec<PromSample> {
    let start = Instant::now();
    loop {
        let (head, body) = scrape(addr);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        let samples = parse_prometheus(&body);
        let counted: f64 = samples
            .iter()
            .filter(|s| s.name == "http_server_request_duration_seconds_count")
            .map(|s| s.value)
            .sum();
        if counted as u64 >= total || start.elapsed() > Duration::from_secs(15) {
            return samples;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The newest OTLP points of `http.server.request.duration` once they count `total`.
fn otlp_points_until(collector: &Collector, pid: i64, total: u64) -> Vec<HistPoint> {
    let start = Instant::now();
    loop {
        let points: Vec<HistPoint> = latest_points(histogram_points(&collector.metrics_requests()))
            .into_iter()
            .filter(|p| p.metric == "http.server.request.duration" && p.pid == Some(pid))
            .collect();
        if points.iter().map(|p| p.count).sum::<u64>() >= total
            || start.elapsed() > Duration::from_secs(15)
        {
            return points;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 + 1e-9 * a.abs().max(b.abs())
}

/// Counts per route and status on the Prometheus endpoint and in the OTLP metrics match the
/// requests sent; each series' duration sum matches the sum of its spans' durations; the
/// histograms are cumulative with the semantic conventions' boundaries; the endpoint is
/// bound to loopback.
#[test]
fn prometheus_and_otlp_metrics_match_the_requests() {
    require_bpf();
    let server = server();
    let collector = Collector::start();
    let (agent, addr) = agent(&server, &collector, &[]);
    assert!(
        addr.starts_with("127.0.0.1:"),
        "--prometheus PORT binds loopback: {addr}"
    );
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    assert!(listens_on_loopback_only(port), "{addr}");

    let groups = groups();
    let total = send_groups(&server, &groups);
    let expected: BTreeMap<Key, u64> = groups
        .iter()
        .map(|(k, r)| (k.clone(), r.len() as u64))
        .collect();

    // Prometheus, through Prometheus's own parser.
    let samples = scrape_until(&addr, total);
    let family =
        |name: &str| -> Vec<&PromSample> { samples.iter().filter(|s| s.family == name).collect() };
    let hist = family("http_server_request_duration_seconds");
    assert!(
        hist.iter().all(|s| s.family_type == "histogram"),
        "{hist:?}"
    );
    let pid = server.pid().to_string();
    let mut prom_counts: BTreeMap<Key, u64> = BTreeMap::new();
    let mut prom_sums: BTreeMap<Key, f64> = BTreeMap::new();
    for s in &hist {
        assert_eq!(s.labels.get("process_pid"), Some(&pid), "{s:?}");
        match s.name.as_str() {
            "http_server_request_duration_seconds_count" => {
                *prom_counts.entry(sample_key(s)).or_default() += s.value as u64
            }
            "http_server_request_duration_seconds_sum" => {
                *prom_sums.entry(sample_key(s)).or_default() += s.value
            }
            _ => {}
        }
    }
    assert_eq!(
        prom_counts, expected,
        "Prometheus counts per route and status"
    );
    // Buckets: cumulative, the conventions' boundaries, +Inf equal to the count.
    for (key, count) in &expected {
        let mut buckets: Vec<(f64, f64)> = hist
            .iter()
            .filter(|s| s.name.ends_with("_bucket") && sample_key(s) == *key)
            .map(|s| {
                let le = s.labels["le"].as_str();
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                (le, s.value)
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let bounds: Vec<f64> = buckets.iter().map(|b| b.0).collect();
        assert_eq!(
            bounds,
            [
                0.005,
                0.01,
                0.025,
                0.05,
                0.075,
                0.1,
                0.25,
                0.5,
                0.75,
                1.0,
                2.5,
                5.0,
                7.5,
                10.0,
                f64::INFINITY
            ]
        );
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
        assert_eq!(buckets.last().unwrap().1 as u64, *count);
    }
    let slow = (String::from("GET"), String::from("/slow"), 200);
    assert!(
        prom_sums[&slow] >= 6.0 * 0.030,
        "six 30 ms requests: {}",
        prom_sums[&slow]
    );
    let seen = family("spanhook_spans_seen");
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].family_type, "counter");
    assert_eq!(seen[0].name, "spanhook_spans_seen_total");
    assert_eq!(seen[0].value as u64, total);
    for gauge in ["spanhook_targets_traced", "spanhook_probes_attached"] {
        let g = family(gauge);
        assert_eq!(g.len(), 1, "{gauge}: {samples:?}");
        assert_eq!(g[0].family_type, "gauge");
        assert!(g[0].value >= 1.0, "{gauge}");
    }

    // The spans of the same requests, and the OTLP metrics, from the Collector.
    let spans = collector.wait_spans(total as usize, Duration::from_secs(20));
    assert_eq!(spans.len() as u64, total, "{}", collector.log());
    let by_key = span_seconds(&spans);
    let (status, stderr) = agent.stop();
    assert!(status.success(), "{stderr}");
    let points = otlp_points_until(&collector, server.pid() as i64, total);
    let otlp_counts: BTreeMap<Key, u64> = points.iter().map(|p| (point_key(p), p.count)).collect();
    assert_eq!(otlp_counts, expected, "OTLP counts per route and status");
    let mut report = Vec::new();
    for p in &points {
        let key = point_key(p);
        let (n, seconds) = by_key[&key];
        assert_eq!(n, p.count, "{key:?}");
        assert!(
            close(p.sum, seconds),
            "{key:?}: metric sum {} s, spans {} s",
            p.sum,
            seconds
        );
        assert!(
            close(prom_sums[&key], seconds),
            "{key:?}: Prometheus sum {} s, spans {} s",
            prom_sums[&key],
            seconds
        );
        assert_eq!(p.buckets.iter().sum::<u64>(), p.count);
        assert_eq!(p.bounds.len() + 1, p.buckets.len());
        report.push(format!(
            "{key:?} n={} sum={:.6}s spans={:.6}s",
            p.count, p.sum, seconds
        ));
    }
    eprintln!("{}", report.join("\n"));
}

/// With `OTEL_METRICS_CARDINALITY_LIMIT=3`, the first three attribute sets keep their series
/// and every later one is counted in the `otel.metric.overflow=true` series, over OTLP and on
/// the Prometheus endpoint; no request goes uncounted and the overflow sum is the sum of the
/// overflowing spans' durations.
#[test]
fn overflow_series_when_cardinality_exceeds_the_limit() {
    require_bpf();
    let server = server();
    let collector = Collector::start();
    let (agent, addr) = agent(
        &server,
        &collector,
        &[("OTEL_METRICS_CARDINALITY_LIMIT", "3")],
    );
    let groups = groups();
    let total = send_groups(&server, &groups);
    let kept: Vec<Key> = groups.iter().take(3).map(|(k, _)| k.clone()).collect();
    let overflowing: u64 = groups.iter().skip(3).map(|(_, r)| r.len() as u64).sum();

    let samples = scrape_until(&addr, total);
    let counts: Vec<&PromSample> = samples
        .iter()
        .filter(|s| s.name == "http_server_request_duration_seconds_count")
        .collect();
    assert_eq!(counts.len(), 4, "three series and the overflow: {counts:?}");
    let overflow = counts
        .iter()
        .find(|s| s.labels.get("otel_metric_overflow").map(String::as_str) == Some("true"))
        .unwrap_or_else(|| panic!("no overflow series: {counts:?}"));
    assert_eq!(overflow.value as u64, overflowing);
    let folded: Vec<&PromSample> = samples
        .iter()
        .filter(|s| s.name == "spanhook_metrics_overflow_total")
        .collect();
    assert_eq!(folded.len(), 1, "{samples:?}");
    assert_eq!(
        folded[0].labels.get("metric").map(String::as_str),
        Some("http.server.request.duration")
    );
    assert_eq!(folded[0].value as u64, overflowing);

    let spans = collector.wait_spans(total as usize, Duration::from_secs(20));
    assert_eq!(spans.len() as u64, total);
    let by_key = span_seconds(&spans);
    let (status, stderr) = agent.stop();
    assert!(status.success(), "{stderr}");
    let points = otlp_points_until(&collector, server.pid() as i64, total);
    assert_eq!(points.len(), 4, "{points:?}");
    assert_eq!(points.iter().map(|p| p.count).sum::<u64>(), total);
    let (over, normal): (Vec<&HistPoint>, Vec<&HistPoint>) = points
        .iter()
        .partition(|p| p.attrs.get("otel.metric.overflow").map(String::as_str) == Some("true"));
    assert_eq!(over.len(), 1);
    assert_eq!(
        over[0].attrs.len(),
        1,
        "only the overflow attribute: {over:?}"
    );
    assert_eq!(over[0].count, overflowing);
    let mut normal_keys: Vec<Key> = normal.iter().map(|p| point_key(p)).collect();
    normal_keys.sort();
    let mut kept_sorted = kept.clone();
    kept_sorted.sort();
    assert_eq!(
        normal_keys, kept_sorted,
        "the first three sets keep their series"
    );
    let overflow_seconds: f64 = by_key
        .iter()
        .filter(|(k, _)| !kept.contains(k))
        .map(|(_, (_, s))| s)
        .sum();
    assert!(
        (over[0].sum - overflow_seconds).abs() < 1e-6,
        "overflow sum {} s, spans {} s",
        over[0].sum,
        overflow_seconds
    );
    let folded = number_points(&collector.metrics_requests(), "spanhook.metrics.overflow");
    assert!(
        folded
            .iter()
            .any(|(attrs, v)| attrs.get("metric").map(String::as_str)
                == Some("http.server.request.duration")
                && *v == overflowing),
        "{folded:?}"
    );
    eprintln!(
        "cardinality limit 3: {} requests, {overflowing} in the overflow series ({:.6} s)",
        total, over[0].sum
    );
}
