//! `payer.toml`, loaded into [`PayerConfig`]. Every field has a default that runs beside
//! `bin/up --payout-epoch`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PayerConfig {
    pub log_dir: PathBuf,
    /// The payer's ldk-node state, and the record of the epochs it paid.
    pub storage_dir: PathBuf,
    /// Lightning P2P.
    pub listen_address: SocketAddr,
    pub bitcoind_rpc_url: String,
    pub bitcoind_cookie_file: PathBuf,
    /// The mint's HTTP API (its `/v1/hashpool/lightning` names the node and the payout offer).
    pub mint_url: String,
    /// The pool's HTTP address (its `/epochs` says which epochs are closed and unpaid).
    pub pool_url: String,
    /// The channel the payer opens to the mint's node.
    pub channel_sat: u64,
    /// What each closed epoch is paid.
    pub payout_sat: u64,
    /// The amount of the invoice kept in `<storage_dir>/invoice` for withdrawals.
    pub withdrawal_sat: u64,
    pub poll_secs: u64,
}

impl Default for PayerConfig {
    fn default() -> Self {
        Self {
            log_dir: PathBuf::from("logs"),
            storage_dir: PathBuf::from(".data/payer"),
            listen_address: "127.0.0.1:9736".parse().expect("a socket address"),
            bitcoind_rpc_url: "http://127.0.0.1:18443".to_owned(),
            bitcoind_cookie_file: PathBuf::from(".data/bitcoind/regtest/.cookie"),
            mint_url: "http://127.0.0.1:3338".to_owned(),
            pool_url: "http://127.0.0.1:9091".to_owned(),
            channel_sat: 5_000_000,
            payout_sat: 1_000,
            withdrawal_sat: 5_000,
            poll_secs: 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_parses_and_matches_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/payer.toml");
        let shipped: PayerConfig =
            hashpool_service::load_config(Some(std::path::Path::new(path))).unwrap();
        let defaults = PayerConfig::default();
        assert_eq!(shipped.listen_address, defaults.listen_address);
        assert_eq!(shipped.mint_url, defaults.mint_url);
        assert_eq!(shipped.pool_url, defaults.pool_url);
        assert_eq!(shipped.payout_sat, defaults.payout_sat);
    }
}
