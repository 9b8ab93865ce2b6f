//! The zhaowo node: the I/O shell around `zhaowo-crdt`.
//!
//! The store, the QUIC sync and the HTTP surfaces arrive with their issues; today this crate only re-exports the case
//! model so that the CLI and the tests build against the crate layout of DESIGN.md.

pub use zhaowo_crdt as crdt;
