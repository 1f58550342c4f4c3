use hashpool_sv2_client::{ClientError, PoolConnection};
use stratum_apps::key_utils::Secp256k1PublicKey;

/// Where the pool is and the key its Noise certificate must be signed with: the command-line
/// flags every tool that connects to the pool takes.
#[derive(Debug, Clone, clap::Args)]
pub struct PoolArgs {
    /// Pool address.
    #[arg(long = "pool", default_value = "127.0.0.1:34254")]
    pub address: String,
    /// The pool's Noise authority public key (base58); the regtest development key by default.
    #[arg(
        long,
        default_value = "9cGwoULotsUiHExSTdxxGfQXhx1aRdk4GTC2YX2ZkdYUKxjZ31W"
    )]
    pub authority_key: Secp256k1PublicKey,
}

impl PoolArgs {
    /// Connects over Noise, checking the pool's certificate against the authority key.
    pub async fn connect(&self) -> Result<PoolConnection, ClientError> {
        PoolConnection::connect(&self.address, Some(self.authority_key)).await
    }
}
