//! Builds the Rust fixture programs under `fixtures/rust/` from crates.io, in every pinned
//! dependency set × build profile, and installs third-party programs with their symbols kept.
//!
//! A program is a cargo project of its own (its own `[workspace]`, lockfile committed).
//! Besides its own `Cargo.toml`/`Cargo.lock` (the set `newest`), `sets/<name>.toml` and
//! `sets/<name>.lock` pin other dependency sets (e.g. the oldest hyper 1.x minor). Each set is
//! built with the profiles the program's manifest defines:
//!
//! * `release` — the default release build (symbols kept);
//! * `lto` — fat LTO, one codegen unit, `panic = "abort"`;
//! * `stripped` — `strip = "symbols"`.
//!
//! `release` is always built; `lto` and `stripped` only when the manifest defines them.
//!
//! Output: `target/fixtures/rust/<program>/<set>/<profile>/<program>` and `manifest.tsv`
//! (program, set, profile, path). A stamp of the inputs beside each binary skips unchanged
//! builds, so a warm run takes seconds.

use std::{
    collections::hash_map::DefaultHasher,
    fs,
    hash::{Hash, Hasher},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use crate::cmd;

/// Profiles every program is built with.
pub const PROFILES: &[&str] = &["release", "lto", "stripped"];

/// Programs from crates.io that nobody on the project wrote: (label, crate, version, binary).
/// Built with `cargo install --locked`, symbols kept.
pub const THIRD_PARTY: &[(&str, &str, &str, &str)] = &[
    // A static file server on hyper 1.x.
    ("dufs", "dufs", "0.47.0", "dufs"),
    // An HTTP client (reqwest on hyper 1.x).
    ("xh", "xh", "0.26.3", "xh"),
];

/// One built binary.
#[derive(Debug)]
pub struct Built {
    /// The program.
    pub program: String,
    /// The dependency set (`newest`, or a `sets/` name; `thirdparty` for installed programs).
    pub set: String,
    /// The profile.
    pub profile: String,
    /// Where it is.
    pub path: PathBuf,
}

fn out_dir() -> PathBuf {
    crate::fixtures::out_dir().join("rust")
}

/// Builds every Rust fixture (and the third-party programs) and writes the manifest.
pub fn build() -> Result<Vec<Built>> {
    let src_root = crate::root().join("fixtures/rust");
    let mut programs: Vec<PathBuf> = fs::read_dir(&src_root)
        .with_context(|| format!("reading {}", src_root.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    programs.sort();
    let mut built = Vec::new();
    for dir in &programs {
        let program = dir.file_name().unwrap().to_string_lossy().into_owned();
        for (set, manifest, lock) in sets(dir)? {
            for profile in profiles_of(&manifest)? {
                let path = build_one(dir, &program, &set, &manifest, &lock, profile)?;
                built.push(Built {
                    program: program.clone(),
                    set: set.clone(),
                    profile: profile.to_string(),
                    path,
                });
            }
        }
    }
    for &(label, krate, version, binary) in THIRD_PARTY {
        let path = install_third_party(label, krate, version, binary)?;
        built.push(Built {
            program: label.to_string(),
            set: format!("{krate}-{version}"),
            profile: "thirdparty".to_string(),
            path,
        });
    }
    write_manifest(&built)?;
    Ok(built)
}

/// The profiles of [`PROFILES`] a manifest builds: `release` always, the others when the
/// manifest defines them (`[profile.lto]`, `[profile.stripped]`).
fn profiles_of(manifest: &Path) -> Result<Vec<&'static str>> {
    let text =
        fs::read_to_string(manifest).with_context(|| format!("reading {}", manifest.display()))?;
    Ok(PROFILES
        .iter()
        .copied()
        .filter(|p| *p == "release" || text.contains(&format!("[profile.{p}]")))
        .collect())
}

/// Builds one program with its own (newest) dependencies in the default release profile: what
/// the demo runs, without the rest of the matrix.
pub fn build_release(program: &str) -> Result<PathBuf> {
    let dir = crate::root().join("fixtures/rust").join(program);
    build_one(
        &dir,
        program,
        "newest",
        &dir.join("Cargo.toml"),
        &dir.join("Cargo.lock"),
        "release",
    )
}

/// The dependency sets of a program: `newest` (its own files) and each `sets/NAME.toml`.
fn sets(dir: &Path) -> Result<Vec<(String, PathBuf, PathBuf)>> {
    let mut out = vec![(
        "newest".to_string(),
        dir.join("Cargo.toml"),
        dir.join("Cargo.lock"),
    )];
    let sets_dir = dir.join("sets");
    if sets_dir.is_dir() {
        let mut extra: Vec<_> = fs::read_dir(&sets_dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        extra.sort();
        for manifest in extra {
            let name = manifest.file_stem().unwrap().to_string_lossy().into_owned();
            let lock = manifest.with_extension("lock");
            out.push((name, manifest, lock));
        }
    }
    Ok(out)
}

fn source_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let src = dir.join("src");
    for e in fs::read_dir(&src).with_context(|| format!("reading {}", src.display()))? {
        let p = e?.path();
        if p.extension().is_some_and(|e| e == "rs") {
            files.push(p);
        }
    }
    if dir.join("build.rs").is_file() {
        files.push(dir.join("build.rs"));
    }
    let proto = dir.join("proto");
    if proto.is_dir() {
        for e in fs::read_dir(&proto)? {
            files.push(e?.path());
        }
    }
    files.sort();
    Ok(files)
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for e in fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &target)?;
        } else {
            fs::copy(e.path(), &target)?;
        }
    }
    Ok(())
}

fn build_one(
    dir: &Path,
    program: &str,
    set: &str,
    manifest: &Path,
    lock: &Path,
    profile: &str,
) -> Result<PathBuf> {
    let out = out_dir()
        .join(program)
        .join(set)
        .join(profile)
        .join(program);
    let mut hasher = DefaultHasher::new();
    let mut inputs = source_files(dir)?;
    inputs.push(manifest.to_path_buf());
    inputs.push(lock.to_path_buf());
    for f in &inputs {
        f.strip_prefix(dir).unwrap_or(f).hash(&mut hasher);
        fs::read(f)
            .with_context(|| format!("reading {}", f.display()))?
            .hash(&mut hasher);
    }
    (profile, 1u32).hash(&mut hasher);
    let stamp_value = format!("{:016x}", hasher.finish());
    let stamp = out.with_extension("stamp");
    if out.is_file() && fs::read_to_string(&stamp).ok().as_deref() == Some(stamp_value.as_str()) {
        return Ok(out);
    }
    eprintln!("fixtures: building Rust {program} ({set}, {profile})");
    // Each set builds in its own copy of the project, so sets never share a lockfile.
    let work = out_dir().join("build").join(format!("{program}-{set}"));
    let _ = fs::remove_dir_all(work.join("src"));
    copy_tree(&dir.join("src"), &work.join("src"))?;
    if dir.join("proto").is_dir() {
        copy_tree(&dir.join("proto"), &work.join("proto"))?;
    }
    if dir.join("build.rs").is_file() {
        fs::copy(dir.join("build.rs"), work.join("build.rs"))?;
    }
    fs::copy(manifest, work.join("Cargo.toml"))?;
    fs::copy(lock, work.join("Cargo.lock"))
        .with_context(|| format!("{} has no lockfile {}", program, lock.display()))?;
    let target_dir = out_dir()
        .join("cargo-target")
        .join(format!("{program}-{set}"));
    let mut c = Command::new("cargo");
    c.current_dir(&work)
        .args(["build", "--locked", "--profile", profile, "--target-dir"])
        .arg(&target_dir)
        // The fixtures are built with the machine's stable toolchain, whatever the caller's.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET");
    cmd::output(&mut c)
        .with_context(|| format!("building Rust fixture {program} ({set}, {profile})"))?;
    let built = target_dir.join(profile).join(program);
    fs::create_dir_all(out.parent().unwrap())?;
    fs::copy(&built, &out).with_context(|| format!("copying {}", built.display()))?;
    fs::write(&stamp, stamp_value)?;
    Ok(out)
}

/// `cargo install`s a program from crates.io with its symbols kept.
fn install_third_party(label: &str, krate: &str, version: &str, binary: &str) -> Result<PathBuf> {
    let root = out_dir()
        .join("thirdparty")
        .join(format!("{label}-{version}"));
    let path = root.join("bin").join(binary);
    if path.is_file() {
        return Ok(path);
    }
    eprintln!("fixtures: installing {krate} {version} from crates.io (symbols kept)");
    let mut c = Command::new("cargo");
    c.args(["install", "--locked", "--version", version, "--root"])
        .arg(&root)
        .arg(krate)
        .env(
            "CARGO_TARGET_DIR",
            out_dir().join("cargo-target").join(label),
        )
        // Release builds keep their symbol table unless the crate strips it: keep it.
        .env("CARGO_PROFILE_RELEASE_STRIP", "false")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    cmd::output(&mut c).with_context(|| format!("installing {krate} {version}"))?;
    Ok(path)
}

fn write_manifest(built: &[Built]) -> Result<()> {
    let path = out_dir().join("manifest.tsv");
    let mut text = String::from("# program\tset\tprofile\tpath\n");
    for b in built {
        text.push_str(&format!(
            "{}\t{}\t{}\t{}\n",
            b.program,
            b.set,
            b.profile,
            b.path.display()
        ));
    }
    fs::create_dir_all(out_dir())?;
    fs::write(&path, text)?;
    Ok(())
}
