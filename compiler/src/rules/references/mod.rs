//! Reference rules (`MC01xx`): names that must resolve to something.

pub mod ambient_sidecar;
pub mod ambiguous_selector;
pub mod dangling_subset;
pub mod destination_port;
pub mod export_to_namespace;
pub mod gateway_api;
pub mod gateway_pod_selector;
pub mod gateway_port;
pub mod host_not_in_gateway;
pub mod port_protocol;
pub mod selector_matches_nothing;
pub mod service_ports;
pub mod subset_selects_nothing;
pub mod unknown_gateway;
pub mod unknown_host;
