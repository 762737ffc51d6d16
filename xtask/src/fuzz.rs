//! `cargo xtask fuzz`: every parser fuzzed for a bounded time, from seeds made of real builds.
//!
//! The targets live in `fuzz/`, a cargo-fuzz crate kept out of the workspace (it builds with
//! nightly, AddressSanitizer and coverage instrumentation). For each target, in turn:
//!
//! 1. Whole fixture binaries from `cargo xtask fixtures` run through it once each. They are not
//!    mutated: a 5 MB input runs a few dozen times a second, and each mutant that reaches new
//!    code would be saved at full size.
//! 2. Small seeds made here are written into `target/fuzz-corpus/<target>/`: ELF files with a
//!    hand-built Go function table and build information for each layout, the DWARF of real
//!    builds cut down to the entries of the structures the agent reads (uncompressed: the zlib
//!    checksum of Go's compressed sections would reject nearly every mutation), the symbol
//!    tables of the Rust fixtures cut down to the functions the plans choose from, the code of
//!    real functions, well-formed ring-buffer records, `traceparent` values, HTTP/2 frame
//!    streams. Each synthetic seed is checked to parse as intended, so the seeds keep
//!    reaching deep into the parsers as those change.
//! 3. libFuzzer mutates the corpus for the time or number of runs asked for, adding what
//!    reaches new code to the same directory (the corpus grows from run to run); a crash input
//!    goes to `target/fuzz-artifacts/<target>/`.
//!
//! One fuzzing process runs at a time (the machines have two cores), and every failing target
//! is reported at the end.

use std::{
    collections::HashMap,
    fs,
    io::{BufRead, BufReader},
    mem::{offset_of, size_of},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, ensure, Context, Result};
use spanhook::{
    inspect::{
        dwarf,
        elf::{Arch, ElfFile},
        golang::{self, buildinfo, pclntab::Pclntab, types::TypeNames, FuncRange, GoVersion},
    },
    plan::offsets,
};
use spanhook_common::{EventHeader, EventKind, HttpClientEvent, HttpServerEvent, TraceIds};

use crate::{cmd, fixtures};

/// cargo-fuzz needs a nightly compiler (sanitizers, coverage instrumentation).
const TOOLCHAIN: &str = "nightly";
/// Time per target when neither `--seconds` nor `--runs` is given.
const DEFAULT_SECONDS: u64 = 20;
/// Time per target in `cargo xtask test`: about 100 s of fuzzing in all, however many targets
/// there are (plus a few seconds each for the fixture binaries and start-up), at least 5 s each.
pub const TEST_SECONDS: u64 = {
    let share = 100 / TARGETS.len() as u64;
    if share < 5 {
        5
    } else {
        share
    }
};
/// Longest mutated input for the targets that read ELF files: the seeds are 1–2 KB (whole
/// fixture binaries only run once, see [`Target::binaries`]), and 128 KB still holds a
/// function table of thousands of entries.
const ELF_MAX_LEN: usize = 128 << 10;
/// One input taking longer than this is a hang (a whole binary takes well under a second).
const INPUT_TIMEOUT_SECONDS: u64 = 30;
/// The memory one fuzzing process may use.
const RSS_LIMIT_MB: u64 = 2048;

/// Options.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds of fuzzing per target.
    #[arg(long, default_value_t = DEFAULT_SECONDS, conflicts_with = "runs")]
    pub seconds: u64,
    /// Run this many inputs per target instead of fuzzing for a time (for long recorded runs).
    #[arg(long)]
    pub runs: Option<u64>,
    /// Only this target (repeat for several); default: every target.
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
}

/// How long each target runs.
#[derive(Clone, Copy, Debug)]
enum Budget {
    Seconds(u64),
    Runs(u64),
}

/// A fixture binary: program, Go release, variant.
type Fixture = (&'static str, &'static str, &'static str);

/// One fuzz target of `fuzz/fuzz_targets/`.
struct Target {
    name: &'static str,
    /// libFuzzer's `-max_len`.
    max_len: usize,
    /// The small inputs mutation starts from.
    seeds: fn() -> Result<Vec<Seed>>,
    /// Whole fixture binaries, run once each before fuzzing. They are not mutated: a 5 MB
    /// input runs a few dozen times a second, and every mutant that reaches new code would
    /// be saved into the corpus at full size.
    binaries: Binaries,
}

/// Which fixture binaries a target runs once each.
enum Binaries {
    /// These Go builds.
    Go(&'static [Fixture]),
    /// Every Rust build `cargo xtask fixtures` made.
    Rust,
}

impl Binaries {
    /// The ones that were built.
    fn paths(&self) -> Vec<PathBuf> {
        match self {
            Binaries::Go(list) => list
                .iter()
                .filter_map(|&(program, release, variant)| fixture(program, release, variant))
                .collect(),
            Binaries::Rust => rust_fixtures(),
        }
    }
}

/// A corpus file written before a run.
struct Seed {
    name: String,
    data: Vec<u8>,
}

impl Seed {
    fn new(name: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        Seed {
            name: name.into(),
            data: data.into(),
        }
    }
}

const TARGETS: &[Target] = &[
    Target {
        name: "elf_pclntab",
        max_len: ELF_MAX_LEN,
        seeds: synthetic_go_binaries,
        binaries: Binaries::Go(GO_BINARIES),
    },
    Target {
        name: "buildinfo",
        max_len: ELF_MAX_LEN,
        seeds: buildinfo_seeds,
        binaries: Binaries::Go(GO_BINARIES),
    },
    Target {
        name: "dwarf_offsets",
        max_len: ELF_MAX_LEN,
        seeds: dwarf_seeds,
        binaries: Binaries::Go(DWARF_BINARIES),
    },
    Target {
        name: "go_types",
        max_len: ELF_MAX_LEN,
        seeds: synthetic_go_binaries,
        binaries: Binaries::Go(TYPES_BINARIES),
    },
    Target {
        name: "returns",
        max_len: 64 << 10,
        seeds: returns_seeds,
        binaries: Binaries::Go(&[]),
    },
    Target {
        name: "event_decode",
        max_len: 4 << 10,
        seeds: event_seeds,
        binaries: Binaries::Go(&[]),
    },
    Target {
        name: "offsets_table",
        max_len: 64 << 10,
        seeds: offsets_table_seeds,
        binaries: Binaries::Go(&[]),
    },
    Target {
        name: "otlp_resource_attributes",
        max_len: 16 << 10,
        seeds: resource_seeds,
        binaries: Binaries::Go(&[]),
    },
    Target {
        name: "http1_stream",
        max_len: 64 << 10,
        seeds: http1_seeds,
        binaries: Binaries::Go(&[]),
    },
    Target {
        name: "rust_symbols",
        max_len: RUST_SYMBOLS_MAX_LEN,
        seeds: rust_symbols_seeds,
        binaries: Binaries::Rust,
    },
    Target {
        name: "traceparent",
        max_len: 256,
        seeds: traceparent_seeds,
        binaries: Binaries::Go(&[]),
    },
    Target {
        name: "h2_hpack",
        max_len: 1 << 10,
        seeds: h2_seeds,
        binaries: Binaries::Go(&[]),
    },
];

/// Socket traffic transcripts (`reassembly::transcript`), each checked to give its exchanges.
fn http1_seeds() -> Result<Vec<Seed>> {
    use spanhook::reassembly::{transcript, Exchange};
    let mut seeds = Vec::new();
    for (name, data, want) in transcript::examples() {
        let mut got = 0;
        transcript::replay(&data, &mut |_: Exchange| got += 1);
        ensure!(got == want, "seed {name} gives {got} exchanges, not {want}");
        seeds.push(Seed::new(name, data));
    }
    Ok(seeds)
}

/// Runs the selected targets with the given budget.
pub fn run(args: &Args) -> Result<()> {
    let budget = match args.runs {
        Some(n) => Budget::Runs(n),
        None => Budget::Seconds(args.seconds),
    };
    let mut selected = Vec::new();
    for name in &args.targets {
        let Some(t) = TARGETS.iter().find(|t| t.name == name) else {
            let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
            bail!(
                "no fuzz target {name:?}; the targets are {}",
                names.join(", ")
            );
        };
        selected.push(t);
    }
    if selected.is_empty() {
        selected = TARGETS.iter().collect();
    }
    fuzz(&selected, budget)
}

/// Every target for `seconds`: the bounded run at the end of `cargo xtask test`.
pub fn bounded(seconds: u64) -> Result<()> {
    fuzz(
        &TARGETS.iter().collect::<Vec<_>>(),
        Budget::Seconds(seconds),
    )
}

fn fuzz_dir() -> PathBuf {
    crate::root().join("fuzz")
}

fn build_dir() -> PathBuf {
    crate::target_dir().join("fuzz-build")
}

fn fuzz(targets: &[&Target], budget: Budget) -> Result<()> {
    ensure_cargo_fuzz()?;
    if !fixtures::out_dir().join("go/manifest.tsv").is_file() {
        eprintln!(
            "fuzz: WARNING: no fixture binaries in {} — seeding with synthetic inputs only; run \
             `cargo xtask fixtures` for seeds from real Go builds",
            fixtures::out_dir().display()
        );
    }
    // Build every target first, so a compile error stops the run before any time is spent.
    cmd::run(cargo_fuzz("build").args(["--debug-assertions"]))?;
    let mut outcomes = Vec::new();
    for target in targets {
        outcomes.push(run_target(target, budget)?);
    }
    eprintln!("\nfuzz: summary");
    eprintln!(
        "  {:<26} {:>12} {:>8} {:>14}  result",
        "target", "executions", "exec/s", "corpus"
    );
    for o in &outcomes {
        eprintln!(
            "  {:<26} {:>12} {:>8} {:>14}  {}",
            o.target,
            o.executions.as_deref().unwrap_or("?"),
            o.exec_per_sec.as_deref().unwrap_or("?"),
            format!(
                "{} files {:.1} MB",
                o.corpus_files,
                o.corpus_bytes as f64 / 1e6
            ),
            o.failure.as_deref().unwrap_or("ok"),
        );
    }
    let failures: Vec<&str> = outcomes
        .iter()
        .filter_map(|o| o.failure.as_deref())
        .collect();
    if !failures.is_empty() {
        bail!(
            "{} fuzz target(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    Ok(())
}

/// Installs cargo-fuzz when it is missing, and checks the nightly toolchain exists.
fn ensure_cargo_fuzz() -> Result<()> {
    let has_nightly = Command::new("rustup")
        .args(["run", TOOLCHAIN, "rustc", "--version"])
        .output()
        .map(|o| o.status.success())
        .context("rustup is required (https://rustup.rs)")?;
    if !has_nightly {
        eprintln!("fuzz: installing the {TOOLCHAIN} toolchain");
        cmd::run(Command::new("rustup").args([
            "toolchain",
            "install",
            TOOLCHAIN,
            "--profile",
            "minimal",
        ]))?;
    }
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        eprintln!("fuzz: installing cargo-fuzz");
        cmd::run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

/// `cargo +nightly fuzz <subcommand>` on our fuzz crate, building under `target/`.
fn cargo_fuzz(subcommand: &str) -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(crate::root())
        .arg(format!("+{TOOLCHAIN}"))
        .args(["fuzz", subcommand, "--fuzz-dir"])
        .arg(fuzz_dir())
        .arg("--target-dir")
        .arg(build_dir());
    c
}

/// What one target's run gave.
struct Outcome {
    target: &'static str,
    executions: Option<String>,
    exec_per_sec: Option<String>,
    corpus_files: usize,
    corpus_bytes: u64,
    failure: Option<String>,
}

fn run_target(target: &Target, budget: Budget) -> Result<Outcome> {
    let corpus = crate::target_dir().join("fuzz-corpus").join(target.name);
    let artifacts = crate::target_dir().join("fuzz-artifacts").join(target.name);
    fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    fs::create_dir_all(&artifacts).with_context(|| format!("creating {}", artifacts.display()))?;
    write_seeds(target, &corpus)?;
    let limits = [
        format!("-rss_limit_mb={RSS_LIMIT_MB}"),
        format!("-timeout={INPUT_TIMEOUT_SECONDS}"),
        format!("-artifact_prefix={}/", artifacts.display()),
    ];
    let binaries = target.binaries.paths();
    if !binaries.is_empty() {
        eprintln!(
            "fuzz: {}: {} fixture binaries, once each",
            target.name,
            binaries.len()
        );
        // Files (not directories) make libFuzzer run each once; no -max_len, which would
        // truncate them.
        let mut c = cargo_fuzz("run");
        c.args(["--debug-assertions", target.name])
            .args(&binaries)
            .arg("--")
            .args(&limits);
        let run = stream(&mut c)?;
        if !run.status.success() {
            let failure = run.failure(target.name, run.last_input.as_deref());
            return Ok(Outcome::failed(target.name, failure));
        }
    }

    let mut c = cargo_fuzz("run");
    c.args(["--debug-assertions", "--jobs", "1", target.name])
        .arg(&corpus)
        .arg("--")
        .args(&limits)
        .arg(format!("-max_len={}", target.max_len))
        .arg("-print_final_stats=1");
    match budget {
        Budget::Seconds(s) => c.arg(format!("-max_total_time={s}")),
        Budget::Runs(n) => c.arg(format!("-runs={n}")),
    };
    eprintln!("fuzz: {} ({budget:?})", target.name);
    let mut run = stream(&mut c)?;
    let failure =
        (!run.status.success()).then(|| run.failure(target.name, run.artifact.as_deref()));
    let (corpus_files, corpus_bytes) = dir_size(&corpus)?;
    Ok(Outcome {
        target: target.name,
        executions: run.stats.remove("number_of_executed_units"),
        exec_per_sec: run.stats.remove("average_exec_per_sec"),
        corpus_files,
        corpus_bytes,
        failure,
    })
}

impl Outcome {
    fn failed(target: &'static str, failure: String) -> Self {
        Outcome {
            target,
            executions: None,
            exec_per_sec: None,
            corpus_files: 0,
            corpus_bytes: 0,
            failure: Some(failure),
        }
    }
}

/// What a libFuzzer process printed that matters here.
struct Streamed {
    status: std::process::ExitStatus,
    /// `stat::` lines of `-print_final_stats`.
    stats: HashMap<String, String>,
    /// The crash input libFuzzer wrote.
    artifact: Option<String>,
    /// The last file it said it was running (when given files).
    last_input: Option<String>,
    /// Whether libFuzzer started at all (else cargo failed, e.g. to build the target).
    started: bool,
}

impl Streamed {
    /// Why a run that did not succeed failed, naming the input at fault when there is one.
    fn failure(&self, target: &str, input: Option<&str>) -> String {
        if !self.started {
            return format!(
                "{target}: the fuzz target did not start ({}): see the cargo output above",
                self.status
            );
        }
        let input = input.unwrap_or("no input was saved");
        format!(
            "{target}: {} on {input} (reproduce: cargo +{TOOLCHAIN} fuzz run --fuzz-dir fuzz \
             {target} {input})",
            self.status
        )
    }
}

/// Runs `c`, passing its output through, and keeps its statistics and crash file.
fn stream(c: &mut Command) -> Result<Streamed> {
    let shown = format!("{c:?}");
    let mut child = c
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {shown}"))?;
    let mut stats = HashMap::new();
    let mut artifact = None;
    let mut last_input = None;
    let mut started = false;
    let stderr = child.stderr.take().expect("stderr is piped");
    for line in BufReader::new(stderr).split(b'\n') {
        let line = String::from_utf8_lossy(&line?).into_owned();
        eprintln!("{line}");
        if let Some((key, value)) = line.strip_prefix("stat::").and_then(|s| s.split_once(':')) {
            stats.insert(key.trim().to_string(), value.trim().to_string());
        }
        if let Some((_, path)) = line.split_once("Test unit written to ") {
            artifact = Some(path.trim().to_string());
        }
        started |= line.starts_with("INFO: Seed: ");
        if let Some(path) = line.strip_prefix("Running: ") {
            last_input = Some(path.trim().to_string());
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for {shown}"))?;
    Ok(Streamed {
        status,
        stats,
        artifact,
        last_input,
        started,
    })
}

fn dir_size(dir: &Path) -> Result<(usize, u64)> {
    let mut files = 0;
    let mut bytes = 0;
    for entry in fs::read_dir(dir)? {
        let meta = entry?.metadata()?;
        if meta.is_file() {
            files += 1;
            bytes += meta.len();
        }
    }
    Ok((files, bytes))
}

/// Writes the target's seeds into its corpus, leaving files that are already right alone and
/// removing seeds this version no longer makes (what libFuzzer added is kept).
fn write_seeds(target: &Target, corpus: &Path) -> Result<()> {
    let seeds = (target.seeds)()?;
    for entry in fs::read_dir(corpus)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(seed) = name.strip_prefix("seed-") {
            if !seeds.iter().any(|s| s.name == seed) {
                fs::remove_file(entry.path())?;
            }
        }
    }
    for seed in seeds {
        if seed.data.len() > target.max_len {
            eprintln!(
                "fuzz: seed {} ({} bytes) is longer than {}'s -max_len {}: left out",
                seed.name,
                seed.data.len(),
                target.name,
                target.max_len
            );
            continue;
        }
        let path = corpus.join(format!("seed-{}", seed.name));
        if fs::read(&path).ok().as_deref() != Some(&seed.data[..]) {
            fs::write(&path, &seed.data).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Seeds from the fixture binaries

/// The `program` fixture built by Go `release` as `variant`, when `cargo xtask fixtures` built it.
fn fixture(program: &str, release: &str, variant: &str) -> Option<PathBuf> {
    let path = fixtures::out_dir()
        .join("go")
        .join(program)
        .join(format!("go{release}"))
        .join(variant)
        .join(program);
    path.is_file().then_some(path)
}

/// Whole binaries for the function-table and build-information targets: each table format,
/// the places the table hides (section, relocations, no section at all), both architectures.
const GO_BINARIES: &[Fixture] = &[
    ("httpserver", "1.17.13", "stripped"),
    ("httpserver", "1.17.13", "cgo-pie"),
    ("httpserver", "1.20.14", "stripped"),
    ("httpserver", "1.22.12", "pie"),
    ("httpserver", "1.22.12", "arm64-stripped"),
    ("httpserver", "1.26.11", "stripped"),
    ("httpserver", "1.27.4", "cgo"),
    ("httpserver", "1.27.4", "cgo-pie"),
    ("nohttp", "1.27.4", "stripped"),
];

/// Whole binaries for the type-name target: every module-data layout, and the build shapes
/// that move the module data (PIE, the external linker, arm64).
const TYPES_BINARIES: &[Fixture] = &[
    ("httpserver", "1.17.13", "stripped"),
    ("httpserver", "1.18.10", "stripped"),
    ("httpserver", "1.20.14", "stripped"),
    ("httpserver", "1.22.12", "pie"),
    ("httpserver", "1.22.12", "cgo-pie"),
    ("httpserver", "1.24.13", "arm64-stripped"),
    ("httpserver", "1.25.14", "stripped"),
    ("httpserver", "1.26.11", "stripped"),
    ("httpserver", "1.27.4", "stripped"),
    ("httpserver", "1.27.4", "cgo"),
];

/// Whole binaries with zlib-compressed DWARF: `.zdebug_*` (1.17), `SHF_COMPRESSED` (1.22+).
const DWARF_BINARIES: &[Fixture] = &[
    ("httpserver", "1.17.13", "plain"),
    ("httpserver", "1.22.12", "plain"),
    ("httpserver", "1.27.4", "plain"),
    ("httpserver", "1.22.12", "arm64"),
];

fn buildinfo_seeds() -> Result<Vec<Seed>> {
    let mut seeds = synthetic_go_binaries()?;
    let text = modinfo_text("amd64");
    seeds.push(Seed::new("modinfo-framed", framed(&text)));
    seeds.push(Seed::new("modinfo-text", text));
    Ok(seeds)
}

/// Fields the DWARF seeds must answer: what `fuzz/fuzz_targets/dwarf_offsets.rs` asks for.
const DWARF_WANTED: &[(&str, &str)] = &[
    ("net/http.Request", "Method"),
    ("runtime.g", "goid"),
    ("net/http.Request", "URL"),
    ("bufio.Reader", "buf"),
];

fn dwarf_seeds() -> Result<Vec<Seed>> {
    // The checksum of compressed sections rejects nearly every mutation, so the seeds hold
    // DWARF uncompressed: a small hand-written unit, and the fixtures' own DWARF in small
    // ELF files holding only the units that define the types.
    let mut seeds = vec![Seed::new("dwarf-synthetic", synthetic_dwarf()?)];
    for &(program, release, variant) in DWARF_BINARIES {
        if let Some(path) = fixture(program, release, variant) {
            let data = uncompressed_dwarf(&path)
                .with_context(|| format!("cutting the DWARF out of {}", path.display()))?;
            seeds.push(Seed::new(format!("dwarf-go{release}-{variant}"), data));
        }
    }
    Ok(seeds)
}

/// An ELF file with the `.debug_abbrev` of `path` and the `.debug_info` units that define the
/// wanted types, uncompressed.
fn uncompressed_dwarf(path: &Path) -> Result<Vec<u8>> {
    let elf = ElfFile::open(path)?;
    let info = elf.try_section(".debug_info")?.context("no .debug_info")?;
    let abbrev = elf
        .try_section(".debug_abbrev")?
        .context("no .debug_abbrev")?
        .data
        .into_owned();
    // 32-bit DWARF units: a u32 length, then that many bytes.
    let mut units = Vec::new();
    let mut at = 0;
    while let Some(len) = info.data.get(at..at + 4) {
        let len = u32::from_le_bytes(len.try_into()?) as usize;
        let Some(unit) = info.data.get(at..at + 4 + len) else {
            break;
        };
        units.push(unit);
        at += 4 + len;
    }
    // Go writes every type into one unit (DWARF 4; DWARF 5 from Go 1.25).
    let defines = |unit: &[u8], ty: &str| {
        let needle = [ty.as_bytes(), b"\0"].concat();
        unit.windows(needle.len()).any(|w| w == needle)
    };
    let unit = units
        .into_iter()
        .find(|u| DWARF_WANTED.iter().all(|(ty, _)| defines(u, ty)))
        .context("no unit defines every wanted type")?;
    // After the length: version, abbreviation offset, address size (5: and the unit type).
    let header_len = match unit.get(4..6) {
        Some([2..=4, 0]) => 11,
        Some([5, 0]) => 12,
        other => bail!("the types unit has DWARF version {other:?}"),
    };
    ensure!(unit.len() > header_len, "the types unit is empty");
    // An ELF file holding one unit with the original header and `dies`.
    let image = |dies: &[u8]| {
        let mut cut = ((dies.len() + header_len - 4) as u32)
            .to_le_bytes()
            .to_vec();
        cut.extend_from_slice(&unit[4..header_len]);
        cut.extend_from_slice(dies);
        elf_image(
            elf.arch(),
            &[
                Part::unloaded(".debug_abbrev", abbrev.clone()),
                Part::unloaded(".debug_info", cut),
            ],
            true,
        )
    };
    let answers = |dies: &[u8], wanted: &[(&str, &str)]| {
        ElfFile::from_bytes(path.to_path_buf(), image(dies))
            .ok()
            .and_then(|e| dwarf::struct_field_offsets(&e, wanted).ok())
            .is_some_and(|found| found.len() == wanted.len())
    };
    // Each wanted structure: its entry (an abbreviation code byte, then the name) up to its
    // last wanted member — the shortest run the reader answers from, found by bisection (a
    // longer run answers at least as much). Runs of several structures chain: the reader
    // starts a new structure at its entry whatever the depth.
    let mut dies = Vec::new();
    let mut types: Vec<&str> = DWARF_WANTED.iter().map(|&(ty, _)| ty).collect();
    types.dedup();
    for ty in types {
        let wanted: Vec<(&str, &str)> = DWARF_WANTED
            .iter()
            .copied()
            .filter(|&(t, _)| t == ty)
            .collect();
        let needle = [ty.as_bytes(), b"\0"].concat();
        let run = (header_len + 1..unit.len())
            .filter(|&p| unit[p..].starts_with(&needle))
            .map(|p| &unit[p - 1..])
            .find(|rest| answers(rest, &wanted))
            .with_context(|| format!("no structure entry for {ty}"))?;
        let (mut fails, mut works) = (0, run.len());
        while works - fails > 1 {
            let mid = fails + (works - fails) / 2;
            if answers(&run[..mid], &wanted) {
                works = mid;
            } else {
                fails = mid;
            }
        }
        dies.extend_from_slice(&run[..works]);
    }
    ensure!(
        answers(&dies, DWARF_WANTED),
        "the cut-down DWARF does not answer {DWARF_WANTED:?}"
    );
    Ok(image(&dies))
}

/// Unsigned LEB128 (DWARF's and Go's variable-length integers).
fn uleb(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A small ELF file with hand-written DWARF: the forms Go writes (inline names, `udata`
/// member offsets) and the ones a reader must also take (`strp` names, `data1` and
/// `DW_OP_plus_uconst` offsets, a DWARF 5 unit header).
fn synthetic_dwarf() -> Result<Vec<u8>> {
    use dwarf_constants::*;
    // Abbreviations: code, tag, has children, (attribute, form) pairs.
    type Abbreviation = (u64, u64, bool, &'static [(u64, u64)]);
    let abbreviations: &[Abbreviation] = &[
        (1, TAG_COMPILE_UNIT, true, &[(AT_NAME, FORM_STRING)]),
        (
            2,
            TAG_STRUCTURE_TYPE,
            true,
            &[(AT_NAME, FORM_STRING), (AT_BYTE_SIZE, FORM_UDATA)],
        ),
        (
            3,
            TAG_MEMBER,
            false,
            &[(AT_NAME, FORM_STRING), (AT_MEMBER_LOCATION, FORM_UDATA)],
        ),
        (
            4,
            TAG_MEMBER,
            false,
            &[(AT_NAME, FORM_STRP), (AT_MEMBER_LOCATION, FORM_DATA1)],
        ),
        (
            5,
            TAG_MEMBER,
            false,
            &[(AT_NAME, FORM_STRING), (AT_MEMBER_LOCATION, FORM_EXPRLOC)],
        ),
        (
            6,
            TAG_BASE_TYPE,
            false,
            &[(AT_NAME, FORM_STRING), (AT_BYTE_SIZE, FORM_DATA1)],
        ),
        (7, TAG_STRUCTURE_TYPE, true, &[(AT_NAME, FORM_STRP)]),
    ];
    let mut abbrev = Vec::new();
    for &(code, tag, children, attributes) in abbreviations {
        uleb(code, &mut abbrev);
        uleb(tag, &mut abbrev);
        abbrev.push(u8::from(children));
        for &(name, form) in attributes {
            uleb(name, &mut abbrev);
            uleb(form, &mut abbrev);
        }
        abbrev.extend_from_slice(&[0, 0]);
    }
    abbrev.push(0);
    let strings = b"URL\0runtime.g\0".to_vec();
    let cstr = |s: &str| [s.as_bytes(), b"\0"].concat();
    let mut dies = Vec::new();
    dies.push(1);
    dies.extend(cstr("synthetic"));
    dies.push(6);
    dies.extend(cstr("int"));
    dies.push(8);
    dies.push(2);
    dies.extend(cstr("net/http.Request"));
    uleb(256, &mut dies);
    dies.push(3);
    dies.extend(cstr("Method"));
    uleb(0, &mut dies);
    dies.push(4);
    dies.extend_from_slice(&0u32.to_le_bytes()); // "URL" in .debug_str
    dies.push(16);
    dies.push(5);
    dies.extend(cstr("Host"));
    dies.extend_from_slice(&[3, OP_PLUS_UCONST, 0x80, 0x01]); // DW_OP_plus_uconst 128
    dies.push(0);
    dies.push(7);
    dies.extend_from_slice(&4u32.to_le_bytes()); // "runtime.g" in .debug_str
    dies.push(3);
    dies.extend(cstr("goid"));
    uleb(152, &mut dies);
    dies.push(0);
    dies.push(2);
    dies.extend(cstr("bufio.Reader"));
    uleb(96, &mut dies);
    dies.push(3);
    dies.extend(cstr("buf"));
    uleb(0, &mut dies);
    dies.push(0);
    dies.push(0);
    let mut info = Vec::new();
    for version in [4u16, 5] {
        // unit_length, version, then (4) abbrev offset, address size; (5) unit type,
        // address size, abbrev offset.
        let mut unit = version.to_le_bytes().to_vec();
        if version == 4 {
            unit.extend_from_slice(&0u32.to_le_bytes());
            unit.push(8);
        } else {
            unit.extend_from_slice(&[UT_COMPILE, 8]);
            unit.extend_from_slice(&0u32.to_le_bytes());
        }
        unit.extend_from_slice(&dies);
        info.extend_from_slice(&(unit.len() as u32).to_le_bytes());
        info.extend_from_slice(&unit);
    }
    let image = elf_image(
        Arch::X86_64,
        &[
            Part::unloaded(".debug_abbrev", abbrev),
            Part::unloaded(".debug_info", info),
            Part::unloaded(".debug_str", strings),
        ],
        true,
    );
    let elf = ElfFile::from_bytes(PathBuf::from("synthetic"), image.clone())?;
    let wanted = [
        ("net/http.Request", "Method"),
        ("net/http.Request", "URL"),
        ("net/http.Request", "Host"),
        ("runtime.g", "goid"),
        ("bufio.Reader", "buf"),
    ];
    let found = dwarf::struct_field_offsets(&elf, &wanted)?;
    let offsets: Vec<Option<u64>> = wanted
        .iter()
        .map(|&(ty, field)| found.get(&(ty.to_string(), field.to_string())).copied())
        .collect();
    ensure!(
        offsets == [Some(0), Some(16), Some(128), Some(152), Some(0)],
        "the synthetic DWARF seed no longer reads as written ({found:?}): update xtask/src/fuzz.rs"
    );
    Ok(image)
}

/// The DWARF numbers [`synthetic_dwarf`] uses.
mod dwarf_constants {
    pub const TAG_COMPILE_UNIT: u64 = 0x11;
    pub const TAG_STRUCTURE_TYPE: u64 = 0x13;
    pub const TAG_MEMBER: u64 = 0x0d;
    pub const TAG_BASE_TYPE: u64 = 0x24;
    pub const AT_NAME: u64 = 0x03;
    pub const AT_BYTE_SIZE: u64 = 0x0b;
    pub const AT_MEMBER_LOCATION: u64 = 0x38;
    pub const FORM_STRING: u64 = 0x08;
    pub const FORM_STRP: u64 = 0x0e;
    pub const FORM_UDATA: u64 = 0x0f;
    pub const FORM_DATA1: u64 = 0x0b;
    pub const FORM_EXPRLOC: u64 = 0x18;
    pub const OP_PLUS_UCONST: u8 = 0x23;
    pub const UT_COMPILE: u8 = 0x01;
}

/// Functions whose code seeds the RET scanner: small, large, with several returns.
const RETURN_FUNCTIONS: &[&str] = &[
    "net/http.serverHandler.ServeHTTP",
    "net/http.(*conn).serve",
    "runtime.mallocgc",
    "runtime.main",
];

fn returns_seeds() -> Result<Vec<Seed>> {
    let mut seeds = vec![
        Seed::new("x86_64-ret", [0u8, 0xc3]),
        Seed::new("aarch64-ret", [1u8, 0xc0, 0x03, 0x5f, 0xd6]),
    ];
    for (release, variant) in [
        ("1.22.12", "plain"),
        ("1.27.4", "stripped"),
        ("1.22.12", "arm64"),
        ("1.18.10", "arm64-stripped"),
    ] {
        let Some(path) = fixture("httpserver", release, variant) else {
            continue;
        };
        let elf = ElfFile::open(&path)?;
        let selector = match elf.arch() {
            Arch::X86_64 => 0u8,
            Arch::Aarch64 => 1u8,
        };
        let mut found: Vec<(String, FuncRange)> = golang::find_functions(&elf, RETURN_FUNCTIONS)
            .with_context(|| format!("finding functions in {}", path.display()))?
            .into_iter()
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, range) in found {
            let len = usize::try_from(range.end - range.entry)?.min((64 << 10) - 1);
            let Some(code) = elf.read_vaddr(range.entry, len) else {
                continue;
            };
            let mut data = vec![selector];
            data.extend_from_slice(code);
            let short = name.rsplit('.').next().unwrap_or(&name);
            seeds.push(Seed::new(format!("go{release}-{variant}-{short}"), data));
        }
    }
    Ok(seeds)
}

fn offsets_table_seeds() -> Result<Vec<Seed>> {
    Ok(vec![
        Seed::new("embedded", offsets::EMBEDDED),
        Seed::new(
            "open-ranges",
            "# comment\n\n@newest\tstd\tgo1.27rc1\nstd\tnet/http.Request\tMethod\t-1.22\t0\n\
             std\tnet/http.Request\tctx\t1.23-\t248\ngolang.org/x/net\thttp2.Framer\tw\t\
             v0.20.0-v0.25\t65535\n",
        ),
        Seed::new("bad-offset", "std\tt\tf\t1.17-\t65536\n"),
    ])
}

fn resource_seeds() -> Result<Vec<Seed>> {
    Ok(vec![
        Seed::new(
            "plain",
            "service.name=checkout,deployment.environment.name=prod",
        ),
        Seed::new(
            "encoded",
            "k%20ey=va%2Clue, x = y ,bad,=v,k=%zz,u=%E2%9C%93,t=%",
        ),
        Seed::new(
            "environ",
            "team=a\0OTEL_SERVICE_NAME=svc\0OTEL_RESOURCE_ATTRIBUTES=service.name=x",
        ),
    ])
}

// ---------------------------------------------------------------------------------------------
// Ring-buffer records

/// What every record starts with: its header and trace ids.
struct Common {
    kind: u16,
    start_ns: u64,
    end_ns: u64,
    parent: [u8; 8],
    flags: u8,
    origin: u8,
}

const COMMON: Common = Common {
    kind: EventKind::HttpServer as u16,
    start_ns: 1_000_000,
    end_ns: 3_500_000,
    parent: [0; 8],
    flags: 1,
    origin: TraceIds::ORIGIN_NEW,
};

/// A record of type `T` being written field by field, at the ABI crate's own offsets.
struct RecordBytes(Vec<u8>);

impl RecordBytes {
    /// A zeroed `T` with `common` written at the offsets of its `header` and `trace`.
    fn new<T>(header: usize, trace: usize, common: &Common) -> Self {
        let mut r = RecordBytes(vec![0; size_of::<T>()]);
        r.put(
            header + offset_of!(EventHeader, kind),
            &common.kind.to_le_bytes(),
        )
        .put(
            header + offset_of!(EventHeader, tgid),
            &4242u32.to_le_bytes(),
        )
        .put(
            header + offset_of!(EventHeader, start_ns),
            &common.start_ns.to_le_bytes(),
        )
        .put(
            header + offset_of!(EventHeader, end_ns),
            &common.end_ns.to_le_bytes(),
        )
        .put(trace + offset_of!(TraceIds, trace_id), &[7; 16])
        .put(trace + offset_of!(TraceIds, span_id), &[8; 8])
        .put(trace + offset_of!(TraceIds, parent_span_id), &common.parent)
        .put(trace + offset_of!(TraceIds, flags), &[common.flags])
        .put(trace + offset_of!(TraceIds, origin), &[common.origin]);
        r
    }

    fn put(&mut self, at: usize, bytes: &[u8]) -> &mut Self {
        self.0[at..at + bytes.len()].copy_from_slice(bytes);
        self
    }

    /// A `Str<N>` at `at`: its length field (`len`, else the string's), then its bytes.
    fn put_str(&mut self, at: usize, s: &str, len: Option<u32>) -> &mut Self {
        let len = len.unwrap_or(s.len() as u32);
        self.put(at, &len.to_le_bytes()).put(at + 4, s.as_bytes())
    }
}

/// The values of one synthetic server record.
struct ServerRecord {
    common: Common,
    status: u16,
    proto: (u8, u8),
    tls: u8,
    method: &'static str,
    path: &'static str,
    host: &'static str,
    route: &'static str,
    remote: &'static str,
    /// A length field larger than the string (the probe truncated it).
    path_len: Option<u32>,
}

const SERVER: ServerRecord = ServerRecord {
    common: COMMON,
    status: 200,
    proto: (1, 1),
    tls: 0,
    method: "GET",
    path: "/hello",
    host: "localhost:8080",
    route: "",
    remote: "127.0.0.1:50000",
    path_len: None,
};

/// The bytes the probes write for `r`.
fn server_bytes(r: &ServerRecord) -> Vec<u8> {
    type E = HttpServerEvent;
    let mut b = RecordBytes::new::<E>(offset_of!(E, header), offset_of!(E, trace), &r.common);
    b.put(offset_of!(E, goid), &17u64.to_le_bytes())
        .put(offset_of!(E, status), &r.status.to_le_bytes())
        .put(offset_of!(E, proto_major), &[r.proto.0])
        .put(offset_of!(E, proto_minor), &[r.proto.1])
        .put(offset_of!(E, tls), &[r.tls])
        .put_str(offset_of!(E, method), r.method, None)
        .put_str(offset_of!(E, path), r.path, r.path_len)
        .put_str(offset_of!(E, host), r.host, None)
        .put_str(offset_of!(E, route), r.route, None)
        .put_str(offset_of!(E, remote), r.remote, None);
    b.0
}

/// The values of one synthetic client record.
struct ClientRecord {
    common: Common,
    error_itab: u64,
    status: u16,
    proto: (u8, u8),
    propagated: u8,
    method: &'static str,
    scheme: &'static str,
    host: &'static str,
    path: &'static str,
}

const CLIENT: ClientRecord = ClientRecord {
    common: Common {
        kind: EventKind::HttpClient as u16,
        parent: [8; 8],
        origin: TraceIds::ORIGIN_GOROUTINE,
        ..COMMON
    },
    error_itab: 0,
    status: 201,
    proto: (1, 1),
    propagated: 1,
    method: "POST",
    scheme: "http",
    host: "api:8080",
    path: "/v1/items",
};

/// The bytes the probes write for `r`.
fn client_bytes(r: &ClientRecord) -> Vec<u8> {
    type E = HttpClientEvent;
    let mut b = RecordBytes::new::<E>(offset_of!(E, header), offset_of!(E, trace), &r.common);
    b.put(offset_of!(E, goid), &17u64.to_le_bytes())
        .put(offset_of!(E, error_itab), &r.error_itab.to_le_bytes())
        .put(offset_of!(E, status), &r.status.to_le_bytes())
        .put(offset_of!(E, proto_major), &[r.proto.0])
        .put(offset_of!(E, proto_minor), &[r.proto.1])
        .put(offset_of!(E, propagated), &[r.propagated])
        .put_str(offset_of!(E, method), r.method, None)
        .put_str(offset_of!(E, scheme), r.scheme, None)
        .put_str(offset_of!(E, host), r.host, None)
        .put_str(offset_of!(E, path), r.path, None);
    b.0
}

fn event_seeds() -> Result<Vec<Seed>> {
    let odd = Common {
        start_ns: u64::MAX,
        end_ns: 1,
        flags: 0,
        origin: TraceIds::ORIGIN_HEADER_INVALID,
        ..COMMON
    };
    let seeds = vec![
        Seed::new("server-get", server_bytes(&SERVER)),
        Seed::new(
            "server-post-h2-tls-remote-parent-5xx",
            server_bytes(&ServerRecord {
                common: Common {
                    parent: [9; 8],
                    origin: TraceIds::ORIGIN_HEADER,
                    ..COMMON
                },
                status: 503,
                proto: (2, 0),
                tls: 1,
                method: "POST",
                path: "/api/items/42",
                host: "[::1]:8443",
                route: "POST /api/items/{id}",
                remote: "[2001:db8::1]:443",
                ..SERVER
            }),
        ),
        Seed::new(
            "server-odd-values",
            server_bytes(&ServerRecord {
                common: odd,
                status: 0,
                proto: (3, 7),
                method: "BREW",
                path: "/truncated",
                host: "example.com:notaport",
                route: "example.com/",
                remote: "fe80::1",
                path_len: Some(u32::MAX),
                ..SERVER
            }),
        ),
        Seed::new("client-post", client_bytes(&CLIENT)),
        Seed::new(
            "client-error",
            client_bytes(&ClientRecord {
                error_itab: 0x6d_5e40,
                status: 0,
                method: "PURGE",
                scheme: "https",
                host: "[2001:db8::7]",
                ..CLIENT
            }),
        ),
        Seed::new(
            "client-4xx-odd-scheme",
            client_bytes(&ClientRecord {
                status: 404,
                proto: (2, 0),
                scheme: "gopher",
                host: "example.com:99999",
                ..CLIENT
            }),
        ),
        Seed::new(
            "unknown-kind",
            server_bytes(&ServerRecord {
                common: Common {
                    kind: 0xffff,
                    ..COMMON
                },
                ..SERVER
            }),
        ),
        Seed::new(
            "header-only",
            server_bytes(&SERVER)[..size_of::<EventHeader>()].to_vec(),
        ),
    ];
    Ok(seeds)
}

// ---------------------------------------------------------------------------------------------
// Synthetic Go binaries

/// A section of a synthetic ELF file: loaded at a fixed file offset (its own `PT_LOAD`, at
/// `BASE + offset`) or, when `load` is `None`, appended after the loaded parts.
struct Part {
    name: &'static str,
    load: Option<Load>,
    data: Vec<u8>,
}

#[derive(Clone, Copy)]
struct Load {
    offset: u64,
    /// `PF_X` | `PF_W` | `PF_R`.
    flags: u32,
}

impl Part {
    fn loaded(name: &'static str, offset: u64, flags: u32, data: Vec<u8>) -> Self {
        Part {
            name,
            load: Some(Load { offset, flags }),
            data,
        }
    }

    fn unloaded(name: &'static str, data: Vec<u8>) -> Self {
        Part {
            name,
            load: None,
            data,
        }
    }
}

const BASE: u64 = 0x40_0000;
const PF_X: u32 = 1;
const PF_W: u32 = 2;
const PF_R: u32 = 4;
/// File offsets of the loaded parts of a synthetic Go binary (room for the ELF and program
/// headers before the first).
const TEXT_AT: u64 = 0x200;
const PCLNTAB_AT: u64 = 0x300;
const BUILDINFO_AT: u64 = 0x600;
const MODULE_AT: u64 = 0x900;
const TYPES_AT: u64 = 0xb00;
const ITABLINK_AT: u64 = 0xc00;

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn align(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// A little-endian ELF64 executable holding `parts`, with section headers when
/// `section_headers` (without them, readers must find everything through the segments).
fn elf_image(arch: Arch, parts: &[Part], section_headers: bool) -> Vec<u8> {
    let loaded: Vec<(&Part, Load)> = parts.iter().filter_map(|p| Some((p, p.load?))).collect();
    let loaded_end = loaded
        .iter()
        .map(|(p, l)| l.offset as usize + p.data.len())
        .max()
        .unwrap_or(0);
    let phoff = 64;
    assert!(
        loaded
            .iter()
            .all(|(_, l)| l.offset as usize >= phoff + 56 * loaded.len()),
        "loaded parts overlap the headers"
    );
    let mut image = vec![0u8; loaded_end.max(phoff + 56 * loaded.len())];
    let mut offsets = Vec::new();
    for p in parts {
        let offset = match p.load {
            Some(l) => {
                let at = l.offset as usize;
                assert!(
                    image[at..at + p.data.len()].iter().all(|&b| b == 0),
                    "parts overlap"
                );
                image[at..at + p.data.len()].copy_from_slice(&p.data);
                at
            }
            None => {
                let at = align(image.len(), 8);
                image.resize(at, 0);
                image.extend_from_slice(&p.data);
                at
            }
        };
        offsets.push(offset);
    }
    // Program headers: one PT_LOAD per loaded part.
    for (i, (p, l)) in loaded.iter().enumerate() {
        let h = phoff + 56 * i;
        put_u32(&mut image, h, 1); // PT_LOAD
        put_u32(&mut image, h + 4, l.flags);
        put_u64(&mut image, h + 8, l.offset);
        put_u64(&mut image, h + 16, BASE + l.offset);
        put_u64(&mut image, h + 24, BASE + l.offset);
        put_u64(&mut image, h + 32, p.data.len() as u64);
        put_u64(&mut image, h + 40, p.data.len() as u64);
        put_u64(&mut image, h + 48, 0x10);
    }
    let (shoff, shnum, shstrndx) = if section_headers {
        let mut names = vec![0u8];
        let mut name_at = Vec::new();
        for p in parts.iter().map(|p| p.name).chain([".shstrtab"]) {
            name_at.push(names.len() as u32);
            names.extend_from_slice(p.as_bytes());
            names.push(0);
        }
        let names_at = align(image.len(), 8);
        image.resize(names_at, 0);
        image.extend_from_slice(&names);
        let shoff = align(image.len(), 8);
        image.resize(shoff + 64 * (parts.len() + 2), 0);
        for (i, p) in parts.iter().enumerate() {
            let h = shoff + 64 * (i + 1);
            put_u32(&mut image, h, name_at[i]);
            put_u32(&mut image, h + 4, 1); // SHT_PROGBITS
            if let Some(l) = p.load {
                let mut flags = 2; // SHF_ALLOC
                if l.flags & PF_W != 0 {
                    flags |= 1; // SHF_WRITE
                }
                if l.flags & PF_X != 0 {
                    flags |= 4; // SHF_EXECINSTR
                }
                put_u64(&mut image, h + 8, flags);
                put_u64(&mut image, h + 16, BASE + l.offset);
            }
            put_u64(&mut image, h + 24, offsets[i] as u64);
            put_u64(&mut image, h + 32, p.data.len() as u64);
            put_u64(&mut image, h + 48, 1);
        }
        let h = shoff + 64 * (parts.len() + 1);
        put_u32(&mut image, h, name_at[parts.len()]);
        put_u32(&mut image, h + 4, 3); // SHT_STRTAB
        put_u64(&mut image, h + 24, names_at as u64);
        put_u64(&mut image, h + 32, names.len() as u64);
        (shoff, parts.len() + 2, parts.len() + 1)
    } else {
        (0, 0, 0)
    };
    image[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    put_u16(&mut image, 16, 2); // ET_EXEC
    let machine = match arch {
        Arch::X86_64 => 62,
        Arch::Aarch64 => 183,
    };
    put_u16(&mut image, 18, machine);
    put_u32(&mut image, 20, 1);
    put_u64(&mut image, 24, BASE + TEXT_AT);
    put_u64(
        &mut image,
        32,
        if loaded.is_empty() { 0 } else { phoff as u64 },
    );
    put_u64(&mut image, 40, shoff as u64);
    put_u16(&mut image, 52, 64);
    put_u16(&mut image, 54, 56);
    put_u16(&mut image, 56, loaded.len() as u16);
    put_u16(&mut image, 58, 64);
    put_u16(&mut image, 60, shnum as u16);
    put_u16(&mut image, 62, shstrndx as u16);
    image
}

/// The functions of a synthetic Go binary, 32 bytes of code each, in address order.
const FUNCTIONS: &[&str] = &[
    "main.main",
    "net/http.serverHandler.ServeHTTP",
    "runtime.main",
];
const FUNCTION_SIZE: u64 = 0x20;
const SERVE_HTTP: &str = "net/http.serverHandler.ServeHTTP";

/// Code for `FUNCTIONS`: a frame set-up, a conditional early return, a return, padding.
fn text(arch: Arch) -> Vec<u8> {
    let (body, pad): (Vec<u8>, u8) = match arch {
        // push rbp; mov rbp, rsp; test eax, eax; je +2; pop rbp; ret; pop rbp; ret
        Arch::X86_64 => (
            vec![
                0x55, 0x48, 0x89, 0xe5, 0x85, 0xc0, 0x74, 0x02, 0x5d, 0xc3, 0x5d, 0xc3,
            ],
            0xcc,
        ),
        // stp x29, x30, [sp, #-16]!; mov x29, sp; cbz x0, +12; ldp; ret; ldp; ret
        Arch::Aarch64 => (
            [
                0xa9bf_7bfdu32,
                0x9100_03fd,
                0xb400_0060,
                0xa8c1_7bfd,
                0xd65f_03c0,
                0xa8c1_7bfd,
                0xd65f_03c0,
            ]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect(),
            0,
        ),
    };
    let mut code = Vec::new();
    for _ in FUNCTIONS {
        let mut f = body.clone();
        f.resize(FUNCTION_SIZE as usize, pad);
        code.extend(f);
    }
    code
}

/// Which `runtime.pcHeader` layout a synthetic table uses.
#[derive(Clone, Copy, Debug)]
enum Table {
    /// Go 1.16–1.17: absolute 64-bit entries.
    Go116,
    /// Go 1.18–1.25: 32-bit entries from the text start in the header (magic `0xfffffff0`
    /// for 1.18–1.19, `0xfffffff1` from 1.20).
    Go118 { magic: u32 },
    /// Go 1.26+: as 1.20, but the header's text start is 0; the module data holds it.
    Go126,
}

/// A function table for `FUNCTIONS` at `TEXT_AT`, for a header loaded at `PCLNTAB_AT`.
fn pclntab(table: Table, arch: Arch) -> Vec<u8> {
    let text_start = BASE + TEXT_AT;
    let (magic, header_len, field) = match table {
        Table::Go116 => (0xffff_fffa, 64, 8),
        Table::Go118 { magic } => (magic, 72, 4),
        Table::Go126 => (0xffff_fff1, 72, 4),
    };
    let mut names = Vec::new();
    let mut name_offsets = Vec::new();
    for f in FUNCTIONS {
        name_offsets.push(names.len() as u32);
        names.extend_from_slice(f.as_bytes());
        names.push(0);
    }
    let funcname_off = header_len;
    let cu_off = funcname_off + names.len();
    let pcln_off = align(cu_off, 8);
    let n = FUNCTIONS.len();
    // The function table, its end entry, then one `_func` record per function.
    let func_table_len = align((2 * n + 1) * field, 8);
    let func_len = 48;
    let mut pcln = vec![0u8; func_table_len + n * func_len];
    let entry = |i: usize| match table {
        Table::Go116 => text_start + i as u64 * FUNCTION_SIZE,
        Table::Go118 { .. } | Table::Go126 => i as u64 * FUNCTION_SIZE,
    };
    let put_field = |pcln: &mut [u8], at: usize, value: u64| match field {
        8 => put_u64(pcln, at, value),
        _ => put_u32(pcln, at, value as u32),
    };
    for (i, &name_offset) in name_offsets.iter().enumerate() {
        let funcoff = func_table_len + i * func_len;
        put_field(&mut pcln, 2 * i * field, entry(i));
        put_field(&mut pcln, (2 * i + 1) * field, funcoff as u64);
        // `_func`: the entry (pointer-sized before 1.18, u32 after), then `nameOff`.
        put_field(&mut pcln, funcoff, entry(i));
        put_u32(&mut pcln, funcoff + field, name_offset);
    }
    // The end of the last function.
    put_field(&mut pcln, 2 * n * field, entry(n));
    let mut out = vec![0u8; pcln_off];
    put_u32(&mut out, 0, magic);
    out[6] = match arch {
        Arch::X86_64 => 1,
        Arch::Aarch64 => 4,
    };
    out[7] = 8;
    let words: Vec<u64> = match table {
        // nfunc, nfiles, funcnametab, cutab, filetab, pctab, pclntable
        Table::Go116 => vec![
            n as u64,
            0,
            funcname_off as u64,
            cu_off as u64,
            cu_off as u64,
            cu_off as u64,
            pcln_off as u64,
        ],
        // nfunc, nfiles, textStart, funcnametab, cutab, filetab, pctab, pclntable
        Table::Go118 { .. } | Table::Go126 => {
            let text_field = if matches!(table, Table::Go126) {
                0
            } else {
                text_start
            };
            vec![
                n as u64,
                0,
                text_field,
                funcname_off as u64,
                cu_off as u64,
                cu_off as u64,
                cu_off as u64,
                pcln_off as u64,
            ]
        }
    };
    for (i, w) in words.iter().enumerate() {
        put_u64(&mut out, 8 + 8 * i, *w);
    }
    out[funcname_off..cu_off].copy_from_slice(&names);
    out.extend(pcln);
    out
}

/// Go's module data: the function table's header and names (what finds it), the text start
/// (what a Go 1.26+ table needs), and where `go_minor`'s layout keeps the type descriptors
/// and the itab list (see `agent/src/inspect/golang/types.rs`).
fn moduledata(table: Table, go_minor: u32) -> Vec<u8> {
    let header_len = match table {
        Table::Go116 => 64,
        Table::Go118 { .. } | Table::Go126 => 72,
    };
    let mut words = vec![0u64; 50];
    words[0] = BASE + PCLNTAB_AT;
    words[1] = BASE + PCLNTAB_AT + header_len;
    words[22] = BASE + TEXT_AT;
    let types = BASE + TYPES_AT;
    let etypes = types + types_region().len() as u64;
    let (types_at, etypes_at, itabs_at) = match go_minor {
        17 => (35, 36, 43),
        18..=19 => (35, 36, 45),
        20..=25 => (37, 38, 47),
        26 => (37, 38, 48),
        _ => (37, 39, 40),
    };
    words[types_at] = types;
    words[etypes_at] = etypes;
    if go_minor <= 26 {
        // `itablinks []*itab`: the `.itablink` section.
        words[itabs_at] = BASE + ITABLINK_AT;
        words[itabs_at + 1] = 1;
    } else {
        // `itaboffset, itabsize`: the itabs inside the types.
        words[itabs_at] = ITAB_IN_TYPES;
        words[itabs_at + 1] = 32;
    }
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Where the itab lies in [`types_region`].
const ITAB_IN_TYPES: u64 = 144;
/// The name [`types_region`]'s itab resolves to.
const ITAB_TYPE: &str = "*main.fuzzError";

/// Type descriptors (48 bytes: `hash` at 16, `tflag` at 20, `kind` at 23, `str` at 40), an
/// itab and encoded names (flag byte, varint length, bytes): the interface `error`, the
/// pointer type `*main.fuzzError` and its element, which shares the `*`-prefixed string.
fn types_region() -> Vec<u8> {
    const ERROR_NAME: usize = 176;
    const TYPE_NAME: usize = ERROR_NAME + 2 + "error".len();
    let mut t = vec![0u8; TYPE_NAME + 2 + ITAB_TYPE.len()];
    let descriptor = |t: &mut Vec<u8>, at: usize, hash: u32, tflag: u8, kind: u8, name: usize| {
        put_u32(t, at + 16, hash);
        t[at + 20] = tflag;
        t[at + 23] = kind;
        put_u32(t, at + 40, name as u32);
    };
    descriptor(&mut t, 0, 0x1111_1111, 0, 20, ERROR_NAME); // interface
    descriptor(&mut t, 48, 0x5eed_f00d, 0, 22, TYPE_NAME); // pointer
    descriptor(&mut t, 96, 0x0bad_cafe, 1 << 1, 25, TYPE_NAME); // struct, tflagExtraStar
    let itab = ITAB_IN_TYPES as usize;
    let types = BASE + TYPES_AT;
    put_u64(&mut t, itab, types);
    put_u64(&mut t, itab + 8, types + 48);
    put_u32(&mut t, itab + 16, 0x5eed_f00d);
    put_u64(&mut t, itab + 24, BASE + TEXT_AT);
    for (at, name) in [(ERROR_NAME, "error"), (TYPE_NAME, ITAB_TYPE)] {
        t[at] = 0;
        t[at + 1] = name.len() as u8;
        t[at + 2..at + 2 + name.len()].copy_from_slice(name.as_bytes());
    }
    t
}

/// The sentinels the Go linker frames the module information with.
const MODINFO_START: &[u8] = b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6";
const MODINFO_END: &[u8] = b"\xf92C1\x86\x18 r\x00\x82B\x10A\x16\xd8\xf2";

fn modinfo_text(goarch: &str) -> Vec<u8> {
    format!(
        "path\texample.com/httpserver\n\
         mod\texample.com/httpserver\t(devel)\t\n\
         dep\tgolang.org/x/net\tv0.25.0\th1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\
         dep\tgolang.org/x/text\tv0.15.0\t\n\
         =>\t../text\t\t\n\
         build\t-buildmode=exe\n\
         build\t-ldflags=\"-s -w\"\n\
         build\t\"odd=key\"=`raw value`\n\
         build\tCGO_ENABLED=0\n\
         build\tGOARCH={goarch}\n"
    )
    .into_bytes()
}

fn framed(text: &[u8]) -> Vec<u8> {
    [MODINFO_START, text, MODINFO_END].concat()
}

/// A `.go.buildinfo` section for `go_version`, loaded at `BUILDINFO_AT`: the strings inline
/// (Go 1.18+) or behind pointers to Go string headers (before).
fn buildinfo_section(go_version: &str, goarch: &str, inline: bool) -> Vec<u8> {
    let modinfo = framed(&modinfo_text(goarch));
    let mut b = b"\xff Go buildinf:".to_vec();
    b.push(8);
    b.push(if inline { 2 } else { 0 });
    b.resize(32, 0);
    if inline {
        uleb(go_version.len() as u64, &mut b);
        b.extend_from_slice(go_version.as_bytes());
        uleb(modinfo.len() as u64, &mut b);
        b.extend_from_slice(&modinfo);
    } else {
        // Two string headers {data, len} at 32 and 48, their bytes from 64 on.
        let at = BASE + BUILDINFO_AT;
        b.resize(64, 0);
        put_u64(&mut b, 16, at + 32);
        put_u64(&mut b, 24, at + 48);
        put_u64(&mut b, 32, at + 64);
        put_u64(&mut b, 40, go_version.len() as u64);
        put_u64(&mut b, 48, at + 64 + go_version.len() as u64);
        put_u64(&mut b, 56, modinfo.len() as u64);
        b.extend_from_slice(go_version.as_bytes());
        b.extend_from_slice(&modinfo);
    }
    b
}

/// One synthetic Go binary.
struct Shape {
    name: &'static str,
    arch: Arch,
    table: Table,
    go_version: &'static str,
    /// Build information inline (Go 1.18+) rather than behind pointers.
    inline: bool,
    /// Section headers present (else readers must go through the segments).
    sections: bool,
}

const SHAPES: &[Shape] = &[
    Shape {
        name: "go1.17-amd64",
        arch: Arch::X86_64,
        table: Table::Go116,
        go_version: "go1.17.13",
        inline: false,
        sections: true,
    },
    Shape {
        name: "go1.18-arm64",
        arch: Arch::Aarch64,
        table: Table::Go118 { magic: 0xffff_fff0 },
        go_version: "go1.18.10",
        inline: true,
        sections: true,
    },
    Shape {
        name: "go1.22-amd64",
        arch: Arch::X86_64,
        table: Table::Go118 { magic: 0xffff_fff1 },
        go_version: "go1.22.12",
        inline: true,
        sections: true,
    },
    Shape {
        name: "go1.22-amd64-no-sections",
        arch: Arch::X86_64,
        table: Table::Go118 { magic: 0xffff_fff1 },
        go_version: "go1.22.12",
        inline: true,
        sections: false,
    },
    Shape {
        name: "go1.26-amd64",
        arch: Arch::X86_64,
        table: Table::Go126,
        go_version: "go1.26.11",
        inline: true,
        sections: true,
    },
    Shape {
        name: "go1.26-arm64-no-sections",
        arch: Arch::Aarch64,
        table: Table::Go126,
        go_version: "go1.26.11",
        inline: true,
        sections: false,
    },
    Shape {
        name: "go1.27-amd64",
        arch: Arch::X86_64,
        table: Table::Go126,
        go_version: "go1.27.4",
        inline: true,
        sections: true,
    },
];

/// Small Go-shaped ELF files: each function-table layout, both build-information layouts,
/// each module-data layout, both architectures, and some without section headers. Each is
/// checked to parse, so the seeds keep reaching deep into the parsers as those change.
fn synthetic_go_binaries() -> Result<Vec<Seed>> {
    let mut seeds = Vec::new();
    for shape in SHAPES {
        let go = GoVersion::parse(shape.go_version).context("a shape's Go version")?;
        let parts = [
            Part::loaded(".text", TEXT_AT, PF_R | PF_X, text(shape.arch)),
            Part::loaded(
                ".gopclntab",
                PCLNTAB_AT,
                PF_R,
                pclntab(shape.table, shape.arch),
            ),
            Part::loaded(
                ".go.buildinfo",
                BUILDINFO_AT,
                PF_R | PF_W,
                buildinfo_section(shape.go_version, shape.arch.go_name(), shape.inline),
            ),
            Part::loaded(
                ".go.module",
                MODULE_AT,
                PF_R | PF_W,
                moduledata(shape.table, go.minor),
            ),
            Part::loaded(".rodata", TYPES_AT, PF_R, types_region()),
            Part::loaded(
                ".itablink",
                ITABLINK_AT,
                PF_R,
                (BASE + TYPES_AT + ITAB_IN_TYPES).to_le_bytes().to_vec(),
            ),
        ];
        let image = elf_image(shape.arch, &parts, shape.sections);
        check_go_seed(shape, &image).with_context(|| {
            format!(
                "the synthetic seed {} no longer parses: update xtask/src/fuzz.rs",
                shape.name
            )
        })?;
        seeds.push(Seed::new(shape.name, image));
    }
    Ok(seeds)
}

/// Checks that the agent reads a synthetic binary as intended.
fn check_go_seed(shape: &Shape, image: &[u8]) -> Result<()> {
    let elf = ElfFile::from_bytes(PathBuf::from(shape.name), image.to_vec())?;
    let table = Pclntab::parse(&elf)?;
    let found = table.find(&[SERVE_HTTP]);
    let entry = BASE + TEXT_AT + FUNCTION_SIZE;
    ensure!(
        found.get(SERVE_HTTP)
            == Some(&FuncRange {
                entry,
                end: entry + FUNCTION_SIZE
            }),
        "ServeHTTP found at {found:x?}"
    );
    let info = buildinfo::read(&elf)?;
    ensure!(
        info.go_version == shape.go_version,
        "read {}",
        info.go_version
    );
    ensure!(
        info.module("golang.org/x/net").is_some() && info.setting("-ldflags") == Some("-s -w"),
        "module information read as {info:?}"
    );
    let go = golang::analyze(&elf)?.context("not read as a Go binary")?;
    let names = TypeNames::new(&elf, go.version).context("no type names")?;
    let itab = BASE + TYPES_AT + ITAB_IN_TYPES;
    ensure!(
        names.itab_type(&elf, itab).as_deref() == Some(ITAB_TYPE)
            && names.type_name(&elf, BASE + TYPES_AT + 96).as_deref()
                == ITAB_TYPE.strip_prefix('*'),
        "the itab names {:?}",
        names.itab_type(&elf, itab)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Rust symbols

/// Longest mutated input for `rust_symbols`: the seeds are 3–10 KB; every execution demangles
/// every symbol, so longer inputs mostly slow the run down.
const RUST_SYMBOLS_MAX_LEN: usize = 24 << 10;
/// Copies of one function kept in a seed (a generic function has one per instantiation; two
/// still exercise the "N copies" path).
const COPIES_PER_PATH: usize = 2;
/// Symbols of the probed crates that are no candidate, kept for variety.
const OTHER_SYMBOLS: usize = 8;
/// Bytes of code given each function of a seed.
const SLOT: u64 = 0x10;
const STT_FUNC: u8 = 2;
const STB_GLOBAL: u8 = 1;
const SHT_SYMTAB: u32 = 2;
const SHT_STRTAB: u32 = 3;

/// Every Rust build `cargo xtask fixtures` made (`target/fixtures/rust/manifest.tsv`).
fn rust_fixtures() -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string(fixtures::out_dir().join("rust/manifest.tsv")) else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split('\t').nth(3))
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .collect()
}

/// The function symbols of `.symtab`: (mangled name, address, size).
fn function_symbols(elf: &ElfFile) -> Vec<(String, u64, u64)> {
    let (Some(symtab), Some(strtab)) = (elf.section(".symtab"), elf.section(".strtab")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for sym in symtab.data.chunks_exact(24) {
        let name_at = u32::from_le_bytes(sym[0..4].try_into().expect("4 bytes")) as usize;
        let shndx = u16::from_le_bytes(sym[6..8].try_into().expect("2 bytes"));
        let address = u64::from_le_bytes(sym[8..16].try_into().expect("8 bytes"));
        let size = u64::from_le_bytes(sym[16..24].try_into().expect("8 bytes"));
        if sym[4] & 0xf != STT_FUNC || shndx == 0 || size == 0 {
            continue;
        }
        let Some(rest) = strtab.data.get(name_at..) else {
            continue;
        };
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        if let Ok(name) = std::str::from_utf8(&rest[..end]) {
            out.push((name.to_string(), address, size));
        }
    }
    out
}

/// Every function path a Rust plan may probe.
fn candidate_paths() -> Vec<&'static str> {
    use spanhook::plan::rust::RUST_PROBES;
    RUST_PROBES
        .iter()
        .flat_map(|p| {
            p.strategies
                .iter()
                .flat_map(|s| s.parts.iter())
                .chain(p.extras.iter())
        })
        .flat_map(|part| part.candidates.iter().map(|c| c.path))
        .collect()
}

/// Which capabilities a plan traces, as text (what a cut-down seed must keep).
fn traced(elf: &ElfFile, symbols: &spanhook::inspect::rust::RustSymbols) -> Result<Vec<String>> {
    use spanhook::{inspect::rust, plan::rust::plan_rust};
    let binary = rust::analyze(elf, symbols).context("not read as a Rust program")?;
    let (plan, _) = plan_rust(elf, &binary, symbols, Default::default());
    Ok(plan
        .capabilities
        .iter()
        .map(|c| format!("{:?}: {}", c.capability, plan.traces(c.capability)))
        .collect())
}

/// Small ELF files with each Rust fixture's candidate functions (and a few others of the
/// same crates), its `.comment` and registry paths, checked to plan the capabilities the
/// whole binary plans; the mangled names as text; a few hand-made names.
fn rust_symbols_seeds() -> Result<Vec<Seed>> {
    let mut seeds = vec![Seed::new(
        "names-synthetic",
        "_RNvCs1234_7mycrate3foo\n\
         _ZN5tokio7runtime4task3raw4poll17h0123456789abcdefE\n\
         _RINvNtNtCs1234_5tokio7runtime4task4pollINtCs5678_4main3FutEB6_E\n\
         hyper-util-0.1.21\ntonic-0.14.0-alpha.1\n\
         /index.crates.io-1949cf8c6b5b557f/hyper-1.12.0/src/proto/h1/role.rs\n",
    )];
    let candidates = candidate_paths();
    let mut seen_names = std::collections::HashSet::new();
    for path in rust_fixtures() {
        let elf = ElfFile::open(&path)?;
        let all = function_symbols(&elf);
        if all.is_empty() {
            continue; // stripped: the whole binary is run once, there is nothing to cut
        }
        // The agent's own reading says which symbols are the candidates (by address).
        let symbols = spanhook::inspect::rust::RustSymbols::read(&elf);
        let mut wanted = std::collections::HashSet::new();
        for candidate in &candidates {
            for f in symbols.find(candidate).iter().take(COPIES_PER_PATH) {
                wanted.insert(f.address);
            }
        }
        let mut kept = Vec::new();
        let mut others = 0;
        for (name, address, _) in &all {
            let rust = name.starts_with("_ZN") || name.starts_with("_R");
            if !rust {
                continue;
            }
            // Every name at a wanted address: identical functions folded into one keep each.
            if wanted.contains(address) {
                kept.push(name.clone());
            } else if others < OTHER_SYMBOLS
                && ["5hyper", "2h2", "5tonic", "7reqwest"]
                    .iter()
                    .any(|c| name.contains(c))
            {
                others += 1;
                kept.push(name.clone());
            }
        }
        // One seed per distinct symbol set (the sets and profiles often agree).
        let key = kept.join("\n");
        if !seen_names.insert(key.clone()) {
            continue;
        }
        let crates = spanhook::inspect::rust::crates::embedded(&elf);
        let mut rodata = b"/rustc/0000/library/std/src/rt.rs\0".to_vec();
        for c in &crates {
            rodata.extend_from_slice(
                format!(
                    "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/{}-{}/src/lib.rs\0",
                    c.name, c.version
                )
                .as_bytes(),
            );
        }
        let comment = elf
            .section(".comment")
            .map(|s| s.data.to_vec())
            .unwrap_or_default();
        let image = rust_image(&kept, comment, rodata);
        let name = rust_fixture_name(&path);
        check_rust_seed(&elf, &image)
            .with_context(|| format!("the cut-down symbols of {}", path.display()))?;
        ensure!(
            image.len() <= RUST_SYMBOLS_MAX_LEN,
            "the seed of {} is {} bytes, over rust_symbols' -max_len",
            path.display(),
            image.len()
        );
        seeds.push(Seed::new(format!("{name}-names"), key));
        seeds.push(Seed::new(name, image));
    }
    Ok(seeds)
}

/// `program-set-profile` from `…/rust/<program>/<set>/<profile>/<binary>`.
fn rust_fixture_name(path: &Path) -> String {
    let parts: Vec<String> = path
        .iter()
        .rev()
        .skip(1)
        .take(3)
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    parts.into_iter().rev().collect::<Vec<_>>().join("-")
}

/// Checks that a cut-down image plans what the whole binary plans.
fn check_rust_seed(whole: &ElfFile, image: &[u8]) -> Result<()> {
    use spanhook::inspect::rust::RustSymbols;
    let want = traced(whole, &RustSymbols::read(whole))?;
    let elf = ElfFile::from_bytes(PathBuf::from("seed"), image.to_vec())?;
    let got = traced(&elf, &RustSymbols::read(&elf))?;
    ensure!(got == want, "plans {got:?}, the whole binary {want:?}");
    Ok(())
}

/// An x86-64 ELF file whose `.symtab` holds `names` as functions of `SLOT` bytes each in
/// `.text`, with `.comment` and `.rodata` as given.
fn rust_image(names: &[String], comment: Vec<u8>, rodata: Vec<u8>) -> Vec<u8> {
    let mut strtab = vec![0u8];
    let mut symtab = vec![0u8; 24];
    for (i, name) in names.iter().enumerate() {
        let mut sym = [0u8; 24];
        put_u32(&mut sym, 0, strtab.len() as u32);
        sym[4] = STB_GLOBAL << 4 | STT_FUNC;
        put_u16(&mut sym, 6, 1); // .text, the first part
        put_u64(&mut sym, 8, BASE + TEXT_AT + SLOT * i as u64);
        put_u64(&mut sym, 16, SLOT);
        symtab.extend_from_slice(&sym);
        strtab.extend_from_slice(name.as_bytes());
        strtab.push(0);
    }
    let text = vec![0xc3u8; (SLOT as usize) * names.len().max(1)];
    let parts = [
        Part::loaded(".text", TEXT_AT, PF_R | PF_X, text),
        Part::unloaded(".comment", comment),
        Part::unloaded(".rodata", rodata),
        Part::unloaded(".symtab", symtab),
        Part::unloaded(".strtab", strtab),
    ];
    let mut image = elf_image(Arch::X86_64, &parts, true);
    // `elf_image` writes every section as PROGBITS: make the symbol table one.
    let shoff = u64::from_le_bytes(image[40..48].try_into().expect("8 bytes")) as usize;
    let header = |index: usize| shoff + 64 * index;
    put_u32(&mut image, header(4) + 4, SHT_SYMTAB);
    put_u32(&mut image, header(4) + 40, 5); // sh_link: .strtab
    put_u32(&mut image, header(4) + 44, 1); // sh_info: the first global symbol
    put_u64(&mut image, header(4) + 56, 24); // sh_entsize
    put_u32(&mut image, header(5) + 4, SHT_STRTAB);
    image
}

// ---------------------------------------------------------------------------------------------
// traceparent

/// Header values: valid ones of each version and flag, the W3C specification's invalid
/// examples, whitespace around.
fn traceparent_seeds() -> Result<Vec<Seed>> {
    use spanhook::reassembly::Traceparent;
    let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let cases: &[(&str, &str, bool)] = &[
        ("valid", valid, true),
        (
            "unsampled",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            true,
        ),
        (
            "future-version",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-the-future-holds",
            true,
        ),
        (
            "whitespace",
            " \t00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ",
            true,
        ),
        (
            "uppercase",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            false,
        ),
        (
            "zero-trace",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            false,
        ),
        (
            "zero-parent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            false,
        ),
        (
            "version-ff",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            false,
        ),
        (
            "version-00-long",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-00",
            false,
        ),
        (
            "short",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            false,
        ),
        (
            "separators",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            false,
        ),
        ("empty", "", false),
    ];
    let mut seeds = Vec::new();
    for &(name, value, ok) in cases {
        let parsed = Traceparent::parse(value.as_bytes());
        ensure!(
            matches!(parsed, Traceparent::Valid { .. }) == ok,
            "the seed {name} parses as {parsed:?}"
        );
        seeds.push(Seed::new(name, value));
    }
    Ok(seeds)
}

// ---------------------------------------------------------------------------------------------
// HTTP/2 frames and the HPACK field

/// One frame of an `h2_hpack` input: type, flags, stream, length (`0, n` for n < 256,
/// `0xf0 | high, low` up to 1023, `0xff, n` for 16384 − n).
fn h2_frame(ty: u8, flags: u8, stream: u8, len: [u8; 2]) -> [u8; 5] {
    [ty, flags, stream, len[0], len[1]]
}

/// Inputs of `fuzz/fuzz_targets/h2_hpack.rs`: queued streams, frames, cut points.
fn h2_seeds() -> Result<Vec<Seed>> {
    const END_HEADERS: u8 = 0x4;
    const END_STREAM: u8 = 0x1;
    const PADDED: u8 = 0x8;
    let settings = h2_frame(4, 0, 0, [0, 18]);
    let window = h2_frame(8, 0, 0, [0, 4]);
    let unary = |stream: u8| {
        [
            h2_frame(1, END_HEADERS, stream, [0xf1, 20]),
            h2_frame(0, 0, stream, [0, 5]),
            h2_frame(0, END_STREAM, stream, [0, 30]),
        ]
    };
    let seed = |queued: u8, frames: &[[u8; 5]], cuts: &[u16]| {
        let mut data = vec![queued];
        data.extend(frames.iter().flatten());
        data.extend(cuts.iter().flat_map(|c| c.to_be_bytes()));
        data
    };
    let mut first = vec![settings, window];
    first.extend(unary(1));
    let mut streams = vec![settings];
    for s in 1..=3 {
        streams.extend(unary(s));
    }
    // Offsets: SETTINGS 9 + 18, WINDOW_UPDATE 9 + 4; the HEADERS header starts at 40, its
    // block (276 bytes) at 49.
    Ok(vec![
        Seed::new("grpc-unary-one-write", seed(0b1, &first, &[])),
        Seed::new("grpc-unary-cut-in-header", seed(0b1, &first, &[44])),
        Seed::new(
            "grpc-unary-cut-in-block",
            seed(0b1, &first, &[40, 100, 170]),
        ),
        Seed::new(
            "grpc-three-streams",
            seed(0b101, &streams, &[30, 60, 200, 201, 202, 300]),
        ),
        Seed::new(
            "continuation-padding-too-large",
            seed(
                0b111,
                &[
                    h2_frame(1, 0, 1, [0, 40]),
                    h2_frame(9, END_HEADERS, 1, [0, 20]),
                    h2_frame(1, END_HEADERS | PADDED, 2, [0, 50]),
                    h2_frame(1, END_HEADERS, 3, [0xff, 10]),
                    h2_frame(1, END_HEADERS, 3, [0, 10]),
                    h2_frame(3, 0, 2, [0, 4]),
                    h2_frame(6, 0, 0, [0, 8]),
                ],
                &[5, 16400],
            ),
        ),
        Seed::new(
            "small-writes",
            seed(0b11, &streams, &(1..60).map(|i| i * 7).collect::<Vec<_>>()),
        ),
    ])
}
