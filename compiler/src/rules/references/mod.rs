//! Reference rules (`MC01xx`): names that must resolve to something.

pub mod dangling_subset;
pub mod unknown_gateway;
pub mod unknown_host;
