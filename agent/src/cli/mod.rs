//! The command line: parse flags, validate them into a configuration, run a command.

pub mod attach;
pub mod daemon;
pub mod inspect;
pub mod probe_cost;
mod sockets;
pub mod top;
pub mod verifier;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// spanhook traces Go services with eBPF uprobes and exports their spans over OTLP, without
/// changing or restarting them.
#[derive(Parser, Debug)]
#[command(name = "spanhook", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Attach to running processes and export their spans until interrupted.
    Attach(attach::AttachArgs),
    /// Trace every process of the node that a YAML configuration selects, as they come and go.
    Daemon(daemon::DaemonArgs),
    /// Show what spanhook can trace in a binary or a running process, and why not.
    Inspect(inspect::InspectArgs),
    /// Trace running processes and watch their operations and traces live, like top.
    Top(top::TopArgs),
    /// Attach the HTTP server programs to any Go function, to measure their cost per hit.
    #[command(hide = true)]
    ProbeCost(probe_cost::ProbeCostArgs),
    /// Load every eBPF program without attaching it and print the verifier's instruction counts.
    #[command(hide = true)]
    Verifier(verifier::VerifierArgs),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Attach(args) => runtime().and_then(|rt| rt.block_on(attach::run(args))),
        Command::Daemon(args) => runtime().and_then(|rt| rt.block_on(daemon::run(args))),
        Command::Inspect(args) => inspect::run(&args),
        Command::Top(args) => runtime().and_then(|rt| rt.block_on(top::run(args))),
        Command::ProbeCost(args) => runtime().and_then(|rt| rt.block_on(probe_cost::run(args))),
        Command::Verifier(args) => verifier::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// One thread runs reading, span building and export: the work per span is a few
/// microseconds, and a second worker only added cross-thread wake-ups (a futex round per
/// drain) and a second malloc arena.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("spanhook")
        .build()?)
}

fn init_logging() {
    use tracing_subscriber::{fmt, EnvFilter};
    let filter = EnvFilter::try_from_env("SPANHOOK_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,opentelemetry=warn,opentelemetry_sdk=warn,opentelemetry_otlp=warn,h2=warn,tonic=warn,hyper=warn,reqwest=warn"));
    let _ = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
