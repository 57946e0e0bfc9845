//! Harness for kron integration tests.
