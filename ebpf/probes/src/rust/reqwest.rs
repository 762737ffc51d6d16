//! reqwest: where a call starts on the caller's task, and where it fails.
//!
//! `reqwest::into_url::try_uri(&Url) -> Result<Uri>` runs on the task that awaits the call,
//! right when the request is handed to the client: the client span starts at its return, with
//! the URL and, as parent, the server span in progress on that task. The `Uri` it returns is
//! parsed from a copy of the URL and keeps pointing into that copy; the request's path keeps
//! those bytes all the way to the hyper connection task that writes it, so the call is filed
//! under the address of its path bytes, which `role::Client::encode` finds in the request head
//! it encodes (see hyper.rs): an exact pairing, even for concurrent calls to the same URL. `reqwest::error::{request, Error::new}` build the error a failed call returns,
//! on the same task: their return ends a call that got no response, and the error's source
//! names its type (the `Debug::fmt` of the `dyn Error`'s vtable, named by user space).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use spanhook_common::{Counter, EventHeader, EventKind, RustPtrKey, TargetConfig, TraceIds};

use super::{
    head::{self, PAD},
    hyper::{emit_client, finish_client},
    maps::{RUST_CALLS, RUST_CALL_PATHS, RUST_TASK_CONN, RUST_URI_RESULT},
    task,
};
use crate::{emit::count, maps::TARGETS, read, traceparent};

#[inline(always)]
fn key(tgid: u32, ptr: u64) -> RustPtrKey {
    RustPtrKey { tgid, _pad: 0, ptr }
}

/// Words of `try_uri`'s result examined for the `Uri`'s pointers.
const URI_WORDS: usize = 16;

/// Entry of `reqwest::into_url::try_uri` or `http::uri::Uri::from_shared`: both return a
/// `Result<Uri, _>` through a hidden pointer, which is kept for the return (LLVM does not always
/// hand it back in RAX, e.g. after fat LTO).
#[uprobe]
pub fn rust_reqwest_call_entry(ctx: ProbeContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: presence only.
    if unsafe { TARGETS.get(&tgid) }.is_none() {
        return 0;
    }
    #[cfg(bpf_target_arch = "x86_64")]
    let result: u64 = ctx.arg(0).unwrap_or(0);
    #[cfg(not(bpf_target_arch = "x86_64"))]
    // SAFETY: `regs` points at the probe's saved registers; x8 carries the hidden pointer.
    let result: u64 = unsafe { (*ctx.regs).regs[8] };
    let _ = RUST_URI_RESULT.insert(&bpf_get_current_pid_tgid(), &result, 0);
    0
}

/// `reqwest::into_url::try_uri` (or `Uri::from_shared`) return.
#[uretprobe]
pub fn rust_reqwest_call(ctx: RetProbeContext) -> u32 {
    let _ = try_call(&ctx);
    0
}

fn try_call(_ctx: &RetProbeContext) -> Option<()> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: copied out at once.
    let flags = unsafe { TARGETS.get(&tgid) }?.flags;
    let task = if flags & TargetConfig::FLAG_RUST_TASKS != 0 {
        task::current()
    } else {
        0
    };
    if task == 0 {
        // Without the caller's task the call cannot be told apart from others.
        return None;
    }
    // The result (`Result<Uri, Error>`) comes back through the hidden return pointer, kept by
    // the entry probe.
    let id = bpf_get_current_pid_tgid();
    // SAFETY: copied out at once.
    let result = unsafe { RUST_URI_RESULT.get(&id) }.copied()?;
    let _ = RUST_URI_RESULT.remove(&id);
    let words = read::user::<[u64; URI_WORDS]>(result).ok()?;
    // The `Uri` was parsed from a copy of the URL and its parts point into that copy: the
    // authority right after `://`, from which the whole URL is found.
    let mut url = 0u64;
    let mut i = 0;
    while i < URI_WORDS {
        let w = words[i];
        if url == 0 && w > 0x10000 && w < 0x0000_8000_0000_0000 {
            if let Ok(b) = read::user::<[u8; 8]>(w - 8) {
                if &b[5..] == b"://" {
                    url = if b[0] == b'h' { w - 8 } else { w - 7 };
                }
            }
        }
        i += 1;
    }
    if url == 0 {
        return None;
    }
    let s = head::scratch()?;
    let n = head::copy_user_upto(s, url)?;
    let st = head::scan_url_bytes(s, n);
    let path_start = st.path as usize;
    if path_start == 0 {
        return None;
    }
    let end = if st.query != 0 {
        st.query as usize
    } else if st.line_end != 0 {
        // The copy ran past the URL: it ends at the first byte that cannot be in one.
        st.line_end as usize
    } else {
        PAD + n
    };
    // The path's address, as the request's `Uri` will hold it on the connection's task.
    let path_ptr = url + (path_start - PAD) as u64;
    // The copy runs past the URL into whatever follows it in memory: the path's `Bytes`
    // (pointer and length, side by side; its other words are pointers) bounds it.
    let mut path_len = 0u64;
    let mut i = 1;
    while i + 1 < URI_WORDS {
        if words[i] == path_ptr {
            if words[i + 1] > 0 && words[i + 1] < 4096 {
                path_len = words[i + 1];
            } else if words[i - 1] > 0 && words[i - 1] < 4096 {
                path_len = words[i - 1];
            }
        }
        i += 1;
    }
    if path_len == 0 {
        return None;
    }
    let path_end = path_start + path_len as usize;
    let end = if end > path_end { path_end } else { end };
    // SAFETY: per-CPU scratch.
    let call = unsafe { &mut (*s).client };
    let ev = &mut call.event;
    ev.header = EventHeader {
        kind: EventKind::RustHttpClient as u16,
        _pad: 0,
        tgid,
        // SAFETY: plain helper call.
        start_ns: unsafe { bpf_ktime_get_ns() },
        end_ns: 0,
    };
    ev.task = task;
    match task::span_of(tgid, task) {
        Some(parent) => {
            ev.trace.trace_id = parent.trace_id;
            ev.trace.parent_span_id = parent.span_id;
            ev.trace.flags = parent.flags;
            ev.trace.origin = TraceIds::ORIGIN_TASK;
            traceparent::random_bytes(&mut ev.trace.span_id);
        }
        None => traceparent::new_root(&mut ev.trace),
    }
    ev.error_fn = [0; 4];
    ev.status = 0;
    ev.minor = 0;
    ev.failed = 0;
    ev.propagated = 0;
    ev.full_url = 1;
    ev._pad = [0; 2];
    ev._tail = 0;
    ev.method.len = 0;
    ev.host.len = 0;
    head::copy_out(s, PAD, end, &mut ev.url);
    call._pad0 = 0;
    call._pad = 0;
    if RUST_CALLS.insert(&key(tgid, task), call, 0).is_err() {
        count(Counter::InflightInsertFailed);
        return None;
    }
    let _ = RUST_CALL_PATHS.insert(&key(tgid, path_ptr), &task, 0);
    Some(())
}

/// Return of `reqwest::error::request` or `reqwest::error::Error::new`: the call of this task
/// failed, unless its response already came.
#[uretprobe]
pub fn rust_reqwest_error(ctx: RetProbeContext) -> u32 {
    let _ = try_error(&ctx);
    0
}

fn try_error(ctx: &RetProbeContext) -> Option<()> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: presence only.
    unsafe { TARGETS.get(&tgid) }?;
    let task = task::current();
    if task == 0 {
        return None;
    }
    let error: u64 = ctx.ret();
    let error_fn = source_type(error);
    let k = key(tgid, task);
    // Not written yet (no connection: refused, DNS, ...).
    // SAFETY: valid while this program runs.
    if let Some(call) = unsafe { RUST_CALLS.get(&k) } {
        emit_client(&call.event, 0, 0, error_fn);
        let _ = RUST_CALLS.remove(&k);
        return Some(());
    }
    // Written, and no response (a timeout, a reset).
    // SAFETY: copied out at once.
    let Some(conn) = (unsafe { RUST_TASK_CONN.get(&k) }).copied() else {
        count(Counter::RustClientUnmatched);
        return None;
    };
    finish_client(tgid, conn, 0, 0, error_fn)
}

/// Words of reqwest's error `Inner` examined for the source's vtable.
const SOURCE_WORDS: usize = 24;

/// `drop_in_place::<reqwest::async_impl::client::Pending>` (or `PendingRequest`) entry: the
/// caller is done with its call. A call still waiting for its response here ended without
/// one and without an error the probes saw: reqwest's own timeout (built inline, with no
/// function to probe) or the caller dropping the call.
#[uprobe]
pub fn rust_reqwest_dropped(_ctx: ProbeContext) -> u32 {
    let _ = try_dropped();
    0
}

fn try_dropped() -> Option<()> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: presence only.
    unsafe { TARGETS.get(&tgid) }?;
    let task = task::current();
    if task == 0 {
        return None;
    }
    let k = key(tgid, task);
    // SAFETY: valid while this program runs.
    if let Some(call) = unsafe { RUST_CALLS.get(&k) } {
        emit_client(&call.event, 0, 0, [NO_RESPONSE, 0, 0, 0]);
        let _ = RUST_CALLS.remove(&k);
        return Some(());
    }
    // SAFETY: copied out at once.
    let conn = (unsafe { RUST_TASK_CONN.get(&k) }).copied()?;
    finish_client(tgid, conn, 0, 0, [NO_RESPONSE, 0, 0, 0])
}

/// `error_fn` of a call that ended without a response or an error object (see
/// [`rust_reqwest_dropped`]).
pub const NO_RESPONSE: u64 = 1;

/// Candidates for the `Debug::fmt` of the error's source: `Box<Inner>` holds
/// `source: Option<Box<dyn Error>>` among its first words, and a `dyn` vtable starts
/// (drop, size, align, Debug::fmt, …). Words past the end of `Inner` belong to other heap
/// objects and may look alike, so up to four are sent in order and user space keeps the
/// first that its symbol table names a `Debug::fmt`.
#[inline(always)]
fn source_type(error: u64) -> [u64; 4] {
    let mut found = [0u64; 4];
    let Ok(words) = read::user::<[u64; SOURCE_WORDS]>(error) else {
        return found;
    };
    let mut n = 0usize;
    let mut i = 1;
    while i < SOURCE_WORDS {
        let vt = words[i];
        if n < 4 && vt > 0x10000 && vt < 0x0000_8000_0000_0000 && vt & 7 == 0 {
            if let Ok([_, size, align, fmt]) = read::user::<[u64; 4]>(vt) {
                let align_ok = align == 1 || align == 2 || align == 4 || align == 8 || align == 16;
                if align_ok && size < (1 << 20) && size % align == 0 && fmt > 0x10000 {
                    found[n & 3] = fmt;
                    n += 1;
                }
            }
        }
        i += 1;
    }
    found
}
