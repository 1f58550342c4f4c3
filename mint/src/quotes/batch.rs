//! Many creates and ehash updates in one store transaction.
//!
//! Applying stream entries one at a time costs two commits per share (create, then pay), and a
//! commit is an fsync: that, not the work, bounded the mint at ~1,500 quotes/s. A batch reads
//! every quote it names with one locking query, inserts the new ones, pays the released ones and
//! commits once. The guarantees are the single-entry path's: nothing is acknowledged before the
//! commit, a quote already stored or already paid is left as it is, and an update whose create
//! has not been stored is left for a retry.

use std::collections::HashMap;

use cdk::mint::{MintQuote, QuoteId};
use cdk::nuts::MintQuoteCustomResponse;
use cdk::Amount;
use cdk_common::database::mint::Acquired;
use ehash::{CreateQuote, QuoteMessage, Release, UpdateQuote};
use uuid::Uuid;

use super::plan::{plan_batch, Held};
use super::{ehash_payment, write_indexes, BatchWriter, Created, QuoteBook, QuoteBookError};

/// What a batch did with one of its messages.
#[derive(Debug)]
pub enum Applied {
    Created(Created),
    /// An update: how many of its quotes were not PAID before.
    Paid(usize),
}

/// A message [`QuoteBook::apply_batch`] takes. Epoch releases are not: they read the epoch's
/// whole index and may wait for the payout's custody, so they are applied alone.
#[derive(Debug, Clone, Copy)]
pub enum Batchable<'a> {
    Create(&'a CreateQuote),
    /// An ehash update: these quotes are PAID their created amount.
    Pay(&'a [Uuid]),
}

impl<'a> Batchable<'a> {
    pub fn of(message: &'a QuoteMessage) -> Option<Self> {
        match message {
            QuoteMessage::Create(create) => Some(Batchable::Create(create)),
            QuoteMessage::Update(UpdateQuote {
                release: Release::Quotes(ids),
            }) => Some(Batchable::Pay(ids)),
            QuoteMessage::Update(_) => None,
        }
    }

    /// The quotes the message names.
    fn quote_ids(self) -> &'a [Uuid] {
        match self {
            Batchable::Create(create) => std::slice::from_ref(&create.quote_id),
            Batchable::Pay(ids) => ids,
        }
    }
}

/// The results of a committed batch, one per message in order. A message's error (a wrong
/// unit, an update before its create) changed nothing in the store.
pub type BatchResults = Vec<Result<Applied, QuoteBookError>>;

impl QuoteBook {
    /// Applies `messages` in one store transaction and returns what became of each. `Err` means
    /// the store failed and nothing was committed; the caller may apply the messages one at a
    /// time instead.
    pub async fn apply_batch(
        &self,
        messages: &[Batchable<'_>],
    ) -> Result<BatchResults, QuoteBookError> {
        let written = match &self.batch_writer {
            Some(BatchWriter::Postgres(writer)) => writer
                .apply(self, messages)
                .await
                .map_err(|error| error.to_string()),
            Some(BatchWriter::Sqlite(writer)) => writer
                .apply(self, messages)
                .await
                .map_err(|error| error.to_string()),
            None => return self.apply_batch_through_cdk(messages).await,
        };
        match written {
            Ok(results) => Ok(results),
            // The batch goes through cdk's API instead: slower, and as exact.
            Err(error) => {
                tracing::warn!(%error, "the mint's batch writer failed; writing it through cdk");
                self.apply_batch_through_cdk(messages).await
            }
        }
    }

    /// The batch through cdk's store API: one locking read of every quote it names, then a
    /// statement or a few per quote, one commit.
    async fn apply_batch_through_cdk(
        &self,
        messages: &[Batchable<'_>],
    ) -> Result<BatchResults, QuoteBookError> {
        let store = self.mint.localstore();
        let mut tx = store.begin_transaction().await?;
        let named = named_quotes(messages);
        let mut quotes: HashMap<Uuid, Acquired<MintQuote>> = HashMap::new();
        for quote in tx
            .get_mint_quotes_by_ids(&named)
            .await?
            .into_iter()
            .flatten()
        {
            // Every quote this mint stores from the stream has a UUID id.
            if let QuoteId::UUID(id) = quote.id {
                quotes.insert(id, quote);
            }
        }
        let held = quotes
            .iter()
            .map(|(id, quote)| {
                let held = Held {
                    amount: quote.amount.as_ref().map(|amount| amount.value()),
                    payment_ids: quote.payment_ids().into_iter().cloned().collect(),
                };
                (*id, held)
            })
            .collect();
        let plan = plan_batch(messages, held, self.refuse_created_before());

        let mut created = Vec::with_capacity(plan.creates.len());
        for new in &plan.creates {
            let id = QuoteId::from(new.create.quote_id);
            let quote = self.unpaid_quote(new.create, id, new.unit.clone());
            created.push(MintQuoteCustomResponse::<QuoteId>::try_from(quote.clone()));
            // A duplicate here is another worker's concurrent insert: the store error fails the
            // batch, and the one-at-a-time path sorts it out.
            let quote = tx.add_mint_quote(quote).await?;
            write_indexes(&mut tx, new.create, &new.unit).await?;
            quotes.insert(new.create.quote_id, quote);
        }
        let mut paid = Vec::with_capacity(plan.payments.len());
        for payment in &plan.payments {
            let quote = quotes
                .get_mut(&payment.quote_id)
                .expect("the plan pays only quotes the batch holds");
            let amount = Amount::new(payment.amount, quote.unit.clone());
            let response = ehash_payment(quote, payment.quote_id, None, amount);
            if self.mint.pay_mint_quote(&mut tx, quote, response).await? {
                let quote: &MintQuote = quote;
                paid.push(quote.clone());
            }
        }
        tx.commit().await?;

        for notice in created {
            self.notify_created(notice);
        }
        self.notify_paid(&paid);
        tracing::debug!(
            messages = messages.len(),
            created = plan.creates.len(),
            paid = paid.len(),
            "batch committed"
        );
        Ok(plan.results)
    }

    /// NUT-17: subscribers to these quotes see them PAID.
    pub(super) fn notify_paid(&self, quotes: &[MintQuote]) {
        for quote in quotes {
            self.mint
                .pubsub_manager()
                .mint_quote_payment(quote, quote.amount_paid());
        }
    }
}

/// Every quote the messages name, sorted (rows are locked in one order by every worker).
pub(super) fn named_quotes(messages: &[Batchable<'_>]) -> Vec<QuoteId> {
    let mut ids: Vec<Uuid> = messages
        .iter()
        .flat_map(|message| message.quote_ids())
        .copied()
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter().map(QuoteId::from).collect()
}
