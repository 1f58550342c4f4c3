//! The mint's Lightning node: cdk's LDK backend (ldk-node on bitcoind's RPC), which receives the
//! pool's payouts and pays miners' melts.
//!
//! - [`melt_only`]: the node as the `sat` processor for NUT-05 melts (bolt11, bolt12), never for
//!   NUT-04 mints: sats enter only as payouts.
//! - [`payouts`]: the BOLT12 offer payouts are paid to, the record of each payment received that
//!   epoch releases are checked against, and the callback that tells the pool a payout landed.

pub mod info;
pub mod ledger;
pub mod melt_only;
pub mod payouts;

use std::path::PathBuf;
use std::sync::Arc;

use bitcoin::hashes::{sha256, Hash};
use cdk::Amount;
use cdk_common::common::FeeReserve;
use cdk_common::database::DynKVStore;
use cdk_ldk_node::{BitcoinRpcConfig, CdkLdkNode, CdkLdkNodeBuilder, ChainSource, GossipSource};
use ldk_node::bip39::Mnemonic;
use thiserror::Error;

use crate::config::LightningConfig;

#[derive(Debug, Error)]
pub enum LightningError {
    #[error(transparent)]
    Cookie(#[from] hashpool_service::CookieError),
    #[error("cannot create the node's directory {path}: {source}")]
    StorageDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lightning node: {0}")]
    Node(#[from] cdk_common::payment::Error),
    #[error("the node's seed: {0}")]
    Seed(#[from] ldk_node::bip39::Error),
    #[error("payout callback secret: {0}")]
    Secret(#[from] hashpool_service::SecretFileError),
    #[error(
        "the payout callback secret file {0} does not exist (the pool's callback_secret_file)"
    )]
    MissingSecret(PathBuf),
}

/// The node's BIP39 seed, derived from the mint's seed: one secret to back up, and the node's
/// keys never equal any keyset's.
fn node_mnemonic(mint_seed: &[u8]) -> Result<Mnemonic, LightningError> {
    let entropy = sha256::Hash::hash(&[b"hashpool/ldk-node/v1".as_slice(), mint_seed].concat());
    Ok(Mnemonic::from_entropy(entropy.as_byte_array())?)
}

/// bitcoind's RPC address and the credentials in its cookie.
fn bitcoind_rpc(config: &LightningConfig) -> Result<BitcoinRpcConfig, LightningError> {
    let (user, password) = hashpool_service::read_cookie(&config.bitcoind_cookie_file)?;
    Ok(BitcoinRpcConfig {
        host: config.bitcoind_rpc_host.clone(),
        port: config.bitcoind_rpc_port,
        user,
        password,
    })
}

/// Builds (does not start: the cdk mint starts its processors) the node of `config`.
pub fn build_node(
    config: &LightningConfig,
    mint_seed: &[u8],
    kv_store: DynKVStore,
) -> Result<Arc<CdkLdkNode>, LightningError> {
    let storage = &config.storage_dir;
    std::fs::create_dir_all(storage).map_err(|source| LightningError::StorageDir {
        path: storage.clone(),
        source,
    })?;
    let fee_reserve = FeeReserve {
        min_fee_reserve: Amount::from(config.fee_reserve_min_sat),
        percent_fee_reserve: config.fee_reserve_percent,
    };
    let node = CdkLdkNodeBuilder::new(
        config.network,
        ChainSource::BitcoinRpc(bitcoind_rpc(config)?),
        GossipSource::P2P,
        storage.display().to_string(),
        fee_reserve,
        vec![config.listen_address.into()],
        kv_store,
    )
    .with_seed(node_mnemonic(mint_seed)?)
    // ldk-node's own log beside its state, so the mint's log stays readable.
    .with_log_dir_path(storage.join("ldk-node.log").display().to_string())
    .build()
    .map_err(cdk_common::payment::Error::from)?;
    Ok(Arc::new(node))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_seed_is_fixed_by_the_mint_seed_and_differs_from_it() {
        let a = node_mnemonic(&[7u8; 64]).unwrap();
        assert_eq!(a, node_mnemonic(&[7u8; 64]).unwrap());
        assert_ne!(a, node_mnemonic(&[8u8; 64]).unwrap());
        assert_eq!(a.word_count(), 24);
        assert_ne!(a.to_entropy(), vec![7u8; 32]);
    }
}
