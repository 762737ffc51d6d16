//! The ELF file of a target: its architecture, sections, symbols and loadable segments.
//!
//! [`ElfFile::open`] maps the file read-only and parses the headers once into small owned
//! tables; everything else borrows from the mapping, so a 100 MB binary costs page cache, not
//! heap. Only 64-bit little-endian files for x86_64 and aarch64 are accepted: those are the
//! machines spanhook attaches probes on.
//!
//! Uprobes are placed by file offset, so [`ElfFile::vaddr_to_offset`] maps a virtual address
//! (what Go's tables and the symbol table hold) to the file offset through the `PT_LOAD`
//! program headers, for PIE and non-PIE files alike.

use std::{
    borrow::Cow,
    collections::HashMap,
    fs::File,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use memmap2::Mmap;
use object::{elf, read::CompressedData, CompressionFormat};

/// A CPU architecture spanhook can probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// x86-64 (`EM_X86_64`), Go's `amd64`.
    X86_64,
    /// 64-bit ARM (`EM_AARCH64`), Go's `arm64`.
    Aarch64,
}

impl Arch {
    /// The name Go uses for this architecture (`GOARCH`).
    pub fn go_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }
}

/// Why an ELF file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    /// The file could not be opened or mapped.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with the ELF magic.
    #[error("{path} is not an ELF file")]
    NotElf {
        /// The file.
        path: PathBuf,
    },
    /// The file claims to be ELF but its headers are inconsistent or truncated.
    #[error("{path} is a malformed ELF file: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file is ELF but for a machine spanhook does not probe.
    #[error(
        "{path} is built for an unsupported machine (ELF machine {machine}); spanhook \
         supports 64-bit little-endian x86_64 and aarch64"
    )]
    UnsupportedArch {
        /// The file.
        path: PathBuf,
        /// The `e_machine` field of the ELF header.
        machine: u16,
    },
}

/// A symbol from `.symtab` or `.dynsym`.
#[derive(Debug, Clone)]
pub struct Symbol {
    /// The symbol name, as stored (Go names are not mangled).
    pub name: String,
    /// Its virtual address.
    pub address: u64,
    /// Its size in bytes (0 when the symbol table does not say).
    pub size: u64,
}

/// The contents of a section.
pub struct Section<'a> {
    /// The section's name as stored in the file (e.g. `.zdebug_info` for `.debug_info`).
    pub name: &'a str,
    /// Its virtual address (0 for sections that are not loaded).
    pub address: u64,
    /// Where its bytes start in the file.
    pub file_offset: u64,
    /// Its bytes, decompressed when the section is compressed; empty for `SHT_NOBITS`.
    pub data: Cow<'a, [u8]>,
}

/// The bytes of the file: a read-only mapping, or a buffer handed in by a test.
enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// How a section's bytes are compressed.
#[derive(Debug, Clone, Copy)]
struct Compression {
    format: CompressionFormat,
    /// File offset of the compressed stream.
    offset: u64,
    /// Length of the compressed stream.
    size: u64,
    /// Size after decompression, as the header claims.
    uncompressed_size: u64,
}

/// One section header, owned.
#[derive(Debug, Clone)]
pub(crate) struct SectionHeader {
    pub(crate) name: String,
    pub(crate) kind: u32,
    pub(crate) flags: u64,
    pub(crate) address: u64,
    pub(crate) offset: u64,
    pub(crate) size: u64,
    link: u32,
    compression: Option<Compression>,
}

impl SectionHeader {
    /// The part of the file this section occupies (empty for `SHT_NOBITS`).
    fn file_range(&self) -> (u64, u64) {
        if self.kind == elf::SHT_NOBITS {
            (self.offset, 0)
        } else {
            (self.offset, self.size)
        }
    }
}

/// One `PT_LOAD` program header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Segment {
    pub(crate) vaddr: u64,
    pub(crate) memsz: u64,
    pub(crate) offset: u64,
    pub(crate) filesz: u64,
    /// `PF_X` | `PF_W` | `PF_R`.
    pub(crate) flags: u32,
}

impl Segment {
    pub(crate) fn is_executable(&self) -> bool {
        self.flags & elf::PF_X != 0
    }

    pub(crate) fn is_writable(&self) -> bool {
        self.flags & elf::PF_W != 0
    }
}

/// Where a symbol table and its string table lie in the file.
#[derive(Debug, Clone, Copy)]
struct SymbolTable {
    offset: usize,
    count: usize,
    strings_offset: usize,
    strings_size: usize,
}

/// Size of an `Elf64_Sym`.
const SYM_SIZE: usize = 24;
/// Size of an `Elf64_Rela`.
const RELA_SIZE: usize = 24;
/// Size of an `Elf64_Chdr`.
const CHDR_SIZE: u64 = 24;
/// Largest expansion ratio accepted for a compressed section (zlib's maximum is about 1032:1).
const MAX_COMPRESSION_RATIO: u64 = 1100;

/// An ELF file opened for analysis.
pub struct ElfFile {
    path: PathBuf,
    bytes: Bytes,
    arch: Arch,
    kind: u16,
    sections: Vec<SectionHeader>,
    segments: Vec<Segment>,
    symtab: Option<SymbolTable>,
    dynsym: Option<SymbolTable>,
    /// `R_*_RELATIVE` relocations (target address, addend), sorted; built on first use.
    relative_relocations: OnceLock<Vec<(u64, u64)>>,
}

impl std::fmt::Debug for ElfFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElfFile")
            .field("path", &self.path)
            .field("arch", &self.arch)
            .field("len", &self.data().len())
            .finish_non_exhaustive()
    }
}

impl ElfFile {
    /// Maps the file at `path` read-only and parses its headers.
    pub fn open(path: &Path) -> Result<ElfFile, ElfError> {
        let io = |source| ElfError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the mapping is read-only and private. If another process truncates the file
        // while it is mapped, reads of the lost pages fault; that is the accepted cost of
        // mapping, which every ELF tool takes, and executables are not rewritten in place
        // while they run (the kernel refuses writes with ETXTBSY).
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        ElfFile::parse(path.to_path_buf(), Bytes::Mapped(map))
    }

    /// Gives back the resident pages of the mapping once analysis is done. The file stays
    /// mapped (error types are named from it later) and pages fault back in when read; until
    /// then the agent's RSS does not carry the parts of the target it has read (MBs for a
    /// large binary).
    pub fn release_pages(&self) {
        if let Bytes::Mapped(map) = &self.bytes {
            // SAFETY: the mapping is read-only and file-backed, so MADV_DONTNEED only drops
            // page-table entries; later reads see the same file contents.
            if let Err(e) = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) } {
                tracing::debug!("madvise({}): {e}", self.path.display());
            }
        }
    }

    /// Parses an ELF image held in memory; `path` is used only in messages.
    pub fn from_bytes(path: PathBuf, data: Vec<u8>) -> Result<ElfFile, ElfError> {
        ElfFile::parse(path, Bytes::Owned(data))
    }

    fn parse(path: PathBuf, bytes: Bytes) -> Result<ElfFile, ElfError> {
        let headers = match Headers::parse(bytes.as_slice()) {
            Ok(h) => h,
            Err(HeaderError::NotElf) => return Err(ElfError::NotElf { path }),
            Err(HeaderError::UnsupportedArch(machine)) => {
                return Err(ElfError::UnsupportedArch { path, machine })
            }
            Err(HeaderError::Malformed(reason)) => {
                return Err(ElfError::Malformed { path, reason })
            }
        };
        Ok(ElfFile {
            path,
            bytes,
            arch: headers.arch,
            kind: headers.kind,
            sections: headers.sections,
            segments: headers.segments,
            symtab: headers.symtab,
            dynsym: headers.dynsym,
            relative_relocations: OnceLock::new(),
        })
    }

    /// The file's path (as given to [`ElfFile::open`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The machine the file is built for.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// The whole file.
    pub fn data(&self) -> &[u8] {
        self.bytes.as_slice()
    }

    /// Whether the file is position independent (`ET_DYN`): a PIE executable or a shared
    /// library, loaded at an address chosen at run time.
    pub fn is_pie(&self) -> bool {
        self.kind == elf::ET_DYN
    }

    /// The section called `name`, decompressed if needed. A `.debug_*` name also finds the
    /// GNU-compressed `.zdebug_*` twin. `None` when absent or when decompression fails (see
    /// [`ElfFile::try_section`] for the error).
    pub fn section(&self, name: &str) -> Option<Section<'_>> {
        self.try_section(name).ok().flatten()
    }

    /// Like [`ElfFile::section`], but reports a section that exists and cannot be read.
    pub fn try_section(&self, name: &str) -> Result<Option<Section<'_>>, ElfError> {
        let header = self.section_header(name).or_else(|| {
            let rest = name.strip_prefix(".debug_")?;
            self.section_header(&format!(".zdebug_{rest}"))
        });
        match header {
            Some(h) => self.section_contents(h).map(Some),
            None => Ok(None),
        }
    }

    /// The symbol called `name`: the first defined match in `.symtab`, else in `.dynsym`.
    pub fn symbol(&self, name: &str) -> Option<Symbol> {
        self.symbols(&[name]).remove(name)
    }

    /// Looks up many symbols in one pass over each symbol table: `.symtab` first, then
    /// `.dynsym` for the names still missing. Undefined (imported) symbols are skipped;
    /// names not found are absent from the map.
    pub fn symbols(&self, names: &[&str]) -> HashMap<String, Symbol> {
        let wanted: HashMap<&[u8], &str> = names.iter().map(|n| (n.as_bytes(), *n)).collect();
        let mut found = HashMap::new();
        for table in [self.symtab, self.dynsym].into_iter().flatten() {
            if found.len() == wanted.len() {
                break;
            }
            self.scan_symbols(table, |sym_name, address, size| {
                if let Some(&name) = wanted.get(sym_name) {
                    found.entry(name.to_string()).or_insert_with(|| Symbol {
                        name: name.to_string(),
                        address,
                        size,
                    });
                }
                found.len() < wanted.len()
            });
        }
        found
    }

    /// Whether the file has a non-empty `.symtab` (it is not stripped).
    pub fn has_symtab(&self) -> bool {
        self.symtab.is_some_and(|t| t.count > 1)
    }

    /// Whether the file carries DWARF debug info (`.debug_info` or `.zdebug_info`).
    pub fn has_dwarf(&self) -> bool {
        self.section_header(".debug_info").is_some()
            || self.section_header(".zdebug_info").is_some()
    }

    /// The file offset of virtual address `vaddr`, through the `PT_LOAD` program headers.
    /// `None` when no segment maps it from the file (e.g. `.bss`).
    pub fn vaddr_to_offset(&self, vaddr: u64) -> Option<u64> {
        let seg = self.segment_of(vaddr)?;
        Some(seg.offset + (vaddr - seg.vaddr))
    }

    /// The virtual address file offset `offset` is loaded at (the inverse of
    /// [`ElfFile::vaddr_to_offset`]).
    pub fn offset_to_vaddr(&self, offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| offset >= s.offset && offset - s.offset < s.filesz)
            .map(|s| s.vaddr + (offset - s.offset))
    }

    /// The `len` bytes loaded at `vaddr`, when they all come from one segment of the file.
    pub fn read_vaddr(&self, vaddr: u64, len: usize) -> Option<&[u8]> {
        let seg = self.segment_of(vaddr)?;
        let within = vaddr - seg.vaddr;
        if within.checked_add(len as u64)? > seg.filesz {
            return None;
        }
        let start = usize::try_from(seg.offset.checked_add(within)?).ok()?;
        self.data().get(start..start.checked_add(len)?)
    }

    /// The bytes from `vaddr` to the end of the file-backed part of its segment.
    pub(crate) fn read_vaddr_to_segment_end(&self, vaddr: u64) -> Option<&[u8]> {
        let seg = self.segment_of(vaddr)?;
        let len = usize::try_from(seg.filesz - (vaddr - seg.vaddr)).ok()?;
        self.read_vaddr(vaddr, len)
    }

    /// A pointer-sized little-endian word at `vaddr`. When the file holds 0 there and a
    /// relative relocation targets the address (a PIE linked with a linker that leaves
    /// relocated words empty), the relocation's addend is the link-time value.
    pub(crate) fn read_pointer(&self, vaddr: u64) -> Option<u64> {
        let value = u64_at(self.read_vaddr(vaddr, 8)?, 0)?;
        if value != 0 || !self.is_pie() {
            return Some(value);
        }
        let relocs = self.relative_relocations();
        match relocs.binary_search_by_key(&vaddr, |&(at, _)| at) {
            Ok(i) => Some(relocs[i].1),
            Err(_) => Some(0),
        }
    }

    /// The loadable segments.
    pub(crate) fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The section headers.
    pub(crate) fn section_headers(&self) -> &[SectionHeader] {
        &self.sections
    }

    /// The bytes of a section header's section (decompressed if needed).
    pub(crate) fn section_contents<'s>(
        &'s self,
        header: &'s SectionHeader,
    ) -> Result<Section<'s>, ElfError> {
        let malformed = |reason: String| ElfError::Malformed {
            path: self.path.clone(),
            reason,
        };
        let data = match header.compression {
            None => {
                let (offset, size) = header.file_range();
                Cow::Borrowed(self.file_bytes(offset, size).ok_or_else(|| {
                    malformed(format!("section {} lies outside the file", header.name))
                })?)
            }
            Some(c) => {
                let compressed = self.file_bytes(c.offset, c.size).ok_or_else(|| {
                    malformed(format!("section {} lies outside the file", header.name))
                })?;
                let limit = c
                    .size
                    .saturating_mul(MAX_COMPRESSION_RATIO)
                    .saturating_add(4096);
                if c.uncompressed_size > limit {
                    return Err(malformed(format!(
                        "section {} claims {} bytes uncompressed from {} compressed",
                        header.name, c.uncompressed_size, c.size
                    )));
                }
                CompressedData {
                    format: c.format,
                    data: compressed,
                    uncompressed_size: c.uncompressed_size,
                }
                .decompress()
                .map_err(|e| malformed(format!("cannot decompress section {}: {e}", header.name)))?
            }
        };
        Ok(Section {
            name: &header.name,
            address: header.address,
            file_offset: header.offset,
            data,
        })
    }

    fn section_header(&self, name: &str) -> Option<&SectionHeader> {
        self.sections.iter().find(|s| s.name == name)
    }

    fn segment_of(&self, vaddr: u64) -> Option<&Segment> {
        self.segments
            .iter()
            .find(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.filesz)
    }

    fn file_bytes(&self, offset: u64, size: u64) -> Option<&[u8]> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(size).ok()?)?;
        self.data().get(start..end)
    }

    /// Calls `visit(name, value, size)` for every defined symbol of `table` until it returns
    /// false.
    fn scan_symbols(&self, table: SymbolTable, mut visit: impl FnMut(&[u8], u64, u64) -> bool) {
        let data = self.data();
        let Some(strings) =
            data.get(table.strings_offset..table.strings_offset + table.strings_size)
        else {
            return;
        };
        for i in 0..table.count {
            let at = table.offset + i * SYM_SIZE;
            let Some(sym) = data.get(at..at + SYM_SIZE) else {
                return;
            };
            let shndx = u16_at(sym, 6).unwrap_or(0);
            if shndx == elf::SHN_UNDEF {
                continue;
            }
            let name_at = u32_at(sym, 0).unwrap_or(0) as usize;
            let Some(name) = strings.get(name_at..).map(until_nul) else {
                continue;
            };
            let value = u64_at(sym, 8).unwrap_or(0);
            let size = u64_at(sym, 16).unwrap_or(0);
            if !visit(name, value, size) {
                return;
            }
        }
    }

    fn relative_relocations(&self) -> &[(u64, u64)] {
        self.relative_relocations.get_or_init(|| {
            let relative = match self.arch {
                Arch::X86_64 => elf::R_X86_64_RELATIVE,
                Arch::Aarch64 => elf::R_AARCH64_RELATIVE,
            };
            let mut out = Vec::new();
            for s in self.sections.iter().filter(|s| s.kind == elf::SHT_RELA) {
                let (offset, size) = s.file_range();
                let Some(bytes) = self.file_bytes(offset, size) else {
                    continue;
                };
                for rela in bytes.chunks_exact(RELA_SIZE) {
                    let (Some(at), Some(info), Some(addend)) =
                        (u64_at(rela, 0), u64_at(rela, 8), u64_at(rela, 16))
                    else {
                        continue;
                    };
                    if info & 0xffff_ffff == u64::from(relative) {
                        out.push((at, addend));
                    }
                }
            }
            out.sort_unstable();
            out
        })
    }
}

/// What [`Headers::parse`] can fail with, before the path is attached.
enum HeaderError {
    NotElf,
    UnsupportedArch(u16),
    Malformed(String),
}

/// The owned tables parsed from the headers.
struct Headers {
    arch: Arch,
    kind: u16,
    sections: Vec<SectionHeader>,
    segments: Vec<Segment>,
    symtab: Option<SymbolTable>,
    dynsym: Option<SymbolTable>,
}

impl Headers {
    fn parse(data: &[u8]) -> Result<Headers, HeaderError> {
        let bad = |s: &str| HeaderError::Malformed(s.to_string());
        if data.get(..4) != Some(&elf::ELFMAG[..]) {
            return Err(HeaderError::NotElf);
        }
        if data.len() < 64 {
            // Too short for even the 32-bit header's machine field to be trusted.
            return Err(match u16_at(data, 18) {
                Some(machine) if data.get(4) == Some(&elf::ELFCLASS32) => {
                    HeaderError::UnsupportedArch(machine)
                }
                _ => bad("the file is shorter than an ELF header"),
            });
        }
        let machine = u16_at(data, 18).ok_or_else(|| bad("truncated header"))?;
        if data[5] != elf::ELFDATA2LSB {
            return Err(HeaderError::UnsupportedArch(u16::from_be_bytes([
                data[18], data[19],
            ])));
        }
        if data[4] != elf::ELFCLASS64 {
            return Err(HeaderError::UnsupportedArch(machine));
        }
        let arch = match machine {
            elf::EM_X86_64 => Arch::X86_64,
            elf::EM_AARCH64 => Arch::Aarch64,
            other => return Err(HeaderError::UnsupportedArch(other)),
        };
        let kind = u16_at(data, 16).ok_or_else(|| bad("truncated header"))?;
        let phoff = u64_at(data, 0x20).ok_or_else(|| bad("truncated header"))?;
        let shoff = u64_at(data, 0x28).ok_or_else(|| bad("truncated header"))?;
        let phentsize = u16_at(data, 0x36).ok_or_else(|| bad("truncated header"))?;
        let phnum = u16_at(data, 0x38).ok_or_else(|| bad("truncated header"))?;
        let shentsize = u16_at(data, 0x3a).ok_or_else(|| bad("truncated header"))?;
        let mut shnum = u64::from(u16_at(data, 0x3c).ok_or_else(|| bad("truncated header"))?);
        let mut shstrndx = u32::from(u16_at(data, 0x3e).ok_or_else(|| bad("truncated header"))?);

        let segments = Self::segments(data, phoff, phentsize, phnum)?;

        // Section headers; the counts may live in section 0 when they overflow 16 bits.
        let mut raw = Vec::new();
        if shoff != 0 {
            if shentsize != 64 {
                return Err(bad("section header size is not 64"));
            }
            let first = table_entry(data, shoff, 0, 64)
                .ok_or_else(|| bad("section headers lie outside the file"))?;
            if shnum == 0 {
                shnum = u64_at(first, 0x20).unwrap_or(0);
            }
            if shstrndx == u32::from(elf::SHN_XINDEX) {
                shstrndx = u32_at(first, 0x28).unwrap_or(0);
            }
            let table_len = shnum
                .checked_mul(64)
                .ok_or_else(|| bad("too many sections"))?;
            if shoff
                .checked_add(table_len)
                .is_none_or(|end| end > data.len() as u64)
            {
                return Err(bad("section headers lie outside the file"));
            }
            for i in 0..shnum {
                let h = table_entry(data, shoff, i, 64)
                    .ok_or_else(|| bad("section headers lie outside the file"))?;
                raw.push(RawSection {
                    name: u32_at(h, 0).unwrap_or(0),
                    kind: u32_at(h, 4).unwrap_or(0),
                    flags: u64_at(h, 8).unwrap_or(0),
                    address: u64_at(h, 0x10).unwrap_or(0),
                    offset: u64_at(h, 0x18).unwrap_or(0),
                    size: u64_at(h, 0x20).unwrap_or(0),
                    link: u32_at(h, 0x28).unwrap_or(0),
                });
            }
        }
        let names = raw
            .get(shstrndx as usize)
            .filter(|s| s.kind != elf::SHT_NOBITS)
            .and_then(|s| slice(data, s.offset, s.size));
        let mut sections = Vec::with_capacity(raw.len());
        for r in &raw {
            let name = names
                .and_then(|n| n.get(r.name as usize..))
                .map(|n| String::from_utf8_lossy(until_nul(n)).into_owned())
                .unwrap_or_default();
            let mut header = SectionHeader {
                name,
                kind: r.kind,
                flags: r.flags,
                address: r.address,
                offset: r.offset,
                size: r.size,
                link: r.link,
                compression: None,
            };
            header.compression = compression(data, &header);
            sections.push(header);
        }
        let symtab = Self::symbol_table(data, &sections, elf::SHT_SYMTAB);
        let dynsym = Self::symbol_table(data, &sections, elf::SHT_DYNSYM);
        Ok(Headers {
            arch,
            kind,
            sections,
            segments,
            symtab,
            dynsym,
        })
    }

    fn segments(
        data: &[u8],
        phoff: u64,
        phentsize: u16,
        phnum: u16,
    ) -> Result<Vec<Segment>, HeaderError> {
        let bad = |s: &str| HeaderError::Malformed(s.to_string());
        let mut segments = Vec::new();
        if phoff == 0 || phnum == 0 {
            return Ok(segments);
        }
        if phentsize != 56 {
            return Err(bad("program header size is not 56"));
        }
        for i in 0..u64::from(phnum) {
            let p = table_entry(data, phoff, i, 56)
                .ok_or_else(|| bad("program headers lie outside the file"))?;
            if u32_at(p, 0) != Some(elf::PT_LOAD) {
                continue;
            }
            let seg = Segment {
                flags: u32_at(p, 4).unwrap_or(0),
                offset: u64_at(p, 8).unwrap_or(0),
                vaddr: u64_at(p, 0x10).unwrap_or(0),
                filesz: u64_at(p, 0x20).unwrap_or(0),
                memsz: u64_at(p, 0x28).unwrap_or(0),
            };
            // A cut-off copy (an interrupted download or build) would look like a program
            // without code or tables: say what it is instead.
            if seg
                .offset
                .checked_add(seg.filesz)
                .is_none_or(|end| end > data.len() as u64)
            {
                return Err(bad(
                    "the file is truncated: a loadable segment ends past its end",
                ));
            }
            if seg.vaddr.checked_add(seg.memsz.max(seg.filesz)).is_none() {
                return Err(bad("a loadable segment wraps around the address space"));
            }
            segments.push(seg);
        }
        Ok(segments)
    }

    fn symbol_table(data: &[u8], sections: &[SectionHeader], kind: u32) -> Option<SymbolTable> {
        let table = sections.iter().find(|s| s.kind == kind)?;
        let strings = sections.get(table.link as usize)?;
        slice(data, table.offset, table.size)?;
        slice(data, strings.offset, strings.size)?;
        Some(SymbolTable {
            offset: usize::try_from(table.offset).ok()?,
            count: usize::try_from(table.size).ok()? / SYM_SIZE,
            strings_offset: usize::try_from(strings.offset).ok()?,
            strings_size: usize::try_from(strings.size).ok()?,
        })
    }
}

/// A section header before its name is resolved.
struct RawSection {
    name: u32,
    kind: u32,
    flags: u64,
    address: u64,
    offset: u64,
    size: u64,
    link: u32,
}

/// How `header`'s bytes are compressed: `SHF_COMPRESSED` with an `Elf64_Chdr`, or the GNU
/// `.zdebug_*` form ("ZLIB" and a big-endian size). Go's linker has written both.
fn compression(data: &[u8], header: &SectionHeader) -> Option<Compression> {
    if header.kind == elf::SHT_NOBITS {
        return None;
    }
    if header.flags & u64::from(elf::SHF_COMPRESSED) != 0 {
        let chdr = slice(data, header.offset, CHDR_SIZE)?;
        let format = match u32_at(chdr, 0)? {
            elf::ELFCOMPRESS_ZLIB => CompressionFormat::Zlib,
            elf::ELFCOMPRESS_ZSTD => CompressionFormat::Zstandard,
            _ => CompressionFormat::Unknown,
        };
        return Some(Compression {
            format,
            offset: header.offset + CHDR_SIZE,
            size: header.size.saturating_sub(CHDR_SIZE),
            uncompressed_size: u64_at(chdr, 8)?,
        });
    }
    if header.name.starts_with(".zdebug_") {
        let head = slice(data, header.offset, 12)?;
        if &head[..4] != b"ZLIB" {
            return None;
        }
        return Some(Compression {
            format: CompressionFormat::Zlib,
            offset: header.offset + 12,
            size: header.size.saturating_sub(12),
            uncompressed_size: u64::from_be_bytes(head[4..12].try_into().ok()?),
        });
    }
    None
}

/// Entry `index` of a table of `entsize`-byte entries at file offset `offset`.
fn table_entry(data: &[u8], offset: u64, index: u64, entsize: u64) -> Option<&[u8]> {
    slice(
        data,
        offset.checked_add(index.checked_mul(entsize)?)?,
        entsize,
    )
}

/// `size` bytes of `data` at `offset`, if they are all there.
fn slice(data: &[u8], offset: u64, size: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(size).ok()?)?;
    data.get(start..end)
}

/// The bytes before the first NUL (all of them when there is none).
pub(crate) fn until_nul(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|&b| b == 0) {
        Some(n) => &bytes[..n],
        None => bytes,
    }
}

/// Little-endian u16 at `at`.
pub(crate) fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        data.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

/// Little-endian u32 at `at`.
pub(crate) fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        data.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// Little-endian u64 at `at`.
pub(crate) fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        data.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::golang::{find_functions, fixtures};

    const SERVE_HTTP: &str = "net/http.serverHandler.ServeHTTP";

    #[test]
    fn reads_every_fixture() {
        for f in fixtures::all() {
            let elf = ElfFile::open(&f.path).unwrap();
            assert_eq!(elf.arch(), f.arch, "{}", f.path.display());
            assert_eq!(
                elf.is_pie(),
                f.variant.ends_with("pie"),
                "{}",
                f.path.display()
            );
            assert_eq!(elf.has_symtab(), !f.stripped, "{}", f.path.display());
            assert_eq!(elf.has_dwarf(), !f.stripped, "{}", f.path.display());
            assert_eq!(elf.path(), f.path);
        }
    }

    #[test]
    fn entry_maps_to_the_offset_of_the_function_bytes() {
        // The bytes at the file offset are exactly what Go's disassembler decoded there.
        for f in fixtures::variant("plain")
            .into_iter()
            .chain(fixtures::variant("arm64"))
        {
            let elf = ElfFile::open(&f.path).unwrap();
            let func = find_functions(&elf, &[SERVE_HTTP]).unwrap()[SERVE_HTTP];
            let offset = elf.vaddr_to_offset(func.entry).unwrap() as usize;
            let instructions = fixtures::objdump(&f, SERVE_HTTP);
            assert_eq!(instructions[0].address, func.entry);
            let mut expected = Vec::new();
            for i in &instructions {
                match f.arch {
                    Arch::X86_64 => expected.extend_from_slice(&i.bytes),
                    // Go prints an arm64 instruction as its 32-bit word.
                    Arch::Aarch64 => expected.extend(i.bytes.iter().rev()),
                }
            }
            assert_eq!(
                &elf.data()[offset..offset + expected.len()],
                &expected[..],
                "{}",
                f.path.display()
            );
        }
    }

    #[test]
    fn offsets_agree_with_the_section_headers() {
        // For every build shape: the offset through PT_LOAD equals the one through the section
        // that holds the entry, computed with the `object` crate.
        use object::{Object, ObjectSection};
        for f in fixtures::all() {
            let elf = ElfFile::open(&f.path).unwrap();
            let func = find_functions(&elf, &[SERVE_HTTP]).unwrap()[SERVE_HTTP];
            let file =
                object::read::elf::ElfFile64::<object::Endianness>::parse(elf.data()).unwrap();
            let text = file
                .sections()
                .find(|s| s.address() <= func.entry && func.entry < s.address() + s.size())
                .unwrap();
            let (text_offset, _) = text.file_range().unwrap();
            let expected = text_offset + (func.entry - text.address());
            assert_eq!(
                elf.vaddr_to_offset(func.entry),
                Some(expected),
                "{}",
                f.path.display()
            );
            let len = (func.end - func.entry) as usize;
            assert_eq!(
                elf.read_vaddr(func.entry, len).unwrap(),
                &elf.data()[expected as usize..expected as usize + len]
            );
        }
    }

    #[test]
    fn unmapped_addresses_have_no_offset() {
        let f = &fixtures::variant("plain")[0];
        let elf = ElfFile::open(&f.path).unwrap();
        let bss = elf.section(".bss").unwrap();
        assert!(bss.data.is_empty());
        assert_eq!(elf.vaddr_to_offset(bss.address), None);
        assert_eq!(elf.vaddr_to_offset(0), None);
        assert_eq!(elf.vaddr_to_offset(u64::MAX), None);
        assert!(elf.read_vaddr(u64::MAX - 1, 16).is_none());
        let text = elf.section(".text").unwrap();
        assert!(elf.read_vaddr(text.address, usize::MAX).is_none());
    }

    #[test]
    fn looks_up_symbols_and_compressed_sections() {
        let f = fixtures::variant("plain")
            .into_iter()
            .find(|f| f.version().minor >= 22)
            .unwrap();
        let elf = ElfFile::open(&f.path).unwrap();
        let nm = fixtures::nm(&f);
        let sym = elf.symbol(SERVE_HTTP).unwrap();
        assert_eq!((sym.address, sym.size), nm[SERVE_HTTP]);
        assert!(elf.symbol("no.such.symbol").is_none());
        let many = elf.symbols(&[SERVE_HTTP, "runtime.main", "nope"]);
        assert_eq!(many.len(), 2);
        // Go 1.22 compresses DWARF with SHF_COMPRESSED; the data comes back inflated.
        let info = elf.section(".debug_info").unwrap();
        assert_eq!(info.name, ".debug_info");
        assert!(matches!(info.data, Cow::Owned(_)));
        assert_eq!(u16_at(&info.data, 4), Some(4), "DWARF 4 unit header");
        // Go 1.17 used .zdebug_* names.
        let old = fixtures::variant("plain")
            .into_iter()
            .find(|f| f.version().minor == 17)
            .unwrap();
        let elf = ElfFile::open(&old.path).unwrap();
        let info = elf.section(".debug_info").unwrap();
        assert_eq!(info.name, ".zdebug_info");
        assert_eq!(u16_at(&info.data, 4), Some(4));
    }

    #[test]
    fn rejects_what_is_not_a_usable_elf() {
        let path = PathBuf::from("/test/input");
        let err = |data: Vec<u8>| ElfFile::from_bytes(path.clone(), data).unwrap_err();
        assert!(matches!(
            err(b"#!/bin/sh\necho hi\n".to_vec()),
            ElfError::NotElf { .. }
        ));
        assert!(matches!(err(Vec::new()), ElfError::NotElf { .. }));
        assert!(matches!(
            err(b"\x7fELF".to_vec()),
            ElfError::Malformed { .. }
        ));
        // A 32-bit i386 header.
        let mut i386 = vec![0u8; 52];
        i386[..7].copy_from_slice(b"\x7fELF\x01\x01\x01");
        i386[18] = 3;
        assert!(matches!(
            err(i386),
            ElfError::UnsupportedArch { machine: 3, .. }
        ));
        // A 64-bit RISC-V header.
        let mut riscv = vec![0u8; 64];
        riscv[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
        riscv[18] = 243;
        assert!(matches!(
            err(riscv),
            ElfError::UnsupportedArch { machine: 243, .. }
        ));
        let message = ElfError::NotElf { path: path.clone() }.to_string();
        assert_eq!(message, "/test/input is not an ELF file");
        let missing = ElfFile::open(Path::new("/nonexistent/binary")).unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/binary"),
            "{missing}"
        );
    }

    #[test]
    fn section_headers_pointing_outside_the_file_are_errors() {
        let f = &fixtures::variant("stripped")[0];
        let mut data = std::fs::read(&f.path).unwrap();
        // e_shoff far past the end.
        data[0x28..0x30].copy_from_slice(&(u64::MAX - 8).to_le_bytes());
        let e = ElfFile::from_bytes(f.path.clone(), data.clone()).unwrap_err();
        assert!(matches!(e, ElfError::Malformed { .. }), "{e}");
        // A huge section count near the end of the file.
        let near_end = data.len() as u64 - 640;
        data[0x28..0x30].copy_from_slice(&near_end.to_le_bytes());
        data[0x3c..0x3e].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(ElfFile::from_bytes(f.path.clone(), data).is_err());
    }
}
