//! Process churn (root, real eBPF): `spanhook daemon` sees hundreds of selected processes
//! start, serve, and exit, and holds afterwards what it held before — file descriptors, BPF
//! links, entries in the BPF maps it owns (read from the kernel with bpftool), and memory.
//!
//! The processes are copies of the stripped Go fixture, selected by path and traced at socket
//! level (`capture: sockets`): attaching one is planning it and adding it to the kernel-side
//! filter, so hundreds fit in about a minute of CI's two shared cores. (A symbol-level attach
//! costs 80–100 ms of kernel time per uprobe to detach; that path's churn is covered, at a
//! smaller scale, by `daemon.rs` and `target_churn.rs`.) Each process is attached before it
//! serves, answers one request that becomes one span, is killed, and is detached.
//!
//! One selected service stays up throughout, as on a real node (with none, the socket-level
//! tracepoints are detached when the last traced process exits and attached again for the
//! next, seconds each way).
//!
//! `SPANHOOK_CHURN_PROCESSES` sets how many (default 250, about a minute here; the issue's
//! 1 000 takes about four).

mod support;

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};
use support::native::free_port;

use support::{go_fixture, newest_go, otlp::spans_in_file, require_bpf, temp_dir, Agent, GoServer};

const WAIT: Duration = Duration::from_secs(30);
/// Processes started and stopped before the first measurement, so that what is allocated
/// once (buffers, caches, the allocator's arenas) is in place.
const WARM_UP: usize = 20;
/// Processes in flight at once.
const IN_FLIGHT: usize = 4;

fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// What the daemon holds at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    fds: usize,
    bpf_links: usize,
    /// Entries of each hash-type map the daemon has a descriptor of, by map name.
    map_entries: BTreeMap<String, usize>,
    rss_kib: u64,
}

impl Held {
    fn entries(&self) -> usize {
        self.map_entries.values().sum()
    }
}

fn bpftool_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new("bpftool")
        .args(args)
        .arg("-j")
        .output()
        .expect("bpftool (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn held(pid: u32) -> Held {
    let mut fds = 0;
    let mut bpf_links = 0;
    let mut map_ids = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        fds += 1;
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        if target == "anon_inode:bpf_link" {
            bpf_links += 1;
        }
        if target == "anon_inode:bpf-map" {
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                entry.file_name().to_string_lossy()
            ))
            .unwrap_or_default();
            if let Some(id) = info.lines().find_map(|l| l.strip_prefix("map_id:")) {
                map_ids.insert(id.trim().parse::<u64>().unwrap());
            }
        }
    }
    let mut map_entries = BTreeMap::new();
    for id in map_ids {
        let id = id.to_string();
        let show = bpftool_json(&["map", "show", "id", &id]);
        let kind = show["type"].as_str().unwrap_or_default();
        // Arrays always hold max_entries, ring buffers and socket maps are not dumped.
        if !matches!(
            kind,
            "hash" | "lru_hash" | "percpu_hash" | "lru_percpu_hash"
        ) {
            continue;
        }
        let name = show["name"].as_str().unwrap_or("?").to_string();
        let dump = bpftool_json(&["map", "dump", "id", &id]);
        let n = dump.as_array().map_or(0, Vec::len);
        *map_entries.entry(name).or_insert(0) += n;
    }
    let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    Held {
        fds,
        bpf_links,
        map_entries,
        rss_kib,
    }
}

/// Starts, attaches, serves, kills and sees detached `n` processes, `IN_FLIGHT` at a time.
fn churn(agent: &Agent, binary: &Path, first: usize, n: usize) {
    let mut next = first;
    while next < first + n {
        let batch = IN_FLIGHT.min(first + n - next);
        let servers: Vec<GoServer> = (0..batch)
            .map(|_| {
                let mut cmd = Command::new(binary);
                cmd.args(["-addr", "127.0.0.1:0"]);
                GoServer::start_command(cmd)
            })
            .collect();
        for (k, mut server) in servers.into_iter().enumerate() {
            let pid = server.pid();
            assert!(
                agent
                    .stderr
                    .wait_for(&format!("pid {pid} attached"), WAIT)
                    .is_some(),
                "the daemon did not attach pid {pid}:\n{}",
                agent.stderr.text()
            );
            let id = next + k;
            let response = http_get(server.port, &format!("/items/churn-{id}"));
            assert!(response.starts_with("HTTP/1.0 200"), "{response}");
            server.child.kill().unwrap();
            server.child.wait().unwrap();
            assert!(
                agent
                    .stderr
                    .wait_for(&format!("pid {pid} exited"), WAIT)
                    .is_some(),
                "the daemon did not detach pid {pid}:\n{}",
                agent.stderr.text()
            );
        }
        next += batch;
    }
}

fn metric(agent: &Agent, health: u16, name: &str) -> u64 {
    let text = (|| -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", health))?;
        s.set_read_timeout(Some(WAIT))?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })()
    .unwrap_or_else(|e| panic!("/metrics: {e}\n{}", agent.stderr.text()));
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[test]
fn hundreds_of_processes_come_and_go_and_the_daemon_holds_what_it_held() {
    require_bpf();
    let processes: usize = std::env::var("SPANHOOK_CHURN_PROCESSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(250);
    let fixture = go_fixture("httpserver", &newest_go("httpserver"), "stripped");
    let dir = temp_dir("process-churn");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let binary = bin.join("churn-svc");
    std::fs::copy(&fixture.path, &binary).unwrap();
    let spans_file = dir.join("spans.jsonl");
    let health = free_port();
    let config = dir.join("daemon.yaml");
    std::fs::write(
        &config,
        format!(
            "selectors:\n  - name: churn\n    exe: \"{bin}/churn-*\"\ncapture: sockets\nexport:\n  output_file: {spans}\nhealth:\n  listen: 127.0.0.1:{health}\n",
            bin = bin.display(),
            spans = spans_file.display(),
        ),
    )
    .unwrap();

    let agent = Agent::attach(&["daemon", "--config", config.to_str().unwrap()]);
    let daemon = agent.child.id();
    // A service that stays up throughout, as on any node: without one, the socket-level
    // tracepoints would be detached each time the last traced process exits and attached
    // again for the next (seconds each way), which is not what is measured here.
    let mut anchor_cmd = Command::new(&binary);
    anchor_cmd.args(["-addr", "127.0.0.1:0"]);
    let anchor = GoServer::start_command(anchor_cmd);
    assert!(
        agent
            .stderr
            .wait_for(&format!("pid {} attached", anchor.pid()), WAIT)
            .is_some(),
        "the daemon did not attach the long-lived service:\n{}",
        agent.stderr.text()
    );
    churn(&agent, &binary, 0, WARM_UP);
    // Let the last exits and the exporters settle before measuring.
    std::thread::sleep(Duration::from_secs(2));
    let before = held(daemon);

    let started = Instant::now();
    churn(&agent, &binary, WARM_UP, processes);
    let took = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let after = held(daemon);

    let total = (WARM_UP + processes) as u64;
    assert_eq!(metric(&agent, health, "spanhook_targets_attached"), 1);
    assert_eq!(metric(&agent, health, "spanhook_attaches_total"), total + 1);
    assert_eq!(metric(&agent, health, "spanhook_detaches_total"), total);
    drop(anchor);
    let (status, stderr) = agent.stop();
    assert!(status.success(), "{stderr}");
    let spans = spans_in_file(&spans_file);

    eprintln!(
        "process churn: {processes} processes in {:.1} s ({:.0} ms each, {IN_FLIGHT} in flight); \
         before → after: {} → {} fds, {} → {} BPF links, {} → {} map entries ({:?} → {:?}), \
         RSS {} → {} KiB; {} spans for {total} requests",
        took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / processes as f64,
        before.fds,
        after.fds,
        before.bpf_links,
        after.bpf_links,
        before.entries(),
        after.entries(),
        before.map_entries,
        after.map_entries,
        before.rss_kib,
        after.rss_kib,
        spans.len()
    );
    assert_eq!(
        after.fds, before.fds,
        "descriptors leaked over {processes} processes"
    );
    assert_eq!(
        after.bpf_links, before.bpf_links,
        "BPF links leaked over {processes} processes"
    );
    // Entries of exited processes are removed; a few may belong to the daemon's own
    // exporters' sockets or be in flight, never one per process.
    assert!(
        after.entries() <= before.entries() + 8,
        "map entries grew over {processes} processes: {:?} → {:?}",
        before.map_entries,
        after.map_entries
    );
    // Memory: at most 4 MiB over hundreds of processes (measured: under 100 KiB; a leak of
    // 16 KiB per process would show at the default 250).
    assert!(
        after.rss_kib <= before.rss_kib + 4 * 1024,
        "RSS grew from {} KiB to {} KiB over {processes} processes",
        before.rss_kib,
        after.rss_kib
    );
    // The requests became spans. A process is killed the moment its answer is read, and
    // now and then (1 of 1 020 requests in a 1 000-process run) the span of that last answer
    // is lost at socket level: this test is about what the daemon holds, so it allows 1 %.
    let mut ids: Vec<String> = spans
        .iter()
        .filter_map(|s| s.str("url.path").map(str::to_string))
        .collect();
    ids.sort();
    let all = ids.len();
    ids.dedup();
    assert_eq!(all, ids.len(), "duplicate spans");
    assert!(
        ids.iter().all(|p| p.starts_with("/items/churn-")),
        "spans of requests never sent: {ids:?}"
    );
    assert!(
        ids.len() as u64 * 100 >= total * 99,
        "{} request spans for {total} requests",
        ids.len()
    );
}
