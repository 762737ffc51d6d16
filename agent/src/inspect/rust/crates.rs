//! Crate versions from the source paths a binary embeds.
//!
//! Panic messages and `#[track_caller]` locations carry the path of the source file they come
//! from; for a crate built from a registry that path is
//! `…/registry/src/index.crates.io-<hash>/<name>-<version>/src/…`. A build that remaps paths
//! (`--remap-path-prefix`, `trim-paths`) reveals nothing, and the list is then empty.

use super::super::elf::ElfFile;

/// A crate and its version, as a path in the binary names them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct CrateVersion {
    /// The crate's package name (e.g. `hyper-util`).
    pub name: String,
    /// Its version (e.g. `0.1.21`).
    pub version: String,
}

const REGISTRY: &[u8] = b"index.crates.io-";

/// Every crate whose registry source path appears in the binary's read-only data.
pub fn embedded(elf: &ElfFile) -> Vec<CrateVersion> {
    let mut out = Vec::new();
    for name in [".rodata", ".rodata.str1.1", ".data.rel.ro"] {
        if let Some(section) = elf.section(name) {
            out.extend(in_bytes(&section.data));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Whether the binary mentions the Rust standard library's sources (`/rustc/<commit>/library/`
/// or `library/std/src/`): a Rust program even when its symbols are gone.
pub fn mentions_rust_std(elf: &ElfFile) -> bool {
    let Some(rodata) = elf.section(".rodata") else {
        return false;
    };
    find(&rodata.data, b"library/std/src/").is_some()
        || find(&rodata.data, b"library/core/src/").is_some()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The crates named by registry paths in `bytes`.
pub fn in_bytes(bytes: &[u8]) -> Vec<CrateVersion> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(pos) = bytes[at..]
        .windows(REGISTRY.len())
        .position(|w| w == REGISTRY)
    {
        let start = at + pos + REGISTRY.len();
        at = start;
        // Skip the registry hash, then read `<name>-<version>` up to the next '/'.
        let Some(slash) = bytes[start..].iter().take(64).position(|&b| b == b'/') else {
            continue;
        };
        let dir_start = start + slash + 1;
        let Some(end) = bytes[dir_start..].iter().take(128).position(|&b| b == b'/') else {
            continue;
        };
        let Ok(dir) = std::str::from_utf8(&bytes[dir_start..dir_start + end]) else {
            continue;
        };
        if let Some(c) = split_name_version(dir) {
            out.push(c);
        }
    }
    out
}

/// `hyper-util-0.1.21` → (`hyper-util`, `0.1.21`): the version is the last `-` part that starts
/// with a digit and looks like semver.
pub fn split_name_version(dir: &str) -> Option<CrateVersion> {
    let bytes = dir.as_bytes();
    let mut i = dir.len();
    while let Some(pos) = dir[..i].rfind('-') {
        let version = &dir[pos + 1..];
        let valid_name = dir[..pos]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if bytes.get(pos + 1).is_some_and(u8::is_ascii_digit)
            && version.split('.').count() >= 3
            && valid_name
            && pos > 0
        {
            return Some(CrateVersion {
                name: dir[..pos].to_string(),
                version: version.to_string(),
            });
        }
        i = pos;
    }
    None
}

/// Orders semver-like versions numerically, pre-releases before their release.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let parse = |v: &str| -> (Vec<u64>, bool) {
        let (core, pre) = match v.split_once(['-', '+']) {
            Some((c, _)) => (c, true),
            None => (v, false),
        };
        (
            core.split('.').map(|p| p.parse().unwrap_or(0)).collect(),
            !pre,
        )
    };
    parse(a).cmp(&parse(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_names_with_dashes_and_versions() {
        let c = split_name_version("hyper-util-0.1.21").unwrap();
        assert_eq!(
            (c.name.as_str(), c.version.as_str()),
            ("hyper-util", "0.1.21")
        );
        let c = split_name_version("h2-0.4.12").unwrap();
        assert_eq!((c.name.as_str(), c.version.as_str()), ("h2", "0.4.12"));
        let c = split_name_version("tonic-0.14.0-alpha.1").unwrap();
        assert_eq!(c.version, "0.14.0-alpha.1");
        assert_eq!(split_name_version("src"), None);
        assert_eq!(split_name_version("-1.0.0"), None);
    }

    #[test]
    fn finds_registry_paths() {
        let data = b"\0/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/hyper-1.12.0/src/proto/h1/role.rs\0junk index.crates.io-xx/bad\0/x/index.crates.io-abc/tokio-1.54.1/src/runtime/mod.rs";
        let got = in_bytes(data);
        assert_eq!(
            got,
            vec![
                CrateVersion {
                    name: "hyper".into(),
                    version: "1.12.0".into()
                },
                CrateVersion {
                    name: "tokio".into(),
                    version: "1.54.1".into()
                },
            ]
        );
    }

    #[test]
    fn orders_versions() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_versions("1.10.0", "1.9.3"), Greater);
        assert_eq!(compare_versions("1.0.0-rc.1", "1.0.0"), Less);
        assert_eq!(compare_versions("0.4.2", "0.4.2"), Equal);
    }
}
