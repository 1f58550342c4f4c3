//! A Stratum V2 upstream: Noise with the authority key checked, one extended channel, its jobs
//! tracked by channels_sv2's client channel, shares submitted on it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hashpool_service::stopped;
use hashpool_sv2_client::{
    Device, Messages, PoolConnection, PoolWriter, REQUIRES_FIXED_VERSION, REQUIRES_VERSION_ROLLING,
};
use stratum_apps::stratum_core::bitcoin::Target;
use stratum_apps::stratum_core::channels_sv2::client::extended::{ExtendedChannel, ExtendedJob};
use stratum_apps::stratum_core::channels_sv2::extranonce_manager::ExtranoncePrefix;
use stratum_apps::stratum_core::mining_sv2::SubmitSharesExtendedOwned;
use stratum_apps::stratum_core::parsers_sv2::{AnyMessageOwned, MiningOwned};
use tokio::sync::{mpsc, watch};

use super::{
    bip34_height, ForwardedShare, PendingShares, SessionEnd, Shared, UpstreamError, UpstreamJob,
};
use crate::config::UpstreamConfig;
use crate::work::Work;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const URL_SCHEME: &str = "stratum2+tcp://";
/// Past upstream jobs the client channel keeps (each holds a whole coinbase).
const PAST_JOBS_KEPT: usize = 4;
const DEVICE: Device = Device {
    vendor: "hashpool-proxy",
    hardware_version: "",
    firmware: env!("CARGO_PKG_VERSION"),
};

pub(super) struct Sv2Session {
    session: u64,
    channel: ExtendedChannel,
    writer: PoolWriter,
    messages: Messages,
    version_rolling: bool,
    /// `E − T`: the upstream's extranonce bytes this pool's channels leave at zero.
    padding: usize,
    generation: u64,
    gave_work: bool,
    next_sequence_number: u32,
    pending: PendingShares,
}

impl Sv2Session {
    /// Connects, sets up and opens the extended channel.
    pub(super) async fn connect(
        upstream: &UpstreamConfig,
        session: u64,
        shared: &Shared,
    ) -> Result<Self, UpstreamError> {
        let address = upstream
            .url
            .strip_prefix(URL_SCHEME)
            .ok_or_else(|| UpstreamError::Url(upstream.url.clone()))?;
        let connect = PoolConnection::connect(address, upstream.authority_public_key);
        let mut connection = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(CONNECT_TIMEOUT))??;
        let flags = connection.setup(REQUIRES_VERSION_ROLLING, &DEVICE).await?;
        let version_rolling = flags & REQUIRES_FIXED_VERSION == 0;
        let needed = shared.channel_extranonce_len;
        let opened = connection
            .open_extended(
                1,
                &upstream.user_identity,
                upstream.nominal_hashrate,
                needed as u16,
            )
            .await?
            .map_err(|refused| UpstreamError::Refused(refused.code))?;
        let given = usize::from(opened.extranonce_size);
        if given < needed {
            return Err(UpstreamError::ExtranonceTooSmall { given, needed });
        }
        let prefix = ExtranoncePrefix::from_wire(opened.extranonce_prefix.as_bytes().to_vec())
            .map_err(|error| UpstreamError::Protocol(format!("extranonce prefix: {error:?}")))?;
        let channel = ExtendedChannel::new(
            opened.channel_id,
            upstream.user_identity.clone(),
            prefix,
            Target::from_le_bytes(opened.target.to_array()),
            upstream.nominal_hashrate,
            version_rolling,
            opened.extranonce_size,
            Some(PAST_JOBS_KEPT),
        )
        .map_err(|error| UpstreamError::Protocol(format!("channel: {error:?}")))?;
        tracing::info!(
            channel_id = opened.channel_id,
            extranonce_size = given,
            version_rolling,
            "upstream channel open"
        );
        let (reader, writer) = connection.into_split();
        Ok(Self {
            session,
            channel,
            writer,
            messages: reader.spawn(256),
            version_rolling,
            padding: given - needed,
            generation: 0,
            gave_work: false,
            next_sequence_number: 0,
            pending: PendingShares::default(),
        })
    }

    /// Serves the channel until the upstream goes away or the pool stops.
    pub(super) async fn run(
        mut self,
        shared: &Shared,
        forwards: &mut mpsc::Receiver<ForwardedShare>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> SessionEnd {
        let result = loop {
            let step = tokio::select! {
                message = self.messages.recv() => match message {
                    Ok(message) => self.on_message(message, shared),
                    Err(error) => Err(error.into()),
                },
                Some(share) = forwards.recv() => self.submit(share, shared).await,
                () = stopped(shutdown) => break None,
            };
            if let Err(reason) = step {
                break Some(reason);
            }
        };
        self.writer.shutdown().await;
        match result {
            None => SessionEnd::Shutdown,
            Some(reason) => SessionEnd::Lost {
                gave_work: self.gave_work,
                reason,
            },
        }
    }

    fn on_message(
        &mut self,
        message: AnyMessageOwned,
        shared: &Shared,
    ) -> Result<(), UpstreamError> {
        let AnyMessageOwned::Mining(message) = message else {
            return Err(UpstreamError::Protocol(format!(
                "unexpected message: {message}"
            )));
        };
        fn broke(error: impl std::fmt::Debug) -> UpstreamError {
            UpstreamError::Protocol(format!("{error:?}"))
        }
        match message {
            MiningOwned::NewExtendedMiningJob(job) => {
                let future = job.min_ntime.clone().into_inner().is_none();
                self.channel
                    .on_new_extended_mining_job(job)
                    .map_err(broke)?;
                if !future {
                    self.publish_active(shared)?;
                }
            }
            MiningOwned::SetNewPrevHash(prev_hash) => {
                self.channel
                    .on_set_new_prev_hash(prev_hash)
                    .map_err(broke)?;
                self.generation += 1;
                self.publish_active(shared)?;
            }
            MiningOwned::SetTarget(target) => {
                // Jobs keep the target they were made with; new ones take this.
                self.channel
                    .set_target(Target::from_le_bytes(target.maximum_target.to_array()))
                    .map_err(broke)?;
            }
            MiningOwned::SetExtranoncePrefix(set) => {
                let prefix = ExtranoncePrefix::from_wire(set.extranonce_prefix.as_bytes().to_vec())
                    .map_err(broke)?;
                self.channel.set_extranonce_prefix(prefix).map_err(broke)?;
                // The coinbase changed under every job: a clean start for the channels.
                self.generation += 1;
                self.publish_active(shared)?;
            }
            MiningOwned::SubmitSharesSuccess(success) => {
                self.channel.on_share_acknowledgement(
                    success.new_submits_accepted_count,
                    success.new_shares_sum,
                );
                for miner in self.pending.accepted_through(success.last_sequence_number) {
                    shared.metrics.upstream_answer(&miner, true);
                }
            }
            MiningOwned::SubmitSharesError(error) => {
                let code = error.error_code.as_utf8_or_hex();
                self.channel.on_share_rejection(&code);
                tracing::info!(sequence_number = error.sequence_number, %code, "upstream rejected a share");
                if let Some(miner) = self.pending.rejected(error.sequence_number) {
                    shared.metrics.upstream_answer(&miner, false);
                }
            }
            MiningOwned::CloseChannel(_) => return Err(UpstreamError::ChannelClosed),
            other => tracing::debug!(message = %other, "upstream message ignored"),
        }
        Ok(())
    }

    /// Hands the channel's active job to the downstream channels.
    fn publish_active(&mut self, shared: &Shared) -> Result<(), UpstreamError> {
        let (Some(active), Some(tip)) =
            (self.channel.get_active_job(), self.channel.get_chain_tip())
        else {
            return Ok(());
        };
        let job = self.upstream_job(
            active,
            tip.prev_hash().to_array(),
            tip.nbits(),
            tip.min_ntime(),
            shared,
        );
        job.check()
            .map_err(|error| UpstreamError::Protocol(error.to_string()))?;
        if !self.gave_work {
            self.gave_work = true;
            shared.live.store(self.session, Ordering::Release);
        }
        tracing::debug!(
            work_id = job.work_id,
            generation = job.generation,
            height = job.height,
            "upstream job relayed"
        );
        shared
            .work
            .send_replace(Some(Work::Upstream(Arc::new(job))));
        Ok(())
    }

    fn upstream_job(
        &self,
        active: &ExtendedJob,
        prev_hash: [u8; 32],
        nbits: u32,
        tip_min_ntime: u32,
        shared: &Shared,
    ) -> UpstreamJob {
        let message = &active.job_message;
        let upstream_prefix = message.coinbase_tx_prefix.as_bytes().to_vec();
        let coinbase_prefix = [
            upstream_prefix.as_slice(),
            active.extranonce_prefix.as_slice(),
            &vec![0u8; self.padding],
        ]
        .concat();
        UpstreamJob {
            session: self.session,
            generation: self.generation,
            work_id: shared.next_work_id.fetch_add(1, Ordering::Relaxed),
            upstream_job_id: message.job_id,
            prev_hash,
            nbits,
            min_ntime: message
                .min_ntime
                .clone()
                .into_inner()
                .unwrap_or(tip_min_ntime),
            version: message.version,
            version_rolling_allowed: message.version_rolling_allowed && self.version_rolling,
            height: bip34_height(&upstream_prefix).unwrap_or(0),
            coinbase_prefix,
            coinbase_suffix: message.coinbase_tx_suffix.as_bytes().to_vec(),
            merkle_path: message
                .merkle_path
                .iter()
                .map(|node| node.to_array())
                .collect(),
            upstream_target: active.target,
            padding: self.padding,
        }
    }

    /// Submits a forwarded share of this session, if the client channel agrees it is one the
    /// upstream can take (its job not stale, not a duplicate, at the job's target).
    async fn submit(
        &mut self,
        share: ForwardedShare,
        shared: &Shared,
    ) -> Result<(), UpstreamError> {
        if share.session != self.session {
            shared.metrics.upstream.dropped.inc();
            return Ok(());
        }
        let Ok(extranonce) = share.extranonce.clone().try_into() else {
            shared.metrics.upstream.dropped.inc();
            return Ok(());
        };
        let sequence_number = self.next_sequence_number;
        self.next_sequence_number = self.next_sequence_number.wrapping_add(1);
        let submit = SubmitSharesExtendedOwned {
            channel_id: self.channel.get_channel_id(),
            sequence_number,
            job_id: share.upstream_job_id,
            nonce: share.nonce,
            ntime: share.ntime,
            version: share.version,
            extranonce,
        };
        if let Err(error) = self.channel.validate_share(submit.clone()) {
            tracing::debug!(
                ?error,
                job_id = share.upstream_job_id,
                "forward not submitted"
            );
            shared.metrics.upstream.dropped.inc();
            return Ok(());
        }
        self.writer
            .send_mining(MiningOwned::SubmitSharesExtended(submit))
            .await?;
        self.pending.submitted(sequence_number, share.miner);
        shared.metrics.upstream.forwarded.inc();
        Ok(())
    }
}
