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
    Counter, EventHeader, EventKind, GoField, GoroutineKey, HttpServerEvent, HttpServerInflight,
    TargetConfig, TraceIds,
};

use crate::{
    emit::{count, wakeup_flags},
    go::abi,
    maps::{EVENTS, HTTP_SERVER_INFLIGHT, TARGETS},
    read,
    traceparent::{self, Incoming},
};

/// Flattened argument words of `serverHandler.ServeHTTP(sh, rw ResponseWriter, req *Request)`:
/// the receiver, then the interface's type and data words, then the request.
const ARG_RESPONSE_DATA: usize = 2;
const ARG_REQUEST: usize = 3;

#[inline(always)]
fn target(tgid: u32) -> Option<&'static TargetConfig> {
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
    };
    traceparent::new_root(&mut inflight.trace);
    if cfg.flags & TargetConfig::FLAG_SERVER_TRACEPARENT != 0
        && proto_major(cfg, inflight.request) == 1
    {
        incoming_context(cfg, inflight.response, &mut inflight.trace);
    }
    if HTTP_SERVER_INFLIGHT.insert(&key, &inflight, 0).is_err() {
        count(Counter::InflightInsertFailed);
    }
    Ok(())
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
    fill_response(cfg, inflight.response, ev);
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
fn fill_response(cfg: &TargetConfig, resp: u64, ev: &mut HttpServerEvent) {
    ev.status = 0;
    ev.remote.len = 0;
    if ev.proto_major == 2 {
        if let (Some(rws_off), Some(status_off)) = (
            cfg.offset(GoField::Http2ResponseWriterState),
            cfg.offset(GoField::Http2WriterStateStatus),
        ) {
            if let Ok(rws) = read::pointer(resp + rws_off) {
                ev.status = read::user::<u64>(rws + status_off).unwrap_or(0) as u16;
            }
        }
        return;
    }
    if let Some(off) = cfg.offset(GoField::ResponseStatus) {
        ev.status = read::user::<u64>(resp + off).unwrap_or(0) as u16;
    }
    if let Some(conn_off) = cfg.offset(GoField::ResponseConn) {
        if let Ok(conn) = read::pointer(resp + conn_off) {
            field_string(cfg, conn, GoField::ConnRemoteAddr, &mut ev.remote);
        }
    }
}
