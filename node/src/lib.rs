//! The zhaowo node: the I/O shell around `zhaowo-crdt`.
//!
//! It holds the store (SQLite persistence of the case log, see [`store`]), the node's identity key ([`identity`]), its
//! config file ([`config`]), the QUIC transport ([`transport`]), the sync runtime ([`sync`]), the HTTP surfaces
//! ([`http`]), the one run-time owner of the hall document and roster ([`live`]), and [`Node`], which assembles them
//! (`zhaowo run`, `zhaowo demo`, tests). Test support ([`fixtures`], `transport::faults`) needs the `testkit` feature.

pub mod blobs;
pub mod config;
pub mod discovery;
pub mod export;
pub mod home;
pub mod http;
pub mod identity;
pub mod import;
pub mod live;
pub mod node;
pub mod outbox;
pub mod report;
pub mod store;
pub mod sync;
pub mod thumbnail;
pub mod transport;

pub use node::{Node, NodeOptions};
pub use zhaowo_crdt as crdt;
/// Case generators for tests, benchmarks and examples (the `testkit` feature: never in a production build).
#[cfg(feature = "testkit")]
pub mod fixtures;
