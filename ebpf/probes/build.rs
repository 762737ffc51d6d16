//! Emits the `bpf_target_arch` cfg so probes can read the right registers.
fn main() {
    if let Err(err) = aya_build::emit_bpf_target_arch_cfg() {
        panic!("cannot determine the BPF target architecture: {err}");
    }
    let linker = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("bpf-linker"))
            .find(|c| c.exists())
    });
    if let Some(linker) = linker {
        // A rebuilt bpf-linker may produce different objects.
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
