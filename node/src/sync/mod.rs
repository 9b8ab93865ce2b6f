//! The node's sync runtime: the QUIC endpoint, one driver per connected peer, static peers redialed with backoff,
//! the roster shared by the transport and the sessions, and per-peer status.
//!
//! Each connection runs one [`Session`] (the sans-IO protocol in `zhaowo_crdt::sync`). The driver never touches the
//! database: it batches what happened (frames from the peer, "our catalog grew", a reconciliation tick) into a
//! [`SyncStep`] that the store thread runs inside one transaction, and sends the frames that come back only after that
//! transaction committed. So a peer is never told "I have it" before it is on disk.
//!
//! ```text
//!  reader task ──frames──▶ driver ──SyncStep──▶ store thread (Session + DbReplica, BEGIN … COMMIT)
//!                            ▲  ◀──SyncOutcome (frames, events)──┘
//!  store.subscribe() ────────┘  └──frames──▶ writer task ──▶ QUIC stream
//! ```
//!
//! The hall document (configuration and desk accounts) and the roster belong to the node's [`Live`] state: a step
//! locks the hall document on the store thread, and when a peer's admin-signed changes grow it (or gossip brings
//! roster records) the driver hands them to [`Live`], which publishes them (the desk's next sign-in sees a new
//! account; every driver pushes the hall document or the roster to its peer) and has its writer task write the files
//! with no lock held. A revocation closes the revoked key's live connections (`revocations`).
//!
//! A refused node is told why (issue 14 §5): the transport closes a refused connection with a [`Refusal`] the
//! dialer reads at once; the dialer logs it, shows it in its [`PeerStatus`] (by address for a static peer that never
//! connected) and redials it only at the slowest pace.
//!
//! ```text
//!  mod.rs     SyncNode (start, shutdown), Shared state, the revocation watcher
//!  peers.rs   accept loop, static peers (dial, backoff, refusals), hints, one session per pair
//!  driver.rs  one connection: reader task → driver (store steps) → writer task
//!  status.rs  PeerStatus, SyncCounts, SyncStatus
//!  transfer.rs material files on their own streams of the same connections: server, fetcher (issue 16 §3)
//! ```
//!
//! One sync per peer pair: when two connections to the same key exist (both sides dialed at once), both nodes keep
//! the one dialed by the smaller key and close the other, so they agree without talking.

mod driver;
mod peers;
mod status;
pub mod transfer;

pub use status::{PeerStatus, STATUS_PEERS_MAX, SyncCounts, SyncStatus};
pub use transfer::{BlobFault, FetchError, MaterialsOptions, TransferCounts};

use crate::home::Home;
use crate::live::Live;
use crate::store::Store;
use crate::transport::{
    CloseCode, NodeKey, PeerConnection, Refusal, Transport, TransportConfig, TransportError, short_key,
};
use peers::{accept_loop, dial_loop, hint};
use status::Counters;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tracing::Instrument;
use zhaowo_crdt::roster::{Record, Roster, SignedRecord};

/// The first redial of a static peer after a failure: a LAN peer that just restarted is back within a second.
pub const REDIAL_MIN_MS: u64 = 250;
/// Redials back off to this: a laptop away for days costs one handshake attempt every 30 s.
pub const REDIAL_MAX_MS: u64 = 30_000;
/// Every peer gets our whole catalog again this often (full reconciliation, ~50 bytes per document): repairs anything
/// a checkpoint missed without costing a hall LAN anything noticeable.
pub const RECONCILE_INTERVAL_MS: u64 = 10 * 60 * 1000;
/// The store's counter (and, in [`Live`], the roster and hall files) are polled this often: picks up a revocation or a
/// case written by the admin's CLI (another process) while the node runs.
pub const POLL_INTERVAL_MS: u64 = 1_000;
/// Frames the reader task buffers ahead of the driver: enough for a step to batch a burst into one transaction.
pub const READ_QUEUE_FRAMES_MAX: usize = 256;
/// Frames handled in one store step (one transaction, one fsync): batching is what makes an initial sync fast;
/// the bound keeps one step short so local commands are not held up behind it.
pub const STEP_FRAMES_MAX: usize = 128;
/// Bytes queued for a peer that does not read: a healthy peer drains a LAN pipe; beyond this the peer is dropped
/// as too slow (it reconnects and resumes from its checkpoint).
pub const WRITE_QUEUE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// How the sync runtime runs. Build it with [`SyncOptions::recommended`].
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// The UDP address of the QUIC endpoint (port 0 picks one).
    pub listen: SocketAddr,
    /// Static peers, dialed and redialed forever.
    pub peers: Vec<SocketAddr>,
    pub transport: TransportConfig,
    pub redial_min: Duration,
    pub redial_max: Duration,
    pub reconcile_interval: Duration,
    pub poll_interval: Duration,
    /// The data directory whose roster file and hall document the node keeps up to date (what peers teach is written
    /// to it, what the CLI writes is read from it). `None` keeps the roster in memory only and does not sync the hall
    /// document (tests).
    pub roster_dir: Option<PathBuf>,
    /// Material files: served to peers and fetched from them (issue 16 §3). `None`: this node moves no files.
    pub materials: Option<MaterialsOptions>,
}

impl SyncOptions {
    pub fn recommended(listen: SocketAddr, peers: Vec<SocketAddr>) -> SyncOptions {
        SyncOptions {
            listen,
            peers,
            transport: TransportConfig::recommended(),
            redial_min: Duration::from_millis(REDIAL_MIN_MS),
            redial_max: Duration::from_millis(REDIAL_MAX_MS),
            reconcile_interval: Duration::from_millis(RECONCILE_INTERVAL_MS),
            poll_interval: Duration::from_millis(POLL_INTERVAL_MS),
            roster_dir: None,
            materials: None,
        }
    }

    /// The options of a node's data directory: its listen address and static peers from the config.
    pub fn of_home(home: &Home) -> SyncOptions {
        let mut options = SyncOptions::recommended(home.config.listen, home.config.peers.clone());
        options.roster_dir = Some(home.dir.clone());
        options
    }
}

/// Why the sync runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum SyncStartError {
    #[error("this node has not joined a hall (no roster): run `zhaowo init` or `zhaowo join` first")]
    NoRoster,
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The hall document or the roster of the data directory cannot be read.
    #[error(transparent)]
    Live(#[from] crate::live::LiveError),
}

struct Active {
    id: usize,
    dialer: NodeKey,
    connection: PeerConnection,
}

struct Shared {
    store: Arc<Store>,
    transport: Transport,
    our_key: NodeKey,
    /// The hall document and the roster (the transport's authorizer too).
    live: Live,
    options: SyncOptions,
    active: Mutex<HashMap<NodeKey, Active>>,
    runtime: tokio::runtime::Handle,
    /// Members being dialed because of a hint (one attempt at a time per member).
    hinted: Mutex<HashSet<NodeKey>>,
    status: Mutex<BTreeMap<String, PeerStatus>>,
    counters: Counters,
    /// Material transfers, when `options.materials` is set.
    transfers: Option<Arc<transfer::Transfers>>,
    shutdown: watch::Sender<bool>,
}

impl Shared {
    fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

fn now_ms() -> i64 {
    crate::home::now_ms()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The running sync runtime. Dropping it stops everything; [`SyncNode::shutdown`] says goodbye to peers first.
pub struct SyncNode {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Stops the [`Live`] tasks when this node started them ([`SyncNode::start`]).
    live_stop: Option<watch::Sender<bool>>,
}

impl std::fmt::Debug for SyncNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncNode").field("me", &short_key(&self.shared.our_key)).finish_non_exhaustive()
    }
}

impl Drop for SyncNode {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl SyncNode {
    /// Binds the endpoint and starts accepting and dialing the static peers, with a [`Live`] state of its own: read
    /// from `options.roster_dir` (whose files it then keeps up to date) or, without one, this roster in memory.
    pub fn start(
        store: Arc<Store>,
        identity: Arc<crate::identity::NodeIdentity>,
        roster: Roster,
        options: SyncOptions,
    ) -> Result<SyncNode, SyncStartError> {
        let live = match &options.roster_dir {
            Some(dir) => Live::from_dir(dir, &identity, roster, || {
                Ok(crate::live::HallView {
                    hall: zhaowo_crdt::Hall::jiangan_default(),
                    history: Vec::new(),
                    version: 1,
                })
            })?,
            None => Live::in_memory(roster),
        };
        let (stop, stop_rx) = watch::channel(false);
        let live_tasks = live.spawn_tasks(options.poll_interval, stop_rx);
        let mut node = SyncNode::start_live(store, identity, live, options)?;
        node.tasks.extend(live_tasks);
        node.live_stop = Some(stop);
        Ok(node)
    }

    /// Binds the endpoint and starts accepting and dialing the static peers, on a [`Live`] state the caller owns (and
    /// whose tasks it runs: [`crate::node::Node`]).
    pub fn start_live(
        store: Arc<Store>,
        identity: Arc<crate::identity::NodeIdentity>,
        live: Live,
        options: SyncOptions,
    ) -> Result<SyncNode, SyncStartError> {
        let our_key = identity.verifying_key().to_bytes();
        let transport = Transport::bind(options.listen, identity, Arc::new(live.clone()), options.transport.clone())?;
        let (shutdown, _) = watch::channel(false);
        let transfers = options.materials.clone().map(|materials| Arc::new(transfer::Transfers::new(materials)));
        let shared = Arc::new(Shared {
            store,
            transport,
            our_key,
            live,
            options,
            active: Mutex::new(HashMap::new()),
            hinted: Mutex::new(HashSet::new()),
            runtime: tokio::runtime::Handle::current(),
            status: Mutex::new(BTreeMap::new()),
            counters: Counters::default(),
            transfers,
            shutdown,
        });
        let span = tracing::info_span!("sync", me = %short_key(&our_key));
        let mut tasks = vec![
            tokio::spawn(accept_loop(shared.clone()).instrument(span.clone())),
            tokio::spawn(revocations(shared.clone()).instrument(span.clone())),
        ];
        for addr in shared.options.peers.clone() {
            tasks.push(tokio::spawn(dial_loop(shared.clone(), addr).instrument(span.clone())));
        }
        if let Some(transfers) = shared.transfers.clone().filter(|transfers| transfers.options.background) {
            tasks.push(tokio::spawn(transfer::fetch_loop(shared.clone(), transfers).instrument(span.clone())));
        }
        Ok(SyncNode { shared, tasks, live_stop: None })
    }

    /// Starts sync for a node's data directory (its config, key and roster).
    pub fn start_home(home: &Home, store: Arc<Store>) -> Result<SyncNode, SyncStartError> {
        let roster = home.roster().cloned().ok_or(SyncStartError::NoRoster)?;
        let identity = Arc::new(crate::identity::NodeIdentity::load(&home.config.key_path()).map_err(|error| {
            SyncStartError::Transport(TransportError::TlsConfig(format!("cannot load the node key: {error}")))
        })?);
        SyncNode::start(store, identity, roster, SyncOptions::of_home(home))
    }

    pub fn status(&self) -> SyncStatus {
        SyncStatus { shared: self.shared.clone() }
    }

    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.shared.transport.local_addr()
    }

    pub fn node_key(&self) -> NodeKey {
        self.shared.our_key
    }

    /// Dials a peer once more (in addition to the static peers) and keeps it redialed.
    pub fn add_peer(&mut self, addr: SocketAddr) {
        let span = tracing::info_span!("sync", me = %short_key(&self.shared.our_key));
        self.tasks.push(tokio::spawn(dial_loop(self.shared.clone(), addr).instrument(span)));
    }

    /// An address hint for a member (from mDNS or a peer's peer list): dialed once now unless the member is already
    /// connected, being dialed, not an active member, or this node itself. Repeated hints retry.
    pub fn hint(&self, node_key: NodeKey, addr: SocketAddr) {
        hint(&self.shared, node_key, addr);
    }

    /// Adds roster records (e.g. a revocation issued on this node) as if a peer had sent them.
    pub fn add_roster_records(&self, records: Vec<SignedRecord>) {
        self.shared.live.add_records(records);
    }

    /// A copy of the roster as this node knows it now (its own plus what peers gossiped).
    pub fn roster(&self) -> Roster {
        (*self.shared.live.roster()).clone()
    }

    /// The node's hall document and roster.
    pub fn live(&self) -> &Live {
        &self.shared.live
    }

    /// Fetches the material file `hash` from the connected peers now, unless it is here (a desk page opening a
    /// material on a volunteer laptop, which fetches nothing in the background). The peers apply the key rule.
    pub async fn fetch_material(&self, hash: &str) -> Result<(), FetchError> {
        transfer::fetch_now(&self.shared, hash).await
    }

    /// The transport, for tests that count connections.
    pub fn transport(&self) -> &Transport {
        &self.shared.transport
    }

    /// Says goodbye to every peer and closes the endpoint.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.send_replace(true);
        // Drivers see the flag, send `Bye` and stop; give them a moment, then close everything.
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Some(stop) = self.live_stop.take() {
            // The Live writer writes what is pending, then stops.
            stop.send_replace(true);
        }
        for mut task in self.tasks.drain(..) {
            // Our loops end on the shutdown flag; the Live writer finishes its last write within SHUTDOWN_WAIT.
            if tokio::time::timeout(SHUTDOWN_WAIT, &mut task).await.is_err() {
                tracing::warn!("a sync task did not stop in time");
                task.abort();
            }
        }
        self.shared.transport.close().await;
    }
}

/// How long [`SyncNode::shutdown`] waits for each task to stop (the last file write of the hall document: a few fsyncs).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Closes the live connections of every key the roster revokes from now on (gossip, the CLI's file, a revocation
/// issued here): the transport's authorizer already refuses the key (it reads the same roster), this closes what
/// was let in before.
async fn revocations(shared: Arc<Shared>) {
    let mut roster = shared.live.watch_roster();
    let revoked_in = |roster: &Roster| -> HashSet<NodeKey> {
        roster
            .records()
            .iter()
            .filter_map(|record| match &record.record {
                Record::Revocation(revocation) => Some(revocation.node_key),
                Record::Enrollment(_) => None,
            })
            .collect()
    };
    let mut known = revoked_in(&roster.borrow_and_update());
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        tokio::select! {
            changed = roster.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
        let now = revoked_in(&roster.borrow_and_update());
        for key in now.difference(&known) {
            let closed = shared.transport.disconnect(key, CloseCode::Revoked, Refusal::Revoked.describe());
            tracing::warn!(peer = %short_key(key), closed, "peer revoked");
            shared.update_status(key, |status| {
                status.connected = false;
                status.last_error = Some("已被管理员吊销".to_owned());
            });
        }
        known = now;
    }
}
