//! `cargo xtask offsets`: generate the struct-field offsets table the agent uses for binaries
//! without DWARF.
//!
//! Standard-library fields come from the `httpserver` fixture built with DWARF by every Go
//! release of the matrix; grpc-go fields from a small program built against the newest patch
//! of every grpc-go minor release (resolved through the module proxy). The agent's own DWARF
//! reader reads each field the probes use; consecutive releases with the same offset become
//! one range, and the newest range is left open so a release newer than the table is assumed
//! to keep the newest layout (the agent warns when it does).
//!
//! The integration test `offsets_table` checks the committed table against the DWARF of every
//! build the test matrix makes, so a stale table fails CI without rebuilding all of this.

use std::{
    collections::{hash_map::DefaultHasher, BTreeMap},
    fs,
    hash::{Hash, Hasher},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use spanhook::inspect::{dwarf, elf::ElfFile, golang};
use spanhook_common::GoField;

use crate::{cmd, fixtures, go, setup::Tools};

/// The newest patch of every grpc-go minor release the table covers.
pub const GRPC_RELEASES: &[&str] = &[
    "v1.40.1", "v1.41.0", "v1.42.0", "v1.43.0", "v1.44.0", "v1.45.0", "v1.46.2", "v1.47.0",
    "v1.48.0", "v1.49.0", "v1.50.1", "v1.51.0", "v1.52.3", "v1.53.0", "v1.54.1", "v1.55.1",
    "v1.56.3", "v1.57.2", "v1.58.3", "v1.59.0", "v1.60.1", "v1.61.1", "v1.62.1", "v1.63.2",
    "v1.64.1", "v1.65.1", "v1.66.2", "v1.67.3", "v1.68.1", "v1.69.4", "v1.70.0", "v1.71.1",
    "v1.72.2", "v1.73.0", "v1.74.3", "v1.75.1", "v1.76.0", "v1.77.0", "v1.78.0", "v1.79.3",
    "v1.80.0", "v1.81.1", "v1.82.1", "v1.83.2", "v1.84.0", "v1.85.0",
];

const GRPC: &str = "google.golang.org/grpc";

/// Options.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Compare with the committed table instead of writing it; fail when they differ.
    #[arg(long)]
    pub check: bool,
}

/// The committed table.
pub fn table_path() -> PathBuf {
    crate::root().join("agent/src/plan/go_offsets.tsv")
}

type Version = (u32, u32, u32);
type Seen = BTreeMap<(String, String, String), BTreeMap<Version, Option<u64>>>;

fn parse_version(s: &str) -> Option<Version> {
    let mut parts = s.trim_start_matches(['v', 'g', 'o']).split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    Some((major, minor, patch))
}

/// Reads `module`'s fields from the DWARF of `binary` into `seen` under `version`.
fn read_fields(binary: &Path, module: &str, version: Version, seen: &mut Seen) -> Result<()> {
    let fields: Vec<&GoField> = GoField::ALL
        .iter()
        .filter(|f| f.module() == module)
        .collect();
    let wanted: Vec<(&str, &str)> = fields
        .iter()
        .map(|f| (f.type_name(), f.field_name()))
        .collect();
    let elf = ElfFile::open(binary).with_context(|| format!("opening {}", binary.display()))?;
    let found = dwarf::struct_field_offsets(&elf, &wanted)
        .with_context(|| format!("reading DWARF of {}", binary.display()))?;
    for f in fields {
        let key = (
            module.to_string(),
            f.type_name().to_string(),
            f.field_name().to_string(),
        );
        let off = found
            .get(&(f.type_name().to_string(), f.field_name().to_string()))
            .copied();
        seen.entry(key).or_default().insert(version, off);
    }
    Ok(())
}

/// Generates (or checks) the table.
pub fn run(tools: &Tools, args: &Args) -> Result<()> {
    let built = fixtures::build(
        tools,
        &fixtures::Args {
            variant: vec!["plain".into()],
            program: vec!["httpserver".into()],
            ..Default::default()
        },
    )?;
    let mut seen = Seen::new();
    for b in &built {
        let elf = ElfFile::open(&b.path)?;
        let go = golang::analyze(&elf)?
            .with_context(|| format!("{} is not a Go binary", b.path.display()))?;
        let version = (go.version.major, go.version.minor, go.version.patch);
        read_fields(&b.path, "std", version, &mut seen)?;
    }
    let newest_go = built
        .iter()
        .filter_map(|b| parse_version(&b.go))
        .max()
        .context("no fixture built")?;
    for release in GRPC_RELEASES {
        let binary = grpc_program(tools, release)?;
        read_fields(&binary, GRPC, parse_version(release).unwrap(), &mut seen)?;
    }
    let newest_grpc = parse_version(GRPC_RELEASES.last().unwrap()).unwrap();
    let text = render(&seen, &[("std", newest_go), (GRPC, newest_grpc)]);
    let path = table_path();
    if args.check {
        let committed = fs::read_to_string(&path).unwrap_or_default();
        if committed != text {
            bail!(
                "{} differs from what `cargo xtask offsets` generates; run it and commit the result",
                path.display()
            );
        }
        eprintln!("offsets: {} matches the builds", path.display());
    } else {
        fs::write(&path, text)?;
        eprintln!("offsets: wrote {}", path.display());
    }
    Ok(())
}

/// Builds the grpcchain fixture's program with DWARF against grpc-go `release` (dependencies
/// resolved by the module proxy), cached under target/.
fn grpc_program(tools: &Tools, release: &str) -> Result<PathBuf> {
    let newest = fixtures::GO_RELEASES.last().unwrap();
    let source = crate::root().join("fixtures/go/grpcchain/main.go");
    let dir = fixtures::out_dir()
        .join("src")
        .join(format!("offsets-grpc-{release}"));
    let binary = dir.join("grpcchain");
    let main = fs::read(&source)?;
    let mut hasher = DefaultHasher::new();
    (&main, release, newest).hash(&mut hasher);
    let stamp_value = format!("{:016x}", hasher.finish());
    let stamp = dir.join("stamp");
    if binary.is_file() && fs::read_to_string(&stamp).ok().as_deref() == Some(stamp_value.as_str())
    {
        return Ok(binary);
    }
    fs::create_dir_all(&dir)?;
    eprintln!("offsets: building against grpc-go {release}");
    fs::write(dir.join("main.go"), &main)?;
    fs::write(
        dir.join("go.mod"),
        "module spanhook.dev/offsets/grpc\n\ngo 1.21\n",
    )?;
    let _ = fs::remove_file(dir.join("go.sum"));
    let go = |args: &[&str]| -> Result<()> {
        let mut c = go::command(&tools.go, newest);
        c.current_dir(&dir).args(args).env("CGO_ENABLED", "0");
        cmd::output(&mut c).map(|_| ())
    };
    go(&["get", &format!("google.golang.org/grpc@{release}")])?;
    go(&["mod", "tidy"])?;
    go(&["build", "-buildvcs=false", "-o", "grpcchain", "."])
        .with_context(|| format!("building against grpc-go {release}"))?;
    fs::write(&stamp, stamp_value)?;
    Ok(binary)
}

/// Merges per-release offsets into ranges of minor releases.
fn render(seen: &Seen, newest: &[(&str, Version)]) -> String {
    let mut out = String::from(
        "# Struct-field offsets for Go binaries without DWARF.\n\
         # Generated by `cargo xtask offsets` from real builds; do not edit by hand.\n\
         # A range names minor releases (of Go for std, of the module otherwise), both ends\n\
         # included; an open end means \"and later\".\n\
         # @newest: the newest release built; the agent warns about binaries newer than that.\n\
         # module\ttype\tfield\trange\toffset\n",
    );
    for (module, v) in newest {
        out.push_str(&format!("@newest\t{module}\t{}.{}.{}\n", v.0, v.1, v.2));
    }
    for ((module, ty, field), by_version) in seen {
        let versions: Vec<(&Version, &Option<u64>)> = by_version.iter().collect();
        let mut i = 0;
        while i < versions.len() {
            let (start, off) = versions[i];
            let mut j = i;
            while j + 1 < versions.len() && versions[j + 1].1 == off {
                j += 1;
            }
            if let Some(off) = off {
                let from = format!("{}.{}", start.0, start.1);
                let to = if j + 1 == versions.len() {
                    String::new()
                } else {
                    format!("{}.{}", versions[j].0 .0, versions[j].0 .1)
                };
                out.push_str(&format!("{module}\t{ty}\t{field}\t{from}-{to}\t{off}\n"));
            }
            i = j + 1;
        }
    }
    out
}
