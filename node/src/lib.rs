//! The zhaowo node: the I/O shell around `zhaowo-crdt`.
//!
//! Today it holds the store (SQLite persistence of the case log, see [`store`]), the node's identity key
//! ([`identity`]) and its config file ([`config`]). The QUIC sync and the HTTP surfaces arrive with their issues.

pub mod config;
pub mod home;
pub mod http;
pub mod identity;
pub mod store;
pub mod transport;

pub use zhaowo_crdt as crdt;
pub mod fixtures;
