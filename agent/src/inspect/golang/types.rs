//! Go type names from type descriptors: what `%T` would print for the value behind an
//! interface, read from the binary alone (stripped or not), without running the target.
//!
//! A non-empty interface value is `(itab, data)`. The itab (`runtime.itab`, from Go 1.23
//! `internal/abi.ITab`) starts with the interface's type descriptor, then the concrete type's,
//! then a copy of the concrete type's hash:
//!
//! | offset | field   |
//! |--------|---------|
//! | 0      | `inter` |
//! | 8      | `_type` |
//! | 16     | `hash`  |
//!
//! A type descriptor (`runtime._type`, from Go 1.21 `internal/abi.Type`) is 48 bytes, the same
//! from Go 1.17 to 1.27 on amd64 and arm64: `tflag` at byte 20, `kind` at 23, and `str` — a
//! `nameOff`, an `int32` counted from the module's `types` — at 40. At `types + str` is an
//! encoded name: a flag byte (bit 0: exported; a type's string has no other bit), the length
//! as a little-endian base-128 varint (since Go 1.17), then the bytes. When `tflag` has `tflagExtraStar` (bit 1), the string is that of the pointer
//! type (`*T` stored once for `T` and `*T`) and the leading `*` is not part of `T`'s name.
//!
//! `types` and `etypes` are words of the module data (`runtime.firstmoduledata`), and so is
//! the list of the itabs the linker wrote, which [`TypeNames::new`] resolves one of to check
//! that the layout it chose is the binary's:
//!
//! | Go          | `types` | `etypes` | itabs                         | why                           |
//! |-------------|---------|----------|-------------------------------|-------------------------------|
//! | 1.17        | 35      | 36       | `itablinks` slice at 43       |                               |
//! | 1.18 – 1.19 | 35      | 36       | `itablinks` at 45             | `rodata`, `gofunc` added      |
//! | 1.20 – 1.25 | 37      | 38       | `itablinks` at 47             | `covctrs, ecovctrs` added     |
//! | 1.26        | 37      | 38       | `itablinks` at 48             | `epclntab` added              |
//! | 1.27        | 37      | 39       | `types + itaboffset` (40), `itabsize` (41) | `typedesclen` added, lists dropped |
//!
//! The module data is found by name (the `.go.module` section from Go 1.26, the
//! `runtime.firstmoduledata` symbol), else by scanning the writable data for the one whose
//! first two words point at the function table's header and at its function names. Like the
//! runtime (`resolveNameOff`), a descriptor and its name must lie in `types..etypes`; an itab
//! must point at an interface type, and its hash must match its type's. Itabs the runtime
//! builds while running (an assertion to `error` from a type no code converts statically)
//! live on the heap and are not in the file: they give `None`.

use crate::inspect::elf::{u32_at, u64_at, ElfFile};

use super::{pclntab, GoVersion};

/// Size of a type descriptor's common part.
const TYPE_SIZE: u64 = 48;
/// Offset of `hash` in a type descriptor and in an itab.
const HASH_AT: usize = 16;
/// Offset of `tflag`.
const TFLAG_AT: usize = 20;
/// Offset of `kind`.
const KIND_AT: usize = 23;
/// Offset of `str`.
const STR_AT: usize = 40;
/// `tflagExtraStar`.
const TFLAG_EXTRA_STAR: u8 = 1 << 1;
/// The kind bits of `kind` (above them, until Go 1.26, are flags).
const KIND_MASK: u8 = (1 << 5) - 1;
/// `kindInterface`.
const KIND_INTERFACE: u8 = 20;
/// The exported bit, the only one a type's string has.
const NAME_EXPORTED: u8 = 1 << 0;
/// Longest name returned; longer ones (anonymous structs, deep generics) give `None`.
const MAX_NAME: usize = 512;
/// Largest `types..etypes` accepted: far above any real binary, well below nonsense.
const MAX_TYPES_SIZE: u64 = 1 << 30;

/// Resolves Go type names of one binary; build once per binary, query many times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeNames {
    /// `moduledata.types`: the base of every `nameOff` and the first type descriptor.
    types: u64,
    /// `moduledata.etypes`: the end of the type descriptors and their names.
    etypes: u64,
}

/// Where one release keeps what [`TypeNames`] needs in the module data, as word indices.
#[derive(Debug, Clone, Copy)]
struct Layout {
    types: u64,
    etypes: u64,
    itabs: Itabs,
}

/// How the module data lists the itabs the linker wrote.
#[derive(Debug, Clone, Copy)]
enum Itabs {
    /// `itablinks []*itab`: pointer and length words.
    Links(u64),
    /// `itaboffset, itabsize`: the itabs lie at `types + itaboffset`.
    Region(u64),
}

impl Layout {
    fn of(version: GoVersion) -> Option<Layout> {
        let (types, etypes, itabs) = match (version.major, version.minor) {
            (1, 17) => (35, 36, Itabs::Links(43)),
            (1, 18..=19) => (35, 36, Itabs::Links(45)),
            (1, 20..=25) => (37, 38, Itabs::Links(47)),
            (1, 26) => (37, 38, Itabs::Links(48)),
            (1, 27) => (37, 39, Itabs::Region(40)),
            _ => return None,
        };
        Some(Layout {
            types,
            etypes,
            itabs,
        })
    }
}

/// The word `index` of the module data at `md`.
fn word(elf: &ElfFile, md: u64, index: u64) -> Option<u64> {
    elf.read_pointer(md.checked_add(index.checked_mul(8)?)?)
}

impl TypeNames {
    /// Prepares the resolver for `elf`, built by Go `version` (None when the binary's layout is unknown).
    pub fn new(elf: &ElfFile, version: GoVersion) -> Option<TypeNames> {
        let layout = Layout::of(version)?;
        let md = find_moduledata(elf)?;
        let types = word(elf, md, layout.types)?;
        let etypes = word(elf, md, layout.etypes)?;
        let size = etypes.checked_sub(types)?;
        if !(TYPE_SIZE..=MAX_TYPES_SIZE).contains(&size) {
            return None;
        }
        elf.read_vaddr(types, usize::try_from(size).ok()?)?;
        let names = TypeNames { types, etypes };
        // A wrong release reads other words, which can still look like a range: resolving a
        // real itab shows the range is the types.
        let first_itab = match layout.itabs {
            Itabs::Links(at) => match word(elf, md, at + 1)? {
                0 => None,
                _ => Some(elf.read_pointer(word(elf, md, at)?)?),
            },
            Itabs::Region(at) => match word(elf, md, at + 1)? {
                0 => None,
                _ => Some(types.checked_add(word(elf, md, at)?)?),
            },
        };
        match first_itab {
            Some(itab) => names.itab_type(elf, itab).map(|_| names),
            // No itab to check against (a program that converts nothing to an interface).
            None => Some(names),
        }
    }

    /// The concrete type name behind the itab at link-time address `itab`, e.g. "*net.OpError".
    pub fn itab_type(&self, elf: &ElfFile, itab: u64) -> Option<String> {
        let inter = elf.read_pointer(itab)?;
        let ty = elf.read_pointer(itab.checked_add(8)?)?;
        let hash = u32_at(elf.read_vaddr(itab.checked_add(HASH_AT as u64)?, 4)?, 0)?;
        let interface = self.descriptor(elf, inter)?;
        if interface[KIND_AT] & KIND_MASK != KIND_INTERFACE {
            return None;
        }
        if u32_at(self.descriptor(elf, ty)?, HASH_AT)? != hash {
            return None;
        }
        self.type_name(elf, ty)
    }

    /// The name of the `_type` at link-time address `ty` (used by itab_type; public for tests and fuzzing).
    pub fn type_name(&self, elf: &ElfFile, ty: u64) -> Option<String> {
        let descriptor = self.descriptor(elf, ty)?;
        let tflag = descriptor[TFLAG_AT];
        let str = i32::from_le_bytes(descriptor[STR_AT..STR_AT + 4].try_into().ok()?);
        // 0 means no name; negative offsets point before the module's types.
        let name = self
            .types
            .checked_add(u64::try_from(str).ok().filter(|&s| s > 0)?)?;
        let string = self.name_at(elf, name)?;
        let string = if tflag & TFLAG_EXTRA_STAR != 0 {
            string.strip_prefix('*')?
        } else {
            string
        };
        (!string.is_empty()).then(|| string.to_string())
    }

    /// The descriptor's common part, when it lies within the module's types.
    fn descriptor<'e>(&self, elf: &'e ElfFile, ty: u64) -> Option<&'e [u8]> {
        if ty < self.types || ty.checked_add(TYPE_SIZE)? > self.etypes || !ty.is_multiple_of(8) {
            return None;
        }
        elf.read_vaddr(ty, TYPE_SIZE as usize)
    }

    /// The string of the encoded name at `at`.
    fn name_at<'e>(&self, elf: &'e ElfFile, at: u64) -> Option<&'e str> {
        let room = self.etypes.checked_sub(at)?;
        // Flag byte and at most two varint bytes, since MAX_NAME < 2^14.
        let head = elf.read_vaddr(at, usize::try_from(room.min(3)).ok()?)?;
        if head.len() < 2 || head[0] & !NAME_EXPORTED != 0 {
            return None;
        }
        let (len, varint) = if head[1] & 0x80 == 0 {
            (usize::from(head[1]), 1)
        } else {
            let high = *head.get(2)?;
            if high & 0x80 != 0 {
                return None;
            }
            (usize::from(head[1] & 0x7f) | usize::from(high) << 7, 2)
        };
        if len == 0 || len > MAX_NAME {
            return None;
        }
        let start = at.checked_add(1 + varint)?;
        if start.checked_add(len as u64)? > self.etypes {
            return None;
        }
        std::str::from_utf8(elf.read_vaddr(start, len)?).ok()
    }
}

/// The address of the module data: by name, else by scanning the writable segments.
fn find_moduledata(elf: &ElfFile) -> Option<u64> {
    if let Some(md) = pclntab::moduledata_by_name(elf)
        .into_iter()
        .find(|&md| is_moduledata(elf, md))
    {
        return Some(md);
    }
    for seg in elf.segments().iter().filter(|s| s.is_writable()) {
        let first = seg.vaddr.checked_add(seg.vaddr.wrapping_neg() % 8)?;
        let end = seg.vaddr.checked_add(seg.filesz)?;
        let mut md = first;
        while md.checked_add(16).is_some_and(|e| e <= end) {
            if is_moduledata(elf, md) {
                return Some(md);
            }
            md += 8;
        }
    }
    None
}

/// Whether the module data is at `md`: its first word points at a function table header
/// and its second at that table's function names (`pcHeader.funcnameOffset` further on).
fn is_moduledata(elf: &ElfFile, md: u64) -> bool {
    let Some(header) = elf.read_pointer(md).filter(|&h| h != 0) else {
        return false;
    };
    let Some(bytes) = elf.read_vaddr(header, 40) else {
        return false;
    };
    let funcname_field = match u32_at(bytes, 0) {
        Some(pclntab::MAGIC_GO116) => 24,
        Some(pclntab::MAGIC_GO118 | pclntab::MAGIC_GO120) => 32,
        _ => return false,
    };
    if bytes[4..6] != [0, 0] || bytes[7] != 8 {
        return false;
    }
    let Some(funcnametab) = u64_at(bytes, funcname_field).and_then(|o| header.checked_add(o))
    else {
        return false;
    };
    md.checked_add(8)
        .and_then(|w| elf.read_pointer(w))
        .is_some_and(|p| p == funcnametab)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use gimli::{AttributeValue, DebugAbbrev, DebugInfo, DebugStr, LittleEndian};

    use super::*;
    use crate::inspect::golang::fixtures::{self, Fixture};

    /// The runtime's spelling of a name the linker or DWARF writes with import paths:
    /// `*net/url.Error` → `*url.Error`. Every package of the fixtures is named after the last
    /// element of its path. Type arguments and shape types (`go.shape.…`) keep their paths,
    /// as the runtime does (`*elliptic.nistCurve[*crypto/internal/nistec.P384Point]`). The
    /// linker and DWARF also number local types (`http.I.4`, `http.I·4`), DWARF writes
    /// compiler-internal types as `noalg.[8]T` and unexported struct fields with their package
    /// (`struct { net/http.atomic uint64 }`); the runtime writes none of that.
    fn runtime_spelling(name: &str) -> String {
        let chars: Vec<char> = name.chars().collect();
        let mut out = String::with_capacity(name.len());
        let mut token = String::new();
        // Open brackets, braces and parentheses; a bracket says whether it holds type arguments.
        let mut nesting: Vec<(char, bool)> = Vec::new();
        // The nesting depth at which a shape type, written verbatim, started.
        let mut verbatim: Option<usize> = None;
        let mut i = 0;
        while i <= chars.len() {
            let c = chars.get(i).copied();
            if c.is_some_and(|c| c.is_alphanumeric() || "_./-%".contains(c)) {
                token.push(c.unwrap());
                i += 1;
                continue;
            }
            if c == Some('·') {
                i += 1;
                while chars.get(i).is_some_and(char::is_ascii_digit) {
                    i += 1;
                }
                continue;
            }
            let mut word = token.strip_prefix("noalg.").unwrap_or(&token);
            if let Some((head, number)) = word.rsplit_once('.') {
                if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) {
                    word = head;
                }
            }
            if verbatim.is_none() && word.starts_with("go.shape.") {
                verbatim = Some(nesting.len());
            }
            let field = (out.ends_with("{ ") || out.ends_with("; "))
                && c == Some(' ')
                && chars.get(i + 1) != Some(&'}');
            if verbatim.is_some() || nesting.iter().any(|&(_, args)| args) {
                out.push_str(word);
            } else if field {
                let short = package_name(word);
                out.push_str(short.split_once('.').map_or(word, |(_, n)| n));
            } else {
                out.push_str(&package_name(word));
            }
            match c {
                Some('[') => {
                    let args = !word.is_empty() && word != "map" && !word.starts_with("map.");
                    nesting.push(('[', args));
                }
                Some('{' | '(') => nesting.push((c.unwrap(), false)),
                Some(']' | '}' | ')') => {
                    nesting.pop();
                    if verbatim.is_some_and(|d| nesting.len() < d) {
                        verbatim = None;
                    }
                }
                Some(',' | ';') if verbatim == Some(nesting.len()) => verbatim = None,
                _ => {}
            }
            out.extend(c);
            token.clear();
            i += 1;
        }
        out
    }

    /// `pkg.Name` for `some/path/pkg.Name`, and `rand.Rand` for `math/rand/v2.Rand` (a
    /// version element is not the package's name).
    fn package_name(qualified: &str) -> String {
        let Some((path, last)) = qualified.rsplit_once('/') else {
            return qualified.to_string();
        };
        let element = last.split('.').next().unwrap_or("");
        // `v2`, and `v1%2e0%2e0` (DWARF escapes the dots of `v1.0.0`).
        let is_major = element.len() > 1
            && element.starts_with('v')
            && element[1..]
                .replace("%2e", "")
                .bytes()
                .all(|b| b.is_ascii_digit());
        match path.rsplit('/').next() {
            Some(package) if is_major => format!("{package}{}", &last[element.len()..]),
            _ => last.to_string(),
        }
    }

    /// Every itab symbol of an unstripped binary: (what follows `go:itab.`, address).
    fn itab_symbols(elf: &ElfFile) -> Vec<(String, u64)> {
        use object::{Object, ObjectSymbol};
        let file = object::read::elf::ElfFile64::<object::Endianness>::parse(elf.data()).unwrap();
        file.symbols()
            .filter_map(|s| {
                let name = s.name().ok()?;
                let rest = name
                    .strip_prefix("go:itab.")
                    .or_else(|| name.strip_prefix("go.itab."))?;
                Some((rest.to_string(), s.address()))
            })
            .collect()
    }

    /// Every type descriptor DWARF describes: address (`DW_AT_go_runtime_type` counts from
    /// `runtime.types`) → DWARF's name for it.
    fn dwarf_types(elf: &ElfFile, types: u64) -> HashMap<u64, String> {
        const GO_RUNTIME_TYPE: gimli::DwAt = gimli::DwAt(0x2904);
        let info = elf.section(".debug_info").unwrap();
        let abbrev = elf.section(".debug_abbrev").unwrap();
        let strings = elf.section(".debug_str");
        let strings: &[u8] = strings.as_ref().map_or(&[], |s| &s.data);
        let debug_info = DebugInfo::new(&info.data, LittleEndian);
        let debug_abbrev = DebugAbbrev::new(&abbrev.data, LittleEndian);
        let debug_str = DebugStr::new(strings, LittleEndian);
        let mut out = HashMap::new();
        let mut units = debug_info.units();
        while let Some(unit) = units.next().unwrap() {
            let abbrevs = unit.abbreviations(&debug_abbrev).unwrap();
            let mut entries = unit.entries_raw(&abbrevs, None).unwrap();
            while !entries.is_empty() {
                let Some(abbrev) = entries.read_abbreviation().unwrap() else {
                    continue;
                };
                let (mut name, mut offset) = (None, None);
                for spec in abbrev.attributes() {
                    let attr = entries.read_attribute(*spec).unwrap();
                    match (attr.name(), attr.value()) {
                        (gimli::DW_AT_name, AttributeValue::String(s)) => {
                            name = Some(s.to_string_lossy().into_owned());
                        }
                        (gimli::DW_AT_name, AttributeValue::DebugStrRef(r)) => {
                            let s = debug_str.get_str(r).unwrap();
                            name = Some(s.to_string_lossy().into_owned());
                        }
                        (GO_RUNTIME_TYPE, AttributeValue::Addr(a)) => offset = Some(a),
                        _ => {}
                    }
                }
                if let (Some(name), Some(offset)) = (name, offset.filter(|&o| o != 0)) {
                    // Go 1.17 writes one of them (uintptr's) as an address.
                    let address = if offset >= types {
                        offset
                    } else {
                        types + offset
                    };
                    out.insert(address, name);
                }
            }
        }
        out
    }

    /// The `error` interface's descriptor, found among all descriptors by name and kind.
    fn error_interface(names: &TypeNames, elf: &ElfFile) -> u64 {
        let found: Vec<u64> = (names.types..names.etypes)
            .step_by(8)
            .filter(|&t| {
                names.type_name(elf, t).as_deref() == Some("error")
                    && names.descriptor(elf, t).unwrap()[KIND_AT] & KIND_MASK == KIND_INTERFACE
            })
            .collect();
        assert_eq!(found.len(), 1, "{}: {found:x?}", elf.path().display());
        found[0]
    }

    /// The itabs for `error` found without symbols: every word of the file's data that points
    /// at the `error` interface's descriptor and starts an itab. Address → type name.
    fn error_itabs(names: &TypeNames, elf: &ElfFile) -> BTreeMap<u64, String> {
        let error = error_interface(names, elf);
        let mut out = BTreeMap::new();
        for seg in elf.segments().iter().filter(|s| !s.is_executable()) {
            for at in (seg.vaddr.next_multiple_of(8)..seg.vaddr + seg.filesz).step_by(8) {
                if elf.read_pointer(at) == Some(error) {
                    if let Some(name) = names.itab_type(elf, at) {
                        out.insert(at, name);
                    }
                }
            }
        }
        out
    }

    /// The fixtures of `names`, each of which must have some.
    fn variants(names: &[&str]) -> Vec<Fixture> {
        let mut out = Vec::new();
        for name in names {
            let found = fixtures::variant(name);
            assert!(
                !found.is_empty(),
                "no {name} fixture in the manifest; run `cargo xtask fixtures` first"
            );
            out.extend(found);
        }
        out
    }

    /// The unstripped fixtures: symbols and DWARF to check against.
    fn unstripped() -> Vec<Fixture> {
        variants(&["plain", "arm64"])
    }

    /// The stripped amd64 fixture of Go 1.`minor`.
    fn stripped(minor: u32) -> Fixture {
        variants(&["stripped"])
            .into_iter()
            .find(|f| f.version().minor == minor)
            .unwrap_or_else(|| {
                panic!("no stripped Go 1.{minor} fixture; run `cargo xtask fixtures` first")
            })
    }

    fn names_of(f: &Fixture, elf: &ElfFile) -> TypeNames {
        TypeNames::new(elf, f.version())
            .unwrap_or_else(|| panic!("{}: no type names", f.path.display()))
    }

    #[test]
    fn types_base_is_runtime_types() {
        for f in unstripped() {
            let elf = ElfFile::open(&f.path).unwrap();
            let names = names_of(&f, &elf);
            let sym = |n| elf.symbol(n).unwrap().address;
            assert_eq!(names.types, sym("runtime.types"), "{}", f.path.display());
            assert_eq!(names.etypes, sym("runtime.etypes"), "{}", f.path.display());
        }
    }

    #[test]
    fn every_itab_symbol_names_its_type_and_interface() {
        for f in unstripped() {
            let elf = ElfFile::open(&f.path).unwrap();
            let names = names_of(&f, &elf);
            let (mut errors, mut all) = (0, 0);
            for (symbol, itab) in itab_symbols(&elf) {
                let context = format!("{}: itab {symbol} at {itab:#x}", f.path.display());
                let ty = names.itab_type(&elf, itab);
                let inter = elf.read_pointer(itab).unwrap();
                let resolved = format!(
                    "{},{}",
                    ty.as_deref().expect(&context),
                    names.type_name(&elf, inter).expect(&context)
                );
                assert_eq!(resolved, runtime_spelling(&symbol), "{context}");
                if let Some(concrete) = symbol.strip_suffix(",error") {
                    assert_eq!(ty.unwrap(), runtime_spelling(concrete), "{context}");
                    errors += 1;
                }
                all += 1;
            }
            if f.version().minor >= 27 {
                // Go 1.27 writes no itab symbols: its itabs are checked against DWARF and by
                // their place (the tests below).
                assert_eq!(all, 0, "{}", f.path.display());
            } else {
                assert!(
                    errors >= 50 && all >= 250,
                    "{}: {errors} error itabs of {all}",
                    f.path.display()
                );
            }
        }
    }

    #[test]
    fn every_dwarf_runtime_type_has_the_dwarf_name() {
        for f in unstripped() {
            let elf = ElfFile::open(&f.path).unwrap();
            let names = names_of(&f, &elf);
            let described = dwarf_types(&elf, names.types);
            let mut mismatches = Vec::new();
            for (&ty, dwarf) in &described {
                let expected = runtime_spelling(dwarf);
                let got = names.type_name(&elf, ty);
                let ok = if expected.len() > MAX_NAME {
                    got.is_none()
                } else {
                    got.as_deref() == Some(expected.as_str())
                };
                if !ok {
                    mismatches.push(format!("{ty:#x}: dwarf {dwarf:?}, got {got:?}"));
                }
            }
            mismatches.sort();
            assert!(
                described.len() > 1000 && mismatches.is_empty(),
                "{}: {} of {} differ:\n{}",
                f.path.display(),
                mismatches.len(),
                described.len(),
                mismatches[..mismatches.len().min(40)].join("\n")
            );
        }
    }

    #[test]
    fn itab_lists_are_where_the_layout_says() {
        // The word indices of Layout, against the linker's own records.
        for f in unstripped() {
            let elf = ElfFile::open(&f.path).unwrap();
            let md = find_moduledata(&elf).unwrap();
            assert_eq!(md, elf.symbol("runtime.firstmoduledata").unwrap().address);
            match Layout::of(f.version()).unwrap().itabs {
                Itabs::Links(at) => {
                    let section = elf.section(".itablink").unwrap();
                    assert_eq!(word(&elf, md, at), Some(section.address));
                    assert_eq!(word(&elf, md, at + 1), Some(section.data.len() as u64 / 8));
                }
                Itabs::Region(at) => {
                    // The itabs follow the type descriptors and end the types.
                    let names = names_of(&f, &elf);
                    let (offset, size) = (word(&elf, md, at).unwrap(), word(&elf, md, at + 1));
                    let typedesclen = word(&elf, md, 38).unwrap();
                    assert!(typedesclen <= offset, "{}", f.path.display());
                    assert!(names.types + offset + size.unwrap() <= names.etypes);
                    assert!(size.unwrap() >= 300 * 32, "{}", f.path.display());
                }
            }
        }
    }

    #[test]
    fn scanning_finds_exactly_the_error_itabs() {
        // The scan used for builds without symbols, checked where symbols and DWARF exist.
        for f in unstripped() {
            let elf = ElfFile::open(&f.path).unwrap();
            let names = names_of(&f, &elf);
            let found = error_itabs(&names, &elf);
            let described = dwarf_types(&elf, names.types);
            for (&itab, name) in &found {
                let ty = elf.read_pointer(itab + 8).unwrap();
                let dwarf = described.get(&ty).map(|d| runtime_spelling(d));
                assert_eq!(dwarf.as_ref(), Some(name), "{}", f.path.display());
            }
            if f.version().minor < 27 {
                let symbols: BTreeMap<u64, String> = itab_symbols(&elf)
                    .into_iter()
                    .filter_map(|(s, at)| Some((at, runtime_spelling(s.strip_suffix(",error")?))))
                    .collect();
                assert_eq!(found, symbols, "{}", f.path.display());
            }
            assert!(found.len() >= 50, "{}: {found:?}", f.path.display());
            for name in [
                "*errors.errorString",
                "*net.OpError",
                "*url.Error",
                "syscall.Errno",
            ] {
                assert!(
                    found.values().any(|n| n == name),
                    "{}: {name}",
                    f.path.display()
                );
            }
        }
    }

    #[test]
    fn only_itabs_resolve_as_itabs() {
        // Every aligned word of the file's data is tried: itab_type answers only at itabs.
        for f in unstripped() {
            let elf = ElfFile::open(&f.path).unwrap();
            let names = names_of(&f, &elf);
            let md = find_moduledata(&elf).unwrap();
            let is_itab: Box<dyn Fn(u64) -> bool> = match Layout::of(f.version()).unwrap().itabs {
                Itabs::Links(_) => {
                    let itabs: std::collections::HashSet<u64> =
                        itab_symbols(&elf).into_iter().map(|(_, at)| at).collect();
                    Box::new(move |at| itabs.contains(&at))
                }
                Itabs::Region(at) => {
                    let start = names.types + word(&elf, md, at).unwrap();
                    let end = start + word(&elf, md, at + 1).unwrap();
                    Box::new(move |at| (start..end).contains(&at))
                }
            };
            let mut resolved = 0;
            for seg in elf.segments().iter().filter(|s| !s.is_executable()) {
                for at in (seg.vaddr.next_multiple_of(8)..seg.vaddr + seg.filesz).step_by(8) {
                    if names.itab_type(&elf, at).is_some() {
                        assert!(is_itab(at), "{}: {at:#x}", f.path.display());
                        resolved += 1;
                    }
                }
            }
            assert!(resolved >= 250, "{}: {resolved}", f.path.display());
        }
    }

    #[test]
    fn stripped_twins_resolve_the_same_itabs() {
        for f in variants(&["stripped", "arm64-stripped"]) {
            let elf = ElfFile::open(&f.path).unwrap();
            assert!(!elf.has_symtab());
            if f.version().minor < 26 {
                // No .go.module and no symbol: the module data is found by the scan.
                assert!(pclntab::moduledata_by_name(&elf).is_empty());
            }
            let twin = f.unstripped_twin();
            let twin_elf = ElfFile::open(&twin.path).unwrap();
            let (names, twin_names) = (names_of(&f, &elf), names_of(&twin, &twin_elf));
            // The same link but for a few bytes: the type data can end 32 bytes later, and
            // an itab other than error's move (Go 1.18's `*reflect.rtype,reflect.Type`).
            // Go 1.27 can also start them 32 bytes apart: what matters is that every
            // name read through them is the same, which the loop below checks.
            assert!(
                names.types.abs_diff(twin_names.types) <= 64,
                "{}: {:#x} vs {:#x}",
                f.path.display(),
                names.types,
                twin_names.types
            );
            let shift = |at: u64| at.wrapping_add(names.types).wrapping_sub(twin_names.types);
            for (symbol, itab) in itab_symbols(&twin_elf) {
                let ours = names.itab_type(&elf, shift(itab));
                if symbol.ends_with(",error") || ours.is_some() {
                    assert_eq!(
                        ours,
                        twin_names.itab_type(&twin_elf, itab),
                        "{}: {symbol}",
                        f.path.display()
                    );
                }
            }
            let found = error_itabs(&names, &elf);
            let twin_found: BTreeMap<u64, String> = error_itabs(&twin_names, &twin_elf)
                .into_iter()
                .map(|(at, name)| (shift(at), name))
                .collect();
            assert_eq!(found, twin_found, "{}", f.path.display());
            assert!(found.len() >= 50, "{}", f.path.display());
        }
    }

    #[test]
    fn pie_and_cgo_builds_have_the_plain_builds_error_itabs() {
        // Other links, other addresses, no symbols: the same program's itabs for `error`,
        // found by the scan checked above, must name the same types.
        for f in variants(&["pie", "cgo", "cgo-pie"]) {
            let elf = ElfFile::open(&f.path).unwrap();
            let names = names_of(&f, &elf);
            let twin = f.unstripped_twin();
            let twin_elf = ElfFile::open(&twin.path).unwrap();
            let mut ours: Vec<String> = error_itabs(&names, &elf).into_values().collect();
            let mut plain: Vec<String> = error_itabs(&names_of(&twin, &twin_elf), &twin_elf)
                .into_values()
                .collect();
            // These builds have cgo (`pie` by the toolchain's default), and with it the C
            // resolver of net/cgo_unix.go, whose error type the CGO_ENABLED=0 build lacks.
            plain.push("net.addrinfoErrno".to_string());
            ours.sort();
            plain.sort();
            assert_eq!(ours, plain, "{}", f.path.display());
            assert!(ours.len() >= 50, "{}", f.path.display());
        }
    }

    #[test]
    fn garbage_addresses_give_none() {
        for f in variants(&["plain", "stripped", "pie", "cgo-pie", "arm64"]) {
            let elf = ElfFile::open(&f.path).unwrap();
            let names = names_of(&f, &elf);
            let entry = u64_at(elf.data(), 0x18).unwrap();
            let bss = elf.section(".bss").unwrap().address;
            let text = elf.section(".text").unwrap().address;
            for at in [
                0,
                1,
                8,
                entry,
                text,
                bss,
                bss + 8,
                names.types - 8,
                names.etypes,
                names.etypes - 1,
                names.types + 1,
                u64::MAX,
                u64::MAX - 7,
                u64::MAX - 47,
                i64::MAX as u64,
            ] {
                let context = format!("{}: {at:#x}", f.path.display());
                assert_eq!(names.itab_type(&elf, at), None, "{context}");
                assert_eq!(names.type_name(&elf, at), None, "{context}");
            }
        }
    }

    #[test]
    fn damaged_descriptors_give_none() {
        // One error itab and its type, then the same bytes with the hash, the name offset, the
        // name's flag byte or its length broken.
        let f = stripped(22);
        let data = std::fs::read(&f.path).unwrap();
        let elf = ElfFile::from_bytes(f.path.clone(), data.clone()).unwrap();
        let names = names_of(&f, &elf);
        let (itab, _) = error_itabs(&names, &elf)
            .into_iter()
            .find(|(_, n)| n == "*net.OpError")
            .unwrap();
        let ty = elf.read_pointer(itab + 8).unwrap();
        let str_at = ty + STR_AT as u64;
        let str = u32_at(elf.read_vaddr(str_at, 4).unwrap(), 0).unwrap();
        let name_at = names.types + u64::from(str);
        let damaged = |vaddr: u64, bytes: &[u8]| {
            let mut d = data.clone();
            let at = elf.vaddr_to_offset(vaddr).unwrap() as usize;
            d[at..at + bytes.len()].copy_from_slice(bytes);
            let elf = ElfFile::from_bytes(f.path.clone(), d).unwrap();
            names.itab_type(&elf, itab)
        };
        assert_eq!(damaged(itab + 16, &[0xde, 0xad]), None, "hash");
        assert_eq!(damaged(str_at, &0u32.to_le_bytes()), None, "no name");
        assert_eq!(
            damaged(str_at, &(-8i32).to_le_bytes()),
            None,
            "before types"
        );
        assert_eq!(damaged(str_at, &u32::MAX.to_le_bytes()), None, "negative");
        let past = (names.etypes - names.types) as u32;
        assert_eq!(damaged(str_at, &past.to_le_bytes()), None, "past etypes");
        assert_eq!(damaged(name_at, &[0x02]), None, "tag bit");
        assert_eq!(damaged(name_at + 1, &[0x80, 0x80]), None, "long varint");
        assert_eq!(damaged(name_at + 1, &[0x81, 0x04]), None, "over MAX_NAME");
        assert_eq!(damaged(name_at + 1, &[0]), None, "empty");
        assert_eq!(damaged(name_at + 2, &[0xff]), None, "not UTF-8");
        // A shorter length is a shorter, still valid, name.
        assert_eq!(damaged(name_at + 1, &[4]).as_deref(), Some("*net"));
        assert_eq!(damaged(itab + 20, &[0]).as_deref(), Some("*net.OpError"));
    }

    #[test]
    fn unknown_layouts_give_none() {
        let f = stripped(22);
        let elf = ElfFile::open(&f.path).unwrap();
        for minor in [16, 28] {
            assert_eq!(TypeNames::new(&elf, GoVersion::new(1, minor, 0)), None);
        }
        assert_eq!(TypeNames::new(&elf, GoVersion::new(2, 22, 0)), None);
        // A wrong release reads other words of the module data.
        for minor in [17, 19, 26, 27] {
            assert_eq!(
                TypeNames::new(&elf, GoVersion::new(1, minor, 0)),
                None,
                "as Go 1.{minor}"
            );
        }
        let me = ElfFile::open(&std::env::current_exe().unwrap()).unwrap();
        assert_eq!(TypeNames::new(&me, GoVersion::new(1, 22, 0)), None);
    }
}
