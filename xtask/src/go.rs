//! The Go toolchain: the machine's `go`, or one fetched from the module proxy, and builds with
//! any Go release through `GOTOOLCHAIN`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::cmd;

/// The Go release installed when the machine has no usable `go` (1.21+ is needed so that
/// `GOTOOLCHAIN` can fetch the fixture matrix's releases).
const FALLBACK_GO: &str = "1.26.8";

/// Returns a `go` command of version 1.21 or later, installing one when needed.
pub fn ensure() -> Result<PathBuf> {
    for candidate in [
        PathBuf::from("go"),
        PathBuf::from("/usr/local/go/bin/go"),
        local_go(),
    ] {
        if let Some((1, minor)) = version_of(&candidate) {
            if minor >= 21 {
                return Ok(candidate);
            }
        }
    }
    install_from_proxy()?;
    Ok(local_go())
}

fn local_go() -> PathBuf {
    crate::target_dir().join("tools/go/bin/go")
}

fn version_of(go: &Path) -> Option<(u32, u32)> {
    let out = Command::new(go)
        .arg("env")
        .arg("GOVERSION")
        .env("GOTOOLCHAIN", "local")
        .output()
        .ok()?;
    let v = String::from_utf8_lossy(&out.stdout);
    let v = v.trim().strip_prefix("go")?;
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Downloads a Go release from the module proxy, which serves every release as the module
/// `golang.org/toolchain` — the same route `GOTOOLCHAIN` uses.
fn install_from_proxy() -> Result<()> {
    let proxy = std::env::var("GOPROXY")
        .ok()
        .and_then(|p| {
            p.split([',', '|'])
                .find(|s| s.starts_with("http"))
                .map(str::to_string)
        })
        .unwrap_or_else(|| "https://proxy.golang.org".to_string());
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => bail!("no Go release for {other}"),
    };
    let tools = crate::target_dir().join("tools");
    std::fs::create_dir_all(&tools)?;
    let zip = tools.join("go.zip");
    let url = format!(
        "{}/golang.org/toolchain/@v/v0.0.1-go{FALLBACK_GO}.linux-{arch}.zip",
        proxy.trim_end_matches('/')
    );
    eprintln!("setup: no Go 1.21+ found; fetching go{FALLBACK_GO} from {url}");
    cmd::run(
        Command::new("curl")
            .args(["-fsSL", "-o"])
            .arg(&zip)
            .arg(&url),
    )?;
    let unpack = tools.join("go-unpack");
    let _ = std::fs::remove_dir_all(&unpack);
    std::fs::create_dir_all(&unpack)?;
    if !cmd::on_path("unzip") {
        crate::setup::apt_install(&["unzip"])?;
    }
    cmd::run(
        Command::new("unzip")
            .arg("-q")
            .arg(&zip)
            .arg("-d")
            .arg(&unpack),
    )?;
    // The archive holds golang.org/toolchain@v0.0.1-go…/ with the usual GOROOT inside.
    let root = std::fs::read_dir(&unpack)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.join("bin/go").is_file())
        .or_else(|| {
            std::fs::read_dir(unpack.join("golang.org"))
                .ok()?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .find(|p| p.join("bin/go").is_file())
        })
        .context("the Go archive has no bin/go")?;
    let dest = tools.join("go");
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&root, &dest)?;
    let bin = dest.join("bin/go");
    let mut perms = std::fs::metadata(&bin)?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&bin, perms)?;
    Ok(())
}

/// A `go` command that runs release `version` (e.g. "1.22.12") through `GOTOOLCHAIN`.
pub fn command(go: &Path, version: &str) -> Command {
    let mut cmd = Command::new(go);
    cmd.env("GOTOOLCHAIN", format!("go{version}"))
        // Go 1.17 rejects the -buildvcs flag some machines export; -mod=mod is accepted by all.
        .env("GOFLAGS", "-mod=mod")
        .env_remove("GOARCH")
        .env_remove("GOOS");
    cmd
}

/// `GOTOOLCHAIN` value that pins `go`'s own release, so a build never switches toolchains.
pub fn local_version(_go: &Path) -> &'static str {
    "local"
}
