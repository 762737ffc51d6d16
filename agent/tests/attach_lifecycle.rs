//! `spanhook attach` from start to exit: clear refusals, a target that exits, and no probe
//! left behind however the agent ends — checked in the target's memory, the kernel's view.

mod support;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use support::{
    go_fixture, newest_go,
    otlp::spans_in_file,
    require_bpf, run_spanhook, temp_dir,
    traffic::{send, Req},
    uprobes, Agent, GoServer,
};

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_missing_pid_is_refused_clearly() {
    let out = run_spanhook(&["attach", "--pid", "4194305"]);
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("no process with pid 4194305"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn a_program_that_is_not_go_is_refused() {
    let mut sleep = Command::new("sleep").arg("30").spawn().unwrap();
    let out = run_spanhook(&["attach", "--pid", &sleep.id().to_string()]);
    let _ = sleep.kill();
    let _ = sleep.wait();
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(
        err.contains("is neither a Go program") && err.contains("nor a Rust program"),
        "{err}"
    );
}

#[test]
fn a_go_program_without_net_http_is_refused_with_the_reason() {
    let fixture = go_fixture("nohttp", &newest_go("httpserver"), "stripped");
    let server = GoServer::start(&fixture.path);
    let out = run_spanhook(&["attach", "--pid", &server.pid().to_string()]);
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(err.contains("has nothing spanhook can trace"), "{err}");
    assert!(
        err.contains("net/http.serverHandler.ServeHTTP is not in the binary"),
        "{err}"
    );
}

#[test]
fn the_run_ends_cleanly_when_the_last_target_exits() {
    require_bpf();
    let fixture = go_fixture("httpserver", &newest_go("httpserver"), "stripped");
    let mut server = GoServer::start(&fixture.path);
    let out = temp_dir("target-exit").join("spans.jsonl");
    let pid = server.pid().to_string();
    let agent = Agent::attach(&[
        "attach",
        "--pid",
        &pid,
        "--output-file",
        out.to_str().unwrap(),
    ]);
    send(
        &server.url(""),
        &[Req::get("/hello"), Req::get("/error")],
        1,
    );
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let (status, stderr) = agent.wait();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains(&format!("pid {pid} exited")), "{stderr}");
    assert!(stderr.contains("every traced process exited"), "{stderr}");
    // Requests served before the exit are not lost.
    assert_eq!(spans_in_file(&out).len(), 2);
}

#[test]
fn no_uprobe_remains_after_a_clean_exit_or_a_kill() {
    require_bpf();
    let fixture = go_fixture("httpserver", &newest_go("httpserver"), "stripped");
    let offsets = uprobes::planned_offsets(&fixture.path);
    assert!(
        offsets.len() >= 2,
        "entry and at least one RET: {offsets:?}"
    );
    let server = GoServer::start(&fixture.path);
    let pid = server.pid();
    uprobes::assert_clean(pid, &fixture.path, &offsets);

    let agent = Agent::attach(&[
        "attach",
        "--pid",
        &pid.to_string(),
        "--output-file",
        "/dev/null",
    ]);
    uprobes::assert_probed(pid, &fixture.path, &offsets);
    let (status, stderr) = agent.stop();
    assert!(status.success(), "{stderr}");
    uprobes::assert_clean(pid, &fixture.path, &offsets);

    // SIGKILL: the kernel closes the agent's perf events and removes the probes itself.
    let mut agent = Agent::attach(&[
        "attach",
        "--pid",
        &pid.to_string(),
        "--output-file",
        "/dev/null",
    ]);
    uprobes::assert_probed(pid, &fixture.path, &offsets);
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    uprobes::assert_clean(pid, &fixture.path, &offsets);
    // And the target still serves, unchanged.
    let r = send(&server.url(""), &[Req::get("/hello")], 1);
    assert_eq!(r[0].body, b"hello\n");
}

#[test]
fn missing_privileges_are_named_and_nothing_is_attached() {
    require_bpf();
    let fixture = go_fixture("httpserver", &newest_go("httpserver"), "stripped");
    let offsets = uprobes::planned_offsets(&fixture.path);
    // Target and agent both run as nobody, so the target is readable but nothing may load BPF.
    let mut server = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(&fixture.path)
        .args(["-addr", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .spawn()
        .expect("setpriv (util-linux)");
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(support::spanhook_bin())
        .args(["attach", "--pid", &server.id().to_string()])
        .output()
        .unwrap();
    let err = stderr_of(&out);
    uprobes::assert_clean(server.id(), &fixture.path, &offsets);
    let _ = server.kill();
    let _ = server.wait();
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("CAP_BPF") && err.contains("CAP_PERFMON"),
        "{err}"
    );
}
