//! meshc's bundled data plane: the sidecar proxy ([`proxy`]) that enforces
//! the IR on real traffic, the distribution client it runs ([`client`]: its
//! certificate, its scope, ACK/NACK, last good config), and the demo
//! application `meshc up` puts behind it ([`echo`]), and what a proxy
//! process runs around them ([`process`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod balance;
pub mod client;
pub mod echo;
mod gateway_tls;
pub mod http;
pub mod metrics;
pub mod process;
pub mod proxy;
pub mod tcp;
pub mod tls;
pub mod upstream;
