//! hyper HTTP/1 in builds where its role functions were inlined away (fat LTO, one codegen
//! unit): what survives there is `dispatch::Server::recv_msg` (a request head was parsed),
//! `Conn::write_head` (a head is serialized) and `dispatch::Client::recv_msg` (a response head
//! was parsed).
//!
//! LTO also changes how these internal functions take their arguments (LLVM may pass them in
//! any register), so nothing here assumes an argument position or a struct layout. Each probe
//! looks through the words that the argument registers point to for something only the right
//! value looks like, and remembers per process where it found it:
//!
//! * `dispatch::Server::recv_msg`: the parsed `Uri` keeps pointing into the request head
//!   (hyper parses without copying), so a pointer to `/` preceded by `METHOD ` is the request
//!   target inside the head; the head starts at the method.
//! * `Conn::write_head` (return): the connection's header buffer is a `Vec<u8>` that now starts
//!   with the head just written: `HTTP/1.x NNN` (a response: the server request ends) or
//!   `METHOD ` (a request: a client call starts).
//! * `dispatch::Client::recv_msg`: the connection's read buffer (`BytesMut`) points just past
//!   the response head (`\r\n\r\n`), whose status line is the last `HTTP/1.` line before it.
//!
//! Both halves of a request run on the connection's task, so records are keyed by task.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use spanhook_common::{
    Counter, EventHeader, EventKind, RustClientInflight, RustHttpServerEvent, TargetConfig,
    TraceIds,
};

use super::{
    head::{self, byte, PAD},
    hyper::{
        caller_of, finish_client, key, request_fields, server_event, stack_pointer, status_line,
        target, vec_parts,
    },
    maps::{
        LtoLearned, LtoStash, RustScratch, MASK, RUST_CALLS, RUST_CLIENT_INFLIGHT, RUST_LTO_CONN,
        RUST_LTO_LEARNED, RUST_LTO_STASH, RUST_SERVER_INFLIGHT, RUST_TASK_SPANS,
    },
    task,
};
use crate::{
    emit::{count, wakeup_flags},
    maps::EVENTS,
    read, traceparent,
};

/// Argument registers examined.
const REGS: usize = 6;
/// Words examined behind each.
const WORDS: usize = 64;

const MODE_PATH: u64 = 0;
const MODE_VEC: u64 = 1;
const MODE_BUF: u64 = 2;

/// What a found header buffer holds.
const KIND_RESPONSE: u64 = 1;
const KIND_REQUEST: u64 = 2;

#[inline(always)]
fn user_pointer(w: u64) -> bool {
    w > 0x10000 && w < 0x0000_8000_0000_0000
}

#[inline(always)]
fn upper(b: u8) -> bool {
    b.wrapping_sub(b'A') < 26
}

/// The six integer argument registers.
#[inline(always)]
fn arg_regs(ctx: &ProbeContext) -> [u64; REGS] {
    let mut out = [0u64; REGS];
    let mut i = 0;
    while i < REGS {
        out[i] = ctx.arg::<u64>(i).unwrap_or(0);
        i += 1;
    }
    out
}

#[repr(C)]
struct LoopCtx {
    scratch: *mut RustScratch,
}

/// Examines word `index % WORDS` behind register `index / WORDS` for the current mode; returns
/// 1 (stop) when found.
#[inline(never)]
extern "C" fn examine(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the `LoopCtx` passed by `find`.
    let s = unsafe { (*ctx.cast::<LoopCtx>()).scratch };
    // SAFETY: per-CPU scratch.
    let st = unsafe { &mut (*s).lto };
    let i = index as usize;
    if i >= REGS * WORDS {
        return 1;
    }
    let base = st.base[(i / WORDS) & 7];
    if !user_pointer(base) {
        return 0;
    }
    let at = base + 8 * (i % WORDS) as u64;
    if st.mode == MODE_PATH {
        // The parsed head is handed over on the stack; the connection's own memory holds
        // pointers to earlier requests' targets.
        if st.sp != 0 && !(base >= st.sp.wrapping_sub(STACK_BELOW) && base < st.sp + STACK_ABOVE) {
            return 0;
        }
        let Ok(w) = read::user::<u64>(at) else {
            return 0;
        };
        if !user_pointer(w) {
            return 0;
        }
        let Ok(b) = read::user::<[u8; 16]>(w - 15) else {
            return 0;
        };
        if b[15] == b'/' && b[14] == b' ' && upper(b[13]) {
            // The method is the run of capitals before the space.
            let mut m = 0u64;
            let mut run = true;
            let mut k = 0;
            while k < 13 {
                run = run && upper(b[12 - k]);
                m += run as u64;
                k += 1;
            }
            st.found = index + 1;
            st.value = w - 2 - m;
            return 1;
        }
        return 0;
    }
    if st.mode == MODE_VEC {
        // The header buffer lives in the connection (in its task, on the heap): a copy found
        // through the stack is some earlier call's local.
        if st.sp != 0 && base >= st.sp.wrapping_sub(STACK_BELOW) && base < st.sp + STACK_ABOVE {
            return 0;
        }
        let Some((ptr, len)) = vec_parts(at) else {
            return 0;
        };
        if len < 12 || len > (1 << 20) {
            return 0;
        }
        let Ok(b) = read::user::<[u8; 8]>(ptr) else {
            return 0;
        };
        let kind = if &b[..7] == b"HTTP/1." {
            KIND_RESPONSE
        } else {
            let mut m = 0usize;
            let mut run = true;
            let mut k = 0;
            while k < 8 {
                run = run && upper(b[k]);
                m += run as usize;
                k += 1;
            }
            if m > 0 && m < 8 && b[m & 7] == b' ' {
                KIND_REQUEST
            } else {
                0
            }
        };
        if kind == 0 || (st.want != 0 && kind != st.want) {
            return 0;
        }
        st.found = index + 1;
        st.value = ptr;
        st.value2 = len;
        st.kind = kind;
        return 1;
    }
    // MODE_BUF: a BytesMut { ptr, len, cap, data } just past a head.
    let Ok([ptr, len, cap, _]) = read::user::<[u64; 4]>(at) else {
        return 0;
    };
    if !user_pointer(ptr) || len > cap || cap > (1 << 32) {
        return 0;
    }
    let Ok(end) = read::user::<[u8; 4]>(ptr - 4) else {
        return 0;
    };
    if &end == b"\r\n\r\n" {
        st.found = index + 1;
        st.value = ptr;
        return 1;
    }
    0
}

/// How far below the entry's stack pointer the red zone and callee frames reach.
const STACK_BELOW: u64 = 64 << 10;
/// How far above it the thread's stack may extend (tokio's worker stacks are 2 MiB, the main
/// thread's 8 MiB).
const STACK_ABOVE: u64 = 8 << 20;

/// Looks for the mode's value, first where it was found before (`learned`, 0 for unknown),
/// then everywhere. Returns the position (for learning) or 0. `sp`: the entry's stack pointer
/// (0 when the value may be on the stack).
#[inline(always)]
fn find(
    s: *mut RustScratch,
    regs: &[u64; REGS],
    mode: u64,
    want: u64,
    learned: u16,
    sp: u64,
) -> u64 {
    // SAFETY: per-CPU scratch.
    let st = unsafe { &mut (*s).lto };
    st.sp = sp;
    st.mode = mode;
    st.want = want;
    st.found = 0;
    st.kind = 0;
    let mut i = 0;
    while i < REGS {
        st.base[i] = regs[i];
        i += 1;
    }
    st.base[6] = 0;
    st.base[7] = 0;
    let mut ctx = LoopCtx { scratch: s };
    if learned != 0 {
        examine(learned as u64 - 1, (&mut ctx as *mut LoopCtx).cast());
        // SAFETY: per-CPU scratch.
        let found = unsafe { (*s).lto.found };
        if found != 0 {
            return found;
        }
    }
    // SAFETY: the callback only reads `ctx` and the scratch it points to.
    unsafe {
        generated::bpf_loop(
            (REGS * WORDS) as u32,
            examine as *mut core::ffi::c_void,
            (&mut ctx as *mut LoopCtx).cast(),
            0,
        )
    };
    // SAFETY: per-CPU scratch.
    unsafe { (*s).lto.found }
}

#[inline(always)]
fn learned(tgid: u32) -> LtoLearned {
    // SAFETY: copied out at once.
    unsafe { RUST_LTO_LEARNED.get(&tgid) }
        .copied()
        .unwrap_or(LtoLearned {
            path: 0,
            response: 0,
            request: 0,
            buffer: 0,
            head_reg: 0,
            _pad: [0; 3],
        })
}

#[inline(always)]
fn remember(tgid: u32, l: &LtoLearned) {
    let _ = RUST_LTO_LEARNED.insert(&tgid, l, 0);
}

/// `<hyper::proto::h1::dispatch::Server<S, Incoming> as Dispatch>::recv_msg` entry: a request
/// head was parsed.
#[uprobe]
pub fn rust_h1_server_recv(ctx: ProbeContext) -> u32 {
    let _ = try_server_recv(&ctx);
    0
}

fn try_server_recv(ctx: &ProbeContext) -> Option<()> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let cfg = target(tgid)?;
    let task = task::current();
    if task == 0 {
        return None;
    }
    let s = head::scratch()?;
    let regs = arg_regs(ctx);
    let mut l = learned(tgid);
    let found = find(s, &regs, MODE_PATH, 0, l.path, stack_pointer(ctx));
    if found == 0 {
        return None;
    }
    if l.path != found as u16 {
        l.path = found as u16;
        remember(tgid, &l);
    }
    // SAFETY: per-CPU scratch.
    let start = unsafe { (*s).lto.value };
    let n = head::copy_user_upto(s, start)?;
    head::scan_http(s, n);
    let inflight = server_event(s, tgid, cfg, start)?;
    // The record is keyed by the connection's task; `server_event` filed the task's span.
    inflight.event.task = task;
    let _ = RUST_TASK_SPANS.insert(&key(tgid, task), &inflight.event.trace, 0);
    if RUST_SERVER_INFLIGHT
        .insert(&key(tgid, task), &*inflight, 0)
        .is_err()
    {
        count(Counter::InflightInsertFailed);
    }
    Some(())
}

/// `hyper::proto::h1::conn::Conn<I, B, T>::write_head` entry: remembers the argument
/// registers for the return.
#[uprobe]
pub fn rust_h1_write_head(ctx: ProbeContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if target(tgid).is_none() {
        return 0;
    }
    let stash = LtoStash {
        regs: arg_regs(&ctx),
        // SAFETY: plain helper call.
        start_ns: unsafe { bpf_ktime_get_ns() },
        sp: stack_pointer(&ctx),
    };
    let _ = RUST_LTO_STASH.insert(&bpf_get_current_pid_tgid(), &stash, 0);
    0
}

/// `Conn::write_head` return: a response head ends its server request; a request head starts
/// a client call.
#[uretprobe]
pub fn rust_h1_wrote_head(_ctx: RetProbeContext) -> u32 {
    let _ = try_wrote_head();
    0
}

fn try_wrote_head() -> Option<()> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let cfg = target(tgid)?;
    let id = bpf_get_current_pid_tgid();
    // SAFETY: copied out at once.
    let stash = unsafe { RUST_LTO_STASH.get(&id) }.copied()?;
    let _ = RUST_LTO_STASH.remove(&id);
    let task = task::current();
    if task == 0 {
        return None;
    }
    let s = head::scratch()?;
    let mut l = learned(tgid);
    // Each copy of write_head (server and client connections) finds its buffer at its own
    // place: try where responses were found, then requests, then everywhere.
    let mut found = 0;
    if l.response != 0 {
        found = find(
            s,
            &stash.regs,
            MODE_VEC,
            KIND_RESPONSE,
            l.response,
            stash.sp,
        );
        // SAFETY: per-CPU scratch.
        if found != 0 && unsafe { (*s).lto.found } as u16 != l.response {
            found = 0;
        }
    }
    if found == 0 && l.request != 0 {
        found = find(s, &stash.regs, MODE_VEC, KIND_REQUEST, l.request, stash.sp);
        // SAFETY: per-CPU scratch.
        if found != 0 && unsafe { (*s).lto.found } as u16 != l.request {
            found = 0;
        }
    }
    if found == 0 {
        found = find(s, &stash.regs, MODE_VEC, 0, 0, stash.sp);
    }
    if found == 0 {
        return None;
    }
    // SAFETY: per-CPU scratch.
    let (ptr, len, kind) = unsafe { ((*s).lto.value, (*s).lto.value2, (*s).lto.kind) };
    if kind == KIND_RESPONSE {
        if l.response != found as u16 {
            l.response = found as u16;
            remember(tgid, &l);
        }
        return finish_server(tgid, task, ptr, len);
    }
    if l.request != found as u16 {
        l.request = found as u16;
        remember(tgid, &l);
    }
    let reg = ((found - 1) as usize / WORDS) & 7;
    let conn = if reg < REGS { stash.regs[reg] } else { 0 };
    // The call its caller started (reqwest), when there is one: `write_head` takes the
    // request's `MessageHead`, whose path pointer the caller's probe filed.
    let mut caller = None;
    if l.head_reg != 0 {
        let r = (l.head_reg as usize - 1) & 7;
        if r < REGS {
            caller = caller_of(s, tgid, stash.regs[r]);
        }
    } else {
        // Not learned yet: the head is one of the other pointer arguments (hyper passes it
        // second, but LTO may move it).
        let mut r = 0;
        while r < 3 {
            if caller.is_none() && r != reg {
                caller = caller_of(s, tgid, stash.regs[r]);
                if caller.is_some() {
                    l.head_reg = r as u16 + 1;
                    remember(tgid, &l);
                }
            }
            r += 1;
        }
    }
    start_client(s, tgid, cfg, task, conn, stash.start_ns, ptr, len, caller)
}

fn finish_server(tgid: u32, task: u64, ptr: u64, len: u64) -> Option<()> {
    let k = key(tgid, task);
    // SAFETY: valid while this program runs.
    let inflight = unsafe { RUST_SERVER_INFLIGHT.get(&k) }?;
    let (status, _) = status_line(ptr, len).unwrap_or((0, 0));
    let Some(mut entry) = EVENTS.reserve::<RustHttpServerEvent>(0) else {
        count(Counter::RingBufferFull);
        let _ = RUST_SERVER_INFLIGHT.remove(&k);
        return None;
    };
    // SAFETY: `reserve` returned room for one event; it is overwritten whole.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    *ev = inflight.event;
    ev.status = status;
    // SAFETY: plain helper call.
    ev.header.end_ns = unsafe { bpf_ktime_get_ns() };
    entry.submit(wakeup_flags());
    let _ = RUST_SERVER_INFLIGHT.remove(&k);
    let _ = RUST_TASK_SPANS.remove(&k);
    Some(())
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn start_client(
    s: *mut RustScratch,
    tgid: u32,
    cfg: &TargetConfig,
    task: u64,
    conn: u64,
    start_ns: u64,
    ptr: u64,
    len: u64,
    caller: Option<u64>,
) -> Option<()> {
    // SAFETY: per-CPU scratch.
    let inflight: &mut RustClientInflight = unsafe { &mut (*s).client };
    if let Some(caller) = caller {
        // SAFETY: copied out at once.
        if let Some(call) = unsafe { RUST_CALLS.get(&key(tgid, caller)) } {
            *inflight = *call;
            let _ = RUST_CALLS.remove(&key(tgid, caller));
            return written(s, tgid, cfg, task, conn, ptr, len);
        }
    }
    let ev = &mut inflight.event;
    ev.header = EventHeader {
        kind: EventKind::RustHttpClient as u16,
        _pad: 0,
        tgid,
        start_ns,
        end_ns: 0,
    };
    ev.task = task;
    // The connection's own task writes: the caller is another task, which this build gives no
    // way to follow (reqwest's call functions are inlined too), so the call starts a trace
    // unless it is made on a task serving a request.
    match super::task::span_of(tgid, task) {
        Some(parent) => {
            ev.trace.trace_id = parent.trace_id;
            ev.trace.parent_span_id = parent.span_id;
            ev.trace.flags = parent.flags;
            ev.trace.origin = TraceIds::ORIGIN_TASK;
            traceparent::random_bytes(&mut ev.trace.span_id);
        }
        None => traceparent::new_root(&mut ev.trace),
    }
    ev.error_fn = [0; 4];
    ev.full_url = 0;
    ev._pad = [0; 2];
    ev._tail = 0;
    ev.failed = 0;
    ev.task = task;
    written(s, tgid, cfg, task, conn, ptr, len)
}

/// Completes the client record in scratch with the written head and files it under the
/// connection's task.
#[inline(always)]
fn written(
    s: *mut RustScratch,
    tgid: u32,
    cfg: &TargetConfig,
    task: u64,
    conn: u64,
    ptr: u64,
    len: u64,
) -> Option<()> {
    let n = head::copy_user(s, ptr, len)?;
    head::scan_http(s, n);
    // SAFETY: per-CPU scratch.
    let inflight: &mut RustClientInflight = unsafe { &mut (*s).client };
    let ev = &mut inflight.event;
    ev.status = 0;
    ev.propagated = 0;
    // SAFETY: per-CPU scratch.
    let target = unsafe { &mut (*s).target };
    ev.minor = request_fields(s, &mut ev.method, target, &mut ev.host)?;
    if ev.full_url == 0 {
        ev.url = *target;
    }
    let https = ev.full_url != 0 && ev.url.len > 5 && ev.url.bytes[4] == b's';
    if cfg.flags & TargetConfig::FLAG_RUST_PROPAGATE != 0 && !https {
        super::propagate::queue_for_thread(tgid, &ev.trace);
        ev.propagated = 1;
    }
    let caller_task = ev.task;
    inflight._pad0 = 0;
    inflight._pad = 0;
    if RUST_CLIENT_INFLIGHT
        .insert(&key(tgid, task), &*inflight, 0)
        .is_err()
    {
        count(Counter::InflightInsertFailed);
    }
    let _ = RUST_LTO_CONN.insert(&key(tgid, task), &conn, 0);
    if caller_task != task && caller_task != 0 {
        // The caller's task, for an error or a drop that ends the call after this point.
        let _ = super::maps::RUST_TASK_CONN.insert(&key(tgid, caller_task), &task, 0);
    }
    Some(())
}

/// `<hyper::proto::h1::dispatch::Client<B> as Dispatch>::recv_msg` entry: a response head was
/// parsed from the connection's read buffer.
#[uprobe]
pub fn rust_h1_client_recv(_ctx: ProbeContext) -> u32 {
    let _ = try_client_recv();
    0
}

fn try_client_recv() -> Option<()> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    target(tgid)?;
    let task = task::current();
    if task == 0 {
        return None;
    }
    // SAFETY: presence only.
    unsafe { RUST_CLIENT_INFLIGHT.get(&key(tgid, task)) }?;
    // SAFETY: copied out at once.
    let conn = unsafe { RUST_LTO_CONN.get(&key(tgid, task)) }.copied()?;
    let s = head::scratch()?;
    let mut l = learned(tgid);
    let regs = [conn, 0, 0, 0, 0, 0];
    let found = find(s, &regs, MODE_BUF, 0, l.buffer, 0);
    if found == 0 {
        count(Counter::RustClientUnmatched);
        return None;
    }
    if l.buffer != found as u16 {
        l.buffer = found as u16;
        remember(tgid, &l);
    }
    // SAFETY: per-CPU scratch.
    let end = unsafe { (*s).lto.value };
    // The head ends at `end`; the bytes before it are mapped back to the start of its page
    // at least (the buffer may start a mapping).
    let window = 512u64;
    let n = match head::copy_user(s, end - window, window) {
        Some(n) => n,
        None => {
            let back = ((end - 1) & 4095) + 1;
            let back = if back > window { window } else { back };
            head::copy_user(s, end - back, back)?
        }
    };
    let line = last_status_line(s, n);
    let line = line?;
    let d = |b: u8| b.wrapping_sub(b'0');
    let (a, b, c) = (
        d(byte(s, line + 9)),
        d(byte(s, line + 10)),
        d(byte(s, line + 11)),
    );
    if a > 9 || b > 9 || c > 9 {
        return None;
    }
    let status = a as u16 * 100 + b as u16 * 10 + c as u16;
    let minor = d(byte(s, line + 7));
    finish_client(tgid, task, status, minor, [0; 4])?;
    let _ = RUST_LTO_CONN.remove(&key(tgid, task));
    Some(())
}

/// Padded index of the last status line (`HTTP/1.x NNN`) among the `n` copied bytes. (Not
/// only at line starts: the first response on a connection starts its buffer, and what
/// precedes it in memory is not this connection's.)
#[inline(always)]
fn last_status_line(s: *mut RustScratch, n: usize) -> Option<usize> {
    // SAFETY: per-CPU scratch.
    let st = unsafe { &mut (*s).scan };
    st.cursor = (PAD + n).saturating_sub(12) as u64;
    st.limit = PAD as u64;
    st.head_end = 0;
    let mut ctx = LoopCtx { scratch: s };
    // SAFETY: the callback only reads `ctx` and the scratch it points to.
    unsafe {
        generated::bpf_loop(
            (n + 1) as u32 & 1023,
            back as *mut core::ffi::c_void,
            (&mut ctx as *mut LoopCtx).cast(),
            0,
        )
    };
    // SAFETY: per-CPU scratch.
    let found = unsafe { (*s).scan.head_end } as usize;
    (found != 0).then_some(found)
}

#[inline(never)]
extern "C" fn back(_index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the `LoopCtx` passed by `last_status_line`.
    let s = unsafe { (*ctx.cast::<LoopCtx>()).scratch };
    // SAFETY: per-CPU scratch.
    let st = unsafe { &mut (*s).scan };
    let c = st.cursor as usize;
    if c < st.limit as usize || c < PAD || c > MASK {
        return 1;
    }
    st.cursor = (c - 1) as u64;
    if byte(s, c) == b'H'
        && byte(s, c + 1) == b'T'
        && byte(s, c + 2) == b'T'
        && byte(s, c + 3) == b'P'
        && byte(s, c + 4) == b'/'
        && byte(s, c + 5) == b'1'
        && byte(s, c + 6) == b'.'
        && byte(s, c + 8) == b' '
        && byte(s, c + 9).wrapping_sub(b'0') < 10
        && byte(s, c + 10).wrapping_sub(b'0') < 10
        && byte(s, c + 11).wrapping_sub(b'0') < 10
    {
        st.head_end = c as u64;
        return 1;
    }
    0
}
