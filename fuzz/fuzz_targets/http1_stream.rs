//! The HTTP/1 stream reconstructor: arbitrary socket traffic — calls on up to eight
//! connections, each way, through libssl or not, with bytes moved but not copied, closes —
//! replayed through `reassembly::Reassembler` (see `reassembly::transcript` for the format),
//! and every exchange it hands out turned into a span, an OTLP request and console text.
//! Malformed traffic must give no exchange or a partial one, never a panic.
//!
//! Seeds (written by `cargo xtask fuzz`): server and client keep-alive, pipelining, chunked
//! and length bodies that look like HTTP, bytes not copied, TLS, other protocols.
#![no_main]

use std::{path::Path, sync::Arc};

use libfuzzer_sys::fuzz_target;
use spanhook::{
    export::{console::render_trace, convert::export_request},
    reassembly::{transcript, Exchange},
    spans::{socket::exchange_span, Clock, ProcessResource},
};

fuzz_target!(|data: &[u8]| {
    let resource = Arc::new(ProcessResource::from_parts(
        transcript::PID,
        Path::new("/usr/sbin/nginx"),
        b"",
        b"nginx\0",
        None,
        &[],
    ));
    let clock = Clock::with_offset_ns(0);
    let mut exchanges: Vec<Exchange> = Vec::new();
    let r = transcript::replay(data, &mut |e| exchanges.push(e));
    let stats = r.stats();
    assert_eq!(stats.exchanges as usize, exchanges.len());
    assert!(r.connections() <= 16);
    for e in &exchanges {
        assert!(e.start_ns <= e.end_ns);
        assert!(!e.request.method.is_empty());
        // A status, or the reason it is missing.
        assert!(e.status.is_some() || e.partial.is_some());
        let span = exchange_span(e, &clock, resource.clone());
        assert!(span.start <= span.end);
        assert!(!span.name.is_empty());
        let request = export_request(std::slice::from_ref(&span));
        assert_eq!(request.resource_spans.len(), 1);
        let _ = render_trace(span.trace_id, vec![span]);
    }
});
