//! Verifier budget: every eBPF program the agent embeds loads into the running kernel, and the
//! instructions the verifier processed for it (`bpf_prog_info.verified_insns`, read back from
//! the kernel) stay within the budget checked in at `agent/tests/verifier_budget.tsv`.
//!
//! A program that grows past its budget is a program that will stop loading on some kernel (the
//! verifier gives up at one million instructions, older kernels far earlier, and complexity
//! grows with every branch): the test fails, naming it, and prints the whole table. A program
//! without a row fails too, so every new program gets a budget. After a deliberate change,
//! `SPANHOOK_VERIFIER_BUDGET=rewrite cargo test --test verifier_budget` writes measured × 1.5.

mod support;

use std::{collections::BTreeMap, fmt::Write as _, path::PathBuf, process::Command};

use support::{require_bpf, spanhook_bin};

/// The kernel's hard limit on instructions processed per program (BPF_COMPLEXITY_LIMIT_INSNS).
const KERNEL_LIMIT: u64 = 1_000_000;

struct Measured {
    kind: String,
    verified: u64,
}

struct Budget {
    kind: String,
    measured: u64,
    budget: u64,
}

fn table_path() -> PathBuf {
    support::root().join("agent/tests/verifier_budget.tsv")
}

/// `spanhook verifier`: every program loaded (not attached) into the kernel, with its count.
fn measure() -> BTreeMap<String, Measured> {
    let out = Command::new(spanhook_bin())
        .arg("verifier")
        .output()
        .expect("run spanhook verifier");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "spanhook verifier failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            assert_eq!(c.len(), 5, "unexpected line from spanhook verifier: {l}");
            let verified = c[2].parse().unwrap_or_else(|_| {
                panic!(
                    "the kernel did not report verified_insns for {} (needs 5.16+): {l}",
                    c[0]
                )
            });
            (
                c[0].to_string(),
                Measured {
                    kind: c[1].to_string(),
                    verified,
                },
            )
        })
        .collect()
}

fn read_table() -> (String, BTreeMap<String, Budget>) {
    let text = std::fs::read_to_string(table_path()).expect("read verifier_budget.tsv");
    let header: String = text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let rows = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            assert_eq!(c.len(), 4, "bad row in verifier_budget.tsv: {l}");
            (
                c[0].to_string(),
                Budget {
                    kind: c[1].to_string(),
                    measured: c[2].parse().expect("measured"),
                    budget: c[3].parse().expect("budget"),
                },
            )
        })
        .collect();
    (header, rows)
}

fn budget_for(measured: u64) -> u64 {
    (measured * 3 / 2).div_ceil(100) * 100
}

#[test]
fn every_program_loads_within_its_verifier_budget() {
    require_bpf();
    let measured = measure();
    assert!(
        measured.len() >= 40,
        "spanhook verifier loaded only {} programs",
        measured.len()
    );
    if std::env::var("SPANHOOK_VERIFIER_BUDGET").as_deref() == Ok("rewrite") {
        let (mut text, _) = read_table();
        for (name, m) in &measured {
            let _ = writeln!(
                text,
                "{name}\t{}\t{}\t{}",
                m.kind,
                m.verified,
                budget_for(m.verified)
            );
        }
        std::fs::write(table_path(), text).unwrap();
        eprintln!("rewrote {}", table_path().display());
    }
    let (_, budgets) = read_table();

    let mut report = String::from(
        "program                      kind        verified    budget  of budget  table said\n",
    );
    let mut failures = Vec::new();
    for (name, m) in &measured {
        let row = budgets.get(name);
        let _ = writeln!(
            report,
            "{name:<28} {:<10} {:>9} {:>9} {:>9} {:>11}",
            m.kind,
            m.verified,
            row.map_or("-".into(), |b| b.budget.to_string()),
            row.map_or("-".into(), |b| format!(
                "{:.0}%",
                100.0 * m.verified as f64 / b.budget as f64
            )),
            row.map_or("-".into(), |b| b.measured.to_string()),
        );
        match row {
            None => failures.push(format!(
                "{name} ({}) has no row in verifier_budget.tsv: add `{name}\t{}\t{}\t{}`",
                m.kind,
                m.kind,
                m.verified,
                budget_for(m.verified)
            )),
            Some(b) if m.verified > b.budget => failures.push(format!(
                "{name}: the verifier processed {} instructions, over its budget of {} (table measured {})",
                m.verified, b.budget, b.measured
            )),
            Some(b) if b.kind != m.kind => failures.push(format!(
                "{name} is a {} program, the table says {}",
                m.kind, b.kind
            )),
            Some(_) => {}
        }
        if m.verified >= KERNEL_LIMIT {
            failures.push(format!("{name} reached the kernel's limit"));
        }
    }
    for name in budgets.keys().filter(|n| !measured.contains_key(*n)) {
        failures.push(format!(
            "{name} is in verifier_budget.tsv but not in the embedded object: remove its row"
        ));
    }
    let total: u64 = measured.values().map(|m| m.verified).sum();
    let max = measured
        .iter()
        .max_by_key(|(_, m)| m.verified)
        .map(|(n, m)| format!("{n} {}", m.verified))
        .unwrap_or_default();
    let _ = writeln!(
        report,
        "{} programs, {total} instructions verified in all, largest {max}",
        measured.len()
    );
    println!("{report}");
    assert!(failures.is_empty(), "{}\n\n{report}", failures.join("\n"));
}

#[test]
fn the_counts_are_stable_between_loads() {
    // The verifier is deterministic for one program on one kernel: two loads give the same
    // counts, so a budget compares like with like and never fails by chance.
    require_bpf();
    let a = measure();
    let b = measure();
    assert_eq!(a.len(), b.len());
    for (name, m) in &a {
        assert_eq!(
            m.verified, b[name].verified,
            "{name}: verified_insns differ between two loads"
        );
    }
}
