//! meshc's bundled data plane. Today: the distribution client a proxy runs
//! ([`client`]): it obtains its certificate, subscribes to its scope, verifies
//! and applies each response (or NACKs it and keeps its last good config),
//! reconnects with what it has, and rotates its certificate before expiry.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
