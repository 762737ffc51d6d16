//! `OTEL_RESOURCE_ATTRIBUTES`: `resource::parse_resource_attributes` of arbitrary text, and
//! the resource built from a process environment that carries it.
//!
//! Seeds (written by `cargo xtask fuzz`): typical and percent-encoded attribute lists.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use spanhook::spans::resource::{parse_resource_attributes, ProcessResource};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let attributes = parse_resource_attributes(&text);
    assert!(attributes.iter().all(|(k, _)| !k.is_empty()));
    // The same bytes as a target's environment (NUL-separated `KEY=value` entries, the first
    // of them OTEL_RESOURCE_ATTRIBUTES) and command line.
    let mut environ = b"OTEL_RESOURCE_ATTRIBUTES=".to_vec();
    environ.extend_from_slice(data);
    let resource = ProcessResource::from_parts(
        7,
        Path::new("/srv/bin/fuzz (deleted)"),
        &environ,
        data,
        None,
        &attributes,
    );
    assert!(resource.attribute("service.name").is_some());
});
