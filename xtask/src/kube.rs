//! A real Kubernetes API server for the daemon's pod-metadata test (agent/tests/daemon_k8s.rs):
//! kube-apiserver built from the Go module proxy and etcd from Debian's `etcd-server` package,
//! run the way controller-runtime's envtest runs them. Both are cached under
//! `target/tools/kube`; a second run is a no-op.
//!
//! `go install k8s.io/kubernetes/cmd/kube-apiserver@vX` is refused because k8s.io/kubernetes
//! points its staging modules (k8s.io/api, k8s.io/apiserver, …) at local directories with
//! replace directives. A throwaway module requires k8s.io/kubernetes and replaces each of those
//! with the published staging release of the same version (v0.MINOR.PATCH), read from
//! k8s.io/kubernetes's own go.mod, and builds the command from there.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{cmd, setup::Tools};

/// The Kubernetes release whose kube-apiserver the test runs.
pub const KUBERNETES: &str = "1.37.2";

/// The binaries the test runs.
pub struct KubeTools {
    /// kube-apiserver.
    pub apiserver: PathBuf,
    /// etcd.
    pub etcd: PathBuf,
}

/// Builds or finds kube-apiserver and etcd.
pub fn ensure(tools: &Tools) -> Result<KubeTools> {
    let dir = crate::target_dir().join("tools/kube");
    fs::create_dir_all(&dir)?;
    Ok(KubeTools {
        apiserver: apiserver(tools, &dir)?,
        etcd: etcd(&dir)?,
    })
}

fn apiserver(tools: &Tools, dir: &Path) -> Result<PathBuf> {
    let binary = dir.join(format!("kube-apiserver-{KUBERNETES}"));
    if binary.is_file() {
        return Ok(binary);
    }
    eprintln!(
        "setup: building kube-apiserver {KUBERNETES} from the Go module proxy (several minutes)"
    );
    let started = std::time::Instant::now();
    let go = |args: &[&str], cwd: &Path| {
        let mut c = Command::new(&tools.go);
        c.args(args)
            .current_dir(cwd)
            .env("GOFLAGS", "-mod=mod")
            .env("GOTOOLCHAIN", "local");
        c
    };
    let module = format!("k8s.io/kubernetes@v{KUBERNETES}");
    let info = cmd::stdout(&mut go(&["mod", "download", "-json", &module], dir))
        .with_context(|| format!("downloading {module}"))?;
    let info: serde_json::Value =
        serde_json::from_str(&info).with_context(|| format!("go mod download -json {module}"))?;
    let gomod = info["GoMod"]
        .as_str()
        .with_context(|| format!("no GoMod in go mod download's answer for {module}"))?;
    let upstream = fs::read_to_string(gomod)
        .with_context(|| format!("reading {module}'s go.mod ({gomod})"))?;
    let staging = staging_version(KUBERNETES)?;
    let replaces = staging_modules(&upstream)
        .into_iter()
        .map(|m| format!("\t{m} => {m} {staging}\n"))
        .collect::<String>();
    if replaces.is_empty() {
        bail!("{module}'s go.mod has no staging replace directives: the recipe needs revisiting");
    }
    let work = dir.join("apiserver-module");
    fs::create_dir_all(&work)?;
    fs::write(
        work.join("go.mod"),
        format!(
            "module spanhook.local/kubeapiserver\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes v{KUBERNETES}\n\nreplace (\n{replaces})\n"
        ),
    )?;
    fs::write(
        work.join("tools.go"),
        "//go:build tools\n\npackage tools\n\nimport _ \"k8s.io/kubernetes/cmd/kube-apiserver\"\n",
    )?;
    cmd::output(&mut go(&["mod", "tidy"], &work)).context("go mod tidy for kube-apiserver")?;
    let partial = dir.join("kube-apiserver.partial");
    cmd::output(&mut go(
        &[
            "build",
            "-o",
            &partial.to_string_lossy(),
            "k8s.io/kubernetes/cmd/kube-apiserver",
        ],
        &work,
    ))
    .context("building kube-apiserver")?;
    fs::rename(&partial, &binary)?;
    eprintln!(
        "setup: kube-apiserver built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(binary)
}

/// k8s.io/kubernetes v1.X.Y publishes its staging modules as v0.X.Y.
fn staging_version(release: &str) -> Result<String> {
    let rest = release
        .strip_prefix("1.")
        .with_context(|| format!("Kubernetes release {release} is not 1.X.Y"))?;
    Ok(format!("v0.{rest}"))
}

/// The modules k8s.io/kubernetes's go.mod replaces with `./staging/…` directories.
fn staging_modules(gomod: &str) -> Vec<String> {
    gomod
        .lines()
        .filter_map(|l| {
            let (module, target) = l.split_once("=>")?;
            target.trim().starts_with("./staging/").then(|| {
                module
                    .trim()
                    .trim_start_matches("replace")
                    .trim()
                    .to_string()
            })
        })
        .collect()
}

/// etcd from Debian's `etcd-server` package, unpacked here rather than installed: nothing on
/// the machine changes and no service starts.
fn etcd(dir: &Path) -> Result<PathBuf> {
    let binary = dir.join("etcd");
    if binary.is_file() {
        return Ok(binary);
    }
    eprintln!("setup: fetching Debian's etcd-server package");
    let deb_dir = dir.join("etcd-deb");
    fs::create_dir_all(&deb_dir)?;
    cmd::output(
        Command::new("apt-get")
            .args(["download", "etcd-server"])
            .current_dir(&deb_dir),
    )
    .context("apt-get download etcd-server")?;
    let deb = fs::read_dir(&deb_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download etcd-server left no .deb")?;
    let unpacked = deb_dir.join("root");
    cmd::output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))
        .with_context(|| format!("unpacking {}", deb.display()))?;
    fs::copy(unpacked.join("usr/bin/etcd"), &binary)
        .with_context(|| format!("{} has no usr/bin/etcd", deb.display()))?;
    Ok(binary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_replaces_are_read_from_kubernetes_go_mod() {
        let gomod = "require (\n\tk8s.io/api v0.0.0\n)\n\nreplace (\n\tk8s.io/api => ./staging/src/k8s.io/api\n\tk8s.io/client-go => ./staging/src/k8s.io/client-go\n\tgithub.com/x/y => github.com/x/y v1.0.0\n)\n";
        assert_eq!(
            staging_modules(gomod),
            vec!["k8s.io/api".to_string(), "k8s.io/client-go".to_string()]
        );
        assert_eq!(staging_version("1.37.2").unwrap(), "v0.37.2");
        assert!(staging_version("2.0.0").is_err());
    }
}
