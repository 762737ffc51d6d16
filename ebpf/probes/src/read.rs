//! Reading the traced program's memory.

use aya_ebpf::helpers::{bpf_probe_read_user, generated};
use spanhook_common::Str;

/// Reads a `T` at `addr` in the current process.
#[inline(always)]
pub fn user<T>(addr: u64) -> Result<T, i32> {
    // SAFETY: the helper validates the address; a bad one returns an error, never faults.
    unsafe { bpf_probe_read_user(addr as *const T) }
}

/// Reads the pointer stored at `addr`, refusing nil.
#[inline(always)]
pub fn pointer(addr: u64) -> Result<u64, i32> {
    match user::<u64>(addr)? {
        0 => Err(-1),
        p => Ok(p),
    }
}

/// Copies the Go string whose header (`ptr`, `len`) is at `addr` into `out`.
#[inline(always)]
pub fn go_string<const N: usize>(addr: u64, out: &mut Str<N>) -> Result<(), i32> {
    let [ptr, len] = user::<[u64; 2]>(addr)?;
    out.len = if len > u32::MAX as u64 {
        u32::MAX
    } else {
        len as u32
    };
    let n = if len > N as u64 { N as u32 } else { len as u32 };
    if n == 0 || ptr == 0 {
        return Ok(());
    }
    // SAFETY: `n <= N` keeps the write inside `out.bytes`.
    let rc = unsafe {
        generated::bpf_probe_read_user(
            out.bytes.as_mut_ptr().cast(),
            n,
            ptr as *const core::ffi::c_void,
        )
    };
    if rc < 0 {
        out.len = 0;
        return Err(rc as i32);
    }
    Ok(())
}
