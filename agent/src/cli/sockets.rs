//! The socket-level half of `attach`'s run loop: start the capture for the targets planned at
//! socket level, read the socket ring, rebuild HTTP/1 exchanges, hand their spans to the
//! export pipeline, and tell the kernel which connections are not HTTP.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::{
    attach::{EventReader, Probes},
    events::socket,
    export::Pipeline,
    inspect::native,
    plan::{self, PlannedTarget},
    reassembly::{Exchange, Reassembler, Sink},
    spans::{Assembler, Clock},
};

/// How often connections idle for `reassembly::IDLE_NS` are swept out.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Socket-level tracing for one run.
pub(crate) struct SocketTracing {
    reader: Option<EventReader>,
    reassembler: Reassembler,
    last_sweep: Instant,
    undecodable: u64,
    unsampled: u64,
    ignored: u64,
}

/// Where exchanges and "not HTTP" verdicts go while draining.
struct Out<'a> {
    assembler: &'a Assembler,
    pipeline: &'a mut Pipeline,
    not_http: Vec<(u32, u64, (u16, u16))>,
    unsampled: &'a mut u64,
}

impl Sink for Out<'_> {
    fn exchange(&mut self, exchange: Exchange) {
        // Parent-based sampling is the pipeline's, after the span is counted in the metrics.
        if let Some(span) = self.assembler.exchange_span(&exchange) {
            *self.unsampled += u64::from(!span.sampled);
            self.pipeline.send(span)
        }
    }

    fn not_http(&mut self, tgid: u32, sock: u64, ports: (u16, u16)) {
        self.not_http.push((tgid, sock, ports));
    }
}

impl SocketTracing {
    /// Starts the capture when a target is planned at socket level; registers those targets.
    pub fn start(probes: &mut Probes, targets: &[PlannedTarget]) -> Result<Self> {
        let mut tracing = SocketTracing {
            reader: None,
            reassembler: Reassembler::new(),
            last_sweep: Instant::now(),
            undecodable: 0,
            unsampled: 0,
            ignored: 0,
        };
        let socket_level: Vec<&PlannedTarget> = targets
            .iter()
            .filter(|t| {
                t.plan.config.flags & spanhook_common::TargetConfig::FLAG_SOCKET_CAPTURE != 0
            })
            .collect();
        if socket_level.is_empty() {
            return Ok(tracing);
        }
        if probes
            .enable_socket_capture()
            .context("socket-level tracing cannot start")?
        {
            tracing::info!(
                "socket-level capture on: {} (no wakeup per call; the reader drains in batches)",
                plan::socket::SYSCALLS
            );
        }
        tracing.reader = Some(probes.socket_reader()?);
        for t in socket_level {
            tracing.register(t);
        }
        Ok(tracing)
    }

    /// Adds one more target (the daemon's targets arrive one by one): starts the capture if
    /// it is the first planned at socket level; targets traced by symbols are left alone.
    pub fn add(&mut self, probes: &mut Probes, t: &PlannedTarget) -> Result<()> {
        if t.plan.config.flags & spanhook_common::TargetConfig::FLAG_SOCKET_CAPTURE == 0 {
            return Ok(());
        }
        // Detaching the last socket-level process detaches the tracepoints: attach again.
        if probes
            .enable_socket_capture()
            .context("socket-level tracing cannot start")?
        {
            tracing::info!("socket-level capture on: {}", plan::socket::SYSCALLS);
        }
        if self.reader.is_none() {
            self.reader = Some(probes.socket_reader()?);
        }
        self.register(t);
        Ok(())
    }

    fn register(&mut self, t: &PlannedTarget) {
        let pid = t.process.pid;
        let (server, client) = plan::socket::roles(&t.plan);
        self.reassembler.add_process(pid, server, client);
        // Connections open now may be joined mid-message: they get some slack before
        // they are taken for another protocol.
        let open = native::tcp_connections(pid);
        tracing::debug!("pid {pid}: {} TCP connections open at attach", open.len());
        self.reassembler.add_preexisting(pid, open);
    }

    /// Waits until socket records may be available (forever when nothing is captured).
    pub async fn ready(&mut self) {
        match &mut self.reader {
            Some(r) => r.ready().await,
            None => std::future::pending().await,
        }
    }

    /// Reads every available record.
    pub fn drain(&mut self, probes: &mut Probes, assembler: &Assembler, pipeline: &mut Pipeline) {
        let Some(reader) = &mut self.reader else {
            return;
        };
        let mut out = Out {
            assembler,
            pipeline,
            not_http: Vec::new(),
            unsampled: &mut self.unsampled,
        };
        let reassembler = &mut self.reassembler;
        let undecodable = &mut self.undecodable;
        reader.drain(|bytes| match socket::decode(bytes) {
            Ok(record) => reassembler.feed(&record, &mut out),
            Err(e) => {
                if *undecodable == 0 {
                    tracing::warn!("undecodable socket record: {e}");
                }
                *undecodable += 1;
            }
        });
        for (tgid, sock, ports) in out.not_http.drain(..) {
            probes.ignore_socket(tgid, sock, ports);
            self.ignored += 1;
        }
        if self.last_sweep.elapsed() >= SWEEP_EVERY {
            self.last_sweep = Instant::now();
            let mut out = Out {
                assembler,
                pipeline,
                not_http: Vec::new(),
                unsampled: &mut self.unsampled,
            };
            self.reassembler.sweep(Clock::monotonic_now_ns(), &mut out);
        }
    }

    /// Forgets an exited process.
    pub fn remove_process(&mut self, pid: u32) {
        self.reassembler.remove_process(pid);
    }

    /// Logs what socket-level tracing did.
    pub fn report(&self) {
        if self.reader.is_none() {
            return;
        }
        let s = self.reassembler.stats();
        tracing::info!(
            "socket level: {} records, {} exchanges ({} partial), {} connections not HTTP ({} dropped in the kernel), {} unsampled, {} undecodable",
            s.records,
            s.exchanges,
            s.partial,
            s.not_http,
            self.ignored,
            self.unsampled,
            self.undecodable
        );
    }
}
