//! The pool's Noise authority key: miners pin its public half.

use stratum_apps::key_utils::{Secp256k1PublicKey, Secp256k1SecretKey};

/// A fresh authority keypair, as the base58check strings that `pool.toml` and miners use.
pub fn generate_authority_keypair() -> (Secp256k1SecretKey, Secp256k1PublicKey) {
    let secret = Secp256k1SecretKey(secp256k1::SecretKey::new(&mut secp256k1::rand::thread_rng()));
    (secret, Secp256k1PublicKey::from(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_through_their_text_form() {
        let (secret, public) = generate_authority_keypair();
        let secret_again: Secp256k1SecretKey = secret.to_string().parse().unwrap();
        let public_again: Secp256k1PublicKey = public.to_string().parse().unwrap();
        assert_eq!(secret_again.into_bytes(), secret.into_bytes());
        assert_eq!(public_again.into_bytes(), public.into_bytes());
        assert_eq!(
            Secp256k1PublicKey::from(secret_again).into_bytes(),
            public.into_bytes()
        );
    }
}
