//! The agent's per-span work in user space, without the kernel or the network: ring-buffer
//! record → event → span → RED metrics → OTLP protobuf → dropped. Run with
//! `cargo bench -p spanhook --bench hot_path`; it prints nanoseconds per span for each stage
//! (the best of several rounds), so a change to the hot path shows its effect in isolation
//! from the machine's load, which moves the end-to-end figures of `cargo xtask bench` by ±5 %.

use std::{
    hint::black_box,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use spanhook::{
    events,
    export::encode::TraceEncoder,
    metrics::{red::RedMetrics, Telemetry},
    spans::{Assembler, Clock, ProcessResource, SpanRecord},
};
use spanhook_common::{EventHeader, EventKind, HttpServerEvent, Str, TraceIds};

/// Spans per round; batches of 512 as the OTLP exporter sends them.
const SPANS: usize = 100_000;
const BATCH: usize = 512;
const ROUNDS: usize = 7;

fn text<const N: usize>(s: &str) -> Str<N> {
    let mut out = Str {
        len: s.len() as u32,
        bytes: [0; N],
    };
    out.bytes[..s.len()].copy_from_slice(s.as_bytes());
    out
}

/// A record as the Go server probe writes it for `GET /hello` from a local client.
fn record(i: usize) -> Vec<u8> {
    let event = HttpServerEvent {
        header: EventHeader {
            kind: EventKind::HttpServer as u16,
            _pad: 0,
            tgid: 4242,
            start_ns: 1_000_000 + i as u64 * 1000,
            end_ns: 1_050_000 + i as u64 * 1000,
        },
        trace: TraceIds {
            trace_id: [(i % 251) as u8 + 1; 16],
            span_id: [(i % 241) as u8 + 1; 8],
            parent_span_id: [0; 8],
            flags: 1,
            origin: TraceIds::ORIGIN_NEW,
            _pad: [0; 6],
        },
        goid: 17 + i as u64,
        status: 200,
        proto_major: 1,
        proto_minor: 1,
        tls: 0,
        _pad: [0; 3],
        method: text("GET"),
        path: text("/hello"),
        host: text("127.0.0.1:18080"),
        route: text("GET /hello"),
        remote: text(&format!("127.0.0.1:{}", 40000 + i % 100)),
    };
    // SAFETY: HttpServerEvent is repr(C), Copy, with explicit padding: its bytes are what the
    // kernel writes into the ring buffer.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&event as *const HttpServerEvent).cast::<u8>(),
            std::mem::size_of::<HttpServerEvent>(),
        )
    };
    bytes.to_vec()
}

#[derive(Default)]
struct Times {
    decode: Duration,
    assemble: Duration,
    metrics: Duration,
    encode: Duration,
    drop: Duration,
}

fn round(records: &[Vec<u8>], assembler: &Assembler, red: &RedMetrics) -> Times {
    let mut t = Times::default();
    let mut encoder = TraceEncoder::new();
    for chunk in records.chunks(BATCH) {
        let start = Instant::now();
        let events: Vec<_> = chunk
            .iter()
            .map(|r| events::decode(r).expect("a valid record"))
            .collect();
        t.decode += start.elapsed();

        let start = Instant::now();
        let spans: Vec<SpanRecord> = events
            .iter()
            .map(|e| assembler.span(e).expect("a known process"))
            .collect();
        t.assemble += start.elapsed();

        let start = Instant::now();
        for s in &spans {
            red.record(s);
        }
        t.metrics += start.elapsed();

        let start = Instant::now();
        black_box(encoder.encode(&spans).len());
        t.encode += start.elapsed();

        let start = Instant::now();
        drop(spans);
        t.drop += start.elapsed();
    }
    t
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let records: Vec<Vec<u8>> = (0..SPANS).map(record).collect();
    let mut assembler = Assembler::new(Clock::with_offset_ns(1_700_000_000_000_000_000));
    assembler.add_process(
        Arc::new(ProcessResource::from_parts(
            4242,
            Path::new("/usr/local/bin/bench-server"),
            b"OTEL_SERVICE_NAME=bench\0",
            b"bench-server\0-addr\x00127.0.0.1:18080\0",
            None,
            &[],
        )),
        None,
    );
    let red = RedMetrics::new(2000, Telemetry::global());
    let mut best: Option<Times> = None;
    for _ in 0..ROUNDS {
        let t = round(&records, &assembler, &red);
        best = Some(match best {
            None => t,
            Some(b) => Times {
                decode: b.decode.min(t.decode),
                assemble: b.assemble.min(t.assemble),
                metrics: b.metrics.min(t.metrics),
                encode: b.encode.min(t.encode),
                drop: b.drop.min(t.drop),
            },
        });
    }
    let b = best.expect("at least one round");
    let ns = |d: Duration| d.as_nanos() as f64 / SPANS as f64;
    let total = b.decode + b.assemble + b.metrics + b.encode + b.drop;
    println!("hot path, ns per span (best of {ROUNDS} rounds of {SPANS} Go server spans):");
    for (stage, d) in [
        ("decode the record", b.decode),
        ("assemble the span", b.assemble),
        ("RED metrics", b.metrics),
        ("encode OTLP", b.encode),
        ("drop the span", b.drop),
        ("total", total),
    ] {
        println!("  {stage:<20} {:>7.0}", ns(d));
    }
}
