//! Shared harness for the kernel tests: real fixture processes, the real agent binary, a real
//! OpenTelemetry Collector, and readers for what they produce.
//!
//! These tests load eBPF programs. Without the privileges they fail with the reason; they
//! never pass by skipping. `cargo xtask test` builds the fixtures and runs them as root.
#![allow(dead_code)]

pub mod collector;
pub mod export;
pub mod native;
pub mod otlp;
pub mod rust;
pub mod tmux;
pub mod traffic;
pub mod uprobes;

use std::{
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Where `cargo xtask fixtures` put its output.
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("SPANHOOK_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/fixtures"))
}

/// A row of the Go fixture manifest.
#[derive(Clone, Debug)]
pub struct GoFixture {
    pub program: String,
    pub go: String,
    pub variant: String,
    pub arch: String,
    pub stripped: bool,
    pub path: PathBuf,
}

impl GoFixture {
    /// "httpserver go1.22.12 stripped", for messages.
    pub fn label(&self) -> String {
        format!("{} go{} {}", self.program, self.go, self.variant)
    }
}

/// Every Go fixture built, failing loudly when none were.
pub fn go_fixtures() -> Vec<GoFixture> {
    let manifest = fixtures_dir().join("go/manifest.tsv");
    let text = std::fs::read_to_string(&manifest).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}\nbuild the fixtures first: `cargo xtask fixtures` (cargo xtask test does it)",
            manifest.display()
        )
    });
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            GoFixture {
                program: c[0].into(),
                go: c[1].into(),
                variant: c[2].into(),
                arch: c[3].into(),
                stripped: c[4] == "true",
                path: PathBuf::from(c[5]),
            }
        })
        .collect()
}

/// One fixture, failing loudly when it was not built.
pub fn go_fixture(program: &str, go: &str, variant: &str) -> GoFixture {
    go_fixtures()
        .into_iter()
        .find(|f| f.program == program && f.go == go && f.variant == variant)
        .unwrap_or_else(|| {
            panic!("fixture {program} go{go} {variant} is not built; run `cargo xtask fixtures`")
        })
}

/// The newest Go release among the built fixtures of `program`.
pub fn newest_go(program: &str) -> String {
    let mut versions: Vec<String> = go_fixtures()
        .into_iter()
        .filter(|f| f.program == program && f.arch == "amd64")
        .map(|f| f.go)
        .collect();
    versions.sort_by_key(|v| {
        v.split('.')
            .map(|p| p.parse::<u32>().unwrap_or(0))
            .collect::<Vec<_>>()
    });
    versions
        .pop()
        .expect("no Go fixtures built; run `cargo xtask fixtures`")
}

/// Fails with the reason when this process cannot load eBPF programs.
pub fn require_bpf() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .unwrap_or(0);
    let bpf = caps & (1 << 39) != 0 || caps & (1 << 21) != 0;
    let perfmon = caps & (1 << 38) != 0 || caps & (1 << 21) != 0;
    assert!(
        bpf && perfmon,
        "this test attaches real eBPF uprobes and needs root (CAP_BPF, CAP_PERFMON); run it with `cargo xtask test` as root"
    );
}

/// Lines a child wrote to a stream, collected by a thread.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn collect(stream: impl Read + Send + 'static) -> Self {
        let lines = Lines::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                sink.0.lock().unwrap().push(line);
            }
        });
        lines
    }

    /// Collects the lines `stream` (a child's stdout or stderr) writes, from a thread.
    pub fn collect_from(stream: impl Read + Send + 'static) -> Self {
        Self::collect(stream)
    }

    /// Everything so far, one string.
    pub fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }

    /// Waits until a line contains `needle`; returns it.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Option<String> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(l) = self.0.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return Some(l.clone());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// A fixture server process.
pub struct GoServer {
    pub child: Child,
    pub port: u16,
    pub stdout: Lines,
}

impl GoServer {
    /// Starts any command that prints "listening on HOST:PORT" (e.g. the Python recorder).
    pub fn start_command(mut cmd: Command) -> Self {
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stdout = Lines::collect(child.stdout.take().unwrap());
        let line = stdout
            .wait_for("listening on", Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{cmd:?} did not start listening"));
        let port = line.rsplit(':').next().unwrap().trim().parse().unwrap();
        GoServer {
            child,
            port,
            stdout,
        }
    }

    /// Starts `binary` on a free loopback port.
    pub fn start(binary: &Path) -> Self {
        Self::start_with_env(binary, &[])
    }

    /// Starts `binary` with extra environment variables.
    pub fn start_with_env(binary: &Path, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(binary);
        cmd.args(["-addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = spawn_fresh_copy(&mut cmd)
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let stdout = Lines::collect(child.stdout.take().unwrap());
        let line = stdout
            .wait_for("listening on", Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{} did not start listening", binary.display()));
        let port = line.rsplit(':').next().unwrap().trim().parse().unwrap();
        GoServer {
            child,
            port,
            stdout,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for GoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The spanhook binary under test: `$SPANHOOK_BIN` (`cargo xtask test` sets it to the release
/// build, the one users run), else the build of this `cargo test`.
pub fn spanhook_bin() -> PathBuf {
    std::env::var_os("SPANHOOK_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_spanhook")))
}

/// A running `spanhook attach`.
pub struct Agent {
    pub child: Child,
    pub stderr: Lines,
    pub stdout: Lines,
}

impl Agent {
    /// Starts `spanhook attach` with `args` and waits until its probes are attached.
    pub fn attach(args: &[&str]) -> Agent {
        Self::attach_with_env(args, &[])
    }

    /// As [`Agent::attach`], with extra environment variables.
    pub fn attach_with_env(args: &[&str], env: &[(&str, &str)]) -> Agent {
        let agent = Self::spawn(args, env);
        if agent
            .stderr
            .wait_for("exporting to", Duration::from_secs(30))
            .is_none()
        {
            let mut agent = agent;
            let _ = agent.child.kill();
            let _ = agent.child.wait();
            std::thread::sleep(Duration::from_millis(100));
            panic!("spanhook did not attach:\n{}", agent.stderr.text());
        }
        agent
    }

    /// Starts `cmd` (the agent behind a wrapper such as `setpriv`, which execs it) with its
    /// output collected, without waiting for anything.
    pub fn spawn_command(mut cmd: Command) -> Agent {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start spanhook");
        let stderr = Lines::collect(child.stderr.take().unwrap());
        let stdout = Lines::collect(child.stdout.take().unwrap());
        Agent {
            child,
            stderr,
            stdout,
        }
    }

    /// Starts `spanhook` with `args` without waiting for anything.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Agent {
        let mut cmd = Command::new(spanhook_bin());
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        for k in [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ] {
            cmd.env_remove(k);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start spanhook");
        let stderr = Lines::collect(child.stderr.take().unwrap());
        let stdout = Lines::collect(child.stdout.take().unwrap());
        Agent {
            child,
            stderr,
            stdout,
        }
    }

    /// Sends SIGINT and waits for a clean exit.
    pub fn stop(self) -> (ExitStatus, String) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.wait()
    }

    /// Waits (at most 60 s) for the agent to exit; returns its status and stderr.
    pub fn wait(mut self) -> (ExitStatus, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                return (status, self.stderr.text());
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                panic!("spanhook did not exit:\n{}", self.stderr.text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("spanhook-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `spanhook` to completion with `args`.
pub fn run_spanhook(args: &[&str]) -> std::process::Output {
    Command::new(spanhook_bin())
        .args(args)
        .output()
        .expect("run spanhook")
}

/// Spawns `cmd`, retrying while the kernel says its file is busy: a binary a test has just
/// copied stays open for writing in any child another test thread forked meanwhile, until
/// that child execs.
pub fn spawn_fresh_copy(cmd: &mut Command) -> std::io::Result<std::process::Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}
