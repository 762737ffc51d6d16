//! `spanhook daemon` on a simulated node (root, real eBPF): services matching the selectors
//! start before and after the daemon, serve, exit, restart on the same port, some never
//! listen on a selected port or are excluded; every request of every selected service
//! becomes a span with its own resource, no other process is probed, and once the services
//! are gone no probe is left in the daemon.
//!
//! Two nodes: one of Go services exercising each selector kind and exclusion (about 40 s), and
//! the issue's full node: 30 selected Go and Rust services started, driven and stopped over two
//! minutes beside processes no selector matches, with the daemon's RSS watched throughout.

mod support;

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};
use support::native::free_port;

use support::{
    collector::Collector, go_fixture, newest_go, otlp::Span, require_bpf, run_spanhook, rust,
    temp_dir, uprobes, Agent, GoServer,
};

const ATTACH_WAIT: Duration = Duration::from_secs(30);

/// A copy of the Go fixture under its own name: each service is its own file, as on a node.
fn service_binary(dir: &Path, fixture: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::copy(fixture, &path).unwrap();
    path
}

fn start(binary: &Path, port: u16, env: &[(&str, &str)]) -> GoServer {
    let mut cmd = Command::new(binary);
    cmd.args(["-addr", &format!("127.0.0.1:{port}")]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    GoServer::start_command(cmd)
}

fn stop(mut server: GoServer) -> u32 {
    let pid = server.pid();
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    pid
}

/// BPF links the daemon holds: its tracepoints' and those holding its uprobes.
fn bpf_links(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy() == "anon_inode:bpf_link")
        .count()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Once every target exited: the daemon holds only its exec/exit tracepoints' links, and its
/// metrics count `processes` attaches and as many detaches, none attached.
fn assert_nothing_left(
    daemon_pid: u32,
    tracepoints_only: usize,
    health_port: u16,
    processes: usize,
) {
    assert_eq!(
        bpf_links(daemon_pid),
        tracepoints_only,
        "BPF links left in the daemon after every target exited"
    );
    let metrics = http_get(health_port, "/metrics");
    for line in [
        "spanhook_targets_attached 0".to_string(),
        format!("spanhook_attaches_total {processes}"),
        format!("spanhook_detaches_total {processes}"),
    ] {
        assert!(
            metrics.contains(&format!("{line}\n")),
            "no {line:?} in\n{metrics}"
        );
    }
}

/// The end of a daemon configuration: spans to `collector` over OTLP/gRPC, health and metrics
/// on `health_port`.
fn export_and_health(collector: &Collector, health_port: u16) -> String {
    format!(
        "export:\n  otlp_endpoint: http://127.0.0.1:{}\n  otlp_protocol: grpc\nhealth:\n  listen: 127.0.0.1:{health_port}\n",
        collector.grpc_port
    )
}

fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // One write: a request split over several segments races the server's single read.
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

struct Node {
    agent: Agent,
    /// Requests sent to each traced process: pid → (service, count).
    sent: HashMap<u32, (String, usize)>,
}

impl Node {
    fn wait_attached(&self, pid: u32) {
        if self
            .agent
            .stderr
            .wait_for(&format!("pid {pid} attached"), ATTACH_WAIT)
            .is_none()
        {
            panic!(
                "the daemon did not attach pid {pid}:\n{}",
                self.agent.stderr.text()
            );
        }
    }

    fn wait_detached(&self, pid: u32) {
        if self
            .agent
            .stderr
            .wait_for(&format!("pid {pid} exited"), ATTACH_WAIT)
            .is_none()
        {
            panic!(
                "the daemon did not detach pid {pid}:\n{}",
                self.agent.stderr.text()
            );
        }
    }

    /// Sends `n` requests (one HTTP/1.0 connection each) to a traced server and remembers them.
    fn drive(&mut self, server: &GoServer, service: &str, n: usize) {
        for i in 0..n {
            let (path, status) = if i % 5 == 4 {
                ("/error".to_string(), "HTTP/1.0 500")
            } else {
                (format!("/items/{i}"), "HTTP/1.0 200")
            };
            let response = http_get(server.port, &path);
            assert!(response.starts_with(status), "{path}: {response}");
        }
        let entry = self
            .sent
            .entry(server.pid())
            .or_insert_with(|| (service.to_string(), 0));
        entry.1 += n;
    }
}

#[test]
fn a_node_of_services_is_traced_as_they_come_and_go() {
    require_bpf();
    let fixture = go_fixture("httpserver", &newest_go("httpserver"), "stripped");
    let offsets = uprobes::planned_offsets(&fixture.path);
    let dir = temp_dir("daemon-node");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let shop: Vec<PathBuf> = ["shop-a", "shop-b", "shop-c", "shop-d", "shop-e"]
        .iter()
        .map(|n| service_binary(&bin, &fixture.path, n))
        .collect();
    let other = service_binary(&bin, &fixture.path, "other");
    let gateway = service_binary(&bin, &fixture.path, "gateway");
    // Uprobes are shared by every process of one file (attached once per binary), so an
    // unselected process of a traced binary would take the trap too: the gateway that never
    // listens on the selected port runs its own copy.
    let gateway_b = service_binary(&bin, &fixture.path, "gateway-b");
    let collector = Collector::start();

    let gateway_port = free_port();
    let health_port = free_port();
    let config = dir.join("daemon.yaml");
    std::fs::write(
        &config,
        format!(
            r#"selectors:
  - name: shop
    exe: "{bin}/shop-*"
  - name: gateway
    process_name: "gate*"
    ports: ["{gateway_port}-{gateway_port}"]
exclude:
  - name: canary
    env: {{ CANARY: "1" }}
{tail}"#,
            bin = bin.display(),
            tail = export_and_health(&collector, health_port),
        ),
    )
    .unwrap();

    // The configuration's verdicts, without root or BPF.
    let early = start(&shop[0], 0, &[("OTEL_SERVICE_NAME", "checkout")]);
    let dry = run_spanhook(&["daemon", "--config", config.to_str().unwrap(), "--dry-run"]);
    let dry_out = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(
        dry_out
            .lines()
            .any(|l| l.contains(&early.pid().to_string()) && l.contains("trace (shop)")),
        "{dry_out}"
    );

    // A service running before the daemon: found by the initial scan.
    let agent = Agent::attach(&["daemon", "--config", config.to_str().unwrap()]);
    let daemon_pid = agent.child.id();
    let mut node = Node {
        agent,
        sent: HashMap::new(),
    };
    node.wait_attached(early.pid());
    let rss_start = rss_kib(daemon_pid);
    let tracepoints_only = bpf_links(daemon_pid) - links_of(&node, early.pid());
    let ready = http_get(health_port, "/readyz");
    assert!(ready.starts_with("HTTP/1.0 200"), "{ready}");
    node.drive(&early, "checkout", 20);

    // Services started after the daemon: exec events, attached before they serve.
    let b = start(&shop[1], 0, &[]);
    let c = start(&shop[2], 0, &[]);
    let not_selected = start(&other, 0, &[]);
    let canary = start(&shop[3], 0, &[("CANARY", "1")]);
    node.wait_attached(b.pid());
    node.wait_attached(c.pid());
    node.drive(&b, "shop-b", 15);
    node.drive(&c, "shop-c", 15);
    for _ in 0..10 {
        http_get(not_selected.port, "/hello");
        http_get(canary.port, "/hello");
    }
    uprobes::assert_probed(b.pid(), &shop[1], &offsets);

    // A second process of a traced binary shares its probes: no new uprobe, and the first
    // process keeps them when the second exits.
    let links_before = bpf_links(daemon_pid);
    let b2 = start(&shop[1], 0, &[]);
    node.wait_attached(b2.pid());
    let line = node
        .agent
        .stderr
        .wait_for(&format!("pid {} attached", b2.pid()), ATTACH_WAIT)
        .unwrap();
    assert!(
        line.contains("shared with its binary's other processes"),
        "{line}"
    );
    assert_eq!(
        bpf_links(daemon_pid),
        links_before,
        "a second set of uprobes"
    );
    uprobes::assert_probed(b2.pid(), &shop[1], &offsets);
    node.drive(&b2, "shop-b", 7);
    let b2_pid = stop(b2);
    node.wait_detached(b2_pid);
    uprobes::assert_probed(b.pid(), &shop[1], &offsets);
    node.drive(&b, "shop-b", 3);
    uprobes::assert_clean(not_selected.pid(), &other, &offsets);
    uprobes::assert_clean(canary.pid(), &shop[3], &offsets);
    let stderr = node.agent.stderr.text();
    assert!(
        !stderr.contains(&format!("pid {} attached", not_selected.pid())),
        "{stderr}"
    );
    assert!(
        !stderr.contains(&format!("pid {} attached", canary.pid())),
        "{stderr}"
    );

    // Selected by port: not traced until it listens on the selected port.
    let gw_elsewhere = start(&gateway_b, 0, &[]);
    let gw = start(&gateway, gateway_port, &[("OTEL_SERVICE_NAME", "gateway")]);
    node.wait_attached(gw.pid());
    node.drive(&gw, "gateway", 10);
    std::thread::sleep(Duration::from_secs(1));
    uprobes::assert_clean(gw_elsewhere.pid(), &gateway_b, &offsets);

    // Short-lived services: a few requests, then gone.
    for _ in 0..3 {
        let e = start(&shop[4], 0, &[]);
        node.wait_attached(e.pid());
        node.drive(&e, "shop-e", 5);
        let pid = stop(e);
        node.wait_detached(pid);
    }

    // Restarted on the same port: the new process is a new target with its own pid.
    let port = c.port;
    node.drive(&c, "shop-c", 5);
    let old = stop(c);
    node.wait_detached(old);
    let c2 = start(&shop[2], port, &[]);
    assert_ne!(c2.pid(), old);
    node.wait_attached(c2.pid());
    node.drive(&c2, "shop-c", 15);

    // Everything stops: no probe is left, only the exec/exit tracepoints.
    let stopped: Vec<u32> = [early, b, c2, gw].into_iter().map(stop).collect();
    for pid in &stopped {
        node.wait_detached(*pid);
    }
    let rss_end = rss_kib(daemon_pid);
    assert_nothing_left(daemon_pid, tracepoints_only, health_port, 9);

    let expected: usize = node.sent.values().map(|(_, n)| n).sum();
    collector.wait_spans(expected, Duration::from_secs(20));
    let (status, stderr) = node.agent.stop();
    assert!(status.success(), "{stderr}");
    let spans = collector.wait_spans(expected, Duration::from_secs(5));
    let by_pid = spans_by_pid(&spans);
    for (pid, (service, n)) in &node.sent {
        let got = by_pid.get(&(*pid as i64)).cloned().unwrap_or_default();
        assert_eq!(
            got.len(),
            *n,
            "pid {pid} ({service}): {n} requests, {} spans\n{stderr}",
            got.len()
        );
        for s in got {
            assert_eq!(s.resource_str("service.name"), Some(service.as_str()));
            assert_eq!(s.kind, support::otlp::KIND_SERVER);
        }
    }
    assert_eq!(spans.len(), expected, "spans of processes never selected");
    for pid in [not_selected.pid(), canary.pid(), gw_elsewhere.pid()] {
        assert!(!by_pid.contains_key(&(pid as i64)), "pid {pid} was traced");
    }
    eprintln!(
        "daemon RSS: {rss_start} KiB with 1 target, {rss_end} KiB after {} attaches and detaches; {expected} spans",
        node.sent.len()
    );
    assert!(
        rss_end < rss_start + 20 * 1024,
        "daemon RSS grew from {rss_start} KiB to {rss_end} KiB"
    );
}

/// A service of the two-minute node: its file, its language and the requests it was sent.
struct Service {
    server: GoServer,
    binary: PathBuf,
    rust: bool,
}

impl Service {
    fn name(&self) -> String {
        self.binary
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }
}

/// Per traced pid: service name, requests sent, of which answered 5xx.
type Sent = HashMap<u32, (String, usize, usize)>;

/// `n` requests (one HTTP/1.0 connection each); every fifth answers 5xx.
fn drive_service(sent: &mut Sent, svc: &Service, n: usize) {
    let mut errors = 0;
    for i in 0..n {
        let error = i % 5 == 4;
        let path = match (svc.rust, error) {
            (false, false) => format!("/items/{i}"),
            (false, true) => "/error".to_string(),
            (true, false) => format!("/leaf/{i}"),
            (true, true) => "/status/503".to_string(),
        };
        let response = http_get(svc.server.port, &path);
        let want = if error { " 50" } else { " 200" };
        assert!(
            response.lines().next().unwrap_or("").contains(want),
            "{} {path}: {response}",
            svc.name()
        );
        errors += usize::from(error);
    }
    let entry = sent
        .entry(svc.server.pid())
        .or_insert_with(|| (svc.name(), 0, 0));
    entry.1 += n;
    entry.2 += errors;
}

#[test]
fn thirty_go_and_rust_services_over_two_minutes() {
    require_bpf();
    let go = go_fixture("httpserver", &newest_go("httpserver"), "stripped");
    let rs = rust::fixture("httpchain", "newest", "release");
    let go_offsets = uprobes::planned_offsets(&go.path);
    let rs_offsets = uprobes::planned_offsets(&rs.path);
    let dir = temp_dir("daemon-thirty");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // Six Go and four Rust executables are selected; one of each is not.
    let go_files: Vec<PathBuf> = (0..6)
        .map(|i| service_binary(&bin, &go.path, &format!("svc-go-{i}")))
        .collect();
    let rs_files: Vec<PathBuf> = (0..4)
        .map(|i| service_binary(&bin, &rs.path, &format!("svc-rs-{i}")))
        .collect();
    let idle_go = service_binary(&bin, &go.path, "idle-go");
    let idle_rs = service_binary(&bin, &rs.path, "idle-rs");
    let collector = Collector::start();
    let health_port = free_port();
    let config = dir.join("daemon.yaml");
    std::fs::write(
        &config,
        format!(
            r#"selectors:
  - name: node
    exe: "{bin}/svc-*"
{tail}"#,
            bin = bin.display(),
            tail = export_and_health(&collector, health_port),
        ),
    )
    .unwrap();
    let launch = |binary: &Path, port: u16| Service {
        server: {
            let server = start(binary, port, &[]);
            eprintln!(
                "node: {} pid {} on port {}",
                binary.display(),
                server.pid(),
                server.port
            );
            server
        },
        binary: binary.to_path_buf(),
        rust: binary.file_name().is_some_and(|n| {
            n.to_string_lossy().ends_with("-rs") || n.to_string_lossy().starts_with("svc-rs")
        }),
    };

    // Four services and the two unselected processes run before the daemon starts.
    let mut live: Vec<Service> = vec![
        launch(&go_files[0], 0),
        launch(&go_files[1], 0),
        launch(&rs_files[0], 0),
        launch(&rs_files[1], 0),
    ];
    let idle = [launch(&idle_go, 0), launch(&idle_rs, 0)];
    let agent = Agent::attach(&["daemon", "--config", config.to_str().unwrap()]);
    let daemon_pid = agent.child.id();
    let node = Node {
        agent,
        sent: HashMap::new(),
    };
    for s in &live {
        node.wait_attached(s.server.pid());
    }
    let tracepoints_only = bpf_links(daemon_pid)
        - live
            .iter()
            .map(|s| links_of(&node, s.server.pid()))
            .sum::<usize>();
    let rss_start = rss_kib(daemon_pid);
    let mut rss_seen = vec![rss_start];
    let mut sent = Sent::new();
    let mut attached = live.len();

    // Twelve rounds of ten seconds. 26 more selected processes: a long-lived service in each
    // of the first six rounds, a second process of a traced file in rounds 0, 2, 4, 6 and 8, a
    // short-lived service in each of the first ten, a restart on the same port in rounds 1, 3,
    // 5, 7 and 9; every round drives everything that runs.
    let started = std::time::Instant::now();
    for round in 0..12usize {
        let round_start = std::time::Instant::now();
        let pick = |i: usize| -> &PathBuf {
            if i.is_multiple_of(2) {
                &go_files[(i / 2) % go_files.len()]
            } else {
                &rs_files[(i / 2) % rs_files.len()]
            }
        };
        if round < 6 {
            let s = launch(pick(round + 4), 0);
            node.wait_attached(s.server.pid());
            live.push(s);
            attached += 1;
        }
        if round % 2 == 0 && round < 10 {
            let file = live[round % live.len()].binary.clone();
            let s = launch(&file, 0);
            node.wait_attached(s.server.pid());
            live.push(s);
            attached += 1;
        }
        if round < 10 {
            let s = launch(pick(round + 1), 0);
            node.wait_attached(s.server.pid());
            drive_service(&mut sent, &s, 5);
            let pid = stop(s.server);
            node.wait_detached(pid);
            attached += 1;
        }
        if round % 2 == 1 && round < 10 {
            let i = round % live.len();
            let old = live.remove(i);
            let (file, port) = (old.binary.clone(), old.server.port);
            drive_service(&mut sent, &old, 3);
            let old_pid = stop(old.server);
            node.wait_detached(old_pid);
            let s = launch(&file, port);
            assert_ne!(s.server.pid(), old_pid);
            node.wait_attached(s.server.pid());
            live.push(s);
            attached += 1;
        }
        for s in &live {
            drive_service(&mut sent, s, 3);
        }
        for s in &idle {
            http_get(s.server.port, if s.rust { "/leaf/x" } else { "/hello" });
        }
        rss_seen.push(rss_kib(daemon_pid));
        if let Some(rest) = Duration::from_secs(10).checked_sub(round_start.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    assert_eq!(
        attached, 30,
        "the node should have run 30 selected processes"
    );
    let go_live = live.iter().find(|s| !s.rust).unwrap();
    let rs_live = live.iter().find(|s| s.rust).unwrap();
    uprobes::assert_probed(go_live.server.pid(), &go_live.binary, &go_offsets);
    uprobes::assert_probed(rs_live.server.pid(), &rs_live.binary, &rs_offsets);
    uprobes::assert_clean(idle[0].server.pid(), &idle_go, &go_offsets);
    uprobes::assert_clean(idle[1].server.pid(), &idle_rs, &rs_offsets);

    // Everything stops: no probe is left, only the exec/exit tracepoints.
    let stopped: Vec<u32> = live.into_iter().map(|s| stop(s.server)).collect();
    for pid in &stopped {
        node.wait_detached(*pid);
    }
    let elapsed = started.elapsed();
    let rss_end = rss_kib(daemon_pid);
    assert_nothing_left(daemon_pid, tracepoints_only, health_port, 30);

    let expected: usize = sent.values().map(|(_, n, _)| n).sum();
    collector.wait_spans(expected, Duration::from_secs(20));
    let (status, stderr) = node.agent.stop();
    assert!(status.success(), "{stderr}");
    let spans = collector.wait_spans(expected, Duration::from_secs(5));
    let by_pid = spans_by_pid(&spans);
    assert_eq!(sent.len(), 30);
    let mut wrong = Vec::new();
    for (pid, (service, n, errors)) in &sent {
        let got = by_pid.get(&(*pid as i64)).cloned().unwrap_or_default();
        let failed = got
            .iter()
            .filter(|s| s.int("http.response.status_code").unwrap_or(0) >= 500)
            .count();
        if got.len() != *n || failed != *errors {
            wrong.push(format!(
                "pid {pid} ({service}): {n} requests ({errors} 5xx), {} spans ({failed} 5xx): {:?}",
                got.len(),
                got.iter()
                    .map(|s| (
                        s.str("url.path"),
                        s.int("http.response.status_code"),
                        s.start_ns
                    ))
                    .collect::<Vec<_>>()
            ));
        }
        for s in got {
            assert_eq!(s.resource_str("service.name"), Some(service.as_str()));
            assert_eq!(s.kind, support::otlp::KIND_SERVER);
        }
    }
    assert!(
        wrong.is_empty(),
        "spans per process differ from requests:\n{}\n{stderr}",
        wrong.join("\n")
    );
    assert_eq!(spans.len(), expected, "spans of processes never selected");
    for s in &idle {
        let pid = s.server.pid();
        assert!(!by_pid.contains_key(&(pid as i64)), "pid {pid} was traced");
    }
    eprintln!(
        "30 services in {:.0} s, {expected} spans; daemon RSS (KiB) at each round: {rss_seen:?}, after all exited: {rss_end}",
        elapsed.as_secs_f64()
    );
    // Flat: what the targets cost is given back when they go.
    assert!(
        rss_end < rss_start + 10 * 1024,
        "daemon RSS grew from {rss_start} KiB to {rss_end} KiB"
    );
}

/// The BPF links holding `pid`'s uprobes, from the daemon's "attached" line.
fn links_of(node: &Node, pid: u32) -> usize {
    let line = node
        .agent
        .stderr
        .wait_for(&format!("pid {pid} attached"), ATTACH_WAIT)
        .unwrap();
    line.split(" BPF links")
        .next()
        .and_then(|before| before.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no link count in {line:?}"))
}

fn spans_by_pid(spans: &[Span]) -> HashMap<i64, Vec<Span>> {
    let mut out: HashMap<i64, Vec<Span>> = HashMap::new();
    for s in spans {
        out.entry(s.resource_int("process.pid").unwrap_or(-1))
            .or_default()
            .push(s.clone());
    }
    out
}

#[test]
fn a_bad_configuration_is_refused_with_the_place() {
    let dir = temp_dir("daemon-config");
    let config = dir.join("daemon.yaml");
    std::fs::write(&config, "selectors:\n  - exe: /srv/*\n    port: 80\n").unwrap();
    let out = run_spanhook(&["daemon", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("daemon.yaml") && err.contains("unknown field `port`"),
        "{err}"
    );
}
