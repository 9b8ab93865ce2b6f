//! The integration tests of `zhaowo-crdt`, one binary: each module links Automerge once instead of once per file,
//! which saves CI minutes (issue 12).
#![allow(clippy::print_stdout)] // tests print their figures (TESTING.md)
mod concurrency;
mod convergence;
mod fuzz_regressions;
mod hall;
mod hall_sync;
mod kpi;
mod membership;
mod permissions;
mod rating;
mod simulation;
mod smoke;
mod stories;
mod support;
mod sync_session;
mod validation;
