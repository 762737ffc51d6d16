//! Go `net/http` server: `serverHandler.ServeHTTP` entry and each of its RET instructions.
//!
//! Entry remembers the request, the response writer and the span's trace context, keyed by
//! goroutine; the return reads what the handler produced and sends one record per request.
//! Go moves goroutine stacks, so return probes are plain uprobes on RET instructions, never
//! uretprobes.
//!
//! A `bpf_probe_read_user` costs ≈ 80 ns here whatever its size up to a few hundred bytes,
//! so structs whose fields are all wanted (`http.Request`, `bufio.Reader`) are copied once
//! into per-CPU scratch and their fields picked from the copy ([`Window`]): the return
//! program went from 17 reads to 9 that way.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated},
    macros::uprobe,
    programs::ProbeContext,
};
use spanhook_common::{
    ContextKey, Counter, EventHeader, EventKind, GoField, GoidKey, GoroutineKey, HttpServerEvent,
    HttpServerInflight, Str, TargetConfig, TraceIds,
};

use crate::{
    emit::{count, wakeup_flags},
    go::abi,
    maps::{CONTEXT_SPANS, EVENTS, GOID_SPANS, HTTP_SERVER_INFLIGHT, SCRATCH, TARGETS},
    read,
    traceparent::{self, Incoming},
};

/// Bytes of a struct copied into scratch at most. Every `http.Request` field read here ends
/// within the first 264 bytes on every Go release of the offsets table (`ctx` at 248 from
/// Go 1.23).
const WINDOW_MAX: u64 = 320;

/// Mask of every index into a [`Window`]; the scratch head extends past it by more than a
/// word, so masked reads need no bounds check.
const WINDOW_MASK: u64 = 511;

/// The first bytes of a struct in the target, copied with one read into per-CPU scratch
/// (the head buffer, which the traceparent scan overwrites later: take the fields first).
struct Window {
    base: *const u8,
    len: u64,
}

impl Window {
    /// Copies `len` bytes at `addr`; `None` when the read fails or `len` is out of range.
    #[inline(always)]
    fn copy(addr: u64, len: u64) -> Option<Window> {
        if len == 0 || len > WINDOW_MAX {
            return None;
        }
        let scratch = SCRATCH.get_ptr_mut(0)?;
        // SAFETY: per-CPU scratch, one program at a time on this CPU; `len <= WINDOW_MAX`
        // keeps the write inside `head`.
        let base = unsafe { (*scratch).head.as_mut_ptr() };
        // SAFETY: as above; the helper validates the source address.
        let rc =
            unsafe { generated::bpf_probe_read_user(base.cast(), len as u32, addr as *const _) };
        (rc == 0).then_some(Window { base, len })
    }

    /// The word at `off` of the copy (offsets of these fields are 8-aligned); 0 when the
    /// offset is unknown or outside the copy. A plain value rather than an `Option`: LLVM
    /// leaves the payload of a `None` undefined, and the verifier refuses a program that
    /// reads such a register on any path.
    #[inline(always)]
    fn word(&self, off: Option<u64>) -> u64 {
        let Some(off) = off else {
            return 0;
        };
        if off % 8 != 0 || off + 8 > self.len {
            return 0;
        }
        // SAFETY: `off + 8 <= len <= WINDOW_MAX`, and the mask keeps the verifier's view of
        // the index inside the scratch head.
        unsafe { *(self.base.add((off & WINDOW_MASK) as usize) as *const u64) }
    }

    /// The word at the offset of `field` (0 when unknown).
    #[inline(always)]
    fn field(&self, cfg: &TargetConfig, field: GoField) -> u64 {
        self.word(cfg.offset(field))
    }

    /// Copies the Go string whose header is at the offset of `field` into `out`.
    #[inline(always)]
    fn string<const N: usize>(&self, cfg: &TargetConfig, field: GoField, out: &mut Str<N>) {
        let off = cfg.offset(field);
        string_at(self.word(off), self.word(off.map(|o| o + 8)), out);
    }
}

/// Bytes of a struct to copy so that each known offset in `fields` (with the field's size in
/// words) lies inside the copy.
#[inline(always)]
fn window_len(cfg: &TargetConfig, fields: &[(GoField, u64)]) -> u64 {
    let mut need = 0;
    for (field, words) in fields {
        if let Some(off) = cfg.offset(*field) {
            // The mask bounds the result for the verifier (a check of the sum alone is one
            // LLVM may apply to a copy of the register). An offset past it only shortens the
            // copy; `Window::word` then finds that field outside and reads nothing.
            let end = (off & WINDOW_MASK) + 8 * words;
            if end > need {
                need = end;
            }
        }
    }
    need
}

/// Copies the bytes of the Go string (`ptr`, `len`) into `out`, truncated to `N`.
#[inline(always)]
fn string_at<const N: usize>(ptr: u64, len: u64, out: &mut Str<N>) {
    out.len = if len > u32::MAX as u64 {
        u32::MAX
    } else {
        len as u32
    };
    let n = if len > N as u64 { N as u32 } else { len as u32 };
    if n == 0 || ptr == 0 {
        return;
    }
    // SAFETY: `n <= N` keeps the write inside `out.bytes`.
    let rc = unsafe {
        generated::bpf_probe_read_user(out.bytes.as_mut_ptr().cast(), n, ptr as *const _)
    };
    if rc < 0 {
        out.len = 0;
        count(Counter::UserReadFailed);
    }
}

/// Flattened argument words of `serverHandler.ServeHTTP(sh, rw ResponseWriter, req *Request)`:
/// the receiver, then the interface's type and data words, then the request.
const ARG_RESPONSE_DATA: usize = 2;
const ARG_REQUEST: usize = 3;

#[inline(always)]
pub fn target(tgid: u32) -> Option<&'static TargetConfig> {
    // SAFETY: the value is copied out before the map can change under us.
    unsafe { TARGETS.get(&tgid) }
}

/// `net/http.serverHandler.ServeHTTP` entry.
#[uprobe]
pub fn go_http_server_enter(ctx: ProbeContext) -> u32 {
    match try_enter(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

fn try_enter(ctx: &ProbeContext) -> Result<(), i32> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(cfg) = target(tgid) else {
        return Ok(());
    };
    let key = GoroutineKey {
        tgid,
        _pad: 0,
        g: abi::current_g(ctx),
    };
    let mut inflight = HttpServerInflight {
        request: abi::arg(ctx, ARG_REQUEST),
        response: abi::arg(ctx, ARG_RESPONSE_DATA),
        // SAFETY: plain helper call.
        start_ns: unsafe { bpf_ktime_get_ns() },
        trace: TraceIds::default(),
        context: 0,
    };
    // `ProtoMajor` and the context's data word, with one read of the request.
    let fields = [(GoField::RequestProtoMajor, 1), (GoField::RequestCtx, 2)];
    let (proto, context) = match Window::copy(inflight.request, window_len(cfg, &fields)) {
        Some(r) => (
            r.field(cfg, GoField::RequestProtoMajor),
            // An interface is (type word, data word).
            r.word(cfg.offset(GoField::RequestCtx).map(|o| o + 8)),
        ),
        None => (0, 0),
    };
    // Ids come from the header when it is valid, so only then are fewer random words drawn.
    let incoming = if cfg.flags & TargetConfig::FLAG_SERVER_TRACEPARENT != 0 && proto == 1 {
        incoming_context(cfg, inflight.response, &mut inflight.trace)
    } else {
        Incoming::Absent
    };
    match incoming {
        Incoming::Valid => {}
        Incoming::Absent => traceparent::new_root(&mut inflight.trace),
        Incoming::Invalid => {
            traceparent::new_root(&mut inflight.trace);
            inflight.trace.origin = TraceIds::ORIGIN_HEADER_INVALID;
            count(Counter::TraceparentInvalid);
        }
    }
    // Make the span findable by calls made under this request's context or by goroutines
    // the handler starts (see go/context.rs).
    if context != 0 {
        let ctx = ContextKey {
            tgid,
            _pad: 0,
            ctx: context,
        };
        if CONTEXT_SPANS.insert(&ctx, &inflight.trace, 0).is_ok() {
            inflight.context = ctx.ctx;
        }
    }
    if HTTP_SERVER_INFLIGHT.insert(&key, &inflight, 0).is_err() {
        count(Counter::InflightInsertFailed);
    }
    if cfg.offset(GoField::GoroutineParentId).is_some() {
        if let Some(goid) = goid_key(cfg, tgid, goid(cfg, key.g)) {
            let _ = GOID_SPANS.insert(&goid, &inflight.trace, 0);
        }
    }
    Ok(())
}

/// The goroutine id of `g`; 0 (never a request's goroutine) when it cannot be read.
#[inline(always)]
fn goid(cfg: &TargetConfig, g: u64) -> u64 {
    match cfg.offset(GoField::GoroutineId) {
        Some(off) => read::user::<u64>(g + off).unwrap_or(0),
        None => 0,
    }
}

/// The goid key of goroutine id `goid`, only on Go releases that record `parentGoid`
/// (elsewhere nobody would look it up).
#[inline(always)]
fn goid_key(cfg: &TargetConfig, tgid: u32, goid: u64) -> Option<GoidKey> {
    cfg.offset(GoField::GoroutineParentId)?;
    (goid != 0).then_some(GoidKey {
        tgid,
        _pad: 0,
        goid,
    })
}

/// Finds the request head at the end of the connection's `bufio.Reader` (consumed up to
/// `r` when the handler starts) and reads its `traceparent`, if any, into `ids`.
#[inline(always)]
fn incoming_context(cfg: &TargetConfig, response: u64, ids: &mut TraceIds) -> Incoming {
    let (Some(conn_off), Some(bufr_off), Some(buf_off), Some(pos_off)) = (
        cfg.offset(GoField::ResponseConn),
        cfg.offset(GoField::ConnBufReader),
        cfg.offset(GoField::BufioReaderBuf),
        cfg.offset(GoField::BufioReaderPos),
    ) else {
        return Incoming::Absent;
    };
    let Ok(conn) = read::pointer(response + conn_off) else {
        return Incoming::Absent;
    };
    let Ok(bufr) = read::pointer(conn + bufr_off) else {
        return Incoming::Absent;
    };
    // `buf` and `r` with one read of the reader.
    let fields = [(GoField::BufioReaderBuf, 1), (GoField::BufioReaderPos, 1)];
    let Some(reader) = Window::copy(bufr, window_len(cfg, &fields)) else {
        return Incoming::Absent;
    };
    let (buf, pos) = (reader.word(Some(buf_off)), reader.word(Some(pos_off)));
    if buf == 0 {
        return Incoming::Absent;
    }
    traceparent::from_request_head(buf + pos, pos, ids)
}

/// A RET instruction of `net/http.serverHandler.ServeHTTP`.
#[uprobe]
pub fn go_http_server_return(ctx: ProbeContext) -> u32 {
    match try_return(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

fn try_return(ctx: &ProbeContext) -> Result<(), i32> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(cfg) = target(tgid) else {
        return Ok(());
    };
    let g = abi::current_g(ctx);
    let key = GoroutineKey { tgid, _pad: 0, g };
    let goid = goid(cfg, g);
    // SAFETY: copied out immediately.
    let Some(inflight) = (unsafe { HTTP_SERVER_INFLIGHT.get(&key) }).copied() else {
        count(Counter::ReturnWithoutEntry);
        return Ok(());
    };
    let _ = HTTP_SERVER_INFLIGHT.remove(&key);
    if inflight.context != 0 {
        let _ = CONTEXT_SPANS.remove(&ContextKey {
            tgid,
            _pad: 0,
            ctx: inflight.context,
        });
    }
    if let Some(goid) = goid_key(cfg, tgid, goid) {
        let _ = GOID_SPANS.remove(&goid);
    }
    let Some(mut entry) = EVENTS.reserve::<HttpServerEvent>(0) else {
        count(Counter::RingBufferFull);
        return Ok(());
    };
    // SAFETY: `reserve` returned room for one HttpServerEvent; every field is written below.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.header = EventHeader {
        kind: EventKind::HttpServer as u16,
        _pad: 0,
        tgid,
        start_ns: inflight.start_ns,
        // SAFETY: plain helper call.
        end_ns: unsafe { bpf_ktime_get_ns() },
    };
    ev.trace = inflight.trace;
    ev._pad = [0; 3];
    ev.goid = goid;
    fill_request(cfg, inflight.request, ev);
    fill_response(cfg, inflight.response, ev);
    entry.submit(wakeup_flags());
    Ok(())
}

/// The request's fields, from one copy of the `http.Request` (strings: their bytes are one
/// more read each).
#[inline(always)]
fn fill_request(cfg: &TargetConfig, req: u64, ev: &mut HttpServerEvent) {
    ev.proto_major = 0;
    ev.proto_minor = 0;
    ev.tls = 0;
    ev.method.len = 0;
    ev.host.len = 0;
    ev.route.len = 0;
    ev.remote.len = 0;
    ev.path.len = 0;
    let fields = [
        (GoField::RequestMethod, 2),
        (GoField::RequestUrl, 1),
        (GoField::RequestProtoMajor, 1),
        (GoField::RequestProtoMinor, 1),
        (GoField::RequestHost, 2),
        (GoField::RequestPattern, 2),
        (GoField::RequestTls, 1),
        (GoField::RequestRemoteAddr, 2),
    ];
    let Some(r) = Window::copy(req, window_len(cfg, &fields)) else {
        count(Counter::UserReadFailed);
        return;
    };
    ev.proto_major = r.field(cfg, GoField::RequestProtoMajor) as u8;
    ev.proto_minor = r.field(cfg, GoField::RequestProtoMinor) as u8;
    ev.tls = (r.field(cfg, GoField::RequestTls) != 0) as u8;
    r.string(cfg, GoField::RequestMethod, &mut ev.method);
    r.string(cfg, GoField::RequestHost, &mut ev.host);
    r.string(cfg, GoField::RequestPattern, &mut ev.route);
    r.string(cfg, GoField::RequestRemoteAddr, &mut ev.remote);
    let url = r.field(cfg, GoField::RequestUrl);
    if let Some(off) = cfg.offset(GoField::UrlPath) {
        if url != 0 && read::go_string(url + off, &mut ev.path).is_err() {
            count(Counter::UserReadFailed);
        }
    }
}

#[inline(always)]
fn fill_response(cfg: &TargetConfig, resp: u64, ev: &mut HttpServerEvent) {
    ev.status = 0;
    if ev.proto_major == 2 {
        ev.status = http2_status(cfg, resp) as u16;
        return;
    }
    if let Some(off) = cfg.offset(GoField::ResponseStatus) {
        ev.status = read::user::<u64>(resp + off).unwrap_or(0) as u16;
    }
}

/// The status an HTTP/2 handler wrote, in the writer's state. From Go 1.27 net/http wraps the
/// writer of net/http/internal/http2 in a struct holding one pointer; such a struct is stored
/// in an interface as that pointer itself, so the data word is already the inner writer.
#[inline(always)]
fn http2_status(cfg: &TargetConfig, writer: u64) -> u64 {
    if let (Some(_), Some(rws), Some(status)) = (
        cfg.offset(GoField::Http2ResponseWriterInner),
        cfg.offset(GoField::Http2InternalWriterState),
        cfg.offset(GoField::Http2InternalStateStatus),
    ) {
        let Ok(state) = read::pointer(writer + rws) else {
            return 0;
        };
        return read::user::<u64>(state + status).unwrap_or(0);
    }
    if let (Some(rws), Some(status)) = (
        cfg.offset(GoField::Http2ResponseWriterState),
        cfg.offset(GoField::Http2WriterStateStatus),
    ) {
        if let Ok(state) = read::pointer(writer + rws) {
            return read::user::<u64>(state + status).unwrap_or(0);
        }
    }
    0
}
