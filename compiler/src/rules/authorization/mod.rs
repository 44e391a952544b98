//! authorization rules.
pub mod identity_without_mtls;
