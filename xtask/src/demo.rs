//! `cargo xtask demo`: a small Go service traced live, its spans printed as trees.
//!
//! Builds the fixture service and the agent, starts the service, attaches spanhook with the
//! console view, and drives traffic with curl until Ctrl-C or the duration ends.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{cmd, fixtures, setup};

/// Options for the demo.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds to run before stopping on its own.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the demo.
pub fn run(args: &Args) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo attaches eBPF uprobes to a live process: run `cargo xtask demo` as root");
    }
    let tools = setup::run()?;
    let newest = fixtures::GO_RELEASES.last().unwrap().to_string();
    let built = fixtures::build(
        &tools,
        &fixtures::Args {
            go: vec![newest.clone()],
            variant: vec!["stripped".into()],
            program: vec!["httpserver".into()],
        },
    )?;
    let server_bin = built.first().context("no fixture built")?.path.clone();
    eprintln!("demo: building spanhook");
    cmd::run(Command::new("cargo").current_dir(crate::root()).args([
        "build",
        "--release",
        "-p",
        "spanhook",
    ]))?;
    let spanhook = crate::target_dir().join("release/spanhook");

    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;

    let mut server = Command::new(&server_bin)
        .args(["-addr", "127.0.0.1:0"])
        .env("OTEL_SERVICE_NAME", "shop-frontend")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", server_bin.display()))?;
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap()).read_line(&mut line)?;
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .context("the demo service did not report its port")?;
    let server = Killed(server);
    eprintln!(
        "demo: Go {newest} service (stripped binary) pid {} on 127.0.0.1:{port}; attaching spanhook",
        server.0.id()
    );
    let agent = Command::new(&spanhook)
        .args(["attach", "--pid", &server.0.id().to_string(), "--console"])
        .args(["--duration", &args.duration.to_string()])
        .spawn()
        .context("starting spanhook")?;
    let mut agent = Killed(agent);
    // Give the agent a moment to attach before the first request.
    std::thread::sleep(Duration::from_millis(800));

    let base = format!("http://127.0.0.1:{port}");
    let paths = [
        "/hello",
        "/items/42",
        "/slow?ms=150",
        "/error",
        "/missing",
        "/items/7",
    ];
    let started = Instant::now();
    let mut i = 0;
    while !stop.load(Ordering::SeqCst)
        && started.elapsed() < Duration::from_secs(args.duration.saturating_sub(1))
    {
        let path = paths[i % paths.len()];
        let mut curl = Command::new("curl");
        curl.args(["-s", "-o", "/dev/null"])
            .arg(format!("{base}{path}"));
        if i % 5 == 0 {
            // A caller that already has a trace: the server span joins it.
            curl.args([
                "-H",
                "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ]);
        }
        let _ = curl.status();
        i += 1;
        std::thread::sleep(Duration::from_millis(400));
    }
    // SAFETY: signalling our own child so it flushes and detaches.
    unsafe { libc::kill(agent.0.id() as i32, libc::SIGINT) };
    let status = agent.0.wait()?;
    drop(server);
    if !status.success() {
        bail!("spanhook exited with {status}");
    }
    eprintln!("demo: {i} requests sent; spanhook detached cleanly");
    Ok(())
}
