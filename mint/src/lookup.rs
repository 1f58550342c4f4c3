//! `POST /v1/ehash/quotes`: a wallet lists its key's quotes by proving it holds the key.

use std::collections::HashMap;
use std::sync::Mutex;

use cdk::nuts::{MintQuoteState, PublicKey};
use cdk::secp256k1::schnorr::Signature;
use ehash::{lookup_message, LockingPubkey, LOOKUP_FRESHNESS_SECS};
pub use ehash::{QuoteLookupRequest, QuoteLookupResponse, QuoteState, QuoteSummary};
use thiserror::Error;

/// cdk's quote state as the lookup names it.
pub fn quote_state(state: MintQuoteState) -> QuoteState {
    match state {
        MintQuoteState::Unpaid => QuoteState::Unpaid,
        MintQuoteState::Paid => QuoteState::Paid,
        MintQuoteState::Issued => QuoteState::Issued,
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum LookupError {
    #[error("pubkey is not a compressed secp256k1 public key: {0}")]
    BadPubkey(String),
    #[error("signature is not a hex BIP340 signature")]
    MalformedSignature,
    #[error("signature does not verify for this pubkey and timestamp")]
    BadSignature,
    #[error("timestamp {timestamp} is more than {LOOKUP_FRESHNESS_SECS} s from the mint's clock ({now}); sign a fresh one")]
    Stale { timestamp: u64, now: u64 },
    #[error("this signed lookup was already used; sign a fresh one")]
    Replayed,
}

/// Verifies lookups and remembers the signatures used within the freshness window.
#[derive(Debug, Default)]
pub struct LookupVerifier {
    used: Mutex<HashMap<String, u64>>,
}

impl LookupVerifier {
    pub fn verify(
        &self,
        request: &QuoteLookupRequest,
        now: u64,
    ) -> Result<LockingPubkey, LookupError> {
        let key: LockingPubkey = request
            .pubkey
            .parse()
            .map_err(|error: ehash::IdentityError| LookupError::BadPubkey(error.to_string()))?;
        if request.timestamp.abs_diff(now) > LOOKUP_FRESHNESS_SECS {
            return Err(LookupError::Stale {
                timestamp: request.timestamp,
                now,
            });
        }
        let signature: Signature = request
            .signature
            .parse()
            .map_err(|_| LookupError::MalformedSignature)?;
        let public_key = PublicKey::from_slice(&key.to_bytes())
            .map_err(|error| LookupError::BadPubkey(error.to_string()))?;
        public_key
            .verify(
                lookup_message(&key, request.timestamp).as_bytes(),
                &signature,
            )
            .map_err(|_| LookupError::BadSignature)?;

        let mut used = self.used.lock().expect("lookup lock is never poisoned");
        // Forget what has gone stale anyway; a stale request is refused before it gets here.
        used.retain(|_, timestamp| timestamp.abs_diff(now) <= LOOKUP_FRESHNESS_SECS);
        if used
            .insert(request.signature.to_lowercase(), request.timestamp)
            .is_some()
        {
            return Err(LookupError::Replayed);
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cdk::nuts::SecretKey;

    fn signed(secret: &SecretKey, timestamp: u64) -> QuoteLookupRequest {
        let key: LockingPubkey = secret.public_key().to_hex().parse().unwrap();
        QuoteLookupRequest {
            pubkey: key.to_string(),
            timestamp,
            signature: secret
                .sign(lookup_message(&key, timestamp).as_bytes())
                .unwrap()
                .to_string(),
            after: None,
            limit: None,
        }
    }

    #[test]
    fn accepts_a_fresh_signature_once() {
        let verifier = LookupVerifier::default();
        let secret = SecretKey::generate();
        let request = signed(&secret, 1000);
        let key = verifier.verify(&request, 1010).unwrap();
        assert_eq!(key.to_string(), secret.public_key().to_hex());
        assert_eq!(verifier.verify(&request, 1011), Err(LookupError::Replayed));
        assert!(verifier.verify(&signed(&secret, 1001), 1011).is_ok());
    }

    #[test]
    fn refuses_stale_wrong_key_and_garbage() {
        let verifier = LookupVerifier::default();
        let secret = SecretKey::generate();
        assert!(matches!(
            verifier.verify(&signed(&secret, 1000), 1000 + LOOKUP_FRESHNESS_SECS + 1),
            Err(LookupError::Stale { .. })
        ));

        let mut forged = signed(&SecretKey::generate(), 1000);
        forged.pubkey = secret.public_key().to_hex();
        assert_eq!(
            verifier.verify(&forged, 1000),
            Err(LookupError::BadSignature)
        );

        let mut other_time = signed(&secret, 1000);
        other_time.timestamp = 1001;
        assert_eq!(
            verifier.verify(&other_time, 1000),
            Err(LookupError::BadSignature)
        );

        let mut garbage = signed(&secret, 1000);
        garbage.signature = "zz".into();
        assert_eq!(
            verifier.verify(&garbage, 1000),
            Err(LookupError::MalformedSignature)
        );
        garbage.pubkey = "02".into();
        assert!(matches!(
            verifier.verify(&garbage, 1000),
            Err(LookupError::BadPubkey(_))
        ));
    }
}
