//! `zhaowo`: the admin command of a zhaowo hall: set up the hall, enroll and revoke nodes, work cases from the
//! terminal, inspect and resolve conflicts, export the register book, check and back up the store.
//!
//! stdout carries data only (text, or one JSON document with `--json`); messages and errors go to stderr, rendered
//! like uv's: `error: …`, `  Caused by: …`, `hint: …`. Exit status: 0 success, 1 an expected failure (not found, not
//! allowed, refused by the case's rules), 2 an error (bad usage, unreadable or corrupt data).

mod bundle;
mod case;
mod conflicts;
mod demo;
mod env_vars;
mod export;
mod hall;
mod maintenance;
mod materials;
mod peers;
mod qr;
mod setup;
mod staff;
mod stats;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// zhaowo (找我): the offline-first case log of a service hall's "办不成事" window.
///
/// Every window PC, the supervision PC and every home-visit laptop runs a node holding the whole case log. Start a hall
/// with `zhaowo init --hall NAME --window CODE`, register a case with `zhaowo case new`, list the register book with
/// `zhaowo case list`.
#[derive(Debug, Parser)]
#[command(name = "zhaowo", version, about, long_about, after_long_help = EXIT_STATUS)]
pub struct Cli {
    /// The node's data directory.
    #[arg(long, global = true, env = env_vars::ZHAOWO_DIR, default_value = "./zhaowo-data")]
    pub dir: PathBuf,
    /// The staff member acting (recorded on every event); defaults to the node's display name.
    #[arg(long, global = true, env = env_vars::ZHAOWO_STAFF)]
    pub staff: Option<String>,
    /// Print one JSON document on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Say more (repeatable).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Say less.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub quiet: u8,
    /// Hide progress bars.
    #[arg(long, global = true)]
    pub no_progress: bool,
    #[command(subcommand)]
    pub command: Command,
}

const EXIT_STATUS: &str = "EXIT STATUS:\n  0  success\n  1  expected failure: not found, not allowed, refused by the case's rules\n  2  error: bad usage, unreadable or corrupt data";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a node in --dir; with --hall, also create the hall (root key, configuration) and make this node its admin.
    Init(setup::InitArgs),
    /// Issue an enrollment for another node (admin) and write it to a file for `zhaowo join`.
    Enroll(setup::EnrollArgs),
    /// Install an enrollment file on this node: it joins the hall and learns a first peer.
    Join(setup::JoinArgs),
    /// Revoke a node (admin): its key is refused from now on.
    Revoke(setup::RevokeArgs),
    /// Run this node until Ctrl-C: the staff desk on --desk (loopback) and the citizen pages on --http.
    Run(RunArgs),
    /// Start a working hall on this machine (embedded defaults, seeded cases, staff desk and citizen pages) until Ctrl-C.
    Demo(demo::DemoArgs),
    /// The QR code of a window's citizen page (SVG with --out, else in the terminal).
    Qr(qr::QrArgs),
    /// Show this node: id, window, role, hall, roster, store counts.
    Status,
    /// Work cases: register, list, show, and every step of their life.
    #[command(subcommand)]
    Case(case::CaseCommand),
    /// List, show and resolve conflicts that offline work produced.
    #[command(subcommand)]
    Conflicts(conflicts::ConflictsCommand),
    /// The hall's KPIs for a period, counts next to rates.
    Stats(stats::StatsArgs),
    /// Export the register book (登记簿) as CSV with Chinese headers; personal data masked.
    Export(export::ExportArgs),
    /// Check every document loads and every projection matches; report problems by case.
    Verify,
    /// Rebuild every projection from the documents.
    Reindex,
    /// Copy the store to a file while the node runs, and the material files to `<out>.materials/` beside it.
    Backup {
        /// The backup file to write.
        #[arg(long)]
        out: PathBuf,
        /// Leave the material files out (hall PCs fetch them from their peers again).
        #[arg(long)]
        no_materials: bool,
    },
    /// Replace this node's store with a backup (stop the node first); material files in `<file>.materials/` are
    /// copied back (each checked against its name).
    Restore {
        /// The backup file.
        file: PathBuf,
    },
    /// Export or import the raw Automerge document of a case.
    #[command(subcommand)]
    Doc(maintenance::DocCommand),
    /// Merge another node's data directory or database file into this node (admin), read-only on the other side.
    Merge(maintenance::MergeArgs),
    /// The hall's configuration (windows, units, routing, time limits, calendar): show, export, import (admin), log.
    #[command(subcommand)]
    Hall(hall::HallCommand),
    /// Manage web desk staff accounts (admin node).
    #[command(subcommand)]
    Staff(staff::StaffCommand),
    /// List, add and remove the static peers this node dials.
    #[command(subcommand)]
    Peers(peers::PeersCommand),
    /// Sync once with peers until caught up both ways, then stop (a laptop back from home visits).
    Sync(peers::SyncArgs),
    /// Carry cases on a file where there is no network: export signed changes, import them elsewhere.
    #[command(subcommand)]
    Bundle(bundle::BundleCommand),
    /// This node's key files (node.key, and hall.key on the admin node).
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Protect the key files with a passphrase (argon2id), change it, or remove it with --remove. The current one
    /// comes from ZHAOWO_PASSPHRASE or the terminal, the new one from ZHAOWO_NEW_PASSPHRASE or the terminal.
    Passphrase(setup::PassphraseArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The staff desk (keep it on loopback: only this PC's browser).
    #[arg(long, default_value = "127.0.0.1:7421")]
    pub desk: std::net::SocketAddr,
    /// The citizen pages and Open311, on the hall LAN address phones reach.
    #[arg(long, default_value = "0.0.0.0:7422")]
    pub http: std::net::SocketAddr,
    /// The citizen pages' address as printed in QR codes (default: derived from --http).
    #[arg(long)]
    pub public_url: Option<String>,
    /// The QUIC endpoint for peers (default: `listen` of the config file).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Also dial this peer (`HOST:PORT`, repeatable), besides the static peers of the config.
    #[arg(long = "peer")]
    pub peers: Vec<std::net::SocketAddr>,
    /// Announce this node on the LAN and dial the members it hears of (mDNS, address hints only: the roster still
    /// decides who is let in). Off unless asked: static peers and peers' peer lists always work without it.
    #[arg(long)]
    pub mdns: bool,
    /// Stop after this many seconds (for scripts and tests).
    #[arg(long, hide = true)]
    pub serve_secs: Option<u64>,
}

async fn run_node(cli: &Cli, args: &RunArgs) -> anyhow::Result<()> {
    let home = setup::open(cli)?;
    let (window, node_id, config_peers) =
        (home.config.window.clone(), home.identity.node_id(), home.config.peers.clone());
    let mut options = zhaowo_node::NodeOptions::recommended(args.desk, args.http);
    options.public_url = args.public_url.clone();
    options.listen = args.listen;
    options.peers = args.peers.clone();
    options.mdns = args.mdns;
    let mut node = zhaowo_node::Node::spawn(home, options).await.context("failed to start the node")?;
    out!("staff desk   http://{}/desk", node.desk_addr());
    out!("citizen page {}/r/{window}", node.public_url());
    let sync_addr = node.sync_addr().context("the sync endpoint has no address")?;
    out!("sync         {sync_addr} node {node_id}");
    for peer in config_peers.iter().chain(&args.peers) {
        say(cli, &format!("dialing peer {peer}"));
    }
    for warning in node.warnings() {
        say(cli, &format!("warning: {warning}"));
    }
    say(cli, "press Ctrl-C to stop");
    let served = demo::until_stopped(cli, &mut node, args.serve_secs).await;
    node.shutdown().await;
    served
}

/// An expected failure (exit 1): the thing asked for does not exist or is not allowed, with an optional hint.
#[derive(Debug)]
pub struct Expected {
    pub message: String,
    pub hint: Option<String>,
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Expected {}

/// Returns an expected failure with a message.
pub fn expected(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Expected { message: message.into(), hint: None })
}

/// Returns an expected failure with a message and a hint (what to do instead, or the valid values).
pub fn expected_with_hint(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Expected { message: message.into(), hint: Some(hint.into()) })
}

/// Prints a value as JSON on stdout.
pub fn print_json(value: &serde_json::Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer_pretty(&mut out, value);
    let _ = writeln!(out);
}

/// Prints a line of data on stdout (a broken pipe ends the program quietly with status 0).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write;
        if writeln!(std::io::stdout().lock(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

/// Prints a message on stderr unless `-q`.
pub fn say(cli: &Cli, message: &str) {
    if cli.quiet == 0 {
        eprintln!("{message}");
    }
}

/// What to do about a data-directory error, by its type (`None`: nothing useful to say).
pub fn home_hint(error: &zhaowo_node::home::HomeError) -> Option<&'static str> {
    use zhaowo_node::home::HomeError;
    Some(match error {
        HomeError::NotInitialized(_) => {
            "create one with `zhaowo init --hall NAME --window CODE`, or point --dir (ZHAOWO_DIR) at an existing node"
        }
        HomeError::AlreadyInitialized { .. } => {
            "use another --dir for a new node; a node whose node.key is lost is restored from a backup (`zhaowo \
             restore` into a newly enrolled node), never re-initialised in place"
        }
        HomeError::KeyMissing { .. } => {
            "put back this node's node.key from a backup of the data directory; if it is lost, this node's identity \
             is gone: create a node in a new --dir (`zhaowo init`), have the admin enroll it (`zhaowo enroll`, \
             `zhaowo join`) and `zhaowo restore` the store backup into it. Do not run `zhaowo init` here: a new key \
             is outside the roster"
        }
        HomeError::NoHall => {
            "ask the admin for an enrollment file (`zhaowo enroll`) and install it with `zhaowo join FILE`"
        }
        HomeError::NotAdmin => "run this on the admin node that set up the hall",
        _ => return None,
    })
}

/// A data-directory error that is an expected failure (exit 1), with its hint.
pub fn expected_home(error: &zhaowo_node::home::HomeError) -> anyhow::Error {
    anyhow::Error::new(Expected { message: error.to_string(), hint: home_hint(error).map(str::to_owned) })
}

/// The one table of error type → exit code and hint: the first cause in the chain with a known type decides (the
/// message text is never read). Anything else is an error (2) without a hint.
fn classify(error: &anyhow::Error) -> (u8, Option<String>) {
    use zhaowo_node::home::HomeError;
    use zhaowo_node::store::{ReadError, WriteError};
    for cause in error.chain() {
        if let Some(expected) = cause.downcast_ref::<Expected>() {
            return (1, expected.hint.clone());
        }
        if let Some(refused) = cause.downcast_ref::<peers::Refused>() {
            return (1, Some(refused.refusal.hint().to_owned()));
        }
        if let Some(refused) = cause.downcast_ref::<hall::HallFileErrors>() {
            return (2, refused.hint());
        }
        if let Some(hint) = cause.downcast_ref::<HomeError>().and_then(home_hint) {
            return (2, Some(hint.to_owned()));
        }
        if let Some(zhaowo_node::sync::SyncStartError::NoRoster) =
            cause.downcast_ref::<zhaowo_node::sync::SyncStartError>()
        {
            return (2, Some("run `zhaowo init` (a new hall) or `zhaowo join FILE` (an enrollment) first".to_owned()));
        }
        // A refused command or a missing case is an expected failure.
        if cause.is::<zhaowo_crdt::CommandError>()
            || matches!(cause.downcast_ref::<WriteError>(), Some(WriteError::Command(_) | WriteError::UnknownCase(_)))
            || matches!(cause.downcast_ref::<ReadError>(), Some(ReadError::UnknownCase(_)))
        {
            return (1, None);
        }
    }
    (2, None)
}

/// Logs on stderr (the node's warnings: a refused peer, a revoked member, a failing write): `-q` errors only, default
/// warnings, `-v` info, `-vv` debug, `-vvv` trace; `ZHAOWO_LOG` (an `EnvFilter` directive) overrides.
fn init_logs(cli: &Cli) {
    let level = match (cli.quiet, cli.verbose) {
        (1.., _) => "error",
        (0, 0) => "warn",
        (0, 1) => "info",
        (0, 2) => "debug",
        (0, _) => "trace",
    };
    let filter = match std::env::var("ZHAOWO_LOG") {
        Ok(directive) => match tracing_subscriber::EnvFilter::try_new(&directive) {
            Ok(filter) => filter,
            // A mistyped filter is not silently replaced by the default: say so, and log at the flags' level.
            Err(error) => {
                eprintln!("warning: ZHAOWO_LOG `{directive}` is not a log filter ({error}); using the level of -v/-q");
                tracing_subscriber::EnvFilter::new(level)
            }
        },
        Err(_) => tracing_subscriber::EnvFilter::new(level),
    };
    // A subscriber already set (never, in the binary) is not an error worth stopping for.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime\n  Caused by: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let (code, hint) = classify(&error);
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  Caused by: {cause}");
            }
            if let Some(hint) = hint {
                eprintln!("\nhint: {hint}");
            }
            ExitCode::from(code)
        }
    }
}

async fn run(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Init(args) => setup::init(cli, args),
        Command::Key(KeyCommand::Passphrase(args)) => setup::key_passphrase(cli, args),
        Command::Enroll(args) => setup::enroll(cli, args),
        Command::Join(args) => setup::join(cli, args),
        Command::Revoke(args) => setup::revoke(cli, args),
        Command::Demo(args) => demo::run(cli, args).await,
        Command::Run(args) => run_node(cli, args).await,
        Command::Qr(args) => qr::run(cli, args),
        Command::Status => setup::status(cli).await,
        Command::Case(command) => case::run(cli, command).await,
        Command::Conflicts(command) => conflicts::conflicts(cli, command).await,
        Command::Stats(args) => stats::stats(cli, args).await,
        Command::Export(args) => export::export(cli, args).await,
        Command::Verify => maintenance::verify(cli).await,
        Command::Reindex => {
            let store = setup::open(cli)?.open_store()?;
            let report = store.reindex().await.context("reindex failed")?;
            let skipped: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
            if cli.json {
                print_json(&serde_json::json!({ "cases": report.cases, "skipped": skipped }));
            } else {
                for problem in &skipped {
                    out!("skipped {problem}");
                }
                out!("reindexed {} cases, skipped {}", report.cases, skipped.len());
            }
            // A skipped document is missing from the register book: the operator must know (exit 1).
            if skipped.is_empty() {
                Ok(())
            } else {
                Err(expected(format!(
                    "{} documents skipped: not in the register book (see `zhaowo verify`)",
                    skipped.len()
                )))
            }
        }
        Command::Backup { out, no_materials } => {
            let home = setup::open(cli)?;
            let store = home.open_store()?;
            store.backup(out).await.with_context(|| format!("failed to back up to `{}`", out.display()))?;
            say(cli, &format!("backed up to {}", out.display()));
            if !no_materials {
                // After the store: the files its cases name are here by then (a file added meanwhile is extra).
                let folder = materials_beside(out);
                let target = zhaowo_node::blobs::BlobStore::open(&folder)
                    .with_context(|| format!("failed to create `{}`", folder.display()))?;
                let copied = home.blobs()?.copy_into(&target).context("failed to copy the material files")?;
                say(
                    cli,
                    &format!(
                        "material files: {} copied ({} bytes), {} already there, {} damaged here skipped, in {}",
                        copied.copied,
                        copied.bytes,
                        copied.present,
                        copied.damaged,
                        folder.display()
                    ),
                );
            }
            Ok(())
        }
        Command::Restore { file } => {
            let home = setup::open(cli)?;
            zhaowo_node::store::Store::restore(file, &home.config.store_path())
                .with_context(|| format!("failed to restore `{}`", file.display()))?;
            say(cli, &format!("restored {} into {}", file.display(), home.config.store_path().display()));
            let folder = materials_beside(file);
            if folder.is_dir() {
                let source = zhaowo_node::blobs::BlobStore::open(&folder)
                    .with_context(|| format!("failed to read `{}`", folder.display()))?;
                let copied = source.copy_into(&home.blobs()?).context("failed to copy the material files back")?;
                say(cli, &format!("material files: {} copied back ({} bytes)", copied.copied, copied.bytes));
            }
            Ok(())
        }
        Command::Doc(command) => maintenance::doc(cli, command).await,
        Command::Merge(args) => maintenance::merge(cli, args).await,
        Command::Hall(command) => hall::run(cli, command),
        Command::Staff(command) => staff::run(cli, command),
        Command::Peers(command) => peers::peers(cli, command),
        Command::Sync(args) => peers::sync(cli, args).await,
        Command::Bundle(command) => bundle::run(cli, command).await,
    }
}

/// Where `backup` puts the material files: `<backup file>.materials/`.
fn materials_beside(file: &std::path::Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".materials");
    PathBuf::from(name)
}
