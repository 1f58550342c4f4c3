//! See `hashpool_fuzz::sv2_noise_responder`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| hashpool_fuzz::sv2_noise_responder(input));
