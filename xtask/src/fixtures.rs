//! Builds the Go fixture programs under `fixtures/go/` with every Go release and build shape
//! users ship: stripped or not, PIE, cgo with the external linker, arm64.
//!
//! Output: `target/fixtures/go/<program>/go<version>/<variant>/<program>` plus `manifest.json` listing
//! every binary with its facts, which the tests read. A stamp beside each binary records the
//! inputs, so an unchanged fixture is not rebuilt.

use std::{
    collections::hash_map::DefaultHasher,
    fs,
    hash::{Hash, Hasher},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use crate::{cmd, go, setup::Tools};

/// The newest patch of every Go minor release from 1.17 (the first with the register ABI on
/// amd64) to the newest.
pub const GO_RELEASES: &[&str] = &[
    "1.17.13", "1.18.10", "1.19.13", "1.20.14", "1.21.13", "1.22.12", "1.23.12", "1.24.13",
    "1.25.14", "1.26.11", "1.27.4",
];

/// A build shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// Default `go build`: symbols and DWARF, static, non-PIE.
    Plain,
    /// `-ldflags=-s -w`: no symbol table, no DWARF — what production images ship.
    Stripped,
    /// `-buildmode=pie`, stripped.
    Pie,
    /// cgo with the external linker, stripped.
    Cgo,
    /// PIE through the external linker (cgo), stripped: no `.gopclntab` section at all.
    CgoPie,
    /// arm64 cross-build with symbols (for the analysis tests; it cannot run here).
    Arm64,
    /// arm64 cross-build, stripped.
    Arm64Stripped,
}

impl Variant {
    /// All variants.
    pub const ALL: &'static [Variant] = &[
        Variant::Plain,
        Variant::Stripped,
        Variant::Pie,
        Variant::Cgo,
        Variant::CgoPie,
        Variant::Arm64,
        Variant::Arm64Stripped,
    ];

    fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::Stripped => "stripped",
            Variant::Pie => "pie",
            Variant::Cgo => "cgo",
            Variant::CgoPie => "cgo-pie",
            Variant::Arm64 => "arm64",
            Variant::Arm64Stripped => "arm64-stripped",
        }
    }

    fn parse(s: &str) -> Option<Variant> {
        Variant::ALL.iter().copied().find(|v| v.name() == s)
    }

    fn arch(self) -> &'static str {
        match self {
            Variant::Arm64 | Variant::Arm64Stripped => "arm64",
            _ => "amd64",
        }
    }

    fn stripped(self) -> bool {
        !matches!(self, Variant::Plain | Variant::Arm64)
    }
}

/// Which fixtures to build.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Args {
    /// Go releases (e.g. 1.22.12), comma-separated; default: every release in the matrix.
    #[arg(long, value_delimiter = ',')]
    pub go: Vec<String>,
    /// Variants (plain, stripped, pie, cgo, arm64, arm64-stripped); default: all.
    #[arg(long, value_delimiter = ',')]
    pub variant: Vec<String>,
    /// Fixture programs (directories of fixtures/go); default: all.
    #[arg(long, value_delimiter = ',')]
    pub program: Vec<String>,
}

/// One built binary, as listed in the manifest.
#[derive(Debug)]
pub struct Built {
    pub program: String,
    pub go: String,
    variant: Variant,
    pub path: PathBuf,
}

/// Directory holding the built fixtures.
pub fn out_dir() -> PathBuf {
    crate::target_dir().join("fixtures")
}

/// Builds the selected fixtures and writes the manifest; returns what was built.
pub fn build(tools: &Tools, args: &Args) -> Result<Vec<Built>> {
    let releases: Vec<String> = if args.go.is_empty() {
        GO_RELEASES.iter().map(|s| s.to_string()).collect()
    } else {
        args.go.clone()
    };
    let variants: Vec<Variant> = if args.variant.is_empty() {
        Variant::ALL.to_vec()
    } else {
        args.variant
            .iter()
            .map(|v| Variant::parse(v).with_context(|| format!("unknown variant {v}")))
            .collect::<Result<_>>()?
    };
    let src_root = crate::root().join("fixtures/go");
    let mut dirs: Vec<String> = fs::read_dir(&src_root)
        .with_context(|| format!("reading {}", src_root.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("go.mod").is_file() || e.path().join("modules").is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut built = Vec::new();
    for dir in &dirs {
        let matrix = Matrix::read(&src_root.join(dir))?;
        for (program, source) in units(&src_root.join(dir), dir)? {
            if !(args.program.is_empty()
                || args.program.contains(dir)
                || args.program.contains(&program))
            {
                continue;
            }
            for release in releases.iter().filter(|r| matrix.wants_release(r)) {
                for &variant in variants.iter().filter(|v| matrix.wants_variant(**v)) {
                    let path = build_one(tools, &source, &program, release, variant)?;
                    built.push(Built {
                        program: program.clone(),
                        go: release.clone(),
                        variant,
                        path,
                    });
                }
            }
        }
    }
    write_manifest(&built)?;
    Ok(built)
}

/// The programs a fixture directory yields, with the directory to build each from. A directory
/// with `modules/NAME.mod` (and `NAME.sum`) files is built once per module set — e.g. one
/// program per grpc-go release — from a copy of its sources staged under target/.
fn units(dir: &Path, name: &str) -> Result<Vec<(String, PathBuf)>> {
    let modules = dir.join("modules");
    if !modules.is_dir() {
        return Ok(vec![(name.to_string(), dir.to_path_buf())]);
    }
    let mut sets: Vec<String> = fs::read_dir(&modules)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".mod")
                .map(str::to_string)
        })
        .collect();
    sets.sort();
    let mut out = Vec::new();
    for set in sets {
        let program = format!("{name}-{set}");
        let staged = out_dir().join("src").join(&program);
        fs::create_dir_all(&staged)?;
        for f in sources(dir)? {
            let file_name = f.file_name().unwrap().to_owned();
            if f.extension().is_some_and(|e| e == "go") {
                write_if_changed(&staged.join(file_name), &fs::read(&f)?)?;
            }
        }
        write_if_changed(
            &staged.join("go.mod"),
            &fs::read(modules.join(format!("{set}.mod")))?,
        )?;
        let sum = modules.join(format!("{set}.sum"));
        if sum.is_file() {
            write_if_changed(&staged.join("go.sum"), &fs::read(sum)?)?;
        }
        out.push((program, staged));
    }
    Ok(out)
}

fn write_if_changed(path: &Path, data: &[u8]) -> Result<()> {
    if fs::read(path).ok().as_deref() != Some(data) {
        fs::write(path, data)?;
    }
    Ok(())
}

/// A fixture's own limits on the matrix, from an optional `matrix` file beside its source:
/// `go newest` or `go 1.22.12 1.23.12`, and `variants stripped plain`.
#[derive(Default)]
struct Matrix {
    releases: Option<Vec<String>>,
    variants: Option<Vec<String>>,
}

impl Matrix {
    fn read(dir: &Path) -> Result<Self> {
        let mut m = Matrix::default();
        let Ok(text) = fs::read_to_string(dir.join("matrix")) else {
            return Ok(m);
        };
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let mut words = line.split_whitespace();
            let key = words.next().unwrap_or_default();
            let values: Vec<String> = words
                .map(|w| {
                    if w == "newest" {
                        GO_RELEASES.last().unwrap().to_string()
                    } else {
                        w.to_string()
                    }
                })
                .collect();
            match key {
                "go" => m.releases = Some(values),
                "variants" => m.variants = Some(values),
                other => anyhow::bail!("{}: unknown matrix key {other}", dir.display()),
            }
        }
        Ok(m)
    }

    fn wants_release(&self, release: &str) -> bool {
        self.releases
            .as_ref()
            .is_none_or(|r| r.iter().any(|x| x == release))
    }

    fn wants_variant(&self, variant: Variant) -> bool {
        self.variants
            .as_ref()
            .is_none_or(|v| v.iter().any(|x| x == variant.name()))
    }
}

fn sources(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name.ends_with(".go") && !name.ends_with("_test.go"))
                || name == "go.mod"
                || name == "go.sum"
        })
        .collect();
    files.sort();
    Ok(files)
}

fn build_one(
    tools: &Tools,
    dir: &Path,
    program: &str,
    release: &str,
    variant: Variant,
) -> Result<PathBuf> {
    let out = out_dir()
        .join("go")
        .join(program)
        .join(format!("go{release}"))
        .join(variant.name())
        // The file keeps the program's name: it becomes the traced service's default name.
        .join(program);
    let files = sources(dir)?;
    let mut hasher = DefaultHasher::new();
    for f in &files {
        f.file_name().hash(&mut hasher);
        fs::read(f)?.hash(&mut hasher);
    }
    (release, variant.name(), 4u32).hash(&mut hasher);
    let stamp_value = format!("{:016x}", hasher.finish());
    let stamp = out.with_extension("stamp");
    if out.is_file() && fs::read_to_string(&stamp).ok().as_deref() == Some(stamp_value.as_str()) {
        return Ok(out);
    }
    fs::create_dir_all(out.parent().unwrap())?;
    eprintln!(
        "fixtures: building {program} with go{release} ({})",
        variant.name()
    );
    let mut c = go::command(&tools.go, release);
    c.current_dir(dir).arg("build").arg("-o").arg(&out);
    let mut ldflags = Vec::new();
    if variant.stripped() {
        ldflags.push("-s -w".to_string());
    }
    match variant {
        Variant::Pie => {
            c.arg("-buildmode=pie");
        }
        Variant::Cgo => {
            ldflags.push("-linkmode=external".to_string());
            c.env("CGO_ENABLED", "1");
        }
        Variant::CgoPie => {
            c.arg("-buildmode=pie");
            ldflags.push("-linkmode=external".to_string());
            c.env("CGO_ENABLED", "1");
        }
        _ => {
            c.env("CGO_ENABLED", "0");
        }
    }
    if !ldflags.is_empty() {
        c.arg(format!("-ldflags={}", ldflags.join(" ")));
    }
    c.env("GOARCH", variant.arch()).env("GOOS", "linux");
    // Go 1.17–1.19 cannot `go build .` here, so they get the file names (and record the main
    // module as "command-line-arguments"); later releases build the package and record its
    // module path, as production builds do.
    let minor: u32 = release
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if minor >= 18 {
        // Reproducible builds: no VCS stamp (Go 1.17 does not know the flag).
        c.arg("-buildvcs=false");
    }
    if minor >= 20 {
        c.arg(".");
    } else {
        for f in files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "go"))
        {
            c.arg(f.file_name().unwrap());
        }
    }
    cmd::output(&mut c).with_context(|| format!("building fixture {program} with go{release}"))?;
    fs::write(&stamp, stamp_value)?;
    Ok(out)
}

fn write_manifest(built: &[Built]) -> Result<()> {
    // Merge with what other invocations built, so the manifest lists everything on disk.
    let path = out_dir().join("go/manifest.tsv");
    let mut lines: Vec<String> = fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    for b in built {
        let line = format!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            b.program,
            b.go,
            b.variant.name(),
            b.variant.arch(),
            b.variant.stripped(),
            b.path.display()
        );
        let key = format!("{}\t{}\t{}\t", b.program, b.go, b.variant.name());
        lines.retain(|l| !l.starts_with(&key));
        lines.push(line);
    }
    lines.retain(|l| l.split('\t').nth(5).is_some_and(|p| Path::new(p).is_file()));
    lines.sort();
    let mut text = String::from("# program\tgo\tvariant\tarch\tstripped\tpath\n");
    for l in lines {
        text.push_str(&l);
        text.push('\n');
    }
    fs::write(&path, text)?;
    Ok(())
}
