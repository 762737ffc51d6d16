//! RET sites in x86-64 code, found by decoding every instruction with iced-x86.
//!
//! A byte scan for 0xc3 would also hit immediates, displacements and the middle of longer
//! instructions; a probe planted there corrupts the target. Go emits no data inside function
//! bodies on amd64, so a linear decode from the entry sees every instruction boundary.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};

/// Virtual addresses of the near and far returns (`RET`, `RET imm16`, `RETF`, `RETF imm16`) in
/// `code`, which is loaded at `entry`.
pub fn find_returns(code: &[u8], entry: u64) -> Vec<u64> {
    let mut decoder = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    let mut out = Vec::new();
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        if matches!(instruction.mnemonic(), Mnemonic::Ret | Mnemonic::Retf) {
            out.push(instruction.ip());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::find_returns;

    #[test]
    fn finds_every_kind_of_return_and_no_false_ones() {
        let code = [
            0x48, 0xc7, 0xc0, 0xc3, 0x00, 0x00,
            0x00, // mov rax, 0xc3   (0xc3 inside an immediate)
            0xc3, // ret
            0xc2, 0x08, 0x00, // ret 8
            0x48, 0x8b, 0x84, 0x24, 0xc3, 0x00, 0x00, 0x00, // mov rax, [rsp+0xc3]
            0xcb, // retf
            0xca, 0x10, 0x00, // retf 0x10
            0xcc, // int3 padding
        ];
        assert_eq!(
            find_returns(&code, 0x1000),
            vec![0x1007, 0x1008, 0x1013, 0x1014]
        );
    }

    #[test]
    fn survives_garbage_and_truncation() {
        let junk: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        let _ = find_returns(&junk, u64::MAX - 10);
        assert!(find_returns(&[], 0).is_empty());
        assert!(find_returns(&[0xc2, 0x08], 0).is_empty());
    }
}
