//! Fuzz target `sshd_config`; its body is `kron_fuzz_targets::sshd_config` (fuzz/targets).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kron_fuzz_targets::sshd_config(data));
