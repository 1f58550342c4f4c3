//! What can go wrong, as one error type for the library's callers (the CLI, the tests).

use std::path::PathBuf;

use hashpool_service::SecretFileError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum WalletError {
    #[error("no wallet in {0}; run `wallet init` first")]
    NotInitialised(PathBuf),
    #[error("a wallet already exists in {0}")]
    AlreadyInitialised(PathBuf),
    #[error("the mnemonic in {path} is not a valid BIP39 phrase: {reason}")]
    BadMnemonic { path: PathBuf, reason: String },
    #[error("not a BIP39 phrase: {0}")]
    BadPhrase(String),
    #[error(transparent)]
    SecretFile(#[from] SecretFileError),
    #[error("bad mint URL {url}: {reason}")]
    BadMintUrl { url: String, reason: String },
    #[error("cannot reach the mint at {url}: {reason}")]
    MintUnreachable { url: String, reason: String },
    #[error("the mint refused: {0}")]
    MintRefused(String),
    #[error("the mint sent an answer this wallet cannot read: {0}")]
    BadMintAnswer(String),
    #[error("balance is {balance}, less than the {wanted} asked for")]
    InsufficientBalance { balance: u64, wanted: u64 },
    #[error("only sats leave over Lightning: open the wallet with --unit sat")]
    NotSats,
    #[error("the mint did not pay melt quote {quote}: it is {state}")]
    NotPaid { quote: String, state: String },
    #[error("wallet store: {0}")]
    Store(String),
    #[error("{0}")]
    Cashu(cdk::Error),
}

impl From<cdk::cdk_database::Error> for WalletError {
    fn from(error: cdk::cdk_database::Error) -> Self {
        WalletError::Store(error.to_string())
    }
}

impl From<cdk::Error> for WalletError {
    fn from(error: cdk::Error) -> Self {
        WalletError::Cashu(error)
    }
}
