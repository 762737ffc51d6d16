//! A traced process exits and is restarted while the agent runs — on the same port, from the
//! same executable, and with the same PID (forced through `/proc/sys/kernel/ns_last_pid`), the
//! case where anything keyed by pid would carry over. `spanhook attach` traces the processes it
//! was given: it detaches from the one that exited (the kernel's BPF links of its uprobes are
//! released at once), never probes the newcomer that took its pid, goes on tracing the other
//! target, and when it exits no program, link or uprobe of its own is left in the kernel.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use support::{
    go_fixture, newest_go,
    otlp::spans_in_file,
    require_bpf, temp_dir,
    traffic::{send, Req},
    uprobes, Agent, GoServer, Lines,
};

fn crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A BPF link as the kernel's fdinfo shows it.
#[derive(Clone, Copy, Debug)]
struct LinkInfo {
    /// The process a `uprobe_multi` link is limited to (perf-event links do not say).
    pid: Option<u32>,
    /// Uprobes the link holds: `uprobe_cnt` of a `uprobe_multi` link, 1 for a perf event.
    uprobes: usize,
}

/// The BPF program ids and the links `pid` holds descriptors of (the kernel's fdinfo).
fn bpf_ids(pid: u32) -> (BTreeSet<u64>, BTreeMap<u64, LinkInfo>) {
    let mut progs = BTreeSet::new();
    let mut links = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return (progs, links);
    };
    for entry in dir.flatten() {
        let Ok(info) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        if let Some(id) = field("link_id:") {
            links.insert(
                id.parse().unwrap(),
                LinkInfo {
                    pid: field("pid:").and_then(|p| p.parse().ok()),
                    uprobes: field("uprobe_cnt:").map_or(1, |n| n.parse().unwrap()),
                },
            );
        }
        if let Some(id) = field("prog_id:") {
            progs.insert(id.parse().unwrap());
        }
    }
    (progs, links)
}

fn uprobes_in<'a>(links: impl IntoIterator<Item = &'a LinkInfo>) -> usize {
    links.into_iter().map(|l| l.uprobes).sum()
}

/// Ids of every BPF object of `kind` (`prog` or `link`) loaded in the kernel, by bpftool.
fn kernel_ids(kind: &str) -> BTreeSet<u64> {
    let out = Command::new("bpftool")
        .args([kind, "show", "-j"])
        .output()
        .expect("bpftool (cargo xtask setup installs it)");
    assert!(out.status.success(), "bpftool {kind} show failed");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["id"].as_u64())
        .collect()
}

/// Starts `binary` listening on `port`, as process `pid` when `pid` is given (it must be
/// free): the kernel hands out `ns_last_pid + 1` next, so that is set just before the fork.
/// Other processes on the machine may take the pid first; that is retried.
fn start_as(binary: &Path, port: u16, pid: Option<u32>) -> GoServer {
    for _ in 0..200 {
        if let Some(pid) = pid {
            std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
        }
        let mut child = Command::new(binary)
            .args(["-addr", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        if pid.is_some_and(|p| p != child.id()) {
            let _ = child.kill();
            let _ = child.wait();
            continue;
        }
        let stdout = Lines::collect_from(child.stdout.take().unwrap());
        assert!(
            stdout
                .wait_for("listening on", Duration::from_secs(20))
                .is_some(),
            "{} did not listen on port {port}",
            binary.display()
        );
        return GoServer {
            child,
            port,
            stdout,
        };
    }
    panic!("could not start a process as pid {pid:?}: the machine takes pids too fast");
}

#[test]
fn a_restarted_target_with_the_same_pid_and_port_is_never_probed_and_nothing_is_left() {
    require_bpf();
    crypto();
    let fixture = go_fixture("httpserver", &newest_go("httpserver"), "stripped");
    let offsets = uprobes::planned_offsets(&fixture.path);
    let mut a = GoServer::start(&fixture.path);
    let b = GoServer::start(&fixture.path);
    let (a_pid, a_port) = (a.pid(), a.port);
    let out = temp_dir("churn").join("spans.jsonl");
    let agent = Agent::attach(&[
        "attach",
        "--pid",
        &a_pid.to_string(),
        "--pid",
        &b.pid().to_string(),
        "--output-file",
        out.to_str().unwrap(),
    ]);
    let agent_pid = agent.child.id();
    uprobes::assert_probed(a_pid, &fixture.path, &offsets);
    uprobes::assert_probed(b.pid(), &fixture.path, &offsets);
    let (progs, links_before) = bpf_ids(agent_pid);
    assert!(!progs.is_empty() && uprobes_in(links_before.values()) >= 2 * offsets.len());
    send(&a.url(""), &[Req::get("/items/a-before")], 1);
    send(&b.url(""), &[Req::get("/items/b-before")], 1);

    // A exits; the agent detaches from it, releasing the BPF links of its uprobes.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    assert!(
        agent
            .stderr
            .wait_for(&format!("pid {a_pid} exited"), Duration::from_secs(10))
            .is_some(),
        "{}",
        agent.stderr.text()
    );
    let start = Instant::now();
    let links_after = loop {
        let (_, links) = bpf_ids(agent_pid);
        if uprobes_in(links.values()) + offsets.len() <= uprobes_in(links_before.values())
            || start.elapsed() > Duration::from_secs(10)
        {
            break links;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let released: Vec<&LinkInfo> = links_before
        .iter()
        .filter(|(id, _)| !links_after.contains_key(id))
        .map(|(_, l)| l)
        .collect();
    assert!(
        links_after.keys().all(|id| links_before.contains_key(id)),
        "no link was made after A exited"
    );
    assert_eq!(
        uprobes_in(released.iter().copied()),
        offsets.len(),
        "the links of the exited target's uprobes are released, and only those"
    );
    assert!(
        released.iter().all(|l| l.pid.is_none_or(|p| p == a_pid))
            && links_after.values().all(|l| l.pid != Some(a_pid)),
        "released {released:?}, kept {links_after:?}"
    );

    // A is restarted from the same file, on the same port, and gets the same pid.
    let a2 = start_as(&fixture.path, a_port, Some(a_pid));
    assert_eq!(a2.pid(), a_pid);
    uprobes::assert_clean(a2.pid(), &fixture.path, &offsets);
    let r = send(&a2.url(""), &[Req::get("/items/a-after")], 1);
    assert_eq!(r[0].body, b"item a-after\n");
    // B is still traced.
    send(&b.url(""), &[Req::get("/items/b-after")], 1);
    uprobes::assert_probed(b.pid(), &fixture.path, &offsets);
    uprobes::assert_clean(a2.pid(), &fixture.path, &offsets);

    let (status, stderr) = agent.stop();
    assert!(status.success(), "{stderr}");
    uprobes::assert_clean(b.pid(), &fixture.path, &offsets);
    uprobes::assert_clean(a2.pid(), &fixture.path, &offsets);

    // The kernel's view: nothing the agent loaded or linked remains.
    std::thread::sleep(Duration::from_millis(200));
    let leftover_progs: Vec<_> = kernel_ids("prog").intersection(&progs).copied().collect();
    let leftover_links: Vec<_> = kernel_ids("link")
        .into_iter()
        .filter(|id| links_before.contains_key(id))
        .collect();
    assert!(
        leftover_progs.is_empty(),
        "programs left: {leftover_progs:?}"
    );
    assert!(leftover_links.is_empty(), "links left: {leftover_links:?}");
    let tracefs = std::fs::read_to_string("/sys/kernel/tracing/uprobe_events").unwrap_or_default();
    assert!(
        !tracefs.contains(fixture.path.to_str().unwrap()),
        "tracefs uprobe_events: {tracefs}"
    );

    let spans = spans_in_file(&out);
    let paths: Vec<(&str, i64)> = spans
        .iter()
        .map(|s| {
            (
                s.str("url.path").unwrap_or_default(),
                s.resource_int("process.pid").unwrap_or(0),
            )
        })
        .collect();
    assert!(
        paths.contains(&("/items/a-before", a_pid as i64)),
        "{paths:?}"
    );
    assert!(
        paths.contains(&("/items/b-before", b.pid() as i64)),
        "{paths:?}"
    );
    assert!(
        paths.contains(&("/items/b-after", b.pid() as i64)),
        "{paths:?}"
    );
    assert!(
        !paths.iter().any(|(p, _)| *p == "/items/a-after"),
        "the process that took the pid was traced: {paths:?}"
    );
    assert_eq!(spans.len(), 3, "{paths:?}");
}
