//! grpc-go clients with `--propagate`: which HTTP/2 stream of which connection opens each
//! client RPC, so the `sk_msg` program can give that stream's HEADERS frame a `traceparent`.
//!
//! grpc-go builds a stream's header fields in the calling goroutine
//! (`http2Client.createHeaderFields`, inside `newClientStream`), then the connection's writer
//! goroutine assigns the stream id and encodes them (`loopyWriter.writeHeader`). The fields'
//! backing array is what the two share, so it carries the client span from one to the other.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, uprobe},
    maps::LruHashMap,
    programs::ProbeContext,
};
use spanhook_common::{
    GoField, GoroutineKey, GrpcHeaderFieldsKey, H2ConnState, H2StreamKey, PendingTraceparent,
    TargetConfig,
};

use crate::{
    go::{abi, grpc::GRPC_CLIENT_STARTING, netconn, nethttp::target},
    maps::{H2_CONNS, H2_PENDING},
    read,
};

/// Client spans by the header fields built for their stream, until the writer encodes them.
#[map]
static GRPC_HEADER_FIELDS: LruHashMap<GrpcHeaderFieldsKey, PendingTraceparent> =
    LruHashMap::with_max_entries(16384, 0);

/// Size of x/net's `hpack.HeaderField` {Name, Value string; Sensitive bool}.
const HEADER_FIELD_SIZE: u64 = 40;
/// Fields looked at for a `traceparent` the application set itself; grpc-go's own come first
/// (about ten), then the outgoing metadata.
const MAX_FIELDS: u64 = 32;

fn tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// A RET of `transport.(*http2Client).createHeaderFields`: results `([]hpack.HeaderField,
/// error)`, the slice as (pointer, length, capacity).
#[uprobe]
pub fn go_grpc_client_fields(ctx: ProbeContext) -> u32 {
    let _ = try_fields(&ctx);
    0
}

fn try_fields(ctx: &ProbeContext) -> Option<()> {
    let tgid = tgid();
    let cfg = target(tgid)?;
    if cfg.flags & TargetConfig::FLAG_GRPC_PROPAGATE == 0 {
        return None;
    }
    let fields = abi::arg(ctx, 0);
    if fields == 0 || abi::arg(ctx, 3) != 0 {
        return None;
    }
    let g = abi::current_g(ctx);
    // SAFETY: copied out at once.
    let starting = unsafe { GRPC_CLIENT_STARTING.get(&GoroutineKey { tgid, _pad: 0, g }) }?;
    let pending = PendingTraceparent {
        trace: starting.trace,
        // SAFETY: plain helper call.
        set_ns: unsafe { bpf_ktime_get_ns() },
        tgid,
        _pad: 0,
    };
    let key = GrpcHeaderFieldsKey {
        tgid,
        _pad: 0,
        fields,
    };
    let _ = GRPC_HEADER_FIELDS.insert(&key, &pending, 0);
    Some(())
}

/// `(*loopyWriter).writeHeader(streamID uint32, endStream bool, hf []hpack.HeaderField,
/// onWrite func())` entry, on the connection's writer goroutine.
#[uprobe]
pub fn go_grpc_write_header(ctx: ProbeContext) -> u32 {
    let _ = try_write_header(&ctx);
    0
}

const ARG_LOOPY: usize = 0;
const ARG_STREAM_ID: usize = 1;
const ARG_FIELDS: usize = 3;
const ARG_FIELDS_LEN: usize = 4;

fn try_write_header(ctx: &ProbeContext) -> Option<()> {
    let tgid = tgid();
    let key = GrpcHeaderFieldsKey {
        tgid,
        _pad: 0,
        fields: abi::arg(ctx, ARG_FIELDS),
    };
    // Server transports write headers here too; only client streams have an entry.
    // SAFETY: copied out at once.
    let pending = unsafe { GRPC_HEADER_FIELDS.get(&key) }.copied()?;
    let _ = GRPC_HEADER_FIELDS.remove(&key);
    let cfg = target(tgid)?;
    if has_traceparent(cfg, key.fields, abi::arg(ctx, ARG_FIELDS_LEN)) {
        return None;
    }
    let loopy = abi::arg(ctx, ARG_LOOPY);
    let framer = read::pointer(loopy + cfg.offset(GoField::GrpcLoopyFramer)?).ok()?;
    let writer = read::pointer(framer + cfg.offset(GoField::GrpcFramerWriter)?).ok()?;
    // The interface's data word: the *net.TCPConn of a plaintext connection. A TLS
    // connection reads as no TCP connection (and its bytes could not be changed anyway).
    let conn = read::pointer(writer + cfg.offset(GoField::GrpcBufWriterConn)? + 8).ok()?;
    let conn = netconn::tcp_conn_key(cfg, conn)?;
    let stream = H2StreamKey {
        conn,
        stream_id: abi::arg(ctx, ARG_STREAM_ID) as u32,
        _pad: 0,
    };
    let _ = H2_PENDING.insert(&stream, &pending, 0);
    // The frame is about to be appended to the bytes already buffered: that is where it will
    // start in the connection's next write, a boundary the sk_msg program can resync from.
    let buffered = read::user::<u64>(writer + cfg.offset(GoField::GrpcBufWriterOffset)?)
        .ok()
        .filter(|&b| b < u32::MAX as u64);
    match H2_CONNS.get_ptr_mut(&conn) {
        Some(state) => {
            // SAFETY: a pointer into the map value; the sk_msg program only acts on a hint
            // that names a HEADERS frame of this stream where it says, so a torn update of
            // the two words is harmless.
            let st = unsafe { &mut *state };
            // The first HEADERS frame buffered since the last write is the hint: a walk that
            // starts there passes every later one in the same write. Each write consumes
            // it; it is set even while the framing is known, in case a write before that
            // one loses it.
            if st.hint_stream == 0 {
                if let Some(at) = buffered {
                    st.hint_at = at as u32;
                    st.hint_stream = stream.stream_id;
                }
            }
        }
        None => {
            let state = H2ConnState {
                tgid,
                hint_at: buffered.unwrap_or(0) as u32,
                hint_stream: buffered.map_or(0, |_| stream.stream_id),
                ..H2ConnState::default()
            };
            // NOEXIST: the sk_msg program may have created it meanwhile; keep what it knows.
            let _ = H2_CONNS.insert(&conn, &state, BPF_NOEXIST as u64);
        }
    }
    Some(())
}

/// Whether the application already put a `traceparent` in the RPC's metadata (then the
/// wire keeps that one).
#[inline(always)]
fn has_traceparent(cfg: &TargetConfig, fields: u64, len: u64) -> bool {
    let Some(name_off) = cfg.offset(GoField::GrpcHeaderFieldName) else {
        return false;
    };
    let mut i = 0;
    while i < MAX_FIELDS && i < len {
        let field = fields + i * HEADER_FIELD_SIZE + name_off;
        if let Ok([ptr, 11]) = read::user::<[u64; 2]>(field) {
            if read::user::<[u8; 11]>(ptr).is_ok_and(|n| &n == b"traceparent") {
                return true;
            }
        }
        i += 1;
    }
    false
}
