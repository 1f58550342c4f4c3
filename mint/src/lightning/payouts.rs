//! The payout offer and its watcher: payers (OCEAN, another pool, the operator) pay the node's
//! BOLT12 offer; each payment to it is recorded in the [`PayoutLedger`] and announced to the
//! pool's `POST /payout`, signed, until the pool acknowledges it. No person is in the loop.
//!
//! The watcher reads the node's payment store rather than its event stream: cdk-ldk-node
//! consumes every node event itself, and its broadcast of them may drop some. Payments to the
//! offer are in the store once they succeed, so reading it every second misses none, across
//! restarts too. Delivery is at least once; the pool deduplicates by payment hash.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ehash::callback::{self, PayoutNotice};
use ldk_node::lightning::offers::offer::{Offer, OfferId};
use ldk_node::payment::{PaymentDetails, PaymentDirection, PaymentKind, PaymentStatus};
use ldk_node::Node;
use tokio::sync::watch;
use tokio::time::Instant;

use super::ledger::PayoutLedger;
use super::LightningError;
use crate::config::{LightningConfig, PayoutCallbackConfig};

/// How often the node's payments are read, and creating the offer retried.
const POLL: Duration = Duration::from_secs(1);
/// The longest wait between two deliveries of the same payout.
const MAX_RETRY: Duration = Duration::from_secs(300);
const OFFER_DESCRIPTION: &str = "hashpool payout";

/// A payment to the payout offer, as the pool is told of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandedPayout {
    pub payment_hash: String,
    pub amount_msat: u64,
    /// From the payer's note `epoch:<n>`, when the payer knows which epoch it pays.
    pub epoch: Option<u64>,
}

/// The epoch a payer's note names: `epoch:<n>` (or `epoch <n>`), anywhere in the note.
pub fn epoch_in_note(note: &str) -> Option<u64> {
    let rest = &note[note.find("epoch")? + "epoch".len()..];
    let digits: String = rest
        .trim_start_matches([':', ' ', '='])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Whether `payment` is a succeeded inbound payment to `offer`.
fn pays_offer(payment: &PaymentDetails, offer: OfferId) -> bool {
    payment.direction == PaymentDirection::Inbound
        && payment.status == PaymentStatus::Succeeded
        && matches!(&payment.kind, PaymentKind::Bolt12Offer { offer_id, .. } if *offer_id == offer)
}

/// The payout a payment to the offer (see [`pays_offer`]) brought.
fn landed(payment: &PaymentDetails) -> Option<LandedPayout> {
    let PaymentKind::Bolt12Offer {
        hash: Some(hash),
        payer_note,
        ..
    } = &payment.kind
    else {
        return None;
    };
    Some(LandedPayout {
        payment_hash: hex::encode(hash.0),
        amount_msat: payment.amount_msat.unwrap_or(0),
        epoch: payer_note.as_ref().and_then(|note| epoch_in_note(&note.0)),
    })
}

/// Signs and posts payout notices to the pool.
struct PoolCallback {
    client: reqwest::Client,
    url: String,
    secret: Vec<u8>,
}

impl PoolCallback {
    fn new(config: &PayoutCallbackConfig) -> Result<Self, LightningError> {
        let secret = hashpool_service::read_secret(&config.secret_file)?
            .ok_or_else(|| LightningError::MissingSecret(config.secret_file.clone()))?;
        Ok(Self {
            client: reqwest::Client::new(),
            url: config.url.clone(),
            secret: secret.into_bytes(),
        })
    }

    /// Tells the pool; Ok once it answered 2xx, else what it said.
    async fn deliver(&self, payout: &LandedPayout) -> Result<(), String> {
        let notice = PayoutNotice {
            payment_id: payout.payment_hash.clone(),
            amount_msat: payout.amount_msat,
            epoch: payout.epoch,
        };
        let body = serde_json::to_vec(&notice).map_err(|error| error.to_string())?;
        let timestamp = hashpool_service::unix_now();
        let response = self
            .client
            .post(&self.url)
            .header(callback::TIMESTAMP_HEADER, timestamp.to_string())
            .header(
                callback::SIGNATURE_HEADER,
                callback::sign(&self.secret, timestamp, &body),
            )
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|error| error.to_string())?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let answer = response.text().await.unwrap_or_default();
        Err(format!("{status}: {answer}"))
    }
}

/// When a payout that the pool has not acknowledged is next delivered.
struct Retry {
    at: Instant,
    wait: Duration,
}

pub struct PayoutWatcher {
    node: Arc<Node>,
    ledger: PayoutLedger,
    callback: Option<PoolCallback>,
    offer_file: std::path::PathBuf,
    delivered: HashSet<String>,
    retries: HashMap<String, Retry>,
}

impl PayoutWatcher {
    pub fn new(
        node: Arc<Node>,
        ledger: PayoutLedger,
        config: &LightningConfig,
    ) -> Result<Self, LightningError> {
        let callback = config
            .payout_callback
            .as_ref()
            .map(PoolCallback::new)
            .transpose()?;
        Ok(Self {
            node,
            ledger,
            callback,
            offer_file: config.offer_file.clone(),
            delivered: HashSet::new(),
            retries: HashMap::new(),
        })
    }

    /// Makes or loads the payout offer, then records and delivers payments to it until stopped.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(POLL);
        let mut offer = None;
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                _ = ticks.tick() => {}
            }
            match offer {
                None => offer = self.payout_offer().await,
                Some(id) => self.watch_payments(id).await,
            }
        }
    }

    /// The offer kept in the ledger, or a new one. Making one needs a connected peer to route
    /// the offer's blinded path through, so until a channel peer connects this returns None.
    async fn payout_offer(&self) -> Option<OfferId> {
        let stored = match self.ledger.offer().await {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!(%error, "cannot read the payout offer");
                return None;
            }
        };
        let offer = match stored.map(|text| text.parse::<Offer>()) {
            Some(Ok(offer)) => offer,
            Some(Err(error)) => {
                tracing::error!(?error, "the stored payout offer does not parse");
                return None;
            }
            None => self.new_offer().await?,
        };
        write_offer_file(&self.offer_file, &offer);
        tracing::info!(%offer, "payout offer (BOLT12): pay payouts here");
        Some(offer.id())
    }

    async fn new_offer(&self) -> Option<Offer> {
        let offer = match self
            .node
            .bolt12_payment()
            .receive_variable_amount(OFFER_DESCRIPTION, None)
        {
            Ok(offer) => offer,
            Err(error) => {
                tracing::debug!(%error, "no payout offer yet (it needs a connected peer)");
                return None;
            }
        };
        if let Err(error) = self.ledger.set_offer(&offer.to_string()).await {
            tracing::warn!(%error, "cannot keep the payout offer");
            return None;
        }
        Some(offer)
    }

    async fn watch_payments(&mut self, offer: OfferId) {
        let payouts: Vec<LandedPayout> = self
            .node
            .list_payments_with_filter(|payment| pays_offer(payment, offer))
            .iter()
            .filter_map(landed)
            .filter(|payout| !self.delivered.contains(&payout.payment_hash))
            .collect();
        for payout in payouts {
            let span = tracing::info_span!("payout", payment = %payout.payment_hash);
            let _entered = span.enter();
            if let Err(error) = self.handle(&payout).await {
                tracing::warn!(%error, "payout ledger");
            }
        }
    }

    async fn handle(&mut self, payout: &LandedPayout) -> Result<(), cdk_common::database::Error> {
        let hash = &payout.payment_hash;
        if self.ledger.is_delivered(hash).await? {
            self.delivered.insert(hash.clone());
            return Ok(());
        }
        if self.ledger.received_msat(hash).await?.is_none() {
            self.ledger
                .record_received(hash, payout.amount_msat)
                .await?;
            tracing::info!(
                amount_msat = payout.amount_msat,
                epoch = ?payout.epoch,
                "payout received"
            );
        }
        let Some(callback) = &self.callback else {
            // Recorded; the operator tells the pool by other means.
            self.delivered.insert(hash.clone());
            return Ok(());
        };
        if self
            .retries
            .get(hash)
            .is_some_and(|retry| retry.at > Instant::now())
        {
            return Ok(());
        }
        match callback.deliver(payout).await {
            Ok(()) => {
                self.ledger.mark_delivered(hash).await?;
                self.delivered.insert(hash.clone());
                self.retries.remove(hash);
                tracing::info!("the pool acknowledged the payout");
            }
            Err(answer) => {
                let retry = self.retries.entry(hash.clone()).or_insert(Retry {
                    at: Instant::now(),
                    wait: POLL,
                });
                retry.wait = (retry.wait * 2).min(MAX_RETRY);
                retry.at = Instant::now() + retry.wait;
                tracing::warn!(%answer, retry_in = ?retry.wait, "the pool did not take the payout");
            }
        }
        Ok(())
    }
}

/// The offer, for the operator to hand to the payer. A failure is logged: the offer is also in
/// the log and in the ledger.
fn write_offer_file(path: &Path, offer: &Offer) {
    let written = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(path, format!("{offer}\n")));
    if let Err(error) = written {
        tracing::warn!(path = %path.display(), %error, "cannot write the payout offer file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payer_note_may_name_the_epoch() {
        assert_eq!(epoch_in_note("epoch:7"), Some(7));
        assert_eq!(epoch_in_note("OCEAN payout, epoch 12"), Some(12));
        assert_eq!(epoch_in_note("epoch=3 thanks"), Some(3));
        assert_eq!(epoch_in_note("payout"), None);
        assert_eq!(epoch_in_note("epoch:"), None);
    }
}
