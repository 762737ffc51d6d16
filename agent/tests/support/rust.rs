//! The Rust fixtures built by `cargo xtask fixtures` (xtask/src/fixtures_rust.rs).

use std::path::PathBuf;

/// A row of `target/fixtures/rust/manifest.tsv`.
#[derive(Clone, Debug)]
pub struct RustFixture {
    /// The program (directory under `fixtures/rust`, or a third-party label).
    pub program: String,
    /// The dependency set (`newest`, `oldest`, …; `<crate>-<version>` for third-party ones).
    pub set: String,
    /// `release`, `lto`, `stripped`, or `thirdparty`.
    pub profile: String,
    /// The binary.
    pub path: PathBuf,
}

impl RustFixture {
    /// "httpchain newest release", for messages.
    pub fn label(&self) -> String {
        format!("{} {} {}", self.program, self.set, self.profile)
    }
}

/// Every Rust fixture built, failing loudly when none were.
pub fn all() -> Vec<RustFixture> {
    let manifest = super::fixtures_dir().join("rust/manifest.tsv");
    let text = std::fs::read_to_string(&manifest).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}\nbuild the fixtures first: `cargo xtask fixtures` (cargo xtask test does it)",
            manifest.display()
        )
    });
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            RustFixture {
                program: c[0].into(),
                set: c[1].into(),
                profile: c[2].into(),
                path: PathBuf::from(c[3]),
            }
        })
        .collect()
}

/// One fixture, failing loudly when it was not built.
pub fn fixture(program: &str, set: &str, profile: &str) -> RustFixture {
    all()
        .into_iter()
        .find(|f| f.program == program && f.set == set && f.profile == profile)
        .unwrap_or_else(|| {
            panic!(
                "Rust fixture {program} {set} {profile} is not built; run `cargo xtask fixtures`"
            )
        })
}

/// Every built set of `program` in `profile`.
pub fn sets(program: &str, profile: &str) -> Vec<RustFixture> {
    let found: Vec<RustFixture> = all()
        .into_iter()
        .filter(|f| f.program == program && f.profile == profile)
        .collect();
    assert!(
        !found.is_empty(),
        "no Rust fixture {program} ({profile}) is built; run `cargo xtask fixtures`"
    );
    found
}
