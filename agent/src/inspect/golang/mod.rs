//! Go binaries: which Go release built them, which modules they contain, and where their
//! functions are — from Go's own tables, which survive stripping.
//!
//! [`analyze`] reads the build information (`buildinfo`) to tell a Go binary and its release;
//! [`find_functions`] finds function ranges in the function table (`pclntab`), falling back to
//! the ELF symbol table for names the function table lacks.

pub mod buildinfo;
pub mod pclntab;
pub mod types;
pub mod version;

use std::collections::HashMap;

pub use buildinfo::{BuildInfo, Module};
pub use pclntab::FuncRange;
pub use version::GoVersion;

use self::{buildinfo::BuildInfoError, pclntab::Pclntab, pclntab::PclntabError};
use super::elf::{Arch, ElfFile};

/// Why a Go binary could not be analysed.
#[derive(Debug, thiserror::Error)]
pub enum GoError {
    /// The build information could not be read.
    #[error(transparent)]
    BuildInfo(#[from] BuildInfoError),
    /// The function table could not be read.
    #[error(transparent)]
    Pclntab(#[from] PclntabError),
    /// The binary was built by a Go release spanhook cannot probe.
    #[error(
        "built with Go {version}, which spanhook cannot probe: it needs the register ABI \
         (Go 1.17 or later on amd64, Go 1.18 or later on arm64)"
    )]
    UnsupportedVersion {
        /// The version string recorded in the binary.
        version: String,
    },
}

/// What a Go binary is.
#[derive(Debug, Clone)]
pub struct GoBinary {
    /// The Go release that built it.
    pub version: GoVersion,
    /// Its build information (module versions, build settings).
    pub build: BuildInfo,
}

/// The oldest release whose calling convention the probes understand on `arch`.
pub fn minimum_version(arch: Arch) -> GoVersion {
    match arch {
        Arch::X86_64 => GoVersion::new(1, 17, 0),
        Arch::Aarch64 => GoVersion::new(1, 18, 0),
    }
}

/// Tells whether `elf` is a Go binary and which release built it. `Ok(None)` when it is not
/// a Go binary (no build information and no function table).
pub fn analyze(elf: &ElfFile) -> Result<Option<GoBinary>, GoError> {
    let build = match buildinfo::read(elf) {
        Ok(b) => b,
        Err(BuildInfoError::NotFound) => {
            // Without build information it is either not Go, or Go older than 1.13.
            return match Pclntab::parse(elf) {
                Err(PclntabError::NotFound) => Ok(None),
                Err(e) => Err(e.into()),
                Ok(_) => Err(BuildInfoError::NotFound.into()),
            };
        }
        Err(e) => return Err(e.into()),
    };
    let version = release_of(&build.go_version).ok_or_else(|| GoError::UnsupportedVersion {
        version: build.go_version.clone(),
    })?;
    if version < minimum_version(elf.arch()) {
        return Err(GoError::UnsupportedVersion {
            version: build.go_version.clone(),
        });
    }
    Ok(Some(GoBinary { version, build }))
}

/// The release of a version string, accepting development builds by the release they lead
/// to (`devel go1.27-abcdef …` → 1.27.0).
fn release_of(go_version: &str) -> Option<GoVersion> {
    GoVersion::parse(go_version).or_else(|| {
        let rest = go_version.trim().strip_prefix("devel")?.trim_start();
        GoVersion::parse(rest)
    })
}

/// Finds the functions called `names` (Go's full names, e.g.
/// `net/http.serverHandler.ServeHTTP`). The function table is read first (it is present in
/// stripped binaries); the ELF symbol table (address and size) fills in names it lacks.
/// Names found nowhere are absent from the map.
pub fn find_functions(
    elf: &ElfFile,
    names: &[&str],
) -> Result<HashMap<String, FuncRange>, GoError> {
    let mut found = match Pclntab::parse(elf) {
        Ok(table) => table.find(names),
        Err(PclntabError::NotFound | PclntabError::Malformed(_)) if elf.has_symtab() => {
            HashMap::new()
        }
        Err(e) => return Err(e.into()),
    };
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !found.contains_key(*n))
        .collect();
    if !missing.is_empty() && elf.has_symtab() {
        for (name, sym) in elf.symbols(&missing) {
            if sym.size > 0 {
                let range = FuncRange {
                    entry: sym.address,
                    end: sym.address.saturating_add(sym.size),
                };
                found.insert(name, range);
            }
        }
    }
    Ok(found)
}

/// Locating the Go fixture binaries built by `cargo xtask fixtures`, and asking the Go
/// toolchain of their release for ground truth.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::{
        collections::HashMap,
        path::{Path, PathBuf},
        process::Command,
        sync::{Mutex, OnceLock},
    };

    use crate::inspect::elf::Arch;

    /// One built fixture, as listed in `target/fixtures/go/manifest.tsv`.
    #[derive(Debug, Clone)]
    pub(crate) struct Fixture {
        /// The program (directory under `fixtures/go`).
        pub(crate) program: String,
        /// The Go release, e.g. `1.22.12`.
        pub(crate) go: String,
        /// `plain`, `stripped`, `pie`, `cgo`, `arm64`, `arm64-stripped`.
        pub(crate) variant: String,
        /// The architecture.
        pub(crate) arch: Arch,
        /// Whether symbols and DWARF were stripped.
        pub(crate) stripped: bool,
        /// The binary.
        pub(crate) path: PathBuf,
    }

    impl Fixture {
        /// The Go release as a version.
        pub(crate) fn version(&self) -> super::GoVersion {
            super::GoVersion::parse(&self.go).expect("manifest release")
        }

        /// The unstripped binary with the same layout family: `plain` for amd64, `arm64` for
        /// arm64, from the same program and release.
        pub(crate) fn unstripped_twin(&self) -> Fixture {
            let variant = match self.arch {
                Arch::X86_64 => "plain",
                Arch::Aarch64 => "arm64",
            };
            all()
                .into_iter()
                .find(|f| f.program == self.program && f.go == self.go && f.variant == variant)
                .unwrap_or_else(|| {
                    panic!(
                        "no {variant} twin of {} in the manifest; run `cargo xtask fixtures` first",
                        self.path.display()
                    )
                })
        }
    }

    fn target_dir() -> PathBuf {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
    }

    /// Every build of the `httpserver` fixture (the one built across the whole matrix).
    /// Panics when there is none: the tests that use fixtures must never pass by skipping.
    pub(crate) fn all() -> Vec<Fixture> {
        static ALL: OnceLock<Vec<Fixture>> = OnceLock::new();
        ALL.get_or_init(|| {
            let manifest = target_dir().join("fixtures/go/manifest.tsv");
            let text = std::fs::read_to_string(&manifest).unwrap_or_else(|e| {
                panic!(
                    "cannot read {}: {e}; run `cargo xtask fixtures` first",
                    manifest.display()
                )
            });
            let fixtures: Vec<Fixture> = text
                .lines()
                .filter(|l| !l.starts_with('#') && l.starts_with("httpserver\t"))
                .map(|l| {
                    let c: Vec<&str> = l.split('\t').collect();
                    assert_eq!(c.len(), 6, "bad manifest line {l:?}");
                    let path = PathBuf::from(c[5]);
                    assert!(
                        path.is_file(),
                        "{} is listed but missing; run `cargo xtask fixtures` first",
                        path.display()
                    );
                    Fixture {
                        program: c[0].to_string(),
                        go: c[1].to_string(),
                        variant: c[2].to_string(),
                        arch: match c[3] {
                            "amd64" => Arch::X86_64,
                            "arm64" => Arch::Aarch64,
                            other => panic!("unknown arch {other} in the manifest"),
                        },
                        stripped: c[4] == "true",
                        path,
                    }
                })
                .collect();
            assert!(
                !fixtures.is_empty(),
                "{} lists no binary; run `cargo xtask fixtures` first",
                manifest.display()
            );
            fixtures
        })
        .clone()
    }

    /// Fixtures of one variant.
    pub(crate) fn variant(name: &str) -> Vec<Fixture> {
        all().into_iter().filter(|f| f.variant == name).collect()
    }

    /// Runs `go tool <args>` with Go `release`, feeding `stdin`; returns stdout.
    pub(crate) fn go_tool(release: &str, args: &[&str], stdin: Option<&str>) -> String {
        use std::io::Write;
        let mut cmd = Command::new(go_binary());
        cmd.arg("tool")
            .args(args)
            .env("GOTOOLCHAIN", format!("go{release}"))
            .env("GOFLAGS", "-mod=mod")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run go tool {args:?}: {e}"));
        let mut pipe = child.stdin.take().expect("stdin");
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes()).expect("write to go tool");
        }
        drop(pipe);
        let out = child.wait_with_output().expect("go tool");
        assert!(
            out.status.success(),
            "go tool {args:?} with go{release} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("go tool prints UTF-8")
    }

    fn go_binary() -> PathBuf {
        let local = PathBuf::from("/usr/local/go/bin/go");
        let on_path = std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("go"))
                .find(|g| g.is_file())
        });
        on_path.unwrap_or(local)
    }

    /// Symbol name → (address, size).
    pub(crate) type SymbolTable = HashMap<String, (u64, u64)>;

    /// `go tool nm -size` of an unstripped binary. Cached per path.
    pub(crate) fn nm(fixture: &Fixture) -> SymbolTable {
        static CACHE: Mutex<Option<HashMap<PathBuf, SymbolTable>>> = Mutex::new(None);
        if let Some(hit) = CACHE
            .lock()
            .unwrap()
            .get_or_insert_with(HashMap::new)
            .get(&fixture.path)
        {
            return hit.clone();
        }
        let path = fixture.path.to_str().expect("UTF-8 path");
        let out = go_tool(&fixture.go, &["nm", "-size", path], None);
        let mut table = HashMap::new();
        for line in out.lines() {
            // "  63ba40        198 T net/http.serverHandler.ServeHTTP"
            let mut cols = line.split_whitespace();
            let (Some(addr), Some(size), Some(_kind)) = (cols.next(), cols.next(), cols.next())
            else {
                continue;
            };
            let name: Vec<&str> = cols.collect();
            let (Ok(addr), Ok(size)) = (u64::from_str_radix(addr, 16), size.parse()) else {
                continue;
            };
            table.entry(name.join(" ")).or_insert((addr, size));
        }
        CACHE
            .lock()
            .unwrap()
            .get_or_insert_with(HashMap::new)
            .insert(fixture.path.clone(), table.clone());
        table
    }

    /// One instruction as `go tool objdump` prints it.
    #[derive(Debug, Clone)]
    pub(crate) struct Instruction {
        /// Its address.
        pub(crate) address: u64,
        /// Its encoding.
        pub(crate) bytes: Vec<u8>,
        /// Go assembler syntax, e.g. `RET` or `MOVQ SP, BP`.
        pub(crate) text: String,
    }

    impl Instruction {
        /// Whether Go's disassembler calls it a return.
        pub(crate) fn is_return(&self) -> bool {
            let mnemonic = self.text.split_whitespace().next().unwrap_or("");
            matches!(
                mnemonic,
                "RET" | "RETL" | "RETQ" | "RETFQ" | "RETFL" | "LRET"
            )
        }
    }

    /// The instructions of `function` (an exact name), disassembled by `go tool objdump` of
    /// the fixture's own release.
    pub(crate) fn objdump(fixture: &Fixture, function: &str) -> Vec<Instruction> {
        type Cache = HashMap<(PathBuf, String), Vec<Instruction>>;
        static CACHE: Mutex<Option<Cache>> = Mutex::new(None);
        let key = (fixture.path.clone(), function.to_string());
        if let Some(hit) = CACHE
            .lock()
            .unwrap()
            .get_or_insert_with(HashMap::new)
            .get(&key)
        {
            return hit.clone();
        }
        let instructions = run_objdump(fixture, function);
        CACHE
            .lock()
            .unwrap()
            .get_or_insert_with(HashMap::new)
            .insert(key, instructions.clone());
        instructions
    }

    fn run_objdump(fixture: &Fixture, function: &str) -> Vec<Instruction> {
        let path = fixture.path.to_str().expect("UTF-8 path");
        let escaped: String = function
            .chars()
            .flat_map(|c| {
                let meta = "\\.+*?()|[]{}^$".contains(c);
                meta.then_some('\\').into_iter().chain([c])
            })
            .collect();
        let pattern = format!("^{escaped}$");
        let out = go_tool(&fixture.go, &["objdump", "-s", &pattern, path], None);
        let instructions: Vec<Instruction> = out
            .lines()
            .filter_map(|line| {
                // "  server.go:3133\t0x63ba40\t\t493b6610\t\tCMPQ SP, 0x10(R14)\t…"
                let mut cols = line.split('\t').map(str::trim).filter(|c| !c.is_empty());
                let _location = cols.next()?;
                let address = u64::from_str_radix(cols.next()?.strip_prefix("0x")?, 16).ok()?;
                let hex = cols.next()?;
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                    .collect::<Option<Vec<u8>>>()?;
                let text = cols.collect::<Vec<_>>().join(" ");
                Some(Instruction {
                    address,
                    bytes,
                    text,
                })
            })
            .collect();
        assert!(
            !instructions.is_empty(),
            "go tool objdump printed nothing for {function} in {path}"
        );
        instructions
    }

    /// What `go tool addr2line` (which reads the function table, stripped or not) says is at
    /// each address: the function names, in order. The newest release's tool is used: it
    /// reads every older format, and Go 1.17's cannot find a PIE's table.
    pub(crate) fn addr2line(fixture: &Fixture, addrs: &[u64]) -> Vec<String> {
        let path = fixture.path.to_str().expect("UTF-8 path");
        let input: String = addrs.iter().map(|a| format!("{a:#x}\n")).collect();
        let newest = all()
            .into_iter()
            .max_by_key(Fixture::version)
            .expect("fixtures")
            .go;
        let out = go_tool(&newest, &["addr2line", path], Some(&input));
        out.lines().step_by(2).map(str::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{fixtures, *};

    #[test]
    fn analyzes_every_fixture() {
        for f in fixtures::all() {
            let elf = ElfFile::open(&f.path).unwrap();
            match analyze(&elf) {
                Ok(Some(go)) => {
                    assert_eq!(go.version, f.version(), "{}", f.path.display());
                    assert!(go.version >= minimum_version(f.arch));
                }
                Err(GoError::UnsupportedVersion { version }) => {
                    // Only arm64 before Go 1.18 lacks the register ABI.
                    assert_eq!(f.arch, Arch::Aarch64, "{}", f.path.display());
                    assert!(f.version() < GoVersion::new(1, 18, 0), "{version}");
                }
                other => panic!("{}: {other:?}", f.path.display()),
            }
        }
    }

    #[test]
    fn finds_functions_in_stripped_and_unstripped_binaries() {
        let names = [
            "net/http.serverHandler.ServeHTTP",
            "net/http.(*Transport).roundTrip",
            "runtime.newproc1",
            "main.main",
            "no.such.function",
        ];
        for f in fixtures::all() {
            let elf = ElfFile::open(&f.path).unwrap();
            let found = find_functions(&elf, &names).unwrap();
            assert_eq!(found.len(), 4, "{}: {found:?}", f.path.display());
            assert!(!found.contains_key("no.such.function"));
            for r in found.values() {
                assert!(r.entry < r.end, "{}: {r:?}", f.path.display());
            }
        }
    }

    #[test]
    fn symtab_fills_names_the_pclntab_lacks() {
        let f = &fixtures::variant("plain")[0];
        let elf = ElfFile::open(&f.path).unwrap();
        // runtime.text is a symbol but not a function in the table; runtime.etext neither.
        let found = find_functions(&elf, &["runtime.text", "runtime.main"]).unwrap();
        let sym = elf.symbol("runtime.main").unwrap();
        assert_eq!(found["runtime.main"].entry, sym.address);
        assert!(
            !found.contains_key("runtime.text"),
            "zero-size symbols are not functions"
        );
    }

    #[test]
    fn non_go_binaries_are_not_go() {
        let me = std::env::current_exe().unwrap();
        let elf = ElfFile::open(&me).unwrap();
        assert!(analyze(&elf).unwrap().is_none());
    }

    #[test]
    fn development_builds_count_as_their_release() {
        assert_eq!(
            release_of("devel go1.27-8b2d1f0 Tue Jan 6 2026"),
            Some(GoVersion::new(1, 27, 0))
        );
        assert_eq!(release_of("devel +abcdef"), None);
    }
}
