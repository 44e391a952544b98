//! Routing rules (`MC02xx`).

pub mod conflicting_gateways;
pub mod conflicting_hosts;
pub mod duplicate_certificate;
pub mod duplicate_destination_rule;
pub mod envoy_filter;
pub mod gateway_api_listeners;
pub mod gateway_skips_subsets;
pub(crate) mod matchset;
pub mod route_destinations;
pub mod service_entry_addresses;
pub mod service_entry_protocol;
pub mod unreachable_rule;
pub mod weight_sum;
