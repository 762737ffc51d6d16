//! OpenTelemetry eBPF Instrumentation (OBI), the reference agent, run on the same server in
//! the same run when the bench is given its binary (`--obi PATH` or `SPANHOOK_BENCH_OBI`).
//! OBI's code and its build stay outside this repository; BENCHMARKS.md records how the binary
//! was built and what was changed to make it run on this kernel.

use std::{path::Path, process::Command};

/// OBI's settings in the bench, as (variable, value, why) — printed into the report.
pub fn settings(port: u16, endpoint: &str) -> Vec<(&'static str, String, &'static str)> {
    vec![
        (
            "OTEL_EBPF_OPEN_PORT",
            port.to_string(),
            "instrument the bench server only (selected by its port)",
        ),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            endpoint.to_string(),
            "traces to the same Collector as spanhook; no metrics exporter",
        ),
        (
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "grpc".into(),
            "the same transport as spanhook",
        ),
        (
            "OTEL_EBPF_OTLP_TRACES_MAX_QUEUE_SIZE",
            "100000".into(),
            "room for a whole run in its exporter queue (the default, 1 000 batches, drops spans \
             under unpaced load); reaches the gRPC exporter only with the build's third change",
        ),
        ("OTEL_EBPF_LOG_LEVEL", "info".into(), "its default"),
    ]
}

/// The command that runs OBI against the server listening on `port`, exporting to `endpoint`.
pub fn command(binary: &Path, port: u16, endpoint: &str) -> Command {
    let mut cmd = Command::new(binary);
    for (k, v, _) in settings(port, endpoint) {
        cmd.env(k, v);
    }
    cmd
}
