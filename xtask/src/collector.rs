//! The OpenTelemetry Collector the integration tests export to, built from the Go module proxy
//! with the Collector builder (the receiver real users run, not a look-alike).

use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context, Result};

use crate::{cmd, setup::Tools};

/// Collector release: builder and components. The proxy serves this set with its whole
/// dependency graph (newer builders' graphs are refused).
const COLLECTOR_VERSION: &str = "0.150.0";
/// Version of the confmap providers matching that release.
const PROVIDERS_VERSION: &str = "1.56.0";

/// Builds the Collector once and returns the path of its binary.
pub fn ensure(tools: &Tools) -> Result<PathBuf> {
    let dir = crate::target_dir().join("tools/otelcol");
    let binary = dir.join(format!("otelcol-spanhook-{COLLECTOR_VERSION}"));
    if binary.is_file() {
        return Ok(binary);
    }
    fs::create_dir_all(&dir)?;
    let gobin = dir.join("bin");
    eprintln!("setup: building the OpenTelemetry Collector {COLLECTOR_VERSION} (about a minute)");
    let local = crate::go::local_version(&tools.go);
    let mut install = Command::new(&tools.go);
    install
        .args([
            "install",
            &format!("go.opentelemetry.io/collector/cmd/builder@v{COLLECTOR_VERSION}"),
        ])
        .env("GOBIN", &gobin)
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", local);
    cmd::output(&mut install).context("installing the Collector builder")?;
    let manifest = dir.join("manifest.yaml");
    let out = dir.join("build");
    fs::write(
        &manifest,
        format!(
            "dist:\n  name: otelcol-spanhook\n  description: OpenTelemetry Collector for spanhook tests\n  output_path: {out}\n\
receivers:\n  - gomod: go.opentelemetry.io/collector/receiver/otlpreceiver v{c}\n\
exporters:\n  - gomod: go.opentelemetry.io/collector/exporter/debugexporter v{c}\n  - gomod: go.opentelemetry.io/collector/exporter/otlphttpexporter v{c}\n\
providers:\n  - gomod: go.opentelemetry.io/collector/confmap/provider/envprovider v{p}\n  - gomod: go.opentelemetry.io/collector/confmap/provider/fileprovider v{p}\n  - gomod: go.opentelemetry.io/collector/confmap/provider/yamlprovider v{p}\n",
            out = out.display(),
            c = COLLECTOR_VERSION,
            p = PROVIDERS_VERSION,
        ),
    )?;
    let mut build = Command::new(gobin.join("builder"));
    build
        .arg("--config")
        .arg(&manifest)
        .env("GOFLAGS", "-mod=mod")
        .env("PATH", path_with_go(tools));
    cmd::output(&mut build).context("building the Collector")?;
    fs::rename(out.join("otelcol-spanhook"), &binary)?;
    Ok(binary)
}

/// PATH with the chosen `go` first, since the builder runs `go` by name.
fn path_with_go(tools: &Tools) -> std::ffi::OsString {
    let mut dirs = vec![tools.go.parent().map(PathBuf::from).unwrap_or_default()];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).unwrap_or_default()
}
