//! Go `net/http` server: `serverHandler.ServeHTTP` entry and each of its RET instructions.
//!
//! Entry remembers the request, the response writer and the span's trace context, keyed by
//! goroutine; the return reads what the handler produced and sends one record per request.
//! Go moves goroutine stacks, so return probes are plain uprobes on RET instructions, never
//! uretprobes.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::uprobe,
    programs::ProbeContext,
};
use spanhook_common::{
    ContextKey, Counter, EventHeader, EventKind, GoField, GoidKey, GoroutineKey, HttpServerEvent,
    HttpServerInflight, TargetConfig, TraceIds,
};

use crate::{
    emit::{count, wakeup_flags},
    go::{abi, context},
    maps::{CONTEXT_SPANS, EVENTS, GOID_SPANS, HTTP_SERVER_INFLIGHT, TARGETS},
    read,
    traceparent::{self, Incoming},
};

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
    traceparent::new_root(&mut inflight.trace);
    if cfg.flags & TargetConfig::FLAG_SERVER_TRACEPARENT != 0
        && proto_major(cfg, inflight.request) == 1
    {
        incoming_context(cfg, inflight.response, &mut inflight.trace);
    }
    // Make the span findable by calls made under this request's context or by goroutines
    // the handler starts (see go/context.rs).
    if let Some(ctx) = request_context(cfg, tgid, inflight.request) {
        if CONTEXT_SPANS.insert(&ctx, &inflight.trace, 0).is_ok() {
            inflight.context = ctx.ctx;
        }
    }
    if HTTP_SERVER_INFLIGHT.insert(&key, &inflight, 0).is_err() {
        count(Counter::InflightInsertFailed);
    }
    if let Some(goid) = goid_key(cfg, tgid, key.g) {
        let _ = GOID_SPANS.insert(&goid, &inflight.trace, 0);
    }
    Ok(())
}

/// The key of a request's context (its data word), when the offset is known.
#[inline(always)]
fn request_context(cfg: &TargetConfig, tgid: u32, request: u64) -> Option<ContextKey> {
    let off = cfg.offset(GoField::RequestCtx)?;
    match context::context_data(request + off) {
        0 => None,
        ctx => Some(ContextKey { tgid, _pad: 0, ctx }),
    }
}

/// The goid key of goroutine `g`, only on Go releases that record `parentGoid` (elsewhere
/// nobody would look it up).
#[inline(always)]
fn goid_key(cfg: &TargetConfig, tgid: u32, g: u64) -> Option<GoidKey> {
    cfg.offset(GoField::GoroutineParentId)?;
    let goid = read::user::<u64>(g + cfg.offset(GoField::GoroutineId)?).ok()?;
    Some(GoidKey {
        tgid,
        _pad: 0,
        goid,
    })
}

#[inline(always)]
fn proto_major(cfg: &TargetConfig, request: u64) -> u64 {
    match cfg.offset(GoField::RequestProtoMajor) {
        Some(off) => read::user::<u64>(request + off).unwrap_or(0),
        None => 0,
    }
}

/// Finds the request head at the end of the connection's `bufio.Reader` (consumed up to
/// `r` when the handler starts) and continues its `traceparent`, if any.
#[inline(always)]
fn incoming_context(cfg: &TargetConfig, response: u64, ids: &mut TraceIds) {
    let (Some(conn_off), Some(bufr_off), Some(buf_off), Some(pos_off)) = (
        cfg.offset(GoField::ResponseConn),
        cfg.offset(GoField::ConnBufReader),
        cfg.offset(GoField::BufioReaderBuf),
        cfg.offset(GoField::BufioReaderPos),
    ) else {
        return;
    };
    let Ok(conn) = read::pointer(response + conn_off) else {
        return;
    };
    let Ok(bufr) = read::pointer(conn + bufr_off) else {
        return;
    };
    let Ok(buf) = read::pointer(bufr + buf_off) else {
        return;
    };
    let Ok(pos) = read::user::<u64>(bufr + pos_off) else {
        return;
    };
    match traceparent::from_request_head(buf + pos, pos, ids) {
        Incoming::Valid | Incoming::Absent => {}
        Incoming::Invalid => {
            ids.origin = TraceIds::ORIGIN_HEADER_INVALID;
            count(Counter::TraceparentInvalid);
        }
    }
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
    if let Some(goid) = goid_key(cfg, tgid, g) {
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
    fill_request(cfg, inflight.request, g, ev);
    fill_response(cfg, inflight.request, inflight.response, ev);
    entry.submit(wakeup_flags());
    Ok(())
}

#[inline(always)]
fn field_string<const N: usize>(
    cfg: &TargetConfig,
    base: u64,
    field: GoField,
    out: &mut spanhook_common::Str<N>,
) {
    out.len = 0;
    if let Some(off) = cfg.offset(field) {
        if read::go_string(base + off, out).is_err() {
            count(Counter::UserReadFailed);
        }
    }
}

#[inline(always)]
fn fill_request(cfg: &TargetConfig, req: u64, g: u64, ev: &mut HttpServerEvent) {
    ev.goid = match cfg.offset(GoField::GoroutineId) {
        Some(off) => read::user::<u64>(g + off).unwrap_or(0),
        None => 0,
    };
    ev.proto_major = proto_major(cfg, req) as u8;
    ev.proto_minor = match cfg.offset(GoField::RequestProtoMinor) {
        Some(off) => read::user::<u64>(req + off).unwrap_or(0) as u8,
        None => 0,
    };
    ev.tls = match cfg.offset(GoField::RequestTls) {
        Some(off) => (read::user::<u64>(req + off).unwrap_or(0) != 0) as u8,
        None => 0,
    };
    field_string(cfg, req, GoField::RequestMethod, &mut ev.method);
    field_string(cfg, req, GoField::RequestHost, &mut ev.host);
    field_string(cfg, req, GoField::RequestPattern, &mut ev.route);
    ev.path.len = 0;
    if let Some(url_off) = cfg.offset(GoField::RequestUrl) {
        if let Ok(url) = read::pointer(req + url_off) {
            field_string(cfg, url, GoField::UrlPath, &mut ev.path);
        }
    }
}

#[inline(always)]
fn fill_response(cfg: &TargetConfig, req: u64, resp: u64, ev: &mut HttpServerEvent) {
    ev.status = 0;
    field_string(cfg, req, GoField::RequestRemoteAddr, &mut ev.remote);
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
