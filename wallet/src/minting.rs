//! Minting every PAID quote: recover what an earlier pass left unfinished, then read the quotes
//! page by page and mint each page in NUT-29 batches the mint will take.
//!
//! Memory stays bounded by a page of the lookup plus one batch: the wallet keeps a quote in its
//! store only while minting it (the mint's lookup is where quotes live; cdk needs the quote and
//! its NUT-20 key locally to sign the request) and forgets it once minted.

use cdk::amount::SplitTarget;
use cdk::nuts::{MintQuoteState, PaymentMethod};
use cdk::wallet::MintQuote;
use cdk::Amount;
use ehash::{QuoteState, QuoteSummary};

use crate::batch::{plan, BatchLimits};
use crate::recovery::Recovery;
use crate::{MinerWallet, WalletError, WalletUnit};

/// What a `mint` pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MintReport {
    /// PAID quotes minted.
    pub quotes: usize,
    /// Ecash minted, in hash.
    pub amount: u64,
    /// Quotes still UNPAID at the mint (their shares are not yet released).
    pub unpaid: usize,
    /// Batch requests sent (refused ones included).
    pub batches: usize,
    /// What the recovery of earlier, interrupted requests did first.
    pub recovery: Recovery,
}

/// One batch minted, for a progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchDone {
    pub quotes: usize,
    pub amount: u64,
    /// Totals of this pass so far.
    pub total_quotes: usize,
    pub total_amount: u64,
}

/// What minting one planned batch took: the requests sent (refused ones too) and, per request
/// that minted, its quotes and amount.
#[derive(Debug, Default)]
struct Minted {
    requests: usize,
    parts: Vec<(usize, u64)>,
}

/// How a pass sizes its batches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MintOptions {
    /// Request body budget; [`crate::batch::DEFAULT_MAX_REQUEST_BYTES`] when unset.
    pub max_request_bytes: Option<usize>,
    /// Quotes per batch instead of the mint's advertised size (to test a mint's refusal).
    pub batch_size: Option<usize>,
}

impl MinerWallet {
    /// Mints every PAID quote of this key.
    pub async fn mint_paid(&self) -> Result<MintReport, WalletError> {
        self.mint_paid_with(MintOptions::default(), |_| {}).await
    }

    /// Mints every PAID quote of this key, calling `on_batch` after each batch.
    pub async fn mint_paid_with(
        &self,
        options: MintOptions,
        mut on_batch: impl FnMut(&BatchDone),
    ) -> Result<MintReport, WalletError> {
        let mut report = MintReport {
            recovery: self.recover().await?,
            ..MintReport::default()
        };
        let limits = self.batch_limits(options).await?;
        let mut pages = self.quote_pages();
        while let Some(page) = pages.next_page().await? {
            report.unpaid += page
                .iter()
                .filter(|quote| quote.state == QuoteState::Unpaid)
                .count();
            let mut mintable = Vec::new();
            for quote in page.iter().filter(|quote| quote.mintable() > 0) {
                // A quote an unresolved request still holds waits for its recovery. (With every
                // request resolved nothing can be reserved: skip the per-quote look.)
                if report.recovery.unresolved == 0 || !self.reserved(quote).await? {
                    mintable.push(quote);
                }
            }
            // One batch at a time. Two in flight (the wallet preparing one while the mint signs
            // the other) measured no faster on two cores: both sides write SQLite per quote.
            for batch in plan(&mintable, limits) {
                let minted = self.mint_batch(batch, limits).await?;
                report.batches += minted.requests;
                for (quotes, amount) in minted.parts {
                    report.quotes += quotes;
                    report.amount += amount;
                    on_batch(&BatchDone {
                        quotes,
                        amount,
                        total_quotes: report.quotes,
                        total_amount: report.amount,
                    });
                }
            }
        }
        Ok(report)
    }

    /// Mints `quotes`, in smaller batches if the mint refuses a batch as too large: cdk has
    /// then released the quotes (a definitive refusal), so they can go again at once.
    async fn mint_batch(
        &self,
        quotes: &[&QuoteSummary],
        limits: BatchLimits,
    ) -> Result<Minted, WalletError> {
        let mut minted = Minted::default();
        let mut size = quotes.len();
        let mut start = 0;
        while start < quotes.len() {
            let batch = &quotes[start..(start + size).min(quotes.len())];
            for quote in batch {
                self.remember(quote).await?;
            }
            let ids: Vec<&str> = batch.iter().map(|quote| quote.quote.as_str()).collect();
            minted.requests += 1;
            let proofs = match self
                .wallet
                .batch_mint(&ids, binary_split(), None, None)
                .await
            {
                Ok(proofs) => proofs,
                Err(error) if is_too_large(&error) && size > 1 => {
                    size = (size / 2).max(1);
                    tracing::warn!(
                        %error,
                        quotes = batch.len(),
                        max_quotes = limits.max_quotes,
                        "the mint refused a batch as too large; sending {size} quotes per batch"
                    );
                    continue;
                }
                Err(error) => return Err(self.reachability(error.into())),
            };
            let amount = proofs
                .iter()
                .map(|proof| u64::from(proof.amount))
                .sum::<u64>();
            self.forget(batch).await?;
            minted.parts.push((batch.len(), amount));
            start += batch.len();
        }
        Ok(minted)
    }

    async fn batch_limits(&self, options: MintOptions) -> Result<BatchLimits, WalletError> {
        let info = self
            .wallet
            .fetch_mint_info()
            .await
            .map_err(|error| self.reachability(error.into()))?;
        let limits = BatchLimits::from_info(
            info.as_ref(),
            options
                .max_request_bytes
                .unwrap_or(crate::batch::DEFAULT_MAX_REQUEST_BYTES),
        );
        Ok(match options.batch_size {
            Some(size) => limits.with_max_quotes(size),
            None => limits,
        })
    }

    /// Whether an unfinished mint request holds `quote`.
    async fn reserved(&self, quote: &QuoteSummary) -> Result<bool, WalletError> {
        Ok(self
            .wallet
            .localstore
            .get_mint_quote(&quote.quote)
            .await?
            .is_some_and(|known| known.used_by_operation.is_some()))
    }

    /// Stores a PAID quote locally, with its NUT-20 key and the mint's amounts, so cdk can sign
    /// and mint it.
    async fn remember(&self, quote: &QuoteSummary) -> Result<(), WalletError> {
        // Read first even though the quote is usually new: cdk's store updates a row only at the
        // version read, and a blind insert could clear another run's reservation.
        let local = match self.wallet.localstore.get_mint_quote(&quote.quote).await? {
            Some(known) => known,
            None => MintQuote::new(
                quote.quote.clone(),
                self.mint_url.clone(),
                PaymentMethod::Custom(ehash::PAYMENT_METHOD.into()),
                // A payout-epoch quote has no amount of its own, only what its payout paid.
                (self.unit == WalletUnit::Hash).then(|| Amount::from(quote.amount)),
                self.wallet.unit.clone(),
                String::new(),
                0,
                Some(self.keys.locking_key.clone()),
            ),
        };
        self.wallet
            .localstore
            .add_mint_quote(self.paid(local, quote))
            .await?;
        Ok(())
    }

    /// `local` with the mint's amounts, PAID, and the key that signs for it.
    fn paid(&self, mut local: MintQuote, quote: &QuoteSummary) -> MintQuote {
        local.state = MintQuoteState::Paid;
        local.amount_paid = Amount::from(quote.amount_paid);
        local.amount_issued = Amount::from(quote.amount_issued);
        local.secret_key = Some(self.keys.locking_key.clone());
        local
    }

    /// Drops minted quotes from the local store (the mint keeps them for its retention window;
    /// the wallet keeps the transactions and proofs), so the store does not grow with every share
    /// ever mined.
    async fn forget(&self, quotes: &[&QuoteSummary]) -> Result<(), WalletError> {
        for quote in quotes {
            self.wallet
                .localstore
                .remove_mint_quote(&quote.quote)
                .await?;
        }
        Ok(())
    }
}

/// Each quote's amount as its powers of two: one output per set bit, what `batch` sizes requests
/// by. cdk's default (`SplitTarget::None`) instead tops up the wallet's own denominations: it
/// reads every proof in the wallet once per quote (slow with a large backlog) and makes more
/// outputs than the request can be sized for.
fn binary_split() -> SplitTarget {
    SplitTarget::Values(Vec::new())
}

/// The mint refused the request for its size: more quotes than NUT-29 allows, more outputs than
/// it signs at once, or a body over its limit (the hashpool mint answers that with code 11015;
/// another mint may answer a bare 413).
fn is_too_large(error: &cdk::Error) -> bool {
    matches!(
        error,
        cdk::Error::BatchSizeExceeded { .. }
            | cdk::Error::MaxOutputsExceeded { .. }
            | cdk::Error::HttpError(Some(413), _)
    )
}
