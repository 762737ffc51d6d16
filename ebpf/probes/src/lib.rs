#![no_std]
// The library target exists so the agent can name this crate as a build dependency; the
// programs themselves live in the binary target that aya-build compiles for BPF.
