//! libssl's `SSL_read`, `SSL_write`, `SSL_read_ex` and `SSL_write_ex`: the plaintext of TLS
//! connections, from uprobes on the library the target maps (C code, so uretprobes are safe).
//!
//! The entry remembers the call by thread; the return copies a prefix of the plaintext and
//! sends it like a socket record, marked TLS. The descriptor under the `SSL` is learnt from
//! the socket calls libssl makes while one of these calls runs (see capture.rs), so the
//! record names its connection and peer like any other.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use spanhook_common::{
    socket::{direction, source},
    Counter, EventHeader, SocketRecordKind, SslCall, SslKey, TargetConfig,
};

use super::{
    fd::{addresses, layout, tcp_sock},
    maps::{SSL_CALLS, SSL_FDS},
    record::{copy_plain, scratch, submit},
};
use crate::{emit::count, maps::TARGETS};

#[inline(always)]
fn enter(ctx: &ProbeContext, dir: u8, ex: bool) -> Option<()> {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    // SAFETY: read at once.
    let cfg = unsafe { TARGETS.get(&tgid) }?;
    if cfg.flags & TargetConfig::FLAG_SOCKET_TLS == 0 {
        return None;
    }
    let call = SslCall {
        // SAFETY: plain helper call.
        start_ns: unsafe { bpf_ktime_get_ns() },
        ssl: ctx.arg::<u64>(0)?,
        buf: ctx.arg::<u64>(1)?,
        count_out: if ex { ctx.arg::<u64>(3)? } else { 0 },
        direction: dir,
        _pad: [0; 7],
    };
    if SSL_CALLS.insert(&id, &call, 0).is_err() {
        count(Counter::SocketCallInsertFailed);
    }
    Some(())
}

/// `SSL_read(ssl, buf, num)` entry.
#[uprobe]
pub fn ssl_read_enter(ctx: ProbeContext) -> u32 {
    let _ = enter(&ctx, direction::INGRESS, false);
    0
}

/// `SSL_read_ex(ssl, buf, num, &readbytes)` entry.
#[uprobe]
pub fn ssl_read_ex_enter(ctx: ProbeContext) -> u32 {
    let _ = enter(&ctx, direction::INGRESS, true);
    0
}

/// `SSL_write(ssl, buf, num)` entry.
#[uprobe]
pub fn ssl_write_enter(ctx: ProbeContext) -> u32 {
    let _ = enter(&ctx, direction::EGRESS, false);
    0
}

/// `SSL_write_ex(ssl, buf, num, &written)` entry.
#[uprobe]
pub fn ssl_write_ex_enter(ctx: ProbeContext) -> u32 {
    let _ = enter(&ctx, direction::EGRESS, true);
    0
}

/// The return of any of the four.
#[uretprobe]
pub fn ssl_return(ctx: RetProbeContext) -> u32 {
    let _ = exit(&ctx);
    0
}

#[inline(always)]
fn exit(ctx: &RetProbeContext) -> Option<()> {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    // SAFETY: copied out at once.
    let call = unsafe { SSL_CALLS.get(&id) }.copied()?;
    let _ = SSL_CALLS.remove(&id);
    // Both return an int: the byte count (plain) or 1 for success (`_ex`).
    let ret = ctx.ret::<u64>() as u32 as i32;
    let len = if call.count_out != 0 {
        if ret != 1 {
            return None;
        }
        // SAFETY: the helper validates the address.
        unsafe { bpf_probe_read_user(call.count_out as *const u64) }.ok()?
    } else if ret > 0 {
        ret as u64
    } else {
        return None;
    };
    if len == 0 {
        return None;
    }
    let key = SslKey {
        tgid,
        _pad: 0,
        ssl: call.ssl,
    };
    // SAFETY: copied out at once.
    let fd = unsafe { SSL_FDS.get(&key) }.copied().unwrap_or(-1);
    let l = layout()?;
    let sk = if fd >= 0 {
        tcp_sock(l, fd as i64).unwrap_or(0)
    } else {
        count(Counter::TlsWithoutDescriptor);
        0
    };
    let s = scratch()?;
    let h = &mut s.header;
    h.header = EventHeader {
        kind: SocketRecordKind::Data as u16,
        _pad: 0,
        tgid,
        start_ns: call.start_ns,
        // SAFETY: plain helper call.
        end_ns: unsafe { bpf_ktime_get_ns() },
    };
    h.sock = sk;
    h.ssl = call.ssl;
    h.len = len;
    h.tid = id as u32;
    h.fd = fd;
    h.captured = 0;
    h.source = source::TLS;
    h.direction = call.direction;
    h.flags = 0;
    h._pad = [0; 5];
    if sk != 0 {
        addresses(l, sk, h);
    } else {
        h.family = 0;
        h.local_port = 0;
        h.remote_port = 0;
        h.local_addr = [0; 16];
        h.remote_addr = [0; 16];
    }
    let captured = copy_plain(s, call.buf, len);
    submit(s, captured);
    Some(())
}
