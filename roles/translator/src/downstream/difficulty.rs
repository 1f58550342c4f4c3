//! The channel target as the Sv1 difficulty the miner is told.

use ehash::ShareWork;
use stratum_core::bitcoin::Target;
use stratum_core::stratum_translation::error::StratumTranslationError;
use stratum_core::stratum_translation::sv2_to_sv1::{
    build_sv1_set_difficulty_from_sv2_target,
    build_sv1_set_difficulty_from_sv2_target_with_integer_power_of_two_rounding,
    sv1_advertised_target_from_sv2_target,
};
use stratum_core::sv1_api::json_rpc;

/// Difficulties from 1 up are advertised rounded down to a power of two (integers for firmwares
/// that cannot take fractions); below it, as they are.
const POWER_OF_TWO_FROM: f64 = 1.0;

/// `mining.set_difficulty` for a channel target.
pub(super) fn set_difficulty(target: Target) -> Result<json_rpc::Message, StratumTranslationError> {
    match ShareWork::of_target(target) {
        // The pool's targets are powers of two: tell the miner that difficulty exactly.
        Some(work) => build_sv1_set_difficulty_from_sv2_target(sv1_target_of(work)),
        _ => build_sv1_set_difficulty_from_sv2_target_with_integer_power_of_two_rounding(
            target,
            POWER_OF_TWO_FROM,
        ),
    }
}

/// The target of the difficulty the miner is told for a channel target.
pub(super) fn advertised_target(target: Target) -> Target {
    match ShareWork::of_target(target) {
        Some(work) => sv1_target_of(work),
        None => sv1_advertised_target_from_sv2_target(target, POWER_OF_TWO_FROM).unwrap_or(target),
    }
}

/// The Sv1 target of the difficulty of `work` (2^(log2-32)): Sv1 difficulty `d` means the target
/// `0xffff * 2^208 / d`, here `0xffff * 2^(240-log2)`. It is a hair harder than the pool's
/// `2^(256-log2) - 1`, so every share the miner finds at it is one the pool credits (the miner
/// misses 1 in 65,536 of the shares the pool would take: Sv1's difficulty 1 is not 2^32 hashes).
fn sv1_target_of(work: ShareWork) -> Target {
    let lowest_bit = 240 - usize::from(work.log2());
    let mut le = [0u8; 32];
    for bit in lowest_bit..lowest_bit + 16 {
        le[bit / 8] |= 1 << (bit % 8);
    }
    Target::from_le_bytes(le)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_of_two_targets_are_advertised_at_their_exact_difficulty() {
        for log2 in ShareWork::MIN.log2()..=ShareWork::MAX.log2() {
            let work = ShareWork::from_log2(log2).unwrap();
            let advertised = advertised_target(work.target());
            assert!(
                advertised <= work.target(),
                "2^{log2}: never easier than the pool's"
            );
            assert_eq!(advertised.difficulty_float(), work.difficulty(), "2^{log2}");
        }
    }

    #[test]
    fn advertised_difficulty_never_exceeds_the_channel_difficulty() {
        use stratum_core::bitcoin::CompactTarget;
        let easy = Target::from_le_bytes([0xff; 32]);
        assert_eq!(
            advertised_target(easy),
            easy,
            "below difficulty 1: as it is"
        );
        // Difficulty 16307 is advertised as 8192: an easier (larger) target.
        let hard = Target::from_compact(CompactTarget::from_consensus(0x1b04_04cb));
        let advertised = advertised_target(hard);
        assert!(advertised > hard);
        assert_eq!(advertised.difficulty_float().round(), 8192.0);
    }
}
