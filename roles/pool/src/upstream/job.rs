//! An upstream pool's job, as the downstream channels mine it.
//!
//! The upstream gives one coinbase with an extranonce of `E` bytes to roll. The proxy splits
//! those bytes between its own channels: each channel's extranonce prefix (a pool-wide index,
//! then what the miner rolls) takes the last `T` of them, and the `E − T` before are fixed at
//! zero. So the downstream coinbase is exactly the upstream's:
//!
//! ```text
//! upstream prefix ‖ X1 ‖ 0^(E−T) ‖ channel prefix ‖ miner's extranonce ‖ upstream suffix
//! └──── this job's coinbase prefix ┘ └──────── T bytes ─────────────┘
//! ```
//!
//! where `X1` is the upstream's own extranonce prefix for our channel. Two channels never share
//! an index, so their shares never collide upstream.
//!
//! Downstream channels take Template Distribution work only, so an upstream job enters them as a
//! synthetic template (no outputs of our own: the coinbase is the upstream's bytes) through
//! channels_sv2's `ExtendedJob::from_template` and `on_group_channel_job`.

use stratum_apps::stratum_core::binary_sv2::{
    B0255Owned, B064KOwned, Seq0255Owned, Sv2OptionOwned, U256Owned,
};
use stratum_apps::stratum_core::bitcoin::{CompactTarget, Target};
use stratum_apps::stratum_core::channels_sv2::server::jobs::extended::ExtendedJob;
use stratum_apps::stratum_core::mining_sv2::NewExtendedMiningJobOwned;
use stratum_apps::stratum_core::template_distribution_sv2::{
    NewTemplateOwned, SetNewPrevHashOwned,
};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum JobError {
    #[error("the upstream job's coinbase prefix ({0} bytes) is too large to relay")]
    CoinbaseTooLarge(usize),
    #[error("the upstream job's merkle path has more than 255 levels")]
    MerklePathTooLong,
    #[error("channels_sv2 refused the job: {0}")]
    Channel(String),
}

/// One job of the upstream pool, ready to hand to downstream channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamJob {
    /// The upstream connection this job came on (1, 2, … per process).
    pub session: u64,
    /// Which tip of that session it belongs to (see [`crate::work::Tip`]).
    pub generation: u64,
    /// The pool-wide template id downstream channels know it by.
    pub work_id: u64,
    /// The upstream's job id, for forwarding shares.
    pub upstream_job_id: u32,
    /// The previous block hash, in Sv2 wire order.
    pub prev_hash: [u8; 32],
    pub nbits: u32,
    pub min_ntime: u32,
    pub version: u32,
    pub version_rolling_allowed: bool,
    /// The version bits the upstream takes rolled: a share rolling others is worth nothing there.
    pub version_mask: u32,
    /// The upstream's coinbase prefix, its extranonce prefix for us, and the zero padding.
    pub coinbase_prefix: Vec<u8>,
    pub coinbase_suffix: Vec<u8>,
    pub merkle_path: Vec<[u8; 32]>,
    /// Shares at or under this target are forwarded upstream.
    pub upstream_target: Target,
    /// Zero bytes between the upstream's extranonce prefix and a channel's prefix (`E − T`).
    pub padding: usize,
    /// The block height the coinbase commits to (BIP34), 0 when it does not say.
    pub height: u64,
}

impl UpstreamJob {
    /// Checks what the downstream messages must carry.
    pub fn check(&self) -> Result<(), JobError> {
        if self.coinbase_prefix.len() > u16::MAX as usize {
            return Err(JobError::CoinbaseTooLarge(self.coinbase_prefix.len()));
        }
        if self.merkle_path.len() > 255 {
            return Err(JobError::MerklePathTooLong);
        }
        Ok(())
    }

    /// Whether a share's `version` rolls only bits the upstream takes rolled.
    pub fn takes_version(&self, version: u32) -> bool {
        (version ^ self.version) & !self.version_mask == 0
    }

    /// The upstream extranonce of a share a channel found: padding, the channel's extranonce
    /// prefix, then what the miner rolled.
    pub fn upstream_extranonce(&self, channel_prefix: &[u8], rolled: &[u8]) -> Vec<u8> {
        let mut extranonce = vec![0u8; self.padding];
        extranonce.extend_from_slice(channel_prefix);
        extranonce.extend_from_slice(rolled);
        extranonce
    }

    fn merkle_path(&self) -> Seq0255Owned<U256Owned> {
        let path: Vec<U256Owned> = self.merkle_path.iter().map(|node| (*node).into()).collect();
        Seq0255Owned::new(path).expect("checked: at most 255 levels")
    }

    /// The job for channel (or group channel) `channel_id` under id `job_id`: a future job waits
    /// for [`Self::set_new_prev_hash`]; a current one is mined on the tip the channel has.
    pub fn extended_job(
        &self,
        channel_id: u32,
        job_id: u32,
        future: bool,
    ) -> Result<ExtendedJob, JobError> {
        let template = NewTemplateOwned {
            template_id: self.work_id,
            future_template: future,
            version: self.version,
            coinbase_tx_version: 2,
            coinbase_prefix: B0255Owned::try_from(Vec::new()).expect("empty fits"),
            coinbase_tx_input_sequence: u32::MAX,
            coinbase_tx_value_remaining: 0,
            coinbase_tx_outputs_count: 0,
            coinbase_tx_outputs: B064KOwned::try_from(Vec::new()).expect("empty fits"),
            coinbase_tx_locktime: 0,
            merkle_path: self.merkle_path(),
        };
        let message = NewExtendedMiningJobOwned {
            channel_id,
            job_id,
            min_ntime: Sv2OptionOwned::new((!future).then_some(self.min_ntime)),
            version: self.version,
            version_rolling_allowed: self.version_rolling_allowed,
            merkle_path: self.merkle_path(),
            coinbase_tx_prefix: B064KOwned::try_from(self.coinbase_prefix.clone())
                .map_err(|_| JobError::CoinbaseTooLarge(self.coinbase_prefix.len()))?,
            coinbase_tx_suffix: B064KOwned::try_from(self.coinbase_suffix.clone())
                .map_err(|_| JobError::CoinbaseTooLarge(self.coinbase_suffix.len()))?,
        };
        // The channel puts its own extranonce prefix in when it takes the job.
        ExtendedJob::from_template(
            template,
            Vec::new(),
            Vec::new(),
            self.coinbase_prefix.clone(),
            self.coinbase_suffix.clone(),
            message,
        )
        .map_err(|error| JobError::Channel(format!("{error:?}")))
    }

    /// The Template Distribution `SetNewPrevHash` that activates this work's future jobs.
    pub fn set_new_prev_hash(&self) -> SetNewPrevHashOwned {
        let network_target = Target::from_compact(CompactTarget::from_consensus(self.nbits));
        SetNewPrevHashOwned {
            template_id: self.work_id,
            prev_hash: self.prev_hash.into(),
            header_timestamp: self.min_ntime,
            n_bits: self.nbits,
            target: network_target.to_le_bytes().into(),
        }
    }
}

/// BIP34: the height a coinbase commits to, as the first push of its scriptSig, read from the
/// start of a serialized coinbase without witness data (version, one input, its outpoint, the
/// script length, then the script).
pub fn bip34_height(coinbase_prefix: &[u8]) -> Option<u64> {
    const SCRIPT_START: usize = 4 + 1 + 36 + 1;
    if coinbase_prefix.get(4) != Some(&1) {
        return None;
    }
    let opcode = *coinbase_prefix.get(SCRIPT_START)?;
    match opcode {
        0x51..=0x60 => Some(u64::from(opcode - 0x50)),
        1..=8 => {
            let bytes =
                coinbase_prefix.get(SCRIPT_START + 1..SCRIPT_START + 1 + opcode as usize)?;
            let mut height = [0u8; 8];
            height[..bytes.len()].copy_from_slice(bytes);
            Some(u64::from_le_bytes(height))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratum_apps::stratum_core::bitcoin::blockdata::script::Builder;

    fn coinbase_prefix_at(height: i64) -> Vec<u8> {
        let script = Builder::new().push_int(height).into_script().into_bytes();
        let mut prefix = 2u32.to_le_bytes().to_vec();
        prefix.push(1);
        prefix.extend([0u8; 32]);
        prefix.extend(u32::MAX.to_le_bytes());
        prefix.push(script.len() as u8 + 8);
        prefix.extend(script);
        prefix
    }

    #[test]
    fn the_height_is_read_from_the_coinbase() {
        for height in [1i64, 16, 17, 200, 840_000, 8_388_608] {
            assert_eq!(
                bip34_height(&coinbase_prefix_at(height)),
                Some(height as u64)
            );
        }
        assert_eq!(bip34_height(&[0u8; 10]), None);
    }

    #[test]
    fn the_upstream_extranonce_is_padding_then_the_channels_bytes() {
        let job = UpstreamJob {
            padding: 2,
            ..sample()
        };
        assert_eq!(
            job.upstream_extranonce(&[7, 8], &[9, 10, 11, 12]),
            vec![0, 0, 7, 8, 9, 10, 11, 12]
        );
    }

    #[test]
    fn only_the_upstreams_version_bits_may_be_rolled() {
        let job = sample();
        assert!(job.takes_version(job.version));
        assert!(job.takes_version(job.version | 0x1fff_e000));
        // BIP323's bits 5-12: channels_sv2 lets them through, this upstream does not.
        assert!(!job.takes_version(job.version | 1 << 5));
        let fixed = UpstreamJob {
            version_mask: 0,
            ..sample()
        };
        assert!(!fixed.takes_version(job.version | 1 << 13));
    }

    #[test]
    fn a_job_becomes_a_channel_job_with_the_upstream_coinbase() {
        let job = sample();
        let future = job.extended_job(5, 9, true).expect("a job");
        assert!(future.is_future());
        assert_eq!(future.get_job_id(), 9);
        assert_eq!(
            future.get_coinbase_tx_prefix_without_bip141(),
            job.coinbase_prefix
        );
        let current = job.extended_job(5, 10, false).expect("a job");
        assert_eq!(current.get_min_ntime(), Some(job.min_ntime));
        assert_eq!(job.set_new_prev_hash().template_id, job.work_id);
    }

    fn sample() -> UpstreamJob {
        UpstreamJob {
            session: 1,
            generation: 1,
            work_id: 42,
            upstream_job_id: 3,
            prev_hash: [1; 32],
            nbits: 0x207fffff,
            min_ntime: 1_700_000_000,
            version: 0x2000_0000,
            version_rolling_allowed: true,
            version_mask: 0x1fff_e000,
            coinbase_prefix: coinbase_prefix_at(101),
            coinbase_suffix: vec![0xff; 20],
            merkle_path: vec![[2; 32]],
            upstream_target: Target::MAX,
            padding: 0,
            height: 101,
        }
    }
}
