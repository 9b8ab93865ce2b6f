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
mod maintenance;
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
    /// Copy the store to a file while the node runs.
    Backup {
        /// The backup file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Replace this node's store with a backup (stop the node first).
    Restore {
        /// The backup file.
        file: PathBuf,
    },
    /// Export or import the raw Automerge document of a case.
    #[command(subcommand)]
    Doc(maintenance::DocCommand),
    /// Merge another node's data directory or database file into this node (admin), read-only on the other side.
    Merge(maintenance::MergeArgs),
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
    let store = std::sync::Arc::new(home.open_store()?);
    let desk =
        tokio::net::TcpListener::bind(args.desk).await.with_context(|| format!("cannot listen on {}", args.desk))?;
    let public =
        tokio::net::TcpListener::bind(args.http).await.with_context(|| format!("cannot listen on {}", args.http))?;
    let (desk_addr, public_addr) = (desk.local_addr()?, public.local_addr()?);
    let base = args.public_url.clone().unwrap_or_else(|| format!("http://{public_addr}"));
    let mut sync_options = zhaowo_node::sync::SyncOptions::of_home(&home);
    if let Some(listen) = args.listen {
        sync_options.listen = listen;
    }
    for peer in &args.peers {
        if !sync_options.peers.contains(peer) {
            sync_options.peers.push(*peer);
        }
    }
    let roster = home.roster().cloned().context("this node has not joined a hall")?;
    let identity = std::sync::Arc::new(
        zhaowo_node::identity::NodeIdentity::load(&home.config.key_path()).context("failed to load the node key")?,
    );
    let sync = zhaowo_node::sync::SyncNode::start(store.clone(), identity, roster, sync_options)
        .context("failed to start sync")?;
    out!("staff desk   http://{desk_addr}/desk");
    out!("citizen page {base}/r/{}", home.config.window);
    let sync_addr = sync.local_addr()?;
    out!("sync         {sync_addr} node {}", home.identity.node_id());
    for peer in home.config.peers.iter().chain(&args.peers) {
        say(cli, &format!("dialing peer {peer}"));
    }
    let discovery = if !args.mdns {
        None
    } else {
        let status = sync.status();
        let options = zhaowo_node::discovery::DiscoveryOptions::recommended(
            *sync.roster().hall(),
            sync.node_key(),
            sync_addr.port(),
        );
        // Discovery only adds address hints: a LAN without multicast costs nothing but this warning.
        match zhaowo_node::discovery::Discovery::start(options, move |key, addr| status.hint(key, addr)) {
            Ok(discovery) => Some(discovery),
            Err(error) => {
                say(cli, &format!("warning: mDNS discovery is off ({error}); static peers still sync"));
                None
            }
        }
    };
    say(cli, "press Ctrl-C to stop");
    let mut options = zhaowo_node::http::HttpOptions::recommended(desk_addr, base);
    options.sync = Some(sync.status());
    let served = demo::serve_until_stopped(cli, home, store, desk, public, options, args.serve_secs).await;
    if let Some(discovery) = discovery {
        // Says goodbye on the LAN; blocks for at most a couple of seconds.
        drop(tokio::task::spawn_blocking(move || discovery.shutdown()).await);
    }
    sync.shutdown().await;
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
        HomeError::AlreadyInitialized(_) => "use another --dir, or keep using the node that is there",
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

fn main() -> ExitCode {
    let cli = Cli::parse();
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
            if cli.json {
                print_json(&serde_json::json!({ "cases": report.cases }));
            } else {
                out!("reindexed {} cases", report.cases);
            }
            Ok(())
        }
        Command::Backup { out } => {
            let store = setup::open(cli)?.open_store()?;
            store.backup(out).await.with_context(|| format!("failed to back up to `{}`", out.display()))?;
            say(cli, &format!("backed up to {}", out.display()));
            Ok(())
        }
        Command::Restore { file } => {
            let home = setup::open(cli)?;
            zhaowo_node::store::Store::restore(file, &home.config.store_path())
                .with_context(|| format!("failed to restore `{}`", file.display()))?;
            say(cli, &format!("restored {} into {}", file.display(), home.config.store_path().display()));
            Ok(())
        }
        Command::Doc(command) => maintenance::doc(cli, command).await,
        Command::Merge(args) => maintenance::merge(cli, args).await,
        Command::Staff(command) => staff::run(cli, command),
        Command::Peers(command) => peers::peers(cli, command),
        Command::Sync(args) => peers::sync(cli, args).await,
        Command::Bundle(command) => bundle::run(cli, command).await,
    }
}
