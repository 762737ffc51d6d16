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
