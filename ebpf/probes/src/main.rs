//! spanhook's kernel programs.
//!
//! Entry points are thin: each `#[uprobe]` function calls a `try_…` function returning
//! `Result` and turns an error into a return code, so nothing in kernel code panics.
#![no_std]
#![no_main]

mod discovery;
mod emit;
mod go;
mod maps;
mod read;
mod rust;
mod scan;
mod socket;
mod traceparent;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this is never executed.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
