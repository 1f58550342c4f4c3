//! The miner's Sv1 session: subscribe, configure, authorize, difficulty suggestions.

use ehash::MinerIdentity;
use hashpool_sv2_client::VERSION_ROLLING_MASK;
use stratum_core::sv1_api::client_to_server::{Authorize, Configure, SubmitError};
use stratum_core::sv1_api::methods::Client2Server;
use stratum_core::sv1_api::server_to_client::VersionRollingParams;
use stratum_core::sv1_api::utils::{Extranonce, HexU32Be};

use super::{CloseReason, Downstream};
use crate::sv1::{self, Incoming};
use crate::upstream::{Command, Registration};

impl Downstream {
    pub(super) async fn on_line(&mut self, line: &str) -> Result<(), CloseReason> {
        if line.trim().is_empty() {
            return Ok(());
        }
        match sv1::parse(line) {
            Incoming::Malformed(reason) => Err(CloseReason::BadInput(reason)),
            Incoming::Ignore(reason) => {
                tracing::debug!(%reason, "ignored a message");
                Ok(())
            }
            Incoming::Refuse { id, reason } => {
                tracing::info!(%reason, "request refused");
                self.respond(sv1::error_response(id, SubmitError::Other.code(), reason))
                    .await
            }
            Incoming::SuggestDifficulty { id, difficulty } => {
                self.suggest_difficulty(difficulty).await?;
                match id {
                    Some(id) => self.respond_true(id).await,
                    None => Ok(()),
                }
            }
            Incoming::Request(request) => self.on_request(request).await,
        }
    }

    async fn on_request(&mut self, request: Client2Server) -> Result<(), CloseReason> {
        match request {
            Client2Server::Subscribe(subscribe) => {
                let subscription = format!("{:x}", self.id);
                let extranonce1 = Extranonce::try_from(self.extranonce1.clone())
                    .map_err(|error| CloseReason::Extranonce1(format!("{error:?}")))?;
                let response = subscribe.respond(
                    vec![
                        ("mining.set_difficulty".to_owned(), subscription.clone()),
                        ("mining.notify".to_owned(), subscription),
                    ],
                    extranonce1,
                    self.extranonce2_size,
                );
                self.respond(response).await
            }
            Client2Server::Configure(configure) => self.configure(configure).await,
            Client2Server::ExtranonceSubscribe(subscribe) => {
                // The upstream prefix lives in coinb1, so extranonce1 never changes and
                // mining.set_extranonce is never sent; acknowledging is all there is to do.
                self.respond(subscribe.respond()).await
            }
            Client2Server::Authorize(authorize) => self.authorize(authorize).await,
            Client2Server::Submit(submit) => self.submit(submit).await,
            Client2Server::SuggestDifficulty() => Ok(()),
        }
    }

    async fn configure(&mut self, configure: Configure) -> Result<(), CloseReason> {
        let rolling = configure.version_rolling_mask().map(|requested| {
            let mask = requested.0 & VERSION_ROLLING_MASK;
            self.version_mask = Some(mask);
            tracing::debug!(requested = %requested, mask = format_args!("{mask:08x}"), "version rolling");
            VersionRollingParams::new(
                HexU32Be(mask),
                configure
                    .version_rolling_min_bit_count()
                    .unwrap_or(HexU32Be(0)),
            )
        });
        self.respond(configure.respond(rolling, None)).await
    }

    async fn authorize(&mut self, authorize: Authorize) -> Result<(), CloseReason> {
        if let Some(user) = &self.user {
            let response = if *user == authorize.name {
                authorize.respond(true)
            } else {
                sv1::error_response(
                    authorize.id,
                    SubmitError::UnauthorizedWorker.code(),
                    format!(
                        "this connection already mines for {user}; open another connection for {}",
                        authorize.name
                    ),
                )
            };
            return self.respond(response).await;
        }
        if let Err(error) = authorize.name.parse::<MinerIdentity>() {
            tracing::info!(user = %authorize.name, %error, "authorize refused: the username is not a public key");
            let message = format!(
                "{}: {error}; the username must be your compressed public key in hex, optionally followed by .worker",
                error.code()
            );
            let response = sv1::error_response(
                authorize.id,
                SubmitError::UnauthorizedWorker.code(),
                message,
            );
            return self.respond(response).await;
        }
        self.span.record("user", authorize.name.as_str());
        self.user = Some(authorize.name.clone());
        self.pending_authorize = Some(authorize.id);
        self.registered = true;
        // The answer waits for the pool: it checks the identity again when opening the channel.
        let open = Command::Open(Registration {
            miner: self.id,
            identity: authorize.name,
            hashrate: self.hashrate,
            min_extranonce_size: (self.extranonce1.len() + self.extranonce2_size) as u16,
            events: self.events_tx.clone(),
        });
        self.upstream(open).await
    }

    /// The `mining.authorize` waiting for the pool is granted (the channel opened, or will when
    /// the pool is back).
    pub(super) async fn grant_authorize(&mut self) -> Result<(), CloseReason> {
        match self.pending_authorize.take() {
            Some(id) => self.respond_true(id).await,
            None => Ok(()),
        }
    }

    /// The `mining.authorize` waiting for the pool is refused with `message`.
    pub(super) async fn refuse_authorize(&mut self, message: String) -> Result<(), CloseReason> {
        let Some(id) = self.pending_authorize.take() else {
            return Ok(());
        };
        let code = SubmitError::UnauthorizedWorker.code();
        self.respond(sv1::error_response(id, code, message)).await
    }

    async fn suggest_difficulty(&mut self, difficulty: f64) -> Result<(), CloseReason> {
        // The hashrate at which this difficulty gives the pool's share rate, never below the
        // minimum difficulty's.
        let hashrate = self.context.config.announced_hashrate(Some(difficulty));
        tracing::info!(difficulty, hashrate, "miner suggests a difficulty");
        self.hashrate = hashrate;
        if self.registered {
            self.upstream(Command::UpdateHashrate {
                miner: self.id,
                hashrate,
            })
            .await?;
        }
        Ok(())
    }
}
