//! From a descriptor of the current process to its TCP socket, in the kernel.
//!
//! The walk is `task->files->fdt->fd[fd]` to the `struct file`, then the file's inode must be
//! a socket (`S_IFSOCK`), its `private_data` is the `struct socket`, and its `sk` must be an
//! IPv4 or IPv6 stream socket of protocol TCP. Field offsets are CO-RE relocations (the C
//! accessors of ebpf/probes/c/core_read.c, which the loader rewrites against the running
//! kernel's BTF). Every step is a `bpf_probe_read_kernel`, which fails cleanly on a bad
//! address; any failure means "not a TCP socket", so a descriptor that is a file, a pipe, a
//! UNIX or UDP socket is dropped here, before anything is copied.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use spanhook_common::SocketDataHeader;

const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;
const SOCK_STREAM: u16 = 1;
const IPPROTO_TCP: u16 = 6;
/// `AF_INET`.
pub const AF_INET: u16 = 2;
/// `AF_INET6`.
pub const AF_INET6: u16 = 10;

/// The CO-RE accessors of ebpf/probes/c/core_read.c: each returns a field's offset (or
/// whether every field has the expected size) as a constant the loader relocates.
mod co_re {
    extern "C" {
        pub fn spanhook_core_task_files() -> u32;
        pub fn spanhook_core_files_fdt() -> u32;
        pub fn spanhook_core_fdtable_max_fds() -> u32;
        pub fn spanhook_core_fdtable_fd() -> u32;
        pub fn spanhook_core_file_inode() -> u32;
        pub fn spanhook_core_file_private_data() -> u32;
        pub fn spanhook_core_inode_mode() -> u32;
        pub fn spanhook_core_socket_sk() -> u32;
        pub fn spanhook_core_sock_type() -> u32;
        pub fn spanhook_core_sock_protocol() -> u32;
        pub fn spanhook_core_skc_family() -> u32;
        pub fn spanhook_core_skc_daddr() -> u32;
        pub fn spanhook_core_skc_rcv_saddr() -> u32;
        pub fn spanhook_core_skc_dport() -> u32;
        pub fn spanhook_core_skc_num() -> u32;
        pub fn spanhook_core_skc_v6_daddr() -> u32;
        pub fn spanhook_core_skc_v6_rcv_saddr() -> u32;
        pub fn spanhook_core_sizes_ok() -> u32;
    }
}

/// The offset of a field, from its CO-RE accessor.
macro_rules! off {
    ($accessor:ident) => {
        // SAFETY: the accessor only returns a relocated constant.
        (unsafe { co_re::$accessor() } as u64)
    };
}

#[inline(always)]
fn kernel<T>(addr: u64) -> Option<T> {
    // SAFETY: the helper validates the address; a bad one returns an error, never faults.
    unsafe { bpf_probe_read_kernel(addr as *const T) }.ok()
}

/// The running kernel's structures as the reads assume them (see [`layout`]).
#[derive(Clone, Copy)]
pub struct Layout(());

/// The layout, when every field the walk reads has the size it reads (relocated at load).
#[inline(always)]
pub fn layout() -> Option<Layout> {
    // SAFETY: the accessor only returns a relocated constant.
    (unsafe { co_re::spanhook_core_sizes_ok() } != 0).then_some(Layout(()))
}

/// The `struct sock` of descriptor `fd` of the current process, if it is a TCP socket.
#[inline(always)]
pub fn tcp_sock(_: Layout, fd: i64) -> Option<u64> {
    if !(0..=i32::MAX as i64).contains(&fd) {
        return None;
    }
    // SAFETY: plain helper call.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = kernel(task + off!(spanhook_core_task_files))?;
    let fdt: u64 = kernel(files + off!(spanhook_core_files_fdt))?;
    let max_fds: u32 = kernel(fdt + off!(spanhook_core_fdtable_max_fds))?;
    if fd as u64 >= max_fds as u64 {
        return None;
    }
    let array: u64 = kernel(fdt + off!(spanhook_core_fdtable_fd))?;
    let file: u64 = kernel(array + 8 * fd as u64)?;
    if file == 0 {
        return None;
    }
    let inode: u64 = kernel(file + off!(spanhook_core_file_inode))?;
    let mode: u16 = kernel(inode + off!(spanhook_core_inode_mode))?;
    if mode & S_IFMT != S_IFSOCK {
        return None;
    }
    let socket: u64 = kernel(file + off!(spanhook_core_file_private_data))?;
    let sk: u64 = kernel(socket + off!(spanhook_core_socket_sk))?;
    if sk == 0 {
        return None;
    }
    let family: u16 = kernel(sk + off!(spanhook_core_skc_family))?;
    if family != AF_INET && family != AF_INET6 {
        return None;
    }
    let ty: u16 = kernel(sk + off!(spanhook_core_sock_type))?;
    let protocol: u16 = kernel(sk + off!(spanhook_core_sock_protocol))?;
    (ty == SOCK_STREAM && protocol == IPPROTO_TCP).then_some(sk)
}

/// (local port, remote port) of socket `sk`, host byte order.
#[inline(always)]
pub fn ports(_: Layout, sk: u64) -> (u16, u16) {
    (
        kernel::<u16>(sk + off!(spanhook_core_skc_num)).unwrap_or(0),
        u16::from_be(kernel::<u16>(sk + off!(spanhook_core_skc_dport)).unwrap_or(0)),
    )
}

/// Fills family, ports and addresses of `h` from socket `sk`.
#[inline(always)]
pub fn addresses(l: Layout, sk: u64, h: &mut SocketDataHeader) {
    h.family = kernel::<u16>(sk + off!(spanhook_core_skc_family)).unwrap_or(0);
    (h.local_port, h.remote_port) = ports(l, sk);
    h.local_addr = [0; 16];
    h.remote_addr = [0; 16];
    if h.family == AF_INET {
        let local: [u8; 4] = kernel(sk + off!(spanhook_core_skc_rcv_saddr)).unwrap_or([0; 4]);
        let remote: [u8; 4] = kernel(sk + off!(spanhook_core_skc_daddr)).unwrap_or([0; 4]);
        h.local_addr[..4].copy_from_slice(&local);
        h.remote_addr[..4].copy_from_slice(&remote);
    } else if h.family == AF_INET6 {
        h.local_addr = kernel(sk + off!(spanhook_core_skc_v6_rcv_saddr)).unwrap_or([0; 16]);
        h.remote_addr = kernel(sk + off!(spanhook_core_skc_v6_daddr)).unwrap_or([0; 16]);
    }
}
