//! The kernel's view of our uprobes in a target: a uprobe is an int3 (0xCC) the kernel wrote
//! into the process's copy of the code page, so comparing the process's memory with the file
//! shows exactly which probes are in place.

use std::{
    io::{Read, Seek, SeekFrom},
    path::Path,
};

/// The file offsets `spanhook inspect --json` says `attach` probes in `binary` by default
/// (opt-in probes excluded).
pub fn planned_offsets(binary: &Path) -> Vec<u64> {
    let out = super::run_spanhook(&["inspect", "--json", binary.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "inspect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["probes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["opt_in"] == false)
        .map(|p| p["offset"].as_u64().unwrap())
        .collect()
}

/// Address in `pid` where file offset `offset` of its executable is mapped.
fn address_of(pid: u32, offset: u64) -> u64 {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    for line in maps.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 6 || Path::new(cols[5]) != exe {
            continue;
        }
        let (start, end) = cols[0].split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        let file_off = u64::from_str_radix(cols[2], 16).unwrap();
        if offset >= file_off && offset < file_off + (end - start) {
            return start + (offset - file_off);
        }
    }
    panic!(
        "offset {offset:#x} of {} is not mapped in pid {pid}",
        exe.display()
    );
}

/// For each offset: the byte in the running process and the byte in the file.
pub fn bytes_at(pid: u32, binary: &Path, offsets: &[u64]) -> Vec<(u8, u8)> {
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut file = std::fs::File::open(binary).unwrap();
    offsets
        .iter()
        .map(|&off| {
            let mut live = [0u8];
            mem.seek(SeekFrom::Start(address_of(pid, off))).unwrap();
            mem.read_exact(&mut live).unwrap();
            let mut orig = [0u8];
            file.seek(SeekFrom::Start(off)).unwrap();
            file.read_exact(&mut orig).unwrap();
            (live[0], orig[0])
        })
        .collect()
}

/// Panics unless every offset holds a uprobe breakpoint.
pub fn assert_probed(pid: u32, binary: &Path, offsets: &[u64]) {
    for (i, (live, orig)) in bytes_at(pid, binary, offsets).into_iter().enumerate() {
        assert_eq!(
            live, 0xcc,
            "no uprobe at offset {:#x} (file byte {orig:#x})",
            offsets[i]
        );
        assert_ne!(orig, 0xcc);
    }
}

/// Panics unless the process's code equals the file at every offset.
pub fn assert_clean(pid: u32, binary: &Path, offsets: &[u64]) {
    for (i, (live, orig)) in bytes_at(pid, binary, offsets).into_iter().enumerate() {
        assert_eq!(live, orig, "a uprobe remains at offset {:#x}", offsets[i]);
    }
}
