//! The integration tests of `zhaowo-node`, one binary: each module links SQLite, Automerge, quinn and axum once
//! instead of once per file, which saves CI minutes (issue 12).
#![allow(clippy::print_stdout)] // tests print their figures (TESTING.md)
mod chaos;
mod discovery;
mod hall_sync;
mod http;
mod http_browser;
mod http_edges;
mod http_materials;
mod materials;
mod materials_sync;
mod outbox;
mod store;
mod sync;
mod transport;
