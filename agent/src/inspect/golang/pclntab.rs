//! Go's function table (`pclntab`): every function's name and address, in every Go binary,
//! stripped or not.
//!
//! The table starts with a header (`runtime.pcHeader`) whose magic names the format:
//!
//! | magic        | Go          | function table entries                                   |
//! |--------------|-------------|----------------------------------------------------------|
//! | `0xfffffffb` | 1.2 – 1.15  | not supported                                            |
//! | `0xfffffffa` | 1.16 – 1.17 | `(entry, funcoff)` pointer-sized, `entry` absolute       |
//! | `0xfffffff0` | 1.18 – 1.19 | `(entryoff, funcoff)` u32, `entryoff` from `textStart`   |
//! | `0xfffffff1` | 1.20 +      | as 1.18                                                  |
//!
//! After the `nfunc` pairs comes one more entry: the end of the last function. `funcoff`
//! points (from the start of the function table) at a `runtime._func`, whose name field is an
//! offset into the name table. A function ends where the next one starts.
//!
//! Where the table is: the `.gopclntab` section for internally linked binaries; inside
//! `.data.rel.ro` (as `.data.rel.ro.gopclntab`, or merged away by an external linker) for PIE;
//! otherwise it is found through the `runtime.pcheader` symbol, through the module data (whose
//! first word points at it; Go 1.26 gave it the `.go.module` section), or by scanning the data
//! segments for a header that holds together.
//!
//! Where the text starts: the header's `textStart` until Go 1.25. Go 1.26 stopped filling that
//! field (it needed a relocation) and it reads 0: the base is then `runtime.firstmoduledata.text`
//! (found as above), or the `runtime.text` symbol. The `.text` section's address is not used:
//! with the external linker, C start-up code comes first and `runtime.text` lies further on.

use std::{borrow::Cow, collections::HashMap};

use crate::inspect::elf::{u32_at, u64_at, until_nul, ElfFile};

/// A function's code: `entry..end`, as virtual addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FuncRange {
    /// The first instruction.
    pub entry: u64,
    /// One past the last byte (the next function's entry).
    pub end: u64,
}

/// Why the function table could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PclntabError {
    /// No function table: not a Go binary.
    #[error("no Go function table (pclntab) found")]
    NotFound,
    /// The table is in a format spanhook does not read.
    #[error(
        "the Go function table has magic {magic:#010x}, written by {}; spanhook supports \
         binaries built with Go 1.17 or later",
        magic_release(*magic)
    )]
    UnsupportedVersion {
        /// The header's magic number.
        magic: u32,
    },
    /// The table's header or entries are inconsistent.
    #[error("malformed Go function table: {0}")]
    Malformed(String),
}

/// Magic of Go 1.2–1.15 tables.
const MAGIC_GO12: u32 = 0xffff_fffb;
/// Magic of Go 1.16–1.17 tables.
pub(crate) const MAGIC_GO116: u32 = 0xffff_fffa;
/// Magic of Go 1.18–1.19 tables.
pub(crate) const MAGIC_GO118: u32 = 0xffff_fff0;
/// Magic of Go 1.20+ tables.
pub(crate) const MAGIC_GO120: u32 = 0xffff_fff1;

/// Size of the Go 1.16–1.17 header: magic, 4 bytes, 7 words.
const HEADER_GO116: usize = 8 + 7 * 8;
/// Size of the Go 1.18+ header: magic, 4 bytes, 8 words.
const HEADER_GO118: usize = 8 + 8 * 8;
/// Word index of `moduledata.text` (after `pcHeader`, six slices, `findfunctab`, `minpc`,
/// `maxpc`), the same in every release from 1.16 to 1.27.
const MODULEDATA_TEXT_WORD: u64 = 22;
/// Word index of `moduledata.funcnametab.ptr`.
const MODULEDATA_FUNCNAMETAB_WORD: u64 = 1;

/// Why a Go 1.26+ table cannot be placed.
const NO_TEXT_START: &str = "the header's text start is 0 (Go 1.26+) and neither the module \
                             data (runtime.firstmoduledata) nor runtime.text could be found";

/// The Go releases that write `magic`.
fn magic_release(magic: u32) -> &'static str {
    match magic {
        MAGIC_GO12 => "Go 1.2–1.15",
        MAGIC_GO116 => "Go 1.16–1.17",
        MAGIC_GO118 => "Go 1.18–1.19",
        MAGIC_GO120 => "Go 1.20 or later",
        _ => "an unknown Go release",
    }
}

/// The two layouts this module reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// Go 1.16–1.17: pointer-sized, absolute function table entries.
    Go116,
    /// Go 1.18+: u32 entries relative to the text start.
    Go118,
}

impl Format {
    fn of(magic: u32) -> Option<Format> {
        match magic {
            MAGIC_GO116 => Some(Format::Go116),
            MAGIC_GO118 | MAGIC_GO120 => Some(Format::Go118),
            _ => None,
        }
    }

    /// Size of one field of a function table entry.
    fn field_size(self) -> usize {
        match self {
            Format::Go116 => 8,
            Format::Go118 => 4,
        }
    }

    /// Offset of `nameOff` in `runtime._func`.
    fn name_field(self) -> usize {
        match self {
            Format::Go116 => 8,
            Format::Go118 => 4,
        }
    }

    fn header_size(self) -> usize {
        match self {
            Format::Go116 => HEADER_GO116,
            Format::Go118 => HEADER_GO118,
        }
    }
}

/// A parsed function table, borrowing the file's bytes.
pub struct Pclntab<'a> {
    elf: &'a ElfFile,
    magic: u32,
    format: Format,
    /// Number of functions.
    nfunc: usize,
    /// Base of Go 1.18+ entry offsets.
    text_start: u64,
    /// Whether the header's text start was empty (Go 1.26+).
    header_text_zero: bool,
    /// The function name table.
    funcnametab: &'a [u8],
    /// The function table followed by the `_func` records.
    pclntable: &'a [u8],
    /// Virtual address of `pclntable`, for relocation lookups.
    pclntable_vaddr: u64,
    /// Go 1.16–1.17 PIE whose absolute entries live only in relocations.
    entries_in_relocations: bool,
}

impl std::fmt::Debug for Pclntab<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pclntab")
            .field("magic", &format_args!("{:#x}", self.magic))
            .field("nfunc", &self.nfunc)
            .field("text_start", &format_args!("{:#x}", self.text_start))
            .finish_non_exhaustive()
    }
}

/// A header found in the file: its bytes (to the end of its section or segment) and address.
struct Located<'a> {
    data: &'a [u8],
    vaddr: u64,
}

impl<'a> Pclntab<'a> {
    /// Finds and parses the function table of `elf`.
    pub fn parse(elf: &'a ElfFile) -> Result<Pclntab<'a>, PclntabError> {
        let mut first_error = None;
        for candidate in locate(elf) {
            match Pclntab::parse_at(elf, candidate) {
                Ok(table) => return Ok(table),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        match scan(elf) {
            Some(found) => Pclntab::parse_at(elf, found),
            None => Err(PclntabError::NotFound),
        }
    }

    fn parse_at(elf: &'a ElfFile, at: Located<'a>) -> Result<Pclntab<'a>, PclntabError> {
        let data = at.data;
        let malformed = |s: String| PclntabError::Malformed(s);
        let magic = u32_at(data, 0).ok_or(PclntabError::NotFound)?;
        let format = Format::of(magic).ok_or(PclntabError::UnsupportedVersion { magic })?;
        if data.len() < format.header_size() {
            return Err(malformed("the header is truncated".into()));
        }
        if data[4] != 0 || data[5] != 0 || !matches!(data[6], 1 | 2 | 4) {
            return Err(malformed(format!(
                "implausible header bytes {:02x?} at {:#x}",
                &data[4..8],
                at.vaddr
            )));
        }
        if data[7] != 8 {
            return Err(malformed(format!(
                "pointer size {} (only 64-bit binaries are supported)",
                data[7]
            )));
        }
        let word = |i: usize| u64_at(data, 8 + 8 * i).unwrap_or(u64::MAX);
        let nfunc = word(0);
        let (text_field, offsets) = match format {
            Format::Go116 => (None, [word(2), word(3), word(6)]),
            Format::Go118 => (Some(word(2)), [word(3), word(4), word(7)]),
        };
        let [funcname_off, cu_off, pcln_off] = offsets;
        let within = |off: u64| usize::try_from(off).ok().filter(|&o| o <= data.len());
        let (Some(funcname_off), Some(pcln_off)) = (within(funcname_off), within(pcln_off)) else {
            return Err(malformed(format!(
                "table offsets point beyond the {} bytes available",
                data.len()
            )));
        };
        let funcname_end = within(cu_off)
            .filter(|&c| c >= funcname_off)
            .unwrap_or(data.len());
        let funcnametab = &data[funcname_off..funcname_end];
        let pclntable = &data[pcln_off..];
        let fs = format.field_size();
        // nfunc pairs plus the final end entry must fit in what follows the header.
        let nfunc = usize::try_from(nfunc)
            .ok()
            .filter(|&n| n > 0 && n <= pclntable.len() / (2 * fs))
            .ok_or_else(|| malformed(format!("implausible function count {nfunc}")))?;
        if (2 * nfunc + 1) * fs > pclntable.len() {
            return Err(malformed(format!(
                "{nfunc} functions do not fit in the table"
            )));
        }
        let pclntable_vaddr = at.vaddr.wrapping_add(pcln_off as u64);
        let mut table = Pclntab {
            elf,
            magic,
            format,
            nfunc,
            text_start: 0,
            header_text_zero: false,
            funcnametab,
            pclntable,
            pclntable_vaddr,
            entries_in_relocations: false,
        };
        match text_field {
            Some(in_file) => {
                let relocated = if in_file == 0 && elf.is_pie() {
                    elf.read_pointer(at.vaddr.wrapping_add(24)).unwrap_or(0)
                } else {
                    in_file
                };
                table.header_text_zero = relocated == 0;
                table.text_start = if relocated != 0 {
                    relocated
                } else {
                    let funcnametab_vaddr = at.vaddr.wrapping_add(funcname_off as u64);
                    text_start(elf, at.vaddr, funcnametab_vaddr)
                        .ok_or_else(|| malformed(NO_TEXT_START.to_string()))?
                };
            }
            None => {
                table.entries_in_relocations = elf.is_pie() && table.raw_entry(0) == Some(0);
            }
        }
        table.validate()?;
        Ok(table)
    }

    /// Checks that the entries increase and stay in an executable segment, so every range
    /// this table hands out is real code.
    fn validate(&self) -> Result<(), PclntabError> {
        let first = self.entry(0);
        let last = self.entry(self.nfunc);
        let (Some(first), Some(last)) = (first, last) else {
            return Err(PclntabError::Malformed(
                "the first or last entry is unreadable".into(),
            ));
        };
        let exec = self.elf.segments().iter().find(|s| {
            s.is_executable() && first >= s.vaddr && first - s.vaddr < s.memsz.max(s.filesz)
        });
        let Some(exec) = exec else {
            return Err(PclntabError::Malformed(format!(
                "the first function ({first:#x}) is not in an executable segment"
            )));
        };
        if last < first || last - exec.vaddr > exec.memsz.max(exec.filesz) {
            return Err(PclntabError::Malformed(format!(
                "the functions end at {last:#x}, outside their segment"
            )));
        }
        let mut previous = first;
        for i in 1..=self.nfunc {
            match self.entry(i) {
                Some(e) if e >= previous => previous = e,
                _ => {
                    return Err(PclntabError::Malformed(format!(
                        "function {i} of {} is out of order",
                        self.nfunc
                    )))
                }
            }
        }
        Ok(())
    }

    /// Which Go releases wrote this table, from its magic (and, for 1.20+, whether the header
    /// still holds the text start).
    pub fn go_version_hint(&self) -> &'static str {
        match self.magic {
            MAGIC_GO116 => "1.16–1.17",
            MAGIC_GO118 => "1.18–1.19",
            _ if self.header_text_zero => "1.26+",
            _ => "1.20+",
        }
    }

    /// The address Go 1.18+ entry offsets are relative to (`runtime.text`); for Go 1.16–1.17
    /// tables, the first function's entry.
    pub fn text_start(&self) -> u64 {
        match self.format {
            Format::Go118 => self.text_start,
            Format::Go116 => self.entry(0).unwrap_or(0),
        }
    }

    /// Looks up the functions called `names` in one pass over the table. Names not found are
    /// absent from the map. When several functions share a name — an ABI wrapper repeats the
    /// name of the function it wraps, and generic instantiations share theirs — the first in
    /// address order is returned; the linker places ABI wrappers after the Go code, so that
    /// is the function's own body.
    pub fn find(&self, names: &[&str]) -> HashMap<String, FuncRange> {
        let wanted: HashMap<&[u8], &str> = names.iter().map(|n| (n.as_bytes(), *n)).collect();
        let max_len = names.iter().map(|n| n.len()).max().unwrap_or(0);
        let mut found = HashMap::with_capacity(wanted.len());
        for i in 0..self.nfunc {
            if found.len() == wanted.len() {
                break;
            }
            let Some(name) = self.name(i) else { continue };
            if name.len() > max_len {
                continue;
            }
            if let Some(&wanted_name) = wanted.get(name) {
                if let Some(range) = self.range(i) {
                    found.entry(wanted_name.to_string()).or_insert(range);
                }
            }
        }
        found
    }

    /// Every function with its range, in address order. Entries whose name cannot be read are
    /// skipped.
    pub fn functions(&self) -> impl Iterator<Item = (Cow<'a, str>, FuncRange)> + '_ {
        (0..self.nfunc).filter_map(move |i| {
            let name = self.name(i)?;
            Some((String::from_utf8_lossy(name), self.range(i)?))
        })
    }

    /// Number of functions in the table.
    pub fn len(&self) -> usize {
        self.nfunc
    }

    /// Whether the table lists no function (never true for a parsed table).
    pub fn is_empty(&self) -> bool {
        self.nfunc == 0
    }

    /// Entry and end of function `i`.
    fn range(&self, i: usize) -> Option<FuncRange> {
        let entry = self.entry(i)?;
        let end = self.entry(i + 1)?;
        (end >= entry).then_some(FuncRange { entry, end })
    }

    /// Entry address of function `i`; `i == nfunc` gives the end of the last function.
    fn entry(&self, i: usize) -> Option<u64> {
        match self.format {
            Format::Go118 => self.text_start.checked_add(self.raw_entry(i)?),
            Format::Go116 if self.entries_in_relocations => self.elf.read_pointer(
                self.pclntable_vaddr
                    .wrapping_add((2 * i * self.format.field_size()) as u64),
            ),
            Format::Go116 => self.raw_entry(i),
        }
    }

    /// Field 0 of function table entry `i`, as stored.
    fn raw_entry(&self, i: usize) -> Option<u64> {
        self.field(2 * i)
    }

    /// Field `n` of the function table.
    fn field(&self, n: usize) -> Option<u64> {
        let at = n.checked_mul(self.format.field_size())?;
        match self.format {
            Format::Go116 => u64_at(self.pclntable, at),
            Format::Go118 => u32_at(self.pclntable, at).map(u64::from),
        }
    }

    /// The name of function `i`, without its NUL.
    fn name(&self, i: usize) -> Option<&'a [u8]> {
        let funcoff = usize::try_from(self.field(2 * i + 1)?).ok()?;
        let nameoff = u32_at(
            self.pclntable,
            funcoff.checked_add(self.format.name_field())?,
        )?;
        let name = until_nul(self.funcnametab.get(nameoff as usize..)?);
        (!name.is_empty()).then_some(name)
    }
}

/// Places that name the table, most direct first.
fn locate(elf: &ElfFile) -> Vec<Located<'_>> {
    let mut out = Vec::new();
    for s in elf.section_headers() {
        if s.name == ".gopclntab" || s.name.ends_with(".gopclntab") {
            if let Ok(section) = elf.section_contents(s) {
                if let Cow::Borrowed(data) = section.data {
                    if !data.is_empty() {
                        out.push(Located {
                            data,
                            vaddr: s.address,
                        });
                    }
                }
            }
        }
    }
    if !out.is_empty() {
        return out;
    }
    let at_vaddr = |vaddr: u64| {
        elf.read_vaddr_to_segment_end(vaddr)
            .map(|data| Located { data, vaddr })
    };
    if let Some(sym) = elf.symbol("runtime.pcheader") {
        out.extend(at_vaddr(sym.address));
    }
    for moduledata in moduledata_by_name(elf) {
        if let Some(header) = elf.read_pointer(moduledata) {
            out.extend(at_vaddr(header));
        }
    }
    out
}

/// Addresses of the module data given by name: the `.go.module` section (Go 1.26+) and the
/// `runtime.firstmoduledata` symbol.
pub(crate) fn moduledata_by_name(elf: &ElfFile) -> Vec<u64> {
    let mut out: Vec<u64> = elf
        .section_headers()
        .iter()
        .filter(|s| s.name == ".go.module")
        .map(|s| s.address)
        .collect();
    if let Some(sym) = elf.symbol("runtime.firstmoduledata") {
        out.push(sym.address);
    }
    out
}

/// The text start of a Go 1.26+ table whose header is at `header`: `moduledata.text` of the
/// module data that points at this header, else the `runtime.text` symbol.
fn text_start(elf: &ElfFile, header: u64, funcnametab: u64) -> Option<u64> {
    let matches = |md: u64| {
        elf.read_pointer(md) == Some(header)
            && elf.read_pointer(md.wrapping_add(8 * MODULEDATA_FUNCNAMETAB_WORD))
                == Some(funcnametab)
    };
    let text_of = |md: u64| {
        elf.read_pointer(md.wrapping_add(8 * MODULEDATA_TEXT_WORD))
            .filter(|&t| t != 0)
    };
    if let Some(t) = moduledata_by_name(elf)
        .into_iter()
        .find(|&md| matches(md))
        .and_then(text_of)
    {
        return Some(t);
    }
    if let Some(sym) = elf.symbol("runtime.text") {
        return Some(sym.address);
    }
    // Stripped and without section names: search the writable segments for the module data.
    for seg in elf.segments().iter().filter(|s| s.is_writable()) {
        let Some(bytes) = elf.read_vaddr(seg.vaddr, usize::try_from(seg.filesz).ok()?) else {
            continue;
        };
        let skip = (seg.vaddr.wrapping_neg() % 8) as usize;
        for (i, word) in bytes.get(skip..)?.chunks_exact(8).enumerate() {
            if u64::from_le_bytes(word.try_into().ok()?) == header {
                let md = seg.vaddr + (skip + 8 * i) as u64;
                if matches(md) {
                    if let Some(t) = text_of(md) {
                        return Some(t);
                    }
                }
            }
        }
    }
    None
}

/// Searches the non-executable segments for a header that parses, read-only data first. An
/// old-format header is returned too, so that the caller reports the unsupported version.
fn scan(elf: &ElfFile) -> Option<Located<'_>> {
    let mut segments: Vec<_> = elf
        .segments()
        .iter()
        .filter(|s| !s.is_executable())
        .copied()
        .collect();
    segments.sort_by_key(|s| s.is_writable());
    let mut old = None;
    for seg in segments {
        let Some(bytes) = usize::try_from(seg.filesz)
            .ok()
            .and_then(|len| elf.read_vaddr(seg.vaddr, len))
        else {
            continue;
        };
        let skip = (seg.vaddr.wrapping_neg() % 8) as usize;
        let mut at = skip;
        while at + 8 <= bytes.len() {
            let magic =
                u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
            if magic & 0xffff_fff0 == 0xffff_fff0
                && bytes[at + 4] == 0
                && bytes[at + 5] == 0
                && matches!(bytes[at + 6], 1 | 2 | 4)
                && matches!(bytes[at + 7], 4 | 8)
            {
                let found = Located {
                    data: &bytes[at..],
                    vaddr: seg.vaddr + at as u64,
                };
                if Format::of(magic).is_some() {
                    if Pclntab::parse_at(elf, found).is_ok() {
                        return Some(Located {
                            data: &bytes[at..],
                            vaddr: seg.vaddr + at as u64,
                        });
                    }
                } else if magic == MAGIC_GO12 && old.is_none() {
                    old = Some(found);
                }
            }
            at += 8;
        }
    }
    old
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use iced_x86::{Decoder, DecoderOptions, Mnemonic};

    use super::*;
    use crate::inspect::{elf::Arch, golang::fixtures};

    const SERVE_HTTP: &str = "net/http.serverHandler.ServeHTTP";

    fn mnemonics(code: &[u8], ip: u64) -> Vec<Mnemonic> {
        Decoder::with_ip(64, code, ip, DecoderOptions::NONE)
            .into_iter()
            .map(|i| i.mnemonic())
            .collect()
    }

    #[test]
    fn serve_http_entry_matches_go_tool_nm_in_every_fixture() {
        for f in fixtures::all() {
            let elf = ElfFile::open(&f.path).unwrap();
            let table =
                Pclntab::parse(&elf).unwrap_or_else(|e| panic!("{}: {e}", f.path.display()));
            let found = table.find(&[SERVE_HTTP]);
            let range = *found
                .get(SERVE_HTTP)
                .unwrap_or_else(|| panic!("{}: ServeHTTP not found", f.path.display()));
            let twin = f.unstripped_twin();
            let (nm_addr, nm_size) = fixtures::nm(&twin)[SERVE_HTTP];
            let context = format!(
                "{} ({}): {range:x?}",
                f.path.display(),
                table.go_version_hint()
            );
            match f.variant.as_str() {
                // Same link, same addresses: stripping only drops .symtab and DWARF.
                "plain" | "stripped" | "arm64" | "arm64-stripped" => {
                    assert_eq!(range.entry, nm_addr, "{context}");
                    // The range runs to the next function: the code plus alignment padding.
                    let len = range.end - range.entry;
                    assert!(
                        len >= nm_size && len - nm_size < 64,
                        "{context}: nm size {nm_size}"
                    );
                }
                // A different link (PIE, or the external linker with C code first), stripped, so
                // no symbol table to ask. The code at the entry must be the plain twin's code,
                // instruction for instruction. For PIE, `go tool addr2line` (which reads the
                // function table) must also name the function at the entry and another just
                // before it. It cannot check cgo binaries: it takes the text start from the
                // .text section, which starts with C code there, so it is off by 0x100.
                "pie" | "cgo" | "cgo-pie" => {
                    let twin_elf = ElfFile::open(&twin.path).unwrap();
                    let plain = twin_elf.read_vaddr(nm_addr, nm_size as usize).unwrap();
                    let ours = elf.read_vaddr(range.entry, nm_size as usize).unwrap();
                    assert_eq!(
                        mnemonics(ours, range.entry),
                        mnemonics(plain, nm_addr),
                        "{context}"
                    );
                    assert!(range.end - range.entry >= nm_size, "{context}");
                    if f.variant == "pie" {
                        let names = fixtures::addr2line(&f, &[range.entry, range.entry - 1]);
                        // (the newest release's tool: Go 1.17's cannot find a PIE's table)
                        assert_eq!(names[0], SERVE_HTTP, "{context}");
                        assert_ne!(names[1], SERVE_HTTP, "{context}");
                    }
                }
                other => panic!("unknown variant {other}"),
            }
        }
    }

    #[test]
    fn every_function_matches_the_symbol_table() {
        // The whole table, not one function: a wrong text start or end entry shows here.
        for f in fixtures::variant("plain")
            .into_iter()
            .chain(fixtures::variant("arm64"))
        {
            let elf = ElfFile::open(&f.path).unwrap();
            let table = Pclntab::parse(&elf).unwrap();
            let symbols = elf_function_symbols(&elf);
            let mut checked = 0;
            for (name, range) in table.functions() {
                if let Some(addresses) = symbols.get(name.as_ref()) {
                    assert!(
                        addresses.contains(&range.entry),
                        "{}: {name} at {:#x}, symbols at {addresses:x?}",
                        f.path.display(),
                        range.entry
                    );
                    checked += 1;
                }
            }
            assert!(
                checked > table.len() * 9 / 10,
                "{}: {checked} of {}",
                f.path.display(),
                table.len()
            );
        }
    }

    /// Function symbols of `.symtab`, read independently of `ElfFile::symbols`: name →
    /// addresses. An ABI wrapper's symbol ends in `.abi0` where the function table repeats
    /// the plain name, and generic instantiations share a name, so a name can have several.
    fn elf_function_symbols(elf: &ElfFile) -> HashMap<String, Vec<u64>> {
        use object::{Object, ObjectSymbol, SymbolKind};
        let file = object::read::elf::ElfFile64::<object::Endianness>::parse(elf.data()).unwrap();
        let mut out: HashMap<String, Vec<u64>> = HashMap::new();
        for s in file.symbols().filter(|s| s.kind() == SymbolKind::Text) {
            let Ok(name) = s.name() else { continue };
            let name = name.strip_suffix(".abi0").unwrap_or(name);
            out.entry(name.to_string()).or_default().push(s.address());
        }
        out
    }

    #[test]
    fn a_repeated_name_gives_the_first_function() {
        // Go 1.22 lists the ABI0 wrapper of runtime.mstart0 after the function itself.
        let f = fixtures::variant("plain")
            .into_iter()
            .find(|f| f.go.starts_with("1.22."))
            .expect("a Go 1.22 fixture");
        let elf = ElfFile::open(&f.path).unwrap();
        let table = Pclntab::parse(&elf).unwrap();
        let all: Vec<FuncRange> = table
            .functions()
            .filter(|(n, _)| n == "runtime.mstart0")
            .map(|(_, r)| r)
            .collect();
        assert_eq!(all.len(), 2);
        assert_eq!(table.find(&["runtime.mstart0"])["runtime.mstart0"], all[0]);
        let nm = fixtures::nm(&f);
        assert_eq!(all[0].entry, nm["runtime.mstart0"].0);
        assert_eq!(all[1].entry, nm["runtime.mstart0.abi0"].0);
    }

    #[test]
    fn hints_and_text_start() {
        for f in fixtures::variant("stripped") {
            let elf = ElfFile::open(&f.path).unwrap();
            let table = Pclntab::parse(&elf).unwrap();
            let v = f.version();
            let hint = match v.minor {
                16..=17 => "1.16–1.17",
                18..=19 => "1.18–1.19",
                20..=25 => "1.20+",
                _ => "1.26+",
            };
            assert_eq!(table.go_version_hint(), hint, "{}", f.path.display());
            // Internally linked: runtime.text is the start of .text.
            let text = elf.section(".text").unwrap().address;
            assert_eq!(table.text_start(), text, "{}", f.path.display());
        }
        for f in fixtures::variant("cgo")
            .into_iter()
            .chain(fixtures::variant("cgo-pie"))
        {
            let elf = ElfFile::open(&f.path).unwrap();
            let table = Pclntab::parse(&elf).unwrap();
            let text = elf.section(".text").unwrap().address;
            // The external linker puts C start-up code first.
            assert!(table.text_start() > text, "{}", f.path.display());
            assert_eq!(f.arch, Arch::X86_64);
        }
    }

    /// The stripped fixture of a release, its bytes, and its table's file offset.
    fn stripped(minor: u32) -> (fixtures::Fixture, Vec<u8>, usize) {
        let f = fixtures::variant("stripped")
            .into_iter()
            .find(|f| f.version().minor == minor)
            .unwrap_or_else(|| panic!("no stripped Go 1.{minor} fixture"));
        let data = std::fs::read(&f.path).unwrap();
        let elf = ElfFile::from_bytes(f.path.clone(), data.clone()).unwrap();
        let offset = elf.section(".gopclntab").unwrap().file_offset as usize;
        (f, data, offset)
    }

    fn serve_http_of(data: Vec<u8>) -> Result<FuncRange, PclntabError> {
        let elf = ElfFile::from_bytes("/test/input".into(), data).unwrap();
        let table = Pclntab::parse(&elf)?;
        Ok(table.find(&[SERVE_HTTP])[SERVE_HTTP])
    }

    #[test]
    fn old_formats_are_unsupported_with_a_clear_message() {
        let (_, mut data, offset) = stripped(22);
        data[offset..offset + 4].copy_from_slice(&MAGIC_GO12.to_le_bytes());
        let err = serve_http_of(data).unwrap_err();
        assert!(
            matches!(err, PclntabError::UnsupportedVersion { magic: MAGIC_GO12 }),
            "{err}"
        );
        let message = err.to_string();
        assert!(
            message.contains("Go 1.2–1.15") && message.contains("Go 1.17"),
            "{message}"
        );
    }

    #[test]
    fn corrupt_headers_are_errors() {
        let (_, data, offset) = stripped(22);
        let corrupt = |at: usize, bytes: &[u8]| {
            let mut d = data.clone();
            d[offset + at..offset + at + bytes.len()].copy_from_slice(bytes);
            serve_http_of(d)
        };
        // nfunc
        let huge = corrupt(8, &u64::MAX.to_le_bytes()).unwrap_err();
        assert!(matches!(huge, PclntabError::Malformed(_)), "{huge}");
        assert!(corrupt(8, &0u64.to_le_bytes()).is_err());
        // pointer size, padding
        assert!(corrupt(7, &[4]).is_err());
        assert!(corrupt(4, &[1]).is_err());
        // funcname and pcln offsets past the end
        assert!(corrupt(32, &u64::MAX.to_le_bytes()).is_err());
        assert!(corrupt(64, &(u64::MAX / 2).to_le_bytes()).is_err());
        // a text start that points nowhere
        assert!(corrupt(24, &0xdead_0000_0000u64.to_le_bytes()).is_err());
    }

    #[test]
    fn entries_out_of_order_are_errors() {
        let (f, mut data, offset) = stripped(22);
        let elf = ElfFile::from_bytes(f.path.clone(), data.clone()).unwrap();
        let pcln = Pclntab::parse(&elf).unwrap().pclntable.as_ptr() as usize
            - elf.data().as_ptr() as usize;
        let _ = offset;
        // Entry 2 before entry 1.
        data[pcln + 16..pcln + 20].copy_from_slice(&0u32.to_le_bytes());
        data[pcln + 8..pcln + 12].copy_from_slice(&0x100u32.to_le_bytes());
        assert!(matches!(
            serve_http_of(data),
            Err(PclntabError::Malformed(_))
        ));
    }

    #[test]
    fn text_start_from_the_module_data_when_the_header_has_none() {
        // What Go 1.26 does, forced on a Go 1.22 binary without symbols or .go.module: the
        // module data must be found by scanning for the word that points at the table.
        let (_, mut data, offset) = stripped(22);
        let expected = serve_http_of(data.clone()).unwrap();
        data[offset + 24..offset + 32].fill(0);
        assert_eq!(serve_http_of(data).unwrap(), expected);
    }

    #[test]
    fn found_without_the_section_name() {
        // Rename .gopclntab: found through the module data (.go.module) from Go 1.26, and by
        // scanning the read-only data before.
        for f in fixtures::variant("stripped")
            .into_iter()
            .chain(fixtures::variant("arm64-stripped"))
            .chain(fixtures::variant("pie"))
        {
            let data = std::fs::read(&f.path).unwrap();
            let expected = serve_http_of(data.clone()).unwrap();
            let renamed = crate::inspect::golang::buildinfo::fixture_tests::rename_section(
                &data,
                b"gopclntab",
                b"xxxxxxxxx",
            );
            let elf = ElfFile::from_bytes(f.path.clone(), renamed.clone()).unwrap();
            assert!(!elf
                .section_headers()
                .iter()
                .any(|s| s.name.ends_with("gopclntab")));
            assert_eq!(
                serve_http_of(renamed).unwrap(),
                expected,
                "{}",
                f.path.display()
            );
        }
    }

    #[test]
    fn truncated_and_damaged_files_never_panic() {
        // A small fuzz run over every stage, deterministic so a failure reproduces.
        let (f, data, offset) = stripped(17);
        let (g, data26, offset26) = stripped(26);
        let run = |bytes: Vec<u8>| {
            let Ok(elf) = ElfFile::from_bytes("/fuzz".into(), bytes) else {
                return;
            };
            if let Ok(table) = Pclntab::parse(&elf) {
                let _ = table.find(&[SERVE_HTTP, "main.main"]);
                let _ = table.functions().count();
            }
            let _ = crate::inspect::golang::buildinfo::read(&elf);
            let _ = crate::inspect::golang::analyze(&elf);
            let _ = crate::inspect::golang::find_functions(&elf, &[SERVE_HTTP]);
            let _ = crate::inspect::dwarf::struct_field_offsets(&elf, &[("runtime.g", "goid")]);
        };
        for cut in [
            0,
            3,
            4,
            16,
            63,
            64,
            65,
            200,
            4096,
            offset + 10,
            offset + 100,
            data.len() - 1,
        ] {
            run(data[..cut.min(data.len())].to_vec());
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for (source, table_at) in [(&data, offset), (&data26, offset26)] {
            for _ in 0..150 {
                let mut d = source.clone();
                for _ in 0..8 {
                    // Damage the ELF headers, the table header, the function table or anywhere.
                    let at = match next() % 4 {
                        0 => (next() % 0x200) as usize,
                        1 => table_at + (next() % 0x60) as usize,
                        2 => table_at + (next() % 0x40000) as usize,
                        _ => (next() % d.len() as u64) as usize,
                    };
                    if at < d.len() {
                        d[at] = next() as u8;
                    }
                }
                run(d);
            }
        }
        let _ = (f, g);
    }
}
