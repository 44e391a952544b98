//! mTLS rules (`MC03xx`).

pub mod ca_certificate;
pub mod permissive_leftover;
