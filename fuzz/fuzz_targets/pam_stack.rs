//! Fuzz target `pam_stack`; its body is `kron_fuzz_targets::pam_stack` (fuzz/targets).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kron_fuzz_targets::pam_stack(data));
