//! zhaowo's integration tests: one binary, one module per tier (TESTING.md).

mod persistence;
mod tidy;
