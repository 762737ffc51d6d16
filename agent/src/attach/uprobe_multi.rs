//! Uprobes through BPF `uprobe_multi` links (Linux 6.6+): one link holds every offset one
//! program is attached at in one file, for one process or all.
//!
//! Why not aya's perf-event uprobes: Linux 6.16 (commit ba677dbe77af, backported to the 6.x
//! stable releases of July 2025) made `perf_event_open` uprobes need CAP_SYS_ADMIN again,
//! while `uprobe_multi` links need only CAP_BPF and CAP_PERFMON. They also cost one kernel
//! synchronisation per link at detach instead of one per uprobe (≈ 80 ms each here).
//!
//! The kernel accepts a program in such a link only if it was loaded with the expected attach
//! type `BPF_TRACE_UPROBE_MULTI`, which aya 0.14 cannot set (0.15 can, but needs a newer Rust
//! than this project's). So the uprobe programs are loaded here, from the same object aya
//! loaded: parsed and relocated by `aya-obj` (aya's own object crate) against the maps aya
//! created, so both halves share every map.

use std::{
    collections::{HashMap, HashSet},
    ffi::CString,
    io,
    num::NonZeroU32,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::Path,
};

use aya::{maps::Map, Ebpf};
use aya_obj::{
    btf::Btf,
    generated::{
        bpf_attach_type::BPF_TRACE_UPROBE_MULTI, bpf_attr, bpf_cmd, bpf_insn, bpf_prog_info,
        bpf_prog_type::BPF_PROG_TYPE_KPROBE, BPF_F_UPROBE_MULTI_RETURN,
    },
    Function, Object, ProgramSection,
};

/// Why the uprobe programs could not be loaded for `uprobe_multi` links.
#[derive(Debug, thiserror::Error)]
pub enum MultiLoadError {
    /// The embedded object could not be parsed or relocated.
    #[error("preparing the uprobe programs: {0}")]
    Object(String),
    /// A map the programs use was not created by the loader.
    #[error("map {0} the uprobe programs use was not created")]
    MissingMap(String),
    /// The kernel refused the object's BTF.
    #[error("loading the programs' BTF: {0}")]
    Btf(#[source] io::Error),
    /// The kernel refused one program.
    #[error("loading {name} for uprobe_multi links: {source}{log}")]
    Program {
        /// The program.
        name: String,
        /// The kernel's error.
        #[source]
        source: io::Error,
        /// The verifier's log, when it wrote one (prefixed with a newline).
        log: String,
    },
}

impl MultiLoadError {
    /// The kernel's error number, when the kernel refused something.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Self::Btf(e) | Self::Program { source: e, .. } => e.raw_os_error(),
            _ => None,
        }
    }
}

/// One uprobe program loaded for `uprobe_multi` links.
#[derive(Debug)]
struct MultiProgram {
    fd: OwnedFd,
    /// Attached at return (`uretprobe` section) rather than at an instruction.
    ret: bool,
}

/// Every uprobe program of the object, loaded for `uprobe_multi` links.
#[derive(Debug)]
pub struct MultiPrograms {
    programs: HashMap<String, MultiProgram>,
    /// Kept open for the programs' lifetime: their function and line info refer to it.
    _btf: Option<OwnedFd>,
}

/// What the verifier reports for one program.
#[derive(Clone, Copy, Debug)]
pub struct ProgramStats {
    /// Instructions the verifier processed.
    pub verified_insns: u32,
    /// Size after the verifier's rewrites, in bytes.
    pub xlated_bytes: u32,
    /// Size of the JIT-compiled program, in bytes.
    pub jited_bytes: u32,
}

fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<i64> {
    // SAFETY: `attr` is a valid, fully initialised `bpf_attr` and the size passed is its size;
    // every pointer stored in it refers to memory that outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_int,
            attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn fd_from(ret: i64) -> io::Result<OwnedFd> {
    let fd = RawFd::try_from(ret).map_err(|_| io::Error::other("bpf returned no descriptor"))?;
    // SAFETY: the bpf commands this is used for return a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn zeroed_attr() -> bpf_attr {
    // SAFETY: `bpf_attr` is plain old data; all zeroes is its "unset" value.
    unsafe { std::mem::zeroed() }
}

/// Loads one program; `btf`: the loaded object BTF and the function whose function and line
/// info refer to it; `None` for the verifier log buffer means "no log".
fn load_program(
    name: &str,
    insns: &[bpf_insn],
    license: &CString,
    kernel_version: u32,
    btf: Option<(RawFd, &Function)>,
    log: Option<&mut Vec<u8>>,
) -> io::Result<OwnedFd> {
    // Kept alive until the syscall: the attribute points into them.
    let func_info = btf.map(|(_, f)| f.func_info.func_info_bytes());
    let line_info = btf.map(|(_, f)| f.line_info.line_info_bytes());
    let mut attr = zeroed_attr();
    // SAFETY: writing the BPF_PROG_LOAD member of a zeroed union.
    let u = unsafe { &mut attr.__bindgen_anon_3 };
    u.prog_type = BPF_PROG_TYPE_KPROBE as u32;
    u.expected_attach_type = BPF_TRACE_UPROBE_MULTI as u32;
    u.insns = insns.as_ptr() as u64;
    u.insn_cnt = insns.len() as u32;
    u.license = license.as_ptr() as u64;
    u.kern_version = kernel_version;
    for (dst, src) in u.prog_name.iter_mut().zip(name.bytes().take(15)) {
        *dst = src as libc::c_char;
    }
    if let (Some((btf_fd, f)), Some(func_info), Some(line_info)) = (btf, &func_info, &line_info) {
        u.prog_btf_fd = btf_fd as u32;
        if f.func_info_rec_size > 0 {
            u.func_info = func_info.as_ptr() as u64;
            u.func_info_cnt = f.func_info.len() as u32;
            u.func_info_rec_size = f.func_info_rec_size as u32;
        }
        if f.line_info_rec_size > 0 {
            u.line_info = line_info.as_ptr() as u64;
            u.line_info_cnt = f.line_info.len() as u32;
            u.line_info_rec_size = f.line_info_rec_size as u32;
        }
    }
    if let Some(log) = log {
        u.log_level = 1;
        u.log_buf = log.as_mut_ptr() as u64;
        u.log_size = log.len() as u32;
    }
    sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr).and_then(fd_from)
}

fn load_btf(bytes: &[u8]) -> io::Result<OwnedFd> {
    let mut attr = zeroed_attr();
    // SAFETY: writing the BPF_BTF_LOAD member of a zeroed union.
    let u = unsafe { &mut attr.__bindgen_anon_7 };
    u.btf = bytes.as_ptr() as u64;
    u.btf_size = bytes.len() as u32;
    sys_bpf(bpf_cmd::BPF_BTF_LOAD, &mut attr).and_then(fd_from)
}

/// The descriptor of an aya map, whatever its kind.
fn map_fd(map: &Map) -> RawFd {
    use std::os::fd::AsFd;
    let data = match map {
        Map::Array(d)
        | Map::ArrayOfMaps(d)
        | Map::BloomFilter(d)
        | Map::CgroupArray(d)
        | Map::CgroupStorage(d)
        | Map::CgrpStorage(d)
        | Map::CpuMap(d)
        | Map::DevMap(d)
        | Map::DevMapHash(d)
        | Map::HashMap(d)
        | Map::HashOfMaps(d)
        | Map::InodeStorage(d)
        | Map::LpmTrie(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuCgroupStorage(d)
        | Map::PerCpuHashMap(d)
        | Map::PerCpuLruHashMap(d)
        | Map::PerfEventArray(d)
        | Map::ProgramArray(d)
        | Map::Queue(d)
        | Map::ReusePortSockArray(d)
        | Map::RingBuf(d)
        | Map::SockHash(d)
        | Map::SockMap(d)
        | Map::SkStorage(d)
        | Map::Stack(d)
        | Map::StackTraceMap(d)
        | Map::Unsupported(d)
        | Map::XskMap(d) => d,
    };
    data.fd().as_fd().as_raw_fd()
}

impl MultiPrograms {
    /// Loads every `uprobe`/`uretprobe` program of `object` (the bytes `ebpf` was loaded
    /// from) for `uprobe_multi` links, using the maps `ebpf` created and relocated against
    /// `kernel_btf` (the running kernel's, as for `ebpf`).
    pub fn load(
        object: &[u8],
        ebpf: &Ebpf,
        kernel_btf: Option<&Btf>,
    ) -> Result<Self, MultiLoadError> {
        let obj_err = |e: &dyn std::fmt::Display| MultiLoadError::Object(e.to_string());
        let mut obj = Object::parse(object).map_err(|e| obj_err(&e))?;
        let features = aya::features();
        let btf_fd = match features.btf() {
            Some(btf_features) => match obj
                .fixup_and_sanitize_btf(btf_features)
                .map_err(|e| obj_err(&e))?
            {
                Some(btf) => Some(load_btf(&btf.to_bytes()).map_err(MultiLoadError::Btf)?),
                None => None,
            },
            None => None,
        };
        if let Some(kernel_btf) = kernel_btf {
            obj.relocate_btf(kernel_btf).map_err(|e| obj_err(&e))?;
        }
        let text_sections: HashSet<usize> = obj.functions.keys().map(|(s, _)| *s).collect();
        let maps = std::mem::take(&mut obj.maps);
        let mut with_fds = Vec::with_capacity(maps.len());
        for (name, def) in &maps {
            let map = ebpf
                .map(name)
                .ok_or_else(|| MultiLoadError::MissingMap(name.clone()))?;
            with_fds.push((name.as_str(), map_fd(map), def));
        }
        obj.relocate_maps(with_fds.into_iter(), &text_sections)
            .map_err(|e| obj_err(&e))?;
        obj.relocate_calls(&text_sections)
            .map_err(|e| obj_err(&e))?;
        obj.sanitize_functions(features);

        let kernel_version = aya::util::KernelVersion::current()
            .map(|v| v.code())
            .unwrap_or(0);
        let mut programs = HashMap::new();
        for (name, program) in &obj.programs {
            let ret = match program.section {
                ProgramSection::UProbe { .. } => false,
                ProgramSection::URetProbe { .. } => true,
                _ => continue,
            };
            let function = &obj.functions[&program.function_key()];
            let load = |log: Option<&mut Vec<u8>>| {
                load_program(
                    name,
                    &function.instructions,
                    &program.license,
                    program.kernel_version.unwrap_or(kernel_version),
                    btf_fd.as_ref().map(|fd| (fd.as_raw_fd(), function)),
                    log,
                )
            };
            let fd = match load(None) {
                Ok(fd) => fd,
                Err(source) => {
                    // Load again with the verifier's log, to say why.
                    let mut log = vec![0u8; 1 << 20];
                    let _ = load(Some(&mut log));
                    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                    let text = String::from_utf8_lossy(&log[..end]);
                    let lines: Vec<&str> = text.lines().collect();
                    let tail = &lines[lines.len().saturating_sub(20)..];
                    let log = if tail.is_empty() {
                        String::new()
                    } else {
                        format!("\nverifier log (end):\n{}", tail.join("\n"))
                    };
                    return Err(MultiLoadError::Program {
                        name: name.clone(),
                        source,
                        log,
                    });
                }
            };
            programs.insert(name.clone(), MultiProgram { fd, ret });
        }
        Ok(Self {
            programs,
            _btf: btf_fd,
        })
    }

    /// Whether `name` is one of the programs.
    pub fn contains(&self, name: &str) -> bool {
        self.programs.contains_key(name)
    }

    /// Attaches `program` at every offset of `binary` in one link, for `pid` only or (None)
    /// for every process that runs the file. Closing the returned descriptor detaches it.
    pub fn attach(
        &self,
        program: &str,
        binary: &Path,
        offsets: &[u64],
        pid: Option<NonZeroU32>,
    ) -> io::Result<OwnedFd> {
        let prog = self.programs.get(program).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("no program {program}"))
        })?;
        let flags = if prog.ret {
            BPF_F_UPROBE_MULTI_RETURN
        } else {
            0
        };
        create_link(prog.fd.as_raw_fd(), binary, offsets, pid, flags)
    }

    /// What the verifier reported for each program.
    pub fn stats(&self) -> Vec<(String, io::Result<ProgramStats>)> {
        self.programs
            .iter()
            .map(|(name, p)| (name.clone(), program_stats(p.fd.as_raw_fd())))
            .collect()
    }
}

fn create_link(
    prog_fd: RawFd,
    binary: &Path,
    offsets: &[u64],
    pid: Option<NonZeroU32>,
    flags: u32,
) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let path = CString::new(binary.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    let mut attr = zeroed_attr();
    // SAFETY: writing the BPF_LINK_CREATE member of a zeroed union, and its uprobe_multi arm.
    unsafe {
        let l = &mut attr.link_create;
        l.__bindgen_anon_1.prog_fd = prog_fd as u32;
        l.attach_type = BPF_TRACE_UPROBE_MULTI as u32;
        let m = &mut l.__bindgen_anon_3.uprobe_multi;
        m.path = path.as_ptr() as u64;
        m.offsets = offsets.as_ptr() as u64;
        m.cnt = offsets.len() as u32;
        m.flags = flags;
        m.pid = pid.map_or(0, NonZeroU32::get);
    }
    sys_bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr).and_then(fd_from)
}

fn program_stats(fd: RawFd) -> io::Result<ProgramStats> {
    // SAFETY: `bpf_prog_info` is plain old data.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = zeroed_attr();
    attr.info.bpf_fd = fd as u32;
    attr.info.info_len = std::mem::size_of::<bpf_prog_info>() as u32;
    attr.info.info = &mut info as *mut bpf_prog_info as u64;
    sys_bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(ProgramStats {
        verified_insns: info.verified_insns,
        xlated_bytes: info.xlated_prog_len,
        jited_bytes: info.jited_prog_len,
    })
}

/// Whether this kernel creates `uprobe_multi` links for this process: a two-instruction
/// program is loaded for them and linked to a path that is not a file, which a kernel that
/// knows the link refuses with EBADF after checking everything else (EINVAL otherwise).
pub fn supported() -> bool {
    // r0 = 0; exit
    const PROGRAM: [u8; 16] = [0xb7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
    let Ok(insns) = aya_obj::copy_instructions(&PROGRAM) else {
        return false;
    };
    let license = CString::new("GPL").expect("no NUL");
    let Ok(prog) = load_program("spanhook_probe", &insns, &license, 0, None, None) else {
        return false;
    };
    match create_link(prog.as_raw_fd(), Path::new("/"), &[0], None, 0) {
        Ok(_) => true,
        Err(e) => e.raw_os_error() == Some(libc::EBADF),
    }
}
