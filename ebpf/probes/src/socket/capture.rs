//! Socket system calls of traced processes: `read`, `write`, `readv`, `writev`, `recvfrom`,
//! `sendto`, `recvmsg`, `sendmsg`, `sendfile` and `close`, through their tracepoints.
//!
//! The tracepoints fire for every process on the machine, so each entry program starts with
//! the cheapest possible refusal: the thread's process must be in `TARGETS` with
//! `FLAG_SOCKET_CAPTURE`, and the descriptor must be a TCP socket (see fd.rs). Only then is
//! the call remembered (`SOCKET_CALLS`, by thread). The bytes are copied at the return,
//! where the count is known (a partial write copies what was written, a failed call
//! nothing); one exit program serves every call.
//!
//! Argument words of a `syscalls:sys_enter_*` record are at offsets 16, 24, 32, … and the
//! return value of a `sys_exit_*` record at 16 (see `events/syscalls/*/format` in tracefs).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
    EbpfContext,
};
use spanhook_common::{
    socket::{direction, flags, source},
    Counter, EventHeader, SocketCall, SocketRecordKind, SslKey, TargetConfig,
};

use super::{
    fd::{addresses, layout, ports, tcp_sock},
    maps::{IGNORED_SOCKS, SOCKET_CALLS, SSL_CALLS, SSL_FDS},
    record::{copy_iovecs, copy_plain, scratch, submit},
};
use crate::{emit::count, maps::TARGETS};

/// `MSG_PEEK`: the bytes stay in the socket and will be read again; never captured.
const MSG_PEEK: u64 = 2;

/// Offsets of `msg_iov` and `msg_iovlen` in `struct user_msghdr`.
const MSGHDR_IOV: u64 = 16;
const MSGHDR_IOVLEN: u64 = 24;

/// How a call's arguments describe its bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// (fd, buf, count, flags at 40 for recvfrom/sendto).
    Plain,
    /// (fd, iov, iovcnt).
    Vectored,
    /// (fd, msghdr, flags).
    Message,
    /// sendfile (out_fd, in_fd, offset, count).
    File,
}

#[inline(always)]
fn arg(ctx: &TracePointContext, offset: usize) -> u64 {
    // SAFETY: syscall tracepoint records hold their arguments as 8-byte words from offset 16;
    // the load is made straight off the context pointer, as the verifier requires.
    unsafe { core::ptr::read_volatile((ctx.as_ptr() as *const u8).add(offset) as *const u64) }
}

/// The flags word of the process of the current thread, if it is traced at socket level.
#[inline(always)]
fn traced(tgid: u32) -> Option<u32> {
    // SAFETY: the value is read at once.
    let cfg = unsafe { TARGETS.get(&tgid) }?;
    let flags = cfg.flags;
    (flags & TargetConfig::FLAG_SOCKET_CAPTURE != 0).then_some(flags)
}

#[inline(always)]
fn enter(ctx: &TracePointContext, dir: u8, shape: Shape, flags_at: usize) -> Option<()> {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    let target_flags = traced(tgid)?;
    if flags_at != 0 && arg(ctx, flags_at) & MSG_PEEK != 0 {
        return None;
    }
    let fd = arg(ctx, 16) as i32 as i64;
    let l = layout()?;
    let sk = tcp_sock(l, fd)?;
    if target_flags & TargetConfig::FLAG_SOCKET_TLS != 0 {
        // SAFETY: read at once.
        if let Some(call) = unsafe { SSL_CALLS.get(&id) } {
            // Ciphertext of a libssl call: learn the SSL's descriptor, copy nothing.
            let key = SslKey {
                tgid,
                _pad: 0,
                ssl: call.ssl,
            };
            let _ = SSL_FDS.insert(&key, &(fd as i32), 0);
            return None;
        }
    }
    // SAFETY: copied out at once.
    if let Some(ignored) = unsafe { IGNORED_SOCKS.get(&sk) }.copied() {
        if ignored.tgid == tgid {
            if ports(l, sk) == (ignored.local_port, ignored.remote_port) {
                return None;
            }
            // The `struct sock` was freed and now holds another connection.
            let _ = IGNORED_SOCKS.remove(&sk);
        }
    }
    let mut call = SocketCall {
        // SAFETY: plain helper call.
        start_ns: unsafe { bpf_ktime_get_ns() },
        sock: sk,
        buf: 0,
        iovlen: 0,
        fd: fd as i32,
        direction: dir,
        vectored: 0,
        from_file: 0,
        _pad: 0,
    };
    match shape {
        Shape::Plain => call.buf = arg(ctx, 24),
        Shape::Vectored => {
            call.buf = arg(ctx, 24);
            call.iovlen = arg(ctx, 32);
            call.vectored = 1;
        }
        Shape::Message => {
            let msg = arg(ctx, 24);
            // SAFETY: the helper validates the address.
            call.buf =
                unsafe { bpf_probe_read_user((msg + MSGHDR_IOV) as *const u64) }.unwrap_or(0);
            // SAFETY: as above.
            call.iovlen =
                unsafe { bpf_probe_read_user((msg + MSGHDR_IOVLEN) as *const u64) }.unwrap_or(0);
            call.vectored = 1;
        }
        Shape::File => call.from_file = 1,
    }
    if SOCKET_CALLS.insert(&id, &call, 0).is_err() {
        count(Counter::SocketCallInsertFailed);
    }
    Some(())
}

/// `sys_enter_read`.
#[tracepoint]
pub fn socket_read_enter(ctx: TracePointContext) -> u32 {
    let _ = enter(&ctx, direction::INGRESS, Shape::Plain, 0);
    0
}

/// `sys_enter_recvfrom` (flags at 40).
#[tracepoint]
pub fn socket_recvfrom_enter(ctx: TracePointContext) -> u32 {
    let _ = enter(&ctx, direction::INGRESS, Shape::Plain, 40);
    0
}

/// `sys_enter_write`.
#[tracepoint]
pub fn socket_write_enter(ctx: TracePointContext) -> u32 {
    let _ = enter(&ctx, direction::EGRESS, Shape::Plain, 0);
    0
}

/// `sys_enter_sendto`.
#[tracepoint]
pub fn socket_sendto_enter(ctx: TracePointContext) -> u32 {
    let _ = enter(&ctx, direction::EGRESS, Shape::Plain, 0);
    0
}

/// `sys_enter_readv`.
#[tracepoint]
pub fn socket_readv_enter(ctx: TracePointContext) -> u32 {
    let _ = enter(&ctx, direction::INGRESS, Shape::Vectored, 0);
    0
}

/// `sys_enter_writev`.
#[tracepoint]
pub fn socket_writev_enter(ctx: TracePointContext) -> u32 {
    let _ = enter(&ctx, direction::EGRESS, Shape::Vectored, 0);
    0
}

/// `sys_enter_recvmsg` (flags at 32).
#[tracepoint]
pub fn socket_recvmsg_enter(ctx: TracePointContext) -> u32 {
    let _ = enter(&ctx, direction::INGRESS, Shape::Message, 32);
    0
}

/// `sys_enter_sendmsg`.
#[tracepoint]
pub fn socket_sendmsg_enter(ctx: TracePointContext) -> u32 {
    let _ = enter(&ctx, direction::EGRESS, Shape::Message, 0);
    0
}

/// `sys_enter_sendfile64`: the bytes come from a file, only their count matters (an HTTP
/// body sent this way must still be skipped to find the next response).
#[tracepoint]
pub fn socket_sendfile_enter(ctx: TracePointContext) -> u32 {
    let _ = enter(&ctx, direction::EGRESS, Shape::File, 0);
    0
}

/// Every `sys_exit_*` of the calls above.
#[tracepoint]
pub fn socket_exit(ctx: TracePointContext) -> u32 {
    let _ = exit(&ctx);
    0
}

#[inline(always)]
fn exit(ctx: &TracePointContext) -> Option<()> {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: copied out at once.
    let call = unsafe { SOCKET_CALLS.get(&id) }.copied()?;
    let _ = SOCKET_CALLS.remove(&id);
    let ret = arg(ctx, 16) as i64;
    if ret <= 0 {
        return None;
    }
    let l = layout()?;
    let s = scratch()?;
    let h = &mut s.header;
    h.header = EventHeader {
        kind: SocketRecordKind::Data as u16,
        _pad: 0,
        tgid: (id >> 32) as u32,
        start_ns: call.start_ns,
        // SAFETY: plain helper call.
        end_ns: unsafe { bpf_ktime_get_ns() },
    };
    h.sock = call.sock;
    h.ssl = 0;
    h.len = ret as u64;
    h.tid = id as u32;
    h.fd = call.fd;
    h.captured = 0;
    h.source = source::SYSCALL;
    h.direction = call.direction;
    h.flags = if call.from_file != 0 {
        flags::FROM_FILE
    } else {
        0
    };
    h._pad = [0; 5];
    addresses(l, call.sock, h);
    let captured = if call.from_file != 0 {
        0
    } else if call.vectored != 0 {
        copy_iovecs(s, call.buf, call.iovlen, ret as u64)
    } else {
        copy_plain(s, call.buf, ret as u64)
    };
    submit(s, captured);
    Some(())
}

/// `sys_enter_close`: tells user space a TCP connection of a traced process is gone, so a
/// new connection on the same descriptor number starts afresh and a response delimited by
/// the close is complete.
#[tracepoint]
pub fn socket_close_enter(ctx: TracePointContext) -> u32 {
    let _ = close(&ctx);
    0
}

#[inline(always)]
fn close(ctx: &TracePointContext) -> Option<()> {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    traced(tgid)?;
    let fd = arg(ctx, 16) as i32 as i64;
    let l = layout()?;
    let sk = tcp_sock(l, fd)?;
    let _ = IGNORED_SOCKS.remove(&sk);
    let s = scratch()?;
    let h = &mut s.header;
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    h.header = EventHeader {
        kind: SocketRecordKind::Close as u16,
        _pad: 0,
        tgid,
        start_ns: now,
        end_ns: now,
    };
    h.sock = sk;
    h.ssl = 0;
    h.len = 0;
    h.tid = id as u32;
    h.fd = fd as i32;
    h.captured = 0;
    h.source = source::SYSCALL;
    h.direction = direction::EGRESS;
    h.flags = 0;
    h._pad = [0; 5];
    addresses(l, sk, h);
    submit(s, 0);
    Some(())
}
