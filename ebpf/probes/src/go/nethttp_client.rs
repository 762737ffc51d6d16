//! Go `net/http` client: `Transport.roundTrip` entry and RETs (one span per round trip,
//! connection set-up included), and with `--propagate` `persistConn.roundTrip` entry, where
//! the request's connection is known, to queue its `traceparent` for the wire.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::uprobe,
    programs::ProbeContext,
};
use spanhook_common::{
    ConnKey, Counter, EventHeader, EventKind, GoField, GoroutineKey, HttpClientEvent,
    HttpClientInflight, PendingTraceparent, TargetConfig, TraceIds,
};

use crate::{
    emit::{count, wakeup_flags},
    go::{abi, context, netconn, nethttp::target},
    maps::{EVENTS, HTTP_CLIENT_INFLIGHT, PENDING_TRACEPARENT},
    read, traceparent,
};

/// `(*Transport).roundTrip(req *Request)`: receiver, then the request.
const ARG_REQUEST: usize = 1;
/// Its results: `(*Response, error)`, the error as (type word, data word).
const RET_RESPONSE: usize = 0;
const RET_ERROR_TYPE: usize = 1;
/// `(*persistConn).roundTrip(req *transportRequest)`: the receiver is the connection.
const ARG_PERSIST_CONN: usize = 0;

/// `net/http.(*Transport).roundTrip` entry.
#[uprobe]
pub fn go_http_client_enter(ctx: ProbeContext) -> u32 {
    match try_enter(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

fn try_enter(ctx: &ProbeContext) -> Result<(), i32> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(cfg) = target(tgid) else {
        return Ok(());
    };
    let g = abi::current_g(ctx);
    let request = abi::arg(ctx, ARG_REQUEST);
    let mut inflight = HttpClientInflight {
        request,
        // SAFETY: plain helper call.
        start_ns: unsafe { bpf_ktime_get_ns() },
        trace: TraceIds::default(),
    };
    let request_ctx = match cfg.offset(GoField::RequestCtx) {
        Some(off) => context::context_data(request + off),
        None => 0,
    };
    match context::parent(cfg, tgid, g, request_ctx) {
        Some((parent, origin)) => {
            inflight.trace.trace_id = parent.trace_id;
            inflight.trace.parent_span_id = parent.span_id;
            inflight.trace.flags = parent.flags;
            inflight.trace.origin = origin;
            traceparent::random_bytes(&mut inflight.trace.span_id);
        }
        None => traceparent::new_root(&mut inflight.trace),
    }
    let key = GoroutineKey { tgid, _pad: 0, g };
    if HTTP_CLIENT_INFLIGHT.insert(&key, &inflight, 0).is_err() {
        count(Counter::InflightInsertFailed);
    }
    Ok(())
}

/// A RET instruction of `net/http.(*Transport).roundTrip`.
#[uprobe]
pub fn go_http_client_return(ctx: ProbeContext) -> u32 {
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
    // SAFETY: copied out at once.
    let Some(inflight) = (unsafe { HTTP_CLIENT_INFLIGHT.get(&key) }).copied() else {
        count(Counter::ReturnWithoutEntry);
        return Ok(());
    };
    let _ = HTTP_CLIENT_INFLIGHT.remove(&key);
    let response = abi::arg(ctx, RET_RESPONSE);
    let error_itab = abi::arg(ctx, RET_ERROR_TYPE);
    let Some(mut entry) = EVENTS.reserve::<HttpClientEvent>(0) else {
        count(Counter::RingBufferFull);
        return Ok(());
    };
    // SAFETY: `reserve` returned room for one HttpClientEvent; every field is written below.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.header = EventHeader {
        kind: EventKind::HttpClient as u16,
        _pad: 0,
        tgid,
        start_ns: inflight.start_ns,
        // SAFETY: plain helper call.
        end_ns: unsafe { bpf_ktime_get_ns() },
    };
    ev.trace = inflight.trace;
    ev.goid = match cfg.offset(GoField::GoroutineId) {
        Some(off) => read::user::<u64>(g + off).unwrap_or(0),
        None => 0,
    };
    ev.error_itab = error_itab;
    ev._pad = [0; 3];
    ev.propagated = (cfg.flags & TargetConfig::FLAG_PROPAGATE != 0) as u8;
    ev.status = 0;
    ev.proto_major = 0;
    ev.proto_minor = 0;
    if response != 0 && error_itab == 0 {
        ev.status = field_u64(cfg, response, GoField::ResponseStatusCode) as u16;
        ev.proto_major = field_u64(cfg, response, GoField::ResponseProtoMajor) as u8;
        ev.proto_minor = field_u64(cfg, response, GoField::ResponseProtoMinor) as u8;
    }
    let req = inflight.request;
    string_field(cfg, req, GoField::RequestMethod, &mut ev.method);
    ev.scheme.len = 0;
    ev.host.len = 0;
    ev.path.len = 0;
    if let Some(url_off) = cfg.offset(GoField::RequestUrl) {
        if let Ok(url) = read::pointer(req + url_off) {
            string_field(cfg, url, GoField::UrlScheme, &mut ev.scheme);
            string_field(cfg, url, GoField::UrlHost, &mut ev.host);
            string_field(cfg, url, GoField::UrlPath, &mut ev.path);
        }
    }
    entry.submit(wakeup_flags());
    Ok(())
}

#[inline(always)]
fn field_u64(cfg: &TargetConfig, base: u64, field: GoField) -> u64 {
    match cfg.offset(field) {
        Some(off) => read::user::<u64>(base + off).unwrap_or(0),
        None => 0,
    }
}

#[inline(always)]
fn string_field<const N: usize>(
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

/// `net/http.(*persistConn).roundTrip` entry: the connection is chosen, the request not yet
/// written (the connection's writer goroutine writes it later), so this is where the client
/// span's `traceparent` is queued for that connection.
#[uprobe]
pub fn go_http_client_conn(ctx: ProbeContext) -> u32 {
    match try_conn(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

fn try_conn(ctx: &ProbeContext) -> Result<(), i32> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(cfg) = target(tgid) else {
        return Ok(());
    };
    if cfg.flags & TargetConfig::FLAG_PROPAGATE == 0 {
        return Ok(());
    }
    let g = abi::current_g(ctx);
    // SAFETY: copied out at once.
    let Some(inflight) =
        (unsafe { HTTP_CLIENT_INFLIGHT.get(&GoroutineKey { tgid, _pad: 0, g }) }).copied()
    else {
        return Ok(());
    };
    let pc = abi::arg(ctx, ARG_PERSIST_CONN);
    // TLS connections carry ciphertext: nothing can be inserted on the wire.
    if field_u64(cfg, pc, GoField::PersistConnTlsState) != 0 {
        return Ok(());
    }
    let Some(key) = connection(cfg, pc) else {
        return Ok(());
    };
    let pending = PendingTraceparent {
        trace: inflight.trace,
        // SAFETY: plain helper call.
        set_ns: unsafe { bpf_ktime_get_ns() },
        tgid,
        _pad: 0,
    };
    let _ = PENDING_TRACEPARENT.insert(&key, &pending, 0);
    Ok(())
}

/// The connection of a `persistConn`: `pc.conn` is a `net.Conn` whose data word is the
/// `*net.TCPConn` (TLS connections were ruled out before).
#[inline(always)]
fn connection(cfg: &TargetConfig, pc: u64) -> Option<ConnKey> {
    let conn_off = cfg.offset(GoField::PersistConnConn)?;
    let tcp_conn = read::pointer(pc + conn_off + 8).ok()?;
    netconn::tcp_conn_key(cfg, tcp_conn)
}
