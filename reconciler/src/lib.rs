//! meshc's Git side. Today: reading the policy files of a repository at a
//! revision, for `meshc diff`. The reconciler (sync, per-commit compilation,
//! versioned store, distribution) grows here.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod git;
