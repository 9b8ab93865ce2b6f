//! What the sync runtime shows: per-peer [`PeerStatus`] (the desk's peers page, `zhaowo status`, `zhaowo sync`,
//! `/metrics`), node-wide [`SyncCounts`], and the [`SyncStatus`] handle the HTTP pages hold.

use super::{Shared, lock};
use crate::transport::{NodeKey, Refusal};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Peers shown in the status: static peers plus every member that connected; bounded by the roster anyway.
pub const STATUS_PEERS_MAX: usize = 1_000;

/// What one peer looks like from here, for the desk's sync page, `zhaowo status` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct PeerStatus {
    /// The peer's node id (hex); empty for a static address that never answered.
    pub node_id: String,
    pub window: String,
    pub display_name: String,
    pub address: Option<SocketAddr>,
    pub connected: bool,
    /// Wall-clock milliseconds of the last frame received.
    pub last_contact_ms: Option<i64>,
    /// Our documents changed since the peer's last acknowledgement (what it still has to take from us).
    pub docs_behind_peer: u64,
    /// Documents of the peer's catalog we are still syncing.
    pub docs_behind_us: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Changes from this peer refused as forged, unsigned or by a non-member (the peer was dropped each time).
    pub rejected_changes: u64,
    /// Documents refused one by one while the peer was kept: changes by a revoked member it relayed, and whole documents
    /// it sent damaged (a signature or bytes that fail their checks; see `REFUSED_WHOLE_DOCS_MAX`).
    pub refused_changes: u64,
    /// Material transfers from this peer refused as hostile (wrong bytes, more than announced, too slow): the peer
    /// was dropped each time.
    pub rejected_transfers: u64,
    /// Why the last of those was refused.
    pub last_transfer_error: Option<String>,
    /// Both directions caught up since the connection started.
    pub settled: bool,
    pub last_error: Option<String>,
    /// The last refusal between this node and the peer: the peer refused this node (not enrolled, revoked, another
    /// protocol version) or this node refused the peer (not a member); cleared when a session starts.
    pub refusal: Option<Refusal>,
    /// Wall-clock milliseconds of that refusal.
    pub refused_ms: Option<i64>,
}

/// Node-wide sync counters.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) rejected_changes: AtomicU64,
    pub(super) refused_changes: AtomicU64,
    pub(super) sessions: AtomicU64,
    pub(super) sessions_failed: AtomicU64,
    /// Connections this node refused after the handshake (unknown or revoked keys, another protocol version).
    pub(super) refused_connections: AtomicU64,
}

/// A copy of the node-wide counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct SyncCounts {
    pub peers_connected: u64,
    pub rejected_changes: u64,
    pub refused_changes: u64,
    pub sessions: u64,
    pub sessions_failed: u64,
    /// Connections this node refused (unknown or revoked keys, another protocol version).
    pub refused_connections: u64,
    /// The largest `docs_behind_peer` over connected peers: how far the slowest peer lags behind us.
    pub max_docs_behind: u64,
    /// Material file transfers (zero on a node that does not move files).
    pub transfers: super::TransferCounts,
}

/// A cheap handle for reading status (the HTTP pages hold one).
#[derive(Clone)]
pub struct SyncStatus {
    pub(super) shared: Arc<Shared>,
}

impl std::fmt::Debug for SyncStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncStatus").finish_non_exhaustive()
    }
}

impl SyncStatus {
    /// Every known peer, by node id.
    pub fn peers(&self) -> Vec<PeerStatus> {
        lock(&self.shared.status).values().cloned().collect()
    }

    pub fn counts(&self) -> SyncCounts {
        let peers = self.peers();
        let counters = &self.shared.counters;
        SyncCounts {
            peers_connected: peers.iter().filter(|p| p.connected).count() as u64,
            rejected_changes: counters.rejected_changes.load(Ordering::Relaxed),
            refused_changes: counters.refused_changes.load(Ordering::Relaxed),
            sessions: counters.sessions.load(Ordering::Relaxed),
            sessions_failed: counters.sessions_failed.load(Ordering::Relaxed),
            refused_connections: counters.refused_connections.load(Ordering::Relaxed),
            max_docs_behind: peers.iter().filter(|p| p.connected).map(|p| p.docs_behind_peer).max().unwrap_or(0),
            transfers: self.shared.transfers.as_ref().map(|t| t.counts()).unwrap_or_default(),
        }
    }

    /// An address hint for a member (see [`SyncNode::hint`]); callable from discovery callbacks.
    pub fn hint(&self, node_key: NodeKey, addr: SocketAddr) {
        super::peers::hint(&self.shared, node_key, addr);
    }

    /// Fetches a material file from the connected peers now (see [`super::SyncNode::fetch_material`]): the handle the
    /// desk holds, for the page that opens a material not yet on this node.
    pub async fn fetch_material(&self, hash: &str) -> Result<(), super::FetchError> {
        super::transfer::fetch_now(&self.shared, hash).await
    }

    /// The QUIC address peers reach this node at.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.shared.transport.local_addr().ok()
    }
}

impl Shared {
    pub(super) fn update_status(&self, key: &NodeKey, update: impl FnOnce(&mut PeerStatus)) {
        let node_id = crate::home::hex(key);
        let mut status = lock(&self.status);
        if !status.contains_key(&node_id) && status.len() >= STATUS_PEERS_MAX {
            return;
        }
        let entry = status.entry(node_id.clone()).or_insert_with(|| {
            let roster = self.live.roster();
            let enrollment = roster.enrollment(key);
            PeerStatus {
                node_id,
                window: enrollment.map(|e| e.window.clone()).unwrap_or_default(),
                display_name: enrollment.map(|e| e.display_name.clone()).unwrap_or_default(),
                ..PeerStatus::default()
            }
        });
        update(entry);
    }

    /// The status of a static peer known only by its address (it never answered, or refused this node): its entry
    /// has no node id until a connection names the key, and goes once one does.
    pub(super) fn update_address_status(&self, addr: SocketAddr, update: impl FnOnce(&mut PeerStatus)) {
        let mut status = lock(&self.status);
        let name = addr.to_string();
        if !status.contains_key(&name) && status.len() >= STATUS_PEERS_MAX {
            return;
        }
        update(status.entry(name).or_insert_with(|| PeerStatus { address: Some(addr), ..PeerStatus::default() }));
    }

    /// Forgets the address-only entry of a static peer whose key is now known.
    pub(super) fn forget_address_status(&self, addr: SocketAddr) {
        lock(&self.status).remove(&addr.to_string());
    }

    /// Records a refusal (issue 14 §5): shown on the desk, by `zhaowo sync` and in the logs.
    pub(super) fn refused(&self, status: &mut PeerStatus, refusal: Refusal) {
        status.connected = false;
        status.refusal = Some(refusal);
        status.refused_ms = Some(super::now_ms());
        status.last_error = Some(refusal.describe().to_owned());
    }
}
