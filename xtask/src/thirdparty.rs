//! Programs nobody on the project wrote, installed from the Go module proxy for the tests:
//! real clients calling our fixtures, as users' own clients would.

use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result};

use crate::{cmd, setup::Tools};

/// grpcurl: a third-party gRPC client.
const GRPCURL: &str = "github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4";

/// Installs grpcurl once; returns its path.
pub fn grpcurl(tools: &Tools) -> Result<PathBuf> {
    let dir = crate::target_dir().join("tools/bin");
    let binary = dir.join("grpcurl");
    if binary.is_file() {
        return Ok(binary);
    }
    eprintln!("setup: installing {GRPCURL} from the Go module proxy");
    cmd::output(
        Command::new(&tools.go)
            .args(["install", GRPCURL])
            .env("GOBIN", &dir)
            .env("GOFLAGS", "-mod=mod")
            .env("GOTOOLCHAIN", "local"),
    )
    .context("installing grpcurl")?;
    Ok(binary)
}
