//! What a share is worth and how its quote is named.

use bitcoin::hashes::Hash;
use bitcoin::pow::Target;
use bitcoin::Network;
use uuid::Uuid;

/// The hash of a share's block header (displayed, like a block hash, in reversed byte order).
pub type ShareHash = bitcoin::BlockHash;

/// Namespace of the UUID v5 quote ids (a fixed random UUID, part of the contract).
pub const QUOTE_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6d2c_3f5e_8a41_4b0e_9c7d_1e52_a4f0_93b8);

/// The quote id of a share: UUID v5 of the header hash's bytes in [`QUOTE_ID_NAMESPACE`].
///
/// The same share always names the same quote, so a message sent twice, or a share submitted
/// twice, can never create two quotes.
pub fn quote_id_for_share(share_hash: &ShareHash) -> Uuid {
    Uuid::new_v5(&QUOTE_ID_NAMESPACE, share_hash.as_byte_array())
}

/// The work a share proves, in difficulty-1 units: the difficulty of the target the pool asked
/// the channel for (`floor(diff1_target / target)`), at least 1.
///
/// `target_le` is the 256-bit target as carried in Sv2 messages (little-endian). The share's own
/// hash does not enter: a lucky hash earns the same as any other share at that target, so
/// payment tracks expected work and cannot be gamed by withholding or grinding.
pub fn credited_work(target_le: [u8; 32]) -> u64 {
    let target = Target::from_le_bytes(target_le);
    if target == Target::ZERO {
        // No hash meets a zero target; only reachable by a caller's bug. Saturate, like any
        // target harder than u64::MAX difficulty.
        return u64::MAX;
    }
    // Mainnet's maximum attainable target is the difficulty-1 target on every network.
    let difficulty = target.difficulty(Network::Bitcoin);
    u64::try_from(difficulty).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn target_with_top_word(word: u32, byte_offset: usize) -> [u8; 32] {
        // Big-endian layout, flipped to the wire's little-endian.
        let mut be = [0u8; 32];
        be[byte_offset..byte_offset + 4].copy_from_slice(&word.to_be_bytes());
        be.reverse();
        be
    }

    #[test]
    fn difficulty_one_target_earns_one() {
        // 0x00000000ffff0000...: the difficulty-1 target.
        let diff1 = target_with_top_word(0xffff_0000, 4);
        assert_eq!(credited_work(diff1), 1);
    }

    #[test]
    fn easier_than_difficulty_one_still_earns_one() {
        assert_eq!(credited_work([0xff; 32]), 1);
    }

    #[test]
    fn halving_the_target_doubles_the_work() {
        let diff1 = target_with_top_word(0xffff_0000, 4);
        let diff2 = target_with_top_word(0x7fff_8000, 4);
        assert_eq!(credited_work(diff2), 2 * credited_work(diff1));
        let diff1024 = target_with_top_word(0x003f_ffc0, 4);
        assert_eq!(credited_work(diff1024), 1024);
    }

    #[test]
    fn impossible_targets_saturate() {
        assert_eq!(credited_work([0; 32]), u64::MAX);
        let mut one = [0u8; 32];
        one[0] = 1;
        assert_eq!(credited_work(one), u64::MAX);
    }

    #[test]
    fn quote_id_is_deterministic_and_distinct() {
        let a =
            ShareHash::from_str("00000000000000000002a7c4c1e48d76c5a37902165a270156b7a8d72728a054")
                .unwrap();
        let b =
            ShareHash::from_str("00000000000000000002a7c4c1e48d76c5a37902165a270156b7a8d72728a055")
                .unwrap();
        assert_eq!(quote_id_for_share(&a), quote_id_for_share(&a));
        assert_ne!(quote_id_for_share(&a), quote_id_for_share(&b));
        assert_eq!(quote_id_for_share(&a).get_version_num(), 5);
    }

    #[test]
    fn quote_id_is_pinned() {
        // Pool and mint of different builds must agree forever: this value is the contract.
        let hash = ShareHash::all_zeros();
        assert_eq!(
            quote_id_for_share(&hash),
            Uuid::new_v5(&QUOTE_ID_NAMESPACE, &[0u8; 32])
        );
        assert_eq!(
            QUOTE_ID_NAMESPACE.to_string(),
            "6d2c3f5e-8a41-4b0e-9c7d-1e52a4f093b8"
        );
    }

    proptest! {
        #[test]
        fn harder_target_never_earns_less(a in any::<[u8; 32]>(), b in any::<[u8; 32]>()) {
            let (ta, tb) = (Target::from_le_bytes(a), Target::from_le_bytes(b));
            let (easy, hard) = if ta >= tb { (a, b) } else { (b, a) };
            prop_assert!(credited_work(hard) >= credited_work(easy));
            prop_assert!(credited_work(easy) >= 1);
        }
    }
}
