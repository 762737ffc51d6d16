//! Programs the socket-level tests trace, as users get them: nginx, CPython, curl (libcurl
//! with OpenSSL) and the `openssl` tool from Debian's packages, and Rust servers from
//! crates.io built the way their authors ship them — their own release profile, which strips
//! the symbols — so spanhook has nothing but their sockets to go on.
//!
//! Output: `target/fixtures/native/manifest.tsv` (name, path). Idempotent: present packages
//! and installed crates are not touched again.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{cmd, setup};

/// Debian packages and the file each provides: (name in the manifest, path, package).
const PACKAGES: &[(&str, &str, &str)] = &[
    ("nginx", "/usr/sbin/nginx", "nginx"),
    ("python3", "/usr/bin/python3", "python3"),
    ("curl", "/usr/bin/curl", "curl"),
    ("openssl", "/usr/bin/openssl", "openssl"),
    // `readelf` checks the shipped crates are stripped; the TLS tests read libssl with `nm`.
    ("nm", "/usr/bin/nm", "binutils"),
];

/// Crates installed with `cargo install --locked` and nothing overridden:
/// (name in the manifest, crate, version, binary).
const SHIPPED: &[(&str, &str, &str, &str)] = &[
    // A file server on hyper 1.x; its release profile has `strip = "symbols"`, fat LTO,
    // one codegen unit and `panic = "abort"`.
    ("dufs-shipped", "dufs", "0.47.0", "dufs"),
];

/// Where the manifest and the installed crates go.
pub fn out_dir() -> PathBuf {
    crate::fixtures::out_dir().join("native")
}

/// Installs what is missing and writes the manifest.
pub fn build() -> Result<PathBuf> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, path, _)| !Path::new(path).is_file())
        .map(|(_, _, package)| *package)
        .collect();
    if !missing.is_empty() {
        eprintln!("fixtures: installing {} from Debian", missing.join(", "));
        setup::apt_install(&missing)?;
    }
    let mut rows: Vec<(String, PathBuf)> = PACKAGES
        .iter()
        .map(|(name, path, _)| (name.to_string(), PathBuf::from(path)))
        .collect();
    for &(name, krate, version, binary) in SHIPPED {
        rows.push((name.to_string(), install_shipped(krate, version, binary)?));
    }
    let mut text = String::from("# name\tpath\n");
    for (name, path) in &rows {
        if !path.is_file() {
            bail!("{name}: {} is missing after installation", path.display());
        }
        text.push_str(&format!("{name}\t{}\n", path.display()));
    }
    fs::create_dir_all(out_dir())?;
    let manifest = out_dir().join("manifest.tsv");
    fs::write(&manifest, text)?;
    Ok(manifest)
}

/// `cargo install --locked` of `krate` with its own release profile; checks it is stripped.
fn install_shipped(krate: &str, version: &str, binary: &str) -> Result<PathBuf> {
    let root = out_dir().join(format!("{krate}-{version}"));
    let path = root.join("bin").join(binary);
    if !path.is_file() {
        eprintln!("fixtures: installing {krate} {version} from crates.io as its authors ship it");
        let mut c = Command::new("cargo");
        c.args(["install", "--locked", "--version", version, "--root"])
            .arg(&root)
            .arg(krate)
            .env("CARGO_TARGET_DIR", out_dir().join("cargo-target"))
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS");
        for (k, _) in std::env::vars() {
            if k.starts_with("CARGO_PROFILE_") {
                c.env_remove(k);
            }
        }
        cmd::output(&mut c).with_context(|| format!("installing {krate} {version}"))?;
    }
    let out = cmd::stdout(Command::new("readelf").arg("-S").arg(&path))?;
    if out.contains(".symtab") {
        bail!(
            "{} has a symbol table: {krate} {version} no longer ships stripped; pick a crate that does",
            path.display()
        );
    }
    Ok(path)
}
