//! Facts about any native executable that matter for socket-level tracing: whether it can
//! talk over sockets at all, and through which TLS library.
//!
//! Read from the dynamic section and dynamic symbols of the executable and of the shared
//! libraries it needs (resolved like the dynamic loader's default search, plus RUNPATH): a
//! program that imports `socket`, `connect` or `accept` — itself or through a library such as
//! libcurl — uses sockets; one that imports `dlopen` may load code that does; a statically
//! linked one cannot be read this way and is assumed to. The TLS library is libssl when the
//! program or a library it needs links it, or when a running process maps it; OpenSSL or
//! BoringSSL linked into the executable and rustls are reported as invisible.

use std::{
    collections::{HashSet, VecDeque},
    path::{Path, PathBuf},
};

use object::{
    elf,
    read::elf::{Dyn, ElfFile64, Sym},
    Endianness,
};

use super::elf::{Arch, ElfFile};

/// Imports that mean the code opens or accepts connections itself.
const SOCKET_IMPORTS: &[&str] = &["socket", "connect", "accept", "accept4"];
/// The libssl functions the TLS probes attach to.
pub const SSL_FUNCTIONS: &[&str] = &["SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex"];
/// Libraries searched at most through DT_NEEDED.
const MAX_LIBRARIES: usize = 64;

/// What kind of native program it is, as far as can be told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NativeKind {
    /// CPython (`Py_Initialize` is in the executable or a libpython it needs).
    Python {
        /// `3.11`, from the executable's or library's name, when it says.
        version: Option<String>,
    },
    /// Built by rustc (its panic locations name `/rustc/…`).
    Rust,
    /// Links the C++ runtime.
    Cpp,
    /// C or anything else.
    Other,
}

/// Whether the program uses sockets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketUse {
    /// The executable imports socket functions.
    Direct,
    /// A library it needs does (its file name).
    Library(String),
    /// It imports `dlopen`: code loaded at run time may.
    Dlopen,
    /// Statically linked: imports cannot tell; assumed to.
    Static,
    /// Nothing in it or its libraries imports socket functions.
    None,
}

impl SocketUse {
    /// Whether socket-level tracing can see anything.
    pub fn possible(&self) -> bool {
        !matches!(self, SocketUse::None)
    }

    /// Why, for messages.
    pub fn describe(&self) -> String {
        match self {
            SocketUse::Direct => "it calls the socket functions itself".into(),
            SocketUse::Library(lib) => format!("it uses sockets through {lib}"),
            SocketUse::Dlopen => "it may load socket code at run time (it imports dlopen)".into(),
            SocketUse::Static => {
                "it is statically linked, so whether it uses sockets cannot be read from its imports; assumed"
                    .into()
            }
            SocketUse::None => format!(
                "it makes no socket calls (none of {} among the imports of it and its libraries)",
                SOCKET_IMPORTS.join(", ")
            ),
        }
    }
}

/// The TLS library of the program, as socket-level tracing sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tls {
    /// libssl (OpenSSL's shared library), probed at its `SSL_*` functions.
    Libssl {
        /// The library file (as found on this machine, or as the process maps it).
        path: PathBuf,
    },
    /// OpenSSL or BoringSSL linked into the executable.
    Static,
    /// rustls, compiled in.
    Rustls,
    /// No TLS library found.
    None,
}

/// Facts about a native executable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NativeBinary {
    /// What kind of program.
    pub kind: NativeKind,
    /// Dynamically linked.
    pub dynamic: bool,
    /// Its DT_NEEDED libraries.
    pub needed: Vec<String>,
    /// Whether it uses sockets.
    pub sockets: SocketUse,
    /// Its TLS library.
    pub tls: Tls,
}

/// The dynamic-linking facts of one ELF image.
#[derive(Debug, Default)]
struct Dynamic {
    needed: Vec<String>,
    runpath: Vec<String>,
    imports: HashSet<String>,
    exports: HashSet<String>,
    has_dynamic: bool,
}

fn dynamic_of(data: &[u8]) -> Dynamic {
    let mut out = Dynamic::default();
    let Ok(file) = ElfFile64::<Endianness>::parse(data) else {
        return out;
    };
    let endian = file.endian();
    let sections = file.elf_section_table();
    if let Ok(Some((entries, link))) = sections.dynamic(endian, data) {
        out.has_dynamic = true;
        if let Ok(strings) = sections.strings(endian, data, link) {
            for d in entries {
                let tag = d.d_tag(endian);
                if tag != elf::DT_NEEDED && tag != elf::DT_RUNPATH && tag != elf::DT_RPATH {
                    continue;
                }
                let Ok(s) = strings.get(d.d_val(endian) as u32) else {
                    continue;
                };
                let s = String::from_utf8_lossy(s).into_owned();
                match tag {
                    elf::DT_NEEDED => out.needed.push(s),
                    _ => out.runpath.extend(s.split(':').map(str::to_string)),
                }
            }
        }
    }
    if let Ok(symbols) = sections.symbols(endian, data, elf::SHT_DYNSYM) {
        for sym in symbols.iter() {
            let Ok(name) = symbols.symbol_name(endian, sym) else {
                continue;
            };
            if name.is_empty() {
                continue;
            }
            let name = String::from_utf8_lossy(name).into_owned();
            if sym.st_shndx(endian) == elf::SHN_UNDEF {
                out.imports.insert(name);
            } else {
                out.exports.insert(name);
            }
        }
    }
    out
}

/// Where the dynamic loader looks for `name` by default on `arch`, plus `runpath`.
fn library_dirs(arch: Arch, origin: &Path, runpath: &[String]) -> Vec<PathBuf> {
    let triple = match arch {
        Arch::X86_64 => "x86_64-linux-gnu",
        Arch::Aarch64 => "aarch64-linux-gnu",
    };
    let mut dirs: Vec<PathBuf> = runpath
        .iter()
        .map(|p| PathBuf::from(p.replace("$ORIGIN", &origin.to_string_lossy())))
        .collect();
    for d in [
        format!("/lib/{triple}"),
        format!("/usr/lib/{triple}"),
        "/lib64".into(),
        "/usr/lib64".into(),
        "/lib".into(),
        "/usr/lib".into(),
        "/usr/local/lib".into(),
    ] {
        dirs.push(PathBuf::from(d));
    }
    dirs
}

/// Finds `name` (a DT_NEEDED entry) in `dirs`.
fn find_library(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    dirs.iter().map(|d| d.join(name)).find(|p| p.is_file())
}

fn is_libc(name: &str) -> bool {
    name.starts_with("libc.so") || name.starts_with("libc.musl") || name.starts_with("ld-linux")
}

/// Reads the facts of `elf`, searching its libraries under `root` (`/` for a file, the
/// process's `/proc/PID/root` for a process).
pub fn analyze(elf: &ElfFile, root: &Path) -> NativeBinary {
    let exe = dynamic_of(elf.data());
    let origin = elf.path().parent().unwrap_or(Path::new("/")).to_path_buf();
    let mut sockets = if exe
        .imports
        .iter()
        .any(|i| SOCKET_IMPORTS.contains(&i.as_str()))
    {
        SocketUse::Direct
    } else if !exe.has_dynamic {
        SocketUse::Static
    } else {
        SocketUse::None
    };
    let mut tls = Tls::None;
    let mut kind = if exe.exports.contains("Py_Initialize") {
        NativeKind::Python {
            version: python_version(&elf.path().to_string_lossy()),
        }
    } else {
        NativeKind::Other
    };
    if exe.exports.contains("SSL_read") {
        tls = Tls::Static;
    }
    // Breadth-first over the libraries, each read once.
    let mut seen: HashSet<String> = HashSet::new();
    let mut queue: VecDeque<(String, Vec<PathBuf>)> = VecDeque::new();
    let dirs = library_dirs(elf.arch(), &origin, &exe.runpath);
    for n in &exe.needed {
        queue.push_back((n.clone(), dirs.clone()));
    }
    let mut dlopen = exe.imports.contains("dlopen");
    while let Some((name, dirs)) = queue.pop_front() {
        if seen.len() >= MAX_LIBRARIES || !seen.insert(name.clone()) {
            continue;
        }
        if (name.starts_with("libstdc++") || name.starts_with("libc++"))
            && kind == NativeKind::Other
        {
            kind = NativeKind::Cpp;
        }
        let rooted: Vec<PathBuf> = dirs
            .iter()
            .map(|d| root.join(d.strip_prefix("/").unwrap_or(d)))
            .collect();
        let Some(path) = find_library(&name, &rooted) else {
            continue;
        };
        let Ok(data) = std::fs::read(&path) else {
            continue;
        };
        let lib = dynamic_of(&data);
        if name.starts_with("libssl.so")
            && SSL_FUNCTIONS[..2].iter().all(|f| lib.exports.contains(*f))
        {
            let shown = path
                .strip_prefix(root)
                .map(|p| Path::new("/").join(p))
                .unwrap_or(path.clone());
            tls = Tls::Libssl { path: shown };
        }
        if name.starts_with("libpython") && lib.exports.contains("Py_Initialize") {
            kind = NativeKind::Python {
                version: python_version(&name),
            };
        }
        if !is_libc(&name) {
            if sockets == SocketUse::None
                && lib
                    .imports
                    .iter()
                    .any(|i| SOCKET_IMPORTS.contains(&i.as_str()))
            {
                sockets = SocketUse::Library(name.clone());
            }
            dlopen |= lib.imports.contains("dlopen");
        }
        let lib_origin = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let lib_dirs = library_dirs(elf.arch(), &lib_origin, &lib.runpath);
        for n in lib.needed {
            queue.push_back((n, lib_dirs.clone()));
        }
    }
    if sockets == SocketUse::None && dlopen {
        sockets = SocketUse::Dlopen;
    }
    if kind == NativeKind::Other && contains(elf.data(), b"/rustc/") {
        kind = NativeKind::Rust;
    }
    if tls == Tls::None && contains(elf.data(), b"rustls") {
        tls = Tls::Rustls;
    }
    NativeBinary {
        kind,
        dynamic: exe.has_dynamic,
        needed: exe.needed,
        sockets,
        tls,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `3.11` from `python3.11`, `libpython3.11.so.1.0`, `/usr/bin/python3.11d`.
fn python_version(name: &str) -> Option<String> {
    let at = name.rfind("python")? + "python".len();
    let v: String = name[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let v = v.trim_end_matches('.');
    (v.contains('.')).then(|| v.to_string())
}

/// libssl as process `pid` maps it: the path that opens it from here
/// (`/proc/PID/root/<path>`) and the path the process knows.
pub fn mapped_libssl(pid: u32) -> Option<(PathBuf, PathBuf)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    maps.lines().find_map(|line| {
        let path = line.split_whitespace().nth(5)?;
        let name = Path::new(path).file_name()?.to_string_lossy();
        if !name.starts_with("libssl.so") {
            return None;
        }
        let inside = PathBuf::from(path);
        let here = PathBuf::from(format!("/proc/{pid}/root")).join(path.trim_start_matches('/'));
        Some((here, inside))
    })
}

/// The TCP connections `pid` holds now: (local port, peer), from `/proc/PID/net/tcp{,6}`
/// joined with its descriptors.
pub fn tcp_connections(pid: u32) -> Vec<(u16, std::net::SocketAddr)> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let mut inodes = HashSet::new();
    if let Ok(dir) = std::fs::read_dir(proc.join("fd")) {
        for e in dir.flatten() {
            if let Ok(link) = std::fs::read_link(e.path()) {
                let link = link.to_string_lossy().into_owned();
                if let Some(n) = link
                    .strip_prefix("socket:[")
                    .and_then(|s| s.strip_suffix(']'))
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    inodes.insert(n);
                }
            }
        }
    }
    let mut out = Vec::new();
    for (table, v6) in [("net/tcp", false), ("net/tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(proc.join(table)) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 || cols[3] == "0A" {
                continue;
            }
            let Ok(inode) = cols[9].parse::<u64>() else {
                continue;
            };
            if !inodes.contains(&inode) {
                continue;
            }
            let parse = |s: &str| -> Option<(IpAddr, u16)> {
                let (ip, port) = s.split_once(':')?;
                let port = u16::from_str_radix(port, 16).ok()?;
                let ip = if v6 {
                    let mut b = [0u8; 16];
                    for (i, chunk) in b.chunks_mut(4).enumerate() {
                        let word = u32::from_str_radix(ip.get(8 * i..8 * i + 8)?, 16).ok()?;
                        chunk.copy_from_slice(&word.to_le_bytes());
                    }
                    let v6 = Ipv6Addr::from(b);
                    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
                } else {
                    let word = u32::from_str_radix(ip, 16).ok()?;
                    IpAddr::V4(Ipv4Addr::from(word.to_le_bytes()))
                };
                Some((ip, port))
            };
            if let (Some((_, lport)), Some((rip, rport))) = (parse(cols[1]), parse(cols[2])) {
                out.push((lport, SocketAddr::new(rip, rport)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_versions() {
        assert_eq!(
            python_version("/usr/bin/python3.11").as_deref(),
            Some("3.11")
        );
        assert_eq!(
            python_version("libpython3.12.so.1.0").as_deref(),
            Some("3.12")
        );
        assert_eq!(python_version("/usr/bin/python3"), None);
    }

    #[test]
    fn system_programs() {
        let open = |p: &str| ElfFile::open(Path::new(p)).unwrap();
        // A program without sockets, and one that uses them through libcurl and OpenSSL.
        let sleep = analyze(&open("/bin/sleep"), Path::new("/"));
        assert_eq!(sleep.sockets, SocketUse::None);
        assert_eq!(sleep.tls, Tls::None);
        if Path::new("/usr/bin/curl").exists() {
            let curl = analyze(&open("/usr/bin/curl"), Path::new("/"));
            assert!(
                matches!(curl.sockets, SocketUse::Library(ref l) if l.starts_with("libcurl")),
                "{curl:?}"
            );
            assert!(matches!(curl.tls, Tls::Libssl { .. }), "{curl:?}");
        }
    }
}
