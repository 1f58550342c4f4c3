//! Finishing mint requests whose outcome is unknown (the mint or the wallet died mid-request, the
//! connection dropped, the mint answered 5xx).
//!
//! cdk's mint saga records the request (its quotes, outputs and counter range) as `MintRequested`
//! before sending it and keeps the quotes reserved until it knows the outcome. Its saga recovery
//! resolves one: it replays the request (the mint answers from its NUT-19 cache, or mints it now
//! if it never did) and falls back to NUT-09 restore of the recorded outputs (signatures the mint
//! already issued); when the mint signed none of them the saga is dropped. The wallet runs that
//! recovery before every mint pass, then does the one thing cdk leaves for later (see
//! [`MinerWallet::recover`]).

use cdk::wallet::types::{OperationData, WalletSaga, WalletSagaState};

use crate::{MinerWallet, WalletError};

/// What a recovery pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Interrupted mint requests finished: their ecash replayed or restored into the wallet.
    pub recovered: usize,
    /// Interrupted mint requests the mint never applied: their quotes released to mint again.
    pub released: usize,
    /// Interrupted mint requests still unresolved (the mint could not be asked); their quotes
    /// stay reserved and the next pass tries again.
    pub unresolved: usize,
}

/// Interrupted mint requests waiting for recovery, from the wallet's own store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PendingRecovery {
    pub requests: usize,
    pub quotes: usize,
}

impl MinerWallet {
    /// This wallet's unfinished mint sagas.
    async fn mint_sagas(&self) -> Result<Vec<WalletSaga>, WalletError> {
        Ok(self
            .wallet
            .localstore
            .get_incomplete_sagas()
            .await?
            .into_iter()
            .filter(|saga| {
                saga.mint_url == self.mint_url
                    && saga.unit == self.wallet.unit
                    && matches!(saga.state, WalletSagaState::Issue(_))
            })
            .collect())
    }

    /// Mint requests whose outcome is not yet known (no network needed).
    pub async fn pending_recovery(&self) -> Result<PendingRecovery, WalletError> {
        let sagas = self.mint_sagas().await?;
        Ok(PendingRecovery {
            requests: sagas.len(),
            quotes: sagas.iter().map(|saga| saga_quotes(saga).len()).sum(),
        })
    }

    /// Resolves every interrupted mint request with cdk's saga recovery.
    ///
    /// cdk deletes a recovered (or never-applied) saga but releases the quotes it reserved only in
    /// the orphan sweep at the start of its *next* recovery; until then a mint of those quotes
    /// fails with "quote already in use". So release them here, right away, and forget them: the
    /// mint's lookup says what is still PAID and they are added again if so.
    pub async fn recover(&self) -> Result<Recovery, WalletError> {
        let before = self.mint_sagas().await?;
        let report = self
            .wallet
            .recover_incomplete_sagas()
            .await
            .map_err(|error| self.reachability(error.into()))?;
        let mut recovery = Recovery::default();
        let mut gone = 0;
        for saga in &before {
            if self.wallet.localstore.get_saga(&saga.id).await?.is_some() {
                recovery.unresolved += 1;
                continue;
            }
            gone += 1;
            self.wallet.localstore.release_mint_quote(&saga.id).await?;
            for quote in saga_quotes(saga) {
                self.wallet.localstore.remove_mint_quote(&quote).await?;
            }
        }
        // cdk's report counts sagas of every kind, and a request the mint refused on replay as
        // too large as "failed" although cdk released it; per mint saga, what is gone was either
        // recovered (ecash restored) or released.
        recovery.recovered = report.recovered.min(gone);
        recovery.released = gone - recovery.recovered;
        if !before.is_empty() {
            tracing::info!(
                recovered = recovery.recovered,
                released = recovery.released,
                unresolved = recovery.unresolved,
                "interrupted mint requests resolved"
            );
        }
        Ok(recovery)
    }
}

fn saga_quotes(saga: &WalletSaga) -> Vec<String> {
    match &saga.data {
        OperationData::Mint(data) => data.quote_ids(),
        _ => Vec::new(),
    }
}
