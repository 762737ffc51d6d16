//! `traceparent` in the HEADERS frames of HTTP/2 client connections (grpc-go with
//! `--propagate`).
//!
//! A connection is followed from the first time a client probe queues a value for one of its
//! streams (`H2_CONNS`). Every write on it is then walked frame header by frame header, and
//! how much of a frame the next write starts with is remembered, so the program knows where
//! frames begin even when a write ends inside one (grpc-go flushes its 32 KiB buffer
//! wherever it fills). A connection that predates the agent, or one whose walk was cut
//! short, is picked up again from a boundary the client probe saw coming (where grpc-go
//! was about to buffer a HEADERS frame: `H2ConnState::hint_at`), or at the first write that
//! is a whole number of plausible frames.
//!
//! A HEADERS frame whose stream has a queued value (`H2_PENDING`) and whose block ends in it
//! (END_HEADERS, no padding) gets the field appended to its block and its length grown to
//! match. The field is an HPACK literal that is not indexed, so neither end's dynamic table
//! changes. Growing a frame means changing its header and its end in one write, so a write
//! that ends inside such a frame, or inside any frame's header (its length unknown), is held
//! back with `bpf_msg_cork_bytes` until the application's next write completes it; the
//! kernel then runs the program again over the bytes held and the new ones together.
//! grpc-go always writes the rest soon: it flushes its buffer at the end of every batch.
//!
//! The decisions — where a write's walk starts, each frame, what a walked write leads to, the
//! field's bytes — are `spanhook_common::h2`'s, shared with the `h2_hpack` fuzz target; this
//! file adds what needs helpers (reading and growing the message, the maps, the loops).

use aya_ebpf::{
    bindings::sk_msg_md, helpers::generated, macros::map, maps::PerCpuArray, programs::SkMsgContext,
};
use spanhook_common::{
    h2::{
        encode_field, encode_len, AfterWalk, FrameHeader, FrameWalk, WriteStart, FRAME_HEADER_LEN,
        HPACK_TRACEPARENT_LEN, MAX_FRAMES, MAX_HEADERS,
    },
    ConnKey, Counter, H2ConnState, H2StreamKey,
};

use crate::{
    emit::count,
    maps::H2_PENDING,
    traceparent::{header_line, HEADER_LINE_LEN},
};

/// A queued value older than this is dropped rather than written.
const STALE_NS: u64 = 10_000_000_000;

/// One write's walk. It lives in map memory, which the verifier does not track, so each
/// `bpf_loop` body is checked once rather than once per frame.
#[repr(C)]
pub struct H2Walk {
    /// The walk over the frame headers.
    walk: FrameWalk,
    /// HEADERS frames noted in `headers`.
    count: u32,
    /// Next entry of `headers` to handle.
    next: u32,
    /// Bytes added so far, which shift the frames after them.
    grown: u32,
    _pad: u32,
    /// Offsets of the HEADERS frames that could take a field.
    headers: [u32; MAX_HEADERS as usize],
    /// Room to format a value: the program's stack is too small for it next to the caller's.
    line: [u8; HEADER_LINE_LEN],
    /// The encoded field.
    field: [u8; HPACK_TRACEPARENT_LEN],
}

#[map]
static H2_WALK: PerCpuArray<H2Walk> = PerCpuArray::with_max_entries(1, 0);

/// What the loop bodies get (on the stack, as `bpf_loop` requires).
#[repr(C)]
struct LoopCtx {
    msg: *mut sk_msg_md,
    walk: *mut H2Walk,
    conn: ConnKey,
}

/// Walks one write on a followed connection and adds the queued `traceparent` values.
#[inline(always)]
pub fn on_write(ctx: &SkMsgContext, conn: &ConnKey, state: *mut H2ConnState) {
    // SAFETY: a pointer into the map value; the socket's lock keeps writes on one connection
    // in order, so nothing else touches it meanwhile.
    let st = unsafe { &mut *state };
    let size = ctx.size();
    let Some(walk) = H2_WALK.get_ptr_mut(0) else {
        return;
    };
    let (start, known) = match st.write_start(size, |at| frame_at(ctx, at)) {
        WriteStart::Inside => return,
        WriteStart::Lost => {
            count(Counter::H2FramingLost);
            return;
        }
        WriteStart::At { at, known } => (at, known),
    };
    // SAFETY: per-CPU scratch, one program at a time on this CPU.
    unsafe {
        (*walk).walk = FrameWalk::new(size, start);
        (*walk).count = 0;
        (*walk).next = 0;
        (*walk).grown = 0;
    }
    let mut lctx = LoopCtx {
        msg: ctx.msg,
        walk,
        conn: *conn,
    };
    // SAFETY: the callback reads `lctx` and the scratch it points to.
    unsafe {
        generated::bpf_loop(
            MAX_FRAMES,
            follow_frame as *mut core::ffi::c_void,
            (&mut lctx as *mut LoopCtx).cast(),
            0,
        )
    };
    // SAFETY: as above.
    let walked = unsafe { (*walk).walk };
    match st.after_walk(&walked, start, known, |stream| queued(conn, stream)) {
        AfterWalk::Hold { until } => {
            // SAFETY: plain helper call on the program's own message.
            unsafe { generated::bpf_msg_cork_bytes(ctx.msg, until) };
            return;
        }
        AfterWalk::Synced => {}
        AfterWalk::Lost => {
            count(Counter::H2FramingLost);
            return;
        }
    }
    // SAFETY: as above.
    if unsafe { (*walk).count } == 0 {
        return;
    }
    // SAFETY: as above.
    unsafe {
        generated::bpf_loop(
            MAX_FRAMES,
            add_one as *mut core::ffi::c_void,
            (&mut lctx as *mut LoopCtx).cast(),
            0,
        )
    };
}

/// `bpf_loop` body: one step of the walk ([`FrameWalk::step`]), noting a HEADERS frame that
/// could take a field; stops at the end of the write or on an implausible or cut header (the
/// walk is then lost, as it is when the frames outnumber the loop).
#[inline(never)]
extern "C" fn follow_frame(_index: u64, lctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `lctx` is the `LoopCtx` of `on_write`, its scratch per-CPU.
    let (msg, w) = unsafe {
        let l = &*lctx.cast::<LoopCtx>();
        (l.msg, &mut *l.walk)
    };
    let ctx = SkMsgContext::new(msg);
    let (over, noted) = w.walk.step(|at| frame_at(&ctx, at));
    if let Some(at) = noted {
        let n = w.count;
        if n < MAX_HEADERS {
            w.headers[(n & (MAX_HEADERS - 1)) as usize] = at;
            w.count = n + 1;
        }
    }
    over as i64
}

/// `bpf_loop` body: gives the next noted HEADERS frame its stream's queued field.
#[inline(never)]
extern "C" fn add_one(_index: u64, lctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `lctx` is the `LoopCtx` of `on_write`, its scratch per-CPU.
    let (msg, w, conn) = unsafe {
        let l = &*lctx.cast::<LoopCtx>();
        (l.msg, &mut *l.walk, l.conn)
    };
    let i = w.next;
    if i >= w.count || i >= MAX_HEADERS {
        return 1;
    }
    w.next = i + 1;
    let at = w.headers[(i & (MAX_HEADERS - 1)) as usize].wrapping_add(w.grown);
    let ctx = SkMsgContext::new(msg);
    if add_traceparent(&ctx, &conn, at, w) {
        w.grown += HPACK_TRACEPARENT_LEN as u32;
    }
    0
}

/// Whether a value is queued for `stream` of the connection.
#[inline(always)]
fn queued(conn: &ConnKey, stream: u32) -> bool {
    let key = H2StreamKey {
        conn: *conn,
        stream_id: stream,
        _pad: 0,
    };
    // SAFETY: only whether the entry exists is used.
    unsafe { H2_PENDING.get(&key) }.is_some()
}

/// Makes bytes `[at, at + len)` of the write contiguous and returns where they are.
#[inline(always)]
fn window(ctx: &SkMsgContext, at: u32, len: u32) -> Option<usize> {
    // SAFETY: plain helper call on the program's own context.
    if unsafe { generated::bpf_msg_pull_data(ctx.msg, at, at + len, 0) } != 0 {
        return None;
    }
    let data = ctx.data();
    (data + len as usize <= ctx.data_end()).then_some(data)
}

/// The frame header at `at`, if all of it is in the write.
#[inline(always)]
fn frame_at(ctx: &SkMsgContext, at: u32) -> Option<FrameHeader> {
    let p = window(ctx, at, FRAME_HEADER_LEN as u32)?;
    // SAFETY: `window` checked that nine bytes from `p` are inside the message.
    let b = unsafe { core::ptr::read_unaligned(p as *const [u8; FRAME_HEADER_LEN]) };
    Some(FrameHeader::decode(&b))
}

/// Appends the queued field to the HEADERS frame at `at`, if its stream has one.
#[inline(always)]
fn add_traceparent(ctx: &SkMsgContext, conn: &ConnKey, at: u32, w: &mut H2Walk) -> bool {
    let Some(f) = frame_at(ctx, at) else {
        return false;
    };
    let key = H2StreamKey {
        conn: *conn,
        stream_id: f.stream,
        _pad: 0,
    };
    // SAFETY: used before the entry is removed.
    let Some(pending) = (unsafe { H2_PENDING.get(&key) }) else {
        return false;
    };
    let set_ns = pending.set_ns;
    header_line(&pending.trace, &mut w.line);
    let _ = H2_PENDING.remove(&key);
    // SAFETY: plain helper call.
    let now = unsafe { generated::bpf_ktime_get_ns() };
    let new_len = match f.grown_len() {
        Some(len) if now.saturating_sub(set_ns) <= STALE_NS => len,
        _ => {
            count(Counter::H2InjectionSkipped);
            return false;
        }
    };
    let field = &mut w.field;
    // The value is the header line's between "traceparent: " and CRLF.
    encode_field(&w.line[13..68], field);
    let block_end = at + FRAME_HEADER_LEN as u32 + f.len;
    if ctx
        .push_data(block_end, HPACK_TRACEPARENT_LEN as u32, 0)
        .is_err()
    {
        count(Counter::H2InjectionSkipped);
        return false;
    }
    let Some(p) = window(ctx, block_end, HPACK_TRACEPARENT_LEN as u32) else {
        undo(ctx, block_end);
        return false;
    };
    let mut i = 0;
    while i < HPACK_TRACEPARENT_LEN {
        // SAFETY: `window` checked that the field's bytes from `p` are inside the message.
        unsafe { *((p + i) as *mut u8) = field[i] };
        i += 1;
    }
    let Some(h) = window(ctx, at, 3) else {
        undo(ctx, block_end);
        return false;
    };
    let len = encode_len(new_len);
    // SAFETY: `window` checked that three bytes from `h` are inside the message.
    unsafe {
        *(h as *mut u8) = len[0];
        *((h + 1) as *mut u8) = len[1];
        *((h + 2) as *mut u8) = len[2];
    }
    count(Counter::H2TraceparentInjected);
    true
}

/// Takes the pushed bytes out again, so the frame goes out as it was.
#[inline(always)]
fn undo(ctx: &SkMsgContext, at: u32) {
    let _ = ctx.pop_data(at, HPACK_TRACEPARENT_LEN as u32, 0);
    count(Counter::H2InjectionSkipped);
}
