//! grpc-go: server RPCs (`Server.handleStream` entry and RETs, the status from `WriteStatus`,
//! the incoming `traceparent` and `:authority` from `http2Server.operateHeaders`) and client
//! RPCs (`newClientStreamWithParams` entry and RETs, `clientStream.finish`), unary and
//! streaming alike.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated},
    macros::{map, uprobe},
    maps::{LruHashMap, PerCpuArray},
    programs::ProbeContext,
};
use spanhook_common::{
    grpc::STATUS_UNKNOWN, ArgSlot, ContextKey, Counter, EventHeader, EventKind, GoField, GoidKey,
    GoroutineKey, GrpcClientEvent, GrpcClientInflight, GrpcRequestHeaders, GrpcServerEvent,
    GrpcServerInflight, GrpcStreamKey, Str, TargetConfig, TraceIds,
};

use crate::{
    emit::{count, wakeup_flags},
    go::{abi, context, nethttp::target},
    maps::{CONTEXT_SPANS, EVENTS, GOID_SPANS},
    read,
    scan::PAD,
    traceparent,
};

/// gRPC server calls in progress, by handler goroutine.
#[map]
pub static GRPC_SERVER_INFLIGHT: LruHashMap<GoroutineKey, GrpcServerInflight> =
    LruHashMap::with_max_entries(16384, 0);

/// Status codes written by `WriteStatus`, by transport stream, until the handler returns.
#[map]
static GRPC_SERVER_STATUS: LruHashMap<ContextKey, i32> = LruHashMap::with_max_entries(16384, 0);

/// What each stream's request headers said, until its handler starts.
#[map]
static GRPC_REQUEST_HEADERS: LruHashMap<GrpcStreamKey, GrpcRequestHeaders> =
    LruHashMap::with_max_entries(16384, 0);

/// Client RPCs between `newClientStream` entry and its return, by goroutine.
#[map]
pub static GRPC_CLIENT_STARTING: LruHashMap<GoroutineKey, GrpcClientInflight> =
    LruHashMap::with_max_entries(16384, 0);

/// Client RPCs in progress, by `*clientStream` (finish may run on any goroutine).
#[map]
static GRPC_CLIENT_INFLIGHT: LruHashMap<ContextKey, GrpcClientInflight> =
    LruHashMap::with_max_entries(65536, 0);

/// Per-CPU room to build values too large for the stack, and the header scan's state.
#[repr(C)]
pub struct GrpcScratch {
    headers: GrpcRequestHeaders,
    client: GrpcClientInflight,
    /// Header scan: the fields array, its length, the next index.
    fields: u64,
    count: u64,
    cursor: u64,
    /// Header scan: the layout of one field.
    name_off: u64,
    value_off: u64,
    /// Header scan: what was found (bit 0 traceparent, bit 1 :authority).
    found: u64,
}

#[map]
static GRPC_SCRATCH: PerCpuArray<GrpcScratch> = PerCpuArray::with_max_entries(1, 0);

/// Size of x/net's `hpack.HeaderField` {Name, Value string; Sensitive bool}.
const HEADER_FIELD_SIZE: u64 = 40;
/// Header fields examined at most per request.
const MAX_FIELDS: u32 = 32;

#[inline(always)]
fn tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: plain helper call.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn string_at<const N: usize>(cfg: &TargetConfig, base: u64, field: GoField, out: &mut Str<N>) {
    out.len = 0;
    if let Some(off) = cfg.offset(field) {
        if read::go_string(base + off, out).is_err() {
            count(Counter::UserReadFailed);
        }
    }
}

/// Where the `Stream` fields of the server's stream object are: the object itself before
/// v1.69, behind the embedded `*Stream` in v1.69–v1.76, the embedded `Stream` after.
#[inline(always)]
fn stream_base(cfg: &TargetConfig, stream: u64) -> u64 {
    let embedded = stream + cfg.offset(GoField::GrpcServerStreamStream).unwrap_or(0);
    if cfg.flags & TargetConfig::FLAG_GRPC_STREAM_POINTER != 0 {
        read::pointer(embedded).unwrap_or(0)
    } else {
        embedded
    }
}

/// `status.Status` → `*spb.Status` → `Code`.
#[inline(always)]
fn status_code(cfg: &TargetConfig, status: u64) -> Option<i32> {
    let spb = read::pointer(status + cfg.offset(GoField::GrpcStatusProto)?).ok()?;
    read::user::<i32>(spb + cfg.offset(GoField::GrpcProtoStatusCode)?).ok()
}

// ---------------------------------------------------------------------------------------
// Server

/// `transport.(*http2Server).operateHeaders` entry: remembers the stream's `traceparent` and
/// `:authority` for its handler.
#[uprobe]
pub fn go_grpc_server_headers(ctx: ProbeContext) -> u32 {
    let _ = try_headers(&ctx);
    0
}

fn try_headers(ctx: &ProbeContext) -> Option<()> {
    let tgid = tgid();
    // SAFETY: read at once.
    let cfg = target(tgid)?;
    let transport = abi::arg(ctx, 0);
    let frame = abi::arg_at(ctx, cfg.arg(ArgSlot::GrpcHeadersFrame));
    let headers_frame = read::pointer(frame + cfg.offset(GoField::GrpcMetaHeadersFrame)?).ok()?;
    let stream_id =
        read::user::<u32>(headers_frame + cfg.offset(GoField::GrpcFrameStreamId)?).ok()?;
    let [fields, len] =
        read::user::<[u64; 2]>(frame + cfg.offset(GoField::GrpcMetaHeadersFields)?).ok()?;
    let scratch = GRPC_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch, one program at a time on this CPU.
    let s = unsafe { &mut *scratch };
    s.fields = fields;
    s.count = len;
    s.cursor = 0;
    s.found = 0;
    s.name_off = cfg.offset(GoField::GrpcHeaderFieldName)?;
    s.value_off = cfg.offset(GoField::GrpcHeaderFieldValue)?;
    s.headers.trace = TraceIds::default();
    s.headers.authority.len = 0;
    s.headers._pad = 0;
    let mut loop_ctx = LoopCtx { scratch };
    // SAFETY: the callback reads the scratch through `loop_ctx` only.
    unsafe {
        generated::bpf_loop(
            MAX_FIELDS,
            header_field as *mut core::ffi::c_void,
            (&mut loop_ctx as *mut LoopCtx).cast(),
            0,
        )
    };
    if s.found == 0 {
        return Some(());
    }
    let key = GrpcStreamKey {
        tgid,
        stream_id,
        transport,
    };
    let _ = GRPC_REQUEST_HEADERS.insert(&key, &s.headers, 0);
    Some(())
}

#[repr(C)]
struct LoopCtx {
    scratch: *mut GrpcScratch,
}

/// `bpf_loop` body: looks at one header field; the index lives in map memory so the verifier
/// checks this once.
#[inline(never)]
extern "C" fn header_field(_index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the `LoopCtx` of `try_headers`.
    let s = unsafe { &mut *(*ctx.cast::<LoopCtx>()).scratch };
    let i = s.cursor;
    if i >= s.count || i >= MAX_FIELDS as u64 {
        return 1;
    }
    s.cursor = i + 1;
    let field = s.fields + i * HEADER_FIELD_SIZE;
    let Ok([name_ptr, name_len]) = read::user::<[u64; 2]>(field + (s.name_off & 0xff)) else {
        return 0;
    };
    let Ok([value_ptr, value_len]) = read::user::<[u64; 2]>(field + (s.value_off & 0xff)) else {
        return 0;
    };
    if name_len == 11 {
        let Ok(name) = read::user::<[u8; 11]>(name_ptr) else {
            return 0;
        };
        if &name == b"traceparent" && value_len >= 55 {
            parse_traceparent(s, value_ptr);
        }
    } else if name_len == 10 {
        let Ok(name) = read::user::<[u8; 10]>(name_ptr) else {
            return 0;
        };
        if &name == b":authority" {
            let n = if value_len > 120 {
                120
            } else {
                value_len as u32
            };
            s.headers.authority.len = value_len as u32;
            // SAFETY: `n <= 120`, the size of the destination.
            let rc = unsafe {
                generated::bpf_probe_read_user(
                    s.headers.authority.bytes.as_mut_ptr().cast(),
                    n,
                    value_ptr as *const core::ffi::c_void,
                )
            };
            if rc != 0 {
                s.headers.authority.len = 0;
            }
            s.found |= 2;
        }
    }
    // Both found: nothing more to look for.
    if s.found == 3 {
        return 1;
    }
    0
}

/// Copies a `traceparent` value to the HTTP head scratch and parses it there.
#[inline(always)]
fn parse_traceparent(s: &mut GrpcScratch, value: u64) {
    let Some(head) = crate::maps::SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch, one program at a time on this CPU.
    let head = unsafe { &mut (*head).head };
    // The value and the byte after it (a terminator for version 00).
    head[PAD + 55] = b'\r';
    // SAFETY: 55 bytes fit after the padding.
    let rc = unsafe {
        generated::bpf_probe_read_user(
            head.as_mut_ptr().add(PAD).cast(),
            55,
            value as *const core::ffi::c_void,
        )
    };
    if rc != 0 {
        return;
    }
    let mut ids = TraceIds::default();
    if traceparent::parse_value(head.as_ptr(), PAD, &mut ids) {
        s.headers.trace = ids;
    } else {
        s.headers.trace.origin = TraceIds::ORIGIN_HEADER_INVALID;
        count(Counter::TraceparentInvalid);
    }
    s.found |= 1;
}

/// `grpc.(*Server).handleStream(t ServerTransport, stream, ...)` entry.
#[uprobe]
pub fn go_grpc_server_enter(ctx: ProbeContext) -> u32 {
    let _ = try_server_enter(&ctx);
    0
}

/// handleStream's arguments: the receiver, the transport interface (type, data), the stream.
const ARG_TRANSPORT_DATA: usize = 2;
const ARG_STREAM: usize = 3;

fn try_server_enter(ctx: &ProbeContext) -> Option<()> {
    let tgid = tgid();
    let cfg = target(tgid)?;
    let g = abi::current_g(ctx);
    let transport = abi::arg(ctx, ARG_TRANSPORT_DATA);
    let stream = abi::arg(ctx, ARG_STREAM);
    let base = stream_base(cfg, stream);
    let stream_id = read::user::<u32>(base + cfg.offset(GoField::GrpcStreamId)?).unwrap_or(0);
    let mut inflight = GrpcServerInflight {
        stream,
        start_ns: now(),
        trace: TraceIds::default(),
        context: 0,
        transport,
        stream_id,
        _pad: 0,
    };
    let key = GrpcStreamKey {
        tgid,
        stream_id,
        transport,
    };
    // SAFETY: copied out at once.
    let incoming = unsafe { GRPC_REQUEST_HEADERS.get(&key) }.map(|h| h.trace);
    match incoming {
        Some(ids) if ids.origin == TraceIds::ORIGIN_HEADER => inflight.trace = ids,
        Some(ids) => {
            traceparent::new_root(&mut inflight.trace);
            inflight.trace.origin = ids.origin;
        }
        None => traceparent::new_root(&mut inflight.trace),
    }
    // Calls the handler makes under the RPC's context become its children.
    if let Some(off) = cfg.offset(GoField::GrpcStreamCtx) {
        let ctx_data = context::context_data(base + off);
        if ctx_data != 0 {
            let ckey = ContextKey {
                tgid,
                _pad: 0,
                ctx: ctx_data,
            };
            if CONTEXT_SPANS.insert(&ckey, &inflight.trace, 0).is_ok() {
                inflight.context = ctx_data;
            }
        }
    }
    if let (Some(_), Some(goid_off)) = (
        cfg.offset(GoField::GoroutineParentId),
        cfg.offset(GoField::GoroutineId),
    ) {
        if let Ok(goid) = read::user::<u64>(g + goid_off) {
            let _ = GOID_SPANS.insert(
                &GoidKey {
                    tgid,
                    _pad: 0,
                    goid,
                },
                &inflight.trace,
                0,
            );
        }
    }
    let gkey = GoroutineKey { tgid, _pad: 0, g };
    if GRPC_SERVER_INFLIGHT.insert(&gkey, &inflight, 0).is_err() {
        count(Counter::InflightInsertFailed);
    }
    Some(())
}

/// `WriteStatus` entry (on `http2Server` before v1.69, on `ServerStream` after): the status
/// the handler's RPC ends with.
#[uprobe]
pub fn go_grpc_server_status(ctx: ProbeContext) -> u32 {
    let _ = try_status(&ctx);
    0
}

fn try_status(ctx: &ProbeContext) -> Option<()> {
    let tgid = tgid();
    let cfg = target(tgid)?;
    let stream = abi::arg_at(ctx, cfg.arg(ArgSlot::GrpcStatusStream));
    let status = abi::arg_at(ctx, cfg.arg(ArgSlot::GrpcStatusValue));
    let code = status_code(cfg, status)?;
    let key = ContextKey {
        tgid,
        _pad: 0,
        ctx: stream,
    };
    let _ = GRPC_SERVER_STATUS.insert(&key, &code, 0);
    Some(())
}

/// A RET of `grpc.(*Server).handleStream`.
#[uprobe]
pub fn go_grpc_server_return(ctx: ProbeContext) -> u32 {
    let _ = try_server_return(&ctx);
    0
}

fn try_server_return(ctx: &ProbeContext) -> Option<()> {
    let tgid = tgid();
    let cfg = target(tgid)?;
    let g = abi::current_g(ctx);
    let gkey = GoroutineKey { tgid, _pad: 0, g };
    // SAFETY: copied out at once.
    let Some(inflight) = unsafe { GRPC_SERVER_INFLIGHT.get(&gkey) }.copied() else {
        count(Counter::ReturnWithoutEntry);
        return None;
    };
    let _ = GRPC_SERVER_INFLIGHT.remove(&gkey);
    if inflight.context != 0 {
        let _ = CONTEXT_SPANS.remove(&ContextKey {
            tgid,
            _pad: 0,
            ctx: inflight.context,
        });
    }
    let goid = match cfg.offset(GoField::GoroutineId) {
        Some(off) => read::user::<u64>(g + off).unwrap_or(0),
        None => 0,
    };
    if cfg.offset(GoField::GoroutineParentId).is_some() {
        let _ = GOID_SPANS.remove(&GoidKey {
            tgid,
            _pad: 0,
            goid,
        });
    }
    let skey = ContextKey {
        tgid,
        _pad: 0,
        ctx: inflight.stream,
    };
    // SAFETY: copied out at once.
    let status = unsafe { GRPC_SERVER_STATUS.get(&skey) }
        .copied()
        .unwrap_or(STATUS_UNKNOWN);
    let _ = GRPC_SERVER_STATUS.remove(&skey);
    let base = stream_base(cfg, inflight.stream);
    let hkey = GrpcStreamKey {
        tgid,
        stream_id: inflight.stream_id,
        transport: inflight.transport,
    };
    let Some(mut entry) = EVENTS.reserve::<GrpcServerEvent>(0) else {
        let _ = GRPC_REQUEST_HEADERS.remove(&hkey);
        count(Counter::RingBufferFull);
        return None;
    };
    // SAFETY: room for one GrpcServerEvent; every field is written below.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.header = EventHeader {
        kind: EventKind::GrpcServer as u16,
        _pad: 0,
        tgid,
        start_ns: inflight.start_ns,
        end_ns: now(),
    };
    ev.trace = inflight.trace;
    ev.goid = goid;
    ev.status = status;
    ev.stream_id = inflight.stream_id;
    string_at(cfg, base, GoField::GrpcStreamMethod, &mut ev.method);
    ev.authority.len = 0;
    // SAFETY: copied out at once.
    if let Some(headers) = unsafe { GRPC_REQUEST_HEADERS.get(&hkey) } {
        ev.authority = headers.authority;
    }
    let _ = GRPC_REQUEST_HEADERS.remove(&hkey);
    entry.submit(wakeup_flags());
    Some(())
}

// ---------------------------------------------------------------------------------------
// Client

/// `grpc.newClientStreamWithParams(ctx, desc, cc, method string, ...)` entry.
#[uprobe]
pub fn go_grpc_client_enter(ctx: ProbeContext) -> u32 {
    let _ = try_client_enter(&ctx);
    0
}

const ARG_CTX_DATA: usize = 1;
const ARG_CLIENT_CONN: usize = 3;
const ARG_METHOD: usize = 4;

fn try_client_enter(ctx: &ProbeContext) -> Option<()> {
    let tgid = tgid();
    let cfg = target(tgid)?;
    let g = abi::current_g(ctx);
    let scratch = GRPC_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch, one program at a time on this CPU.
    let c = unsafe { &mut (*scratch).client };
    c.start_ns = now();
    match context::parent(cfg, tgid, g, abi::arg(ctx, ARG_CTX_DATA)) {
        Some((parent, origin)) => {
            c.trace.trace_id = parent.trace_id;
            c.trace.parent_span_id = parent.span_id;
            c.trace.flags = parent.flags;
            c.trace.origin = origin;
            c.trace._pad = [0; 6];
            traceparent::random_bytes(&mut c.trace.span_id);
        }
        None => traceparent::new_root(&mut c.trace),
    }
    // The method string's header is in two argument registers: copy it from the stack-free
    // registers through a local.
    let method = [abi::arg(ctx, ARG_METHOD), abi::arg(ctx, ARG_METHOD + 1)];
    copy_string(method[0], method[1], &mut c.method);
    let cc = abi::arg(ctx, ARG_CLIENT_CONN);
    string_at(cfg, cc, GoField::GrpcClientConnTarget, &mut c.target);
    let key = GoroutineKey { tgid, _pad: 0, g };
    if GRPC_CLIENT_STARTING.insert(&key, c, 0).is_err() {
        count(Counter::InflightInsertFailed);
    }
    Some(())
}

#[inline(always)]
fn copy_string<const N: usize>(ptr: u64, len: u64, out: &mut Str<N>) {
    out.len = if len > u32::MAX as u64 {
        u32::MAX
    } else {
        len as u32
    };
    let n = if len > N as u64 { N as u32 } else { len as u32 };
    if n == 0 || ptr == 0 {
        return;
    }
    // SAFETY: `n <= N`, the size of the destination.
    let rc = unsafe {
        generated::bpf_probe_read_user(
            out.bytes.as_mut_ptr().cast(),
            n,
            ptr as *const core::ffi::c_void,
        )
    };
    if rc != 0 {
        out.len = 0;
    }
}

/// A RET of `grpc.newClientStreamWithParams`: results `(ClientStream, error)`, each an
/// interface.
#[uprobe]
pub fn go_grpc_client_created(ctx: ProbeContext) -> u32 {
    let _ = try_client_created(&ctx);
    0
}

fn try_client_created(ctx: &ProbeContext) -> Option<()> {
    let tgid = tgid();
    let cfg = target(tgid)?;
    let g = abi::current_g(ctx);
    let key = GoroutineKey { tgid, _pad: 0, g };
    // SAFETY: a pointer into the map value, used before any other map operation.
    let starting = unsafe { GRPC_CLIENT_STARTING.get(&key) }?;
    let stream = abi::arg(ctx, 1);
    let err_itab = abi::arg(ctx, 2);
    let err_data = abi::arg(ctx, 3);
    let result = if err_itab == 0 && stream != 0 {
        let skey = ContextKey {
            tgid,
            _pad: 0,
            ctx: stream,
        };
        let _ = GRPC_CLIENT_INFLIGHT.insert(&skey, starting, 0);
        Some(())
    } else {
        emit_client(cfg, tgid, g, starting, err_itab, err_data)
    };
    let _ = GRPC_CLIENT_STARTING.remove(&key);
    result
}

/// `grpc.(*clientStream).finish(err error)` entry: the RPC is over.
#[uprobe]
pub fn go_grpc_client_finish(ctx: ProbeContext) -> u32 {
    let _ = try_client_finish(&ctx);
    0
}

fn try_client_finish(ctx: &ProbeContext) -> Option<()> {
    let tgid = tgid();
    let cfg = target(tgid)?;
    let stream = abi::arg(ctx, 0);
    let skey = ContextKey {
        tgid,
        _pad: 0,
        ctx: stream,
    };
    // SAFETY: a pointer into the map value, used before it is removed.
    let inflight = unsafe { GRPC_CLIENT_INFLIGHT.get(&skey) }?;
    let result = emit_client(
        cfg,
        tgid,
        abi::current_g(ctx),
        inflight,
        abi::arg(ctx, 1),
        abi::arg(ctx, 2),
    );
    let _ = GRPC_CLIENT_INFLIGHT.remove(&skey);
    result
}

#[inline(always)]
fn emit_client(
    cfg: &TargetConfig,
    tgid: u32,
    g: u64,
    inflight: &GrpcClientInflight,
    err_itab: u64,
    err_data: u64,
) -> Option<()> {
    let Some(mut entry) = EVENTS.reserve::<GrpcClientEvent>(0) else {
        count(Counter::RingBufferFull);
        return None;
    };
    // SAFETY: room for one GrpcClientEvent; every field is written below.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.header = EventHeader {
        kind: EventKind::GrpcClient as u16,
        _pad: 0,
        tgid,
        start_ns: inflight.start_ns,
        end_ns: now(),
    };
    ev.trace = inflight.trace;
    ev.goid = match cfg.offset(GoField::GoroutineId) {
        Some(off) => read::user::<u64>(g + off).unwrap_or(0),
        None => 0,
    };
    ev.error_itab = err_itab;
    ev.error_code = STATUS_UNKNOWN;
    ev.error_eof = 0;
    ev._pad = [0; 3];
    if err_itab != 0 && err_data != 0 {
        // As a *status.Error: Error.s → Status.
        if let Some(off) = cfg.offset(GoField::GrpcErrorStatus) {
            if let Ok(status) = read::pointer(err_data + off) {
                ev.error_code = status_code(cfg, status).unwrap_or(STATUS_UNKNOWN);
            }
        }
        // As an *errors.errorString: is it io.EOF?
        if let Ok([ptr, len]) = read::user::<[u64; 2]>(err_data) {
            if len == 3 {
                if let Ok(text) = read::user::<[u8; 3]>(ptr) {
                    ev.error_eof = (&text == b"EOF") as u8;
                }
            }
        }
    }
    ev.method = inflight.method;
    ev.target = inflight.target;
    entry.submit(wakeup_flags());
    Some(())
}
