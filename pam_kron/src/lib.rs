//! pam_kron.so
