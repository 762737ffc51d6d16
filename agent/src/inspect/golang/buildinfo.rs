//! Go build information: the toolchain release and every module version, as `go version -m`
//! prints them.
//!
//! The linker writes a 32-byte header starting with the magic `\xff Go buildinf:` into
//! `.go.buildinfo` (or, for file formats and linkers that drop the section name, somewhere in
//! the writable data, aligned to 16 bytes). Byte 14 is the pointer size, byte 15 a flag set.
//! From Go 1.18 (flag bit 1) the two strings — the Go version and the module information —
//! follow the header inline, each prefixed by its length as a varint. Before that the header
//! holds two pointers to Go string headers (`{data, len}`) elsewhere in the image.
//!
//! The module information is framed by two 16-byte sentinels and holds tab-separated lines:
//! `path`, `mod` (the main module), `dep`, `=>` (replaces the module on the line before) and,
//! from Go 1.18, `build` settings.

use serde::Serialize;

use crate::inspect::elf::ElfFile;

/// The magic that starts the build information header.
const MAGIC: &[u8] = b"\xff Go buildinf:";
/// Size of the header before inline strings start.
const HEADER_SIZE: usize = 32;
/// The header's alignment.
const ALIGN: usize = 16;
/// Flag: the strings follow the header inline (Go 1.18+).
const FLAG_INLINE: u8 = 0x2;
/// Flag: the file is big-endian (with pointer-format headers).
const FLAG_BIG_ENDIAN: u8 = 0x1;
/// Length of each sentinel framing the module information.
const SENTINEL_LEN: usize = 16;
/// Longest string accepted from the pointer format, so a corrupt length cannot make us copy a
/// whole segment.
const MAX_POINTER_STRING: u64 = 16 << 20;

/// A module the binary was built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Module {
    /// Module path, e.g. `google.golang.org/grpc`.
    pub path: String,
    /// Version, e.g. `v1.64.0`; `(devel)` for the main module built from a checkout; empty
    /// for a replacement by a local directory.
    pub version: String,
    /// The `go.sum` hash, when recorded.
    pub sum: Option<String>,
    /// The module that replaced this one (a `replace` directive), if any.
    pub replace: Option<Box<Module>>,
}

/// Everything `go version -m` shows about a binary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BuildInfo {
    /// The toolchain's version string, e.g. `go1.22.12`.
    pub go_version: String,
    /// The main package's import path (`command-line-arguments` for `go build main.go`).
    pub path: Option<String>,
    /// The main module.
    pub main: Option<Module>,
    /// The dependencies, in the order recorded.
    pub deps: Vec<Module>,
    /// Build settings (`-ldflags`, `CGO_ENABLED`, `GOARCH`, `vcs.revision`, …), Go 1.18+.
    pub settings: Vec<(String, String)>,
}

impl BuildInfo {
    /// The module that provides `path`, with `replace` directives applied: when the module
    /// at `path` was replaced, the replacement is returned (its version is what was compiled;
    /// it is empty for a local directory). A module is also found by its replacement's path.
    /// The main module is considered too.
    pub fn module(&self, path: &str) -> Option<&Module> {
        let all = self.deps.iter().chain(self.main.as_ref());
        let mut by_replacement = None;
        for m in all {
            if m.path == path {
                return Some(m.replace.as_deref().unwrap_or(m));
            }
            if by_replacement.is_none() && m.replace.as_ref().is_some_and(|r| r.path == path) {
                by_replacement = m.replace.as_deref();
            }
        }
        by_replacement
    }

    /// The value of build setting `key` (e.g. `CGO_ENABLED`).
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Why build information could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BuildInfoError {
    /// No build information header in the file: not a Go binary, or one older than Go 1.13.
    #[error("no Go build information (\\xff Go buildinf:) found")]
    NotFound,
    /// The header was found but what it describes is inconsistent.
    #[error("malformed Go build information: {0}")]
    Malformed(String),
}

/// Reads the build information of `elf`.
pub fn read(elf: &ElfFile) -> Result<BuildInfo, BuildInfoError> {
    let Found {
        header,
        after,
        vaddr,
    } = find_header(elf).ok_or(BuildInfoError::NotFound)?;
    let malformed = |s: &str| BuildInfoError::Malformed(s.to_string());
    let ptr_size = header[14];
    let flags = header[15];
    let (version, modinfo) = if flags & FLAG_INLINE != 0 {
        let (version, rest) =
            varint_string(after).ok_or_else(|| malformed("the Go version string is truncated"))?;
        let (modinfo, _) = varint_string(rest)
            .ok_or_else(|| malformed("the module information string is truncated"))?;
        (version, modinfo)
    } else {
        if flags & FLAG_BIG_ENDIAN != 0 {
            return Err(malformed("big-endian build information is not supported"));
        }
        if ptr_size != 8 {
            return Err(BuildInfoError::Malformed(format!(
                "pointer size {ptr_size} in the header (only 64-bit binaries are supported)"
            )));
        }
        let version = pointed_string(elf, vaddr.wrapping_add(16))
            .ok_or_else(|| malformed("the Go version string is outside the file"))?;
        let modinfo = pointed_string(elf, vaddr.wrapping_add(24)).unwrap_or_default();
        (version, modinfo)
    };
    if version.is_empty() {
        return Err(malformed("the Go version string is empty"));
    }
    let mut info = BuildInfo {
        go_version: String::from_utf8_lossy(version).into_owned(),
        ..BuildInfo::default()
    };
    parse_modinfo(strip_sentinels(modinfo), &mut info);
    Ok(info)
}

/// A build information header found in the file.
struct Found<'a> {
    /// The 32 bytes of the header.
    header: &'a [u8],
    /// What follows it, to the end of its section or segment.
    after: &'a [u8],
    /// The header's virtual address.
    vaddr: u64,
}

/// Finds the header: in `.go.buildinfo`, else anywhere aligned in the writable segments.
fn find_header(elf: &ElfFile) -> Option<Found<'_>> {
    let in_section = elf
        .section_headers()
        .iter()
        .filter(|s| s.name == ".go.buildinfo")
        .filter_map(|s| elf.section_contents(s).ok())
        .find_map(|s| match s.data {
            std::borrow::Cow::Borrowed(bytes) => search(bytes, s.address),
            std::borrow::Cow::Owned(_) => None,
        });
    if in_section.is_some() {
        return in_section;
    }
    // No section (or a section without the header): search the writable segments, where the
    // linker puts the blob (as `debug/buildinfo` does; read-only data may hold the magic as
    // a constant, e.g. in a program that reads build information itself).
    elf.segments()
        .iter()
        .filter(|s| s.is_writable())
        .find_map(|seg| {
            search(
                elf.read_vaddr(seg.vaddr, usize::try_from(seg.filesz).ok()?)?,
                seg.vaddr,
            )
        })
}

/// Searches `bytes`, loaded at `vaddr`, for a header at a 16-byte aligned address.
fn search(bytes: &[u8], vaddr: u64) -> Option<Found<'_>> {
    let mut at = 0;
    while at + HEADER_SIZE <= bytes.len() {
        let found = memmem(&bytes[at..], MAGIC)? + at;
        let header_vaddr = vaddr.wrapping_add(found as u64);
        if header_vaddr.is_multiple_of(ALIGN as u64) && found + HEADER_SIZE <= bytes.len() {
            return Some(Found {
                header: &bytes[found..found + HEADER_SIZE],
                after: &bytes[found + HEADER_SIZE..],
                vaddr: header_vaddr,
            });
        }
        at = found + 1;
    }
    None
}

/// Position of `needle` in `haystack`.
fn memmem(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let mut from = 0;
    while from + needle.len() <= haystack.len() {
        let i = haystack[from..].iter().position(|&b| b == first)? + from;
        if haystack.get(i..i + needle.len())? == needle {
            return Some(i);
        }
        from = i + 1;
    }
    None
}

/// The bytes of the Go string (`{data, len}`) whose address is stored at `pointer` (read
/// through relocations when the file leaves the words empty, as some linkers do for PIE).
fn pointed_string(elf: &ElfFile, pointer: u64) -> Option<&[u8]> {
    let string_header = elf.read_pointer(pointer)?;
    let data = elf.read_pointer(string_header)?;
    let len = elf.read_pointer(string_header.checked_add(8)?)?;
    if len > MAX_POINTER_STRING {
        return None;
    }
    elf.read_vaddr(data, usize::try_from(len).ok()?)
}

/// A string prefixed by its length as an unsigned LEB128 varint, and the bytes after it.
fn varint_string(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut len: u64 = 0;
    let mut used = 0;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        len |= u64::from(b & 0x7f).checked_shl(7 * i as u32)?;
        if b & 0x80 == 0 {
            used = i + 1;
            break;
        }
    }
    if used == 0 {
        return None;
    }
    let rest = &bytes[used..];
    let len = usize::try_from(len).ok()?;
    Some((rest.get(..len)?, &rest[len..]))
}

/// The module information without its framing sentinels; empty when the framing is absent
/// (as `debug/buildinfo` does).
pub fn strip_sentinels(modinfo: &[u8]) -> &[u8] {
    let n = modinfo.len();
    if n > 2 * SENTINEL_LEN && modinfo[n - SENTINEL_LEN - 1] == b'\n' {
        &modinfo[SENTINEL_LEN..n - SENTINEL_LEN]
    } else {
        &[]
    }
}

/// Parses the module information lines into `info`. Lines that do not parse are skipped:
/// the build information is descriptive, and one odd line should not hide the rest.
pub fn parse_modinfo(text: &[u8], info: &mut BuildInfo) {
    let text = String::from_utf8_lossy(text);
    // Which module a `=>` line replaces: the main module, or a dep by index.
    enum Last {
        None,
        Main,
        Dep(usize),
    }
    let mut last = Last::None;
    for line in text.lines() {
        let Some((kind, rest)) = line.split_once('\t') else {
            continue;
        };
        match kind {
            "path" => {
                info.path = Some(rest.to_string());
                last = Last::None;
            }
            "go" if info.go_version.is_empty() => info.go_version = rest.to_string(),
            "mod" => {
                info.main = module_line(rest);
                last = if info.main.is_some() {
                    Last::Main
                } else {
                    Last::None
                };
            }
            "dep" => match module_line(rest) {
                Some(m) => {
                    info.deps.push(m);
                    last = Last::Dep(info.deps.len() - 1);
                }
                None => last = Last::None,
            },
            "=>" => {
                let replacement = module_line(rest).map(Box::new);
                let target = match last {
                    Last::Main => info.main.as_mut(),
                    Last::Dep(i) => info.deps.get_mut(i),
                    Last::None => None,
                };
                if let Some(target) = target {
                    target.replace = replacement;
                }
                last = Last::None;
            }
            "build" => {
                if let Some(kv) = setting_line(rest) {
                    info.settings.push(kv);
                }
                last = Last::None;
            }
            _ => last = Last::None,
        }
    }
}

/// `path\tversion[\tsum]`.
fn module_line(rest: &str) -> Option<Module> {
    let mut cols = rest.split('\t');
    let path = cols.next().filter(|p| !p.is_empty())?;
    let version = cols.next()?;
    let sum = cols.next().filter(|s| !s.is_empty()).map(str::to_string);
    if cols.next().is_some() {
        return None;
    }
    Some(Module {
        path: path.to_string(),
        version: version.to_string(),
        sum,
        replace: None,
    })
}

/// `key=value`, where key and value are Go-quoted when they hold spaces, quotes or `=`.
fn setting_line(kv: &str) -> Option<(String, String)> {
    let (key, raw_value) = match kv.as_bytes().first()? {
        b'=' => return None,
        b'"' | b'`' => {
            let (key, rest) = unquote_prefix(kv)?;
            (key, rest.strip_prefix('=')?)
        }
        _ => {
            let (k, v) = kv.split_once('=')?;
            (k.to_string(), v)
        }
    };
    let value = match raw_value.as_bytes().first() {
        Some(b'"' | b'`') => match unquote_prefix(raw_value) {
            Some((v, "")) => v,
            _ => raw_value.to_string(),
        },
        _ => raw_value.to_string(),
    };
    Some((key, value))
}

/// Decodes the Go string literal (`"…"` with escapes, or `` `…` `` raw) at the start of `s`;
/// returns it and what follows.
fn unquote_prefix(s: &str) -> Option<(String, &str)> {
    if let Some(raw) = s.strip_prefix('`') {
        let end = raw.find('`')?;
        return Some((raw[..end].to_string(), &raw[end + 1..]));
    }
    let body = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &body[i + 1..])),
            '\\' => {
                let (_, e) = chars.next()?;
                let hex = |chars: &mut std::str::CharIndices<'_>, n: usize| -> Option<u32> {
                    let mut v = 0u32;
                    for _ in 0..n {
                        v = v * 16 + chars.next()?.1.to_digit(16)?;
                    }
                    Some(v)
                };
                match e {
                    'a' => out.push('\x07'),
                    'b' => out.push('\x08'),
                    'f' => out.push('\x0c'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'v' => out.push('\x0b'),
                    '\\' => out.push('\\'),
                    '"' => out.push('"'),
                    '\'' => out.push('\''),
                    // A byte escape: kept as the character of that code point, which is exact
                    // for ASCII (all Go quotes for build settings in practice).
                    'x' => out.push(char::from_u32(hex(&mut chars, 2)?)?),
                    'u' => out.push(char::from_u32(hex(&mut chars, 4)?)?),
                    'U' => out.push(char::from_u32(hex(&mut chars, 8)?)?),
                    '0'..='7' => {
                        let mut v = e.to_digit(8)?;
                        for _ in 0..2 {
                            v = v * 8 + chars.next()?.1.to_digit(8)?;
                        }
                        out.push(char::from_u32(v)?);
                    }
                    _ => return None,
                }
            }
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(text: &str) -> Vec<u8> {
        let mut v = b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6".to_vec();
        v.extend_from_slice(text.as_bytes());
        v.extend_from_slice(b"\xf92C1\x86\x18 r\x00\x82B\x10A\x16\xd8\xf2");
        v
    }

    #[test]
    fn parses_module_lines_replacements_and_settings() {
        let text = "path\texample.com/app\n\
                    mod\texample.com/app\t(devel)\t\n\
                    dep\tgolang.org/x/net\tv0.20.0\th1:abc=\n\
                    dep\tgoogle.golang.org/grpc\tv1.60.0\th1:def=\n\
                    =>\tgithub.com/fork/grpc\tv1.60.1\th1:ghi=\n\
                    dep\texample.com/local\tv0.0.0\n\
                    =>\t../local\t\n\
                    build\t-ldflags=\"-s -w\"\n\
                    build\tCGO_ENABLED=0\n\
                    build\t\"we=ird\"=`raw value`\n";
        let mut info = BuildInfo::default();
        parse_modinfo(strip_sentinels(&framed(text)), &mut info);
        assert_eq!(info.path.as_deref(), Some("example.com/app"));
        assert_eq!(info.main.as_ref().unwrap().version, "(devel)");
        assert_eq!(info.main.as_ref().unwrap().sum, None);
        assert_eq!(info.deps.len(), 3);
        assert_eq!(info.module("golang.org/x/net").unwrap().version, "v0.20.0");
        let grpc = info.module("google.golang.org/grpc").unwrap();
        assert_eq!(
            (grpc.path.as_str(), grpc.version.as_str()),
            ("github.com/fork/grpc", "v1.60.1")
        );
        assert_eq!(
            info.module("github.com/fork/grpc").unwrap().version,
            "v1.60.1"
        );
        let local = info.module("example.com/local").unwrap();
        assert_eq!(
            (local.path.as_str(), local.version.as_str()),
            ("../local", "")
        );
        assert_eq!(info.module("example.com/app").unwrap().version, "(devel)");
        assert!(info.module("missing").is_none());
        assert_eq!(info.setting("-ldflags"), Some("-s -w"));
        assert_eq!(info.setting("CGO_ENABLED"), Some("0"));
        assert_eq!(info.setting("we=ird"), Some("raw value"));
    }

    #[test]
    fn unframed_module_information_is_ignored() {
        let mut info = BuildInfo::default();
        parse_modinfo(strip_sentinels(b"path\tx\n"), &mut info);
        assert!(info.path.is_none());
    }

    #[test]
    fn unquotes_go_strings() {
        assert_eq!(
            unquote_prefix(r#""a\tb\"c\x41\u00e9\101" tail"#),
            Some(("a\tb\"cAéA".to_string(), " tail"))
        );
        assert_eq!(unquote_prefix(r#""unterminated"#), None);
        assert_eq!(unquote_prefix(r#""bad \q""#), None);
        assert_eq!(
            unquote_prefix("`raw\\n`="),
            Some(("raw\\n".to_string(), "="))
        );
    }

    #[test]
    fn varints_are_bounded() {
        assert_eq!(
            varint_string(&[3, b'a', b'b', b'c', 9]),
            Some((&b"abc"[..], &[9u8][..]))
        );
        assert_eq!(varint_string(&[0x80, 0x01]), None); // 128 bytes claimed, none present
        assert_eq!(varint_string(&[0xff; 12]), None);
        assert_eq!(varint_string(&[]), None);
    }

    #[test]
    fn finds_only_aligned_headers() {
        let mut blob = vec![0u8; 8];
        blob.extend_from_slice(MAGIC); // unaligned decoy at 8
        blob.resize(32, 0);
        blob.extend_from_slice(MAGIC); // aligned at 32
        blob.extend_from_slice(&[8, FLAG_INLINE]);
        blob.resize(32 + HEADER_SIZE, 0);
        blob.extend_from_slice(&[9]);
        blob.extend_from_slice(b"go1.22.12");
        let found = search(&blob, 0x1000).unwrap();
        assert_eq!(found.vaddr, 0x1020);
        assert_eq!(found.header[14], 8);
        assert_eq!(varint_string(found.after).unwrap().0, b"go1.22.12");
        assert!(search(&blob[..40], 0x1000).is_none());
        assert!(search(&blob, 0x1008).is_some()); // now the decoy at 8 is the aligned one
    }
}

#[cfg(test)]
pub(crate) mod fixture_tests {
    use super::*;
    use crate::inspect::golang::fixtures;

    #[test]
    fn go_version_of_every_fixture() {
        for f in fixtures::all() {
            let elf = ElfFile::open(&f.path).unwrap();
            let info = read(&elf).unwrap_or_else(|e| panic!("{}: {e}", f.path.display()));
            assert_eq!(
                info.go_version,
                format!("go{}", f.go),
                "{}",
                f.path.display()
            );
            assert!(info.path.is_some(), "{}: {info:?}", f.path.display());
            // Go 1.17 writes the pointer format; 1.18 on, inline strings.
            let header = elf.section(".go.buildinfo").unwrap().data;
            let inline = header[15] & FLAG_INLINE != 0;
            assert_eq!(inline, f.version().minor >= 18, "{}", f.path.display());
            if f.version().minor >= 18 {
                assert_eq!(
                    info.setting("GOARCH"),
                    Some(f.arch.go_name()),
                    "{}",
                    f.path.display()
                );
                // The pie variant leaves cgo at its default, so only the others are known.
                let cgo = match f.variant.as_str() {
                    "cgo" | "cgo-pie" => Some("1"),
                    "pie" => info.setting("CGO_ENABLED"),
                    _ => Some("0"),
                };
                assert_eq!(info.setting("CGO_ENABLED"), cgo, "{}", f.path.display());
            }
        }
    }

    #[test]
    fn found_without_the_section_name() {
        // Rename .go.buildinfo: the header must then be found by scanning the data segment.
        for f in fixtures::variant("stripped") {
            let original = std::fs::read(&f.path).unwrap();
            let renamed = rename_section(&original, b".go.buildinfo", b".go.xxxxxxxxx");
            let elf = ElfFile::from_bytes(f.path.clone(), renamed).unwrap();
            assert!(elf.section(".go.buildinfo").is_none());
            let info = read(&elf).unwrap();
            assert_eq!(
                info.go_version,
                format!("go{}", f.go),
                "{}",
                f.path.display()
            );
        }
    }

    /// A copy of `data` with the section name `from` in the section name table replaced.
    pub(crate) fn rename_section(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        assert_eq!(from.len(), to.len());
        let mut needle = from.to_vec();
        needle.push(0);
        let at = data
            .windows(needle.len())
            .rposition(|w| w == needle.as_slice())
            .expect("section name present");
        let mut out = data.to_vec();
        out[at..at + to.len()].copy_from_slice(to);
        out
    }

    #[test]
    fn corrupt_headers_are_errors() {
        let f = fixtures::variant("stripped")
            .into_iter()
            .find(|f| f.version().minor >= 18)
            .unwrap();
        let data = std::fs::read(&f.path).unwrap();
        let elf = ElfFile::from_bytes(f.path.clone(), data.clone()).unwrap();
        let offset = elf.section(".go.buildinfo").unwrap().file_offset as usize;
        // The version's length runs past the end of the section and segment.
        let mut long = data.clone();
        long[offset + 32..offset + 37].copy_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        let elf = ElfFile::from_bytes(f.path.clone(), long).unwrap();
        assert!(matches!(read(&elf), Err(BuildInfoError::Malformed(_))));
        // The pointer format with pointers to nowhere.
        let mut pointers = data.clone();
        pointers[offset + 15] = 0;
        pointers[offset + 16..offset + 32].fill(0xee);
        let elf = ElfFile::from_bytes(f.path.clone(), pointers).unwrap();
        assert!(matches!(read(&elf), Err(BuildInfoError::Malformed(_))));
        // No magic at all.
        let mut none = data;
        none[offset] = 0;
        let elf = ElfFile::from_bytes(f.path.clone(), none).unwrap();
        assert!(matches!(read(&elf), Err(BuildInfoError::NotFound)));
    }
}
