//! `cargo xtask test`: the whole suite, set-up included.
//!
//! Installs the toolchains, builds the fixtures and the Collector, then runs every unit test
//! and the kernel tests. The kernel tests attach real uprobes, so this must run as root; it
//! refuses to start otherwise rather than let those tests fail one by one.

use std::process::Command;

use anyhow::{bail, Result};

use crate::{cmd, collector, fixtures, setup};

/// Options for the test run.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only these Go releases in the fixture matrix (default: all).
    #[arg(long, value_delimiter = ',')]
    pub go: Vec<String>,
    /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
    #[arg(last = true)]
    pub cargo_args: Vec<String>,
}

/// Runs the suite.
pub fn run(args: &Args) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the kernel tests load eBPF programs and attach uprobes: run `cargo xtask test` as root");
    }
    let tools = setup::run()?;
    fixtures::build(
        &tools,
        &fixtures::Args {
            go: args.go.clone(),
            ..Default::default()
        },
    )?;
    crate::fixtures_rust::build()?;
    crate::fixtures_native::build()?;
    let otelcol = collector::ensure(&tools)?;
    let grpcurl = crate::thirdparty::grpcurl(&tools)?;
    let kube = crate::kube::ensure(&tools)?;
    // The kernel tests drive the agent users run, the release build: the debug build spends
    // about 20 µs per span against 3, and on a loaded machine it fell behind a test's
    // thousands of requests a second until the ring buffer overflowed.
    let spanhook = crate::release_agent()?;
    let cargo_test = || {
        let mut test = Command::new("cargo");
        test.current_dir(crate::root())
            .args(["test", "--locked", "--no-fail-fast"])
            .env("SPANHOOK_BIN", &spanhook)
            .env("SPANHOOK_FIXTURES", fixtures::out_dir())
            .env("SPANHOOK_OTELCOL", &otelcol)
            .env("SPANHOOK_GRPCURL", &grpcurl)
            .env("SPANHOOK_KUBE_APISERVER", &kube.apiserver)
            .env("SPANHOOK_ETCD", &kube.etcd);
        test
    };
    let mut test = cargo_test();
    if !args.cargo_args.is_empty() {
        test.args(&args.cargo_args);
    }
    cmd::run(&mut test)?;
    if args.cargo_args.is_empty() {
        // The agent attaches `uprobe_multi` links where the kernel has them (6.6+) and
        // perf-event uprobes elsewhere; this kernel has them, so the other path is forced here
        // for the tests of attaching, detaching and a traced server.
        let mut perf = cargo_test();
        perf.args(["--test", "attach_lifecycle", "--test", "target_churn"])
            .args(["--test", "go_http_server"])
            .env("SPANHOOK_UPROBES", "perf");
        cmd::run(&mut perf)?;
    }
    // The deployment files with the real validators (Helm, Kubernetes schemas, hadolint,
    // systemd-analyze): seconds once their tools are installed.
    crate::deploy::run()?;
    crate::fuzz::bounded(crate::fuzz::TEST_SECONDS)
}
