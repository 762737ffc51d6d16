//! The daemon's HTTP endpoint: `/healthz` (the run loop is alive), `/readyz` (probes loaded
//! and the first /proc scan done) and `/metrics` (Prometheus text format, version 0.0.4).
//!
//! A tiny HTTP/1.0 responder on tokio: one request per connection, no keep-alive, which is
//! all kubelet probes and Prometheus scrapes need.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::attach::Probes;

/// The run loop beats at least this often (its ticker); older is unhealthy.
const STALE_SECS: u64 = 30;

/// Self-telemetry, written by the run loop, read by the endpoint.
#[derive(Default)]
pub struct Metrics {
    /// Probes loaded and the first scan done.
    pub ready: AtomicBool,
    /// Processes traced now.
    pub targets: AtomicU64,
    /// Processes attached since start.
    pub attached: AtomicU64,
    /// Processes detached since start.
    pub detached: AtomicU64,
    /// Selected processes that could not be traced.
    pub attach_failures: AtomicU64,
    /// Exec events seen.
    pub execs: AtomicU64,
    /// Events read from the ring buffer.
    events: AtomicU64,
    /// Records that did not decode.
    undecodable: AtomicU64,
    /// Spans dropped because the export queue was full.
    dropped: AtomicU64,
    /// The probes' loss and failure counters.
    counters: Mutex<Vec<(&'static str, u64)>>,
    /// Unix seconds of the last tick.
    heartbeat: AtomicU64,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Metrics {
    /// Called on each tick of the run loop.
    pub fn update(&self, probes: &Probes, events: u64, undecodable: u64, dropped: u64) {
        self.events.store(events, Ordering::Relaxed);
        self.undecodable.store(undecodable, Ordering::Relaxed);
        self.dropped.store(dropped, Ordering::Relaxed);
        let counters = probes
            .counters()
            .into_iter()
            .map(|(c, n)| (c.name(), n))
            .collect();
        *self.counters.lock().unwrap_or_else(|e| e.into_inner()) = counters;
        self.heartbeat.store(now(), Ordering::Relaxed);
    }

    fn healthy(&self) -> bool {
        let beat = self.heartbeat.load(Ordering::Relaxed);
        // Before the first tick the loop is starting: healthy.
        beat == 0 || now().saturating_sub(beat) <= STALE_SECS
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP spanhook_{name} {help}");
            let _ = writeln!(out, "# TYPE spanhook_{name} {kind}");
            let _ = writeln!(out, "spanhook_{name} {value}");
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        metric(
            "ready",
            "gauge",
            "1 once probes are loaded and the first scan is done.",
            self.ready.load(Ordering::Relaxed) as u64,
        );
        metric(
            "targets_attached",
            "gauge",
            "Processes traced now.",
            get(&self.targets),
        );
        metric(
            "attaches_total",
            "counter",
            "Processes attached since start.",
            get(&self.attached),
        );
        metric(
            "detaches_total",
            "counter",
            "Processes detached since start.",
            get(&self.detached),
        );
        metric(
            "attach_failures_total",
            "counter",
            "Selected processes that could not be traced.",
            get(&self.attach_failures),
        );
        metric(
            "process_execs_total",
            "counter",
            "Exec events seen.",
            get(&self.execs),
        );
        metric(
            "events_read_total",
            "counter",
            "Records read from the probes' ring buffer.",
            get(&self.events),
        );
        metric(
            "events_undecodable_total",
            "counter",
            "Records that did not decode.",
            get(&self.undecodable),
        );
        metric(
            "spans_dropped_total",
            "counter",
            "Spans dropped because the export queue was full.",
            get(&self.dropped),
        );
        let _ = writeln!(
            out,
            "# HELP spanhook_probe_events_total The probes' loss and failure counters, by name."
        );
        let _ = writeln!(out, "# TYPE spanhook_probe_events_total counter");
        for (name, n) in self
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(out, "spanhook_probe_events_total{{counter=\"{name}\"}} {n}");
        }
        let rss = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or(0, |pages| pages * 4096);
        let _ = writeln!(
            out,
            "# HELP spanhook_resident_memory_bytes Resident set size of the daemon."
        );
        let _ = writeln!(out, "# TYPE spanhook_resident_memory_bytes gauge");
        let _ = writeln!(out, "spanhook_resident_memory_bytes {rss}");
        out
    }
}

/// Binds `addr` and serves in the background.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                // The request head may come in several segments: read up to its end, so the
                // client is not answered (and reset) while it is still writing.
                let mut buf = [0u8; 1024];
                let mut n = 0;
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
                while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match tokio::time::timeout_at(deadline, conn.read(&mut buf[n..])).await {
                        Ok(Ok(0)) => break,
                        Ok(Ok(read)) => n += read,
                        _ => return,
                    }
                }
                let (status, body, content_type) = respond(&buf[..n], &metrics);
                let head = format!(
                    "HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(body.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    Ok(())
}

fn respond(request: &[u8], metrics: &Metrics) -> (&'static str, String, &'static str) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let line = String::from_utf8_lossy(request);
    let path = line
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("/");
    let path = path.split('?').next().unwrap_or(path);
    match path {
        "/healthz" | "/livez" if metrics.healthy() => ("200 OK", "ok\n".into(), TEXT),
        "/healthz" | "/livez" => ("503 Service Unavailable", "run loop stalled\n".into(), TEXT),
        "/readyz" if metrics.ready.load(Ordering::Relaxed) => ("200 OK", "ready\n".into(), TEXT),
        "/readyz" => ("503 Service Unavailable", "starting\n".into(), TEXT),
        "/metrics" => (
            "200 OK",
            metrics.render(),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        _ => (
            "404 Not Found",
            "not found: try /healthz, /readyz, /metrics\n".into(),
            TEXT,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_answer_as_probes_expect() {
        let m = Metrics::default();
        assert_eq!(respond(b"GET /healthz HTTP/1.1\r\n\r\n", &m).0, "200 OK");
        assert_eq!(
            respond(b"GET /readyz HTTP/1.1\r\n\r\n", &m).0,
            "503 Service Unavailable"
        );
        m.ready.store(true, Ordering::Relaxed);
        assert_eq!(respond(b"GET /readyz HTTP/1.1\r\n\r\n", &m).0, "200 OK");
        m.heartbeat.store(1, Ordering::Relaxed);
        assert_eq!(
            respond(b"GET /healthz HTTP/1.1\r\n\r\n", &m).0,
            "503 Service Unavailable"
        );
        assert_eq!(
            respond(b"GET /nope HTTP/1.1\r\n\r\n", &m).0,
            "404 Not Found"
        );
        m.targets.store(3, Ordering::Relaxed);
        let body = respond(b"GET /metrics HTTP/1.1\r\n\r\n", &m).1;
        assert!(
            body.contains("# TYPE spanhook_targets_attached gauge\nspanhook_targets_attached 3\n"),
            "{body}"
        );
        assert!(body.contains("spanhook_resident_memory_bytes "), "{body}");
    }
}
