//! `cargo xtask demo`: a Go → Rust → Go chain of real services traced live, each request one
//! trace across the three processes, printed as trees.
//!
//! Builds the fixtures (a stripped Go service and an axum + reqwest service in its default
//! release profile) and the agent, starts `frontend` (Go), `inventory` (Rust) and `pricing`
//! (Go), attaches spanhook to all three with `--propagate` and the console view, and drives
//! traffic with curl until Ctrl-C or the duration ends.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{fixtures, setup};

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

/// Starts a fixture service on a free port and returns it with its base URL.
fn start(binary: &Path, service: &str) -> Result<(Killed, String)> {
    let mut child = Command::new(binary)
        .args(["-addr", "127.0.0.1:0"])
        .env("OTEL_SERVICE_NAME", service)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .with_context(|| format!("{service} did not report its port"))?;
    Ok((Killed(child), format!("http://127.0.0.1:{port}")))
}

/// Runs the demo.
pub fn run(args: &Args) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo attaches eBPF uprobes to live processes: run `cargo xtask demo` as root");
    }
    let tools = setup::run()?;
    let newest = fixtures::GO_RELEASES.last().unwrap().to_string();
    let built = fixtures::build(
        &tools,
        &fixtures::Args {
            go: vec![newest.clone()],
            variant: vec!["stripped".into()],
            program: vec!["httpchain".into()],
        },
    )?;
    let go_bin = built.first().context("no Go fixture built")?.path.clone();
    let rust_bin = crate::fixtures_rust::build_release("httpchain")?;
    eprintln!("demo: building spanhook");
    let spanhook = crate::release_agent()?;

    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;

    let (frontend, front_url) = start(&go_bin, "frontend")?;
    let (inventory, inv_url) = start(&rust_bin, "inventory")?;
    let (pricing, price_url) = start(&go_bin, "pricing")?;
    eprintln!(
        "demo: frontend (Go {newest}, stripped) pid {}, inventory (Rust, axum + reqwest) pid {}, \
         pricing (Go) pid {}; attaching spanhook",
        frontend.0.id(),
        inventory.0.id(),
        pricing.0.id()
    );
    let pids = [&frontend, &inventory, &pricing].map(|s| s.0.id().to_string());
    let mut attach = Command::new(&spanhook);
    attach.arg("attach");
    for pid in &pids {
        attach.args(["--pid", pid]);
    }
    attach
        .args(["--propagate", "--console"])
        .args(["--duration", &args.duration.to_string()])
        .stderr(Stdio::piped());
    let mut agent = Killed(attach.spawn().context("starting spanhook")?);
    // Wait until every probe is in place before the first request.
    let mut log = BufReader::new(agent.0.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if log.read_line(&mut line)? == 0 {
            bail!("spanhook exited before attaching");
        }
        eprint!("{line}");
        if line.contains("exporting to") {
            break;
        }
    }
    std::thread::spawn(move || {
        let mut line = String::new();
        while log.read_line(&mut line).unwrap_or(0) > 0 {
            eprint!("{line}");
            line.clear();
        }
    });

    let requests = [
        format!("{front_url}/chain/order-1?next={inv_url},{price_url}"),
        format!("{inv_url}/direct/stock-7?next={price_url}"),
        format!("{front_url}/fanout/cart-3?next={inv_url}&n=2"),
        format!("{inv_url}/status/503"),
        format!("{front_url}/chain/order-2?next={inv_url},{price_url}"),
    ];
    let started = Instant::now();
    let mut i = 0;
    while !stop.load(Ordering::SeqCst)
        && started.elapsed() < Duration::from_secs(args.duration.saturating_sub(1))
    {
        let mut curl = Command::new("curl");
        curl.args(["-s", "-o", "/dev/null"])
            .arg(&requests[i % requests.len()]);
        if i % 7 == 0 {
            // A caller that already has a trace: the chain joins it.
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
    drop((frontend, inventory, pricing));
    if !status.success() {
        bail!("spanhook exited with {status}");
    }
    eprintln!("demo: {i} requests sent; spanhook detached cleanly");
    Ok(())
}
