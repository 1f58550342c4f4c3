//! See `hashpool_fuzz::mint_http`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| hashpool_fuzz::mint_http(input));
