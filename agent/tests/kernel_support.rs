//! Kernel lockdown and feature detection at start (root, real eBPF): the agent reads the
//! running kernel's lockdown level and probes its BPF features before loading anything, says
//! what it found in one line, and — on a kernel that supports it, as this one does — attaches
//! and traces. The verdicts for kernels this machine is not (`confidentiality` lockdown, no
//! ring buffer, no `bpf_loop`, no BTF) are unit tests of `attach::kernel_check`, since the
//! lockdown level of a running kernel can only be raised, never lowered, until a reboot.

mod support;

use std::time::Duration;

use support::{go_fixture, newest_go, require_bpf, Agent, GoServer};

#[test]
fn the_kernel_is_described_at_start_and_tracing_works_under_its_lockdown() {
    require_bpf();
    let fixture = go_fixture("httpserver", &newest_go("httpserver"), "stripped");
    let server = GoServer::start(&fixture.path);
    let agent = Agent::attach(&["attach", "--pid", &server.pid().to_string(), "--console"]);
    let line = agent
        .stderr
        .wait_for("kernel: ", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no kernel line:\n{}", agent.stderr.text()));

    // The level the kernel reports, read here independently of the agent.
    let level = std::fs::read_to_string("/sys/kernel/security/lockdown")
        .ok()
        .and_then(|t| {
            t.split_whitespace()
                .find_map(|w| w.strip_prefix('[')?.strip_suffix(']').map(str::to_string))
        })
        .unwrap_or_else(|| "no lockdown LSM".to_string());
    assert!(line.contains(&format!("lockdown {level}")), "{line}");
    if level == "integrity" {
        assert!(
            line.contains("blocks only bpf_probe_write_user, which spanhook does not use"),
            "{line}"
        );
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(line.contains(release.trim()), "{line}");
    // Everything the programs need was probed, for real, and found.
    for feature in [
        "ring buffer",
        "bpf_loop",
        "bpf_probe_read_user",
        "bpf_probe_read_kernel",
        "uprobes",
    ] {
        assert!(line.contains(&format!(", {feature}")), "{feature}: {line}");
        assert!(
            !line.contains(&format!("no {feature}")),
            "{feature}: {line}"
        );
    }
    assert!(!line.contains("not probed"), "{line}");

    // And tracing works under this lockdown: a request becomes a span.
    let body = http_get(server.port, "/hello");
    assert!(body.starts_with("HTTP/1.0 200"), "{body}");
    assert!(
        agent
            .stdout
            .wait_for("GET", Duration::from_secs(10))
            .is_some(),
        "no span printed:\n{}",
        agent.stderr.text()
    );
    let (status, stderr) = agent.stop();
    assert!(status.success(), "{stderr}");
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
