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
//! Fat LTO (one codegen unit) inlines `Headers::trailers`, the server's `convert_send_message`
//! and `next_incoming` into their callers; their callers are probed instead, keyed the same
//! way: tonic's `Status::add_header` (return; it writes every status tonic sends) and h2's
//! `SendResponse::send_response` on the stream's task, and the clone of the accepted stream's
//! handle (`OpaqueStreamRef`, whose `Key` holds the stream id) that `poll_accept` makes on the
//! connection's task, which is the task `recv_headers` ran on: the RPC is found by (stream id,
//! connection's task).
//!
//! Client: `GrpcConfig::prepare_request(…, path)` runs on the task that awaits the call (start,
//! method, parent = that task's server span). The call reaches the wire on the connection's
//! task (`client::Peer::convert_send_message(stream_id, request, …)`), paired with the call by
//! the heap array of the request's header map, which `prepare_request` returned: the stream id
//! and `:authority` go to the call, which is filed by (stream id, caller's task). A response's
//! HEADERS and trailers are decoded on the connection's task too (`Recv::recv_headers(frame,
//! stream, …)`, `Recv::recv_trailers(frame, stream)`, which every build keeps): a `HeaderMap`
//! with a `grpc-status` (trailers, or a trailers-only response) is filed by its entries' heap
//! array with its stream; tonic's `Status::from_header_map(&map)` on the caller's task reads
//! the same map: its array names the stream, the stream and the task the call. So two calls
//! awaited at once by one task (`join!`) are told apart. A status that comes without a stream
//! (`Code::from_bytes` where `from_header_map` is inlined, a call whose request was not paired
//! with its stream) ends the task's call only when the task has one in flight. A call that fails
//! without a `grpc-status` (refused, deadline, reset) ends at the return of
//! `Status::from_error` (or of `try_from_error`, which it calls, where fat LTO inlined
//! `from_error` into its callers), with the code of the status tonic made (Unavailable for a
//! refused connection, Cancelled for a deadline it enforced), on the same terms. Once a task
//! has had two calls in flight, statuses not tied to a stream are dropped until it has none (no
//! span rather than a wrong one).
//!
//! Layout facts relied on (checked by the tests on real builds of tonic 0.12 and 0.14, `http`
//! 1.5 and 1.6, default and fat-LTO profiles): `Bytes` keeps its pointer and length in adjacent
//! words; a `HeaderMap` keeps its entries in a heap array, in a `Vec` sized three quarters of
//! its hash index (a pointer and a power-of-two length; see [`map_entries`]), and is 12 words
//! up to `http` 1.5, 6 from 1.6 ([`TargetConfig::FLAG_RUST_HTTP_COLD_MAP`]); a custom header
//! name's `Bytes` is four or five words from its value's; h2's `Key` is two `u32`, the slab
//! index then the stream id, and h2's `store::Ptr` a `Key` and a pointer; tonic's status keeps
//! its one-byte code after its four word-aligned fields ([`status_code_offset`]), and is boxed
//! from tonic 0.14 ([`TargetConfig::FLAG_RUST_TONIC_STATUS_BY_VALUE`] before). No other offset
//! is used.
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

/// The connection (`Counts`) of each server RPC not yet accepted, by (process, stream id, the
/// connection's task): what fat LTO leaves at the accept (a stream handle cloned on that
/// task) names the stream and the task, not the `Counts`.
#[map]
static RUST_H2_TASK_STREAMS: LruHashMap<RustH2Key, u64> = LruHashMap::with_max_entries(16384, 0);

/// The map `Status::add_header` writes to, for its return, by `pid_tgid`.
#[map]
static RUST_GRPC_TRAILERS_SRET: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);

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

/// The latest client RPC started on each task, by the caller's task (for the statuses that
/// cannot be tied to a stream: failures before or without a response).
#[map]
static RUST_GRPC_CALLS: LruHashMap<RustPtrKey, RustGrpcClientEvent> =
    LruHashMap::with_max_entries(16384, 0);

/// Client RPCs started and not ended, by the caller's task, plus [`AMBIGUOUS`] once a call
/// started while another was in flight (`join!`): from then until the task has none, a status
/// that cannot be tied to a stream is dropped rather than given to the wrong call.
#[map]
static RUST_GRPC_TASK_CALLS: LruHashMap<RustPtrKey, u64> = LruHashMap::with_max_entries(16384, 0);

/// [`RUST_GRPC_TASK_CALLS`]' flag of a task whose calls cannot be told apart by the task.
const AMBIGUOUS: u64 = 1 << 32;

/// Client RPCs written, by (process, stream id, caller's task).
#[map]
static RUST_GRPC_STREAM_CALLS: LruHashMap<RustH2Key, RustGrpcClientEvent> =
    LruHashMap::with_max_entries(16384, 0);

/// The stream id of each received response `HeaderMap` that holds a `grpc-status`, by the
/// address of the map's entries (the heap array the status was found in): the map moves from
/// h2 (connection task) to tonic (caller's task), its heap array stays put.
#[map]
static RUST_GRPC_STATUS_STREAMS: LruHashMap<RustPtrKey, u64> =
    LruHashMap::with_max_entries(16384, 0);

/// The hidden return pointer of `prepare_request` or `Status::from_error` (`try_from_error`),
/// for its return, by `pid_tgid`.
#[map]
static RUST_GRPC_SRET: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);

/// Each prepared request's call, by the address of its header map's entries (the map moves
/// with the request to the connection task, its heap array stays put).
#[map]
static RUST_GRPC_CALL_HEADERS: LruHashMap<RustPtrKey, RustGrpcClientEvent> =
    LruHashMap::with_max_entries(16384, 0);

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
    /// Words at the base that [`map_entries`] looks through for the entries (0: the default).
    window: u64,
    /// Hash indexes (pointer, length, slots in use) found there, and how many.
    indexes: [[u64; 3]; INDEXES],
    nindex: u64,
    /// A hash index's slots, read to count those in use, how many it has, and the count.
    pos: [u32; POS_SLOTS],
    slots: u64,
    used: u64,
    /// The map's entries found there (pointer, length), and the `Vec` field order looked for
    /// (0: capacity first, 1: pointer first).
    entries_ptr: u64,
    entries_len: u64,
    vec_order: u64,
    /// The value's `Bytes` found, and the heap array of the map's entries it was found in.
    value_ptr: u64,
    value_len: u64,
    array: u64,
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
    /// The argument registers of `recv_reset`, and the RPC they name (its task `| 1`).
    regs: [u64; 8],
    reset_key: RustH2Key,
    reset_task: u64,
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
    // The name without a value next to it: not a live bucket's name (an unset field's stale
    // words, e.g. a static `"grpc-status"` left in a `None`): look on.
    0
}

/// Hash indexes (`Box<[Pos]>`) kept from the words of a map.
const INDEXES: usize = 4;

/// Room for the slots of a hash index counted (`Pos` are 4 bytes); indexes of this many slots or
/// more go uncounted.
const POS_SLOTS: usize = 128;

/// [`GrpcScratch::indexes`]' count of a hash index too large to count.
const UNCOUNTED: u64 = u64::MAX;

/// Whether a `Vec` (`cap`, `ptr`, `len`) is the entries of the map whose hash index is among
/// `indexes` (pointer, power-of-two length, slots in use): a map sizes its entries at three
/// quarters of its index's length (a clone's are as long as they are full), and has one slot in
/// use per entry. Junk words (an unset enum payload's: stale pointers, even to a stale map's
/// entries) and other arrays next to the map do not fit all three.
#[inline(always)]
fn entries_of(indexes: &[[u64; 3]; INDEXES], cap: u64, ptr: u64, len: u64) -> bool {
    // Spelled out: a loop's pointer arithmetic over the scratch is refused by the verifier.
    let fits = |[q, n, used]: [u64; 3]| {
        let usable = n - n / 4;
        q != 0
            && q != ptr
            && len <= usable
            && (cap == usable || cap == len)
            && (used == UNCOUNTED || used == len)
    };
    fits(indexes[0]) || fits(indexes[1]) || fits(indexes[2]) || fits(indexes[3])
}

/// Index pass, word `i` of `outer`: a pointer then a power-of-two length (a map's hash index,
/// `Box<[Pos]>`) is kept. The entries' own pointer and length may look like one too, hence
/// several.
#[inline(never)]
extern "C" fn scan_indexes(i: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the `LoopCtx` passed by `find_value`.
    let s = unsafe { &mut *(*ctx.cast::<LoopCtx>()).s };
    let i = i as usize & (OUTER - 1);
    if i as u64 + 1 >= s.window || s.nindex >= INDEXES as u64 {
        return 1;
    }
    let (q, n) = (s.outer[i], s.outer[(i + 1) & (OUTER - 1)]);
    if q & 1 == 0 && user_ptr(q) && n >= 1 && n <= 1 << 15 && n & (n - 1) == 0 {
        s.indexes[s.nindex as usize & (INDEXES - 1)] = [q, n, UNCOUNTED];
        s.nindex += 1;
    }
    0
}

/// Counting pass, slot `k` of `pos`: one more in use unless free (a `Pos` is the entry's `u16`
/// index, `0xffff` when free, then a `u16` hash).
#[inline(never)]
extern "C" fn count_slots(k: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the `LoopCtx` passed by `map_entries`.
    let s = unsafe { &mut *(*ctx.cast::<LoopCtx>()).s };
    if k >= s.slots {
        return 1;
    }
    if s.pos[k as usize & (POS_SLOTS - 1)] & 0xffff != 0xffff {
        s.used += 1;
    }
    0
}

/// The slots in use of the hash index of `n` slots at `q`, [`UNCOUNTED`] when it has
/// [`POS_SLOTS`] or more, or cannot be read.
#[inline(always)]
fn used_slots(s: *mut GrpcScratch, q: u64, n: u64) -> u64 {
    // SAFETY: per-CPU scratch.
    let sc = unsafe { &mut *s };
    if q == 0 || n >= POS_SLOTS as u64 {
        return UNCOUNTED;
    }
    // Masked to the size of `pos` (which it never exceeds), in a form the verifier follows.
    let size = (n * 4) as u32 & (POS_SLOTS * 4 - 1) as u32;
    // SAFETY: `size` is less than the size of `pos`.
    let rc = unsafe {
        generated::bpf_probe_read_user(
            sc.pos.as_mut_ptr().cast(),
            size,
            q as *const core::ffi::c_void,
        )
    };
    if rc != 0 {
        return UNCOUNTED;
    }
    sc.slots = n;
    sc.used = 0;
    let mut ctx = LoopCtx { s };
    // SAFETY: the callback only reads `ctx` and writes the scratch it points to.
    unsafe {
        generated::bpf_loop(
            POS_SLOTS as u32,
            count_slots as *mut core::ffi::c_void,
            (&mut ctx as *mut LoopCtx).cast(),
            0,
        )
    };
    sc.used
}

/// Entries pass, word `i + 1` of `outer`: a `Vec` (capacity, pointer, length), or in the second
/// pass (pointer, capacity, length), sized like the entries of a hash index kept is the map's
/// entries. (Capacity first is how rustc lays out `Vec` today; an unset `Danger` of `http` 1.5,
/// the map's first words, may hold junk that reads as the other order.)
#[inline(never)]
extern "C" fn scan_vecs(i: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the `LoopCtx` passed by `find_value`.
    let s = unsafe { &mut *(*ctx.cast::<LoopCtx>()).s };
    let i = (i as usize + 1) & (OUTER - 1);
    if i as u64 + 1 >= s.window || i == 0 {
        return 1;
    }
    // The word before, at an index of its own: reached as `&outer[i] - 8`, it is refused by the
    // verifier.
    // SAFETY: reading a local.
    let prev = unsafe { core::ptr::read_volatile(&(i - 1)) } & (OUTER - 1);
    let (before, w, after) = (s.outer[prev], s.outer[i], s.outer[(i + 1) & (OUTER - 1)]);
    let after2 = s.outer[(i + 2) & (OUTER - 1)];
    if w & 7 != 0 || !user_ptr(w) {
        return 0;
    }
    let len = if s.vec_order == 0 {
        if after >= 1 && after <= 64 && entries_of(&s.indexes, before, w, after) {
            after
        } else {
            return 0;
        }
    } else if (i as u64) + 2 < s.window
        && after2 >= 1
        && after2 <= 64
        && entries_of(&s.indexes, after, w, after2)
    {
        after2
    } else {
        return 0;
    };
    s.entries_ptr = w;
    s.entries_len = len;
    1
}

/// The entries of the `HeaderMap` inside the struct at `base`, among its first `words` words
/// (at most [`OUTER`]; read into `outer`): the heap array one of them points to, sized for the
/// map's hash index, another of them. Sets `entries_ptr` (0: none) and `entries_len`.
#[inline(never)]
fn map_entries(s: *mut GrpcScratch, base: u64, words: u64) -> bool {
    // SAFETY: per-CPU scratch, one program at a time on this CPU.
    let sc = unsafe { &mut *s };
    sc.window = if words == 0 || words > OUTER as u64 {
        OUTER as u64
    } else {
        words
    };
    sc.nindex = 0;
    sc.indexes = [[0; 3]; INDEXES];
    sc.entries_ptr = 0;
    sc.entries_len = 0;
    // SAFETY: fills exactly `outer`.
    let mut rc = unsafe {
        generated::bpf_probe_read_user(
            sc.outer.as_mut_ptr().cast(),
            (OUTER * 8) as u32,
            base as *const core::ffi::c_void,
        )
    };
    if rc != 0 && sc.window <= 16 {
        // The struct may end a mapping (a stack's top): its first half only.
        // SAFETY: fills the first half of `outer`.
        rc = unsafe {
            generated::bpf_probe_read_user(
                sc.outer.as_mut_ptr().cast(),
                (16 * 8) as u32,
                base as *const core::ffi::c_void,
            )
        };
    }
    if rc != 0 {
        return false;
    }
    let mut ctx = LoopCtx { s };
    // SAFETY: the callbacks only read `ctx` and write the scratch it points to.
    unsafe {
        generated::bpf_loop(
            OUTER as u32,
            scan_indexes as *mut core::ffi::c_void,
            (&mut ctx as *mut LoopCtx).cast(),
            0,
        );
    }
    // Spelled out: a loop's pointer arithmetic over the scratch is refused by the verifier.
    sc.indexes[0][2] = used_slots(s, sc.indexes[0][0], sc.indexes[0][1]);
    sc.indexes[1][2] = used_slots(s, sc.indexes[1][0], sc.indexes[1][1]);
    sc.indexes[2][2] = used_slots(s, sc.indexes[2][0], sc.indexes[2][1]);
    sc.indexes[3][2] = used_slots(s, sc.indexes[3][0], sc.indexes[3][1]);
    let mut order = 0;
    while order < 2 && sc.entries_ptr == 0 {
        sc.vec_order = order;
        // SAFETY: as above.
        unsafe {
            generated::bpf_loop(
                OUTER as u32 - 1,
                scan_vecs as *mut core::ffi::c_void,
                (&mut ctx as *mut LoopCtx).cast(),
                0,
            )
        };
        order += 1;
    }
    sc.entries_ptr != 0
}

/// Finds the value of the header named `want` (11 bytes) in the `HeaderMap` inside the struct
/// at `base` (its first `window` words; 0: 16), scanning its entries ([`map_entries`]) for the
/// name's `Bytes`, then for the value's. Sets `value_ptr`/`value_len`, and `array` (the
/// entries).
#[inline(never)]
fn find_value(s: *mut GrpcScratch, base: u64, want: &[u8; 11], min: u64, max: u64) -> bool {
    // SAFETY: per-CPU scratch, one program at a time on this CPU.
    let sc = unsafe { &mut *s };
    sc.value_ptr = 0;
    sc.value_len = 0;
    sc.want[..11].copy_from_slice(want);
    sc.min = min;
    sc.max = max;
    let words = if sc.window == 0 || sc.window > 16 {
        16
    } else {
        sc.window
    };
    if !map_entries(s, base, words) {
        return false;
    }
    let (w, len) = (sc.entries_ptr, sc.entries_len);
    // Only the entries' `len` buckets are scanned: the memory past them (spare capacity, other
    // allocations) may hold stale maps.
    let words = len * BUCKET_WORDS;
    sc.limit = if words > INNER as u64 {
        INNER as u64
    } else {
        words
    };
    // Exactly the live buckets: reading past them may cross into an unmapped page (the
    // allocation ending a heap region), which fails the whole read.
    let size = (sc.limit * 8) as u32;
    // SAFETY: reading a local (kept opaque so the bounds below reach the verifier).
    let size = unsafe { core::ptr::read_volatile(&size) };
    if size == 0 || size > (INNER * 8) as u32 {
        return false;
    }
    // SAFETY: `size` is at most the size of `inner`.
    let rc = unsafe {
        generated::bpf_probe_read_user(
            sc.inner.as_mut_ptr().cast(),
            size,
            w as *const core::ffi::c_void,
        )
    };
    if rc != 0 {
        return false;
    }
    sc.array = w;
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
    sc.value_ptr != 0
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

/// Words of a `HeaderMap` on 64-bit targets in the process `tgid`: 12 up to `http` 1.5, 6 from
/// 1.6 (which boxes its rarely used fields).
#[inline(always)]
fn map_words(tgid: u32) -> u64 {
    if flags(tgid) & TargetConfig::FLAG_RUST_HTTP_COLD_MAP != 0 {
        6
    } else {
        12
    }
}

/// The `grpc-status` in the `HeaderMap` at `map`, looking at the map's own words only (what
/// follows it may be a stale map's).
#[inline(always)]
fn map_status(s: *mut GrpcScratch, map: u64) -> i32 {
    let words = map_words((bpf_get_current_pid_tgid() >> 32) as u32);
    // SAFETY: per-CPU scratch.
    unsafe { (*s).window = words };
    let code = grpc_status(s, map);
    // SAFETY: per-CPU scratch.
    unsafe { (*s).window = 0 };
    code
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
    let words = map_words((bpf_get_current_pid_tgid() >> 32) as u32);
    // SAFETY: per-CPU scratch.
    unsafe { (*s).window = words };
    let found = find_value(s, fields, b"traceparent", 55, 128);
    // SAFETY: per-CPU scratch.
    unsafe { (*s).window = 0 };
    if found {
        parse_incoming(s);
    }
}

/// Parses the `traceparent` value found by [`find_value`] into the server record. Apart from the
/// search: the parser's stack frame and the search's calls would not fit the 512-byte stack
/// together.
#[inline(never)]
fn parse_incoming(s: *mut GrpcScratch) {
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

/// h2's `store::Ptr` (or `OpaqueStreamRef`) at `at`: its pointer (the connection's `Store`, or
/// its shared state) and its `Key`'s stream id. A `Key` is two `u32`, the slab index then the
/// stream id, as h2 0.4 declares them (rustc keeps the order of same-sized fields); the slab
/// index may equal another stream's id, so it is never taken for one.
#[inline(always)]
fn stream_ptr(at: u64) -> Option<(u64, u32)> {
    let [a, b] = read::user::<[u64; 2]>(at).ok()?;
    let (store, key) = if user_ptr(a) && a & 7 == 0 {
        (a, b)
    } else if user_ptr(b) && b & 7 == 0 {
        (b, a)
    } else {
        return None;
    };
    Some((store, (key >> 32) as u32))
}

/// `<h2::proto::streams::streams::OpaqueStreamRef as Clone>::clone(&self)` entry: a stream
/// handle is cloned. On a connection's task, for a stream received there and not yet
/// accepted, that is the accept (h2's `poll_accept` clones the handle for the request body;
/// fat LTO inlines `next_incoming` into it): the RPC is filed for the task spawned next.
#[uprobe]
pub fn rust_h2_stream_clone(ctx: ProbeContext) -> u32 {
    let _ = try_stream_clone(&ctx);
    0
}

fn try_stream_clone(ctx: &ProbeContext) -> Option<()> {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if flags(tgid) & TargetConfig::FLAG_RUST_GRPC_SERVER == 0 {
        return None;
    }
    let task = task::current();
    if task == 0 {
        return None;
    }
    let (_, stream_id) = stream_ptr(sarg(ctx, 0))?;
    let key = RustH2Key {
        tgid,
        stream_id,
        conn: task,
    };
    // SAFETY: copied out at once.
    let conn = unsafe { RUST_H2_TASK_STREAMS.get(&key) }.copied()?;
    // Accepted once: later clones of its handle are not accepts.
    let _ = RUST_H2_TASK_STREAMS.remove(&key);
    accepted(id, conn, stream_id)
}

/// Files the accepted stream `stream_id` of connection `conn` for the task spawned next on
/// this thread, if it is an RPC in flight.
#[inline(always)]
fn accepted(id: u64, conn: u64, stream_id: u32) -> Option<()> {
    let key = RustH2Key {
        tgid: (id >> 32) as u32,
        stream_id,
        conn,
    };
    // SAFETY: presence only.
    unsafe { RUST_GRPC_SERVER_INFLIGHT.get(&key) }?;
    let _ = RUST_H2_ACCEPTED.insert(&id, &key, 0);
    Some(())
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
    // For the accept as fat LTO leaves it, which names the connection's task (this one).
    let task = task::current();
    if task != 0 {
        let tk = RustH2Key {
            tgid,
            stream_id,
            conn: task,
        };
        let _ = RUST_H2_TASK_STREAMS.insert(&tk, &conn, 0);
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
    // Option<Key>: a tag word, then the key's two u32 (slab index, stream id: see
    // [`stream_ptr`]).
    let [tag, _, stream_id] = read::user::<[u32; 3]>(stash.sret).ok()?;
    if tag != 1 {
        return None;
    }
    // SAFETY: copied out at once.
    let delta = unsafe { RUST_H2_DELTA.get(&tgid) }.copied()?;
    accepted(id, stash.conn.wrapping_add(delta), stream_id)
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
    let task: u64 = ctx.arg(1)?;
    if !user_ptr(task) {
        return None;
    }
    // A new task at this address: calls an earlier task there left unended (dropped futures)
    // are not its calls.
    let fresh = RustPtrKey {
        tgid: (id >> 32) as u32,
        _pad: 0,
        ptr: task,
    };
    let _ = RUST_GRPC_TASK_CALLS.remove(&fresh);
    let _ = RUST_GRPC_CALLS.remove(&fresh);
    let key = take(&RUST_H2_ACCEPTED, &id)?;
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
    let _ = try_end(sarg(&ctx, 0) & 0xffff_ffff, sarg(&ctx, 1), true);
    0
}

/// `h2::server::Peer::convert_send_message(stream_id, response, end_of_stream)` entry, on the
/// stream's task: a response's HEADERS are built; a `grpc-status` among them (a trailers-only
/// response) ends the RPC.
#[uprobe]
pub fn rust_h2_server_response(ctx: ProbeContext) -> u32 {
    // Only a response that ends the stream (a trailers-only response) carries the status.
    if sarg(&ctx, 2) & 0xff != 0 {
        let _ = try_end(sarg(&ctx, 0) & 0xffff_ffff, sarg(&ctx, 1), false);
    }
    0
}

/// `h2::server::SendResponse::send_response(&mut self, response, end_of_stream)` entry, on the
/// stream's task (what fat LTO leaves of `convert_send_message`): as
/// [`rust_h2_server_response`], the stream known by the task alone.
#[uprobe]
pub fn rust_h2_send_response(ctx: ProbeContext) -> u32 {
    if sarg(&ctx, 2) & 0xff != 0 {
        let _ = try_end(ANY_STREAM, sarg(&ctx, 1), false);
    }
    0
}

/// `tonic::status::Status::add_header(&self, &mut HeaderMap)` entry, on the stream's task (what
/// fat LTO leaves where h2's `Headers::trailers` and `convert_send_message` are inlined: tonic
/// writes every status it sends, in trailers or a trailers-only response, with it): the map,
/// for the return.
#[uprobe]
pub fn rust_grpc_trailers_entry(ctx: ProbeContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let f = flags(tgid);
    if f & TargetConfig::FLAG_RUST_GRPC_SERVER == 0 {
        return 0;
    }
    let (first, second): (u64, u64) = (ctx.arg(1).unwrap_or(0), sarg(&ctx, 1));
    // SAFETY: reading locals. Volatile keeps both context loads ahead of the choice: the
    // verifier refuses a context access at a computed offset.
    let (first, second) = unsafe {
        (
            core::ptr::read_volatile(&first),
            core::ptr::read_volatile(&second),
        )
    };
    // tonic before 0.14 returns its `Result<(), Status>` through the hidden pointer.
    let map = if f & TargetConfig::FLAG_RUST_TONIC_STATUS_BY_VALUE != 0 {
        second
    } else {
        first
    };
    let _ = RUST_GRPC_TRAILERS_SRET.insert(&bpf_get_current_pid_tgid(), &map, 0);
    0
}

/// `Status::add_header` return: the map now holds the `grpc-status` sent, which ends the stream
/// task's RPC.
#[uretprobe]
pub fn rust_grpc_trailers(_ctx: RetProbeContext) -> u32 {
    if let Some(at) = take(&RUST_GRPC_TRAILERS_SRET, &bpf_get_current_pid_tgid()) {
        let _ = try_end(ANY_STREAM, at, true);
    }
    0
}

/// [`try_end`]'s stream id when the probed function does not get one.
const ANY_STREAM: u64 = u64::MAX;

/// Ends the RPC of the current (stream) task with the `grpc-status` in the `HeaderMap` inside
/// the struct at `fields` (`map`: the map itself), if there is one; `stream_id` (unless
/// [`ANY_STREAM`]: a plain integer, as an `Option` would leave a register unset, which the
/// verifier refuses) must be the task's stream.
fn try_end(stream_id: u64, fields: u64, map: bool) -> Option<()> {
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
    if stream_id != ANY_STREAM && stream_id != key.stream_id as u64 {
        return None;
    }
    let s = scratch()?;
    let status = if map {
        map_status(s, fields)
    } else {
        grpc_status(s, fields)
    };
    if status == RUST_GRPC_STATUS_NONE {
        // Response HEADERS of a response whose status comes in its trailers.
        return None;
    }
    let _ = RUST_GRPC_TASK_STREAM.remove(&tk);
    let _ = RUST_TASK_SPANS.remove(&tk);
    end_server(&key, status)
}

/// Sends the server RPC `key` with status `status`, if it is in flight.
#[inline(always)]
fn end_server(key: &RustH2Key, status: i32) -> Option<()> {
    // SAFETY: the value stays valid while this program runs.
    let Some(inflight) = (unsafe { RUST_GRPC_SERVER_INFLIGHT.get(key) }) else {
        count(Counter::RustServerUnmatched);
        return None;
    };
    let Some(mut entry) = EVENTS.reserve::<RustGrpcServerEvent>(0) else {
        count(Counter::RingBufferFull);
        let _ = RUST_GRPC_SERVER_INFLIGHT.remove(key);
        return None;
    };
    // SAFETY: `reserve` returned room for one event; it is overwritten whole.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    *ev = *inflight;
    ev.status = status;
    // SAFETY: plain helper call.
    ev.header.end_ns = unsafe { bpf_ktime_get_ns() };
    // The stream's task (its status) and the connection's (the client's reset) may end it at
    // once, on two CPUs: whichever removes it sends it.
    if RUST_GRPC_SERVER_INFLIGHT.remove(key).is_err() {
        entry.discard(0);
        return None;
    }
    entry.submit(wakeup_flags());
    Some(())
}

/// The status a server RPC ends with when its client resets the stream first: Cancelled, as
/// gRPC servers report it.
const CANCELLED: i32 = 1;

/// Reset pass, pair `n` of the argument registers (eight slots, the last two zero): an odd
/// stream id (a stream the client opened) and a connection that name a server RPC in flight
/// are the reset RPC's.
#[inline(never)]
extern "C" fn scan_reset(n: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the `LoopCtx` passed by `try_recv_reset`.
    let s = unsafe { &mut *(*ctx.cast::<LoopCtx>()).s };
    let (stream_id, conn) = (s.regs[(n >> 3) as usize & 7], s.regs[n as usize & 7]);
    if stream_id & 1 == 0 || stream_id >= 1 << 31 || !user_ptr(conn) || conn & 7 != 0 {
        return 0;
    }
    s.reset_key.stream_id = stream_id as u32;
    s.reset_key.conn = conn;
    // SAFETY: copied out at once.
    match unsafe { RUST_GRPC_SERVER_INFLIGHT.get(&s.reset_key) } {
        // `| 1`: found, with or without a task (0 before the stream is accepted).
        Some(e) => {
            s.reset_task = e.task | 1;
            1
        }
        None => 0,
    }
}

/// `h2::proto::streams::recv::Recv::recv_reset(&mut self, frame: Reset, stream, counts)` entry,
/// on the connection's task: the peer reset a stream. A server RPC still in flight there (its
/// status not sent) was cancelled by its client; it ends Cancelled. The arguments are found by
/// value, not position: the `Reset` frame comes as two `u32` registers (stream id, reason), and
/// fat LTO drops the unused `self`, which moves the rest; the (connection, stream id) pair
/// among them that names an RPC in flight is the one.
#[uprobe]
pub fn rust_h2_recv_reset(ctx: ProbeContext) -> u32 {
    let _ = try_recv_reset(&ctx);
    0
}

fn try_recv_reset(ctx: &ProbeContext) -> Option<()> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if flags(tgid) & TargetConfig::FLAG_RUST_GRPC_SERVER == 0 {
        return None;
    }
    let s = scratch()?;
    // SAFETY: per-CPU scratch.
    let sc = unsafe { &mut *s };
    sc.regs = [
        ctx.arg(0).unwrap_or(0),
        ctx.arg(1).unwrap_or(0),
        ctx.arg(2).unwrap_or(0),
        ctx.arg(3).unwrap_or(0),
        ctx.arg(4).unwrap_or(0),
        ctx.arg(5).unwrap_or(0),
        0,
        0,
    ];
    sc.reset_task = 0;
    sc.reset_key = RustH2Key {
        tgid,
        stream_id: 0,
        conn: 0,
    };
    let mut ctx = LoopCtx { s };
    // SAFETY: the callback only reads `ctx` and writes the scratch it points to.
    unsafe {
        generated::bpf_loop(
            64,
            scan_reset as *mut core::ffi::c_void,
            (&mut ctx as *mut LoopCtx).cast(),
            0,
        )
    };
    let (task, key) = (sc.reset_task, sc.reset_key);
    if task == 0 {
        return None;
    }
    // The stream's task, if it was spawned (`| 1` marked the find), no longer serves it.
    let tk = RustPtrKey {
        tgid,
        _pad: 0,
        ptr: task & !1,
    };
    let _ = RUST_GRPC_TASK_STREAM.remove(&tk);
    let _ = RUST_TASK_SPANS.remove(&tk);
    end_server(&key, CANCELLED)
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
    let key = task_key()?;
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
    ev.task = key.ptr;
    ev.status = RUST_GRPC_STATUS_NONE;
    ev.stream_id = 0;
    copy_str(pp, pl, &mut ev.method);
    ev.authority.len = 0;
    match task::span_of(tgid, key.ptr) {
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
    if RUST_GRPC_CALLS.insert(&key, &*ev, 0).is_err() {
        count(Counter::InflightInsertFailed);
        return None;
    }
    // SAFETY: copied out at once.
    let n = unsafe { RUST_GRPC_TASK_CALLS.get(&key) }
        .copied()
        .unwrap_or(0);
    let flag = if n & 0xffff_ffff != 0 { AMBIGUOUS } else { 0 };
    let _ = RUST_GRPC_TASK_CALLS.insert(&key, &((n + 1) | flag), 0);
    let _ = RUST_GRPC_SRET.insert(&bpf_get_current_pid_tgid(), &sret(ctx), 0);
    Some(())
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
    let key = task_key()?;
    // The call this thread just prepared is its task's latest.
    // SAFETY: valid while this program runs.
    let call = unsafe { RUST_GRPC_CALLS.get(&key) }?;
    let s = scratch()?;
    if !map_entries(s, request, OUTER as u64) {
        return None;
    }
    // SAFETY: per-CPU scratch.
    let ptr = unsafe { (*s).entries_ptr };
    let _ = RUST_GRPC_CALL_HEADERS.insert(&RustPtrKey { tgid, _pad: 0, ptr }, call, 0);
    Some(())
}

/// `h2::client::Peer::convert_send_message(stream_id, request, protocol, end_of_stream)` entry,
/// on the connection's task: the request of a call is about to be written; its stream id and
/// `:authority` go to the call, which is filed by stream for its status.
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
    if !map_entries(s, request, OUTER as u64) {
        return None;
    }
    let k = RustPtrKey {
        tgid,
        _pad: 0,
        // SAFETY: per-CPU scratch.
        ptr: unsafe { (*s).entries_ptr },
    };
    // SAFETY: copied out at once (into the scratch: the event does not fit the stack).
    let call = unsafe { RUST_GRPC_CALL_HEADERS.get(&k) }?;
    // SAFETY: per-CPU scratch.
    unsafe { (*s).client = *call };
    let _ = RUST_GRPC_CALL_HEADERS.remove(&k);
    if !pseudo(s, request, OUTER as u32) {
        return None;
    }
    // SAFETY: per-CPU scratch.
    let sc = unsafe { &mut *s };
    let (ap, al) = (sc.auth_ptr, sc.auth_len);
    let call = &mut sc.client;
    call.stream_id = stream_id;
    copy_str(ap, al, &mut call.authority);
    let task = call.task;
    let sk = RustH2Key {
        tgid,
        stream_id,
        conn: task,
    };
    if RUST_GRPC_STREAM_CALLS.insert(&sk, &*call, 0).is_err() {
        count(Counter::InflightInsertFailed);
    }
    // The task's latest call, if this is it, learns the same (for a failure after the write).
    let tk = RustPtrKey {
        tgid,
        _pad: 0,
        ptr: task,
    };
    if let Some(latest) = RUST_GRPC_CALLS.get_ptr_mut(&tk) {
        // SAFETY: the value stays valid while this program runs.
        unsafe {
            if (*latest).trace.span_id == call.trace.span_id {
                (*latest).stream_id = stream_id;
                (*latest).authority = call.authority;
            }
        }
    }
    Some(())
}

/// Files the stream (`ids`: both `u32` of its key) of a received response `HeaderMap` at `map`,
/// if it holds a `grpc-status`, by the map's entries.
#[inline(always)]
fn file_status(map: u64, stream_id: u32) -> Option<()> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if flags(tgid) & TargetConfig::FLAG_RUST_GRPC_CLIENT == 0 {
        return None;
    }
    let s = scratch()?;
    if map_status(s, map) == RUST_GRPC_STATUS_NONE {
        return None;
    }
    let value = stream_id as u64;
    // SAFETY: per-CPU scratch.
    let ptr = unsafe { (*s).array };
    let _ = RUST_GRPC_STATUS_STREAMS.insert(&RustPtrKey { tgid, _pad: 0, ptr }, &value, 0);
    Some(())
}

/// `h2::proto::streams::recv::Recv::recv_headers(&mut self, frame, stream, counts)` and
/// `Recv::recv_trailers(&mut self, frame, stream)` entry, on the connection's task: a stream's
/// response HEADERS or trailers were decoded; the stream of a `grpc-status` among them (in
/// trailers, or a trailers-only response) is filed. The frame (`frame::Headers`) starts with
/// its header block, which starts with the `HeaderMap` (h2 0.4); `stream` is a `store::Ptr`.
/// (A server's request HEADERS pass here too: they hold no `grpc-status`.)
#[uprobe]
pub fn rust_grpc_response_recv(ctx: ProbeContext) -> u32 {
    if let Some((_, stream_id)) = stream_ptr(sarg(&ctx, 2)) {
        let _ = file_status(sarg(&ctx, 1), stream_id);
    }
    0
}

/// The current task's key.
#[inline(always)]
fn task_key() -> Option<RustPtrKey> {
    let task = task::current();
    (task != 0).then(|| RustPtrKey {
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        _pad: 0,
        ptr: task,
    })
}

/// The current task's key, if it has calls in flight.
#[inline(always)]
fn calling_task() -> Option<RustPtrKey> {
    let key = task_key()?;
    // SAFETY: presence only.
    unsafe { RUST_GRPC_TASK_CALLS.get(&key) }?;
    Some(key)
}

/// `tonic::status::Status::from_header_map(&HeaderMap)` entry, on the caller's task: a
/// response's headers or trailers are read; a `grpc-status` among them ends the call of the
/// stream they came from.
#[uprobe]
pub fn rust_grpc_status_map(ctx: ProbeContext) -> u32 {
    let _ = try_status_map(&ctx);
    0
}

fn try_status_map(ctx: &ProbeContext) -> Option<()> {
    let key = calling_task()?;
    // tonic before 0.14 returns the status by value (through the hidden pointer); later
    // releases box it, and the map is the first argument.
    let (first, second): (u64, u64) = (ctx.arg(0)?, sarg(ctx, 0));
    // SAFETY: reading locals. Volatile keeps both context loads ahead of the choice: the
    // verifier refuses a context access at a computed offset.
    let (first, second) = unsafe {
        (
            core::ptr::read_volatile(&first),
            core::ptr::read_volatile(&second),
        )
    };
    let map = if flags(key.tgid) & TargetConfig::FLAG_RUST_TONIC_STATUS_BY_VALUE != 0 {
        second
    } else {
        first
    };
    let s = scratch()?;
    let code = map_status(s, map);
    if code == RUST_GRPC_STATUS_NONE {
        // Response headers of a call whose status comes in its trailers.
        return None;
    }
    // The stream the map came from, filed by the same heap array on the connection's task.
    let k = RustPtrKey {
        tgid: key.tgid,
        _pad: 0,
        // SAFETY: per-CPU scratch.
        ptr: unsafe { (*s).array },
    };
    // SAFETY: copied out at once.
    let ids = unsafe { RUST_GRPC_STATUS_STREAMS.get(&k) }
        .copied()
        .unwrap_or(0);
    // A map h2 did not hand over with a status (its array was not filed) is not trusted: what
    // the search finds in it may be a stale map's.
    if ids == 0 {
        return None;
    }
    let _ = RUST_GRPC_STATUS_STREAMS.remove(&k);
    if end_stream_call(&key, ids as u32, code).is_some() {
        return Some(());
    }
    // A call whose request was not paired with its stream: the task's, if it has one only.
    end_task_call(&key, code)
}

/// `tonic::status::Code::from_bytes(&[u8])` entry, on the caller's task (where tonic's
/// `from_header_map` is inlined): the `grpc-status` the task's call ended with is parsed.
#[uprobe]
pub fn rust_grpc_status(ctx: ProbeContext) -> u32 {
    let _ = try_status(&ctx);
    0
}

fn try_status(ctx: &ProbeContext) -> Option<()> {
    let key = calling_task()?;
    let (ptr, len): (u64, u64) = (ctx.arg(0)?, ctx.arg(1)?);
    end_task_call(&key, parse_code(ptr, len))
}

/// Where tonic keeps a status's code (a one-byte `Code`) in the process `tgid`: after the four
/// word-aligned fields of tonic 0.12–0.14's status, which rustc orders first: message
/// `String` (3 words), details `Bytes` (4), metadata `HeaderMap` ([`map_words`]), source
/// `Option<Arc<dyn Error>>` (2): byte 168 up to `http` 1.5, 120 from 1.6.
#[inline(always)]
fn status_code_offset(tgid: u32) -> u64 {
    (3 + 4 + map_words(tgid) + 2) * 8
}

/// `tonic::status::Status::from_error(Box<dyn Error>)` (and `try_from_error`) entry, on the
/// caller's task: the call failed without a `grpc-status` (connection refused, deadline,
/// reset). The hidden return pointer (where tonic before 0.14 writes the status it returns by
/// value) is kept for the return.
#[uprobe]
pub fn rust_grpc_error_entry(ctx: ProbeContext) -> u32 {
    if calling_task().is_some() {
        let _ = RUST_GRPC_SRET.insert(&bpf_get_current_pid_tgid(), &sret(&ctx), 0);
    }
    0
}

/// `Status::from_error` return: the status tonic made of the error (Unavailable for a refused
/// connection, Cancelled for a deadline it enforced) ends the task's call.
#[uretprobe]
pub fn rust_grpc_error(ctx: RetProbeContext) -> u32 {
    let _ = try_error(&ctx, false);
    0
}

/// `Status::try_from_error(Box<dyn Error>) -> Result<Status, Box<dyn Error>>` return (tonic
/// before 0.14, where fat LTO inlines `from_error` into its callers): as [`rust_grpc_error`]; an `Err`
/// (the code byte holding the `Result`'s niche) is what `from_error` makes Unknown.
#[uretprobe]
pub fn rust_grpc_try_error(ctx: RetProbeContext) -> u32 {
    let _ = try_error(&ctx, true);
    0
}

/// Ends the task's call with the code of the status a `from_error` (`result`: a
/// `try_from_error`) returned.
fn try_error(ctx: &RetProbeContext, result: bool) -> Option<()> {
    // Taken once: `from_error` calls `try_from_error`, whose return comes first.
    let sret = take(&RUST_GRPC_SRET, &bpf_get_current_pid_tgid())?;
    let key = calling_task()?;
    // tonic 0.14 and later return the status boxed (the box's address is the return value);
    // earlier releases write it at the hidden pointer (aarch64 does not return that pointer).
    let status = if result || flags(key.tgid) & TargetConfig::FLAG_RUST_TONIC_STATUS_BY_VALUE != 0 {
        sret
    } else {
        ctx.ret::<u64>()
    };
    let code = read::user::<u8>(status + status_code_offset(key.tgid)).ok()?;
    let code = match code {
        0..=16 => code as i32,
        _ if result => 2,
        _ => {
            // Not a code: the layout is not the one expected. No span rather than a wrong one.
            count(Counter::RustClientUnmatched);
            return None;
        }
    };
    end_task_call(&key, code)
}

/// Ends the call written on stream `stream_id` by the task at `key`, if there is one.
#[inline(always)]
fn end_stream_call(key: &RustPtrKey, stream_id: u32, code: i32) -> Option<()> {
    let sk = RustH2Key {
        tgid: key.tgid,
        stream_id,
        conn: key.ptr,
    };
    // SAFETY: the value stays valid while this program runs.
    let call = unsafe { RUST_GRPC_STREAM_CALLS.get(&sk) }?;
    let span_id = call.trace.span_id;
    emit_call(call, code);
    let _ = RUST_GRPC_STREAM_CALLS.remove(&sk);
    call_ended(key);
    // SAFETY: copied out at once.
    let latest = unsafe { RUST_GRPC_CALLS.get(key) }.map(|c| c.trace.span_id);
    if latest == Some(span_id) {
        let _ = RUST_GRPC_CALLS.remove(key);
    }
    Some(())
}

/// One call of the task at `key` ended; returns whether its calls could not be told apart.
#[inline(always)]
fn call_ended(key: &RustPtrKey) -> bool {
    // SAFETY: copied out at once.
    let n = unsafe { RUST_GRPC_TASK_CALLS.get(key) }
        .copied()
        .unwrap_or(0);
    if n & 0xffff_ffff > 1 {
        let _ = RUST_GRPC_TASK_CALLS.insert(key, &(n - 1), 0);
    } else {
        let _ = RUST_GRPC_TASK_CALLS.remove(key);
    }
    n & AMBIGUOUS != 0
}

/// Ends the task's call with `code`, a status not tied to a stream: only when the task's calls
/// can be told apart (with two in flight, which one it ends is unknown: none gets it).
#[inline(always)]
fn end_task_call(key: &RustPtrKey, code: i32) -> Option<()> {
    if call_ended(key) {
        count(Counter::RustClientUnmatched);
        return None;
    }
    // SAFETY: the value stays valid while this program runs.
    let call = unsafe { RUST_GRPC_CALLS.get(key) }?;
    emit_call(call, code);
    if call.stream_id != 0 {
        let _ = RUST_GRPC_STREAM_CALLS.remove(&RustH2Key {
            tgid: key.tgid,
            stream_id: call.stream_id,
            conn: key.ptr,
        });
    }
    let _ = RUST_GRPC_CALLS.remove(key);
    Some(())
}

/// Sends `call` with status `code`.
#[inline(always)]
fn emit_call(call: &RustGrpcClientEvent, code: i32) {
    let Some(mut entry) = EVENTS.reserve::<RustGrpcClientEvent>(0) else {
        count(Counter::RingBufferFull);
        return;
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
}
