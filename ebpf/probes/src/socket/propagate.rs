//! Opt-in `traceparent` propagation on the network path.
//!
//! Kernels in lockdown forbid writing into a process's memory from BPF, so the header is
//! added to the bytes on their way out instead: a `sock_ops` program puts the client sockets
//! of traced processes into `SOCKETS` (only those, so no other socket's send path changes),
//! and an `sk_msg` program on that map inserts `traceparent: …` after the request line of the
//! next HTTP/1 request written on a connection that has a queued value
//! (`PENDING_TRACEPARENT`, set by the client probes). It inserts only into a complete,
//! well-formed request head that has no `traceparent` yet; anything else passes untouched.
//! On HTTP/2 connections of grpc-go clients the value goes into the stream's HEADERS frame
//! instead (`h2`).

use aya_ebpf::{
    bindings::{
        sk_action::SK_PASS, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_TCP_CONNECT_CB,
    },
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated},
    macros::{sk_msg, sock_ops},
    programs::{SkMsgContext, SockOpsContext},
};
use spanhook_common::{ConnKey, Counter, TargetConfig};

use crate::{
    emit::count,
    maps::{
        CONNECTING, H2_CONNS, HEAD_WINDOW, PENDING_TRACEPARENT, SCAN_MASK, SCRATCH, SOCKETS,
        TARGETS,
    },
    scan::{self, PAD},
    traceparent::{header_line, HEADER_LINE_LEN},
};

/// A queued value older than this is dropped rather than written: the request it was meant
/// for did not go out on this connection.
const STALE_NS: u64 = 10_000_000_000;

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

/// Tracks client connections of processes with propagation on.
#[sock_ops]
pub fn propagate_sock_ops(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        // connect() runs in the connecting process, so this is where we learn whose it is.
        BPF_SOCK_OPS_TCP_CONNECT_CB => {
            let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
            // SAFETY: read at once.
            let propagate = unsafe { TARGETS.get(&tgid) }
                .is_some_and(|cfg| cfg.flags & TargetConfig::FLAG_PROPAGATE != 0);
            if propagate {
                let cookie = socket_cookie(&ctx);
                let _ = CONNECTING.insert(&cookie, &tgid, 0);
            }
        }
        // Established (usually in softirq): only now may the socket join the sockhash.
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => {
            let mut cookie = socket_cookie(&ctx);
            // SAFETY: read at once.
            if unsafe { CONNECTING.get(&cookie) }.is_some() {
                let _ = CONNECTING.remove(&cookie);
                // SAFETY: the context is the kernel's bpf_sock_ops for this callback.
                let _ = SOCKETS.update(&mut cookie, unsafe { &mut *ctx.ops }, 0);
            }
        }
        _ => {}
    }
    0
}

#[inline(always)]
fn socket_cookie(ctx: &SockOpsContext) -> u64 {
    // SAFETY: plain helper call on the program's own context.
    unsafe { generated::bpf_get_socket_cookie(ctx.ops.cast()) }
}

/// Inserts a queued `traceparent` into the next HTTP/1 request head on the connection.
#[sk_msg]
pub fn propagate_sk_msg(ctx: SkMsgContext) -> u32 {
    // The kernel keeps a held message (`bpf_msg_cork_bytes`, see `h2`) as the socket's buffer
    // for later writes without clearing how much it asked to hold: every run clears it, or
    // each later write would be held back until that many bytes had built up again.
    // SAFETY: plain helper call on the program's own message.
    unsafe { aya_ebpf::helpers::generated::bpf_msg_cork_bytes(ctx.msg, 0) };
    let _ = try_inject(&ctx);
    SK_PASS
}

fn conn_key(ctx: &SkMsgContext) -> Option<ConnKey> {
    // Context fields must be loaded straight off the context pointer (the verifier refuses a
    // load through a pointer derived from it), hence one volatile read per field.
    let md = ctx.msg;
    // SAFETY: `md` is the kernel's sk_msg_md for this call; each read is of one field, all
    // unconditional so LLVM cannot merge two field addresses into one computed pointer.
    let (family, local_port, remote_port, ip4, ip6) = unsafe {
        (
            core::ptr::read_volatile(&(*md).family),
            core::ptr::read_volatile(&(*md).local_port),
            core::ptr::read_volatile(&(*md).remote_port),
            core::ptr::read_volatile(&(*md).remote_ip4),
            [
                core::ptr::read_volatile(&(*md).remote_ip6[0]),
                core::ptr::read_volatile(&(*md).remote_ip6[1]),
                core::ptr::read_volatile(&(*md).remote_ip6[2]),
                core::ptr::read_volatile(&(*md).remote_ip6[3]),
            ],
        )
    };
    let mut key = ConnKey {
        local_port: local_port as u16,
        // Network byte order in the upper half of the word.
        remote_port: u32::from_be(remote_port) as u16,
        _pad: 0,
        remote_ip: [0; 16],
    };
    match family {
        AF_INET => {
            key.remote_ip[10] = 0xff;
            key.remote_ip[11] = 0xff;
            key.remote_ip[12..].copy_from_slice(&ip4.to_ne_bytes());
        }
        AF_INET6 => {
            key.remote_ip[..4].copy_from_slice(&ip6[0].to_ne_bytes());
            key.remote_ip[4..8].copy_from_slice(&ip6[1].to_ne_bytes());
            key.remote_ip[8..12].copy_from_slice(&ip6[2].to_ne_bytes());
            key.remote_ip[12..].copy_from_slice(&ip6[3].to_ne_bytes());
        }
        _ => return None,
    }
    Some(key)
}

fn try_inject(ctx: &SkMsgContext) -> Option<()> {
    let key = conn_key(ctx)?;
    // An HTTP/2 connection a gRPC client probe queued for: its frames are followed instead.
    if let Some(state) = H2_CONNS.get_ptr_mut(&key) {
        super::h2::on_write(ctx, &key, state);
        return Some(());
    }
    // SAFETY: copied out at once.
    let pending = match unsafe { PENDING_TRACEPARENT.get(&key) }.copied() {
        Some(p) => {
            // One attempt per queued value, whatever happens below.
            let _ = PENDING_TRACEPARENT.remove(&key);
            p
        }
        // Rust clients queue by the writing thread (rust/propagate.rs).
        None => crate::rust::propagate::take_for_thread()?,
    };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    if now.saturating_sub(pending.set_ns) > STALE_NS {
        count(Counter::InjectionSkipped);
        return None;
    }
    let Some((at, head_len)) = insertion_point(ctx) else {
        count(Counter::InjectionSkipped);
        return None;
    };
    let mut line = [0u8; HEADER_LINE_LEN];
    header_line(&pending.trace, &mut line);
    if ctx.push_data(at as u32, HEADER_LINE_LEN as u32, 0).is_err() {
        count(Counter::InjectionSkipped);
        return None;
    }
    // One contiguous head: the new bytes become writable, and the head leaves as one segment.
    // Pushed bytes form their own scatterlist element, and TCP sends each element as a segment
    // (Go sets TCP_NODELAY): a server reading the head in pieces lets its read buffer drop the
    // lines it has parsed, our line among them, before its handler runs.
    let total = (head_len + HEADER_LINE_LEN) as u32;
    // SAFETY: plain helper call on the program's own context.
    if unsafe { generated::bpf_msg_pull_data(ctx.msg, 0, total, 0) } != 0 {
        undo(ctx, at);
        return None;
    }
    let at = at & (HEAD_WINDOW - 1);
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + at + HEADER_LINE_LEN > end {
        undo(ctx, at);
        return None;
    }
    let mut i = 0;
    while i < HEADER_LINE_LEN {
        // SAFETY: `data + at + HEADER_LINE_LEN <= data_end` was checked above.
        unsafe { *((data + at + i) as *mut u8) = line[i] };
        i += 1;
    }
    count(Counter::TraceparentInjected);
    Some(())
}

/// Takes the pushed (still unwritten) bytes out again, so the request goes out as it was.
fn undo(ctx: &SkMsgContext, at: usize) {
    let _ = ctx.pop_data(at as u32, HEADER_LINE_LEN as u32, 0);
    count(Counter::InjectionSkipped);
}

/// Where to insert (just after the request line) and the head's length, if the message starts
/// with a complete HTTP/1 request head that has no `traceparent`.
fn insertion_point(ctx: &SkMsgContext) -> Option<(usize, usize)> {
    let size = ctx.size() as usize;
    let n = if size > HEAD_WINDOW {
        HEAD_WINDOW
    } else {
        size
    };
    if n < 16 {
        return None;
    }
    // Make the head contiguous so it can be copied in one read.
    // SAFETY: plain helper call on the program's own context.
    if unsafe { generated::bpf_msg_pull_data(ctx.msg, 0, n as u32, 0) } != 0 {
        return None;
    }
    let data = ctx.data();
    let avail = ctx.data_end().saturating_sub(data);
    let n = if n > avail { avail } else { n };
    if n < 16 || n > HEAD_WINDOW {
        return None;
    }
    let scratch = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch, one program at a time on this CPU.
    let head = unsafe { &mut (*scratch).head };
    head[..PAD].copy_from_slice(&[0; PAD]);
    // SAFETY: `n <= HEAD_WINDOW` keeps the write inside `head`; `data` is the message's
    // kernel memory, `n` bytes of which are linear after the pull.
    let rc = unsafe {
        generated::bpf_probe_read_kernel(
            head.as_mut_ptr().add(PAD).cast(),
            n as u32,
            data as *const core::ffi::c_void,
        )
    };
    if rc != 0 || !starts_like_request(&head[PAD..PAD + 16]) {
        return None;
    }
    let line_end = scan::first_line_end(scratch, n)?;
    // The whole head must be here: otherwise a `traceparent` further on could not be ruled out.
    let head_end = scan::head_end(scratch, n)?;
    if line_end < PAD + 16 || head_end <= line_end {
        return None;
    }
    if scan::last_traceparent(scratch, head_end - PAD).is_some() {
        return None;
    }
    // The request line must end in " HTTP/1.x\r\n" (eleven bytes before `line_end`).
    let v = (line_end - 11) & SCAN_MASK;
    if &head[v..v + 8] != b" HTTP/1." || head[v + 9] != b'\r' {
        return None;
    }
    Some((line_end - PAD, head_end - PAD))
}

/// Whether `start` begins with an HTTP method token followed by a space and a target.
fn starts_like_request(start: &[u8]) -> bool {
    let methods: [&[u8]; 9] = [
        b"GET ",
        b"POST ",
        b"PUT ",
        b"HEAD ",
        b"DELETE ",
        b"PATCH ",
        b"OPTIONS ",
        b"CONNECT ",
        b"TRACE ",
    ];
    let mut m = 0;
    while m < methods.len() {
        let token = methods[m];
        if start.len() > token.len() && &start[..token.len()] == token {
            return start[token.len()] != b' ';
        }
        m += 1;
    }
    false
}
