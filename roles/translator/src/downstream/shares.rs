//! `mining.submit`: checked against the job and the targets, forwarded to the pool, and answered
//! when the pool answers.

use stratum_core::bitcoin::BlockHash;
use stratum_core::mining_sv2::SubmitSharesExtendedOwned;
use stratum_core::sv1_api::client_to_server::{Submit, SubmitOutcome};
use stratum_core::sv1_api::utils::HexU32Be;

use super::{Channel, CloseReason, Downstream};
use crate::job::{check_share, sv2_share, ShareCheck, Sv1Job};
use crate::reject::ShareRejection;
use crate::sv1;
use crate::upstream::Command;

/// Shares waiting for the pool's answer; beyond this the oldest is answered as unknown.
const MAX_PENDING_SHARES: usize = 1024;

impl Downstream {
    pub(super) async fn submit(&mut self, submit: Submit) -> Result<(), CloseReason> {
        let (job, channel, extranonce2, version) = match self.share_job(&submit) {
            Ok(found) => found,
            Err(rejection) => return self.reject_share(submit.id, &rejection).await,
        };
        let hash = job.share_hash(&extranonce2, submit.time.0, submit.nonce.0, version);
        match check_share(job, &hash, channel.advertised_target) {
            ShareCheck::TooLow => {
                self.reject_share(submit.id, &ShareRejection::LowDifficulty)
                    .await
            }
            ShareCheck::MeetsAdvertisedOnly => {
                // The miner met the (rounded-down) difficulty it was told; the pool would not
                // credit the share, so it stops here.
                self.context.metrics.share("below-pool-target");
                self.respond(submit.respond(SubmitOutcome::Accepted)).await
            }
            ShareCheck::MeetsUpstream => {
                let share = sv2_share(
                    job,
                    &channel.layout,
                    self.next_sequence,
                    &extranonce2,
                    submit.time.0,
                    submit.nonce.0,
                    version,
                )?;
                self.forward(submit.id, share, hash).await
            }
        }
    }

    /// The job a share is on, the channel, its extranonce2 and its block version; or why the
    /// share is refused before it is hashed.
    fn share_job(
        &self,
        submit: &Submit,
    ) -> Result<(&Sv1Job, &Channel, Vec<u8>, u32), ShareRejection> {
        if self.user.as_deref() != Some(submit.user_name.as_str())
            || self.pending_authorize.is_some()
        {
            return Err(ShareRejection::UnauthorizedWorker);
        }
        let channel = self
            .channel
            .as_ref()
            .ok_or(ShareRejection::UpstreamUnavailable)?;
        let job = self
            .jobs
            .job(&submit.job_id)
            .filter(|job| job.channel_id == channel.channel_id)
            .ok_or(ShareRejection::JobNotFound)?;
        let extranonce2: Vec<u8> = submit.extra_nonce2.clone().into();
        if extranonce2.len() != self.extranonce2_size {
            return Err(ShareRejection::BadExtranonce2Size);
        }
        let version = share_version(job.version, submit.version_bits.as_ref(), self.version_mask)?;
        Ok((job, channel, extranonce2, version))
    }

    async fn forward(
        &mut self,
        request_id: u64,
        share: SubmitSharesExtendedOwned,
        hash: BlockHash,
    ) -> Result<(), CloseReason> {
        let sequence_number = share.sequence_number;
        self.next_sequence = self.next_sequence.wrapping_add(1);
        self.pending_shares.insert(sequence_number, request_id);
        if self.pending_shares.len() > MAX_PENDING_SHARES {
            if let Some((_, oldest)) = self.pending_shares.pop_first() {
                self.reject_share(oldest, &ShareRejection::NoAnswerFromPool)
                    .await?;
            }
        }
        tracing::debug!(%hash, sequence_number, "share forwarded");
        self.upstream(Command::Submit {
            miner: self.id,
            share,
        })
        .await
    }

    /// The pool accepted every share up to `last_sequence_number` on the channel.
    pub(super) async fn shares_accepted(
        &mut self,
        channel_id: u32,
        last_sequence_number: u32,
    ) -> Result<(), CloseReason> {
        if self.channel.as_ref().map(|c| c.channel_id) != Some(channel_id) {
            return Ok(());
        }
        let later = self
            .pending_shares
            .split_off(&last_sequence_number.wrapping_add(1));
        let answered = std::mem::replace(&mut self.pending_shares, later);
        for (_, request_id) in answered {
            self.context.metrics.share("accepted");
            self.respond_true(request_id).await?;
        }
        Ok(())
    }

    pub(super) async fn share_rejected(
        &mut self,
        sequence_number: u32,
        rejection: ShareRejection,
    ) -> Result<(), CloseReason> {
        let Some(request_id) = self.pending_shares.remove(&sequence_number) else {
            return Ok(());
        };
        tracing::info!(code = %rejection.code(), "share rejected by the pool");
        self.reject_share(request_id, &rejection).await
    }

    async fn reject_share(
        &mut self,
        request_id: u64,
        rejection: &ShareRejection,
    ) -> Result<(), CloseReason> {
        let code = rejection.code();
        self.context.metrics.share(code);
        let standard = rejection.sv1_error();
        self.respond(sv1::error_response(
            request_id,
            standard.code(),
            format!("{} ({code})", standard.message()),
        ))
        .await
    }
}

/// The block version of a share: the job's, with the bits the miner rolled inside its mask.
fn share_version(
    job_version: u32,
    rolled: Option<&HexU32Be>,
    mask: Option<u32>,
) -> Result<u32, ShareRejection> {
    match (rolled, mask) {
        (None, _) => Ok(job_version),
        (Some(bits), Some(mask)) if bits.0 & !mask == 0 => {
            Ok((job_version & !mask) | (bits.0 & mask))
        }
        (Some(_), Some(_)) => Err(ShareRejection::VersionBitsOutsideMask),
        (Some(_), None) => Err(ShareRejection::VersionRollingNotConfigured),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolled_bits_replace_the_jobs_inside_the_mask_only() {
        let mask = 0x1fff_e000;
        assert_eq!(
            share_version(0x2000_0000, None, Some(mask)),
            Ok(0x2000_0000)
        );
        assert_eq!(
            share_version(0x2000_0000, Some(&HexU32Be(0x0000_6000)), Some(mask)),
            Ok(0x2000_6000)
        );
        assert_eq!(
            share_version(0x2000_0000, Some(&HexU32Be(0x0000_0001)), Some(mask)),
            Err(ShareRejection::VersionBitsOutsideMask)
        );
        assert_eq!(
            share_version(0x2000_0000, Some(&HexU32Be(0x0000_6000)), None),
            Err(ShareRejection::VersionRollingNotConfigured)
        );
    }
}
