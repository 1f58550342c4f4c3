//! The Stratum V2 constants every hashpool role agrees on. SRI's `common_messages_sv2` reads
//! these flags (`has_requires_std_job`, `has_version_rolling`) but does not name them.

/// The only Stratum V2 protocol version: what SetupConnection asks for and the pool uses.
pub const SV2_VERSION: u16 = 2;

/// SetupConnection flag, mining protocol (spec 5.3.1): the device mines standard jobs only
/// (header-only mining, no extended channels).
pub const REQUIRES_STANDARD_JOBS: u32 = 1;
/// SetupConnection flag, mining protocol (spec 5.3.1): the device rolls version bits and needs
/// the pool to allow it.
pub const REQUIRES_VERSION_ROLLING: u32 = 1 << 2;

/// SetupConnection.Success flag, mining protocol (spec 5.3.2): the pool does not accept rolled
/// versions. Bit 0, like [`REQUIRES_STANDARD_JOBS`] in the request: the two are not an echo.
pub const REQUIRES_FIXED_VERSION: u32 = 1;

/// The general-purpose version bits a miner may roll (BIP320: bits 13 to 28).
pub const VERSION_ROLLING_MASK: u32 = 0x1fff_e000;

#[cfg(test)]
mod tests {
    use super::*;
    use stratum_apps::stratum_core::common_messages_sv2::{
        has_requires_std_job, has_version_rolling,
    };

    #[test]
    fn flags_are_the_bits_sri_reads() {
        assert!(has_requires_std_job(REQUIRES_STANDARD_JOBS));
        assert!(!has_version_rolling(REQUIRES_STANDARD_JOBS));
        assert!(has_version_rolling(REQUIRES_VERSION_ROLLING));
        assert!(!has_requires_std_job(REQUIRES_VERSION_ROLLING));
    }

    #[test]
    fn the_version_rolling_mask_is_bip320s_sixteen_bits() {
        assert_eq!(VERSION_ROLLING_MASK.count_ones(), 16);
        assert_eq!(VERSION_ROLLING_MASK.trailing_zeros(), 13);
    }
}
