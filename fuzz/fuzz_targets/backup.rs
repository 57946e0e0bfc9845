//! Fuzz target `backup`; its body is `kron_fuzz_targets::backup` (fuzz/targets).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kron_fuzz_targets::backup(data));
