//! The embedded offsets table against the DWARF of every release in the fixture matrix: a
//! table that disagrees with a real build fails here (regenerate it with `cargo xtask offsets`).

mod support;

use spanhook::{
    inspect::{dwarf, elf::ElfFile, golang},
    plan::OffsetTable,
};
use spanhook_common::GoField;
use support::go_fixtures;

#[test]
fn the_embedded_table_matches_dwarf_for_every_release() {
    let table = OffsetTable::embedded();
    let fields: Vec<GoField> = GoField::ALL
        .iter()
        .copied()
        .filter(|f| f.module() == "std")
        .collect();
    let wanted: Vec<(&str, &str)> = fields
        .iter()
        .map(|f| (f.type_name(), f.field_name()))
        .collect();
    let mut checked = 0;
    for f in go_fixtures()
        .into_iter()
        .filter(|f| f.program == "httpserver" && !f.stripped)
    {
        let elf = ElfFile::open(&f.path).unwrap();
        let Some(go) = golang::analyze(&elf).ok().flatten() else {
            // Go 1.17 on arm64 predates the register ABI there; nothing is traced on it.
            assert_eq!(
                (f.go.as_str(), f.arch.as_str()),
                ("1.17.13", "arm64"),
                "{}",
                f.label()
            );
            continue;
        };
        let version = (go.version.major, go.version.minor, go.version.patch);
        let found = dwarf::struct_field_offsets(&elf, &wanted).unwrap();
        for field in &fields {
            let from_dwarf = found
                .get(&(
                    field.type_name().to_string(),
                    field.field_name().to_string(),
                ))
                .copied();
            let from_table = table
                .lookup("std", field.type_name(), field.field_name(), version)
                .map(|(o, _)| o as u64);
            assert_eq!(
                from_table,
                from_dwarf,
                "{}: {}.{} (run `cargo xtask offsets`)",
                f.label(),
                field.type_name(),
                field.field_name()
            );
        }
        checked += 1;
    }
    assert!(checked >= 11, "only {checked} builds with DWARF");
}
