//! Fuzz target `config`; its body is `kron_fuzz_targets::config` (fuzz/targets).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kron_fuzz_targets::config(data));
