//! What the running process may do: capabilities, read from `/proc/self/status`.

/// Capabilities the agent needs, with their bit numbers.
const NEEDED: &[(&str, u32)] = &[
    ("CAP_BPF", 39),
    ("CAP_PERFMON", 38),
    ("CAP_SYS_PTRACE", 19),
    ("CAP_DAC_READ_SEARCH", 2),
];

/// Bit of CAP_SYS_ADMIN, which implies the BPF and perf capabilities on older kernels.
const CAP_SYS_ADMIN: u32 = 21;

/// Effective capability set of this process.
pub fn effective_capabilities() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Whether this process has CAP_SYS_ADMIN, which creating uprobes through perf_event_open
/// needs on kernels with Linux commit ba677dbe77af (6.16, and the 6.x stable releases of July
/// 2025 on).
pub fn has_sys_admin() -> bool {
    effective_capabilities() & (1 << CAP_SYS_ADMIN) != 0
}

/// Names of the needed capabilities this process lacks.
pub fn missing_capabilities() -> Vec<&'static str> {
    missing_from(effective_capabilities())
}

/// Names of the needed capabilities absent from `caps`.
pub fn missing_from(caps: u64) -> Vec<&'static str> {
    let admin = caps & (1 << CAP_SYS_ADMIN) != 0;
    NEEDED
        .iter()
        .filter(|(name, bit)| {
            let has = caps & (1u64 << bit) != 0;
            let implied = admin && matches!(*name, "CAP_BPF" | "CAP_PERFMON");
            !(has || implied)
        })
        .map(|(name, _)| *name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_is_missing() {
        assert_eq!(
            missing_from(0),
            vec![
                "CAP_BPF",
                "CAP_PERFMON",
                "CAP_SYS_PTRACE",
                "CAP_DAC_READ_SEARCH"
            ]
        );
        let all = (1u64 << 39) | (1 << 38) | (1 << 19) | (1 << 2);
        assert!(missing_from(all).is_empty());
        let admin = (1u64 << 21) | (1 << 19) | (1 << 2);
        assert!(missing_from(admin).is_empty());
    }
}
