//! What a share is worth and how its quote is named.
//!
//! # The unit
//!
//! One `hash`, the unit of ehash quotes and keysets, is **2^12 = 4,096 expected hashes**
//! ([`HASHES_PER_UNIT_LOG2`]). A share earns the hashes a miner must compute, on average, to
//! find a share at the target the pool set for it: a target `T` is met by `T + 1` of the 2^256
//! possible header hashes, so a share at `T` proves `2^256 / (T + 1)` expected hashes.
//!
//! The pool only hands out *power-of-two targets*, `T = 2^(256-k) - 1`, which prove exactly 2^k
//! expected hashes ([`ShareWork`]), so every share is credited exactly `2^(k-12)` units, with no
//! rounding. Share work ranges from 2^12 hashes (1 unit, "difficulty" 2^-20) to 2^74 hashes
//! (2^62 units, difficulty 2^42). Difficulty here means units of 2^32 expected hashes, which is
//! Bitcoin's difficulty 1 to within 0.002%.
//!
//! Why 2^12: the unit must express the smallest shares worth crediting (a CPU miner on regtest,
//! difficulty 2^-20) exactly, and a wallet's balance must fit cashu's 64-bit amounts for a long
//! time (2^76 hashes: 2.4 years of a steady 1 PH/s).

use bitcoin::hashes::Hash;
use bitcoin::pow::Target;
use uuid::Uuid;

/// The hash of a share's block header (displayed, like a block hash, in reversed byte order).
pub type ShareHash = bitcoin::BlockHash;

/// Namespace of the UUID v5 quote ids (a fixed random UUID, part of the contract).
pub const QUOTE_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6d2c_3f5e_8a41_4b0e_9c7d_1e52_a4f0_93b8);

/// One unit of `hash` is `2^HASHES_PER_UNIT_LOG2` expected hashes.
pub const HASHES_PER_UNIT_LOG2: u8 = 12;

/// log2 of the expected hashes of "difficulty 1" in this crate's sense (see the module docs).
const DIFFICULTY_ONE_LOG2: i32 = 32;

/// The quote id of a share: UUID v5 of the header hash's bytes in [`QUOTE_ID_NAMESPACE`].
///
/// The same share always names the same quote, so a message sent twice, or a share submitted
/// twice, can never create two quotes.
pub fn quote_id_for_share(share_hash: &ShareHash) -> Uuid {
    Uuid::new_v5(&QUOTE_ID_NAMESPACE, share_hash.as_byte_array())
}

/// The work of a share at a power-of-two target: exactly `2^log2` expected hashes.
///
/// Only these targets are handed out to miners, so that what a share proves is an exact number
/// of units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShareWork(u8);

impl ShareWork {
    /// The least work the unit expresses: 2^12 hashes, 1 unit.
    pub const MIN: ShareWork = ShareWork(HASHES_PER_UNIT_LOG2);
    /// The most: 2^74 hashes, 2^62 units. cdk keeps amounts as signed 64-bit integers in its
    /// stores, so one quote (and one proof) holds at most 2^63 - 1; 2^62 is the largest power
    /// of two below that.
    pub const MAX: ShareWork = ShareWork(HASHES_PER_UNIT_LOG2 + 62);

    /// Shares of `2^log2` expected hashes, if the unit expresses them.
    pub fn from_log2(log2: u8) -> Option<Self> {
        (Self::MIN.0..=Self::MAX.0)
            .contains(&log2)
            .then_some(ShareWork(log2))
    }

    /// The least power-of-two work of at least `difficulty` (units of 2^32 expected hashes),
    /// clamped to what the unit expresses. `None` for a difficulty that is not a positive number.
    pub fn at_least_difficulty(difficulty: f64) -> Option<Self> {
        if !difficulty.is_finite() || difficulty <= 0.0 {
            return None;
        }
        let log2 = (difficulty.log2() + f64::from(DIFFICULTY_ONE_LOG2)).ceil();
        let clamped = log2.clamp(f64::from(Self::MIN.0), f64::from(Self::MAX.0));
        Some(ShareWork(clamped as u8))
    }

    /// The least work whose target is no easier than `target`: the largest power-of-two target
    /// at or below it. `None` if `target` is harder than [`ShareWork::MAX`]'s.
    pub fn at_or_below(target: Target) -> Option<Self> {
        (Self::MIN.0..=Self::MAX.0)
            .map(ShareWork)
            .find(|work| work.target() <= target)
    }

    /// The most work whose target is no harder than `target`: the smallest power-of-two target
    /// at or above it. `None` if `target` is easier than [`ShareWork::MIN`]'s.
    pub fn at_or_above(target: Target) -> Option<Self> {
        (Self::MIN.0..=Self::MAX.0)
            .rev()
            .map(ShareWork)
            .find(|work| work.target() >= target)
    }

    /// The work of `target` if it is exactly one of the power-of-two targets, else `None`.
    pub fn of_target(target: Target) -> Option<Self> {
        Self::at_or_below(target).filter(|work| work.target() == target)
    }

    /// The power-of-two work nearest to what `target` proves (to the nearest power of two on a
    /// log scale), clamped to what the unit expresses: for turning a target chosen for a share
    /// rate into one that is credited exactly, without halving the rate.
    pub fn nearest(target: Target) -> Self {
        let log2 = (expected_hashes(target) as f64).log2().round();
        let clamped = log2.clamp(f64::from(Self::MIN.0), f64::from(Self::MAX.0));
        ShareWork(clamped as u8)
    }

    /// log2 of the expected hashes.
    pub fn log2(self) -> u8 {
        self.0
    }

    /// `2^(256-log2) - 1`: exactly one header hash in `2^log2` meets it.
    pub fn target(self) -> Target {
        let ones = 256 - u32::from(self.0);
        let mut le = [0u8; 32];
        let full = (ones / 8) as usize;
        le[..full].fill(0xff);
        if ones % 8 != 0 {
            le[full] = (1u8 << (ones % 8)) - 1;
        }
        Target::from_le_bytes(le)
    }

    /// The expected hashes of one share, `2^log2`.
    pub fn expected_hashes(self) -> u128 {
        1u128 << self.0
    }

    /// What one share earns, in units: `2^(log2 - 12)`.
    pub fn amount(self) -> u64 {
        1u64 << (self.0 - HASHES_PER_UNIT_LOG2)
    }

    /// The difficulty (units of 2^32 expected hashes): `2^(log2 - 32)`.
    pub fn difficulty(self) -> f64 {
        2f64.powi(i32::from(self.0) - DIFFICULTY_ONE_LOG2)
    }
}

/// The expected hashes a share at `target` proves, `2^256 / (target + 1)` rounded down
/// (bitcoin's block "work"), saturating at `u128::MAX`.
pub fn expected_hashes(target: Target) -> u128 {
    let work = target.to_work().to_le_bytes();
    if work[16..].iter().any(|byte| *byte != 0) {
        return u128::MAX;
    }
    u128::from_le_bytes(work[..16].try_into().expect("16 bytes"))
}

/// What a share at `target_le` (the 256-bit target as carried in Sv2 messages, little-endian)
/// earns, in units: its expected hashes divided by 2^12, rounded down, saturating at `u64::MAX`.
///
/// Exact for the power-of-two targets the pool hands out ([`ShareWork::amount`]); for any other
/// target the rounding is down, never in the miner's favour. A target easier than 2^12 hashes
/// earns 0: such a share is not credited. The share's own hash does not enter: a lucky hash earns
/// the same as any other share at that target, so payment tracks expected work and cannot be
/// gamed by withholding or grinding.
pub fn credited_work(target_le: [u8; 32]) -> u64 {
    let units = expected_hashes(Target::from_le_bytes(target_le)) >> HASHES_PER_UNIT_LOG2;
    u64::try_from(units).unwrap_or(u64::MAX)
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
    fn every_power_of_two_target_is_credited_exactly_its_expected_hashes() {
        // The whole range the unit expresses: difficulty 2^-20 ... 2^42.
        for log2 in ShareWork::MIN.log2()..=ShareWork::MAX.log2() {
            let work = ShareWork::from_log2(log2).unwrap();
            let target = work.target();
            // Independently of our arithmetic: bitcoin's own work of the target.
            assert_eq!(expected_hashes(target), 1u128 << log2, "2^{log2}");
            assert_eq!(
                u128::from(credited_work(target.to_le_bytes())) << HASHES_PER_UNIT_LOG2,
                expected_hashes(target),
                "2^{log2}: credited units times the unit are the proven hashes"
            );
            assert_eq!(credited_work(target.to_le_bytes()), work.amount());
            // Exactly 2^-log2 of all hashes meet it: the next hash up does not.
            let mut just_above = target.to_le_bytes();
            let first_zero_byte = just_above.iter().position(|byte| *byte != 0xff).unwrap();
            just_above[first_zero_byte] += 1;
            assert!(Target::from_le_bytes(just_above) > target);
            assert_eq!(ShareWork::at_or_below(target), Some(work));
            assert_eq!(ShareWork::at_or_above(target), Some(work));
            assert_eq!(ShareWork::of_target(target), Some(work));
            // One hash fewer meeting it: not a power-of-two target.
            let mut just_below = target.to_le_bytes();
            just_below[0] -= 1;
            assert_eq!(
                ShareWork::of_target(Target::from_le_bytes(just_below)),
                None
            );
        }
    }

    #[test]
    fn the_unit_is_four_thousand_ninety_six_hashes() {
        assert_eq!(ShareWork::MIN.expected_hashes(), 4096);
        assert_eq!(ShareWork::MIN.amount(), 1);
        assert_eq!(ShareWork::MIN.difficulty(), 2f64.powi(-20));
        let difficulty_one = ShareWork::from_log2(32).unwrap();
        assert_eq!(difficulty_one.amount(), 1 << 20);
        assert_eq!(difficulty_one.difficulty(), 1.0);
        assert_eq!(ShareWork::MAX.amount(), 1 << 62);
        assert_eq!(ShareWork::from_log2(11), None);
        assert_eq!(ShareWork::from_log2(75), None);
    }

    #[test]
    fn difficulties_round_up_to_a_power_of_two() {
        assert_eq!(ShareWork::at_least_difficulty(1.0).unwrap().log2(), 32);
        assert_eq!(ShareWork::at_least_difficulty(256.0).unwrap().log2(), 40);
        assert_eq!(ShareWork::at_least_difficulty(300.0).unwrap().log2(), 41);
        assert_eq!(ShareWork::at_least_difficulty(0.75).unwrap().log2(), 32);
        assert_eq!(
            ShareWork::at_least_difficulty(2f64.powi(-12))
                .unwrap()
                .log2(),
            20
        );
        // Below and above what the unit expresses: clamped.
        assert_eq!(ShareWork::at_least_difficulty(1e-12), Some(ShareWork::MIN));
        assert_eq!(ShareWork::at_least_difficulty(1e30), Some(ShareWork::MAX));
        assert_eq!(ShareWork::at_least_difficulty(0.0), None);
        assert_eq!(ShareWork::at_least_difficulty(-1.0), None);
        assert_eq!(ShareWork::at_least_difficulty(f64::NAN), None);
    }

    #[test]
    fn bitcoin_difficulty_one_is_credited_what_it_proves_rounded_down() {
        // 0x00000000ffff0000...: Bitcoin's difficulty-1 target is a little below 2^224, so it
        // proves a little more than 2^32 expected hashes (2^32 + 2^16 + 1); not a power of two, it
        // is credited rounded down, and a channel asking for it is rounded to the next harder
        // power of two, 2^33.
        let diff1 = target_with_top_word(0xffff_0000, 4);
        assert_eq!(
            expected_hashes(Target::from_le_bytes(diff1)),
            (1 << 32) + (1 << 16) + 1
        );
        assert_eq!(credited_work(diff1), (1 << 20) + 16);
        let rounded = ShareWork::at_or_below(Target::from_le_bytes(diff1)).unwrap();
        assert_eq!(rounded.log2(), 33);
        assert!(rounded.target() <= Target::from_le_bytes(diff1));
    }

    #[test]
    fn too_easy_targets_earn_nothing_and_impossible_ones_saturate() {
        assert_eq!(credited_work([0xff; 32]), 0);
        assert_eq!(
            credited_work(ShareWork::from_log2(11 + 1).unwrap().target().to_le_bytes()),
            1
        );
        assert_eq!(credited_work([0; 32]), u64::MAX);
        let mut one = [0u8; 32];
        one[0] = 1;
        assert_eq!(credited_work(one), u64::MAX);
        assert_eq!(ShareWork::at_or_below(Target::from_le_bytes(one)), None);
        assert_eq!(
            ShareWork::at_or_below(Target::MAX),
            ShareWork::from_log2(33)
        );
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

    #[test]
    fn nearest_rounds_on_a_log_scale() {
        let target = |hashes: u128| {
            Target::from_le_bytes({
                // 2^256 / hashes, roughly: the target of a share of `hashes` expected hashes.
                let mut le = [0u8; 32];
                let value = u128::MAX / hashes;
                le[16..].copy_from_slice(&value.to_le_bytes());
                le
            })
        };
        assert_eq!(ShareWork::nearest(target(1 << 20)).log2(), 20);
        assert_eq!(ShareWork::nearest(target(1_400_000)).log2(), 20);
        assert_eq!(ShareWork::nearest(target(1_500_000)).log2(), 21);
        assert_eq!(
            ShareWork::nearest(Target::from_le_bytes([0xff; 32])),
            ShareWork::MIN
        );
        assert_eq!(ShareWork::nearest(Target::ZERO), ShareWork::MAX);
        for log2 in ShareWork::MIN.log2()..=ShareWork::MAX.log2() {
            let work = ShareWork::from_log2(log2).unwrap();
            assert_eq!(ShareWork::nearest(work.target()), work);
        }
    }

    proptest! {
        #[test]
        fn harder_target_never_earns_less(a in any::<[u8; 32]>(), b in any::<[u8; 32]>()) {
            let (ta, tb) = (Target::from_le_bytes(a), Target::from_le_bytes(b));
            let (easy, hard) = if ta >= tb { (a, b) } else { (b, a) };
            prop_assert!(credited_work(hard) >= credited_work(easy));
        }

        #[test]
        fn no_target_is_credited_more_than_it_proves(target in any::<[u8; 32]>()) {
            let proven = expected_hashes(Target::from_le_bytes(target));
            let credited = u128::from(credited_work(target)) << HASHES_PER_UNIT_LOG2;
            prop_assert!(credited <= proven || proven == u128::MAX);
        }

        #[test]
        fn rounding_a_target_never_makes_it_easier(target in any::<[u8; 32]>()) {
            let target = Target::from_le_bytes(target);
            if let Some(work) = ShareWork::at_or_below(target) {
                prop_assert!(work.target() <= target);
                // And it is the easiest such: the next easier power of two is above `target`.
                if let Some(easier) = ShareWork::from_log2(work.log2() - 1) {
                    prop_assert!(easier.target() > target);
                }
            }
        }

        #[test]
        fn capping_at_a_target_never_makes_it_harder(target in any::<[u8; 32]>()) {
            let target = Target::from_le_bytes(target);
            match ShareWork::at_or_above(target) {
                Some(work) => {
                    prop_assert!(work.target() >= target);
                    // And it is the hardest such: the next harder power of two is below.
                    if let Some(harder) = ShareWork::from_log2(work.log2() + 1) {
                        prop_assert!(harder.target() < target);
                    }
                }
                None => prop_assert!(ShareWork::MIN.target() < target),
            }
        }
    }
}
