//! How fast `spanhook top` answers a key while spans pour in: the benchmark behind "redraw
//! within 100 ms of a key press at 5000 spans/s".
//!
//! It runs the view's real loop (`tui::session::run`) with everything but the terminal device:
//! spans enter through the same exporter the pipeline feeds, in the pipeline's batches (512
//! spans, or what 200 ms brought), at a steady rate; key presses come from a script at
//! irregular moments (moving, sorting, filtering, opening traces, pausing); frames are drawn by
//! ratatui's crossterm backend into a byte sink of a fixed terminal size, so diffing and
//! escape-sequence encoding are paid as on a real terminal. The latency of a key is the time
//! from the moment it is "pressed" (due in the script) to the end of the frame drawn after it
//! was handled. The window starts full (60 s of spans at the same rate), as after a minute of
//! watching.
//!
//! ```sh
//! AYA_BUILD_SKIP=1 cargo run --release -p spanhook --example tui_load -- [SPANS_PER_SEC] [SECONDS] [WIDTHxHEIGHT]
//! ```
//!
//! Defaults: 5000 spans/s, 20 s, 80x24. It prints the latency distribution; it asserts
//! nothing (a benchmark is not a test).

use std::{
    io::{self, Write},
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime},
};

use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use opentelemetry::{
    trace::{SpanId, SpanKind, Status, TraceId},
    KeyValue,
};
use ratatui::{backend::CrosstermBackend, layout::Rect, Terminal, TerminalOptions, Viewport};
use spanhook::{
    spans::{ProcessResource, SpanRecord},
    tui::{
        self,
        columns::OpColumn,
        feed::FeedMessage,
        filter::Filter,
        logs::LogLines,
        session::{self, Input},
        App, Settings,
    },
};

/// The pipeline's batch size and longest batch delay (export/pipeline.rs).
const BATCH: usize = 512;
const BATCH_DELAY: Duration = Duration::from_millis(200);
const WINDOW: Duration = Duration::from_secs(60);

/// A small deterministic generator (xorshift64*): the same load on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Synthetic traffic: three services, a dozen routes, long-tailed latencies, 2% errors, and
/// one trace in ten crossing into a second service.
struct Load {
    rng: Rng,
    services: Vec<Arc<ProcessResource>>,
    pending_child: Option<SpanRecord>,
}

const ROUTES: &[&str] = &[
    "GET /hello",
    "GET /items/{id}",
    "POST /items",
    "GET /cart",
    "POST /checkout",
    "GET /search",
    "GET /users/{id}",
    "PUT /users/{id}",
    "GET /health",
    "DELETE /items/{id}",
    "GET /slow",
    "GET /error",
];

impl Load {
    fn new() -> Self {
        let services = ["checkout", "catalog", "payments"]
            .iter()
            .enumerate()
            .map(|(i, name)| {
                Arc::new(ProcessResource::from_parts(
                    4000 + i as u32,
                    Path::new("/srv/app"),
                    format!("OTEL_SERVICE_NAME={name}\0").as_bytes(),
                    b"",
                    None,
                    &[],
                ))
            })
            .collect();
        Self {
            rng: Rng(0x5eed_1234_abcd_0042),
            services,
            pending_child: None,
        }
    }

    fn span(&mut self) -> SpanRecord {
        if let Some(child) = self.pending_child.take() {
            return child;
        }
        let route = ROUTES[self.rng.below(ROUTES.len() as u64) as usize];
        let service = self.services[self.rng.below(3) as usize].clone();
        // Log-normal-ish: mostly sub-millisecond, a tail into hundreds of ms.
        let us = (200.0 * (self.rng.unit() * 7.0).exp()) as u64;
        let error = self.rng.below(50) == 0 || route == "GET /error";
        let code: i64 = if error { 500 } else { 200 };
        let end = SystemTime::now();
        let start = end - Duration::from_micros(us);
        let trace =
            TraceId::from_bytes(self.rng.next().to_le_bytes().repeat(2).try_into().unwrap());
        let id = SpanId::from_bytes(self.rng.next().to_le_bytes());
        let record = SpanRecord {
            trace_id: trace,
            span_id: id,
            parent_span_id: SpanId::INVALID,
            parent_is_remote: false,
            sampled: true,
            name: route.to_string(),
            kind: SpanKind::Server,
            start,
            end,
            attributes: vec![
                KeyValue::new(
                    "http.request.method",
                    route.split(' ').next().unwrap_or("GET").to_string(),
                ),
                KeyValue::new(
                    "url.path",
                    route.split(' ').nth(1).unwrap_or("/").to_string(),
                ),
                KeyValue::new(
                    "http.route",
                    route.split(' ').nth(1).unwrap_or("/").to_string(),
                ),
                KeyValue::new("http.response.status_code", code),
            ],
            status: if error {
                Status::error("")
            } else {
                Status::Unset
            },
            resource: service,
        };
        if self.rng.below(10) == 0 {
            let mut child = record.clone();
            child.span_id = SpanId::from_bytes(self.rng.next().to_le_bytes());
            child.parent_span_id = id;
            child.parent_is_remote = true;
            child.resource = self.services[(self.rng.below(3)) as usize].clone();
            child.start = start + Duration::from_micros(us / 4);
            child.end = end - Duration::from_micros(us / 4);
            self.pending_child = Some(child);
        }
        record
    }
}

/// One scripted step: a key, and how long after the previous one it is pressed.
fn script() -> Vec<(KeyCode, u64)> {
    let mut keys = Vec::new();
    let typed = |text: &str, keys: &mut Vec<(KeyCode, u64)>| {
        for c in text.chars() {
            keys.push((KeyCode::Char(c), 60));
        }
    };
    keys.push((KeyCode::Down, 250));
    keys.push((KeyCode::Down, 150));
    keys.push((KeyCode::Char('s'), 300));
    keys.push((KeyCode::Char('9'), 400));
    keys.push((KeyCode::Char('r'), 200));
    keys.push((KeyCode::Char('/'), 350));
    typed("status=5xx min=5ms", &mut keys);
    keys.push((KeyCode::Enter, 120));
    keys.push((KeyCode::Tab, 500));
    keys.push((KeyCode::Down, 180));
    keys.push((KeyCode::Enter, 300));
    keys.push((KeyCode::Down, 400));
    keys.push((KeyCode::Esc, 600));
    keys.push((KeyCode::Char('x'), 250));
    keys.push((KeyCode::Char('p'), 700));
    keys.push((KeyCode::PageDown, 300));
    keys.push((KeyCode::Char('p'), 500));
    keys.push((KeyCode::Tab, 200));
    keys.push((KeyCode::Char('3'), 350));
    keys.push((KeyCode::Char('4'), 450));
    keys
}

/// Keys from the script, each due at its moment; latencies measured at the next frame.
struct ScriptedKeys {
    script: Vec<(KeyCode, u64)>,
    next: usize,
    due: Instant,
    end: Instant,
    handled: Vec<Instant>,
    latencies: Vec<Duration>,
    jitter: Rng,
}

impl Input for ScriptedKeys {
    fn next_event(&mut self, timeout: Duration) -> io::Result<Option<Event>> {
        let now = Instant::now();
        if now >= self.end {
            // Ctrl-C quits from anywhere, even halfway through typing a filter.
            return Ok(Some(Event::Key(KeyEvent::new(
                KeyCode::Char('c'),
                KeyModifiers::CONTROL,
            ))));
        }
        if self.due > now {
            // Nothing due yet: wait as a terminal would, up to the loop's timeout.
            let wait = (self.due - now).min(timeout);
            std::thread::sleep(wait);
            if Instant::now() < self.due {
                return Ok(None);
            }
        }
        let (code, _) = self.script[self.next % self.script.len()];
        self.handled.push(self.due);
        self.next += 1;
        let (_, gap) = self.script[self.next % self.script.len()];
        // Irregular moments, so presses land during refreshes, ingestion and idle time alike.
        self.due += Duration::from_millis(gap + self.jitter.below(gap.max(1)));
        Ok(Some(Event::Key(KeyEvent::new(code, KeyModifiers::NONE))))
    }

    fn drawn(&mut self) {
        let now = Instant::now();
        for pressed in self.handled.drain(..) {
            self.latencies.push(now.saturating_duration_since(pressed));
        }
    }
}

/// A terminal's output, counted and thrown away.
struct Sink(Arc<AtomicU64>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rate: u64 = args.first().map_or(Ok(5000), |s| s.parse())?;
    let seconds: u64 = args.get(1).map_or(Ok(20), |s| s.parse())?;
    let (width, height) = match args.get(2) {
        Some(s) => {
            let (w, h) = s
                .split_once('x')
                .ok_or_else(|| anyhow::anyhow!("size: WxH"))?;
            (w.parse()?, h.parse()?)
        }
        None => (80u16, 24u16),
    };

    let now = Instant::now();
    let epoch = now.checked_sub(WINDOW).unwrap_or(now);
    let settings = Settings {
        window: WINDOW,
        refresh: Duration::from_secs(1),
        filter: Filter::default(),
        sort: OpColumn::Rate,
        pids: vec![4000, 4001, 4002],
        exporting: String::new(),
    };
    let mut app = App::new(settings, LogLines::default(), epoch);
    // A full window to start with: 60 s of spans at the same rate, arrived over that minute.
    let mut load = Load::new();
    let prefill = rate * WINDOW.as_secs();
    let step = WINDOW.as_nanos() as u64 / (prefill / BATCH as u64).max(1);
    let mut at = epoch;
    let started = Instant::now();
    let mut filled = 0;
    while filled < prefill {
        let batch: Vec<SpanRecord> = (0..BATCH).map(|_| load.span()).collect();
        filled += batch.len() as u64;
        app.take(FeedMessage::Spans(batch, at));
        at += Duration::from_nanos(step);
    }
    eprintln!(
        "pre-filled the {}s window with {filled} spans in {:.1} s",
        WINDOW.as_secs(),
        started.elapsed().as_secs_f64()
    );

    let (mut feed, receiver) = tui::feed();
    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(AtomicU64::new(0));
    let producer = {
        let stop = stop.clone();
        let produced = produced.clone();
        std::thread::spawn(move || {
            // Spans as the pipeline hands them over: full batches, or what 200 ms brought.
            let start = Instant::now();
            let mut sent = 0u64;
            let mut batch = Vec::with_capacity(BATCH);
            let mut oldest = Instant::now();
            while !stop.load(Ordering::SeqCst) {
                let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                while sent < due {
                    if batch.is_empty() {
                        oldest = Instant::now();
                    }
                    batch.push(load.span());
                    sent += 1;
                    if batch.len() == BATCH {
                        feed.push(&batch);
                        batch.clear();
                    }
                }
                if !batch.is_empty() && oldest.elapsed() >= BATCH_DELAY {
                    feed.push(&batch);
                    batch.clear();
                }
                produced.store(sent, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    let bytes = Arc::new(AtomicU64::new(0));
    let mut terminal = Terminal::with_options(
        CrosstermBackend::new(Sink(bytes.clone())),
        TerminalOptions {
            viewport: Viewport::Fixed(Rect::new(0, 0, width, height)),
        },
    )?;
    let begin = Instant::now();
    let mut keys = ScriptedKeys {
        script: script(),
        next: 0,
        due: begin + Duration::from_millis(500),
        end: begin + Duration::from_secs(seconds),
        handled: Vec::new(),
        latencies: Vec::new(),
        jitter: Rng(7),
    };
    let exit = session::run(
        &mut terminal,
        &mut keys,
        &mut app,
        &receiver,
        &AtomicBool::new(false),
    )?;
    let elapsed = begin.elapsed();
    stop.store(true, Ordering::SeqCst);
    let _ = producer.join();

    let mut lat = keys.latencies;
    lat.sort();
    let produced = produced.load(Ordering::Relaxed);
    println!(
        "spanhook top under load: {width}x{height}, {:.0} spans/s offered for {:.1} s ({} spans), \
         {} not taken by the view, window {} s; exit {exit:?}",
        produced as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        produced,
        receiver.dropped(),
        WINDOW.as_secs(),
    );
    println!(
        "key press → redraw over {} keys: p50 {}, p95 {}, p99 {}, max {}; {} KiB drawn",
        lat.len(),
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.95)),
        ms(percentile(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default()),
        bytes.load(Ordering::Relaxed) / 1024,
    );
    let over = lat
        .iter()
        .filter(|d| **d > Duration::from_millis(100))
        .count();
    println!("keys over 100 ms: {over}");
    Ok(())
}
