//! Opening and closing channels: identity, extranonce prefix, the first target.

use super::*;

impl Downstream {
    pub(super) async fn refuse_channel(
        &mut self,
        request_id: u32,
        code: &str,
    ) -> Result<(), CloseReason> {
        self.context
            .metrics
            .share_rejected(&format!("open-channel:{code}"));
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
        let identity = match self.identity_of(&open.user_identity.as_utf8_or_hex()) {
            Ok(identity) => identity,
            Err(code) => return self.refuse_channel(open.request_id, code).await,
        };
        let allocated = self
            .context
            .allocator
            .lock()
            .expect("allocator lock")
            .allocate_standard();
        let prefix = match allocated {
            Ok(prefix) => prefix,
            Err(_) => {
                return self
                    .refuse_channel(open.request_id, "channel-capacity-exhausted")
                    .await
            }
        };
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
        );
        let made = channel
            .map(|channel| ChannelKind::Standard(Box::new(channel)))
            .map_err(|error| standard_open_error_code(&error));
        let kind = match self.settled(made) {
            Ok(kind) => kind,
            Err(code) => return self.refuse_channel(open.request_id, code).await,
        };
        let ChannelKind::Standard(channel) = &kind else {
            unreachable!("made above")
        };
        // A device that did not ask for standard jobs gets its standard channels' work through
        // a group channel, as SRI's pool does.
        let group_channel_id = if self.requires_standard_jobs {
            0
        } else {
            match self.join_group(channel_id, channel.get_extranonce_prefix().len()) {
                Ok(group_channel_id) => group_channel_id,
                Err(error) => {
                    tracing::error!(peer = %self.peer, channel_id, %error, "cannot group the channel");
                    return self
                        .refuse_channel(open.request_id, "channel-capacity-exhausted")
                        .await;
                }
            }
        };
        let success = OpenStandardMiningChannelSuccessOwned {
            request_id: open.request_id,
            channel_id,
            target: channel.get_target().to_le_bytes().into(),
            extranonce_prefix: channel
                .get_extranonce_prefix()
                .to_vec()
                .try_into()
                .expect("an extranonce prefix is at most 32 bytes"),
            group_channel_id,
        };
        self.send_mining(MiningOwned::OpenStandardMiningChannelSuccess(success))
            .await?;
        self.add_channel(channel_id, kind, group_channel_id != 0, identity)
            .await
    }

    /// A channel channels_sv2 made for a miner, with its target settled on a power of two (see
    /// [`ChannelKind::settle_target`]), or the OpenMiningChannel.Error code to refuse it with.
    fn settled(
        &self,
        made: Result<ChannelKind, &'static str>,
    ) -> Result<ChannelKind, &'static str> {
        let mut kind = made?;
        kind.settle_target(self.context.minimum_share_work)
            .ok_or(ERROR_CODE_OPEN_MINING_CHANNEL_MAX_TARGET_OUT_OF_RANGE)?;
        Ok(kind)
    }

    pub(super) async fn open_extended(
        &mut self,
        open: OpenExtendedMiningChannel<'_>,
    ) -> Result<(), CloseReason> {
        let open = open.into_owned();
        if self.requires_standard_jobs {
            return self
                .refuse_channel(
                    open.request_id,
                    "extended-channels-not-supported-for-standard-jobs",
                )
                .await;
        }
        let identity = match self.identity_of(&open.user_identity.as_utf8_or_hex()) {
            Ok(identity) => identity,
            Err(code) => return self.refuse_channel(open.request_id, code).await,
        };
        let allocated = {
            let mut allocator = self.context.allocator.lock().expect("allocator lock");
            let rollable = allocator.rollable_extranonce_size();
            allocator
                .allocate_extended(open.min_extranonce_size as usize)
                .map(|prefix| (prefix, rollable))
        };
        let Ok((prefix, rollable)) = allocated else {
            return self
                .refuse_channel(open.request_id, "min-extranonce-size-too-large")
                .await;
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
        );
        let made = channel
            .map(|channel| ChannelKind::Extended(Box::new(channel)))
            .map_err(|error| extended_open_error_code(&error));
        let kind = match self.settled(made) {
            Ok(kind) => kind,
            Err(code) => return self.refuse_channel(open.request_id, code).await,
        };
        let ChannelKind::Extended(channel) = &kind else {
            unreachable!("made above")
        };
        let success = OpenExtendedMiningChannelSuccessOwned {
            request_id: open.request_id,
            channel_id,
            target: channel.get_target().to_le_bytes().into(),
            extranonce_size: channel.get_rollable_extranonce_size(),
            extranonce_prefix: channel
                .get_extranonce_prefix()
                .to_vec()
                .try_into()
                .expect("an extranonce prefix is at most 32 bytes"),
            group_channel_id: 0,
        };
        self.send_mining(MiningOwned::OpenExtendedMiningChannelSuccess(success))
            .await?;
        self.add_channel(channel_id, kind, false, identity).await
    }

    /// Registers an opened channel and gives it work on the current template at once.
    pub(super) async fn add_channel(
        &mut self,
        channel_id: u32,
        kind: ChannelKind,
        grouped: bool,
        identity: MinerIdentity,
    ) -> Result<(), CloseReason> {
        tracing::info!(peer = %self.peer, channel_id, grouped, miner = %identity, "channel opened");
        self.context
            .metrics
            .channels
            .fetch_add(1, Ordering::Relaxed);
        let channel = Channel {
            kind,
            grouped,
            identity,
            vardiff: VardiffState::new().expect("the system clock is after 1970"),
            jobs: HashMap::new(),
        };
        self.channels.insert(channel_id, channel);
        let Some(template) = self.template.clone() else {
            return Ok(());
        };
        if grouped {
            // The whole group restarts on the current template: the new member needs a future
            // job and a prev hash like any new channel, and the group's jobs are shared.
            self.start_group_on(&template).await
        } else {
            self.start_channel_on(channel_id, &template).await
        }
    }

    pub(super) fn close_channel(&mut self, close: CloseChannel<'_>) {
        if let Some(channel) = self.channels.remove(&close.channel_id) {
            if let Some(group) = &mut self.group {
                group.remove_channel_id(close.channel_id);
            }
            self.context
                .metrics
                .channels
                .fetch_sub(1, Ordering::Relaxed);
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
        _ => "max-target-out-of-range",
    }
}

pub(super) fn extended_open_error_code(
    error: &stratum_apps::stratum_core::channels_sv2::server::error::ExtendedChannelError,
) -> &'static str {
    use stratum_apps::stratum_core::channels_sv2::server::error::ExtendedChannelError as E;
    match error {
        E::OpenChannelInvalidNominalHashrate(code) | E::OpenChannelInvalidMaxTarget(code) => code,
        _ => "min-extranonce-size-too-large",
    }
}
