//! See `hashpool_fuzz::sv1_lines`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| hashpool_fuzz::sv1_lines(input));
