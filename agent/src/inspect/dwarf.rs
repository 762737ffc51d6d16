//! Struct layouts from DWARF debug info: where a field lives inside a Go struct.
//!
//! Go writes one `DW_TAG_structure_type` per type, named with the full import path
//! (`net/http.Request`), whose `DW_TAG_member` children carry `DW_AT_data_member_location`.
//! Go's linker compresses the debug sections with zlib (`SHF_COMPRESSED`, or `.zdebug_*`
//! before Go 1.21), so `.debug_info` is inflated once and then walked entry by entry,
//! reading attributes only of structure types and of members of the wanted structures, and
//! stopping as soon as every wanted field is found.

use std::collections::HashMap;

use gimli::{
    constants, AttributeValue, DebugAbbrev, DebugAbbrevOffset, DebugInfo, DebugStr, EndianSlice,
    LittleEndian,
};

use super::elf::ElfFile;

/// Why struct layouts could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DwarfError {
    /// The binary has no DWARF (built with `-ldflags=-w` or stripped).
    #[error("no DWARF debug info (the binary was built with -w or stripped)")]
    NoDebugInfo,
    /// The debug info cannot be decompressed or parsed.
    #[error("malformed DWARF debug info: {0}")]
    Malformed(String),
}

impl From<gimli::Error> for DwarfError {
    fn from(e: gimli::Error) -> Self {
        DwarfError::Malformed(e.to_string())
    }
}

type Slice<'a> = EndianSlice<'a, LittleEndian>;

/// Finds `DW_AT_data_member_location` of each `(type, field)` in `wanted`: the type as DWARF
/// spells it (`net/http.Request`, `runtime.g`), the field by its Go name (`Method`, `goid`).
/// Pairs not found are absent from the map.
pub fn struct_field_offsets(
    elf: &ElfFile,
    wanted: &[(&str, &str)],
) -> Result<HashMap<(String, String), u64>, DwarfError> {
    let malformed = |e: super::elf::ElfError| DwarfError::Malformed(e.to_string());
    let info = elf
        .try_section(".debug_info")
        .map_err(malformed)?
        .ok_or(DwarfError::NoDebugInfo)?;
    let abbrev = elf
        .try_section(".debug_abbrev")
        .map_err(malformed)?
        .ok_or_else(|| DwarfError::Malformed("there is .debug_info but no .debug_abbrev".into()))?;
    let strings = elf.try_section(".debug_str").map_err(malformed)?;
    let strings: &[u8] = strings.as_ref().map_or(&[], |s| &s.data);

    let debug_info = DebugInfo::new(&info.data, LittleEndian);
    let debug_abbrev = DebugAbbrev::new(&abbrev.data, LittleEndian);
    let debug_str = DebugStr::new(strings, LittleEndian);

    // type name → the fields wanted from it
    let mut fields_of: HashMap<&[u8], Vec<&str>> = HashMap::new();
    for (ty, field) in wanted {
        let fields = fields_of.entry(ty.as_bytes()).or_default();
        if !fields.contains(field) {
            fields.push(field);
        }
    }
    let total: usize = fields_of.values().map(Vec::len).sum();
    let mut found = HashMap::with_capacity(total);

    // Go writes a single abbreviation table shared by every unit: parse it once.
    let mut abbreviations: Option<(DebugAbbrevOffset, gimli::Abbreviations)> = None;
    let mut units = debug_info.units();
    while let Some(unit) = units.next()? {
        if found.len() == total {
            break;
        }
        let offset = unit.debug_abbrev_offset();
        if abbreviations.as_ref().is_none_or(|(o, _)| *o != offset) {
            abbreviations = Some((offset, unit.abbreviations(&debug_abbrev)?));
        }
        let Some((_, abbrevs)) = &abbreviations else {
            unreachable!("just set")
        };
        scan_unit(&unit, abbrevs, &debug_str, &fields_of, total, &mut found)?;
    }
    Ok(found)
}

/// Walks one unit's entries, adding the wanted members to `found`.
fn scan_unit<'a>(
    unit: &gimli::UnitHeader<Slice<'a>>,
    abbrevs: &gimli::Abbreviations,
    debug_str: &DebugStr<Slice<'a>>,
    fields_of: &HashMap<&[u8], Vec<&str>>,
    total: usize,
    found: &mut HashMap<(String, String), u64>,
) -> Result<(), DwarfError> {
    let mut entries = unit.entries_raw(abbrevs, None)?;
    // The wanted structure whose members are being read, and its depth.
    let mut current: Option<(&[u8], &Vec<&str>, isize)> = None;
    while !entries.is_empty() {
        let depth = entries.next_depth();
        let Some(abbrev) = entries.read_abbreviation()? else {
            continue;
        };
        if current.is_some_and(|(_, _, d)| depth <= d) {
            current = None;
        }
        match abbrev.tag() {
            constants::DW_TAG_structure_type => {
                let mut name = None;
                for spec in abbrev.attributes() {
                    let attr = entries.read_attribute(*spec)?;
                    if attr.name() == constants::DW_AT_name {
                        name = string(attr.value(), debug_str);
                    }
                }
                current = name.and_then(|n| {
                    let (key, fields) = fields_of.get_key_value(n)?;
                    Some((*key, fields, depth))
                });
            }
            constants::DW_TAG_member if current.is_some_and(|(_, _, d)| depth == d + 1) => {
                let (ty, fields, _) = current.expect("checked");
                let mut name = None;
                let mut location = None;
                for spec in abbrev.attributes() {
                    let attr = entries.read_attribute(*spec)?;
                    match attr.name() {
                        constants::DW_AT_name => name = string(attr.value(), debug_str),
                        constants::DW_AT_data_member_location => {
                            location = member_location(attr.value())
                        }
                        _ => {}
                    }
                }
                if let (Some(name), Some(location)) = (name, location) {
                    if let Some(field) = fields.iter().find(|f| f.as_bytes() == name) {
                        let key = (String::from_utf8_lossy(ty).into_owned(), field.to_string());
                        found.entry(key).or_insert(location);
                        if found.len() == total {
                            return Ok(());
                        }
                    }
                }
            }
            _ => entries.skip_attributes(abbrev.attributes())?,
        }
    }
    Ok(())
}

/// The bytes of a string attribute (inline or in `.debug_str`).
fn string<'a>(
    value: AttributeValue<Slice<'a>>,
    debug_str: &DebugStr<Slice<'a>>,
) -> Option<&'a [u8]> {
    match value {
        AttributeValue::String(s) => Some(s.slice()),
        AttributeValue::DebugStrRef(offset) => debug_str.get_str(offset).ok().map(|s| s.slice()),
        _ => None,
    }
}

/// A member's offset: a constant (what Go writes), or the DWARF 2 form, an expression
/// `DW_OP_plus_uconst N`.
fn member_location(value: AttributeValue<Slice<'_>>) -> Option<u64> {
    if let Some(n) = value.udata_value() {
        return Some(n);
    }
    if let AttributeValue::Sdata(n) = value {
        return u64::try_from(n).ok();
    }
    let expr = match value {
        AttributeValue::Exprloc(e) => e.0.slice(),
        AttributeValue::Block(b) => b.slice(),
        _ => return None,
    };
    let (&op, rest) = expr.split_first()?;
    if op != constants::DW_OP_plus_uconst.0 {
        return None;
    }
    let mut value: u64 = 0;
    for (i, &b) in rest.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f).checked_shl(7 * i as u32)?;
        if b & 0x80 == 0 {
            return (i + 1 == rest.len()).then_some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::golang::{fixtures, GoVersion};

    const WANTED: &[(&str, &str)] = &[
        ("net/http.Request", "Method"),
        ("net/http.Request", "URL"),
        ("net/http.Request", "Host"),
        ("net/url.URL", "Path"),
        ("runtime.g", "goid"),
        ("net/http.Request", "NoSuchField"),
        ("no/such.Type", "X"),
    ];

    fn goid_offset(v: GoVersion) -> u64 {
        match v.minor {
            ..=22 => 152,
            23..=24 => 160,
            _ => 152,
        }
    }

    #[test]
    fn field_offsets_of_every_unstripped_fixture() {
        let unstripped: Vec<_> = fixtures::all()
            .into_iter()
            .filter(|f| !f.stripped)
            .collect();
        assert!(!unstripped.is_empty());
        for f in unstripped {
            let elf = ElfFile::open(&f.path).unwrap();
            let got = struct_field_offsets(&elf, WANTED).unwrap();
            let at = |t: &str, field: &str| got.get(&(t.to_string(), field.to_string())).copied();
            let ctx = f.path.display();
            assert_eq!(at("net/http.Request", "Method"), Some(0), "{ctx}");
            assert_eq!(at("net/http.Request", "URL"), Some(16), "{ctx}");
            assert_eq!(at("net/http.Request", "Host"), Some(128), "{ctx}");
            assert_eq!(at("net/url.URL", "Path"), Some(56), "{ctx}");
            assert_eq!(
                at("runtime.g", "goid"),
                Some(goid_offset(f.version())),
                "{ctx}"
            );
            assert_eq!(got.len(), 5, "{ctx}: {got:?}");
        }
    }

    #[test]
    fn stripped_binaries_have_no_debug_info() {
        for f in fixtures::all().into_iter().filter(|f| f.stripped) {
            let elf = ElfFile::open(&f.path).unwrap();
            assert!(matches!(
                struct_field_offsets(&elf, WANTED),
                Err(DwarfError::NoDebugInfo)
            ));
        }
    }

    #[test]
    fn nothing_wanted_reads_nothing() {
        let f = &fixtures::variant("plain")[0];
        let elf = ElfFile::open(&f.path).unwrap();
        assert!(struct_field_offsets(&elf, &[]).unwrap().is_empty());
    }

    #[test]
    fn member_locations_in_both_forms() {
        let block = [constants::DW_OP_plus_uconst.0, 0x90, 0x01];
        let expr = gimli::Expression(EndianSlice::new(&block, LittleEndian));
        assert_eq!(member_location(AttributeValue::Exprloc(expr)), Some(144));
        assert_eq!(member_location(AttributeValue::Udata(56)), Some(56));
        assert_eq!(member_location(AttributeValue::Data1(8)), Some(8));
        let other = [constants::DW_OP_lit1.0];
        let expr = gimli::Expression(EndianSlice::new(&other, LittleEndian));
        assert_eq!(member_location(AttributeValue::Exprloc(expr)), None);
        let truncated = [constants::DW_OP_plus_uconst.0, 0x90];
        let expr = gimli::Expression(EndianSlice::new(&truncated, LittleEndian));
        assert_eq!(member_location(AttributeValue::Exprloc(expr)), None);
    }
}
