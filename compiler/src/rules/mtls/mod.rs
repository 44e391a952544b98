//! mTLS rules (`MC03xx`).

pub mod ca_certificate;
pub mod mode_conflict;
pub mod permissive_leftover;
pub mod server_certificate;
