//! The zhaowo node: the I/O shell around `zhaowo-crdt`.
//!
//! Today it holds the store (SQLite persistence of the case log, see [`store`]), the node's identity key
//! ([`identity`]), its config file ([`config`]), the QUIC transport ([`transport`]), the sync runtime ([`sync`]) and the
//! HTTP surfaces ([`http`]).

pub mod config;
pub mod discovery;
pub mod home;
pub mod http;
pub mod identity;
pub mod store;
pub mod sync;
pub mod transport;

pub use zhaowo_crdt as crdt;
pub mod fixtures;
