//! RET sites in AArch64 code: every instruction is one aligned 32-bit word.

/// The `RET Xn` family: `1101011 0010 11111 000000 Rn 00000`.
const RET_MASK: u32 = 0xffff_fc1f;
/// `RET` with the register field cleared (`RET` alone is `RET X30`, 0xd65f03c0).
const RET_BITS: u32 = 0xd65f_0000;

/// Virtual addresses of the `RET` instructions in `code`, which is loaded at `entry`. Only
/// words at 4-byte aligned addresses are instructions.
pub fn find_returns(code: &[u8], entry: u64) -> Vec<u64> {
    let skip = (entry.wrapping_neg() % 4) as usize;
    let Some(aligned) = code.get(skip..) else {
        return Vec::new();
    };
    let base = entry.wrapping_add(skip as u64);
    aligned
        .chunks_exact(4)
        .enumerate()
        .filter(|(_, word)| {
            let word = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            word & RET_MASK == RET_BITS
        })
        .map(|(i, _)| base.wrapping_add(4 * i as u64))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::find_returns;

    fn words(ws: &[u32]) -> Vec<u8> {
        ws.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn finds_ret_with_any_register() {
        let code = words(&[
            0xd503201f, // nop
            0xd65f03c0, // ret
            0xaa0003e1, // mov x1, x0
            0xd65f0020, // ret x1
            0xd63f0020, // blr x1 (not a return)
            0xd61f0020, // br x1 (not a return)
            0xd65f0bff, // retaa (pointer authentication; not plain RET)
        ]);
        assert_eq!(find_returns(&code, 0x10000), vec![0x10004, 0x1000c]);
    }

    #[test]
    fn honours_alignment_and_truncation() {
        let code = words(&[0xd65f03c0, 0]);
        // Loaded at 0x1002 the RET word straddles two aligned words: no instruction there.
        assert!(find_returns(&code, 0x1002).is_empty());
        assert_eq!(find_returns(&code, 0x1000), vec![0x1000]);
        assert_eq!(find_returns(&code[2..], 0x1002), Vec::<u64>::new());
        assert!(find_returns(&[0xc0, 0x03], 0x1000).is_empty());
        assert!(find_returns(&[], 0).is_empty());
    }
}
