//! The struct-offsets table: `OffsetTable::parse` of arbitrary text, then lookups.
//!
//! Seeds (written by `cargo xtask fuzz`): the embedded table and small variants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spanhook::plan::offsets::{parse_version, OffsetTable, Version};

const VERSIONS: &[Version] = &[
    (0, 0, 0),
    (1, 17, 0),
    (1, 22, 12),
    (1, 27, 4),
    (u32::MAX, u32::MAX, u32::MAX),
];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = parse_version(&text);
    let table = match OffsetTable::parse(&text) {
        Ok(table) => table,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    for row in table.rows().iter().take(64) {
        let _ = table.newest(&row.module);
        for &version in VERSIONS {
            if let Some((_, range)) = table.lookup(&row.module, &row.ty, &row.field, version) {
                assert!(range.contains('-'));
            }
        }
        if let Some(version) = parse_version(&row.range) {
            let _ = table.lookup(&row.module, &row.ty, &row.field, version);
        }
    }
    let _ = table.lookup("std", "net/http.Request", "Method", (1, 22, 12));
});
