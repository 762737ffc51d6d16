//! Map keys shared by several probes.

/// Identifies a goroutine of one process: the `runtime.g` pointer is unique while the
/// goroutine lives, and stays put when the runtime moves the goroutine's stack.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GoroutineKey {
    /// Thread-group id (the process id as user space sees it in the root pid namespace).
    pub tgid: u32,
    /// Explicit padding; always zero.
    pub _pad: u32,
    /// Address of the goroutine's `runtime.g`.
    pub g: u64,
}

const _: () = assert!(core::mem::size_of::<GoroutineKey>() == 16);

/// Identifies a `context.Context` of one process by the address of its data (the concrete
/// context struct), which is what a request's descendants carry as their parent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ContextKey {
    /// Thread-group id.
    pub tgid: u32,
    /// Explicit padding; always zero.
    pub _pad: u32,
    /// Address of the context's data word.
    pub ctx: u64,
}

/// Identifies a goroutine of one process by its goid (unique for the process's lifetime).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GoidKey {
    /// Thread-group id.
    pub tgid: u32,
    /// Explicit padding; always zero.
    pub _pad: u32,
    /// `runtime.g.goid`.
    pub goid: u64,
}

/// A TCP connection as both ends of the kernel see it: the local and remote port (host byte
/// order) and the remote address (IPv4 written as IPv4-mapped IPv6).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Local port.
    pub local_port: u16,
    /// Remote port.
    pub remote_port: u16,
    /// Explicit padding; always zero.
    pub _pad: u32,
    /// Remote address, 16 bytes (`::ffff:a.b.c.d` for IPv4).
    pub remote_ip: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<ContextKey>() == 16);
const _: () = assert!(core::mem::size_of::<GoidKey>() == 16);
const _: () = assert!(core::mem::size_of::<ConnKey>() == 24);
