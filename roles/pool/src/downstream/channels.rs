//! Opening and closing channels: identity, extranonce prefix, the first target.

use stratum_apps::stratum_core::mining_sv2::{
    OpenExtendedMiningChannelOwned, OpenStandardMiningChannelOwned,
    ERROR_CODE_OPEN_MINING_CHANNEL_CHANNEL_CAPACITY_EXHAUSTED,
    ERROR_CODE_OPEN_MINING_CHANNEL_EXTENDED_CHANNELS_NOT_SUPPORTED_FOR_STANDARD_JOBS,
    ERROR_CODE_OPEN_MINING_CHANNEL_MIN_EXTRANONCE_SIZE_TOO_LARGE,
};

use super::*;

/// A channel made for an open request, before it is answered and registered.
pub(super) struct OpenedChannel {
    channel_id: u32,
    kind: ChannelKind,
    identity: MinerIdentity,
}

/// A channel's extranonce prefix as an open-success message field.
fn prefix_message<Field: TryFrom<Vec<u8>>>(prefix: &[u8]) -> Field
where
    Field::Error: std::fmt::Debug,
{
    prefix
        .to_vec()
        .try_into()
        .expect("an extranonce prefix is at most 32 bytes")
}

impl Downstream {
    pub(super) async fn refuse_channel(
        &mut self,
        request_id: u32,
        code: &str,
    ) -> Result<(), CloseReason> {
        self.count_rejection(&format!("open-channel:{code}"));
        self.send_mining(MiningOwned::OpenMiningChannelError(
            OpenMiningChannelErrorOwned {
                request_id,
                error_code: code.to_owned().try_into().expect("error codes are short"),
            },
        ))
        .await
    }

    pub(super) fn identity_of(&self, user_identity: &str) -> Result<MinerIdentity, &'static str> {
        user_identity.parse::<MinerIdentity>().map_err(|error| {
            tracing::info!(peer = %self.peer, %error, "channel refused: bad user_identity");
            error.code()
        })
    }

    pub(super) fn nominal_hashrate(&self, requested: f32) -> f32 {
        if requested.is_finite() && requested > 0.0 {
            requested
        } else {
            self.context.initial_hashrate
        }
    }

    pub(super) async fn open_standard(
        &mut self,
        open: OpenStandardMiningChannel<'_>,
    ) -> Result<(), CloseReason> {
        let open = open.into_owned();
        let opened = match self.new_standard_channel(&open) {
            Ok(opened) => opened,
            Err(code) => return self.refuse_channel(open.request_id, code).await,
        };
        let ChannelKind::Standard(channel) = &opened.kind else {
            unreachable!("made by new_standard_channel")
        };
        // A device that did not ask for standard jobs gets its standard channels' work through
        // a group channel, as SRI's pool does.
        let group_channel_id = if self.requires_standard_jobs {
            0
        } else {
            let prefix_len = channel.get_extranonce_prefix().len();
            match self.join_group(opened.channel_id, prefix_len) {
                Ok(group_channel_id) => group_channel_id,
                Err(error) => {
                    tracing::error!(peer = %self.peer, channel_id = opened.channel_id, %error, "cannot group the channel");
                    return self
                        .refuse_channel(
                            open.request_id,
                            ERROR_CODE_OPEN_MINING_CHANNEL_CHANNEL_CAPACITY_EXHAUSTED,
                        )
                        .await;
                }
            }
        };
        let success = OpenStandardMiningChannelSuccessOwned {
            request_id: open.request_id,
            channel_id: opened.channel_id,
            target: channel.get_target().to_le_bytes().into(),
            extranonce_prefix: prefix_message(channel.get_extranonce_prefix()),
            group_channel_id,
        };
        self.send_mining(MiningOwned::OpenStandardMiningChannelSuccess(success))
            .await?;
        self.add_channel(opened, group_channel_id != 0).await
    }

    /// A standard channel for the request, with its identity, extranonce prefix and settled
    /// target, or the OpenMiningChannel.Error code to refuse it with.
    fn new_standard_channel(
        &self,
        open: &OpenStandardMiningChannelOwned,
    ) -> Result<OpenedChannel, &'static str> {
        let identity = self.identity_of(&open.user_identity.as_utf8_or_hex())?;
        let prefix = self
            .context
            .allocator
            .lock()
            .expect("allocator lock")
            .allocate_standard()
            .map_err(|_| ERROR_CODE_OPEN_MINING_CHANNEL_CHANNEL_CAPACITY_EXHAUSTED)?;
        let channel_id = self.context.next_channel_id.fetch_add(1, Ordering::Relaxed);
        let channel = StandardChannel::new_for_pool(
            channel_id,
            identity.to_string(),
            prefix,
            Target::from_le_bytes(open.max_target.to_array()),
            self.nominal_hashrate(open.nominal_hash_rate),
            SHARE_BATCH,
            self.context.shares_per_minute,
            POOL_TAG.to_owned(),
            None,
        )
        .map_err(|error| standard_open_error_code(&error))?;
        let kind = self.settled(ChannelKind::Standard(Box::new(channel)))?;
        Ok(OpenedChannel {
            channel_id,
            kind,
            identity,
        })
    }

    /// The channel with its target settled on a power of two (see
    /// [`ChannelKind::settle_target`]), or the code to refuse it with.
    fn settled(&self, mut kind: ChannelKind) -> Result<ChannelKind, &'static str> {
        kind.settle_target(self.context.minimum_share_work, self.upstream_work())
            .ok_or(ERROR_CODE_OPEN_MINING_CHANNEL_MAX_TARGET_OUT_OF_RANGE)?;
        Ok(kind)
    }

    pub(super) async fn open_extended(
        &mut self,
        open: OpenExtendedMiningChannel<'_>,
    ) -> Result<(), CloseReason> {
        let open = open.into_owned();
        let opened = match self.new_extended_channel(&open) {
            Ok(opened) => opened,
            Err(code) => return self.refuse_channel(open.request_id, code).await,
        };
        let ChannelKind::Extended(channel) = &opened.kind else {
            unreachable!("made by new_extended_channel")
        };
        let success = OpenExtendedMiningChannelSuccessOwned {
            request_id: open.request_id,
            channel_id: opened.channel_id,
            target: channel.get_target().to_le_bytes().into(),
            extranonce_size: channel.get_rollable_extranonce_size(),
            extranonce_prefix: prefix_message(channel.get_extranonce_prefix()),
            group_channel_id: 0,
        };
        self.send_mining(MiningOwned::OpenExtendedMiningChannelSuccess(success))
            .await?;
        self.add_channel(opened, false).await
    }

    /// An extended channel for the request, or the OpenMiningChannel.Error code to refuse it
    /// with.
    fn new_extended_channel(
        &self,
        open: &OpenExtendedMiningChannelOwned,
    ) -> Result<OpenedChannel, &'static str> {
        if self.requires_standard_jobs {
            return Err(
                ERROR_CODE_OPEN_MINING_CHANNEL_EXTENDED_CHANNELS_NOT_SUPPORTED_FOR_STANDARD_JOBS,
            );
        }
        let identity = self.identity_of(&open.user_identity.as_utf8_or_hex())?;
        let (prefix, rollable) = {
            let mut allocator = self.context.allocator.lock().expect("allocator lock");
            let rollable = allocator.rollable_extranonce_size();
            let prefix = allocator
                .allocate_extended(open.min_extranonce_size as usize)
                .map_err(|_| ERROR_CODE_OPEN_MINING_CHANNEL_MIN_EXTRANONCE_SIZE_TOO_LARGE)?;
            (prefix, rollable)
        };
        let channel_id = self.context.next_channel_id.fetch_add(1, Ordering::Relaxed);
        let channel = ExtendedChannel::new_for_pool(
            channel_id,
            identity.to_string(),
            prefix,
            Target::from_le_bytes(open.max_target.to_array()),
            self.nominal_hashrate(open.nominal_hash_rate),
            true,
            u16::from(rollable),
            SHARE_BATCH,
            self.context.shares_per_minute,
            POOL_TAG.to_owned(),
            None,
        )
        .map_err(|error| extended_open_error_code(&error))?;
        let kind = self.settled(ChannelKind::Extended(Box::new(channel)))?;
        Ok(OpenedChannel {
            channel_id,
            kind,
            identity,
        })
    }

    /// Registers an opened channel and gives it a job on the current work at once.
    pub(super) async fn add_channel(
        &mut self,
        opened: OpenedChannel,
        grouped: bool,
    ) -> Result<(), CloseReason> {
        let OpenedChannel {
            channel_id,
            kind,
            identity,
        } = opened;
        tracing::info!(peer = %self.peer, channel_id, grouped, miner = %identity, "channel opened");
        self.context.metrics.channels.inc();
        self.context.dashboard.channel_opened(&identity);
        let channel = Channel {
            kind,
            grouped,
            identity,
            vardiff: VardiffState::new().expect("the system clock is after 1970"),
            jobs: HashMap::new(),
        };
        self.channels.insert(channel_id, channel);
        let Some(work) = self.work.clone() else {
            return Ok(());
        };
        if grouped {
            // The whole group restarts on the current work: the new member needs a future
            // job and a prev hash like any new channel, and the group's jobs are shared.
            self.start_group_on(&work).await
        } else {
            self.start_channel_on(channel_id, &work).await
        }
    }

    pub(super) fn close_channel(&mut self, close: CloseChannel<'_>) {
        if let Some(channel) = self.channels.remove(&close.channel_id) {
            if let Some(group) = &mut self.group {
                group.remove_channel_id(close.channel_id);
            }
            self.context.metrics.channels.dec();
            self.context.dashboard.channel_closed(&channel.identity);
            tracing::info!(peer = %self.peer, channel_id = close.channel_id, miner = %channel.identity, "channel closed by the miner");
        }
    }
}

pub(super) fn standard_open_error_code(
    error: &stratum_apps::stratum_core::channels_sv2::server::error::StandardChannelError,
) -> &'static str {
    use stratum_apps::stratum_core::channels_sv2::server::error::StandardChannelError as E;
    match error {
        E::OpenChannelInvalidNominalHashrate(code) | E::OpenChannelInvalidMaxTarget(code) => code,
        _ => ERROR_CODE_OPEN_MINING_CHANNEL_MAX_TARGET_OUT_OF_RANGE,
    }
}

pub(super) fn extended_open_error_code(
    error: &stratum_apps::stratum_core::channels_sv2::server::error::ExtendedChannelError,
) -> &'static str {
    use stratum_apps::stratum_core::channels_sv2::server::error::ExtendedChannelError as E;
    match error {
        E::OpenChannelInvalidNominalHashrate(code) | E::OpenChannelInvalidMaxTarget(code) => code,
        _ => ERROR_CODE_OPEN_MINING_CHANNEL_MIN_EXTRANONCE_SIZE_TOO_LARGE,
    }
}
