//! `spanhook top`: trace running processes like `attach` and show what is traced live — a
//! full-screen table of operations and recent traces on a terminal, a periodic plain-text
//! table otherwise — while exporting to OTLP or a file at the same time.
//!
//! It is `attach`'s run loop with one more exporter, the view's feed: planning, probes,
//! stopping and flushing are the same code, and so are the log lines.

use std::{
    io::{IsTerminal, Write},
    path::PathBuf,
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use tokio::sync::oneshot;

use super::attach::{self, AttachArgs};
use crate::{
    export::otlp,
    tui::{
        self,
        columns::OpColumn,
        filter::Filter,
        logs::{LogLines, StderrCapture},
        Exit, Settings,
    },
};

/// Flags of `spanhook top`.
#[derive(Args, Debug, Clone)]
pub struct TopArgs {
    /// Process to trace (repeat for several).
    #[arg(long = "pid", required = true, value_name = "PID")]
    pub pids: Vec<u32>,
    /// Also export over OTLP, e.g. http://localhost:4317 (default: OTEL_EXPORTER_OTLP_ENDPOINT).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// OTLP transport (default: OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf).
    #[arg(long, value_name = "PROTOCOL", value_parser = ["grpc", "http/protobuf"])]
    pub otlp_protocol: Option<String>,
    /// Also write spans as OTLP/JSON lines (one ExportTraceServiceRequest per line).
    #[arg(long, value_name = "PATH")]
    pub output_file: Option<PathBuf>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Write `traceparent` into outgoing HTTP/1 requests of the traced Go clients, so the
    /// next service joins the trace (as `attach --propagate`).
    #[arg(long)]
    pub propagate: bool,
    /// How to trace HTTP: symbols, sockets, or auto (as `attach --capture`).
    #[arg(long, value_enum, default_value = "auto")]
    pub capture: crate::plan::CaptureMode,
    /// Sliding window for counts, rates and percentiles, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    pub window: f64,
    /// Seconds between refreshes (default: 1 on a terminal, 10 in plain text).
    #[arg(short = 'd', long, value_name = "SECS")]
    pub interval: Option<f64>,
    /// Print a plain-text table every interval instead of the full-screen view, like `top -b`
    /// (the default when standard output is not a terminal).
    #[arg(short = 'b', long)]
    pub batch: bool,
    /// Start with this filter, as typed after `/`: "service=NAME route=TEXT status=5xx min=50ms".
    #[arg(long, value_name = "FILTER", default_value = "")]
    pub filter: String,
    /// Sort operations by service, kind, operation, count, rate, errors, p50, p95 or p99.
    #[arg(long, value_name = "COLUMN", default_value = "rate")]
    pub sort: String,
}

fn seconds(flag: &str, value: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| anyhow!("{flag} {value}: give a positive number of seconds"))
}

/// Where else spans go, for the view's status line.
fn exporting(args: &TopArgs) -> String {
    let mut parts = Vec::new();
    match &args.otlp_endpoint {
        Some(e) => parts.push(format!("otlp {e}")),
        None if args.otlp_protocol.is_some() || otlp::configured_by_env() => {
            parts.push("otlp (OTEL_EXPORTER_OTLP_*)".into())
        }
        None => {}
    }
    if let Some(p) = &args.output_file {
        parts.push(format!("file {}", p.display()));
    }
    parts.join(", ")
}

/// Runs `spanhook top`.
pub async fn run(args: TopArgs) -> Result<ExitCode> {
    let filter: Filter = args.filter.parse().context("invalid --filter")?;
    let sort: OpColumn = args
        .sort
        .parse()
        .map_err(|e: String| anyhow!(e))
        .context("invalid --sort")?;
    let plain = args.batch || !std::io::stdout().is_terminal();
    let refresh = match args.interval {
        Some(s) => seconds("--interval", s)?,
        None if plain => Duration::from_secs(10),
        None => Duration::from_secs(1),
    };
    let window = seconds("--window", args.window)?;
    if args.pids.is_empty() {
        bail!("give at least one --pid");
    }
    let mut pids = args.pids.clone();
    pids.sort_unstable();
    pids.dedup();
    let settings = Settings {
        window,
        refresh,
        filter,
        sort,
        pids,
        exporting: exporting(&args),
    };
    let attach_args = AttachArgs {
        pids: args.pids.clone(),
        otlp_endpoint: args.otlp_endpoint.clone(),
        otlp_protocol: args.otlp_protocol.clone(),
        output_file: args.output_file.clone(),
        // Never beside the view: it would print over the screen.
        console: false,
        duration: args.duration,
        propagate: args.propagate,
        capture: args.capture,
        prometheus: None,
    };

    let (feed, receiver) = tui::feed();
    let (quit_tx, quit_rx) = oneshot::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    // On the full screen, log lines would land on top of the view: from here until the view
    // closes they go to the view's log (status line and `l`), then are written to stderr.
    let logs = LogLines::default();
    let capture = if plain {
        None
    } else {
        Some(StderrCapture::start(logs.clone()).context("cannot redirect stderr")?)
    };
    // The view blocks on the keyboard, so it gets a thread of its own beside the runtime.
    let view = std::thread::Builder::new()
        .name("spanhook-top".into())
        .spawn(move || -> Result<()> {
            if plain {
                let mut out = std::io::stdout().lock();
                match tui::plain::run(&mut out, receiver, settings, &flag) {
                    Ok(()) => Ok(()),
                    // Like `top -b | head`: a reader that went away ends the run, quietly.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                        let _ = quit_tx.send("output closed");
                        Ok(())
                    }
                    Err(e) => Err(e).context("cannot write the summary to standard output"),
                }
            } else {
                let exit = tui::terminal::run(receiver, settings, logs, &flag);
                // Stderr back before the run stops: its last lines go straight to the terminal.
                drop(capture);
                if exit? == Exit::Quit {
                    let _ = quit_tx.send("quit");
                }
                Ok(())
            }
        })
        .context("cannot start the view's thread")?;

    let result = attach::run_with(attach_args, Some(Box::new(feed)), Some(quit_rx)).await;
    // Every span has reached the view's queue by now: the pipeline flushed before returning.
    stop.store(true, Ordering::SeqCst);
    let joined = tokio::task::spawn_blocking(move || view.join())
        .await
        .context("waiting for the view")?;
    let _ = std::io::stdout().flush();
    let view_result = joined.map_err(|_| anyhow!("the view crashed; see the message above"))?;
    let code = result?;
    view_result.context("the terminal view failed")?;
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        top: TopArgs,
    }

    #[test]
    fn flags_parse_with_top_like_defaults() {
        let cli = Cli::parse_from(["top", "--pid", "1", "--pid", "2", "-d", "0.5", "-b"]);
        assert_eq!(cli.top.pids, [1, 2]);
        assert_eq!(cli.top.interval, Some(0.5));
        assert!(cli.top.batch);
        assert_eq!(cli.top.window, 60.0);
        assert_eq!(cli.top.sort, "rate");
        assert!(seconds("--window", 0.0).is_err());
        assert!(seconds("--window", -1.0).is_err());
        assert!(seconds("--window", f64::NAN).is_err());
    }

    #[test]
    fn exporters_are_named_for_the_status_line() {
        let cli = Cli::parse_from([
            "top",
            "--pid",
            "1",
            "--otlp-endpoint",
            "http://c:4317",
            "--output-file",
            "/tmp/s.jsonl",
        ]);
        assert_eq!(exporting(&cli.top), "otlp http://c:4317, file /tmp/s.jsonl");
    }
}
