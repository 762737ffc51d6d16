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

use aya_ebpf::{
    bindings::sk_msg_md, helpers::generated, macros::map, maps::PerCpuArray, programs::SkMsgContext,
};
use spanhook_common::h2::CORKED_CUT_HEADER;
use spanhook_common::{
    h2::{
        FLAG_END_HEADERS, FLAG_PADDED, FRAME_HEADERS, FRAME_HEADER_LEN, HPACK_TRACEPARENT_LEN,
        MAX_FRAME_PAYLOAD,
    },
    ConnKey, Counter, H2ConnState, H2StreamKey,
};

use crate::{
    emit::count,
    maps::H2_PENDING,
    traceparent::{header_line, HEADER_LINE_LEN},
};

/// Frames walked in one write at most: more than grpc-go's 32 KiB buffer can hold (a frame
/// is at least its 9-byte header). A write with more loses the framing until a hint or a
/// write of whole frames brings it back.
const MAX_FRAMES: u32 = 4096;
/// HEADERS frames noted in one write at most (a power of two, for the index mask); the
/// field is added to the first ones.
const MAX_HEADERS: u32 = 1024;
/// A queued value older than this is dropped rather than written.
const STALE_NS: u64 = 10_000_000_000;

/// `H2Walk::outcome` while walking, and its results.
const WALKING: u32 = 0;
const WALKED: u32 = 1;
const LOST: u32 = 2;

/// One write's walk. It lives in map memory, which the verifier does not track, so each
/// `bpf_loop` body is checked once rather than once per frame.
#[repr(C)]
pub struct H2Walk {
    /// Bytes in the write (grows as fields are added).
    size: u32,
    /// Offset of the next frame header.
    at: u32,
    /// Bytes of the last frame beyond the write, once walked.
    rest: u32,
    /// [`WALKING`], [`WALKED`] or [`LOST`].
    outcome: u32,
    /// HEADERS frames noted in `headers`.
    count: u32,
    /// Next entry of `headers` to handle.
    next: u32,
    /// Bytes added so far, which shift the frames after them.
    grown: u32,
    /// What the write ends inside of: the stream of a HEADERS frame that could take a field,
    /// [`CORKED_CUT_HEADER`] for a cut frame header, 0 otherwise.
    split_stream: u32,
    /// Offset of that frame.
    split_at: u32,
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

/// One frame header.
struct Frame {
    len: u32,
    ty: u8,
    flags: u8,
    stream: u32,
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
    // A hint is good for one write: the one the client probe saw coming.
    let (hint_at, hint_stream) = (st.hint_at, st.hint_stream);
    st.hint_stream = 0;
    // Where the first frame header is, and whether that is known rather than guessed.
    let (start, known) = if st.corked_stream != 0 {
        // The bytes held back, and now more: the same frame must be where it was.
        let (stream, at) = (st.corked_stream, st.corked_at);
        st.corked_stream = 0;
        let same = frame_at(ctx, at).is_some_and(|f| {
            plausible(&f)
                && (stream == CORKED_CUT_HEADER || (f.ty == FRAME_HEADERS && f.stream == stream))
        });
        if !same {
            // The kernel sent the bytes without holding them (its message was full).
            st.synced = 0;
            count(Counter::H2FramingLost);
            return;
        }
        (st.corked_start, true)
    } else if st.synced != 0 {
        if st.skip >= size {
            st.skip -= size;
            return;
        }
        (st.skip, true)
    } else if hint_stream != 0 {
        let hinted = hint_at < size
            && frame_at(ctx, hint_at)
                .is_some_and(|f| f.ty == FRAME_HEADERS && f.stream == hint_stream && plausible(&f));
        (if hinted { hint_at } else { 0 }, hinted)
    } else {
        (0, false)
    };
    // SAFETY: per-CPU scratch, one program at a time on this CPU.
    unsafe {
        (*walk).size = size;
        (*walk).at = start;
        (*walk).rest = 0;
        (*walk).outcome = WALKING;
        (*walk).count = 0;
        (*walk).next = 0;
        (*walk).grown = 0;
        (*walk).split_stream = 0;
        (*walk).split_at = 0;
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
    let (outcome, rest, split_stream, split_at) = unsafe {
        (
            (*walk).outcome,
            (*walk).rest,
            (*walk).split_stream,
            (*walk).split_at,
        )
    };
    if (outcome == WALKED || split_stream == CORKED_CUT_HEADER)
        && known
        && worth_holding(conn, split_stream)
    {
        let until = if split_stream == CORKED_CUT_HEADER {
            split_at + FRAME_HEADER_LEN as u32
        } else {
            size + rest
        };
        st.corked_stream = split_stream;
        st.corked_at = split_at;
        st.corked_start = start;
        // SAFETY: plain helper call on the program's own message.
        unsafe { generated::bpf_msg_cork_bytes(ctx.msg, until) };
        return;
    }
    match outcome {
        // A guessed start is confirmed by frames that end exactly with the write.
        WALKED if rest == 0 => {
            st.synced = 1;
            st.skip = 0;
            st.hint_stream = 0;
        }
        // Ends inside a frame: trusted only when the walk started from a known boundary.
        WALKED if known => {
            st.synced = 1;
            st.skip = rest;
        }
        _ => {
            st.synced = 0;
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

/// `bpf_loop` body: reads the frame header at `walk.at`, notes a HEADERS frame that could take
/// a field, and moves to the next frame; stops at the end of the write or on an implausible or
/// cut header (the walk then ends [`LOST`], as it does when the frames outnumber the loop).
#[inline(never)]
extern "C" fn follow_frame(_index: u64, lctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `lctx` is the `LoopCtx` of `on_write`, its scratch per-CPU.
    let (msg, w) = unsafe {
        let l = &*lctx.cast::<LoopCtx>();
        (l.msg, &mut *l.walk)
    };
    let ctx = SkMsgContext::new(msg);
    let (at, size) = (w.at, w.size);
    if at == size {
        w.outcome = WALKED;
        return 1;
    }
    if size - at < FRAME_HEADER_LEN as u32 {
        // The write ends inside a frame header: where the frame ends is not known yet.
        w.split_stream = CORKED_CUT_HEADER;
        w.split_at = at;
        w.outcome = LOST;
        return 1;
    }
    let Some(f) = frame_at(&ctx, at).filter(plausible) else {
        w.outcome = LOST;
        return 1;
    };
    let end = at as u64 + FRAME_HEADER_LEN as u64 + f.len as u64;
    let takes_field =
        f.ty == FRAME_HEADERS && f.flags & FLAG_END_HEADERS != 0 && f.flags & FLAG_PADDED == 0;
    if takes_field && end <= size as u64 {
        let n = w.count;
        if n < MAX_HEADERS {
            w.headers[(n & (MAX_HEADERS - 1)) as usize] = at;
            w.count = n + 1;
        }
    }
    if end >= size as u64 {
        w.rest = (end - size as u64) as u32;
        if takes_field && end > size as u64 {
            w.split_stream = f.stream;
            w.split_at = at;
        }
        w.outcome = WALKED;
        return 1;
    }
    w.at = end as u32;
    0
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

/// Whether the write is worth holding back for what it ends inside of: a cut frame header
/// (else the framing is lost), or a HEADERS frame with a field queued for its stream.
#[inline(always)]
fn worth_holding(conn: &ConnKey, split_stream: u32) -> bool {
    match split_stream {
        0 => false,
        CORKED_CUT_HEADER => true,
        stream => {
            let key = H2StreamKey {
                conn: *conn,
                stream_id: stream,
                _pad: 0,
            };
            // SAFETY: only whether the entry exists is used.
            unsafe { H2_PENDING.get(&key) }.is_some()
        }
    }
}

/// Whether a frame header could be one a client writes (RFC 9113 §6): a defined type, the
/// reserved bit clear, the stream rule and fixed length of its type, no larger than the
/// smallest frame size a peer may allow.
#[inline(always)]
fn plausible(f: &Frame) -> bool {
    if f.len > MAX_FRAME_PAYLOAD || f.stream & 0x8000_0000 != 0 {
        return false;
    }
    match f.ty {
        // DATA, HEADERS, CONTINUATION.
        0 | 1 | 9 => f.stream != 0,
        // PRIORITY.
        2 => f.stream != 0 && f.len == 5,
        // RST_STREAM.
        3 => f.stream != 0 && f.len == 4,
        // SETTINGS.
        4 => f.stream == 0 && f.len % 6 == 0,
        // PING.
        6 => f.stream == 0 && f.len == 8,
        // GOAWAY.
        7 => f.stream == 0 && f.len >= 8,
        // WINDOW_UPDATE.
        8 => f.len == 4,
        // PUSH_PROMISE (servers only) and anything undefined.
        _ => false,
    }
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
fn frame_at(ctx: &SkMsgContext, at: u32) -> Option<Frame> {
    let p = window(ctx, at, FRAME_HEADER_LEN as u32)?;
    // SAFETY: `window` checked that nine bytes from `p` are inside the message.
    let b = unsafe { core::ptr::read_unaligned(p as *const [u8; FRAME_HEADER_LEN]) };
    Some(Frame {
        len: (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32,
        ty: b[3],
        flags: b[4],
        stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]),
    })
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
    let new_len = f.len + HPACK_TRACEPARENT_LEN as u32;
    if now.saturating_sub(set_ns) > STALE_NS || new_len > MAX_FRAME_PAYLOAD {
        count(Counter::H2InjectionSkipped);
        return false;
    }
    let field = &mut w.field;
    // Literal without indexing, new name (0x00); lengths without Huffman coding.
    field[0] = 0x00;
    field[1] = 11;
    field[2..13].copy_from_slice(b"traceparent");
    field[13] = 55;
    // The value is the header line's between "traceparent: " and CRLF.
    field[14..].copy_from_slice(&w.line[13..68]);
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
    // SAFETY: `window` checked that three bytes from `h` are inside the message.
    unsafe {
        *(h as *mut u8) = (new_len >> 16) as u8;
        *((h + 1) as *mut u8) = (new_len >> 8) as u8;
        *((h + 2) as *mut u8) = new_len as u8;
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
