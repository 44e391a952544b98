//! mTLS rules (`MC03xx`).

pub mod permissive_leftover;
pub mod ca_certificate;
