//! meshc's control plane: follow a policy repository in Git, compile every
//! commit, keep the versions in an embedded store with last-known-good and
//! rollback, and distribute each proxy's scope over gRPC with ACK/NACK,
//! certificates from a built-in CA, and drift tracking.
//!
//! Data flow: [`sync::Mirror`] fetches → [`control::Reconciler`] compiles
//! each new commit ([`commit::build`]) and records it ([`store::Store`]) →
//! [`control::Control::refresh`] loads the served version's IR into a
//! [`control::Snapshot`] → [`control::debounce`] → each proxy's
//! [`distribution`] session sends what changed in its scope. A rejected commit
//! is recorded and never becomes a snapshot.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod ca;
pub mod commit;
pub mod control;
pub mod distribution;
pub mod git;
pub mod serve;
pub mod store;
pub mod sync;

/// An error of the Git side or the store, in one line for people (URLs
/// already stripped of credentials).
#[derive(Debug)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}
