//! Ring-buffer records: `events::decode`, and for every record that decodes, the span built
//! from it (through `spans::Assembler`, which calls `spans::http::server_span` for a server
//! record, `client_span` for a client one, and covers each new kind as it is added), its OTLP
//! request and its console rendering — span building from arbitrary records, since a probe
//! bug or a kernel/agent version skew can send anything.
//!
//! Seeds (written by `cargo xtask fuzz`): well-formed server and client records with typical
//! and edge values.
#![no_main]

use std::{
    path::Path,
    sync::{Arc, OnceLock},
};

use libfuzzer_sys::fuzz_target;
use spanhook::{
    events::decode,
    export::{console::render_trace, convert::export_request},
    spans::{http::ErrorTypes, resource::Runtime, Assembler, Clock, ProcessResource},
};

/// Names error types the way the agent's reader of the binary can answer: a name for some
/// itabs, none for others (an itab built at run time is not in the file).
#[derive(Debug)]
struct ErrorNames;

impl ErrorTypes for ErrorNames {
    fn name(&self, itab: u64) -> Option<String> {
        (!itab.is_multiple_of(3)).then(|| format!("*fuzz.Error{itab:x}"))
    }
}

/// The resource of a traced Go process; its pid is set to each record's.
fn resource() -> &'static ProcessResource {
    static RESOURCE: OnceLock<ProcessResource> = OnceLock::new();
    RESOURCE.get_or_init(|| {
        ProcessResource::from_parts(
            4242,
            Path::new("/srv/bin/httpserver"),
            b"OTEL_SERVICE_NAME=fuzz\0",
            b"/srv/bin/httpserver\0",
            Some(Runtime {
                name: "go",
                version: "go1.22.12".to_string(),
            }),
            &[],
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let event = match decode(data) {
        Ok(event) => event,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let mut assembler = Assembler::new(Clock::with_offset_ns(0));
    let mut process = resource().clone();
    process.pid = event.header().tgid;
    assembler.add_process(Arc::new(process), Some(Arc::new(ErrorNames)));
    let span = assembler
        .span(&event)
        .expect("the record's process is registered");
    assert!(span.start <= span.end);
    assert!(!span.name.is_empty());
    let _ = span.duration();
    let request = export_request(std::slice::from_ref(&span));
    assert_eq!(request.resource_spans.len(), 1);
    let _ = render_trace(span.trace_id, vec![span]);
});
