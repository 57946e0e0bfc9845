//! Fuzz target `oath_usersfile`; its body is `kron_fuzz_targets::oath_usersfile` (fuzz/targets).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kron_fuzz_targets::oath_usersfile(data));
