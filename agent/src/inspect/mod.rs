//! What a target binary is and where its functions are, read from the file alone (no root).
//!
//! `elf` opens the file and maps virtual addresses to file offsets; `golang` reads Go's own
//! tables (`.gopclntab`, `.go.buildinfo`); `dwarf` reads struct layouts when debug info is
//! present; `entry` picks where a function's entry probe goes, and `returns` finds the RET
//! instructions of a function for return probes.

pub mod dwarf;
pub mod elf;
pub mod entry;
pub mod golang;
pub mod native;
pub mod process;
pub mod returns;
pub mod rust;
