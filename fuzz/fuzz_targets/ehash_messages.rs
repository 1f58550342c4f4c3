//! See `hashpool_fuzz::ehash_messages`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| hashpool_fuzz::ehash_messages(input));
