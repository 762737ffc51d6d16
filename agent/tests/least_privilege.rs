//! Least privilege: the agent runs as an ordinary user holding only the capabilities it asks
//! for (everything else dropped: no root uid, no CAP_DAC_OVERRIDE, no CAP_NET_ADMIN, no
//! CAP_SYS_ADMIN, empty bounding set), traces a Go service it may not even read without them,
//! and when one is missing it stops before attaching anything, naming the capability and why
//! it is needed.
//!
//! That set is CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH, because uprobes
//! are `uprobe_multi` links. Perf-event uprobes (`SPANHOOK_UPROBES=perf`, and kernels before
//! 6.6) need CAP_SYS_ADMIN as well on kernels with Linux commit ba677dbe77af (6.16, and the 6.x
//! stable releases since July 2025); the agent says so when it lacks it. Opt-in propagation
//! (`--propagate`) asks for CAP_NET_ADMIN and nothing else.

mod support;

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use support::{
    go_fixture, newest_go,
    otlp::spans_in_file,
    require_bpf, spanhook_bin, temp_dir,
    traffic::{send, Req},
    uprobes, Agent, GoServer,
};

/// The capabilities the README asks for.
const DOCUMENTED: &[&str] = &["bpf", "perfmon", "sys_ptrace", "dac_read_search"];
/// What perf-event uprobes need on kernels with the 2025 revert, besides the documented four.
const PERF_UPROBES: &str = "sys_admin";
/// What opt-in propagation needs besides the documented four.
const PROPAGATION: &str = "net_admin";

/// Capability bits, for reading `/proc/PID/status`.
fn bit(cap: &str) -> u32 {
    match cap {
        "dac_read_search" => 2,
        "net_admin" => 12,
        "sys_ptrace" => 19,
        "sys_admin" => 21,
        "perfmon" => 38,
        "bpf" => 39,
        _ => panic!("unknown capability {cap}"),
    }
}

/// `setpriv` running `spanhook args` as user nobody with exactly `caps` (effective,
/// permitted, inheritable, ambient and bounding sets), nothing else.
fn as_nobody_with(caps: &[&str], args: &[&str]) -> Command {
    let list: String = std::iter::once("-all".to_string())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        &format!("--inh-caps={list}"),
        &format!("--ambient-caps={list}"),
        &format!("--bounding-set={list}"),
    ])
    .arg(spanhook_bin())
    .args(args)
    .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
    .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    cmd
}

/// `spanhook attach --pid PID EXTRA… --output-file /dev/null --duration 2` as nobody with
/// exactly `caps`: for runs that must be refused, or end by themselves.
fn attach_briefly(caps: &[&str], pid: &str, extra: &[&str]) -> Command {
    let mut args = vec!["attach", "--pid", pid];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--output-file", "/dev/null", "--duration", "2"]);
    as_nobody_with(caps, &args)
}

/// A Go server started by root from a copy of the fixture that only root may read (mode
/// 0700), so reading it takes CAP_DAC_READ_SEARCH and reading the process CAP_SYS_PTRACE.
struct RootOnlyServer {
    server: GoServer,
    binary: PathBuf,
    dir: PathBuf,
}

impl RootOnlyServer {
    fn start(name: &str) -> Self {
        let fixture = go_fixture("httpserver", &newest_go("httpserver"), "stripped");
        let dir = temp_dir(name);
        // Only the output directory is writable by nobody; the binary is root's alone.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let binary = dir.join("server-root-only");
        std::fs::copy(&fixture.path, &binary).unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o700)).unwrap();
        let server = GoServer::start(&binary);
        RootOnlyServer {
            server,
            binary,
            dir,
        }
    }

    fn pid(&self) -> String {
        self.server.pid().to_string()
    }
}

/// The test client (reqwest on rustls without a default provider) needs one installed.
fn crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn cap_eff(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
        .unwrap()
}

/// Runs the agent with `caps` against `target`, drives traffic, and returns the spans.
/// `perf_uprobes`: perf-event uprobes instead of `uprobe_multi` links.
fn trace_with(
    caps: &[&str],
    target: &RootOnlyServer,
    out: &Path,
    perf_uprobes: bool,
) -> Vec<support::otlp::Span> {
    let offsets = uprobes::planned_offsets(&target.binary);
    let mut cmd = as_nobody_with(
        caps,
        &[
            "attach",
            "--pid",
            &target.pid(),
            "--output-file",
            out.to_str().unwrap(),
        ],
    );
    if perf_uprobes {
        cmd.env("SPANHOOK_UPROBES", "perf");
    }
    let mut agent = Agent::spawn_command(cmd);
    if agent
        .stderr
        .wait_for("exporting to", Duration::from_secs(30))
        .is_none()
    {
        let _ = agent.child.kill();
        let _ = agent.child.wait();
        std::thread::sleep(Duration::from_millis(100));
        panic!(
            "spanhook with only {caps:?} did not attach:\n{}",
            agent.stderr.text()
        );
    }
    let mode = if perf_uprobes {
        "uprobes: perf-event uprobes"
    } else {
        "uprobes: uprobe_multi links"
    };
    assert!(
        agent.stderr.text().contains(mode),
        "{}",
        agent.stderr.text()
    );
    // The agent really runs with these capabilities and no others, as nobody.
    let want: u64 = caps.iter().map(|c| 1u64 << bit(c)).sum();
    assert_eq!(
        cap_eff(agent.child.id()),
        want,
        "effective capabilities of the agent"
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.child.id())).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("65534")),
        "{status}"
    );
    uprobes::assert_probed(target.server.pid(), &target.binary, &offsets);
    let reqs: Vec<Req> = (0..5)
        .map(|i| Req::get(format!("/items/lp-{i}")))
        .chain([Req::get("/error")])
        .collect();
    let resp = send(&target.server.url(""), &reqs, 2);
    assert!(resp[..5].iter().all(|r| r.status == 200));
    let (status, stderr) = agent.stop();
    assert!(status.success(), "{stderr}");
    uprobes::assert_clean(target.server.pid(), &target.binary, &offsets);
    let spans = spans_in_file(out);
    assert_eq!(spans.len(), 6, "{stderr}");
    for i in 0..5 {
        let path = format!("/items/lp-{i}");
        let s = spans
            .iter()
            .find(|s| s.str("url.path") == Some(path.as_str()))
            .unwrap_or_else(|| panic!("no span for {path}"));
        assert_eq!(s.int("http.response.status_code"), Some(200));
        assert_eq!(
            s.resource_int("process.pid"),
            Some(target.server.pid() as i64)
        );
    }
    spans
}

#[test]
fn traces_as_nobody_with_only_the_four_documented_capabilities() {
    require_bpf();
    crypto();
    let target = RootOnlyServer::start("least-privilege");
    let spans = trace_with(DOCUMENTED, &target, &target.dir.join("spans.jsonl"), false);
    assert!(spans
        .iter()
        .any(|s| s.int("http.response.status_code") == Some(500)));
}

#[test]
fn perf_event_uprobes_trace_with_cap_sys_admin_and_name_it_without() {
    require_bpf();
    crypto();
    let target = RootOnlyServer::start("perf-uprobes");
    let offsets = uprobes::planned_offsets(&target.binary);
    let out = attach_briefly(DOCUMENTED, &target.pid(), &[])
        .env("SPANHOOK_UPROBES", "perf")
        .output()
        .expect("setpriv (util-linux)");
    let err = stderr_of(&out);
    uprobes::assert_clean(target.server.pid(), &target.binary, &offsets);
    if out.status.success() {
        // A kernel without the 2025 revert still lets CAP_PERFMON create them.
        println!("perf-event uprobes need no CAP_SYS_ADMIN on this kernel");
    } else {
        assert!(
            err.contains("needs CAP_SYS_ADMIN on this kernel")
                && err.contains("net/http.serverHandler.ServeHTTP"),
            "{err}"
        );
    }
    let mut caps = DOCUMENTED.to_vec();
    caps.push(PERF_UPROBES);
    trace_with(&caps, &target, &target.dir.join("spans.jsonl"), true);
}

#[test]
fn each_missing_capability_is_named_and_nothing_is_attached() {
    require_bpf();
    crypto();
    let target = RootOnlyServer::start("missing-cap");
    let offsets = uprobes::planned_offsets(&target.binary);
    let why = [
        ("bpf", "CAP_BPF"),
        ("perfmon", "CAP_PERFMON"),
        ("sys_ptrace", "CAP_SYS_PTRACE"),
        ("dac_read_search", "CAP_DAC_READ_SEARCH"),
    ];
    let mut report = Vec::new();
    for (drop, name) in why {
        let caps: Vec<&str> = DOCUMENTED.iter().copied().filter(|c| *c != drop).collect();
        let out = attach_briefly(&caps, &target.pid(), &[])
            .output()
            .expect("setpriv (util-linux)");
        let err = stderr_of(&out);
        uprobes::assert_clean(target.server.pid(), &target.binary, &offsets);
        assert!(
            !out.status.success(),
            "without {name} the agent ran:\n{err}"
        );
        assert!(err.contains(name), "without {name}:\n{err}");
        // The other capabilities are not blamed.
        for (_, other) in why.iter().filter(|(d, _)| *d != drop) {
            assert!(
                !err.contains(&format!("lacks ({other}")),
                "without {name}, {other} is blamed:\n{err}"
            );
        }
        report.push(format!("without {name}: {}", err.trim()));
    }
    println!("{}", report.join("\n"));
    // The target never noticed.
    let r = send(&target.server.url(""), &[Req::get("/hello")], 1);
    assert_eq!(r[0].body, b"hello\n");
}

#[test]
fn propagation_asks_for_cap_net_admin_and_nothing_else() {
    // --propagate loads sock_ops and sk_msg programs and creates a socket map, which the
    // kernel allows with CAP_NET_ADMIN (or CAP_SYS_ADMIN). Without it the agent refuses
    // --propagate naming it, and attaches nothing; with it added to the four, it propagates.
    require_bpf();
    crypto();
    let fixture = go_fixture("httpchain", &newest_go("httpchain"), "stripped");
    let downstream = GoServer::start(&fixture.path);
    let upstream = GoServer::start(&fixture.path);
    let dir = temp_dir("lp-propagate");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let out = dir.join("spans.jsonl");
    let refused = attach_briefly(DOCUMENTED, &upstream.pid().to_string(), &["--propagate"])
        .output()
        .expect("setpriv (util-linux)");
    let err = stderr_of(&refused);
    assert!(
        !refused.status.success(),
        "--propagate ran without CAP_NET_ADMIN:\n{err}"
    );
    assert!(err.contains("CAP_NET_ADMIN"), "{err}");
    let offsets = uprobes::planned_offsets(&fixture.path);
    uprobes::assert_clean(upstream.pid(), &fixture.path, &offsets);
    let mut caps = DOCUMENTED.to_vec();
    caps.push(PROPAGATION);
    let mut agent = Agent::spawn_command(as_nobody_with(
        &caps,
        &[
            "attach",
            "--pid",
            &upstream.pid().to_string(),
            "--pid",
            &downstream.pid().to_string(),
            "--propagate",
            "--output-file",
            out.to_str().unwrap(),
        ],
    ));
    if agent
        .stderr
        .wait_for("exporting to", Duration::from_secs(30))
        .is_none()
    {
        let _ = agent.child.kill();
        let _ = agent.child.wait();
        std::thread::sleep(Duration::from_millis(100));
        panic!(
            "spanhook --propagate did not attach:\n{}",
            agent.stderr.text()
        );
    }
    assert!(
        agent.stderr.text().contains("propagation on"),
        "{}",
        agent.stderr.text()
    );
    let url = format!("/chain/lp-1?next=http://127.0.0.1:{}", downstream.port);
    let r = send(&upstream.url(""), &[Req::get(url)], 1);
    assert_eq!(r[0].status, 200);
    let (status, stderr) = agent.stop();
    assert!(status.success(), "{stderr}");
    let spans = spans_in_file(&out);
    let client = spans
        .iter()
        .find(|s| s.kind == support::otlp::KIND_CLIENT)
        .unwrap_or_else(|| panic!("no client span: {stderr}"));
    let server_down = spans
        .iter()
        .find(|s| {
            s.kind == support::otlp::KIND_SERVER
                && s.resource_int("process.pid") == Some(downstream.pid() as i64)
        })
        .unwrap_or_else(|| panic!("no downstream span: {stderr}"));
    // The downstream joined the caller's trace through the header written on the wire.
    assert_eq!(server_down.trace_id, client.trace_id);
    assert_eq!(server_down.parent_span_id, client.span_id);
}
