//! Head sampling and RED metrics, end to end: a real traced Go server, the real agent and the
//! real Collector receiving both spans and metrics.

mod support;

use std::{collections::HashMap, time::Duration};

use serde_json::Value;
use support::{
    export::{accounting, Collector},
    go_fixture, newest_go, require_bpf,
    traffic::{send, Req},
    Agent, GoServer,
};

fn int(v: &Value) -> i64 {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(-1)
}

/// `(route, status) → (count, sum)` of `http.server.request.duration` in the newest metrics
/// request that carries it (metrics are cumulative).
fn server_durations(requests: &[Value]) -> HashMap<(String, i64), (i64, f64)> {
    let mut out = HashMap::new();
    for req in requests.iter().rev() {
        for rm in req["resourceMetrics"].as_array().into_iter().flatten() {
            for sm in rm["scopeMetrics"].as_array().into_iter().flatten() {
                for m in sm["metrics"].as_array().into_iter().flatten() {
                    if m["name"] != "http.server.request.duration" {
                        continue;
                    }
                    assert_eq!(m["unit"], "s");
                    for dp in m["histogram"]["dataPoints"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        let attr = |k: &str| {
                            dp["attributes"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .find(|a| a["key"] == k)
                                .map(|a| a["value"].clone())
                        };
                        let route = attr("http.route")
                            .and_then(|v| v["stringValue"].as_str().map(String::from))
                            .unwrap_or_default();
                        let status = attr("http.response.status_code")
                            .map(|v| int(&v["intValue"]))
                            .unwrap_or(-1);
                        let bounds: Vec<f64> = dp["explicitBounds"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|b| b.as_f64().unwrap())
                            .collect();
                        assert_eq!(
                            bounds,
                            [
                                0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                                5.0, 7.5, 10.0
                            ]
                        );
                        let e = out.entry((route, status)).or_insert((0, 0.0));
                        e.0 += int(&dp["count"]);
                        e.1 += dp["sum"].as_f64().unwrap_or(0.0);
                    }
                }
            }
        }
        if !out.is_empty() {
            return out;
        }
    }
    out
}

/// parentbased_traceidratio at 0.25: 4000 root requests keep 1000 ± 3σ traces, exactly those
/// whose trace id passes the ratio; an incoming sampled `traceparent` is always kept, an
/// unsampled one never. The metrics count every request, sampled or not.
#[test]
fn ratio_sampling_keeps_its_share_and_follows_the_parent() {
    require_bpf();
    let fixture = go_fixture("httpserver", &newest_go("httpserver"), "plain");
    let server = GoServer::start(&fixture.path);
    let collector = Collector::start();
    let pid = server.pid().to_string();
    let endpoint = format!("http://127.0.0.1:{}", collector.grpc_port);
    let agent = Agent::attach_with_env(
        &[
            "attach",
            "--pid",
            &pid,
            "--otlp-endpoint",
            &endpoint,
            "--otlp-protocol",
            "grpc",
        ],
        &[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
        ],
    );
    let roots: Vec<Req> = (0..4000).map(|_| Req::get("/hello")).collect();
    assert!(send(&server.url(""), &roots, 8)
        .iter()
        .all(|r| r.status == 200));
    let sampled: Vec<(String, Req)> = (0..200)
        .map(|i| {
            let trace = format!("{:032x}", 0xabc0_0000u128 + i);
            let tp = format!("00-{trace}-00f067aa0ba902b7-01");
            (trace, Req::get("/echo").header("traceparent", &tp))
        })
        .collect();
    let unsampled: Vec<(String, Req)> = (0..200)
        .map(|i| {
            let trace = format!("{:032x}", 0xdef0_0000u128 + i);
            let tp = format!("00-{trace}-00f067aa0ba902b7-00");
            (trace, Req::get("/items/x").header("traceparent", &tp))
        })
        .collect();
    let with_parent: Vec<Req> = sampled
        .iter()
        .chain(&unsampled)
        .map(|(_, r)| r.clone())
        .collect();
    send(&server.url(""), &with_parent, 8);
    std::thread::sleep(Duration::from_secs(3));
    let (status, stderr) = agent.stop();
    assert!(status.success(), "{stderr}");
    let spans = collector.wait_spans(usize::MAX, Duration::from_secs(2));

    let root_spans: Vec<_> = spans
        .iter()
        .filter(|s| s.str("url.path") == Some("/hello"))
        .collect();
    let kept = root_spans.len() as f64;
    let sigma = (4000.0f64 * 0.25 * 0.75).sqrt();
    eprintln!(
        "kept {kept} of 4000 root traces (expected 1000 ± {:.0}); {} spans in all",
        3.0 * sigma,
        spans.len()
    );
    assert!(
        (kept - 1000.0).abs() <= 3.0 * sigma,
        "kept {kept} of 4000 at ratio 0.25"
    );
    for s in &root_spans {
        let id = u128::from_str_radix(&s.trace_id, 16).unwrap();
        let trace = opentelemetry::trace::TraceId::from_bytes(id.to_be_bytes());
        assert!(
            spanhook::export::sampling::ratio_keeps(trace, 0.25),
            "{} was kept against the ratio",
            s.trace_id
        );
    }
    let echo: Vec<_> = spans
        .iter()
        .filter(|s| s.str("url.path") == Some("/echo"))
        .collect();
    assert_eq!(echo.len(), 200, "every sampled parent is kept");
    for (trace, _) in &sampled {
        assert!(echo.iter().any(|s| &s.trace_id == trace), "{trace} missing");
    }
    assert!(
        !spans.iter().any(|s| s.str("url.path") == Some("/items/x")),
        "an unsampled parent is never kept"
    );

    let a = accounting(&stderr);
    assert_eq!(a.seen, 4400, "{stderr}");
    assert_eq!(a.unsampled + a.queued, 4400);
    assert_eq!(a.queued, spans.len() as u64);

    // Metrics count every request, sampled or not, by route and status.
    let durations = server_durations(&collector.metrics_requests());
    eprintln!("http.server.request.duration: {durations:?}");
    let get = |route: &str, status: i64| durations.get(&(route.to_string(), status)).copied();
    assert_eq!(get("/hello", 200).map(|v| v.0), Some(4000));
    // The fixture answers GET /echo with 405.
    assert_eq!(get("/echo", 405).map(|v| v.0), Some(200));
    assert_eq!(get("/items/", 200).map(|v| v.0), Some(200));
    let sum: f64 = durations.values().map(|v| v.1).sum();
    assert!(sum > 0.0 && sum < 4400.0 * 1.0, "duration sum {sum} s");
    // Self-telemetry reaches the Collector too.
    let text = serde_json::to_string(&collector.metrics_requests()).unwrap();
    assert!(
        text.contains("spanhook.spans.unsampled"),
        "no self-telemetry"
    );
}
