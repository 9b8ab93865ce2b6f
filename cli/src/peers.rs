//! `zhaowo peers` (the static peer list in the config) and `zhaowo sync` (one sync with chosen peers until caught up,
//! for a laptop back from a home visit or a script).

use crate::{Cli, expected, out, print_json, say, setup};
use anyhow::Context;
use clap::{Args, Subcommand};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zhaowo_node::config::PEERS_MAX;
use zhaowo_node::sync::{PeerStatus, SyncNode, SyncOptions};
use zhaowo_node::transport::Refusal;

#[derive(Debug, Subcommand)]
pub enum PeersCommand {
    /// List the static peers of this node and what its store knows of each peer's sync progress.
    List,
    /// Add a static peer (`HOST:PORT` of its QUIC endpoint); `zhaowo run` dials it and redials it forever.
    Add {
        /// The peer's QUIC address, e.g. 192.168.1.12:7420.
        addr: SocketAddr,
    },
    /// Remove a static peer.
    Remove {
        /// The address as listed by `zhaowo peers list`.
        addr: SocketAddr,
    },
}

pub fn peers(cli: &Cli, command: &PeersCommand) -> anyhow::Result<()> {
    let mut home = setup::open(cli)?;
    match command {
        PeersCommand::List => {
            if cli.json {
                let peers: Vec<String> = home.config.peers.iter().map(ToString::to_string).collect();
                print_json(&serde_json::json!({ "listen": home.config.listen.to_string(), "peers": peers }));
            } else {
                out!("listen {}", home.config.listen);
                for peer in &home.config.peers {
                    out!("peer   {peer}");
                }
                if home.config.peers.is_empty() {
                    say(cli, "no static peers: add one with `zhaowo peers add HOST:PORT`");
                }
            }
        }
        PeersCommand::Add { addr } => {
            if home.config.peers.contains(addr) {
                return Err(expected(format!("{addr} is already a peer")));
            }
            if home.config.peers.len() >= PEERS_MAX {
                return Err(expected(format!("this node already has {PEERS_MAX} static peers, the limit")));
            }
            home.config.peers.push(*addr);
            home.save_config().context("failed to save the config")?;
            say(cli, &format!("added peer {addr}; a running node picks it up when restarted"));
        }
        PeersCommand::Remove { addr } => {
            let before = home.config.peers.len();
            home.config.peers.retain(|peer| peer != addr);
            if home.config.peers.len() == before {
                return Err(expected(format!("{addr} is not a peer of this node")));
            }
            home.save_config().context("failed to save the config")?;
            say(cli, &format!("removed peer {addr}"));
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Peers to sync with (`HOST:PORT`, repeatable); default: the static peers of the config.
    #[arg(long = "peer")]
    pub peers: Vec<SocketAddr>,
    /// Give up after this many seconds without being caught up with every peer (exit 1).
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
    /// The local QUIC address to use (default: an ephemeral port, so this works while `zhaowo run` holds the
    /// configured one).
    #[arg(long, default_value = "0.0.0.0:0")]
    pub listen: SocketAddr,
}

/// Syncs with the given peers until every one of them is connected and settled both ways, then stops.
pub async fn sync(cli: &Cli, args: &SyncArgs) -> anyhow::Result<()> {
    let home = setup::open(cli)?;
    let peers = if args.peers.is_empty() { home.config.peers.clone() } else { args.peers.clone() };
    if peers.is_empty() {
        return Err(expected("no peer to sync with: pass --peer HOST:PORT or add one with `zhaowo peers add`"));
    }
    let store = Arc::new(home.open_store()?);
    let docs_before = store.counts().await?.docs;
    let roster = home.roster().cloned().ok_or(zhaowo_node::home::HomeError::NoHall)?;
    let identity = Arc::new(
        zhaowo_node::identity::NodeIdentity::load(&home.config.key_path()).context("failed to load the node key")?,
    );
    let mut options = SyncOptions::recommended(args.listen, peers.clone());
    options.roster_dir = Some(home.dir.clone());
    let node = SyncNode::start(store.clone(), identity, roster, options).context("failed to start sync")?;
    let status = node.status();
    let bar = progress_bar(cli);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout_secs);
    let outcome = loop {
        let now: Vec<PeerStatus> = status.peers();
        let settled = now.iter().filter(|peer| peer.connected && peer.settled).count();
        let behind: u64 = now.iter().map(|peer| peer.docs_behind_us).sum();
        let received: u64 = now.iter().map(|peer| peer.bytes_received).sum();
        if let Some(bar) = &bar {
            bar.set_message(format!(
                "{settled}/{} peers caught up · {behind} documents to fetch · {} KB received",
                peers.len(),
                received / 1024
            ));
            bar.tick();
        }
        // A refused peer will not let us in before an admin acts: stop waiting for it (issue 14 §5).
        let refused = now.iter().filter(|peer| !peer.connected && peer.refusal.is_some()).count();
        if settled >= peers.len() || (refused > 0 && settled + refused >= peers.len()) {
            break if settled >= peers.len() { Ok(now) } else { Err(now) };
        }
        if Instant::now() >= deadline {
            break Err(now);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    node.shutdown().await;
    let docs_after = store.counts().await?.docs;
    let (ok, peers_now) = match outcome {
        Ok(peers) => (true, peers),
        Err(peers) => (false, peers),
    };
    if cli.json {
        print_json(&serde_json::json!({
            "caught_up": ok,
            "seconds": started.elapsed().as_secs_f64(),
            "docs_before": docs_before,
            "docs_after": docs_after,
            "peers": peers_now,
        }));
    } else {
        for peer in &peers_now {
            out!(
                "{} {} {} {}  sent {} KB, received {} KB{}",
                peer.address.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
                &peer.node_id[..peer.node_id.len().min(16)],
                peer.window,
                if peer.settled {
                    "caught up"
                } else if peer.connected {
                    "syncing"
                } else {
                    "not connected"
                },
                peer.bytes_sent / 1024,
                peer.bytes_received / 1024,
                peer.last_error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default(),
            );
        }
        out!("documents {docs_before} -> {docs_after} in {:.1} s", started.elapsed().as_secs_f64());
    }
    if let Some(peer) = peers_now.iter().find(|peer| !peer.connected && peer.refusal.is_some()) {
        return Err(anyhow::Error::new(Refused {
            peer: peer.address.map_or_else(|| peer.node_id.clone(), |addr| addr.to_string()),
            refusal: peer.refusal.expect("filtered above"),
        }));
    }
    if !ok {
        return Err(expected(format!(
            "not caught up with every peer within {} s (is the peer running and reachable?)",
            args.timeout_secs
        )));
    }
    Ok(())
}

fn progress_bar(cli: &Cli) -> Option<indicatif::ProgressBar> {
    if cli.no_progress || cli.quiet > 0 || cli.json {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}").ok()?);
    Some(bar)
}

/// A peer refused this node, or this node refused the peer (issue 14 §5): an expected failure (exit 1) whose hint
/// says what to do about it.
#[derive(Debug)]
pub struct Refused {
    /// The peer's address (or node id).
    pub peer: String,
    pub refusal: Refusal,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.refusal {
            Refusal::PeerNotMember => write!(f, "this node refused peer {}: {}", self.peer, self.refusal.describe()),
            _ => write!(f, "peer {} refused this node: {}", self.peer, self.refusal.describe()),
        }
    }
}

impl std::error::Error for Refused {}
