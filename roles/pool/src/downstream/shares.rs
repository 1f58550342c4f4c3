//! Shares: validate, credit (the quote), acknowledge, and hand over found blocks.

use super::channel::{HeaderFields, JobInfo, SubmittedShare};
use super::*;
use crate::dashboard::book::CountedShare;
use crate::dashboard::share_difficulty;
use crate::upstream::ForwardedShare;
use stratum_apps::stratum_core::mining_sv2::{
    ERROR_CODE_SUBMIT_SHARES_INVALID_NON_ROLLABLE_VERSION_BIT, ERROR_CODE_SUBMIT_SHARES_STALE_SHARE,
};

impl Downstream {
    /// Validates a share on its channel and answers it.
    pub(super) async fn submit(&mut self, share: Submission) -> Result<(), CloseReason> {
        let submitted = share.submitted();
        let result = match (self.channels.get_mut(&submitted.channel_id), share) {
            (
                Some(Channel {
                    kind: ChannelKind::Standard(channel),
                    ..
                }),
                Submission::Standard(share),
            ) => channel.validate_share(share),
            (
                Some(Channel {
                    kind: ChannelKind::Extended(channel),
                    ..
                }),
                Submission::Extended(share),
            ) => channel.validate_share(share),
            // No such channel, or a share of the other channel type.
            _ => {
                return self
                    .reject_share(
                        submitted.channel_id,
                        submitted.sequence_number,
                        ERROR_CODE_SUBMIT_SHARES_INVALID_CHANNEL_ID,
                    )
                    .await
            }
        };
        self.on_share_result(submitted, result).await
    }

    pub(super) async fn reject_share(
        &mut self,
        channel_id: u32,
        sequence_number: u32,
        code: &str,
    ) -> Result<(), CloseReason> {
        self.count_rejection(code);
        self.send_mining(MiningOwned::SubmitSharesError(SubmitSharesErrorOwned {
            channel_id,
            sequence_number,
            error_code: code.to_owned().try_into().expect("error codes are short"),
        }))
        .await
    }

    /// What the pool does with channels_sv2's verdict on a share: reject it, or hand over its
    /// block (if it is one), credit it and acknowledge it.
    pub(super) async fn on_share_result(
        &mut self,
        share: SubmittedShare,
        result: Result<ShareValidationResult, ShareValidationError>,
    ) -> Result<(), CloseReason> {
        let SubmittedShare {
            channel_id,
            sequence_number,
            job_id,
            header,
            rolled,
        } = share;
        let (share_hash, block) = match result {
            Ok(ShareValidationResult::Valid(hash)) => (hash.to_byte_array(), None),
            Ok(ShareValidationResult::BlockFound(hash, template_id, coinbase)) => {
                (hash.to_byte_array(), Some((template_id, coinbase)))
            }
            Err(error) => {
                let Some(code) = share_error_code(&error) else {
                    return Err(CloseReason::Protocol(format!(
                        "channel {channel_id}: {error:?}"
                    )));
                };
                return self.reject_share(channel_id, sequence_number, code).await;
            }
        };
        let job = self.count_valid_share(channel_id, job_id)?;
        if let Some(upstream) = &job.upstream {
            // A share the upstream cannot take earns nothing there, so it earns nothing here:
            // its upstream is gone, or it rolls version bits the upstream does not let roll.
            let refused = if !self.upstream_is_live(upstream) {
                Some(ERROR_CODE_SUBMIT_SHARES_STALE_SHARE)
            } else if !upstream.takes_version(header.version) {
                Some(ERROR_CODE_SUBMIT_SHARES_INVALID_NON_ROLLABLE_VERSION_BIT)
            } else {
                None
            };
            if let Some(code) = refused {
                return self.reject_share(channel_id, sequence_number, code).await;
            }
        }
        let is_block = block.is_some();
        match block {
            // A proxy's block is the upstream's to submit: the share is forwarded below.
            Some(_) if job.upstream.is_some() => {}
            Some((template_id, coinbase)) => {
                let coinbase = self.coinbase_as_mined(channel_id, job_id, coinbase);
                let template_id = template_id.unwrap_or(job.template_id);
                self.found_block(share_hash, template_id, &coinbase, header);
            }
            None => {}
        }
        if Target::from_le_bytes(share_hash) > job.target {
            // On regtest (and any network whose target is easier than the share target) a hash
            // can meet the network target without meeting the job's: channels_sv2 reports the
            // block, submitted above, but the share proves less than the job asked for and
            // earns nothing.
            tracing::debug!(
                channel_id,
                "block candidate below the share target: not credited"
            );
            return self
                .reject_share(
                    channel_id,
                    sequence_number,
                    ERROR_CODE_SUBMIT_SHARES_DIFFICULTY_TOO_LOW,
                )
                .await;
        }
        self.credit(channel_id, job_id, &job, share_hash);
        if let Some(upstream) = &job.upstream {
            self.forward(channel_id, upstream, share_hash, header, &rolled);
        }
        self.acknowledge(channel_id, is_block).await
    }

    fn upstream_is_live(&self, job: &UpstreamJob) -> bool {
        self.context
            .upstream
            .as_ref()
            .is_some_and(|upstream| upstream.is_live(job))
    }

    /// Hands a credited share that also meets the upstream's target to the upstream task
    /// (never waits: a full queue drops it, counted).
    fn forward(
        &self,
        channel_id: u32,
        job: &UpstreamJob,
        share_hash: [u8; 32],
        header: HeaderFields,
        rolled: &[u8],
    ) {
        let Some(upstream) = &self.context.upstream else {
            return;
        };
        if Target::from_le_bytes(share_hash) > job.upstream_target {
            self.context.metrics.upstream.below_target.inc();
            return;
        }
        let channel = &self.channels[&channel_id];
        upstream.forward(ForwardedShare {
            session: job.session,
            upstream_job_id: job.upstream_job_id,
            extranonce: job.upstream_extranonce(channel.extranonce_prefix(), rolled),
            version: header.version,
            ntime: header.ntime,
            nonce: header.nonce,
            miner: channel.identity.locking_key().to_string(),
        });
    }

    /// Counts a valid share for vardiff and returns the job it was found on.
    fn count_valid_share(&mut self, channel_id: u32, job_id: u32) -> Result<JobInfo, CloseReason> {
        let channel = self
            .channels
            .get_mut(&channel_id)
            .expect("validated on this channel");
        channel.vardiff.increment_shares_since_last_update();
        channel.jobs.get(&job_id).cloned().ok_or_else(|| {
            CloseReason::Protocol(format!(
                "accepted share on job {job_id} the pool never recorded"
            ))
        })
    }

    /// The coinbase the miner hashed for a block found on `job_id`.
    fn coinbase_as_mined(&self, channel_id: u32, job_id: u32, coinbase: Vec<u8>) -> Vec<u8> {
        let channel = &self.channels[&channel_id];
        match (&channel.kind, self.group_jobs.get(&job_id)) {
            (ChannelKind::Standard(inner), Some(group_job)) if channel.grouped => {
                // channels_sv2 8.0.0 gives a grouped standard channel a coinbase with the
                // template's outputs twice (`ExtendedJob::into_standard_job` passes all of the
                // job's outputs as additional ones), which is not the transaction the miner
                // hashed. Rebuild it from the group job's bytes and this channel's extranonce
                // prefix, exactly as the miner did.
                [
                    group_job.get_coinbase_tx_prefix_with_bip141(),
                    inner.get_extranonce_prefix().to_vec(),
                    group_job.get_coinbase_tx_suffix_with_bip141(),
                ]
                .concat()
            }
            _ => coinbase,
        }
    }

    /// Publishes the share's quote (create, and under ehash its PAID update) for exactly the
    /// work of the job's target, and counts it.
    fn credit(&self, channel_id: u32, job_id: u32, job: &JobInfo, share_hash: [u8; 32]) {
        let identity = &self.channels[&channel_id].identity;
        let locking_key = identity.locking_key();
        let create = CreateQuote::for_share_under(
            self.context.release_policy,
            AcceptedShare {
                share_hash: BlockHash::from_byte_array(share_hash),
                locking_pubkey: locking_key,
                credited_work: job.credited_work,
                channel_id,
                job_id,
                template_id: job.template_id,
                epoch: match &self.context.epochs {
                    Some(epochs) => {
                        // Noted before the epoch is read: a close in between leaves the share
                        // in an epoch not marked as holding one, which at worst waits for the
                        // next upstream block, never an empty epoch marked as full.
                        epochs.note_shares(true);
                        epochs.current()
                    }
                    None => job.height,
                },
                accepted_at: unix_now(),
            },
        );
        tracing::debug!(
            channel_id,
            quote_id = %create.quote_id,
            work = job.credited_work,
            "share accepted"
        );
        let quote_id = create.quote_id;
        let epoch =
            (self.context.release_policy == ReleasePolicy::PayoutEpoch).then_some(create.epoch);
        self.context.quotes.publish(QuoteMessage::Create(create));
        if self.context.release_policy == ReleasePolicy::Ehash {
            // The share is valid and its template came from bitcoind: nothing left to wait for.
            self.context
                .quotes
                .publish(QuoteMessage::Update(UpdateQuote::paid(vec![quote_id])));
        }
        self.context.metrics.share_accepted(job.credited_work);
        self.context.dashboard.share_accepted(
            identity,
            CountedShare {
                work: job.credited_work,
                proven_hashes: job.proven_hashes,
                difficulty: share_difficulty(share_hash),
                epoch,
            },
        );
    }

    /// Sends SubmitShares.Success when the channel's batch is full, or at once for a block.
    async fn acknowledge(&mut self, channel_id: u32, at_once: bool) -> Result<(), CloseReason> {
        let accounting = self.channels[&channel_id].accounting();
        if !(at_once || accounting.should_acknowledge()) {
            return Ok(());
        }
        let success = SubmitSharesSuccess {
            channel_id,
            last_sequence_number: accounting.get_last_share_sequence_number(),
            new_submits_accepted_count: accounting.get_last_batch_accepted(),
            new_shares_sum: accounting.get_last_batch_work_sum(),
        };
        self.send_mining(MiningOwned::SubmitSharesSuccess(success))
            .await
    }

    /// Assembles a found block and hands it to the block submitter (never waits for bitcoind).
    pub(super) fn found_block(
        &self,
        share_hash: [u8; 32],
        template_id: u64,
        coinbase: &[u8],
        HeaderFields {
            version,
            ntime,
            nonce,
        }: HeaderFields,
    ) {
        let Some(template) = self.context.template_store.get(template_id) else {
            tracing::error!(template_id, "block found on a template no longer kept");
            return;
        };
        let block = match template.assemble_block(coinbase, version, ntime, nonce) {
            Ok(block) => block,
            Err(error) => {
                tracing::error!(%error, "cannot assemble the found block");
                return;
            }
        };
        // The block must be the header the miner hashed; anything else is a bug here, and
        // bitcoind would only answer with a less telling reason.
        if block.block_hash().to_byte_array() != share_hash {
            tracing::error!(
                block_hash = %block.block_hash(),
                share_hash = %BlockHash::from_byte_array(share_hash),
                "the assembled block is not the block found; not submitted"
            );
            self.context.metrics.blocks_rejected.inc();
            return;
        }
        if let Some(blocks) = &self.context.blocks {
            blocks.offer(block);
        }
    }
}

pub(super) fn share_error_code(error: &ShareValidationError) -> Option<&'static str> {
    match error {
        ShareValidationError::Invalid(code)
        | ShareValidationError::Stale(code)
        | ShareValidationError::InvalidJobId(code)
        | ShareValidationError::DoesNotMeetTarget(code)
        | ShareValidationError::VersionRollingNotAllowed(code)
        | ShareValidationError::DuplicateShare(code)
        | ShareValidationError::BadExtranonceSize(code) => Some(code),
        _ => None,
    }
}
