//! The functions of a Rust binary by demangled path.
//!
//! Names are demangled with `rustc-demangle` (legacy `_ZN…E` and v0 `_R…` alike) without the
//! trailing hash, and v0's generic arguments (`::<…>`) are dropped, so one path names every
//! monomorphized copy of a generic function: `tokio::runtime::task::raw::poll` finds each
//! `raw::poll::<Future, Scheduler>`.

use std::collections::HashMap;

use object::{Object, ObjectSymbol, SymbolKind};

use super::super::elf::ElfFile;

/// One function: its address and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RustFunction {
    /// Virtual address of its entry.
    pub address: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Every Rust function of a binary, by demangled path.
#[derive(Debug, Default)]
pub struct RustSymbols {
    by_path: HashMap<String, Vec<RustFunction>>,
    legacy: usize,
    v0: usize,
    /// Function symbols of any language, for naming addresses.
    sorted: Vec<(u64, u64, String)>,
}

impl RustSymbols {
    /// Reads `.symtab` (and `.dynsym`) of `elf`.
    pub fn read(elf: &ElfFile) -> RustSymbols {
        let mut out = RustSymbols::default();
        let Ok(file) = object::File::parse(elf.data()) else {
            return out;
        };
        let mut seen = std::collections::HashSet::new();
        for sym in file.symbols().chain(file.dynamic_symbols()) {
            if sym.kind() != SymbolKind::Text || sym.size() == 0 || sym.is_undefined() {
                continue;
            }
            let Ok(name) = sym.name() else { continue };
            if !seen.insert((sym.address(), name)) {
                continue;
            }
            let path = match rustc_demangle::try_demangle(name) {
                Ok(d) => {
                    if name.starts_with("_R") {
                        out.v0 += 1;
                    } else {
                        out.legacy += 1;
                    }
                    strip_generics(&format!("{d:#}"))
                }
                Err(_) => {
                    out.sorted
                        .push((sym.address(), sym.size(), name.to_string()));
                    continue;
                }
            };
            out.sorted.push((sym.address(), sym.size(), path.clone()));
            out.by_path.entry(path).or_default().push(RustFunction {
                address: sym.address(),
                size: sym.size(),
            });
        }
        out.sorted.sort();
        for copies in out.by_path.values_mut() {
            copies.sort_by_key(|f| f.address);
        }
        out
    }

    /// Every copy of the function at demangled `path` (empty when absent).
    pub fn find(&self, path: &str) -> &[RustFunction] {
        self.by_path.get(path).map_or(&[], Vec::as_slice)
    }

    /// Number of Rust function symbols.
    pub fn functions(&self) -> usize {
        self.legacy + self.v0
    }

    /// `legacy`, `v0`, `mixed` or `none`.
    pub fn mangling(&self) -> &'static str {
        match (self.legacy, self.v0) {
            (0, 0) => "none",
            (_, 0) => "legacy",
            (0, _) => "v0",
            _ => "mixed",
        }
    }

    /// The function containing link-time address `addr`, by demangled path.
    pub fn name_of(&self, addr: u64) -> Option<&str> {
        let i = self.sorted.partition_point(|(a, _, _)| *a <= addr);
        let (start, size, name) = self.sorted.get(i.checked_sub(1)?)?;
        (addr < start + size.max(&1)).then_some(name.as_str())
    }
}

/// Drops v0's generic argument lists (`::<…>`), keeping qualified paths (`<A as B>::f`).
pub fn strip_generics(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let bytes = path.as_bytes();
    // Text is copied in runs between generic argument lists, whose ends are ASCII, so every
    // cut falls on a character boundary and names stay intact (Rust allows non-ASCII ones).
    let mut kept = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"::<") {
            out.push_str(&path[kept..i]);
            let mut depth = 0;
            let mut j = i + 2;
            while j < bytes.len() {
                match bytes[j] {
                    b'<' => depth += 1,
                    b'>' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            i = (j + 1).min(bytes.len());
            kept = i;
            continue;
        }
        i += 1;
    }
    out.push_str(&path[kept..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generics_are_stripped_from_non_ascii_names_too() {
        // Found by the rust_symbols fuzz target: bytes pushed one by one as chars turned each
        // byte of a multi-byte character into a character of its own.
        assert_eq!(strip_generics("crate::naïve::<T>::f"), "crate::naïve::f");
        assert_eq!(strip_generics("größe::<Vec<u8>>"), "größe");
        assert_eq!(strip_generics("a::<é"), "a");
        for s in ["é::<ü>::ö", "::<", "x::<>>::<<", "ø"] {
            assert!(strip_generics(s).len() <= s.len(), "{s}");
        }
    }

    #[test]
    fn demangles_legacy_and_v0_to_one_path() {
        let legacy = "_ZN85_$LT$hyper..proto..h1..role..Server$u20$as$u20$hyper..proto..h1..Http1Transaction$GT$5parse17h16d2b53db7265081E";
        let d = format!("{:#}", rustc_demangle::demangle(legacy));
        assert_eq!(
            d,
            "<hyper::proto::h1::role::Server as hyper::proto::h1::Http1Transaction>::parse"
        );
        assert_eq!(
            strip_generics("tokio::runtime::task::raw::poll::<my::Fut<u8>, tokio::Sched>"),
            "tokio::runtime::task::raw::poll"
        );
        assert_eq!(
            strip_generics(
                "<hyper::proto::h1::role::Server as hyper::proto::h1::Http1Transaction>::parse"
            ),
            "<hyper::proto::h1::role::Server as hyper::proto::h1::Http1Transaction>::parse"
        );
        // A v0 symbol (from rustc-demangle's own examples) demangles too.
        let v0 = "_RNvCs1234_7mycrate3foo";
        assert!(rustc_demangle::try_demangle(v0).is_ok());
        assert_eq!(
            format!("{:#}", rustc_demangle::demangle(v0)),
            "mycrate::foo"
        );
    }
}
