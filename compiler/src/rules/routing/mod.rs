//! Routing rules (`MC02xx`).

pub mod unreachable_rule;
pub mod weight_sum;
pub mod conflicting_hosts;
pub mod service_entry_protocol;
pub(crate) mod matchset;
pub mod duplicate_destination_rule;
