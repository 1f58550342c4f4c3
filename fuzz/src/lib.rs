//! hashpool's fuzz targets (`just fuzz`). Each target in `fuzz_targets/` hands its input to the
//! function of the same name here; `tests/replay.rs` hands them every seed and every input that
//! once failed, so what a fuzzer found stays fixed in the ordinary test suite.
//!
//! The pool's and the translator's harnesses live in those crates, behind their `fuzzing`
//! feature, since they drive connection code that is not public.

pub mod ehash_messages;
pub mod mint_http;

use hashpool_pool::fuzzing::PoolHarness;
use hashpool_translator::fuzzing::TranslatorHarness;

/// Quote stream messages, miner identities and payout callbacks.
pub fn ehash_messages(input: &[u8]) {
    ehash_messages::check(input)
}

/// Raw bytes on a fresh connection to the pool: its Noise responder (the initiator's
/// ElligatorSwift key, then frames it cannot decrypt) and the read loop's handling of them.
pub fn sv2_noise_responder(input: &[u8]) {
    PoolHarness::get().raw_connection(input)
}

/// Plaintext Sv2 frames from a miner past the Noise handshake, through the pool's frame reader,
/// message dispatch, channels, jobs and share validation, with the ledger checked after each
/// input: one quote per accepted share, none twice, and found blocks that are the header the
/// miner hashed.
pub fn sv2_frames(input: &[u8]) {
    PoolHarness::get().frames(input);
}

/// Bytes from a Sv1 miner through the translator's line reader, parser and session.
pub fn sv1_lines(input: &[u8]) {
    TranslatorHarness::get().connection(input)
}

/// Bodies a wallet posts, through the mint's router on a real cdk mint: never a 5xx, and every
/// refusal a cashu error.
pub fn mint_http(input: &[u8]) {
    mint_http::MintHttpHarness::get().post(input);
}

/// A target's entry point: one input, checked.
pub type Target = fn(&[u8]);

/// Every target, by the name of its directory under `fuzz/seeds` and `fuzz/regressions`.
pub const TARGETS: [(&str, Target); 5] = [
    ("ehash_messages", ehash_messages),
    ("sv2_noise_responder", sv2_noise_responder),
    ("sv2_frames", sv2_frames),
    ("sv1_lines", sv1_lines),
    ("mint_http", mint_http),
];
