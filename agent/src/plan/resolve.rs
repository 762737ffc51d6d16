//! Binary facts + catalog + offsets → the uprobes to attach and the probes' configuration.

use std::collections::HashMap;

use spanhook_common::{GoField, TargetConfig};

use super::{
    catalog::{Capability, GO_PROBES},
    offsets::{parse_version, OffsetSource, OffsetTable},
};
use crate::{
    attach::UprobeSite,
    inspect::{
        dwarf,
        elf::{Arch, ElfFile},
        golang::{self, GoBinary, GoVersion},
        returns,
    },
};

/// Where one field's offset came from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FieldOffset {
    /// The field.
    #[serde(serialize_with = "field_name")]
    pub field: GoField,
    /// Offset in bytes.
    pub offset: u16,
    /// DWARF or the table.
    #[serde(flatten)]
    pub source: OffsetSource,
}

fn field_name<S: serde::Serializer>(f: &GoField, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{}.{}", f.type_name(), f.field_name()))
}

/// Whether and how a capability is traced in this binary.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum CapabilityOutcome {
    /// Probes will be attached.
    Traced {
        /// The probed function.
        symbol: String,
        /// File offset of its entry.
        entry_offset: u64,
        /// Number of RET instructions probed.
        returns: usize,
    },
    /// It cannot be traced, and why.
    NotTraced {
        /// A precise reason a user can act on.
        reason: String,
    },
}

/// One capability's outcome.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CapabilityPlan {
    /// The capability.
    pub capability: Capability,
    /// Traced or not, and details.
    #[serde(flatten)]
    pub outcome: CapabilityOutcome,
}

/// Everything needed to attach to one process, whatever its language.
#[derive(Clone, Debug, Default)]
pub struct TargetPlan {
    /// Configuration for the probes.
    pub config: TargetConfig,
    /// Uprobes to attach.
    pub sites: Vec<UprobeSite>,
    /// Per capability: traced or why not.
    pub capabilities: Vec<CapabilityPlan>,
    /// Every known struct-field offset and its source (Go).
    pub offsets: Vec<FieldOffset>,
    /// Things the user should know (e.g. a Go release newer than the offsets table).
    pub warnings: Vec<String>,
}

impl TargetPlan {
    /// Whether at least one capability will be traced.
    pub fn traces_anything(&self) -> bool {
        self.capabilities
            .iter()
            .any(|c| matches!(c.outcome, CapabilityOutcome::Traced { .. }))
    }

    /// Whether `capability` will be traced.
    pub fn traces(&self, capability: Capability) -> bool {
        self.capabilities.iter().any(|c| {
            c.capability == capability && matches!(c.outcome, CapabilityOutcome::Traced { .. })
        })
    }

    /// The reasons nothing is traced, one per capability.
    pub fn reasons(&self) -> Vec<String> {
        self.capabilities
            .iter()
            .filter_map(|c| match &c.outcome {
                CapabilityOutcome::NotTraced { reason } => {
                    Some(format!("{}: {reason}", c.capability.name()))
                }
                CapabilityOutcome::Traced { .. } => None,
            })
            .collect()
    }
}

/// Why a binary cannot be planned at all.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Built by a Go release older than the register ABI on this architecture.
    #[error("{path}: built with Go {version}, which spanhook cannot trace on {arch}: it needs Go {minimum} or later (the register-based calling convention)")]
    UnsupportedGoVersion {
        /// The binary.
        path: String,
        /// Its Go release.
        version: GoVersion,
        /// Its architecture.
        arch: &'static str,
        /// The oldest supported release there.
        minimum: &'static str,
    },
    /// Reading the function table failed.
    #[error(transparent)]
    Go(#[from] golang::GoError),
}

/// What the user asked for beyond the defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// Write `traceparent` into outgoing requests (`--propagate`).
    pub propagate: bool,
}

/// Plans the probes for a Go binary.
pub fn plan_go(
    elf: &ElfFile,
    go: &GoBinary,
    table: &OffsetTable,
    options: PlanOptions,
) -> Result<TargetPlan, PlanError> {
    let (arch, minimum) = match elf.arch() {
        Arch::X86_64 => ("amd64", GoVersion::new(1, 17, 0)),
        Arch::Aarch64 => ("arm64", GoVersion::new(1, 18, 0)),
    };
    if go.version < minimum {
        return Err(PlanError::UnsupportedGoVersion {
            path: elf.path().display().to_string(),
            version: go.version,
            arch,
            minimum: if arch == "amd64" { "1.17" } else { "1.18" },
        });
    }
    let mut warnings = Vec::new();
    let offsets = field_offsets(elf, go, table, &mut warnings);
    let known: HashMap<GoField, &FieldOffset> = offsets.iter().map(|o| (o.field, o)).collect();

    let symbols: Vec<&str> = GO_PROBES.iter().map(|p| p.symbol).collect();
    let functions = golang::find_functions(elf, &symbols)?;

    let mut config = TargetConfig::empty();
    for o in &offsets {
        config.set_offset(o.field, o.offset);
    }
    let mut sites = Vec::new();
    let mut capabilities = Vec::new();
    for probe in GO_PROBES {
        let outcome = (|| {
            if probe.opt_in && !options.propagate {
                return CapabilityOutcome::NotTraced {
                    reason: "opt-in: pass --propagate to write traceparent into outgoing HTTP/1 requests".into(),
                };
            }
            let Some(func) = functions.get(probe.symbol) else {
                return CapabilityOutcome::NotTraced {
                    reason: format!("{} is not in the binary (the program does not use this part of the library)", probe.symbol),
                };
            };
            let missing: Vec<String> = probe
                .required
                .iter()
                .filter(|f| !known.contains_key(f))
                .map(|f| format!("{}.{}", f.type_name(), f.field_name()))
                .collect();
            if !missing.is_empty() {
                return CapabilityOutcome::NotTraced {
                    reason: format!(
                        "offsets unknown for Go {}: {} (the binary has no DWARF and the offsets table has no row for this release)",
                        go.version,
                        missing.join(", ")
                    ),
                };
            }
            let Some(entry_offset) = elf.vaddr_to_offset(func.entry) else {
                return CapabilityOutcome::NotTraced {
                    reason: format!(
                        "{} at {:#x} is not in a file-backed segment",
                        probe.symbol, func.entry
                    ),
                };
            };
            let mut planned = vec![UprobeSite {
                program: probe.entry_program,
                offset: entry_offset,
                label: format!("{} (entry)", probe.symbol),
            }];
            if let Some(ret_program) = probe.return_program {
                let rets = match returns::function_returns(elf, *func) {
                    Ok(r) => r,
                    Err(e) => {
                        return CapabilityOutcome::NotTraced {
                            reason: format!("cannot read the code of {}: {e}", probe.symbol),
                        }
                    }
                };
                if rets.is_empty() {
                    return CapabilityOutcome::NotTraced {
                        reason: format!("no RET instruction found in {}", probe.symbol),
                    };
                }
                for ret in rets {
                    let Some(off) = elf.vaddr_to_offset(ret) else {
                        return CapabilityOutcome::NotTraced {
                            reason: format!(
                                "RET at {ret:#x} of {} is not file-backed",
                                probe.symbol
                            ),
                        };
                    };
                    planned.push(UprobeSite {
                        program: ret_program,
                        offset: off,
                        label: format!("{}+{:#x} (return)", probe.symbol, ret - func.entry),
                    });
                }
            }
            let returns = planned.len() - 1;
            sites.extend(planned);
            config.flags |= probe.flags;
            CapabilityOutcome::Traced {
                symbol: probe.symbol.to_string(),
                entry_offset,
                returns,
            }
        })();
        capabilities.push(CapabilityPlan {
            capability: probe.capability,
            outcome,
        });
    }
    Ok(TargetPlan {
        config,
        sites,
        capabilities,
        offsets,
        warnings,
    })
}

/// Every field's offset: DWARF when the binary has it, else the table.
fn field_offsets(
    elf: &ElfFile,
    go: &GoBinary,
    table: &OffsetTable,
    warnings: &mut Vec<String>,
) -> Vec<FieldOffset> {
    let mut from_dwarf = HashMap::new();
    if elf.has_dwarf() {
        let wanted: Vec<(&str, &str)> = GoField::ALL
            .iter()
            .map(|f| (f.type_name(), f.field_name()))
            .collect();
        match dwarf::struct_field_offsets(elf, &wanted) {
            Ok(found) => from_dwarf = found,
            Err(e) => warnings.push(format!("DWARF unreadable, using the offsets table: {e}")),
        }
    }
    let std_version = (go.version.major, go.version.minor, go.version.patch);
    if let Some(newest) = table.newest("std") {
        if from_dwarf.is_empty() && (std_version.0, std_version.1) > (newest.0, newest.1) {
            warnings.push(format!(
                "Go {} is newer than the offsets table (up to {}.{}); assuming the newest layout",
                go.version, newest.0, newest.1
            ));
        }
    }
    let mut out = Vec::new();
    for &field in GoField::ALL {
        let key = (
            field.type_name().to_string(),
            field.field_name().to_string(),
        );
        if let Some(&off) = from_dwarf.get(&key) {
            if let Ok(offset) = u16::try_from(off) {
                out.push(FieldOffset {
                    field,
                    offset,
                    source: OffsetSource::Dwarf,
                });
                continue;
            }
        }
        let version = if field.module() == "std" {
            Some(std_version)
        } else {
            go.build
                .module(field.module())
                .and_then(|m| parse_version(&m.version))
        };
        let Some(version) = version else { continue };
        // With DWARF present, a field DWARF lacks does not exist in this build.
        if !from_dwarf.is_empty() && field.module() == "std" {
            continue;
        }
        if let Some((offset, range)) = table.lookup(
            field.module(),
            field.type_name(),
            field.field_name(),
            version,
        ) {
            out.push(FieldOffset {
                field,
                offset,
                source: OffsetSource::Table {
                    range: range.to_string(),
                },
            });
        }
    }
    out
}
