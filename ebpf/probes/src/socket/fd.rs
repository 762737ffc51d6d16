//! From a descriptor of the current process to its TCP socket, in the kernel.
//!
//! The walk is `task->files->fdt->fd[fd]` to the `struct file`, then the file's inode must be
//! a socket (`S_IFSOCK`), its `private_data` is the `struct socket`, and its `sk` must be an
//! IPv4 or IPv6 stream socket of protocol TCP. Field offsets come from the running kernel's
//! BTF through `KERNEL_LAYOUT`. Every step is a `bpf_probe_read_kernel`, which fails cleanly
//! on a bad address; any failure means "not a TCP socket", so a descriptor that is a file,
//! a pipe, a UNIX or UDP socket is dropped here, before anything is copied.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use spanhook_common::{KernelLayout, SocketDataHeader};

use super::maps::KERNEL_LAYOUT;

const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;
const SOCK_STREAM: u16 = 1;
const IPPROTO_TCP: u16 = 6;
/// `AF_INET`.
pub const AF_INET: u16 = 2;
/// `AF_INET6`.
pub const AF_INET6: u16 = 10;

#[inline(always)]
fn kernel<T>(addr: u64) -> Option<T> {
    // SAFETY: the helper validates the address; a bad one returns an error, never faults.
    unsafe { bpf_probe_read_kernel(addr as *const T) }.ok()
}

/// The layout, once user space has written it.
#[inline(always)]
pub fn layout() -> Option<&'static KernelLayout> {
    KERNEL_LAYOUT.get(0).filter(|l| l.ready != 0)
}

/// The `struct sock` of descriptor `fd` of the current process, if it is a TCP socket.
#[inline(always)]
pub fn tcp_sock(l: &KernelLayout, fd: i64) -> Option<u64> {
    if !(0..=i32::MAX as i64).contains(&fd) {
        return None;
    }
    // SAFETY: plain helper call.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = kernel(task + l.task_files as u64)?;
    let fdt: u64 = kernel(files + l.files_fdt as u64)?;
    let max_fds: u32 = kernel(fdt + l.fdtable_max_fds as u64)?;
    if fd as u64 >= max_fds as u64 {
        return None;
    }
    let array: u64 = kernel(fdt + l.fdtable_fd as u64)?;
    let file: u64 = kernel(array + 8 * fd as u64)?;
    if file == 0 {
        return None;
    }
    let inode: u64 = kernel(file + l.file_inode as u64)?;
    let mode: u16 = kernel(inode + l.inode_mode as u64)?;
    if mode & S_IFMT != S_IFSOCK {
        return None;
    }
    let socket: u64 = kernel(file + l.file_private_data as u64)?;
    let sk: u64 = kernel(socket + l.socket_sk as u64)?;
    if sk == 0 {
        return None;
    }
    let family: u16 = kernel(sk + l.skc_family as u64)?;
    if family != AF_INET && family != AF_INET6 {
        return None;
    }
    let ty: u16 = kernel(sk + l.sock_type as u64)?;
    let protocol: u16 = kernel(sk + l.sock_protocol as u64)?;
    (ty == SOCK_STREAM && protocol == IPPROTO_TCP).then_some(sk)
}

/// (local port, remote port) of socket `sk`, host byte order.
#[inline(always)]
pub fn ports(l: &KernelLayout, sk: u64) -> (u16, u16) {
    (
        kernel::<u16>(sk + l.skc_num as u64).unwrap_or(0),
        u16::from_be(kernel::<u16>(sk + l.skc_dport as u64).unwrap_or(0)),
    )
}

/// Fills family, ports and addresses of `h` from socket `sk`.
#[inline(always)]
pub fn addresses(l: &KernelLayout, sk: u64, h: &mut SocketDataHeader) {
    h.family = kernel::<u16>(sk + l.skc_family as u64).unwrap_or(0);
    (h.local_port, h.remote_port) = ports(l, sk);
    h.local_addr = [0; 16];
    h.remote_addr = [0; 16];
    if h.family == AF_INET {
        let local: [u8; 4] = kernel(sk + l.skc_rcv_saddr as u64).unwrap_or([0; 4]);
        let remote: [u8; 4] = kernel(sk + l.skc_daddr as u64).unwrap_or([0; 4]);
        h.local_addr[..4].copy_from_slice(&local);
        h.remote_addr[..4].copy_from_slice(&remote);
    } else if h.family == AF_INET6 {
        h.local_addr = kernel(sk + l.skc_v6_rcv_saddr as u64).unwrap_or([0; 16]);
        h.remote_addr = kernel(sk + l.skc_v6_daddr as u64).unwrap_or([0; 16]);
    }
}
