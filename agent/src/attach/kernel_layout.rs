//! Where the fields the socket programs walk sit in the running kernel's structures, read
//! from its BTF (`/sys/kernel/btf/vmlinux`).
//!
//! The kernel programs cannot use CO-RE relocations through aya here, so user space resolves
//! the offsets once at start-up, as it does for Go struct fields, and hands them over in the
//! `KERNEL_LAYOUT` map. The BTF reader is small and strict: it indexes the type section and
//! follows named and anonymous members (the `sock_common` address fields live in anonymous
//! unions), refusing bitfields and fields of an unexpected size.

use std::path::Path;

use spanhook_common::KernelLayout;

/// Where the running kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Why the layout could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// The BTF file cannot be read.
    #[error("cannot read the kernel's BTF at {path} (socket-level tracing needs a kernel built with CONFIG_DEBUG_INFO_BTF): {source}")]
    Read {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The BTF is malformed.
    #[error("the kernel's BTF is malformed: {0}")]
    Malformed(&'static str),
    /// A structure or field is missing or not as expected.
    #[error("the kernel's {0} is not laid out as socket-level tracing expects: {1}")]
    Field(String, &'static str),
}

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// A parsed BTF blob: type records by id, and the string section.
struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// Byte offset of each type record in `types`; index 0 is the void type.
    index: Vec<usize>,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// A type record's header.
#[derive(Clone, Copy)]
struct Type {
    name_off: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    /// Size (structs, ints) or referenced type (pointers, typedefs, qualifiers).
    size_or_type: u32,
    /// Offset of the record's trailing data in `types`.
    data: usize,
}

impl<'a> Btf<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, LayoutError> {
        let bad = LayoutError::Malformed;
        if bytes.len() < 24 || bytes[..2] != [0x9f, 0xeb] {
            return Err(bad("no little-endian BTF magic"));
        }
        let hdr_len = u32_at(bytes, 4).ok_or(bad("short header"))? as usize;
        let type_off = u32_at(bytes, 8).ok_or(bad("short header"))? as usize;
        let type_len = u32_at(bytes, 12).ok_or(bad("short header"))? as usize;
        let str_off = u32_at(bytes, 16).ok_or(bad("short header"))? as usize;
        let str_len = u32_at(bytes, 20).ok_or(bad("short header"))? as usize;
        let section = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off)?;
            bytes.get(start..start.checked_add(len)?)
        };
        let types = section(type_off, type_len).ok_or(bad("type section outside the file"))?;
        let strings = section(str_off, str_len).ok_or(bad("string section outside the file"))?;
        let mut index = vec![0usize];
        let mut at = 0usize;
        while at < types.len() {
            let info = u32_at(types, at + 4).ok_or(bad("truncated type"))?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                0..=19 => 0,
                _ => return Err(bad("unknown type kind")),
            };
            index.push(at);
            at = at.checked_add(12 + extra).ok_or(bad("type overflow"))?;
        }
        if at != types.len() {
            return Err(bad("truncated type section"));
        }
        Ok(Btf {
            types,
            strings,
            index,
        })
    }

    fn ty(&self, id: u32) -> Option<Type> {
        let at = *self.index.get(id as usize)?;
        if id == 0 {
            return None;
        }
        let info = u32_at(self.types, at + 4)?;
        Some(Type {
            name_off: u32_at(self.types, at)?,
            kind: (info >> 24) & 0x1f,
            vlen: (info & 0xffff) as usize,
            kind_flag: info >> 31 == 1,
            size_or_type: u32_at(self.types, at + 8)?,
            data: at + 12,
        })
    }

    fn name(&self, off: u32) -> &[u8] {
        let rest = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    /// Follows typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Option<(u32, Type)> {
        for _ in 0..32 {
            let t = self.ty(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => return Some((id, t)),
            }
        }
        None
    }

    /// The id of the struct called `name`.
    fn find_struct(&self, name: &str) -> Option<u32> {
        (1..self.index.len() as u32).find(|&id| {
            self.ty(id)
                .is_some_and(|t| t.kind == KIND_STRUCT && self.name(t.name_off) == name.as_bytes())
        })
    }

    /// Byte offset and type id of member `name` of struct/union `id`, looking inside
    /// anonymous members.
    fn member(&self, id: u32, name: &str, depth: u32) -> Result<Option<(u64, u32)>, &'static str> {
        let Some((_, t)) = self.resolve(id) else {
            return Ok(None);
        };
        if t.kind != KIND_STRUCT && t.kind != KIND_UNION || depth > 8 {
            return Ok(None);
        }
        for i in 0..t.vlen {
            let m = t.data + 12 * i;
            let (Some(m_name), Some(m_type), Some(m_off)) = (
                u32_at(self.types, m),
                u32_at(self.types, m + 4),
                u32_at(self.types, m + 8),
            ) else {
                return Err("truncated member");
            };
            let (bits, bitfield) = if t.kind_flag {
                (m_off & 0xff_ffff, m_off >> 24 != 0)
            } else {
                (m_off, false)
            };
            if m_name == 0 {
                if let Some((inner, ty)) = self.member(m_type, name, depth + 1)? {
                    return Ok(Some((bits as u64 / 8 + inner, ty)));
                }
            } else if self.name(m_name) == name.as_bytes() {
                if bitfield || bits % 8 != 0 {
                    return Err("is a bitfield");
                }
                return Ok(Some((bits as u64 / 8, m_type)));
            }
        }
        Ok(None)
    }

    /// Size in bytes of type `id` (integers, pointers, enums, structs, arrays).
    fn size(&self, id: u32) -> Option<u64> {
        let (_, t) = self.resolve(id)?;
        match t.kind {
            KIND_PTR => Some(8),
            KIND_INT | KIND_ENUM | KIND_ENUM64 | KIND_STRUCT | KIND_UNION => {
                Some(t.size_or_type as u64)
            }
            KIND_ARRAY => {
                let elem = u32_at(self.types, t.data)?;
                let n = u32_at(self.types, t.data + 8)?;
                Some(self.size(elem)? * n as u64)
            }
            _ => None,
        }
    }

    /// Offset of `path` (members, nested) inside struct `root`, checking the last one's size.
    fn offset(&self, root: &str, path: &[&str], size: u64) -> Result<u32, LayoutError> {
        let what = format!("{root}.{}", path.join("."));
        let field = |why| LayoutError::Field(what.clone(), why);
        let mut id = self
            .find_struct(root)
            .ok_or_else(|| field("no such structure"))?;
        let mut total = 0u64;
        for name in path {
            let (off, ty) = self
                .member(id, name, 0)
                .map_err(field)?
                .ok_or_else(|| field("no such field"))?;
            total += off;
            id = ty;
        }
        if self.size(id) != Some(size) {
            return Err(field("unexpected size"));
        }
        u32::try_from(total).map_err(|_| field("offset too large"))
    }
}

/// The layout from BTF bytes.
pub fn from_btf(bytes: &[u8]) -> Result<KernelLayout, LayoutError> {
    let btf = Btf::parse(bytes)?;
    let sk = |f: &str, size| btf.offset("sock", &["__sk_common", f], size);
    Ok(KernelLayout {
        task_files: btf.offset("task_struct", &["files"], 8)?,
        files_fdt: btf.offset("files_struct", &["fdt"], 8)?,
        fdtable_max_fds: btf.offset("fdtable", &["max_fds"], 4)?,
        fdtable_fd: btf.offset("fdtable", &["fd"], 8)?,
        file_inode: btf.offset("file", &["f_inode"], 8)?,
        file_private_data: btf.offset("file", &["private_data"], 8)?,
        inode_mode: btf.offset("inode", &["i_mode"], 2)?,
        socket_sk: btf.offset("socket", &["sk"], 8)?,
        sock_type: btf.offset("sock", &["sk_type"], 2)?,
        sock_protocol: btf.offset("sock", &["sk_protocol"], 2)?,
        skc_family: sk("skc_family", 2)?,
        skc_daddr: sk("skc_daddr", 4)?,
        skc_rcv_saddr: sk("skc_rcv_saddr", 4)?,
        skc_dport: sk("skc_dport", 2)?,
        skc_num: sk("skc_num", 2)?,
        skc_v6_daddr: sk("skc_v6_daddr", 16)?,
        skc_v6_rcv_saddr: sk("skc_v6_rcv_saddr", 16)?,
        ready: 1,
    })
}

/// The running kernel's layout.
pub fn running_kernel() -> Result<KernelLayout, LayoutError> {
    let bytes = std::fs::read(Path::new(VMLINUX_BTF)).map_err(|source| LayoutError::Read {
        path: VMLINUX_BTF.to_string(),
        source,
    })?;
    from_btf(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny BTF blob: `struct s { int a; union { struct { short b; short c; }; }; }`.
    fn tiny() -> Vec<u8> {
        let strings = b"\0s\0a\0b\0c\0int\0short\0".to_vec();
        let name = |s: &str| {
            let needle = format!("\0{s}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .unwrap() as u32
                + 1
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        // 1: int
        push(&[name("int"), KIND_INT << 24, 4, 32]);
        // 2: short
        push(&[name("short"), KIND_INT << 24, 2, 16]);
        // 3: anonymous struct { short b; short c; }
        push(&[0, KIND_STRUCT << 24 | 2, 4]);
        push(&[name("b"), 2, 0]);
        push(&[name("c"), 2, 16]);
        // 4: anonymous union { struct 3 }
        push(&[0, KIND_UNION << 24 | 1, 4]);
        push(&[0, 3, 0]);
        // 5: struct s { int a; union 4; }
        push(&[name("s"), KIND_STRUCT << 24 | 2, 8]);
        push(&[name("a"), 1, 0]);
        push(&[0, 4, 32]);
        let mut out = vec![0x9f, 0xeb, 1, 0];
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&types);
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn finds_named_and_anonymous_members() {
        let bytes = tiny();
        let btf = Btf::parse(&bytes).unwrap();
        assert_eq!(btf.offset("s", &["a"], 4).unwrap(), 0);
        assert_eq!(btf.offset("s", &["b"], 2).unwrap(), 4);
        assert_eq!(btf.offset("s", &["c"], 2).unwrap(), 6);
        assert!(btf.offset("s", &["c"], 4).is_err());
        assert!(btf.offset("s", &["d"], 2).is_err());
        assert!(btf.offset("t", &["a"], 4).is_err());
    }

    #[test]
    fn malformed_btf_is_an_error() {
        let bytes = tiny();
        for cut in [0, 10, 30, bytes.len() - 5] {
            assert!(Btf::parse(&bytes[..cut]).is_err() || cut == bytes.len() - 5);
        }
        assert!(from_btf(&bytes).is_err());
    }

    #[test]
    fn the_running_kernel_has_every_field() {
        // Readable without privileges on kernels that publish BTF (the project's machines do).
        let Ok(bytes) = std::fs::read(VMLINUX_BTF) else {
            panic!("{VMLINUX_BTF} is not readable: socket-level tracing needs kernel BTF");
        };
        let l = from_btf(&bytes).unwrap();
        assert_eq!(l.ready, 1);
        assert_eq!(l.skc_family, 16);
        assert_eq!(l.skc_dport, 12);
        assert_eq!(l.skc_num, 14);
        assert_eq!(l.inode_mode, 0);
    }
}
