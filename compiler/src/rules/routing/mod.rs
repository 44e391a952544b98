//! Routing rules (`MC02xx`).

pub mod unreachable_rule;
pub mod weight_sum;
pub mod conflicting_hosts;
