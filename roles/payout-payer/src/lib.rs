//! A regtest stand-in for the upstream pool that pays a proxy pool's payouts (OCEAN pays
//! BOLT12 offers): an LDK node that funds itself by mining on regtest, opens a channel to the
//! mint's node, and pays the mint's payout offer once for each epoch the pool closed, naming the
//! epoch in the payer's note. With it, `bin/up --payout-epoch` runs shares -> epoch -> payout ->
//! sats in the wallet with nobody in the loop.
//!
//! It also keeps a BOLT11 invoice in `<storage_dir>/invoice` for a wallet to withdraw to, and
//! logs each withdrawal it receives: the other end of the Lightning round trip.
//!
//! It never pays an epoch twice: the epoch is recorded (on disk) before its payment is sent, and
//! the payment's id after. A payment the node reports failed moved nothing and is sent again; a
//! crash between recording and sending leaves the epoch unpaid (logged), never paid twice.

pub mod config;
mod peers;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use bitcoincore_rpc::{Auth, Client, RpcApi};
use ldk_node::bitcoin::hashes::Hash;
use ldk_node::bitcoin::secp256k1::PublicKey;
use ldk_node::bitcoin::{Address, Network};
use ldk_node::lightning::ln::channelmanager::PaymentId;
use ldk_node::lightning::ln::msgs::SocketAddress;
use ldk_node::lightning::offers::offer::Offer;
use ldk_node::lightning_invoice::{Bolt11Invoice, Bolt11InvoiceDescription, Description};
use ldk_node::payment::{PaymentDirection, PaymentKind, PaymentStatus};
use ldk_node::Node;
use thiserror::Error;

pub use config::PayerConfig;
use peers::{get_json, Epochs, MintNode};

/// Blocks mined over a coinbase so it can be spent.
const COINBASE_MATURITY: u64 = 100;
/// Confirmations a channel needs before it is usable (ldk-node's default).
const CHANNEL_CONFIRMATIONS: u64 = 6;
const INVOICE_EXPIRY_SECS: u32 = 7 * 24 * 3600;
/// BOLT12 payments sent per round. Each starts with an invoice request by onion message, and a
/// burst of dozens (a backlog of regtest epochs) overflows the peers' onion message buffers:
/// those payments then wait for invoices that never come.
const MAX_SENDS_PER_ROUND: usize = 2;

#[derive(Debug, Error)]
pub enum PayerError {
    #[error(transparent)]
    Cookie(#[from] hashpool_service::CookieError),
    #[error("lightning node: {0}")]
    Build(#[from] ldk_node::BuildError),
    #[error("lightning node: {0}")]
    Node(#[from] ldk_node::NodeError),
    #[error("bitcoind: {0}")]
    Rpc(#[from] bitcoincore_rpc::Error),
    #[error("{url}: {reason}")]
    Http { url: String, reason: String },
    #[error("the mint's node answered {what} {value:?}, which does not parse")]
    BadMintNode { what: &'static str, value: String },
    #[error("the record of paid epochs {0} does not parse; move it aside only if no payout is in flight")]
    BadRecord(PathBuf),
    #[error("the record of paid epochs {path}: {source}")]
    Record {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub struct Payer {
    config: PayerConfig,
    node: Node,
    http: reqwest::Client,
    /// Each epoch paid, with its payment's id once it was sent.
    paid: BTreeMap<u64, Option<String>>,
}

impl Payer {
    /// Starts the payer's node; nothing is mined or paid until [`Payer::step`].
    pub fn start(config: PayerConfig) -> Result<Self, PayerError> {
        let (user, password) = hashpool_service::read_cookie(&config.bitcoind_cookie_file)?;
        let (host, port) = rpc_host_port(&config.bitcoind_rpc_url);
        let mut builder = ldk_node::Builder::new();
        builder
            .set_network(Network::Regtest)
            .set_storage_dir_path(config.storage_dir.join("ldk").display().to_string())
            .set_chain_source_bitcoind_rpc(host, port, user, password)
            .set_gossip_source_p2p();
        builder.set_listening_addresses(vec![config.listen_address.into()])?;
        let node = builder.build()?;
        node.start()?;
        tracing::info!(node_id = %node.node_id(), "payer node started");
        let paid = read_paid(&paid_file(&config))?;
        Ok(Self {
            config,
            node,
            http: reqwest::Client::new(),
            paid,
        })
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.config.poll_secs.max(1))
    }

    /// One round: get a usable channel to the mint's node if there is none (mining what that
    /// needs), else pay every closed epoch that is not paid yet.
    pub async fn step(&mut self) -> Result<(), PayerError> {
        let mint: MintNode = get_json(
            &self.http,
            format!("{}/v1/hashpool/lightning", self.config.mint_url),
        )
        .await?;
        let mint_id = PublicKey::from_str(&mint.node_id).map_err(|_| PayerError::BadMintNode {
            what: "node_id",
            value: mint.node_id.clone(),
        })?;
        let channels: Vec<_> = self
            .node
            .list_channels()
            .into_iter()
            .filter(|channel| channel.counterparty_node_id == mint_id)
            .collect();
        if channels.is_empty() {
            return self.open_channel(&mint, mint_id);
        }
        if !channels.iter().any(|channel| channel.is_usable) {
            if channels
                .iter()
                .all(|channel| channel.confirmations.is_none())
            {
                self.mine_to_self(CHANNEL_CONFIRMATIONS)?;
            }
            return Ok(());
        }
        let Some(offer) = mint.offer else {
            tracing::info!("waiting for the mint's payout offer");
            return Ok(());
        };
        let offer = Offer::from_str(&offer).map_err(|_| PayerError::BadMintNode {
            what: "offer",
            value: offer.clone(),
        })?;
        let epochs: Epochs =
            get_json(&self.http, format!("{}/epochs", self.config.pool_url)).await?;
        let mut sent = 0;
        for closed in epochs.closed {
            if sent == MAX_SENDS_PER_ROUND {
                break;
            }
            let unpaid = match self.paid.get(&closed.epoch) {
                None => true,
                Some(Some(payment)) => self.failed(payment),
                // Recorded but maybe never sent (a crash): never risk paying it twice.
                Some(None) => false,
            };
            if closed.paid_by.is_none() && unpaid {
                self.pay(&offer, closed.epoch)?;
                sent += 1;
            }
        }
        tracing::debug!(open = epochs.open, "epochs paid up");
        self.offer_invoice()
    }

    /// Keeps an unpaid BOLT11 invoice in `invoice_file` for wallets to withdraw to, logging each
    /// withdrawal received.
    fn offer_invoice(&mut self) -> Result<(), PayerError> {
        let path = self.config.storage_dir.join("invoice");
        if let Ok(text) = std::fs::read_to_string(&path) {
            let Ok(invoice) = Bolt11Invoice::from_str(text.trim()) else {
                return self.new_invoice(&path);
            };
            let hash = invoice.payment_hash().to_byte_array();
            let received = self.node.list_payments_with_filter(|payment| {
                payment.direction == PaymentDirection::Inbound
                    && payment.status == PaymentStatus::Succeeded
                    && matches!(payment.kind, PaymentKind::Bolt11 { hash: paid, .. } if paid.0 == hash)
            });
            let Some(payment) = received.first() else {
                return Ok(());
            };
            tracing::info!(
                amount_msat = ?payment.amount_msat,
                "received a withdrawal from the mint"
            );
        }
        self.new_invoice(&path)
    }

    fn new_invoice(&self, path: &std::path::Path) -> Result<(), PayerError> {
        let description = Description::new("hashpool withdrawal".to_owned())
            .expect("a short description is valid");
        let invoice = self.node.bolt11_payment().receive(
            self.config.withdrawal_sat * 1000,
            &Bolt11InvoiceDescription::Direct(description),
            INVOICE_EXPIRY_SECS,
        )?;
        std::fs::write(path, format!("{invoice}\n")).map_err(|source| PayerError::Record {
            path: path.to_owned(),
            source,
        })?;
        tracing::info!(%invoice, "an invoice to withdraw to (just wallet --unit sat withdraw $(cat .data/payer/invoice))");
        Ok(())
    }

    fn open_channel(&mut self, mint: &MintNode, mint_id: PublicKey) -> Result<(), PayerError> {
        let needed = self.config.channel_sat + 100_000;
        if self.node.list_balances().spendable_onchain_balance_sats < needed {
            // The mint's node keeps on-chain funds to bump channel closes (anchor outputs):
            // fund it once too.
            if mint.onchain_sat == 0 {
                self.mine_to(&mint.funding_address, 1)?;
            }
            let own = self.node.onchain_payment().new_address()?;
            self.mine_to(&own.to_string(), 1)?;
            self.mine_to_self(COINBASE_MATURITY)?;
            tracing::info!("mined coinbases for the payer and the mint's node; waiting for them");
            return Ok(());
        }
        let address =
            SocketAddress::from_str(&mint.listen_address).map_err(|_| PayerError::BadMintNode {
                what: "listen_address",
                value: mint.listen_address.clone(),
            })?;
        self.node
            .open_channel(mint_id, address, self.config.channel_sat, None, None)?;
        tracing::info!(
            sat = self.config.channel_sat,
            "opening a channel to the mint's node"
        );
        Ok(())
    }

    /// Whether the node reports `payment` failed (so nothing moved and it may be sent again).
    fn failed(&self, payment: &str) -> bool {
        let mut id = [0u8; 32];
        if hex::decode_to_slice(payment, &mut id).is_err() {
            return false;
        }
        self.node
            .payment(&PaymentId(id))
            .is_some_and(|details| details.status == PaymentStatus::Failed)
    }

    fn pay(&mut self, offer: &Offer, epoch: u64) -> Result<(), PayerError> {
        self.paid.insert(epoch, None);
        write_paid(&paid_file(&self.config), &self.paid)?;
        let amount_msat = self.config.payout_sat * 1000;
        match self.node.bolt12_payment().send_using_amount(
            offer,
            amount_msat,
            None,
            Some(format!("epoch:{epoch}")),
            None,
        ) {
            Ok(payment) => {
                tracing::info!(epoch, amount_msat, %payment, "sent the epoch's payout");
                self.paid.insert(epoch, Some(hex::encode(payment.0)));
                write_paid(&paid_file(&self.config), &self.paid)?;
            }
            Err(error) => tracing::error!(epoch, %error, "the epoch's payout was not sent"),
        }
        Ok(())
    }

    fn rpc(&self) -> Result<Client, PayerError> {
        Ok(Client::new(
            &self.config.bitcoind_rpc_url,
            Auth::CookieFile(self.config.bitcoind_cookie_file.clone()),
        )?)
    }

    fn mine_to(&self, address: &str, blocks: u64) -> Result<(), PayerError> {
        let address = Address::from_str(address)
            .ok()
            .and_then(|address| address.require_network(Network::Regtest).ok())
            .ok_or_else(|| PayerError::BadMintNode {
                what: "an address",
                value: address.to_owned(),
            })?;
        self.rpc()?.generate_to_address(blocks, &address)?;
        Ok(())
    }

    fn mine_to_self(&self, blocks: u64) -> Result<(), PayerError> {
        let own = self.node.onchain_payment().new_address()?;
        self.mine_to(&own.to_string(), blocks)
    }

    pub fn stop(self) {
        if let Err(error) = self.node.stop() {
            tracing::warn!(%error, "payer node did not stop cleanly");
        }
    }
}

/// `http://host:port` -> (host, port); bitcoind's regtest port when none is given.
fn rpc_host_port(url: &str) -> (String, u16) {
    let authority = url.split("://").nth(1).unwrap_or(url);
    let authority = authority.split('/').next().unwrap_or(authority);
    match authority.rsplit_once(':') {
        Some((host, port)) => (host.to_owned(), port.parse().unwrap_or(18443)),
        None => (authority.to_owned(), 18443),
    }
}

fn paid_file(config: &PayerConfig) -> PathBuf {
    config.storage_dir.join("paid-epochs.json")
}

fn read_paid(path: &std::path::Path) -> Result<BTreeMap<u64, Option<String>>, PayerError> {
    match std::fs::read_to_string(path) {
        // An unreadable record is not an empty one: forgetting it could pay epochs twice.
        Ok(text) => serde_json::from_str(&text).map_err(|_| PayerError::BadRecord(path.to_owned())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(source) => Err(PayerError::Record {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes the record whole (temporary file, then rename), so a crash never leaves half of it.
fn write_paid(
    path: &std::path::Path,
    paid: &BTreeMap<u64, Option<String>>,
) -> Result<(), PayerError> {
    let record_error = |source| PayerError::Record {
        path: path.to_owned(),
        source,
    };
    let temporary = path.with_extension("json.tmp");
    let text = serde_json::to_string(paid).expect("a map of numbers to ids serializes");
    std::fs::write(&temporary, text).map_err(record_error)?;
    std::fs::rename(&temporary, path).map_err(record_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_urls_split_into_host_and_port() {
        assert_eq!(
            rpc_host_port("http://127.0.0.1:18443"),
            ("127.0.0.1".to_owned(), 18443)
        );
        assert_eq!(
            rpc_host_port("http://node.local:8332/wallet/x"),
            ("node.local".to_owned(), 8332)
        );
        assert_eq!(rpc_host_port("localhost"), ("localhost".to_owned(), 18443));
    }

    #[test]
    fn the_paid_record_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("payer-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("paid-epochs.json");
        assert!(read_paid(&path).unwrap().is_empty());
        let paid = BTreeMap::from([(1, Some("ab".to_owned())), (3, None)]);
        write_paid(&path, &paid).unwrap();
        assert_eq!(read_paid(&path).unwrap(), paid);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
