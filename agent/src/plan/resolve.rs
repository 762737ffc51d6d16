//! Binary facts + catalog + offsets → the uprobes to attach and the probes' configuration.

use std::collections::HashMap;

use spanhook_common::{ArgSlot, GoField, TargetConfig};

use super::{
    catalog::{Candidate, Capability, GoProbe, GO_PROBES, RELEASE_FLAGS},
    offsets::{parse_version, OffsetSource, OffsetTable},
};
use crate::{
    attach::UprobeSite,
    inspect::{
        dwarf,
        elf::{Arch, ElfFile},
        entry,
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
    /// Traced from the process's socket system calls or its libssl, not its own symbols.
    #[serde(rename = "traced")]
    Sockets {
        /// What is probed.
        via: String,
        /// Why this path was chosen.
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
            .any(|c| !matches!(c.outcome, CapabilityOutcome::NotTraced { .. }))
    }

    /// Whether `capability` will be traced.
    pub fn traces(&self, capability: Capability) -> bool {
        self.capabilities.iter().any(|c| {
            c.capability == capability && !matches!(c.outcome, CapabilityOutcome::NotTraced { .. })
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
                CapabilityOutcome::Traced { .. } | CapabilityOutcome::Sockets { .. } => None,
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
    /// Symbol-level probes, socket-level capture, or the better of the two (`--capture`).
    pub capture: super::socket::CaptureMode,
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

    let symbols: Vec<&str> = GO_PROBES
        .iter()
        .flat_map(|p| p.candidates.iter().map(|c| c.symbol))
        .collect();
    let functions = golang::find_functions(elf, &symbols)?;

    let mut config = TargetConfig::empty();
    for o in &offsets {
        config.set_offset(o.field, o.offset);
    }
    for &(module, from, to, flag) in RELEASE_FLAGS {
        let rule = Candidate {
            symbol: "",
            args: &[],
            releases: Some((module, from, to)),
        };
        if go.build.module(module).is_some() && candidate_applies(go, &rule) {
            config.flags |= flag;
        }
    }
    let planned: Vec<Result<Planned, String>> = GO_PROBES
        .iter()
        .map(|probe| plan_probe(elf, go, &functions, &known, probe, options))
        .collect();
    let mut sites = Vec::new();
    let mut capabilities: Vec<CapabilityPlan> = Vec::new();
    for probe in GO_PROBES {
        if capabilities
            .iter()
            .any(|c| c.capability == probe.capability)
        {
            continue;
        }
        let members: Vec<(&GoProbe, &Result<Planned, String>)> = GO_PROBES
            .iter()
            .zip(planned.iter())
            .filter(|(p, _)| p.capability == probe.capability)
            .collect();
        // Traced when every probe it needs is planned; helpers add detail when they can.
        let failure = members
            .iter()
            .filter(|(p, _)| !p.auxiliary)
            .find_map(|(_, r)| r.as_ref().err());
        let outcome = match failure {
            Some(reason) => CapabilityOutcome::NotTraced {
                reason: reason.clone(),
            },
            None => {
                let mut main = None;
                for (p, r) in &members {
                    match r {
                        Ok(plan) => {
                            sites.extend(plan.sites.iter().cloned());
                            config.flags |= p.flags;
                            for &(slot, value) in plan.args {
                                config.args[slot as usize] = value;
                            }
                            if !p.auxiliary && main.is_none() {
                                main = Some(plan);
                            }
                        }
                        Err(reason) => warnings.push(format!(
                            "{}: {} not probed, so its spans lack what it adds: {reason}",
                            p.capability.name(),
                            p.entry_program.or(p.return_program).unwrap_or("?")
                        )),
                    }
                }
                let main = main.expect("a capability has a probe that is not auxiliary");
                CapabilityOutcome::Traced {
                    symbol: main.symbol.to_string(),
                    entry_offset: main.entry_offset,
                    returns: main.returns,
                }
            }
        };
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

/// One probe placed in the binary.
struct Planned {
    symbol: &'static str,
    entry_offset: u64,
    returns: usize,
    sites: Vec<UprobeSite>,
    args: &'static [(ArgSlot, u8)],
}

/// Whether `candidate` applies to this binary's release of its module.
fn candidate_applies(go: &GoBinary, candidate: &Candidate) -> bool {
    let Some((module, from, to)) = candidate.releases else {
        return true;
    };
    let Some(version) = go
        .build
        .module(module)
        .and_then(|m| parse_version(&m.version))
    else {
        // A module without a version (replaced by a directory): the newest layout is likelier.
        return to.is_empty();
    };
    let minor = (version.0, version.1);
    let bound = |s: &str| parse_version(s).map(|v| (v.0, v.1));
    let above = from.is_empty() || bound(from).is_some_and(|b| minor >= b);
    let below = to.is_empty() || bound(to).is_some_and(|b| minor <= b);
    above && below
}

/// Places one probe: its function, entry and RET sites.
fn plan_probe(
    elf: &ElfFile,
    go: &GoBinary,
    functions: &HashMap<String, golang::FuncRange>,
    known: &HashMap<GoField, &FieldOffset>,
    probe: &GoProbe,
    options: PlanOptions,
) -> Result<Planned, String> {
    if probe.opt_in && !options.propagate {
        return Err("opt-in: pass --propagate to write traceparent into outgoing requests".into());
    }
    let Some((candidate, func)) = probe
        .candidates
        .iter()
        .filter(|c| candidate_applies(go, c))
        .find_map(|c| functions.get(c.symbol).map(|f| (c, f)))
    else {
        let names: Vec<&str> = probe.candidates.iter().map(|c| c.symbol).collect();
        return Err(format!(
            "{} is not in the binary (the program does not use this part of the library)",
            names.join(" nor ")
        ));
    };
    let symbol = candidate.symbol;
    let missing: Vec<String> = probe
        .required
        .iter()
        .filter(|f| !known.contains_key(f))
        .map(|f| format!("{}.{}", f.type_name(), f.field_name()))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "offsets unknown for this build (Go {}): {} (the binary has no DWARF and the offsets table has no row for this release)",
            go.version,
            missing.join(", ")
        ));
    }
    let sites = function_sites(
        elf,
        symbol,
        *func,
        probe.entry_program,
        probe.return_program,
    )?;
    let entry_offset = match probe.entry_program {
        Some(_) => sites[0].offset,
        None => elf.vaddr_to_offset(func.entry).ok_or_else(|| {
            format!(
                "{symbol} at {:#x} is not in a file-backed segment",
                func.entry
            )
        })?,
    };
    Ok(Planned {
        symbol,
        entry_offset,
        returns: sites.len() - usize::from(probe.entry_program.is_some()),
        sites,
        args: candidate.args,
    })
}

/// The uprobes of one Go function: `entry_program` where [`entry::entry_site`] says (the entry
/// or a cheaper prologue instruction that sees the same registers) and `return_program` on
/// every RET.
pub fn function_sites(
    elf: &ElfFile,
    symbol: &str,
    func: golang::FuncRange,
    entry_program: Option<&'static str>,
    return_program: Option<&'static str>,
) -> Result<Vec<UprobeSite>, String> {
    let file_offset = |vaddr: u64, what: &str| {
        elf.vaddr_to_offset(vaddr).ok_or_else(|| {
            format!("{what} of {symbol} at {vaddr:#x} is not in a file-backed segment")
        })
    };
    let mut sites = Vec::new();
    if let Some(program) = entry_program {
        let site = entry::entry_site(elf, func);
        let label = match site - func.entry {
            0 => format!("{symbol} (entry)"),
            n => format!("{symbol}+{n:#x} (entry)"),
        };
        sites.push(UprobeSite {
            program,
            offset: file_offset(site, "the entry")?,
            label,
            binary: None,
        });
    }
    if let Some(program) = return_program {
        let rets = returns::function_returns(elf, func)
            .map_err(|e| format!("cannot read the code of {symbol}: {e}"))?;
        if rets.is_empty() {
            return Err(format!("no RET instruction found in {symbol}"));
        }
        for ret in rets {
            sites.push(UprobeSite {
                program,
                offset: file_offset(ret, "a RET")?,
                label: format!("{symbol}+{:#x} (return)", ret - func.entry),
                binary: None,
            });
        }
    }
    Ok(sites)
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
