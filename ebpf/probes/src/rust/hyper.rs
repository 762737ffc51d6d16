//! hyper 1.x HTTP/1: `role::Server::{parse, encode}` and `role::Client::{encode, parse}`.
//!
//! Everything a span says is read from bytes hyper handles: the request head in the read
//! buffer handed to `Server::parse` (method, target, `Host`, `traceparent`), the status line
//! `Server::encode` appended to the write buffer, the request head `Client::encode` wrote and
//! the status line in the buffer handed to `Client::parse`.
//!
//! The two halves of a request meet through its connection. `parse` takes a `ParseContext` and
//! `encode` an `Encode`, and both carry `&mut state.method` of the connection: the only heap
//! pointer among `Encode`'s words (its head is a stack local), and one of the few in
//! `ParseContext`. The probes never rely on where rustc placed that field: `parse` files the
//! request under each heap-pointer word of its context, `encode` looks up its one heap pointer,
//! and the word that matched is remembered per process so later requests file one copy only.
//! A connection serves one request at a time (pipelined requests are parsed after the previous
//! response is written), so the connection is the right key.
//!
//! x86_64: both functions return their (large) result through a hidden pointer in RDI, so the
//! arguments start at RSI; aarch64 passes that pointer in x8 and the arguments from x0.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use spanhook_common::{
    Counter, EventHeader, EventKind, RustEncodeStash, RustHttpClientEvent, RustHttpServerEvent,
    RustLearned, RustPtrKey, RustServerInflight, Str, TargetConfig, TraceIds,
};

use super::{
    head::{self, byte, PAD},
    maps::{
        RustScratch, RUST_CALLS, RUST_CALL_PATHS, RUST_CLIENT_INFLIGHT, RUST_ENCODE_STASH,
        RUST_LEARNED, RUST_SERVER_INFLIGHT, RUST_TASK_SPANS,
    },
    task,
};
use crate::{
    emit::{count, wakeup_flags},
    maps::{EVENTS, TARGETS},
    read,
    traceparent::{self, Incoming},
};

/// Words of an argument struct examined for the connection pointer.
const WORDS: usize = 6;
/// "Not learned yet".
const UNKNOWN: u8 = 0xff;
/// A pointer within this distance of the stack pointer is a stack address.
const STACK_SPAN: u64 = 64 << 20;

/// The `n`th argument after the hidden return pointer.
#[inline(always)]
fn arg(ctx: &ProbeContext, n: usize) -> u64 {
    #[cfg(bpf_target_arch = "x86_64")]
    {
        ctx.arg::<u64>(n + 1).unwrap_or(0)
    }
    #[cfg(not(bpf_target_arch = "x86_64"))]
    {
        ctx.arg::<u64>(n).unwrap_or(0)
    }
}

#[inline(always)]
pub fn stack_pointer(ctx: &ProbeContext) -> u64 {
    // SAFETY: `regs` points at the probe's saved registers for the whole program run.
    let regs = unsafe { &*ctx.regs };
    #[cfg(bpf_target_arch = "x86_64")]
    {
        regs.rsp as u64
    }
    #[cfg(not(bpf_target_arch = "x86_64"))]
    {
        regs.sp as u64
    }
}

/// Whether `w` looks like a heap pointer (aligned, in user space, not on this stack).
#[inline(always)]
fn heap_pointer(w: u64, sp: u64) -> bool {
    w & 7 == 0 && w > 0x10000 && w < 0x0000_8000_0000_0000 && w.abs_diff(sp) > STACK_SPAN
}

#[inline(always)]
pub fn target(tgid: u32) -> Option<&'static TargetConfig> {
    // SAFETY: read-only use of a value that user space changes only between attaches.
    unsafe { TARGETS.get(&tgid) }
}

#[inline(always)]
fn learned(tgid: u32) -> RustLearned {
    // SAFETY: copied out at once.
    unsafe { RUST_LEARNED.get(&tgid) }
        .copied()
        .unwrap_or(RustLearned {
            server_parse: UNKNOWN,
            client_parse: UNKNOWN,
            client_path: UNKNOWN,
            _pad: [0; 5],
        })
}

/// The data pointer and length of the `Vec<u8>` at `addr`. rustc lays a `Vec` out as
/// (capacity, pointer, length) today; (pointer, capacity, length) is accepted too.
#[inline(always)]
pub fn vec_parts(addr: u64) -> Option<(u64, u64)> {
    let [a, b, len] = read::user::<[u64; 3]>(addr).ok()?;
    if b > 0x10000 && b < 0x0000_8000_0000_0000 && a >= len {
        return Some((b, len));
    }
    if a > 0x10000 && a < 0x0000_8000_0000_0000 && b >= len {
        return Some((a, len));
    }
    None
}

/// The status code of a status line at `ptr` (`HTTP/1.x NNN`), and the minor version.
#[inline(always)]
pub fn status_line(ptr: u64, len: u64) -> Option<(u16, u8)> {
    if len < 12 {
        return None;
    }
    let line = read::user::<[u8; 12]>(ptr).ok()?;
    if &line[..7] != b"HTTP/1." || line[8] != b' ' {
        return None;
    }
    let d = |b: u8| b.wrapping_sub(b'0');
    let (a, b, c) = (d(line[9]), d(line[10]), d(line[11]));
    if a > 9 || b > 9 || c > 9 {
        return None;
    }
    Some((a as u16 * 100 + b as u16 * 10 + c as u16, d(line[7])))
}

#[inline(always)]
pub fn key(tgid: u32, ptr: u64) -> RustPtrKey {
    RustPtrKey { tgid, _pad: 0, ptr }
}

/// Copies the request line's method, target (up to the query) and the `Host` value of the
/// head scanned in `s` into the three strings; returns the minor version.
#[inline(always)]
pub fn request_fields(
    s: *mut RustScratch,
    method: &mut Str<16>,
    target: &mut Str<256>,
    host: &mut Str<128>,
) -> Option<u8> {
    // SAFETY: per-CPU scratch.
    let st = unsafe { &(*s).scan };
    let (sp1, sp2) = (st.sp1 as usize, st.sp2 as usize);
    if sp1 == 0 || sp2 <= sp1 || st.line_end == 0 {
        return None;
    }
    head::copy_out(s, PAD, sp1, method);
    let end = if st.query != 0 {
        st.query as usize
    } else {
        sp2
    };
    head::copy_out(s, sp1 + 1, end, target);
    host.len = 0;
    if st.host != 0 && st.host_end > st.host {
        let mut start = st.host as usize;
        if byte(s, start) == b' ' || byte(s, start) == b'\t' {
            start += 1;
        }
        let mut end = st.host_end as usize;
        if byte(s, end - 1) == b'\r' {
            end -= 1;
        }
        head::copy_out(s, start, end, host);
    }
    // "HTTP/1.x" follows the second space.
    Some(byte(s, sp2 + 8).wrapping_sub(b'0'))
}

/// `<hyper::proto::h1::role::Server as Http1Transaction>::parse` entry: a request head (maybe
/// partial) is at the front of the read buffer.
#[uprobe]
pub fn rust_h1_server_parse(ctx: ProbeContext) -> u32 {
    let _ = try_server_parse(&ctx);
    0
}

fn try_server_parse(ctx: &ProbeContext) -> Option<()> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let cfg = target(tgid)?;
    let (buf, pctx) = (arg(ctx, 0), arg(ctx, 1));
    // BytesMut { ptr, len, cap, data }.
    let [ptr, len] = read::user::<[u64; 2]>(buf).ok()?;
    if len < 16 {
        return None;
    }
    let s = head::scratch()?;
    let n = head::copy_user(s, ptr, len)?;
    let st = head::scan_http(s, n);
    // A head that is not complete yet is parsed again when more bytes arrive; a head longer
    // than the window is taken as complete once its request line is.
    if st.head_end == 0 && (len as usize) <= n {
        return None;
    }
    let inflight = server_event(s, tgid, cfg, ptr)?;
    let words = read::user::<[u64; WORDS]>(pctx).ok()?;
    let sp = stack_pointer(ctx);
    let known = learned(tgid).server_parse;
    let mut i = 0;
    while i < WORDS {
        if (known == UNKNOWN || known as usize == i) && heap_pointer(words[i], sp) {
            inflight.word = i as u32;
            inflight._pad = 0;
            if RUST_SERVER_INFLIGHT
                .insert(&key(tgid, words[i]), &*inflight, 0)
                .is_err()
            {
                count(Counter::InflightInsertFailed);
            }
        }
        i += 1;
    }
    Some(())
}

/// Fills the per-CPU server record from the request head scanned in scratch, which was copied
/// from `ptr` in the target: fields, start time, trace context (an incoming `traceparent`
/// continued), the serving task (its span is filed for calls made on it).
#[inline(always)]
pub fn server_event(
    s: *mut RustScratch,
    tgid: u32,
    cfg: &TargetConfig,
    ptr: u64,
) -> Option<&'static mut RustServerInflight> {
    // SAFETY: per-CPU scratch.
    let st = unsafe { &(*s).scan };
    let head_len = if st.head_end != 0 {
        st.head_end as usize - PAD
    } else {
        0
    };
    // SAFETY: per-CPU scratch, one program at a time on this CPU.
    let inflight = unsafe { &mut (*s).server };
    let ev = &mut inflight.event;
    ev.minor = request_fields(s, &mut ev.method, &mut ev.path, &mut ev.host)?;
    ev.header = EventHeader {
        kind: EventKind::RustHttpServer as u16,
        _pad: 0,
        tgid,
        // SAFETY: plain helper call.
        start_ns: unsafe { bpf_ktime_get_ns() },
        end_ns: 0,
    };
    ev.status = 0;
    ev._pad = [0; 5];
    ev._tail = 0;
    traceparent::new_root(&mut ev.trace);
    if head_len >= 16 {
        match traceparent::from_request_head(ptr + head_len as u64, head_len as u64, &mut ev.trace)
        {
            Incoming::Valid | Incoming::Absent => {}
            Incoming::Invalid => {
                ev.trace.origin = TraceIds::ORIGIN_HEADER_INVALID;
                count(Counter::TraceparentInvalid);
            }
        }
    }
    ev.task = if cfg.flags & TargetConfig::FLAG_RUST_TASKS != 0 {
        task::current()
    } else {
        0
    };
    if ev.task != 0 {
        let _ = RUST_TASK_SPANS.insert(&key(tgid, ev.task), &ev.trace, 0);
    }
    inflight.word = 0;
    inflight._pad = 0;
    Some(inflight)
}

/// The one heap pointer among the words of an `Encode` (its `req_method`), and its one stack
/// pointer (the `MessageHead` being encoded, a local of `Conn::write_head`).
#[inline(always)]
fn encode_args(ctx: &ProbeContext, enc: u64) -> (u64, u64) {
    let Ok(words) = read::user::<[u64; WORDS]>(enc) else {
        return (0, 0);
    };
    let sp = stack_pointer(ctx);
    let (mut conn, mut head) = (0, 0);
    let mut i = 0;
    while i < WORDS {
        let w = words[i];
        if conn == 0 && heap_pointer(w, sp) {
            conn = w;
        } else if head == 0 && w & 7 == 0 && w.abs_diff(sp) < STACK_SPAN {
            head = w;
        }
        i += 1;
    }
    (conn, head)
}

/// Remembers, for the return probe, where `encode` writes and for which connection.
#[inline(always)]
fn stash_encode(ctx: &ProbeContext, conn: u64, head: u64) -> Option<()> {
    let dst = arg(ctx, 1);
    let (_, dst_len) = vec_parts(dst)?;
    let stash = RustEncodeStash {
        conn,
        dst,
        dst_len,
        // SAFETY: plain helper call.
        start_ns: unsafe { bpf_ktime_get_ns() },
        head,
    };
    RUST_ENCODE_STASH
        .insert(&bpf_get_current_pid_tgid(), &stash, 0)
        .ok()
}

/// The stash of this thread's `encode`, taken.
#[inline(always)]
fn take_stash() -> Option<RustEncodeStash> {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: copied out at once.
    let stash = unsafe { RUST_ENCODE_STASH.get(&id) }.copied()?;
    let _ = RUST_ENCODE_STASH.remove(&id);
    Some(stash)
}

/// `<hyper::proto::h1::role::Server as Http1Transaction>::encode` entry.
#[uprobe]
pub fn rust_h1_server_encode(ctx: ProbeContext) -> u32 {
    let _ = try_server_encode(&ctx);
    0
}

fn try_server_encode(ctx: &ProbeContext) -> Option<()> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    target(tgid)?;
    let (conn, _) = encode_args(ctx, arg(ctx, 0));
    if conn == 0 {
        return None;
    }
    // SAFETY: copied out at once.
    let Some(word) = (unsafe { RUST_SERVER_INFLIGHT.get(&key(tgid, conn)) }).map(|i| i.word) else {
        count(Counter::RustServerUnmatched);
        return None;
    };
    let mut l = learned(tgid);
    if l.server_parse == UNKNOWN {
        l.server_parse = word as u8;
        let _ = RUST_LEARNED.insert(&tgid, &l, 0);
    }
    stash_encode(ctx, conn, 0)
}

/// `<hyper::proto::h1::role::Server as Http1Transaction>::encode` return: the status line is
/// in the write buffer; the request's record goes out.
#[uretprobe]
pub fn rust_h1_server_encoded(_ctx: RetProbeContext) -> u32 {
    let _ = try_server_encoded();
    0
}

fn try_server_encoded() -> Option<()> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let stash = take_stash()?;
    let k = key(tgid, stash.conn);
    // SAFETY: the value stays valid while this program runs (LRU maps free by RCU).
    let inflight = unsafe { RUST_SERVER_INFLIGHT.get(&k) }?;
    let (ptr, len) = vec_parts(stash.dst)?;
    let (status, _) =
        status_line(ptr + stash.dst_len, len.saturating_sub(stash.dst_len)).unwrap_or((0, 0));
    let Some(mut entry) = EVENTS.reserve::<RustHttpServerEvent>(0) else {
        count(Counter::RingBufferFull);
        let _ = RUST_SERVER_INFLIGHT.remove(&k);
        return None;
    };
    // SAFETY: `reserve` returned room for one event; it is overwritten whole.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    *ev = inflight.event;
    let task = ev.task;
    ev.status = status;
    // SAFETY: plain helper call.
    ev.header.end_ns = unsafe { bpf_ktime_get_ns() };
    entry.submit(wakeup_flags());
    let _ = RUST_SERVER_INFLIGHT.remove(&k);
    if task != 0 {
        let _ = RUST_TASK_SPANS.remove(&key(tgid, task));
    }
    Some(())
}

/// `<hyper::proto::h1::role::Client as Http1Transaction>::encode` entry: a request head is
/// about to be written.
#[uprobe]
pub fn rust_h1_client_encode(ctx: ProbeContext) -> u32 {
    let _ = try_client_encode(&ctx);
    0
}

fn try_client_encode(ctx: &ProbeContext) -> Option<()> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    target(tgid)?;
    let (conn, head) = encode_args(ctx, arg(ctx, 0));
    if conn == 0 {
        return None;
    }
    stash_encode(ctx, conn, head)
}

/// Words of a request's `MessageHead` examined for its path pointer (a power of two).
const HEAD_WORDS: usize = 32;

/// The caller's task of the request whose `MessageHead` is at `head`: one of its words is the
/// address of the path bytes, which the caller's probe filed (see reqwest.rs).
#[inline(never)]
pub fn caller_of(s: *mut RustScratch, tgid: u32, head: u64) -> Option<u64> {
    if head == 0 {
        return None;
    }
    // SAFETY: per-CPU scratch; the read fills exactly `words`.
    let rc = unsafe {
        generated::bpf_probe_read_user(
            (*s).words.as_mut_ptr().cast(),
            (HEAD_WORDS * 8) as u32,
            head as *const core::ffi::c_void,
        )
    };
    if rc < 0 {
        return None;
    }
    let mut l = learned(tgid);
    // SAFETY: per-CPU scratch.
    unsafe {
        (*s).lto.value = 0;
        (*s).lto.found = 0;
        (*s).lto.want = tgid as u64;
    }
    let mut ctx = PathCtx { scratch: s };
    if l.client_path != UNKNOWN {
        match_path(l.client_path as u64, (&mut ctx as *mut PathCtx).cast());
    } else {
        // SAFETY: the callback only reads `ctx` and the scratch it points to.
        unsafe {
            generated::bpf_loop(
                HEAD_WORDS as u32,
                match_path as *mut core::ffi::c_void,
                (&mut ctx as *mut PathCtx).cast(),
                0,
            )
        };
    }
    // SAFETY: per-CPU scratch.
    let (task, word) = unsafe { ((*s).lto.value, (*s).lto.found) };
    if task == 0 {
        return None;
    }
    if l.client_path == UNKNOWN {
        l.client_path = (word - 1) as u8;
        let _ = RUST_LEARNED.insert(&tgid, &l, 0);
    }
    Some(task)
}

#[repr(C)]
struct PathCtx {
    scratch: *mut RustScratch,
}

/// Looks up word `index` of the head copied to scratch as a filed path pointer.
#[inline(never)]
extern "C" fn match_path(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the `PathCtx` passed by `caller_of`.
    let s = unsafe { (*ctx.cast::<PathCtx>()).scratch };
    // SAFETY: per-CPU scratch, masked index.
    let (w, tgid) = unsafe { ((*s).words[index as usize & (HEAD_WORDS - 1)], (*s).lto.want) };
    if w <= 0x10000 || w >= 0x0000_8000_0000_0000 {
        return 0;
    }
    let k = key(tgid as u32, w);
    // SAFETY: copied out at once.
    let Some(task) = (unsafe { RUST_CALL_PATHS.get(&k) }).copied() else {
        return 0;
    };
    let _ = RUST_CALL_PATHS.remove(&k);
    // SAFETY: per-CPU scratch.
    unsafe {
        (*s).lto.value = task;
        (*s).lto.found = index + 1;
    }
    1
}

/// `<hyper::proto::h1::role::Client as Http1Transaction>::encode` return: the request head is
/// in the write buffer.
#[uretprobe]
pub fn rust_h1_client_encoded(_ctx: RetProbeContext) -> u32 {
    let _ = try_client_encoded();
    0
}

fn try_client_encoded() -> Option<()> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let cfg = target(tgid)?;
    let stash = take_stash()?;
    let (ptr, len) = vec_parts(stash.dst)?;
    let s = head::scratch()?;
    let n = head::copy_user(s, ptr + stash.dst_len, len.saturating_sub(stash.dst_len))?;
    let st = head::scan_http(s, n);
    if st.sp1 == 0 || st.sp2 <= st.sp1 {
        return None;
    }
    // SAFETY: per-CPU scratch.
    let inflight = unsafe { &mut (*s).client };
    // The call its caller started (reqwest), when there is one.
    let mut paired = false;
    if let Some(task) = caller_of(s, tgid, stash.head) {
        // SAFETY: copied out at once.
        if let Some(call) = unsafe { RUST_CALLS.get(&key(tgid, task)) } {
            *inflight = *call;
            paired = true;
        }
        let _ = RUST_CALLS.remove(&key(tgid, task));
    }
    let ev = &mut inflight.event;
    // SAFETY: per-CPU scratch.
    let target = unsafe { &mut (*s).target };
    if !paired {
        // A request written without a caller we saw: the span covers the write to the
        // response, and its parent is the request served on this task, if any.
        ev.header = EventHeader {
            kind: EventKind::RustHttpClient as u16,
            _pad: 0,
            tgid,
            start_ns: stash.start_ns,
            end_ns: 0,
        };
        ev.task = task::current();
        match task::span_of(tgid, ev.task) {
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
    }
    ev.status = 0;
    ev.propagated = 0;
    ev.minor = request_fields(s, &mut ev.method, target, &mut ev.host)?;
    if ev.full_url == 0 {
        ev.url = *target;
    }
    // An https URL is encrypted on the wire: nothing could be inserted.
    let https = ev.full_url != 0 && ev.url.len > 5 && ev.url.bytes[4] == b's';
    if cfg.flags & TargetConfig::FLAG_RUST_PROPAGATE != 0 && !https {
        super::propagate::queue_for_thread(tgid, &ev.trace);
        ev.propagated = 1;
    }
    inflight._pad0 = 0;
    inflight._pad = 0;
    let task = ev.task;
    if RUST_CLIENT_INFLIGHT
        .insert(&key(tgid, stash.conn), &*inflight, 0)
        .is_err()
    {
        count(Counter::InflightInsertFailed);
    }
    if task != 0 {
        // The caller's task, for an error that ends the call after this point.
        let _ = super::maps::RUST_TASK_CONN.insert(&key(tgid, task), &stash.conn, 0);
    }
    Some(())
}

/// `<hyper::proto::h1::role::Client as Http1Transaction>::parse` entry: a response head
/// (maybe partial) is at the front of the read buffer.
#[uprobe]
pub fn rust_h1_client_parse(ctx: ProbeContext) -> u32 {
    let _ = try_client_parse(&ctx);
    0
}

fn try_client_parse(ctx: &ProbeContext) -> Option<()> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    target(tgid)?;
    let (buf, pctx) = (arg(ctx, 0), arg(ctx, 1));
    let [ptr, len] = read::user::<[u64; 2]>(buf).ok()?;
    let (status, minor) = status_line(ptr, len)?;
    // An informational response (100 Continue) precedes the real one.
    if status < 200 {
        return None;
    }
    let words = read::user::<[u64; WORDS]>(pctx).ok()?;
    let sp = stack_pointer(ctx);
    let mut l = learned(tgid);
    let mut i = 0;
    let mut conn = 0;
    while i < WORDS {
        if conn == 0
            && (l.client_parse == UNKNOWN || l.client_parse as usize == i)
            && heap_pointer(words[i], sp)
        {
            // SAFETY: only tested for presence.
            if unsafe { RUST_CLIENT_INFLIGHT.get(&key(tgid, words[i])) }.is_some() {
                conn = words[i];
                if l.client_parse == UNKNOWN {
                    l.client_parse = i as u8;
                    let _ = RUST_LEARNED.insert(&tgid, &l, 0);
                }
            }
        }
        i += 1;
    }
    if conn == 0 {
        return None;
    }
    finish_client(tgid, conn, status, minor, [0; 4])
}

/// Sends the record of the call in flight on `conn`: with a response, or failed.
#[inline(always)]
pub fn finish_client(
    tgid: u32,
    conn: u64,
    status: u16,
    minor: u8,
    error_fn: [u64; 4],
) -> Option<()> {
    let k = key(tgid, conn);
    // SAFETY: valid while this program runs.
    let inflight = unsafe { RUST_CLIENT_INFLIGHT.get(&k) }?;
    emit_client(&inflight.event, status, minor, error_fn);
    let task = inflight.event.task;
    let _ = RUST_CLIENT_INFLIGHT.remove(&k);
    if task != 0 {
        let _ = super::maps::RUST_TASK_CONN.remove(&key(tgid, task));
    }
    Some(())
}

/// Sends a client record built from `event`.
#[inline(always)]
pub fn emit_client(event: &RustHttpClientEvent, status: u16, minor: u8, error_fn: [u64; 4]) {
    let Some(mut entry) = EVENTS.reserve::<RustHttpClientEvent>(0) else {
        count(Counter::RingBufferFull);
        return;
    };
    // SAFETY: `reserve` returned room for one event; it is overwritten whole.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    *ev = *event;
    ev.status = status;
    ev.minor = minor;
    ev.error_fn = error_fn;
    ev.failed = (status == 0) as u8;
    // SAFETY: plain helper call.
    ev.header.end_ns = unsafe { bpf_ktime_get_ns() };
    entry.submit(wakeup_flags());
}
