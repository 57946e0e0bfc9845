//! Fuzz target `record`; its body is `kron_fuzz_targets::record` (fuzz/targets).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kron_fuzz_targets::record(data));
