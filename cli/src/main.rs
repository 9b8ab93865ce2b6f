//! `zhaowo`: the admin command of a zhaowo hall.
//!
//! The commands (init, enroll, run, demo, case, sync, bundle, merge, conflicts, export, stats…) arrive with the CLI
//! issue, once the store and sync have landed. Today the binary only answers `--help` and `--version`, and says so.

use clap::Parser;

/// zhaowo (找我): the offline-first case log of a service hall's "办不成事" window.
///
/// This build has the case model only. Walk a case through its life with:
///   cargo run -p zhaowo-examples --example case_lifecycle
///
/// EXIT STATUS: 0 success, 1 expected failure, 2 error.
#[derive(Debug, Parser)]
#[command(name = "zhaowo", version, about, long_about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    eprintln!("zhaowo {}: no commands yet in this build; see `zhaowo --help`", env!("CARGO_PKG_VERSION"));
    std::process::exit(1);
}
