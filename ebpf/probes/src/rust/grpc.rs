//! gRPC over h2 in Rust programs (tonic): server RPCs at h2's stream functions, client RPCs at
//! tonic's client functions.
//!
//! Server, keyed by connection + stream id (`RustH2Key`), so concurrent streams of one
//! connection stay apart. The connection is the address of h2's per-connection `Counts`, an
//! argument of `Recv::recv_headers`:
//!
//! * `Recv::recv_headers` entry leaves the connection for the thread;
//!   `<server::Peer as Peer>::convert_poll_message(pseudo, fields, stream_id)`, which it calls,
//!   starts the RPC: the stream id is an argument, `:path` and `:authority` are the `Bytes` of
//!   the `Pseudo` argument that look like a path and an authority, an incoming `traceparent` is
//!   the value after the `traceparent` name among the `HeaderMap`'s entries.
//! * `Recv::next_incoming` returns the stream hyper accepts next (its `Key` holds the stream
//!   id; its `Recv` plus the per-process `Counts - Recv` distance learned at `recv_headers` is
//!   the connection); hyper spawns the stream's task right after, and `OwnedTasks::bind_inner`
//!   names that task: the RPC is filed for it (its span is the parent of the calls its handler
//!   awaits), and the task sends the response.
//! * `Headers::trailers(stream_id, fields)` (trailers) and
//!   `server::Peer::convert_send_message(stream_id, response, end_of_stream)` (a trailers-only
//!   response) run on that task: the `grpc-status` in the `HeaderMap` ends the RPC. (h2's
//!   `Send::send_trailers`, which also gets the connection, is inlined into its caller in some
//!   builds, so the end is found by the task instead.)
//!
//! Client, keyed by the caller's tokio task: `GrpcConfig::prepare_request(…, path)` runs on the
//! task that awaits the call (start, method, parent = that task's server span), and
//! `Code::from_bytes(&[u8])` parses the `grpc-status` the call ended with, on the same task.
//! The `:authority` is read where h2 writes the request (`client::Peer::convert_send_message`,
//! on the connection's task), paired with the call by the heap array of the request's header
//! map, which `prepare_request` returned (a map that grows past its first allocation between the
//! two loses the pairing, and the span its address).
//!
//! Layout facts relied on (checked by the tests on real builds): `Bytes` keeps its pointer and
//! length in adjacent words; a `HeaderMap` keeps its entries in a heap array, a custom header
//! name's `Bytes` is followed within twelve words by its value's `Bytes`; h2's `Key` is two
//! `u32` (the stream id is whichever matches an RPC in flight). No other offset is used.
//!
//! x86_64 passes a large return value's hidden pointer in RDI, so arguments of functions that
//! return one start at RSI; aarch64 passes it in x8.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated},
    macros::{map, uprobe, uretprobe},
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::{ProbeContext, RetProbeContext},
};
use spanhook_common::{
    rust::RUST_GRPC_STATUS_NONE, Counter, EventHeader, EventKind, RustGrpcClientEvent,
    RustGrpcServerEvent, RustH2Key, RustH2Stash, RustPtrKey, Str, TargetConfig, TraceIds,
};

use super::{maps::RUST_TASK_SPANS, task};
use crate::{
    emit::{count, wakeup_flags},
    maps::{EVENTS, TARGETS},
    read,
    scan::PAD,
    traceparent,
};

/// The connection (`Counts`) of the `recv_headers` running on a thread, by `pid_tgid`.
#[map]
static RUST_H2_RECV: LruHashMap<u64, RustH2Stash> = LruHashMap::with_max_entries(16384, 0);

/// `Counts` minus `Recv` of h2's connection state, by tgid (learned at `recv_headers`, which
/// gets both): turns the `Recv` of `next_incoming` into the connection.
#[map]
static RUST_H2_DELTA: HashMap<u32, u64> = HashMap::with_max_entries(4096, 0);

/// `next_incoming` entries (the `Recv`, the hidden return pointer), by `pid_tgid`.
#[map]
static RUST_H2_INCOMING: LruHashMap<u64, RustH2Stash> = LruHashMap::with_max_entries(16384, 0);

/// The stream hyper just accepted on a thread, for the task spawned next, by `pid_tgid`.
#[map]
static RUST_H2_ACCEPTED: LruHashMap<u64, RustH2Key> = LruHashMap::with_max_entries(16384, 0);

/// The stream each stream task serves (filed when hyper spawns it), by task.
#[map]
static RUST_GRPC_TASK_STREAM: LruHashMap<RustPtrKey, RustH2Key> =
    LruHashMap::with_max_entries(16384, 0);

/// Server RPCs in flight. LRU: a stream reset before its status must not fill the map; the
/// requests of non-gRPC HTTP/2 traffic (no `grpc-status`) leave the same way.
#[map]
static RUST_GRPC_SERVER_INFLIGHT: LruHashMap<RustH2Key, RustGrpcServerEvent> =
    LruHashMap::with_max_entries(16384, 0);

/// Client RPCs in flight, by the caller's task.
#[map]
static RUST_GRPC_CALLS: LruHashMap<RustPtrKey, RustGrpcClientEvent> =
    LruHashMap::with_max_entries(16384, 0);

/// `prepare_request`'s hidden return pointer, for its return, by `pid_tgid`.
#[map]
static RUST_GRPC_SRET: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);

/// The caller's task of each prepared request, by the address of its header map's entries (the
/// map moves with the request to the connection task, its heap array stays put).
#[map]
static RUST_GRPC_CALL_HEADERS: LruHashMap<RustPtrKey, u64> = LruHashMap::with_max_entries(16384, 0);

/// Words of an argument struct examined for heap arrays or `Bytes`.
const OUTER: usize = 32;
/// Words of a `Pseudo` examined (it has 20 in h2 0.4; more would reach the caller's locals).
const PSEUDO_WORDS: u32 = 22;
/// Words of a `HeaderMap` bucket (`http` 0.2 and 1.x on 64-bit targets: hash, name, value,
/// links), which bounds the scan to the map's live entries.
const BUCKET_WORDS: u64 = 13;
/// Words of a heap array examined (a power of two).
const INNER: usize = 128;

/// Per-CPU scratch of the gRPC probes.
#[repr(C)]
pub struct GrpcScratch {
    outer: [u64; OUTER],
    inner: [u64; INNER],
    /// The header name looked for, and the bytes read to compare with it.
    want: [u8; 16],
    got: [u8; 16],
    /// Value length bounds.
    min: u64,
    max: u64,
    /// Words of `inner` that belong to the map's entries.
    limit: u64,
    /// The value's `Bytes` found.
    value_ptr: u64,
    value_len: u64,
    /// `Bytes` of the pseudo-headers found.
    path_ptr: u64,
    path_len: u64,
    auth_ptr: u64,
    auth_len: u64,
    /// Word of the path's `Bytes`, and the authority candidates (pointer, length, word).
    path_at: u64,
    auth_n: u64,
    cand: [[u64; 3]; 4],
    parsed: TraceIds,
    server: RustGrpcServerEvent,
    client: RustGrpcClientEvent,
}

#[map]
static RUST_GRPC_SCRATCH: PerCpuArray<GrpcScratch> = PerCpuArray::with_max_entries(1, 0);

/// The `n`th argument of a function that returns through a hidden pointer.
#[inline(always)]
fn sarg(ctx: &ProbeContext, n: usize) -> u64 {
    #[cfg(bpf_target_arch = "x86_64")]
    {
        ctx.arg::<u64>(n + 1).unwrap_or(0)
    }
    #[cfg(not(bpf_target_arch = "x86_64"))]
    {
        ctx.arg::<u64>(n).unwrap_or(0)
    }
}

/// The hidden return pointer.
#[inline(always)]
fn sret(ctx: &ProbeContext) -> u64 {
    #[cfg(bpf_target_arch = "x86_64")]
    {
        ctx.arg::<u64>(0).unwrap_or(0)
    }
    #[cfg(not(bpf_target_arch = "x86_64"))]
    {
        // SAFETY: `regs` points at the probe's saved registers; x8 carries the hidden pointer.
        unsafe { (*ctx.regs).regs[8] }
    }
}

#[inline(always)]
fn user_ptr(w: u64) -> bool {
    w > 0x10000 && w < 0x0000_8000_0000_0000
}

#[inline(always)]
fn flags(tgid: u32) -> u32 {
    // SAFETY: copied out at once.
    unsafe { TARGETS.get(&tgid) }.map_or(0, |c| c.flags)
}

#[inline(always)]
fn scratch() -> Option<*mut GrpcScratch> {
    RUST_GRPC_SCRATCH.get_ptr_mut(0)
}

#[inline(always)]
fn take<K, V: Copy>(map: &LruHashMap<K, V>, k: &K) -> Option<V> {
    // SAFETY: copied out at once.
    let v = unsafe { map.get(k) }.copied()?;
    let _ = map.remove(k);
    Some(v)
}

#[repr(C)]
struct LoopCtx {
    s: *mut GrpcScratch,
}

/// Inner scan, word `j` of `inner`: the `Bytes` of the wanted name (length 11), then the
/// value's `Bytes` next to it, whose length must be in `[min, max]`. Nothing at or past `limit`
/// (the live entries' end) is used.
#[inline(never)]
extern "C" fn scan_entries(j: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the `LoopCtx` passed by `find_value`.
    let s = unsafe { &mut *(*ctx.cast::<LoopCtx>()).s };
    let j = j as usize & (INNER - 1);
    let p = s.inner[j];
    let l = s.inner[(j + 1) & (INNER - 1)];
    if j as u64 + 1 >= s.limit {
        return 1;
    }
    if j + 1 >= INNER || l != 11 || !user_ptr(p) {
        return 0;
    }
    // SAFETY: 11 bytes into a 16-byte array.
    let rc = unsafe {
        generated::bpf_probe_read_user(s.got.as_mut_ptr().cast(), 11, p as *const core::ffi::c_void)
    };
    if rc != 0 || s.got[..11] != s.want[..11] {
        return 0;
    }
    // The value's `HeaderValue` (a `Bytes` of four words, then its flag) sits right before or
    // right after the name's four words, whichever order rustc chose for the bucket and the
    // `Bytes`: its pointer is five words before the name's or four after (or, were the flag
    // placed first, four before or five after).
    let mut n = 0;
    while n < 4 {
        let back = n == 0 || n == 2;
        let d = if n == 0 || n == 3 { 5 } else { 4 };
        if (back && j >= d) || (!back && ((j + d + 1) as u64) < s.limit) {
            let a = if back { j - d } else { j + d } & (INNER - 1);
            let (vp, vl) = (s.inner[a], s.inner[(a + 1) & (INNER - 1)]);
            if user_ptr(vp) && vl >= s.min && vl <= s.max {
                s.value_ptr = vp;
                s.value_len = vl;
                return 1;
            }
        }
        n += 1;
    }
    // The name without a value: stop.
    1
}

/// Finds the value of the header named `want` (11 bytes) in the `HeaderMap` inside the struct
/// at `base`: each heap array a word of the struct points to (followed by a small length) is
/// scanned for the name's `Bytes`, then for the value's. Sets `value_ptr`/`value_len`.
#[inline(never)]
fn find_value(s: *mut GrpcScratch, base: u64, want: &[u8; 11], min: u64, max: u64) -> bool {
    // SAFETY: per-CPU scratch, one program at a time on this CPU.
    let sc = unsafe { &mut *s };
    sc.value_ptr = 0;
    sc.value_len = 0;
    sc.want[..11].copy_from_slice(want);
    sc.min = min;
    sc.max = max;
    // SAFETY: fills exactly `outer`.
    let rc = unsafe {
        generated::bpf_probe_read_user(
            sc.outer.as_mut_ptr().cast(),
            (16 * 8) as u32,
            base as *const core::ffi::c_void,
        )
    };
    if rc != 0 {
        return false;
    }
    let mut i = 1;
    while i < 15 {
        let w = sc.outer[i];
        // A `Vec` (capacity, pointer, length) or (pointer, capacity, length) whose length is
        // small: the map's entries. Only its `len` buckets are scanned: the memory past them
        // (spare capacity, other allocations) may hold stale maps.
        let (before, after, after2) = (sc.outer[i - 1], sc.outer[i + 1], sc.outer[(i + 2) & 15]);
        let len = if after >= 1 && after <= 64 && before >= after && before <= 4096 {
            after
        } else if i + 2 < 16 && after2 >= 1 && after2 <= 64 && after >= after2 && after <= 4096 {
            after2
        } else {
            0
        };
        if w & 7 == 0 && user_ptr(w) && len != 0 {
            let words = len * BUCKET_WORDS;
            sc.limit = if words > INNER as u64 {
                INNER as u64
            } else {
                words
            };
            // SAFETY: fills exactly `inner` (or its first quarter).
            let mut rc = unsafe {
                generated::bpf_probe_read_user(
                    sc.inner.as_mut_ptr().cast(),
                    (INNER * 8) as u32,
                    w as *const core::ffi::c_void,
                )
            };
            if rc != 0 {
                // SAFETY: as above.
                rc = unsafe {
                    generated::bpf_probe_read_user(
                        sc.inner.as_mut_ptr().cast(),
                        (INNER * 2) as u32,
                        w as *const core::ffi::c_void,
                    )
                };
                if rc == 0 {
                    let mut k = INNER / 4;
                    while k < INNER {
                        sc.inner[k] = 0;
                        k += 1;
                    }
                }
            }
            if rc == 0 {
                let mut ctx = LoopCtx { s };
                // SAFETY: the callback only reads `ctx` and the scratch it points to.
                unsafe {
                    generated::bpf_loop(
                        INNER as u32,
                        scan_entries as *mut core::ffi::c_void,
                        (&mut ctx as *mut LoopCtx).cast(),
                        0,
                    )
                };
                if sc.value_ptr != 0 {
                    return true;
                }
            }
        }
        i += 1;
    }
    false
}

/// The `grpc-status` in the `HeaderMap` inside the struct at `base`.
#[inline(always)]
fn grpc_status(s: *mut GrpcScratch, base: u64) -> i32 {
    if !find_value(s, base, b"grpc-status", 1, 2) {
        return RUST_GRPC_STATUS_NONE;
    }
    // SAFETY: per-CPU scratch.
    let (p, l) = unsafe { ((*s).value_ptr, (*s).value_len) };
    parse_code(p, l)
}

/// A status code written in decimal (one or two digits) at `p`.
#[inline(always)]
fn parse_code(p: u64, l: u64) -> i32 {
    let Ok(b) = read::user::<[u8; 2]>(p) else {
        return RUST_GRPC_STATUS_NONE;
    };
    let d0 = b[0].wrapping_sub(b'0');
    let d1 = b[1].wrapping_sub(b'0');
    if d0 > 9 {
        return RUST_GRPC_STATUS_NONE;
    }
    if l == 1 {
        return d0 as i32;
    }
    if l == 2 && d1 <= 9 {
        return (d0 * 10 + d1) as i32;
    }
    RUST_GRPC_STATUS_NONE
}

/// Pseudo-header scan, word `i` of `outer`: a `Bytes` starting with `/` is the `:path`, one
/// that is not `http`/`https` the `:authority`.
#[inline(never)]
extern "C" fn scan_pseudo(i: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the `LoopCtx` passed by `pseudo`.
    let s = unsafe { &mut *(*ctx.cast::<LoopCtx>()).s };
    let i = i as usize & (OUTER - 1);
    if i + 1 >= OUTER {
        return 1;
    }
    let p = s.outer[i];
    let l = s.outer[(i + 1) & (OUTER - 1)];
    if !user_ptr(p) || l == 0 || l > 1024 {
        return 0;
    }
    let Ok(b) = read::user::<[u8; 8]>(p) else {
        return 0;
    };
    if b[0] == b'/' {
        if s.path_ptr == 0 {
            s.path_ptr = p;
            s.path_len = l;
            s.path_at = i as u64;
        }
        return 0;
    }
    let scheme = (l == 4 || l == 5) && &b[..4] == b"http";
    // An authority: host characters (and a port) only, as far as the first eight bytes go.
    let mut host = l <= 255;
    let mut k = 0;
    while k < 8 {
        let c = b[k];
        let ok = c.is_ascii_alphanumeric()
            || c == b'.'
            || c == b'-'
            || c == b':'
            || c == b'['
            || c == b']'
            || c == b'_';
        if (k as u64) < l && !ok {
            host = false;
        }
        k += 1;
    }
    if !scheme && host {
        let n = s.auth_n as usize;
        if n < 4 {
            s.cand[n & 3] = [p, l, i as u64];
            s.auth_n += 1;
        }
    }
    0
}

/// Finds the `:path` and `:authority` `Bytes` among the first `words` words at `base` (a
/// `Pseudo`, or a `PathAndQuery`).
#[inline(never)]
fn pseudo(s: *mut GrpcScratch, base: u64, words: u32) -> bool {
    // SAFETY: per-CPU scratch.
    let sc = unsafe { &mut *s };
    sc.path_ptr = 0;
    sc.path_len = 0;
    sc.path_at = 0;
    sc.auth_ptr = 0;
    sc.auth_len = 0;
    sc.auth_n = 0;
    // SAFETY: fills exactly `outer`.
    let rc = unsafe {
        generated::bpf_probe_read_user(
            sc.outer.as_mut_ptr().cast(),
            (OUTER * 8) as u32,
            base as *const core::ffi::c_void,
        )
    };
    if rc != 0 {
        return false;
    }
    let mut ctx = LoopCtx { s };
    // SAFETY: the callback only reads `ctx` and the scratch it points to.
    unsafe {
        generated::bpf_loop(
            words,
            scan_pseudo as *mut core::ffi::c_void,
            (&mut ctx as *mut LoopCtx).cast(),
            0,
        )
    };
    // `Pseudo` and `Uri` keep the authority's `Bytes` right next to the path's (four or five
    // words away): that one, else the first that looks like an authority.
    let mut k = 0;
    while k < 4 {
        let [p, l, at] = sc.cand[k];
        let d = at.abs_diff(sc.path_at);
        if (k as u64) < sc.auth_n && sc.path_ptr != 0 && (d == 4 || d == 5) && sc.auth_ptr == 0 {
            sc.auth_ptr = p;
            sc.auth_len = l;
        }
        k += 1;
    }
    if sc.auth_ptr == 0 && sc.auth_n > 0 {
        let [p, l, _] = sc.cand[0];
        sc.auth_ptr = p;
        sc.auth_len = l;
    }
    sc.path_ptr != 0
}

/// Copies `len` bytes at `ptr` into `out` (truncated).
#[inline(always)]
fn copy_str<const N: usize>(ptr: u64, len: u64, out: &mut Str<N>) {
    out.len = len as u32;
    let n = if len > N as u64 { N } else { len as usize };
    // SAFETY: reading a local.
    let n = unsafe { core::ptr::read_volatile(&n) };
    if n == 0 || n > N || ptr == 0 {
        out.len = 0;
        return;
    }
    // SAFETY: `n <= N` bounds the write.
    let rc = unsafe {
        generated::bpf_probe_read_user(
            out.bytes.as_mut_ptr().cast(),
            n as u32,
            ptr as *const core::ffi::c_void,
        )
    };
    if rc != 0 {
        out.len = 0;
    }
}

/// Continues an incoming `traceparent` found in the `HeaderMap` at `fields`, if any, in the
/// server record being built in scratch.
#[inline(never)]
fn incoming_traceparent(s: *mut GrpcScratch, fields: u64) {
    if !find_value(s, fields, b"traceparent", 55, 128) {
        return;
    }
    // SAFETY: per-CPU scratch.
    let sc = unsafe { &mut *s };
    // The parser reads the scratch every other traceparent parser uses (its indices are masked
    // to that buffer).
    let Some(head) = crate::maps::SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch, one program at a time on this CPU.
    let head = unsafe { &mut (*head).head };
    head[PAD + 55] = b'\r';
    // SAFETY: 55 bytes fit after the padding.
    let rc = unsafe {
        generated::bpf_probe_read_user(
            head.as_mut_ptr().add(PAD).cast(),
            55,
            sc.value_ptr as *const core::ffi::c_void,
        )
    };
    if rc != 0 {
        return;
    }
    if sc.value_len != 55 || !traceparent::parse_value(head.as_ptr(), PAD, &mut sc.parsed) {
        sc.server.trace.origin = TraceIds::ORIGIN_HEADER_INVALID;
        count(Counter::TraceparentInvalid);
        return;
    }
    sc.server.trace = sc.parsed;
}

/// `h2::proto::streams::recv::Recv::recv_headers` entry: the connection (its `Counts`) for the
/// `convert_poll_message` it calls.
#[uprobe]
pub fn rust_h2_recv_headers(ctx: ProbeContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if flags(tgid) & TargetConfig::FLAG_RUST_GRPC_SERVER == 0 {
        return 0;
    }
    let (recv, counts) = (sarg(&ctx, 0), sarg(&ctx, 3));
    if !user_ptr(recv) || !user_ptr(counts) {
        return 0;
    }
    let stash = RustH2Stash {
        conn: counts,
        sret: 0,
        stream_id: 0,
        status: RUST_GRPC_STATUS_NONE,
    };
    let _ = RUST_H2_RECV.insert(&bpf_get_current_pid_tgid(), &stash, 0);
    // SAFETY: presence only.
    if unsafe { RUST_H2_DELTA.get(&tgid) }.is_none() {
        let _ = RUST_H2_DELTA.insert(&tgid, &counts.wrapping_sub(recv), 0);
    }
    0
}

/// `<h2::server::Peer as h2::proto::peer::Peer>::convert_poll_message` entry: a request's
/// HEADERS were decoded; the RPC starts.
#[uprobe]
pub fn rust_h2_server_request(ctx: ProbeContext) -> u32 {
    let _ = try_server_request(&ctx);
    0
}

fn try_server_request(ctx: &ProbeContext) -> Option<()> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let conn = take(&RUST_H2_RECV, &bpf_get_current_pid_tgid())?.conn;
    let (pseudo_at, fields, stream_id) = (sarg(ctx, 0), sarg(ctx, 1), sarg(ctx, 2) as u32);
    let s = scratch()?;
    // h2 0.4's `Pseudo` is 20 words (method, scheme, authority, path, protocol, status).
    if !pseudo(s, pseudo_at, PSEUDO_WORDS) {
        return None;
    }
    // SAFETY: per-CPU scratch.
    let sc = unsafe { &mut *s };
    let ev = &mut sc.server;
    ev.header = EventHeader {
        kind: EventKind::RustGrpcServer as u16,
        _pad: 0,
        tgid,
        // SAFETY: plain helper call.
        start_ns: unsafe { bpf_ktime_get_ns() },
        end_ns: 0,
    };
    ev.task = 0;
    ev.stream_id = stream_id;
    ev.status = RUST_GRPC_STATUS_NONE;
    let (pp, pl, ap, al) = (sc.path_ptr, sc.path_len, sc.auth_ptr, sc.auth_len);
    copy_str(pp, pl, &mut ev.method);
    copy_str(ap, al, &mut ev.authority);
    traceparent::new_root(&mut ev.trace);
    if flags(tgid) & TargetConfig::FLAG_SERVER_TRACEPARENT != 0 {
        incoming_traceparent(s, fields);
    }
    let key = RustH2Key {
        tgid,
        stream_id,
        conn,
    };
    // SAFETY: per-CPU scratch.
    if RUST_GRPC_SERVER_INFLIGHT
        .insert(&key, unsafe { &(*s).server }, 0)
        .is_err()
    {
        count(Counter::InflightInsertFailed);
    }
    Some(())
}

/// `h2::proto::streams::recv::Recv::next_incoming` entry.
#[uprobe]
pub fn rust_h2_next_incoming_entry(ctx: ProbeContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if flags(tgid) & TargetConfig::FLAG_RUST_GRPC_SERVER == 0 {
        return 0;
    }
    let stash = RustH2Stash {
        conn: sarg(&ctx, 0),
        sret: sret(&ctx),
        stream_id: 0,
        status: RUST_GRPC_STATUS_NONE,
    };
    let _ = RUST_H2_INCOMING.insert(&bpf_get_current_pid_tgid(), &stash, 0);
    0
}

/// `h2::proto::streams::recv::Recv::next_incoming` return: the stream accepted (if any), for
/// the task hyper spawns for it.
#[uretprobe]
pub fn rust_h2_next_incoming(_ctx: RetProbeContext) -> u32 {
    let _ = try_next_incoming();
    0
}

fn try_next_incoming() -> Option<()> {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    let stash = take(&RUST_H2_INCOMING, &id)?;
    // Option<Key>: a tag word, then the key's two u32 (slab index and stream id).
    let [tag, a, b] = read::user::<[u32; 3]>(stash.sret).ok()?;
    if tag != 1 {
        return None;
    }
    // SAFETY: copied out at once.
    let delta = unsafe { RUST_H2_DELTA.get(&tgid) }.copied()?;
    let conn = stash.conn.wrapping_add(delta);
    let mut key = RustH2Key {
        tgid,
        stream_id: b,
        conn,
    };
    // SAFETY: presence only.
    if unsafe { RUST_GRPC_SERVER_INFLIGHT.get(&key) }.is_none() {
        key.stream_id = a;
        // SAFETY: presence only.
        unsafe { RUST_GRPC_SERVER_INFLIGHT.get(&key) }?;
    }
    let _ = RUST_H2_ACCEPTED.insert(&id, &key, 0);
    Some(())
}

/// `tokio::runtime::task::list::OwnedTasks<S>::bind_inner` entry: a task is spawned. After an
/// accepted stream on this thread, it is the stream's task: the RPC's span is filed for it.
#[uprobe]
pub fn rust_task_bind(ctx: ProbeContext) -> u32 {
    let _ = try_task_bind(&ctx);
    0
}

fn try_task_bind(ctx: &ProbeContext) -> Option<()> {
    let id = bpf_get_current_pid_tgid();
    let key = take(&RUST_H2_ACCEPTED, &id)?;
    let task: u64 = ctx.arg(1)?;
    if !user_ptr(task) {
        return None;
    }
    // SAFETY: the value stays valid while this program runs.
    let inflight = RUST_GRPC_SERVER_INFLIGHT.get_ptr_mut(&key)?;
    // SAFETY: as above.
    unsafe { (*inflight).task = task };
    // SAFETY: as above.
    let trace = unsafe { (*inflight).trace };
    let tk = RustPtrKey {
        tgid: key.tgid,
        _pad: 0,
        ptr: task,
    };
    let _ = RUST_TASK_SPANS.insert(&tk, &trace, 0);
    let _ = RUST_GRPC_TASK_STREAM.insert(&tk, &key, 0);
    Some(())
}

/// `h2::frame::headers::Headers::trailers(stream_id, fields)` entry, on the stream's task: the
/// trailers of a stream are built; with a `grpc-status` they end its RPC.
#[uprobe]
pub fn rust_h2_trailers(ctx: ProbeContext) -> u32 {
    let _ = try_end(&ctx);
    0
}

/// `h2::server::Peer::convert_send_message(stream_id, response, end_of_stream)` entry, on the
/// stream's task: a response's HEADERS are built; a `grpc-status` among them (a trailers-only
/// response) ends the RPC.
#[uprobe]
pub fn rust_h2_server_response(ctx: ProbeContext) -> u32 {
    // Only a response that ends the stream (a trailers-only response) carries the status.
    if sarg(&ctx, 2) & 0xff != 0 {
        let _ = try_end(&ctx);
    }
    0
}

/// Both take (stream id, struct holding a `HeaderMap`) after the hidden return pointer.
fn try_end(ctx: &ProbeContext) -> Option<()> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if flags(tgid) & TargetConfig::FLAG_RUST_GRPC_SERVER == 0 {
        return None;
    }
    let task = task::current();
    if task == 0 {
        return None;
    }
    let tk = RustPtrKey {
        tgid,
        _pad: 0,
        ptr: task,
    };
    // SAFETY: copied out at once.
    let key = unsafe { RUST_GRPC_TASK_STREAM.get(&tk) }.copied()?;
    if key.stream_id != sarg(ctx, 0) as u32 {
        return None;
    }
    let s = scratch()?;
    let status = grpc_status(s, sarg(ctx, 1));
    if status == RUST_GRPC_STATUS_NONE {
        // Response HEADERS of a response whose status comes in its trailers.
        return None;
    }
    let _ = RUST_GRPC_TASK_STREAM.remove(&tk);
    let _ = RUST_TASK_SPANS.remove(&tk);
    // SAFETY: the value stays valid while this program runs.
    let Some(inflight) = (unsafe { RUST_GRPC_SERVER_INFLIGHT.get(&key) }) else {
        count(Counter::RustServerUnmatched);
        return None;
    };
    let Some(mut entry) = EVENTS.reserve::<RustGrpcServerEvent>(0) else {
        count(Counter::RingBufferFull);
        let _ = RUST_GRPC_SERVER_INFLIGHT.remove(&key);
        return None;
    };
    // SAFETY: `reserve` returned room for one event; it is overwritten whole.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    *ev = *inflight;
    ev.status = status;
    // SAFETY: plain helper call.
    ev.header.end_ns = unsafe { bpf_ktime_get_ns() };
    entry.submit(wakeup_flags());
    let _ = RUST_GRPC_SERVER_INFLIGHT.remove(&key);
    Some(())
}

/// `tonic::client::grpc::GrpcConfig::prepare_request(&self, request, path)` entry, on the
/// caller's task: a client RPC starts.
#[uprobe]
pub fn rust_grpc_call(ctx: ProbeContext) -> u32 {
    let _ = try_call(&ctx);
    0
}

fn try_call(ctx: &ProbeContext) -> Option<()> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let f = flags(tgid);
    if f & TargetConfig::FLAG_RUST_GRPC_CLIENT == 0 || f & TargetConfig::FLAG_RUST_TASKS == 0 {
        return None;
    }
    let task = task::current();
    if task == 0 {
        return None;
    }
    let s = scratch()?;
    // The `PathAndQuery`: its `Bytes` holds `/package.Service/Method`.
    if !pseudo(s, sarg(ctx, 2), 5) {
        return None;
    }
    // SAFETY: per-CPU scratch.
    let sc = unsafe { &mut *s };
    let (pp, pl) = (sc.path_ptr, sc.path_len);
    let ev = &mut sc.client;
    ev.header = EventHeader {
        kind: EventKind::RustGrpcClient as u16,
        _pad: 0,
        tgid,
        // SAFETY: plain helper call.
        start_ns: unsafe { bpf_ktime_get_ns() },
        end_ns: 0,
    };
    ev.task = task;
    ev.status = RUST_GRPC_STATUS_NONE;
    ev.stream_id = 0;
    copy_str(pp, pl, &mut ev.method);
    ev.authority.len = 0;
    match task::span_of(tgid, task) {
        Some(parent) => {
            ev.trace.trace_id = parent.trace_id;
            ev.trace.parent_span_id = parent.span_id;
            ev.trace.flags = parent.flags;
            ev.trace.origin = TraceIds::ORIGIN_TASK;
            ev.trace._pad = [0; 6];
            traceparent::random_bytes(&mut ev.trace.span_id);
        }
        None => traceparent::new_root(&mut ev.trace),
    }
    let key = RustPtrKey {
        tgid,
        _pad: 0,
        ptr: task,
    };
    if RUST_GRPC_CALLS.insert(&key, &*ev, 0).is_err() {
        count(Counter::InflightInsertFailed);
    }
    let _ = RUST_GRPC_SRET.insert(&bpf_get_current_pid_tgid(), &sret(ctx), 0);
    Some(())
}

/// The heap arrays of the first two `Vec`s (capacity, pointer, length) with a small length
/// among the first `OUTER` words at `base` (copied to `outer`); 0 for none.
#[inline(always)]
fn vec_arrays(s: *mut GrpcScratch, base: u64) -> Option<[u64; 2]> {
    // SAFETY: per-CPU scratch.
    let sc = unsafe { &mut *s };
    // SAFETY: fills exactly `outer`.
    let rc = unsafe {
        generated::bpf_probe_read_user(
            sc.outer.as_mut_ptr().cast(),
            (OUTER * 8) as u32,
            base as *const core::ffi::c_void,
        )
    };
    if rc != 0 {
        return None;
    }
    let mut found = [0u64; 2];
    let mut n = 0;
    let mut i = 1;
    while i + 1 < OUTER {
        let (cap, ptr, len) = (sc.outer[i - 1], sc.outer[i], sc.outer[i + 1]);
        if n < 2
            && ptr & 7 == 0
            && user_ptr(ptr)
            && len >= 1
            && len <= 16
            && cap >= len
            && cap <= 64
        {
            found[n & 1] = ptr;
            n += 1;
        }
        i += 1;
    }
    Some(found)
}

/// `GrpcConfig::prepare_request` return: the `http::Request` it built is filed by its header
/// map's entries, for the connection task that writes it (`client::Peer::convert_send_message`).
#[uretprobe]
pub fn rust_grpc_call_ret(_ctx: RetProbeContext) -> u32 {
    let _ = try_call_ret();
    0
}

fn try_call_ret() -> Option<()> {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    let request = take(&RUST_GRPC_SRET, &id)?;
    let task = task::current();
    if task == 0 {
        return None;
    }
    let s = scratch()?;
    for ptr in vec_arrays(s, request)? {
        if ptr != 0 {
            let _ = RUST_GRPC_CALL_HEADERS.insert(&RustPtrKey { tgid, _pad: 0, ptr }, &task, 0);
        }
    }
    Some(())
}

/// `h2::client::Peer::convert_send_message(stream_id, request, protocol, end_of_stream)` entry,
/// on the connection's task: the request of a call is about to be written; its `:authority`
/// and stream id go to the call.
#[uprobe]
pub fn rust_grpc_client_request(ctx: ProbeContext) -> u32 {
    let _ = try_client_request(&ctx);
    0
}

fn try_client_request(ctx: &ProbeContext) -> Option<()> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if flags(tgid) & TargetConfig::FLAG_RUST_GRPC_CLIENT == 0 {
        return None;
    }
    let (stream_id, request) = (sarg(ctx, 0) as u32, sarg(ctx, 1));
    let s = scratch()?;
    let mut task = 0;
    for ptr in vec_arrays(s, request)? {
        if ptr != 0 && task == 0 {
            let k = RustPtrKey { tgid, _pad: 0, ptr };
            // SAFETY: copied out at once.
            if let Some(t) = unsafe { RUST_GRPC_CALL_HEADERS.get(&k) }.copied() {
                task = t;
                let _ = RUST_GRPC_CALL_HEADERS.remove(&k);
            }
        }
    }
    if task == 0 {
        return None;
    }
    let call = RUST_GRPC_CALLS.get_ptr_mut(&RustPtrKey {
        tgid,
        _pad: 0,
        ptr: task,
    })?;
    if !pseudo(s, request, OUTER as u32) {
        return None;
    }
    // SAFETY: per-CPU scratch; the call stays valid while this program runs.
    unsafe {
        (*call).stream_id = stream_id;
        copy_str((*s).auth_ptr, (*s).auth_len, &mut (*call).authority);
    }
    Some(())
}

/// `tonic::status::Code::from_bytes(&[u8])` entry, on the caller's task: the `grpc-status` the
/// call ended with is parsed; the call's record goes out.
#[uprobe]
pub fn rust_grpc_status(ctx: ProbeContext) -> u32 {
    let _ = try_status(&ctx);
    0
}

fn try_status(ctx: &ProbeContext) -> Option<()> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let task = task::current();
    if task == 0 {
        return None;
    }
    let key = RustPtrKey {
        tgid,
        _pad: 0,
        ptr: task,
    };
    // SAFETY: the value stays valid while this program runs.
    let call = unsafe { RUST_GRPC_CALLS.get(&key) }?;
    let (ptr, len): (u64, u64) = (ctx.arg(0)?, ctx.arg(1)?);
    let code = parse_code(ptr, len);
    let Some(mut entry) = EVENTS.reserve::<RustGrpcClientEvent>(0) else {
        count(Counter::RingBufferFull);
        let _ = RUST_GRPC_CALLS.remove(&key);
        return None;
    };
    // SAFETY: `reserve` returned room for one event; it is overwritten whole.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    *ev = *call;
    // An unparsable status is Unknown, as tonic makes it.
    ev.status = if code == RUST_GRPC_STATUS_NONE {
        2
    } else {
        code
    };
    // SAFETY: plain helper call.
    ev.header.end_ns = unsafe { bpf_ktime_get_ns() };
    entry.submit(wakeup_flags());
    let _ = RUST_GRPC_CALLS.remove(&key);
    Some(())
}
