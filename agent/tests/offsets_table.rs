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

#[test]
fn the_embedded_grpc_rows_match_dwarf_for_every_grpc_release_built() {
    let table = OffsetTable::embedded();
    let fields: Vec<GoField> = GoField::ALL
        .iter()
        .copied()
        .filter(|f| f.module() == "google.golang.org/grpc")
        .collect();
    let wanted: Vec<(&str, &str)> = fields
        .iter()
        .map(|f| (f.type_name(), f.field_name()))
        .collect();
    let mut checked = 0;
    for f in go_fixtures()
        .into_iter()
        .filter(|f| f.program.starts_with("grpcchain-grpc-") && !f.stripped)
    {
        let elf = ElfFile::open(&f.path).unwrap();
        let go = golang::analyze(&elf).unwrap().unwrap();
        let grpc = go
            .build
            .deps
            .iter()
            .find(|m| m.path == "google.golang.org/grpc")
            .unwrap_or_else(|| panic!("{}: no grpc module", f.label()));
        let version = parse_version(&grpc.version);
        let found = dwarf::struct_field_offsets(&elf, &wanted).unwrap();
        for field in &fields {
            let from_dwarf = found
                .get(&(
                    field.type_name().to_string(),
                    field.field_name().to_string(),
                ))
                .copied();
            let from_table = table
                .lookup(
                    "google.golang.org/grpc",
                    field.type_name(),
                    field.field_name(),
                    version,
                )
                .map(|(o, _)| o as u64);
            // A field the release does not have is absent from both.
            assert_eq!(
                from_table,
                from_dwarf,
                "{} (grpc {}): {}.{} (run `cargo xtask offsets`)",
                f.label(),
                grpc.version,
                field.type_name(),
                field.field_name()
            );
        }
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} gRPC builds with DWARF");
}

fn parse_version(v: &str) -> (u32, u32, u32) {
    let mut parts = v
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}
