//! Fuzz target `google_authenticator`; its body is `kron_fuzz_targets::google_authenticator` (fuzz/targets).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kron_fuzz_targets::google_authenticator(data));
