//! Bare uprobes through tracefs: the kernel's trap with no BPF program, the floor every uprobe
//! agent stands on. All of them live in one event group that the bench owns, removed when the
//! guard drops (and at the start of every run, in case an earlier run was killed).

use std::{fs, io::Write, path::Path};

use anyhow::{Context, Result};

use super::machine;

/// The tracefs event group of the bench's probes.
const GROUP: &str = "spanhook_bench";

fn append(file: &Path, line: &str) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new().append(true).open(file)?;
    f.write_all(format!("{line}\n").as_bytes())
}

/// Bare uprobes at file offsets of one binary, enabled until dropped.
pub struct BareProbes(());

impl BareProbes {
    /// Places and enables one uprobe at each of `offsets` in `binary`.
    pub fn attach(binary: &Path, offsets: &[u64]) -> Result<BareProbes> {
        let tracing = machine::tracefs()?;
        remove_stale()?;
        // From here on, dropping the guard removes whatever was placed, even on failure.
        let probes = BareProbes(());
        let events = tracing.join("uprobe_events");
        for (i, off) in offsets.iter().enumerate() {
            let name = format!("bare{i}");
            let line = format!("p:{GROUP}/{name} {}:{off:#x}", binary.display());
            append(&events, &line)
                .with_context(|| format!("writing {line:?} to {}", events.display()))?;
        }
        let enable = tracing.join("events").join(GROUP).join("enable");
        fs::write(&enable, "1").with_context(|| format!("writing 1 to {}", enable.display()))?;
        Ok(probes)
    }
}

impl Drop for BareProbes {
    fn drop(&mut self) {
        if let Err(e) = remove_stale() {
            eprintln!("bench: removing the bare uprobes failed: {e:#}");
        }
    }
}

/// Disables and removes every probe of the bench's group, and empties the trace buffer the
/// probes wrote to.
pub fn remove_stale() -> Result<()> {
    let tracing = machine::tracefs()?;
    let events = tracing.join("uprobe_events");
    let listed = fs::read_to_string(&events).unwrap_or_default();
    let ours: Vec<String> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|def| def.split_once(':').map(|(_, name)| name.to_string()))
        .filter(|name| name.starts_with(&format!("{GROUP}/")))
        .collect();
    if ours.is_empty() {
        return Ok(());
    }
    let enable = tracing.join("events").join(GROUP).join("enable");
    let _ = fs::write(&enable, "0");
    for name in &ours {
        append(&events, &format!("-:{name}"))
            .with_context(|| format!("removing uprobe {name} from {}", events.display()))?;
    }
    let _ = fs::write(tracing.join("trace"), "");
    Ok(())
}
