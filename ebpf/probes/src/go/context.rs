//! Which span caused a call: the rule that links a client span to its parent.
//!
//! In order, the first that applies wins:
//! 1. the request's `context.Context` descends (within [`MAX_DEPTH`] links) from the context
//!    of a server request in progress — right for worker pools and fan-out that pass the
//!    context, whichever goroutine makes the call;
//! 2. a server request (HTTP or gRPC) is in progress on the calling goroutine;
//! 3. the calling goroutine was started by a goroutine serving a request (Go 1.21+, from
//!    `runtime.g.parentGoid`; one level only).
//!
//! Otherwise the call starts a new trace. Contexts are followed through their first field:
//! every context type of the standard library embeds its parent there (valueCtx, cancelCtx,
//! timerCtx, withoutCancelCtx, afterFuncCtx); a third-party context that does not stops the walk.

use spanhook_common::{ContextKey, GoField, GoidKey, GoroutineKey, TargetConfig, TraceIds};

use crate::{
    go::grpc::GRPC_SERVER_INFLIGHT,
    maps::{CONTEXT_SPANS, GOID_SPANS, HTTP_SERVER_INFLIGHT},
    read,
};

/// Links of a context chain followed at most.
pub const MAX_DEPTH: usize = 12;

/// The data word of the `context.Context` interface stored at `addr`.
#[inline(always)]
pub fn context_data(addr: u64) -> u64 {
    // An interface is (type word, data word).
    read::user::<u64>(addr + 8).unwrap_or(0)
}

/// The parent span of a call made on goroutine `g` with context data `ctx`, and how it was
/// found (a `TraceIds::ORIGIN_*` value).
#[inline(always)]
pub fn parent(cfg: &TargetConfig, tgid: u32, g: u64, ctx: u64) -> Option<(TraceIds, u8)> {
    let mut key = ContextKey { tgid, _pad: 0, ctx };
    let mut depth = 0;
    while depth < MAX_DEPTH {
        if key.ctx == 0 {
            break;
        }
        // SAFETY: copied out at once.
        if let Some(ids) = unsafe { CONTEXT_SPANS.get(&key) } {
            return Some((*ids, TraceIds::ORIGIN_CONTEXT));
        }
        key.ctx = context_data(key.ctx);
        depth += 1;
    }
    let gkey = GoroutineKey { tgid, _pad: 0, g };
    // SAFETY: copied out at once.
    if let Some(server) = unsafe { HTTP_SERVER_INFLIGHT.get(&gkey) } {
        return Some((server.trace, TraceIds::ORIGIN_GOROUTINE));
    }
    // SAFETY: copied out at once.
    if let Some(server) = unsafe { GRPC_SERVER_INFLIGHT.get(&gkey) } {
        return Some((server.trace, TraceIds::ORIGIN_GOROUTINE));
    }
    let off = cfg.offset(GoField::GoroutineParentId)?;
    let goid = read::user::<u64>(g + off).ok()?;
    // SAFETY: copied out at once.
    let ids = unsafe {
        GOID_SPANS.get(&GoidKey {
            tgid,
            _pad: 0,
            goid,
        })
    }?;
    Some((*ids, TraceIds::ORIGIN_PARENT_GOROUTINE))
}
